/* Internal helpers shared by rpc.c, rpc_server.c and rpc_client.c; not part
 * of the rpc contract (rpc.h). */
#ifndef VR_RPC_INT_H
#define VR_RPC_INT_H

#include "rpc.h"

#include <grpc/byte_buffer.h>
#include <grpc/support/time.h>

#define VR__DEFAULT_MAX_MESSAGE ((size_t)4 << 20)

/* Packs m into a new byte buffer (yours to destroy). VR_ETOOBIG when the
 * packed size is over max, VR_ENOMEM. */
int vr__pack(const ProtobufCMessage *m, size_t max, grpc_byte_buffer **out);
/* Unpacks bb as a message of d (yours). VR_EINVAL for bad bytes. With
 * why (cap bytes), a string field at any depth whose bytes hold a NUL is
 * named there ("interactions[3].user_id contains a NUL byte at offset 7"),
 * why[0] = 0 otherwise: protobuf-c ends such a string at the NUL, so what
 * follows it would vanish unseen. */
int vr__unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d,
	       ProtobufCMessage **out, char *why, size_t cap);
/* The absolute monotonic deadline ms from now; 0 or less: none. */
gpr_timespec vr__deadline(int64_t ms);
/* Reads a whole file as a NUL-terminated string (yours to free). */
int vr__read_file(const char *path, char **out);
/* Builds channel args for the message limit; args points into storage. */
void vr__message_args(grpc_arg storage[2], size_t max);

/* The longest a client channel waits before it tries a peer that was
 * unreachable again (GRPC_ARG_MAX_RECONNECT_BACKOFF_MS; gRPC's default is
 * 120 s). */
#define VR__MAX_RECONNECT_BACKOFF_MS 5000

#endif
