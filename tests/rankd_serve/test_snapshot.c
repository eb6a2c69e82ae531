/* Unit tests of rankd's model snapshots (snapshot.h) on a real LMDB
 * environment in a temporary directory: a snapshot with cold rows loads
 * back as it was saved, and damaged records are refused as corrupt
 * instead of loaded or allowed to run rankd out of memory (found by
 * tests/fuzz/fuzz_rankd_snapshot). */
#include "err.h"
#include "harness.h"
#include "index.h"
#include "model.h"
#include "snapshot.h"
#include "store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define USERS 3
#define ITEMS 4
#define K 2
#define DIM (1 + K)

static char dir[64];
static vr_store *st;
static rk_snap snap;
static rk_snap_meta meta;
static const rk_snap_pos pos9 = { RK_SNAP_SEQ_KEY, 9 };

/* A fresh store holding snapshot v1 of a BPR model (ITEMS rows, row i
 * all i + 1), active. */
static int save_v1(void)
{
	rk_model_dims d = { RK_MODEL_BPR, USERS, ITEMS, K, 0, 0 };
	rk_model *m;
	float rows[ITEMS * DIM];
	vr_store_opts o = { .no_sync = 1 };
	snprintf(dir, sizeof dir, "/tmp/rk_snap_test.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	int rc = vr_store_open(&st, dir, &o);
	if (rc || (rc = rk_snap_open(&snap, st)) || (rc = rk_model_create(&m, &d)))
		return rc;
	rk_model_init(m, 3);
	for (int x = 0; x < ITEMS * DIM; x++)
		rows[x] = (float)(x / DIM + 1);
	meta = (rk_snap_meta){ .version = 1, .kind = RK_MODEL_BPR, .n_rows = ITEMS, .dim = DIM };
	if (!(rc = rk_snap_save(&snap, m, rows, &meta)))
		rc = rk_snap_activate(&snap, 1, NULL, 0);
	rk_model_free(m);
	return rc;
}

static void close_all(void)
{
	char cmd[128];
	vr_store_close(st);
	st = NULL;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
}

TEST(snapshot_loads_with_cold_rows)
{
	ASSERT_OK(save_v1());
	const float cold[DIM] = { -1, 0.5f, 2 };
	ASSERT_OK(rk_snap_put_row(&snap, 1, ITEMS + 1, cold, DIM, &pos9));
	rk_snap_meta got;
	ASSERT_OK(rk_snap_active(&snap, &got));
	ASSERT_EQ_INT(got.n_rows, ITEMS);
	rk_model *m;
	struct rk_index *ix;
	ASSERT_OK(rk_snap_load(&snap, &got, ITEMS + 2, &m, &ix));
	struct rk_index_view view;
	rk_index_acquire(ix, &view);
	ASSERT_EQ_INT(view.n, ITEMS + 2);
	ASSERT(rk_index_row(&view, 2)[0] == 3.0f);
	ASSERT(rk_index_row(&view, ITEMS)[0] == 0.0f); /* the gap: a zero row */
	ASSERT(rk_index_row(&view, ITEMS + 1)[1] == 0.5f);
	rk_index_release(&view);
	rk_index_destroy(ix);
	rk_model_free(m);
	close_all();
}

/* The Snapshot stream's reader: the export read in spans of any size (and
 * across the cold records' item and row) is the bytes rk_snap_export
 * gives, its CRC-32 is theirs, and those decode to the rows that were put. */
TEST(snapshot_reader_reads_any_span)
{
	ASSERT_OK(save_v1());
	const uint32_t cold_items[3] = { ITEMS, ITEMS + 1, ITEMS + 5 };
	for (int c = 0; c < 3; c++) {
		const float row[DIM] = { (float)c, -0.5f * (float)c, 7 };
		ASSERT_OK(rk_snap_put_row(&snap, 1, cold_items[c], row, DIM, &pos9));
	}
	/* A later version's cold row: the reader's walk ends at v1's last. */
	const float later[DIM] = { 9, 9, 9 };
	ASSERT_OK(rk_snap_put_row(&snap, 2, ITEMS, later, DIM, &pos9));
	void *whole;
	size_t len;
	ASSERT_OK(rk_snap_export(&snap, 0, &whole, &len));
	rk_snap_export_view x;
	ASSERT_OK(rk_snap_export_decode(whole, len, &x));
	ASSERT_EQ_INT(x.n_cold, 3);
	ASSERT_EQ_INT(x.need_items, ITEMS + 6);
	for (int c = 0; c < 3; c++) {
		uint32_t item;
		float row[DIM];
		memcpy(&item, x.cold + c * (4 + sizeof row), 4);
		memcpy(row, x.cold + c * (4 + sizeof row) + 4, sizeof row);
		ASSERT_EQ_INT(item, cold_items[c]);
		ASSERT(row[0] == (float)c && row[1] == -0.5f * (float)c && row[2] == 7);
	}
	rk_snap_reader *r;
	ASSERT_OK(rk_snap_reader_open(&snap, 1, &r));
	ASSERT_EQ_INT(rk_snap_reader_size(r), len);
	ASSERT_EQ_INT(rk_snap_reader_version(r), 1);
	ASSERT_EQ_INT(rk_snap_reader_crc(r), (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), whole, len));
	char *got = malloc(len);
	const size_t steps[] = { 1, 3, 4, 7, 13, 4 + DIM * sizeof(float), 61, len };
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
		memset(got, 0x5a, len);
		for (size_t off = 0; off < len; off += steps[i])
			rk_snap_reader_read(r, off, got + off, len - off < steps[i] ? len - off : steps[i]);
		ASSERT_MSG(!memcmp(got, whole, len), "spans of %zu bytes differ from the export", steps[i]);
	}
	free(got);
	rk_snap_reader_close(r);
	free(whole);
	rk_snap_reader *none;
	ASSERT_EQ_INT(rk_snap_reader_open(&snap, 2, &none), VR_ENOTFOUND);
	close_all();
}

/* A cold row of an item rankd does not know was padded up to with zero
 * rows: a damaged key could make a load allocate up to 2^32 rows (the
 * fuzzer's input asked for 16 GiB). A row that is not finite was refused
 * as VR_EINVAL, as if the caller had erred. */
TEST(snapshot_damaged_cold_rows_corrupt)
{
	const float ok_row[DIM] = { 1, 1, 1 }, nan_row[DIM] = { 1, NAN, 1 };
	const struct {
		uint32_t item, n_items, dim;
		const float *row;
	} bad[] = {
		{ ITEMS + 1000, ITEMS + 1, DIM, ok_row }, /* an item rankd does not know */
		{ ITEMS, ITEMS + 1, DIM, nan_row },       /* not finite */
		{ ITEMS, ITEMS + 1, 1, ok_row },          /* not DIM floats */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		rk_model *m = NULL;
		struct rk_index *ix = NULL;
		ASSERT_OK(save_v1());
		ASSERT_OK(rk_snap_put_row(&snap, 1, bad[i].item, bad[i].row, bad[i].dim, &pos9));
		ASSERT_MSG(rk_snap_load(&snap, &meta, bad[i].n_items, &m, &ix) == VR_ECORRUPT,
			   "cold row %zu loaded", i);
		ASSERT(!m && !ix);
		close_all();
	}
}

/* The decoders refuse a meta record of another length or version, and
 * rows that disagree with the meta. */
TEST(snapshot_decoders_check_lengths)
{
	uint8_t rec[256] = { 0 };
	rk_snap_meta m;
	ASSERT_EQ_INT(rk_snap_meta_decode(rec, sizeof rec, 1, &m), VR_ECORRUPT);
	ASSERT_EQ_INT(rk_snap_meta_decode(rec, 3, 1, &m), VR_ECORRUPT);
	rk_model *model = NULL;
	struct rk_index *ix = NULL;
	ASSERT_EQ_INT(rk_snap_decode(&meta, rec, 0, rec, 0, &model, &ix), VR_ECORRUPT);
	ASSERT(!model && !ix);
}

/* Feed positions: each shard's under its own key, activated together
 * with a version, and those of another shard map forgotten while this
 * map's and the single featured's stay. */
TEST(snapshot_feed_positions_per_shard)
{
	ASSERT_OK(save_v1());
	const char *a = "featured_seq/3-00000000000000aa/127.0.0.1:1",
		   *b = "featured_seq/3-00000000000000aa/127.0.0.1:2",
		   *old = "featured_seq/2-00000000000000bb/127.0.0.1:1";
	const rk_snap_pos pos[3] = { { a, 11 }, { b, 22 }, { old, 33 } };
	ASSERT_OK(rk_snap_activate(&snap, 1, pos, 3));
	const float cold[DIM] = { 1, 2, 3 };
	const rk_snap_pos next = { b, 23 };
	ASSERT_OK(rk_snap_put_row(&snap, 1, ITEMS, cold, DIM, &next));
	ASSERT_OK(rk_snap_put_seq(&snap, &pos9));
	uint64_t seq;
	ASSERT_OK(rk_snap_seq(&snap, a, &seq));
	ASSERT_EQ_INT(seq, 11);
	ASSERT_OK(rk_snap_seq(&snap, b, &seq));
	ASSERT_EQ_INT(seq, 23);
	size_t dropped = 0;
	ASSERT_OK(rk_snap_seq_forget(&snap, "featured_seq/3-00000000000000aa/", &dropped));
	ASSERT_EQ_INT(dropped, 1);
	ASSERT_OK(rk_snap_seq(&snap, old, &seq));
	ASSERT_EQ_INT(seq, 0);
	ASSERT_OK(rk_snap_seq(&snap, a, &seq));
	ASSERT_EQ_INT(seq, 11);
	ASSERT_OK(rk_snap_seq(&snap, RK_SNAP_SEQ_KEY, &seq));
	ASSERT_EQ_INT(seq, 9);
	/* No map kept (one featured again): every shard's goes, not its own. */
	ASSERT_OK(rk_snap_seq_forget(&snap, NULL, &dropped));
	ASSERT_EQ_INT(dropped, 2);
	ASSERT_OK(rk_snap_seq(&snap, b, &seq));
	ASSERT_EQ_INT(seq, 0);
	ASSERT_OK(rk_snap_seq(&snap, RK_SNAP_SEQ_KEY, &seq));
	ASSERT_EQ_INT(seq, 9);
	close_all();
}

static const struct vr_test tests[] = {
	T(snapshot_loads_with_cold_rows),
	T(snapshot_reader_reads_any_span),
	T(snapshot_damaged_cold_rows_corrupt),
	T(snapshot_decoders_check_lengths),
	T(snapshot_feed_positions_per_shard),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
