/* Fuzzes how rankd loads its served model at start-up (rankd/snapshot.c,
 * rankd/model.c): the snapshot's meta record, the model value, the item
 * rows and the cold rows, as read back from LMDB, where a damaged file
 * could put any bytes, and a DVBPR checkpoint's meta record (the meta
 * chunk read as one). What loads is then used as serving uses it.
 *
 * Input: the active version (8 bytes), then chunks (fuzz.h): the meta
 * record, the model value, the rows value; then a byte, how many items
 * beyond the snapshot's rankd knows, and any number of cold rows, each an
 * 8-byte key followed by its value. */
#include "err.h"
#include "fuzz.h"
#include "index.h"
#include "model.h"
#include "snapshot.h"

#include <stdlib.h>
#include <string.h>

/* Reads what a Recommend reads of a model: a user row and an item row. */
static void use_model(const rk_model *m)
{
	uint32_t dim = rk_model_dim(m), f = rk_model_feature_dims(m);
	float *row = malloc(((size_t)dim + 1) * sizeof(float));
	float *feat = calloc((size_t)f + 1, sizeof(float));
	if (!row || !feat)
		abort();
	if (rk_model_user_row(m, m->d.n_users - 1, row) ||
	    rk_model_item_row(m, m->d.n_items - 1, f ? feat : NULL, row))
		abort();
	fz_touch(m->params, m->n_params * sizeof(float));
	free(row);
	free(feat);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz f = { data, size };
	uint64_t version = fz_u64(&f);
	size_t meta_len, model_len, rows_len;
	const uint8_t *meta_v = fz_chunk(&f, &meta_len);
	const uint8_t *model_v = fz_chunk(&f, &model_len);
	const uint8_t *rows_v = fz_chunk(&f, &rows_len);

	/* A model alone, as a DVBPR checkpoint is read. */
	rk_model *m = NULL;
	int rc = rk_model_decode(&m, model_v, model_len);
	if (rc == 0)
		use_model(m);
	else if (rc != VR_ECORRUPT)
		abort();
	rk_model_free(m);
	m = NULL;
	/* The meta chunk as a DVBPR checkpoint's meta record. */
	rk_snap_ckpt ck;
	if ((rc = rk_snap_ckpt_decode(meta_v, meta_len, &ck)) == 0) {
		if (strlen(ck.session) >= sizeof ck.session || strlen(ck.arch) >= sizeof ck.arch)
			abort();
	} else if (rc != VR_ECORRUPT) {
		abort();
	}

	rk_snap_meta meta;
	if ((rc = rk_snap_meta_decode(meta_v, meta_len, version, &meta))) {
		if (rc != VR_ECORRUPT)
			abort();
		return 0;
	}
	struct rk_index *ix = NULL;
	rc = rk_snap_decode(&meta, model_v, model_len, rows_v, rows_len, &m, &ix);
	if (rc) {
		if (m || ix)
			abort();
		return 0;
	}
	use_model(m);
	float *row = malloc(((size_t)meta.dim + 1) * sizeof(float));
	uint32_t n_items = meta.n_rows + fz_u8(&f);
	if (!row)
		abort();
	while (f.n) {
		size_t vl;
		uint8_t key[8] = { 0 };
		for (int i = 0; i < 8; i++)
			key[i] = fz_u8(&f);
		const uint8_t *v = fz_chunk(&f, &vl);
		rc = rk_snap_cold_apply(ix, key, v, vl, meta.dim, n_items, row);
		if (rc && rc != VR_ECORRUPT)
			abort();
	}
	struct rk_index_view view;
	rk_index_acquire(ix, &view);
	rk_index_release(&view);
	free(row);
	rk_index_destroy(ix);
	rk_model_free(m);
	return 0;
}
