/* What the request harnesses share: a message's bytes unpacked as our rpc
 * layer unpacks what gRPC hands over (vr__unpack, rpc_int.h), the check
 * that a message packs back consistently, and the harness's run. */
#ifndef VR_FUZZ_PROTO_H
#define VR_FUZZ_PROTO_H

#include "err.h"
#include "fuzz.h"
#include "rpc_int.h"

#include <grpc/slice.h>
#include <stdlib.h>
#include <string.h>

/* n bytes at p as a message of d (yours to free), from one slice or, with
 * split, from two; NULL when they are not one. */
static inline ProtobufCMessage *fz_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *p,
					  size_t n, int split)
{
	grpc_slice s[2];
	size_t cut = split ? n / 2 : n;
	s[0] = grpc_slice_from_copied_buffer((const char *)p, cut);
	s[1] = grpc_slice_from_copied_buffer((const char *)p + cut, n - cut);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(s, split ? 2 : 1);
	grpc_slice_unref(s[0]);
	grpc_slice_unref(s[1]);
	ProtobufCMessage *m = NULL;
	char why[256];
	int rc = vr__unpack(bb, d, &m, why, sizeof why);
	grpc_byte_buffer_destroy(bb);
	if ((rc == 0) != (m != NULL) || (rc && rc != VR_EINVAL))
		abort();
	return m;
}

/* Packs m (the packer must write the size it announced), unpacks that and
 * packs again: when the bytes unpack, both packings must be the same.
 * They need not unpack: protobuf-c 1.4 keeps an unknown field numbered 0
 * that arrived as a two-byte tag (80 00) and writes it back as 00, which
 * it then refuses; nothing of ours packs a request it was sent. Frees m. */
static inline void fz_repack(ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *a = malloc(n ? n : 1), *b = malloc(n ? n : 1);
	if (!a || !b || protobuf_c_message_pack(m, a) != n)
		abort();
	ProtobufCMessage *again = protobuf_c_message_unpack(m->descriptor, NULL, n, a);
	if (again && (protobuf_c_message_get_packed_size(again) != n ||
		      protobuf_c_message_pack(again, b) != n || memcmp(a, b, n)))
		abort();
	if (again)
		protobuf_c_message_free_unpacked(again, NULL);
	protobuf_c_message_free_unpacked(m, NULL);
	free(a);
	free(b);
}

/* A request harness's whole run: a selector byte (bits 0-6: the type,
 * types[sel % n]; bit 7: two slices), then the message bytes, unpacked,
 * checked by check (given the type's index) and packed again. */
static inline int fz_messages(const uint8_t *data, size_t size,
			      const ProtobufCMessageDescriptor *const *types, size_t n,
			      void (*check)(int type, const ProtobufCMessage *m))
{
	fz f = { data, size };
	uint8_t sel = fz_u8(&f);
	int type = (int)((sel & 0x7f) % n);
	size_t len;
	const uint8_t *msg = fz_rest(&f, &len);
	ProtobufCMessage *m = fz_unpack(types[type], msg, len, sel & 0x80);
	if (m) {
		check(type, m);
		fz_repack(m);
	}
	return 0;
}

#endif
