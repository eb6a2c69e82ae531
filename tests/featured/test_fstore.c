/* Unit tests of featured/fstore on a real LMDB environment in a temporary
 * directory: items with their images, vectors and changes; replacement;
 * ordering; model rows; re-embedded vectors and the switch of versions. */
#include "deadline.h"
#include "err.h"
#include "fstore.h"
#include "harness.h"
#include "store.h"

#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static vr_store *st;
static fd_fstore *fs;

static int open_fresh(void)
{
	snprintf(dir, sizeof dir, "/tmp/fd_fstore_test.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	vr_store_opts o = { .no_sync = 1 };
	int rc = vr_store_open(&st, dir, &o);
	return rc ? rc : fd_fstore_open(&fs, st);
}

static void close_all(void)
{
	fd_fstore_close(fs);
	vr_store_close(st);
	fs = NULL;
	st = NULL;
	vr_test_rmtree(dir);
}

static fd_model_info model(const char *arch, uint32_t dims)
{
	fd_model_info m = { 0 };
	snprintf(m.arch, sizeof m.arch, "%s", arch);
	snprintf(m.layer, sizeof m.layer, "output");
	snprintf(m.purpose, sizeof m.purpose, "embedding");
	m.dims = dims;
	m.input_size = 32;
	m.num_outputs = dims;
	m.created_unix = 1700000000;
	for (int c = 0; c < 3; c++) {
		m.mean[c] = 0.5f;
		m.std[c] = 0.25f;
	}
	return m;
}

/* Puts n items "id<base+i>" with vectors {i+k, ...} of version v. */
static int put_n(int base, int n, uint32_t version, uint32_t dims, float k, fd_put *puts)
{
	static char ids[64][16];
	static float vecs[64][8];
	static const char image[] = "\xff\xd8 not really a jpeg";
	for (int i = 0; i < n; i++) {
		snprintf(ids[i], sizeof ids[i], "id%03d", base + i);
		for (uint32_t d = 0; d < dims; d++)
			vecs[i][d] = (float)(base + i) + k + (float)d / 10;
		puts[i] = (fd_put){ .item_id = ids[i], .image = image, .image_len = sizeof image,
				    .vector = vecs[i] };
	}
	return fd_fstore_put_items(fs, version, dims, puts, (size_t)n);
}

TEST(models_and_activation)
{
	ASSERT_OK(open_fresh());
	uint32_t v = 0;
	ASSERT_EQ_INT(fd_fstore_active(fs, &v), VR_ENOTFOUND);
	fd_model_info m = model("small", 4), got;
	ASSERT_OK(fd_fstore_model_add(fs, &m, 1));
	ASSERT_EQ_INT(m.version, 1);
	ASSERT_OK(fd_fstore_active(fs, &v));
	ASSERT_EQ_INT(v, 1);
	ASSERT_OK(fd_fstore_model_get(fs, 0, &got));
	ASSERT_STR_EQ(got.arch, "small");
	ASSERT_EQ_INT(got.dims, 4);
	ASSERT_NEAR(got.std[2], 0.25, 1e-7);
	ASSERT_EQ_INT(got.created_unix, 1700000000);
	ASSERT_EQ_INT(fd_fstore_model_add(fs, &m, 0), VR_EEXIST);
	fd_put puts[4];
	ASSERT_OK(put_n(0, 2, 1, 4, 0, puts));
	fd_model_info m2 = model("alexnet", 8);
	ASSERT_EQ_INT(fd_fstore_model_add(fs, &m2, 1), VR_ESTATE);
	m2.version = 0;
	ASSERT_OK(fd_fstore_model_add(fs, &m2, 0));
	ASSERT_EQ_INT(m2.version, 2);
	fd_model_info list[4];
	size_t n = 0;
	ASSERT_OK(fd_fstore_model_list(fs, list, 4, &n));
	ASSERT_EQ_INT(n, 2);
	ASSERT_STR_EQ(list[1].arch, "alexnet");
	ASSERT_EQ_INT(fd_fstore_model_get(fs, 3, &got), VR_ENOTFOUND);
	close_all();
}

TEST(put_replace_and_order)
{
	ASSERT_OK(open_fresh());
	fd_model_info m = model("small", 3);
	ASSERT_OK(fd_fstore_model_add(fs, &m, 1));
	fd_put puts[8];
	/* Added in the order 5..9 then 0..4: vectors come back in that order. */
	ASSERT_OK(put_n(5, 5, 1, 3, 0, puts));
	ASSERT_EQ_INT(puts[0].kind, FD_ADDED);
	ASSERT_EQ_INT(puts[4].seq, 5);
	ASSERT_OK(put_n(0, 5, 1, 3, 0, puts));
	ASSERT_OK(put_n(7, 1, 1, 3, 100, puts)); /* replaces id007 */
	ASSERT_EQ_INT(puts[0].kind, FD_REPLACED);
	ASSERT_EQ_INT(puts[0].seq, 11);
	uint64_t items = 0, last = 0;
	ASSERT_OK(fd_fstore_stats(fs, &items, &last));
	ASSERT_EQ_INT(items, 10);
	ASSERT_EQ_INT(last, 11);
	ASSERT_EQ_INT(fd_fstore_last_seq(fs), 11);

	vr_txn *txn;
	fd_vec v;
	ASSERT_OK(vr_store_read_begin(st, &txn));
	uint64_t from = 0;
	char order[10][8];
	int n = 0;
	while (n < 10 && !fd_fstore_vec_next(fs, txn, 1, from, &v)) {
		snprintf(order[n++], sizeof order[0], "%.*s", (int)v.id_len, v.item_id);
		from = v.num + 1;
	}
	int rc_get = fd_fstore_vec_get(fs, txn, 1, "id007", &v);
	float first = 0;
	if (!rc_get)
		memcpy(&first, v.values, sizeof first);
	int rc_missing = fd_fstore_vec_get(fs, txn, 1, "nope", &v);
	int rc_v2 = fd_fstore_vec_get(fs, txn, 2, "id007", &v);
	fd_change ch;
	int rc_ch = fd_fstore_change_next(fs, txn, 10, &ch);
	int rc_end = fd_fstore_change_next(fs, txn, 11, &(fd_change){ 0 });
	fd_item it;
	int rc_item = fd_fstore_item_next(fs, txn, "id003", &it);
	vr_store_read_end(txn);
	ASSERT_EQ_INT(n, 10);
	ASSERT_STR_EQ(order[0], "id005");
	ASSERT_STR_EQ(order[4], "id009");
	ASSERT_STR_EQ(order[5], "id000");
	ASSERT_OK(rc_get);
	ASSERT_NEAR(first, 107, 1e-6);
	ASSERT_EQ_INT(rc_missing, VR_ENOTFOUND);
	ASSERT_EQ_INT(rc_v2, VR_ENOTFOUND);
	ASSERT_OK(rc_ch);
	ASSERT_EQ_INT(ch.seq, 11);
	ASSERT_EQ_INT(ch.kind, FD_REPLACED);
	ASSERT_EQ_INT(ch.id_len, 5);
	ASSERT_EQ_INT(rc_end, VR_ENOTFOUND);
	ASSERT_OK(rc_item);
	ASSERT_EQ_INT(it.id_len, 5);
	ASSERT(!memcmp(it.item_id, "id004", 5));
	ASSERT(it.image_len > 2 && !memcmp(it.image, "\xff\xd8", 2));
	close_all();
}

TEST(reembed_and_switch)
{
	ASSERT_OK(open_fresh());
	fd_model_info m1 = model("small", 2), m2 = model("small", 5);
	ASSERT_OK(fd_fstore_model_add(fs, &m1, 1));
	ASSERT_OK(fd_fstore_model_add(fs, &m2, 0));
	fd_put puts[4];
	ASSERT_OK(put_n(0, 3, 1, 2, 0, puts));
	uint64_t seq0 = puts[0].seq, missing = 0, seq = 0;
	float vec[5] = { 1, 2, 3, 4, 5 };
	/* id000 with its current seq is stored; id001 with a stale seq is not. */
	fd_revec rv[3] = { { "id000", seq0, vec, 0 }, { "id001", seq0, vec, 0 }, { "zzz", 1, vec, 0 } };
	ASSERT_OK(fd_fstore_put_vectors(fs, 2, 5, rv, 3));
	ASSERT_EQ_INT(rv[0].stored, 1);
	ASSERT_EQ_INT(rv[1].stored, 0);
	ASSERT_EQ_INT(rv[2].stored, 0);
	ASSERT_EQ_INT(fd_fstore_switch(fs, 2, &seq, &missing), VR_ESTATE);
	ASSERT_EQ_INT(missing, 2);
	ASSERT_EQ_INT(fd_fstore_put_vectors(fs, 9, 5, rv, 1), VR_ENOTFOUND);
	fd_revec rest[2] = { { "id001", puts[1].seq, vec, 0 }, { "id002", puts[2].seq, vec, 0 } };
	ASSERT_OK(fd_fstore_put_vectors(fs, 2, 5, rest, 2));
	ASSERT_OK(fd_fstore_switch(fs, 2, &seq, &missing));
	ASSERT_EQ_INT(seq, 4);
	uint32_t active = 0;
	ASSERT_OK(fd_fstore_active(fs, &active));
	ASSERT_EQ_INT(active, 2);
	/* Re-embedding the active version records REEMBEDDED changes. */
	fd_revec again[1] = { { "id000", seq0, vec, 0 } };
	ASSERT_OK(fd_fstore_put_vectors(fs, 2, 5, again, 1));
	ASSERT_EQ_INT(again[0].stored, 1);
	vr_txn *txn;
	fd_change ch, ch2;
	fd_item it;
	ASSERT_OK(vr_store_read_begin(st, &txn));
	int rc1 = fd_fstore_change_next(fs, txn, 3, &ch);
	int rc2 = fd_fstore_change_next(fs, txn, 4, &ch2);
	int rc3 = fd_fstore_item_get(fs, txn, "id000", &it);
	vr_store_read_end(txn);
	ASSERT_OK(rc1);
	ASSERT_EQ_INT(ch.kind, FD_MODEL_SWITCHED);
	ASSERT_EQ_INT(ch.version, 2);
	ASSERT_EQ_INT(ch.id_len, 0);
	ASSERT_OK(rc2);
	ASSERT_EQ_INT(ch2.kind, FD_REEMBEDDED);
	ASSERT_OK(rc3);
	ASSERT_EQ_INT(it.version, 2);
	ASSERT_EQ_INT(it.seq, 5);
	/* A replaced item loses its vectors of other versions. */
	ASSERT_OK(put_n(1, 1, 2, 5, 0, puts));
	ASSERT_OK(vr_store_read_begin(st, &txn));
	fd_vec v;
	int rc_old = fd_fstore_vec_get(fs, txn, 1, "id001", &v);
	int rc_new = fd_fstore_vec_get(fs, txn, 2, "id001", &v);
	vr_store_read_end(txn);
	ASSERT_EQ_INT(rc_old, VR_ENOTFOUND);
	ASSERT_OK(rc_new);
	close_all();
}

struct stopper {
	atomic_int stop;
};

static int stopper_stop(void *arg)
{
	return atomic_load(&((struct stopper *)arg)->stop);
}

static void *stop_later(void *arg)
{
	struct stopper *s = arg;
	usleep(50000);
	atomic_store(&s->stop, 1);
	fd_fstore_wake(fs);
	return NULL;
}

TEST(wait_wakes_on_commit)
{
	ASSERT_OK(open_fresh());
	fd_model_info m = model("small", 2);
	ASSERT_OK(fd_fstore_model_add(fs, &m, 1));
	/* A wait with nothing to wake it lasts until its deadline: a
	 * condition variable on another clock than the deadline returned at
	 * once (and Watch spun a core). */
	int64_t t0 = vr_now_ms();
	ASSERT_EQ_INT(fd_fstore_wait(fs, 0, vr_deadline_ms(60), NULL, NULL), 0);
	ASSERT_MSG(vr_now_ms() - t0 >= 55, "the wait returned after %lld ms, before its deadline of 60",
		   (long long)(vr_now_ms() - t0));
	/* With no deadline, a stop condition and fd_fstore_wake end it. */
	struct stopper s = { 0 };
	pthread_t th;
	t0 = vr_now_ms();
	ASSERT_OK(pthread_create(&th, NULL, stop_later, &s));
	ASSERT_EQ_INT(fd_fstore_wait(fs, 0, VR_FOREVER, stopper_stop, &s), 0);
	pthread_join(th, NULL);
	ASSERT_EQ_INT(atomic_load(&s.stop), 1);
	ASSERT_MSG(vr_now_ms() - t0 >= 45, "the wait ended after %lld ms, before it was stopped",
		   (long long)(vr_now_ms() - t0));
	fd_put puts[1];
	ASSERT_OK(put_n(0, 1, 1, 2, 0, puts));
	ASSERT_EQ_INT(fd_fstore_wait(fs, 0, vr_deadline_ms(20), NULL, NULL), 1);
	close_all();
}

/* A model row's numbers must fit their fields: a double converted to an
 * integer it does not fit is undefined (the fuzzer found created_unix
 * 1.97e93), and std is divided by. */
TEST(model_row_numbers_checked)
{
	static const char good[] =
		"{\"version\":3,\"arch\":\"small\",\"layer\":\"output\",\"dims\":4,"
		"\"input_size\":32,\"num_outputs\":4,\"weights\":\"\",\"created_unix\":-5,"
		"\"purpose\":\"embedding\",\"mean\":[0,0.5,1],\"std\":[1,2,3]}";
	fd_model_info m;
	ASSERT_OK(fd_model_decode(good, strlen(good), &m));
	ASSERT_EQ_INT(m.version, 3);
	ASSERT_EQ_INT(m.created_unix, -5);
	static const struct {
		const char *from, *to;
	} bad[] = {
		{ "\"created_unix\":-5", "\"created_unix\":1.96667e+93" },
		{ "\"created_unix\":-5", "\"created_unix\":9223372036854775808" },
		{ "\"version\":3", "\"version\":-1" },
		{ "\"version\":3", "\"version\":4294967296" },
		{ "\"dims\":4", "\"dims\":2.5" },
		{ "\"input_size\":32", "\"input_size\":1e300" },
		{ "\"std\":[1,2,3]", "\"std\":[1,0,3]" },
		{ "\"mean\":[0,0.5,1]", "\"mean\":[0,1e39,1]" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char row[512];
		const char *at = strstr(good, bad[i].from);
		ASSERT(at);
		snprintf(row, sizeof row, "%.*s%s%s", (int)(at - good), good, bad[i].to,
			 at + strlen(bad[i].from));
		ASSERT_MSG(fd_model_decode(row, strlen(row), &m) == VR_ECORRUPT, "accepted %s", row);
	}
}

/* A row's precision: absent in rows from before versions recorded it
 * (""), kept through encode and decode, a string or the row is corrupt. */
TEST(model_row_precision)
{
	static const char old[] =
		"{\"version\":3,\"arch\":\"small\",\"layer\":\"output\",\"dims\":4,"
		"\"input_size\":32,\"num_outputs\":4,\"weights\":\"\",\"created_unix\":-5,"
		"\"purpose\":\"embedding\",\"mean\":[0,0.5,1],\"std\":[1,2,3]}";
	fd_model_info m, back;
	ASSERT_OK(fd_model_decode(old, strlen(old), &m));
	ASSERT_STR_EQ(m.precision, "");
	char *text = fd_model_encode(&m);
	ASSERT(text && !strstr(text, "precision"));
	free(text);
	snprintf(m.precision, sizeof m.precision, "bf16");
	text = fd_model_encode(&m);
	ASSERT(text);
	ASSERT_OK(fd_model_decode(text, strlen(text), &back));
	free(text);
	ASSERT_STR_EQ(back.precision, "bf16");
	static const char *const bad[] = { ",\"precision\":16}", ",\"precision\":\"bfloat16-x\"}" };
	for (int i = 0; i < 2; i++) {
		char row[512];
		snprintf(row, sizeof row, "%.*s%s", (int)strlen(old) - 1, old, bad[i]);
		ASSERT_MSG(fd_model_decode(row, strlen(row), &m) == VR_ECORRUPT, "accepted %s", row);
	}
}

/* The other record decoders refuse values shorter than their layout. */
TEST(record_decoders_check_lengths)
{
	uint8_t key[12] = { 0, 0, 0, 1 }, val[64] = { 1, 0, 0, 0, 2, 0, 0, 0, 1 };
	fd_vec v;
	fd_change c;
	fd_item it;
	/* vectors: version 1, 2 dims, f32, id of 3 bytes: 16 + 8 + 3 bytes */
	val[12] = 3;
	ASSERT_OK(fd_vec_decode(key, 12, val, 27, &v));
	ASSERT_EQ_INT(v.dims, 2);
	ASSERT_EQ_INT(v.id_len, 3);
	ASSERT_EQ_INT(fd_vec_decode(key, 12, val, 26, &v), VR_ECORRUPT);
	ASSERT_EQ_INT(fd_vec_decode(key, 11, val, 27, &v), VR_ECORRUPT);
	ASSERT_OK(fd_change_decode(key, 8, val, 8, &c));
	ASSERT_EQ_INT(c.id_len, 0);
	ASSERT_EQ_INT(fd_change_decode(key, 8, val, 7, &c), VR_ECORRUPT);
	ASSERT_OK(fd_item_decode("id", 2, val, 32, &it));
	ASSERT_EQ_INT(fd_item_decode("id", 2, val, 33, &it), VR_ECORRUPT);
}

/* A moved item keeps its added time, version and every vector bit for
 * bit; importing it again replaces it whole (a version it no longer has
 * is gone); removing it takes everything and writes the note with it. */
TEST(import_and_remove)
{
	ASSERT_OK(open_fresh());
	fd_model_info m1 = model("small", 2), m2 = model("small", 3);
	ASSERT_OK(fd_fstore_model_add(fs, &m1, 1));
	ASSERT_OK(fd_fstore_model_add(fs, &m2, 0));
	const float a[2] = { 1.5f, -0.0f }, b[3] = { 3, 4, 5 }, c[2] = { 7, 8 };
	fd_import_vec both[2] = { { 1, 2, a }, { 2, 3, b } }, one[1] = { { 1, 2, c } };
	fd_import im = { .item_id = "x", .image = "\xff\xd8", .image_len = 2, .added_unix = 1600000000,
			 .version = 2, .vecs = both, .nvecs = 2 };
	ASSERT_OK(fd_fstore_import(fs, &im, 1));
	ASSERT_EQ_INT(im.kind, FD_ADDED);
	vr_txn *txn;
	fd_item it;
	fd_vec v;
	ASSERT_OK(vr_store_read_begin(st, &txn));
	ASSERT_OK(fd_fstore_item_get(fs, txn, "x", &it));
	ASSERT_EQ_INT(it.added_unix, 1600000000);
	ASSERT_EQ_INT(it.version, 2);
	ASSERT_EQ_INT(it.image_len, 2);
	ASSERT_OK(fd_fstore_vec_get(fs, txn, 1, "x", &v));
	ASSERT(!memcmp(v.values, a, sizeof a));
	ASSERT_OK(fd_fstore_vec_get(fs, txn, 2, "x", &v));
	ASSERT(!memcmp(v.values, b, sizeof b));
	vr_store_read_end(txn);
	im.vecs = one;
	im.nvecs = 1;
	im.version = 1;
	ASSERT_OK(fd_fstore_import(fs, &im, 1));
	ASSERT_EQ_INT(im.kind, FD_REPLACED);
	ASSERT_OK(vr_store_read_begin(st, &txn));
	ASSERT_OK(fd_fstore_vec_get(fs, txn, 1, "x", &v));
	ASSERT(!memcmp(v.values, c, sizeof c));
	ASSERT_EQ_INT(fd_fstore_vec_get(fs, txn, 2, "x", &v), VR_ENOTFOUND);
	vr_store_read_end(txn);
	const char *ids[2] = { "x", "absent" };
	uint64_t deleted = 9, seq0;
	void *note = NULL;
	size_t len = 0;
	ASSERT_OK(fd_fstore_stats(fs, &(uint64_t){ 0 }, &seq0));
	ASSERT_OK(fd_fstore_remove(fs, ids, 2, "journal", "J1", 2, &deleted));
	ASSERT_EQ_INT(deleted, 1);
	/* One REMOVED change, of the item that was there, in the same commit
	 * (the process's last seq moved with it: Watch is woken). */
	fd_change ch;
	ASSERT_OK(vr_store_read_begin(st, &txn));
	ASSERT_OK(fd_fstore_change_next(fs, txn, seq0, &ch));
	ASSERT_EQ_INT(ch.seq, seq0 + 1);
	ASSERT_EQ_INT(ch.kind, FD_REMOVED);
	ASSERT_EQ_INT(ch.version, 0);
	ASSERT_EQ_INT(ch.id_len, 1);
	ASSERT(!memcmp(ch.item_id, "x", 1));
	ASSERT_EQ_INT(fd_fstore_change_next(fs, txn, ch.seq, &ch), VR_ENOTFOUND);
	vr_store_read_end(txn);
	ASSERT_EQ_INT(fd_fstore_last_seq(fs), seq0 + 1);
	/* Nothing left to remove: no change. */
	ASSERT_OK(fd_fstore_remove(fs, ids, 2, "journal", "J1", 2, &deleted));
	ASSERT_EQ_INT(deleted, 0);
	ASSERT_EQ_INT(fd_fstore_last_seq(fs), seq0 + 1);
	ASSERT_OK(fd_fstore_note_get(fs, "journal", &note, &len));
	ASSERT_EQ_INT(len, 2);
	ASSERT(!memcmp(note, "J1", 2));
	free(note);
	ASSERT_EQ_INT(fd_fstore_note_get(fs, "none", &note, &len), VR_ENOTFOUND);
	uint64_t items, last;
	ASSERT_OK(fd_fstore_stats(fs, &items, &last));
	ASSERT_EQ_INT(items, 0);
	ASSERT_EQ_INT(last, seq0 + 1);
	ASSERT_OK(vr_store_read_begin(st, &txn));
	ASSERT_EQ_INT(fd_fstore_vec_get(fs, txn, 1, "x", &v), VR_ENOTFOUND);
	ASSERT_EQ_INT(fd_fstore_item_get(fs, txn, "x", &it), VR_ENOTFOUND);
	vr_store_read_end(txn);
	close_all();
}

static const struct vr_test tests[] = {
	T(models_and_activation), T(put_replace_and_order), T(reembed_and_switch),
	T(wait_wakes_on_commit), T(model_row_numbers_checked), T(model_row_precision),
	T(record_decoders_check_lengths), T(import_and_remove), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
