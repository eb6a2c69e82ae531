/* Fuzzes the decoders of featured's stored records (featured/fstore.c):
 * the change feed ("changes", what Watch serves), vectors, items and model
 * rows, as read back from LMDB, where a damaged or foreign file could put
 * any bytes. Every range a decoder hands back is read in full.
 *
 * Input: a record kind byte (0 change, 1 vector, 2 item, 3 model, modulo
 * 4), then the key as a chunk (fuzz.h) and the rest as the value. */
#include "err.h"
#include "fstore.h"
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz f = { data, size };
	int kind = fz_u8(&f) % 4;
	size_t kl, vl;
	const uint8_t *k = fz_chunk(&f, &kl), *v = fz_rest(&f, &vl);
	int rc;
	switch (kind) {
	case 0: {
		fd_change c;
		if ((rc = fd_change_decode(k, kl, v, vl, &c)) == 0)
			fz_touch(c.item_id, c.id_len);
		break;
	}
	case 1: {
		fd_vec c;
		if ((rc = fd_vec_decode(k, kl, v, vl, &c)) == 0) {
			fz_touch(c.item_id, c.id_len);
			fz_touch(c.values, (size_t)c.dims * sizeof(float));
		}
		break;
	}
	case 2: {
		fd_item c;
		if ((rc = fd_item_decode(k, kl, v, vl, &c)) == 0)
			fz_touch(c.item_id, c.id_len);
		break;
	}
	default: {
		fd_model_info m;
		if ((rc = fd_model_decode(v, vl, &m)) == 0) {
			/* Every string field is terminated within its array. */
			if (!memchr(m.arch, 0, sizeof m.arch) || !memchr(m.layer, 0, sizeof m.layer) ||
			    !memchr(m.weights, 0, sizeof m.weights) || !memchr(m.purpose, 0, sizeof m.purpose))
				abort();
		}
		break;
	}
	}
	if (rc != 0 && rc != VR_ECORRUPT)
		abort();
	return 0;
}
