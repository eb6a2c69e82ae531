/* synth_snapshot: a synthetic VBPR snapshot written straight into a fresh
 * rankd data directory through the libraries rankd itself uses
 * (interactions.h, model.h, snapshot.h): N items, U users with 20
 * interactions each, a VBPR model at the tutorial's dims (K = 200, K' =
 * 100, F = 2048, D = 301) with random parameters and a serving item matrix
 * [beta_i + beta'.f_i, gamma_i, E f_i] with random values standing in for the
 * visual terms (so 1 M items need no 8 GB of features). Shared by
 * bench_rank_rpc and the integration tests that need a catalogue larger
 * than a Train in a test can make. */
#ifndef VR_TEST_SYNTH_SNAPSHOT_H
#define VR_TEST_SYNTH_SNAPSHOT_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "interactions.h"
#include "model.h"
#include "sampler.h"
#include "snapshot.h"
#include "store.h"

static inline float synth_gauss(rk_rng *r)
{
	float a = rk_rng_float(r) + 1e-7f, b = rk_rng_float(r);
	return sqrtf(-2.0f * logf(a)) * cosf(6.2831853f * b);
}

/* Writes into the fresh data directory dir: item ids i0000000 .. in index
 * order, n_users users (u000000 ..) with 20 interactions each at random
 * items, and an active VBPR snapshot (version 1) of random parameters
 * whose serving rows stand in for the visual terms. The same bytes every
 * run. Returns 0 or an error code (err.h). */
static inline int synth_snapshot_write(const char *dir, uint32_t n_items, uint32_t n_users)
{
	vr_store *st = NULL;
	rk_interactions *ix = NULL;
	rk_model *m = NULL;
	float *rows = NULL;
	rk_interaction_in *in = NULL;
	char (*uids)[16] = NULL, (*iids)[16] = NULL;
	rk_snap snap;
	rk_rng rng;
	rk_rng_seed(&rng, 1, 0);
	int rc = vr_store_open(&st, dir, NULL);
	if (!rc)
		rc = rk_interactions_open(&ix, st);
	if (!rc)
		rc = rk_snap_open(&snap, st);
	if (rc)
		goto leave;
	/* Every item id first, in index order, then 20 interactions per user. */
	char id[16];
	for (uint32_t i = 0; i < n_items && !rc; i++) {
		uint32_t got;
		snprintf(id, sizeof id, "i%07u", i);
		rc = rk_items_intern(ix, id, strlen(id), &got);
	}
	if (!rc)
		rc = rk_interactions_flush(ix);
	size_t n_in = (size_t)n_users * 20;
	in = malloc(n_in * sizeof *in);
	uids = malloc((size_t)n_users * sizeof *uids);
	iids = malloc(n_in * sizeof *iids);
	if (!in || !uids || !iids)
		rc = VR_ENOMEM;
	for (size_t x = 0; x < n_in && !rc; x++) {
		uint32_t u = (uint32_t)(x / 20);
		snprintf(uids[u], sizeof uids[u], "u%06u", u);
		snprintf(iids[x], sizeof iids[x], "i%07u", rk_rng_below(&rng, n_items));
		in[x] = (rk_interaction_in){ uids[u], strlen(uids[u]), iids[x], strlen(iids[x]),
					     (int64_t)(x % 20) };
	}
	if (!rc)
		rc = rk_interactions_add_batch(ix, in, n_in, NULL);
	if (rc)
		goto leave;
	rk_model_dims d = { RK_MODEL_VBPR, rk_interactions_users(ix), n_items, 200, 100, 2048 };
	if ((rc = rk_model_create(&m, &d)))
		goto leave;
	rk_model_init(m, 7);
	uint32_t dim = rk_model_dim(m);
	if (!(rows = malloc((size_t)n_items * dim * sizeof *rows))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (uint32_t i = 0; i < n_items; i++) {
		float *row = rows + (size_t)i * dim;
		m->beta_i[i] = 0.1f * synth_gauss(&rng);
		row[0] = m->beta_i[i] + 0.1f * synth_gauss(&rng);
		memcpy(row + 1, m->gamma_i + (size_t)i * d.k, d.k * sizeof(float));
		for (uint32_t c = 0; c < d.k2; c++)
			row[1 + d.k + c] = 0.1f * synth_gauss(&rng);
	}
	rk_snap_meta meta = { .version = 1, .kind = RK_MODEL_VBPR, .n_rows = n_items, .dim = dim,
			      .feature_dims = d.f, .feature_version = 1, .created_unix = time(NULL),
			      .trained_pairs = n_in };
	if (!(rc = rk_snap_save(&snap, m, rows, &meta)))
		rc = rk_snap_activate(&snap, 1, NULL, 0);
leave:
	free(rows);
	free(in);
	free(uids);
	free(iids);
	rk_model_free(m);
	rk_interactions_close(ix);
	vr_store_close(st);
	return rc;
}

#endif
