/* Fuzzes resharding's input paths (featured/reshard.c): the journal record
 * a source shard reads back from its LMDB (fd_journal_decode: whatever it
 * accepts must encode back to the same bytes), and the three Reshard*
 * request messages unpacked as our rpc layer does, with the new list
 * parsed and each ReshardImport item put through the target's item check
 * (a shard "b:2" of the map "a:1,b:2,c:3" holding one model version of 4
 * dims).
 *
 * Input: a selector byte (bits 0-1: 0 = a journal record, 1-3 = Claim,
 * Import, Delete; bit 7: hand a message over in two slices), then the
 * bytes. */
#include "err.h"
#include "fuzz_proto.h"
#include "reshard.h"
#include "service.h"
#include "visrec/v1/featured.pb-c.h"

#include <stdlib.h>
#include <string.h>

static const ProtobufCMessageDescriptor *const types[] = {
	&visrec__v1__reshard_claim_request__descriptor,
	&visrec__v1__reshard_import_request__descriptor,
	&visrec__v1__reshard_delete_request__descriptor,
};

static void journal(const uint8_t *p, size_t n)
{
	fd_journal j;
	void *again;
	size_t len;
	if (fd_journal_decode(p, n, &j))
		return;
	if (fd_journal_encode(&j, &again, &len) || len != n || memcmp(again, p, n))
		abort();
	free(again);
	fd_journal_clear(&j);
}

static void request(int type, const ProtobufCMessage *m)
{
	static vr_shardmap *map;
	static const fd_model_info rows[1] = { { .version = 1, .dims = 4 } };
	static const fd_service svc = { .max_image_bytes = 8388608, .max_image_pixels = 50000000 };
	vr_shardmap *to = NULL;
	char why[700];
	if (!map && vr_shardmap_parse(&map, "a:1,b:2,c:3", why, sizeof why))
		abort();
	const char *list = type == 0 ? ((const Visrec__V1__ReshardClaimRequest *)m)->to_shards :
		type == 1 ? ((const Visrec__V1__ReshardImportRequest *)m)->to_shards :
		((const Visrec__V1__ReshardDeleteRequest *)m)->to_shards;
	if (vr_shardmap_parse(&to, list, why, sizeof why))
		fz_touch(why, strlen(why));
	vr_shardmap_free(to);
	if (type != 1)
		return;
	const Visrec__V1__ReshardImportRequest *r = (const void *)m;
	for (size_t i = 0; i < r->n_items; i++)
		if (fd_reshard_check_item(&svc, map, 1, rows, 1, r->items[i], i, why, sizeof why))
			fz_touch(why, strlen(why));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	int sel = data[0] & 3, split = data[0] >> 7;
	if (!sel) {
		journal(data + 1, size - 1);
		return 0;
	}
	ProtobufCMessage *m = fz_unpack(types[sel - 1], data + 1, size - 1, split);
	if (!m)
		return 0;
	request(sel - 1, m);
	fz_repack(m);
	return 0;
}
