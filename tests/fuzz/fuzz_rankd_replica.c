/* Fuzzes what a rankd read replica takes from its writer (rankd/replica.c):
 * the interaction log records of InteractionFeed (rankd/interactions.c's
 * rk_log_decode) and a model snapshot's export (rankd/snapshot.c's
 * rk_snap_export_decode, then its parts decoded as rk_snap_import checks
 * them). A writer that is damaged, or not a writer, could send any bytes.
 *
 * Input: a byte choosing the path (even: a log record, odd: an export),
 * then the bytes, whole (fz_rest).
 *
 * The replica installs an export only once its interactions know the
 * export's need_items items (rankd/replica.c install_pending): the cold
 * rows it applies pad the index up to need_items, which the items it
 * already holds bound. This harness stands for a replica that knows
 * KNOWN_ITEMS items and so leaves an export that needs more pending, as
 * the replica does (KNOWN_ITEMS rows of at most 64 values, or fewer rows
 * of more: the index's memory); applying rows up to 2^32 would measure
 * the fuzzer's memory limit, not our code. */
#include "err.h"
#include "fuzz.h"
#include "index.h"
#include "interactions.h"
#include "model.h"
#include "snapshot.h"

#include <stdlib.h>

#define KNOWN_ITEMS (1u << 16)
#define KNOWN_VALUES ((uint64_t)KNOWN_ITEMS * 64)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz f = { data, size };
	uint8_t path = fz_u8(&f);
	size_t len;
	const uint8_t *p = fz_rest(&f, &len);
	if (!(path & 1)) {
		rk_log_record r;
		int rc = rk_log_decode(p, len, &r);
		if (rc == 0) {
			for (uint32_t k = 0; k < r.n; k++) {
				fz_touch(r.rows[k].user, r.rows[k].user_len);
				fz_touch(r.rows[k].item, r.rows[k].item_len);
			}
			free(r.rows);
		} else if (rc != VR_ECORRUPT && rc != VR_ENOMEM) {
			abort();
		}
		return 0;
	}
	rk_snap_export_view x;
	int rc = rk_snap_export_decode(p, len, &x);
	if (rc) {
		if (rc != VR_ECORRUPT)
			abort();
		return 0;
	}
	fz_touch(x.meta_val, x.meta_len);
	fz_touch(x.cold, (size_t)x.n_cold * (4 + (size_t)x.meta.dim * sizeof(float)));
	rk_model *m = NULL;
	struct rk_index *ix = NULL;
	rc = rk_snap_decode(&x.meta, x.model, x.model_len, x.rows, x.rows_len, &m, &ix);
	if (rc == 0 && (x.need_items > KNOWN_ITEMS ||
			(uint64_t)x.need_items * x.meta.dim > KNOWN_VALUES)) {
		/* pending until the feed brings the items: decoded, not applied */
	} else if (rc == 0) {
		float *row = malloc((size_t)x.meta.dim * sizeof(float));
		if (!row)
			abort();
		/* The cold rows as rk_snap_load applies them, keyed as stored. */
		for (uint32_t c = 0; c < x.n_cold; c++) {
			const uint8_t *rec = (const uint8_t *)x.cold + c * (4 + (size_t)x.meta.dim * sizeof(float));
			uint32_t item;
			uint8_t key[8] = { 0 };
			memcpy(&item, rec, 4);
			for (int b = 0; b < 4; b++)
				key[4 + b] = (uint8_t)(item >> (24 - 8 * b));
			rc = rk_snap_cold_apply(ix, key, rec + 4, (size_t)x.meta.dim * sizeof(float),
						x.meta.dim, x.need_items, row);
			if (rc && rc != VR_ECORRUPT && rc != VR_ENOMEM)
				abort();
		}
		free(row);
	} else if (m || ix || (rc != VR_ECORRUPT && rc != VR_ENOMEM)) {
		abort();
	}
	rk_model_free(m);
	rk_index_destroy(ix);
	return 0;
}
