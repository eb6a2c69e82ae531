/* Unit tests of common/store (LMDB) against a real environment in a fresh
 * temporary directory per test.
 *
 * The crash test runs this same binary again as a writer child
 * ("test_store --writer DIR"): it commits keys in a loop and prints each
 * key on stdout after its commit returned; the parent kills it with
 * SIGKILL mid-way and checks that every printed key is in the store. */
#include "harness.h"

#include "err.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

static const char *fresh_dir(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/vr_store_test.XXXXXX");
	if (!mkdtemp(tmpdir))
		return NULL;
	return tmpdir;
}

static void remove_dir(const char *dir)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "  could not remove %s\n", dir);
}

/* A value whose bytes depend on its key, so a torn or misplaced value
 * shows up. */
static void fill_value(uint8_t *v, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		v[i] = (uint8_t)x;
	}
}

static int check_value(const void *v, size_t len, size_t want_len, uint64_t seed)
{
	static _Thread_local uint8_t want[1 << 16];
	if (len != want_len || len > sizeof want)
		return 0;
	fill_value(want, len, seed);
	return memcmp(v, want, len) == 0;
}

struct kv {
	vr_dbi db;
	const char *key;
	const char *val;
};

static int put_kv(vr_txn *txn, void *arg)
{
	struct kv *a = arg;
	return vr_put(txn, a->db, a->key, strlen(a->key), a->val, strlen(a->val));
}

static int del_kv(vr_txn *txn, void *arg)
{
	struct kv *a = arg;
	return vr_del(txn, a->db, a->key, strlen(a->key));
}

static int get_str(vr_store *st, vr_dbi db, const char *key, char *out, size_t cap)
{
	vr_txn *txn;
	const void *v;
	size_t len;
	int rc = vr_store_read_begin(st, &txn);
	if (rc)
		return rc;
	rc = vr_get(txn, db, key, strlen(key), &v, &len);
	if (rc == 0) {
		if (len >= cap)
			len = cap - 1;
		memcpy(out, v, len);
		out[len] = '\0';
	}
	vr_store_read_end(txn);
	return rc;
}

TEST(put_get_delete_overwrite)
{
	const char *dir = fresh_dir();
	vr_store *st;
	vr_dbi db;
	char buf[64];
	ASSERT(dir);
	ASSERT_OK(vr_store_open(&st, dir, NULL));
	ASSERT_OK(vr_store_dbi(st, "items", 0, &db));

	struct kv a = { db, "apple", "red" };
	ASSERT_OK(vr_store_write(st, put_kv, &a));
	ASSERT_OK(get_str(st, db, "apple", buf, sizeof buf));
	ASSERT_STR_EQ(buf, "red");

	a.val = "green and longer";
	ASSERT_OK(vr_store_write(st, put_kv, &a));
	ASSERT_OK(get_str(st, db, "apple", buf, sizeof buf));
	ASSERT_STR_EQ(buf, "green and longer");

	ASSERT_EQ_INT(get_str(st, db, "pear", buf, sizeof buf), VR_ENOTFOUND);
	ASSERT_OK(vr_store_write(st, del_kv, &a));
	ASSERT_EQ_INT(get_str(st, db, "apple", buf, sizeof buf), VR_ENOTFOUND);
	/* The callback's error comes back and nothing is committed. */
	ASSERT_EQ_INT(vr_store_write(st, del_kv, &a), VR_ENOTFOUND);

	vr_txn *txn;
	uint64_t n = 99;
	ASSERT_OK(vr_store_read_begin(st, &txn));
	ASSERT_OK(vr_count(txn, db, &n));
	vr_store_read_end(txn);
	ASSERT_EQ_INT(n, 0);
	vr_store_close(st);
	remove_dir(dir);
}

static int put_reserve_fn(vr_txn *txn, void *arg)
{
	vr_dbi db = *(vr_dbi *)arg;
	void *p;
	int rc = vr_put_reserve(txn, db, "big", 3, 40000, &p);
	if (rc)
		return rc;
	fill_value(p, 40000, 7);
	return 0;
}

TEST(put_reserve)
{
	const char *dir = fresh_dir();
	vr_store *st;
	vr_dbi db;
	vr_txn *txn;
	const void *v;
	size_t len;
	ASSERT(dir);
	ASSERT_OK(vr_store_open(&st, dir, NULL));
	ASSERT_OK(vr_store_dbi(st, "blobs", 0, &db));
	ASSERT_OK(vr_store_write(st, put_reserve_fn, &db));
	ASSERT_OK(vr_store_read_begin(st, &txn));
	int rc = vr_get(txn, db, "big", 3, &v, &len);
	int same = rc == 0 && check_value(v, len, 40000, 7);
	vr_store_read_end(txn);
	ASSERT_OK(rc);
	ASSERT(same);
	vr_store_close(st);
	remove_dir(dir);
}

struct fill_args {
	vr_dbi bytes_db, int_db;
	int n;
};

static int fill_fn(vr_txn *txn, void *arg)
{
	struct fill_args *a = arg;
	for (int i = 0; i < a->n; i++) {
		/* Insert in a scrambled order so order comes from the db. */
		int j = (i * 37) % a->n;
		char key[16];
		snprintf(key, sizeof key, "k%05d", j);
		uint64_t ik = (uint64_t)j * 1000003u;
		int rc = vr_put(txn, a->bytes_db, key, strlen(key), &j, sizeof j);
		if (rc == 0)
			rc = vr_put(txn, a->int_db, &ik, sizeof ik, &j, sizeof j);
		if (rc)
			return rc;
	}
	return 0;
}

TEST(cursor_order_and_last)
{
	const char *dir = fresh_dir();
	vr_store *st;
	vr_txn *txn;
	vr_cursor *c;
	const void *k, *v;
	size_t kl, vl;
	uint64_t last;
	struct fill_args a = { .n = 500 };
	ASSERT(dir);
	ASSERT_OK(vr_store_open(&st, dir, NULL));
	ASSERT_OK(vr_store_dbi(st, "names", 0, &a.bytes_db));
	ASSERT_OK(vr_store_dbi(st, "seq", VR_DB_INTEGERKEY, &a.int_db));

	ASSERT_OK(vr_store_read_begin(st, &txn));
	ASSERT_EQ_INT(vr_last_u64(txn, a.int_db, &last), VR_ENOTFOUND);
	vr_store_read_end(txn);

	ASSERT_OK(vr_store_write(st, fill_fn, &a)); /* 37 and 500 are coprime */
	ASSERT_OK(vr_store_read_begin(st, &txn));

	/* Byte keys: lexicographic order, every key once. */
	ASSERT_OK(vr_cursor_open(txn, a.bytes_db, &c));
	int i = 0, rc = vr_cursor_seek(c, NULL, 0, &k, &kl, &v, &vl);
	for (; rc == 0; rc = vr_cursor_next(c, &k, &kl, &v, &vl), i++) {
		int val;
		memcpy(&val, v, sizeof val);
		if (val != i || kl != 6)
			break;
	}
	vr_cursor_close(c);
	ASSERT_EQ_INT(rc, VR_ENOTFOUND);
	ASSERT_EQ_INT(i, 500);

	/* Integer keys: numeric order (not byte order of little-endian). */
	ASSERT_OK(vr_cursor_open(txn, a.int_db, &c));
	uint64_t prev = 0, key;
	i = 0;
	for (rc = vr_cursor_seek(c, NULL, 0, &k, &kl, NULL, NULL); rc == 0;
	     rc = vr_cursor_next(c, &k, &kl, NULL, NULL), i++) {
		memcpy(&key, k, sizeof key);
		if (kl != 8 || (i > 0 && key <= prev) || key != (uint64_t)i * 1000003u)
			break;
		prev = key;
	}
	ASSERT_EQ_INT(rc, VR_ENOTFOUND);
	ASSERT_EQ_INT(i, 500);

	/* Seek lands on the first key >= the probe. */
	uint64_t probe = 250ull * 1000003u - 5;
	ASSERT_OK(vr_cursor_seek(c, &probe, sizeof probe, &k, &kl, &v, &vl));
	memcpy(&key, k, sizeof key);
	ASSERT_EQ_INT(key, 250ull * 1000003u);
	vr_cursor_close(c);

	ASSERT_OK(vr_last_u64(txn, a.int_db, &last));
	ASSERT_EQ_INT(last, 499ull * 1000003u);
	uint64_t n;
	ASSERT_OK(vr_count(txn, a.int_db, &n));
	ASSERT_EQ_INT(n, 500);
	vr_store_read_end(txn);
	vr_store_close(st);
	remove_dir(dir);
}

TEST(reopen_keeps_data)
{
	const char *dir = fresh_dir();
	vr_store *st;
	vr_dbi db;
	char buf[64];
	ASSERT(dir);
	ASSERT_OK(vr_store_open(&st, dir, NULL));
	ASSERT_OK(vr_store_dbi(st, "items", 0, &db));
	struct kv a = { db, "id-42", "kept" };
	ASSERT_OK(vr_store_write(st, put_kv, &a));
	vr_store_close(st);

	ASSERT_OK(vr_store_open(&st, dir, NULL));
	ASSERT_OK(vr_store_dbi(st, "items", 0, &db));
	ASSERT_OK(get_str(st, db, "id-42", buf, sizeof buf));
	ASSERT_STR_EQ(buf, "kept");
	vr_store_close(st);
	remove_dir(dir);
}

struct blob_args {
	vr_dbi db;
	uint64_t first, count;
	size_t len;
	int runs; /* how often the callback ran: > count when it was retried */
};

static int put_blobs(vr_txn *txn, void *arg)
{
	struct blob_args *a = arg;
	static uint8_t val[1 << 16];
	a->runs++;
	for (uint64_t i = a->first; i < a->first + a->count; i++) {
		fill_value(val, a->len, i);
		int rc = vr_put(txn, a->db, &i, sizeof i, val, a->len);
		if (rc)
			return rc;
	}
	return 0;
}

static int count_good_blobs(vr_store *st, vr_dbi db, uint64_t n, size_t len)
{
	vr_txn *txn;
	int good = 0;
	if (vr_store_read_begin(st, &txn))
		return -1;
	for (uint64_t i = 0; i < n; i++) {
		const void *v;
		size_t vl;
		if (vr_get(txn, db, &i, sizeof i, &v, &vl) == 0 && check_value(v, vl, len, i))
			good++;
	}
	vr_store_read_end(txn);
	return good;
}

TEST(map_grows)
{
	const char *dir = fresh_dir();
	vr_store_opts opts = { .initial_map_bytes = 64 << 10, .no_sync = 1 };
	vr_store *st;
	vr_dbi db;
	ASSERT(dir);
	ASSERT_OK(vr_store_open(&st, dir, &opts));
	ASSERT_OK(vr_store_dbi(st, "blobs", VR_DB_INTEGERKEY, &db));
	size_t before = vr_store_map_bytes(st);

	/* 4 MiB in transactions of 64 values of 3000 bytes. */
	struct blob_args a = { .db = db, .count = 64, .len = 3000 };
	int calls = 0, runs = 0;
	for (a.first = 0; a.first < 1408; a.first += a.count, calls++) {
		a.runs = 0;
		ASSERT_OK(vr_store_write(st, put_blobs, &a));
		runs += a.runs;
	}
	ASSERT_MSG(vr_store_grow_count(st) > 0, "map never grew (%zu bytes)", vr_store_map_bytes(st));
	ASSERT_MSG(runs > calls, "no callback was retried (%d runs for %d writes)", runs, calls);
	ASSERT(vr_store_map_bytes(st) >= before * 64);
	ASSERT_EQ_INT(count_good_blobs(st, db, 1408, 3000), 1408);
	vr_store_close(st);

	/* The grown map is what the file holds now. */
	ASSERT_OK(vr_store_open(&st, dir, &opts));
	ASSERT_OK(vr_store_dbi(st, "blobs", VR_DB_INTEGERKEY, &db));
	ASSERT(vr_store_map_bytes(st) >= before * 64);
	ASSERT_EQ_INT(count_good_blobs(st, db, 1408, 3000), 1408);
	vr_store_close(st);
	remove_dir(dir);
}

TEST(map_full_at_max)
{
	const char *dir = fresh_dir();
	vr_store_opts opts = { .initial_map_bytes = 64 << 10, .max_map_bytes = 256 << 10, .no_sync = 1 };
	vr_store *st;
	vr_dbi db;
	ASSERT(dir);
	ASSERT_OK(vr_store_open(&st, dir, &opts));
	ASSERT_OK(vr_store_dbi(st, "blobs", VR_DB_INTEGERKEY, &db));
	struct blob_args a = { .db = db, .count = 200, .len = 3000 };
	ASSERT_EQ_INT(vr_store_write(st, put_blobs, &a), VR_EMAPFULL);
	ASSERT_CONTAINS(vr_store_last_error(), "map full");
	ASSERT_EQ_INT(vr_store_map_bytes(st), 256 << 10);
	/* A small write still fits after the failed one was rolled back. */
	a.count = 3;
	ASSERT_OK(vr_store_write(st, put_blobs, &a));
	vr_store_close(st);
	remove_dir(dir);
}

TEST(unwritable_dir)
{
	const char *dir = fresh_dir();
	char path[512];
	vr_store *st = NULL;
	ASSERT(dir);

	/* A path through a regular file cannot be created. */
	snprintf(path, sizeof path, "%s/file", dir);
	int fd = open(path, O_CREAT | O_WRONLY, 0600);
	ASSERT(fd >= 0);
	close(fd);
	snprintf(path, sizeof path, "%s/file/data", dir);
	ASSERT_EQ_INT(vr_store_open(&st, path, NULL), -ENOTDIR);
	ASSERT(st == NULL);
	ASSERT_CONTAINS(vr_store_last_error(), path);

	/* Nested directories are created. */
	snprintf(path, sizeof path, "%s/a/b/c", dir);
	ASSERT_OK(vr_store_open(&st, path, NULL));
	vr_store_close(st);

	/* A read-only directory: root ignores modes, so test it as nobody. */
	snprintf(path, sizeof path, "%s/ro", dir);
	ASSERT_OK(mkdir(path, 0555));
	ASSERT_OK(chmod(dir, 0755));
	pid_t pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
			_exit(2);
		vr_store *s = NULL;
		int rc = vr_store_open(&s, path, NULL);
		_exit(rc == -EACCES ? 0 : 1);
	}
	int status = 0;
	ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
	ASSERT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		   "open of a read-only dir did not fail with -EACCES (child status %d)", status);
	remove_dir(dir);
}

struct reader_args {
	vr_store *st;
	vr_dbi db;
	atomic_int *stop;
	long reads;
	int errors;
};

static void *reader_main(void *arg)
{
	struct reader_args *r = arg;
	while (!atomic_load(r->stop)) {
		vr_txn *txn;
		const void *v;
		size_t len;
		uint64_t key = 0;
		if (vr_store_read_begin(r->st, &txn)) {
			r->errors++;
			continue;
		}
		/* Key 0 was written before the readers started. */
		if (vr_get(txn, r->db, &key, sizeof key, &v, &len) != 0 || !check_value(v, len, 3000, 0))
			r->errors++;
		uint64_t last;
		if (vr_last_u64(txn, r->db, &last) == 0 && last > 0) {
			if (vr_get(txn, r->db, &last, sizeof last, &v, &len) != 0 ||
			    !check_value(v, len, 3000, last))
				r->errors++;
		}
		vr_store_read_end(txn);
		r->reads++;
	}
	return NULL;
}

TEST(readers_during_growth)
{
	const char *dir = fresh_dir();
	vr_store_opts opts = { .initial_map_bytes = 64 << 10, .no_sync = 1 };
	vr_store *st;
	vr_dbi db;
	atomic_int stop = 0;
	ASSERT(dir);
	ASSERT_OK(vr_store_open(&st, dir, &opts));
	ASSERT_OK(vr_store_dbi(st, "blobs", VR_DB_INTEGERKEY, &db));
	struct blob_args a = { .db = db, .first = 0, .count = 1, .len = 3000 };
	ASSERT_OK(vr_store_write(st, put_blobs, &a));

	struct reader_args r[2];
	pthread_t th[2];
	for (int i = 0; i < 2; i++) {
		r[i] = (struct reader_args){ .st = st, .db = db, .stop = &stop };
		ASSERT_OK(pthread_create(&th[i], NULL, reader_main, &r[i]));
	}
	int rc = 0;
	a.count = 16;
	for (a.first = 1; a.first < 1 + 64 * 16 && rc == 0; a.first += a.count)
		rc = vr_store_write(st, put_blobs, &a);
	atomic_store(&stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	ASSERT_OK(rc);
	ASSERT(vr_store_grow_count(st) >= 4);
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ_INT(r[i].errors, 0);
		ASSERT(r[i].reads > 0);
	}
	ASSERT_EQ_INT(count_good_blobs(st, db, 1 + 64 * 16, 3000), 1 + 64 * 16);
	vr_store_close(st);
	remove_dir(dir);
}

struct handoff {
	vr_txn *txn;
	vr_dbi db;
	int rc;
};

static void *end_elsewhere(void *arg)
{
	struct handoff *h = arg;
	const void *v;
	size_t len;
	uint64_t key = 0;
	h->rc = vr_get(h->txn, h->db, &key, sizeof key, &v, &len);
	vr_store_read_end(h->txn);
	return NULL;
}

TEST(read_txn_ends_on_other_thread)
{
	const char *dir = fresh_dir();
	vr_store_opts opts = { .initial_map_bytes = 64 << 10, .no_sync = 1 };
	vr_store *st;
	vr_dbi db;
	pthread_t th;
	struct handoff h;
	ASSERT(dir);
	ASSERT_OK(vr_store_open(&st, dir, &opts));
	ASSERT_OK(vr_store_dbi(st, "blobs", VR_DB_INTEGERKEY, &db));
	struct blob_args a = { .db = db, .count = 1, .len = 3000 };
	ASSERT_OK(vr_store_write(st, put_blobs, &a));
	h.db = db;
	ASSERT_OK(vr_store_read_begin(st, &h.txn));
	ASSERT_OK(pthread_create(&th, NULL, end_elsewhere, &h));
	pthread_join(th, NULL);
	ASSERT_OK(h.rc);
	/* The gate is open again: a write that must grow the map completes. */
	a.count = 64;
	ASSERT_OK(vr_store_write(st, put_blobs, &a));
	ASSERT(vr_store_grow_count(st) > 0);
	vr_store_close(st);
	remove_dir(dir);
}

/* Child side of the crash test: commit values in a loop (the map starts
 * tiny, so it also grows while being killed) and report each key after its
 * commit returned. Never returns. */
static int writer_child(const char *dir)
{
	vr_store_opts opts = { .initial_map_bytes = 128 << 10 };
	vr_store *st;
	vr_dbi db;
	if (vr_store_open(&st, dir, &opts) || vr_store_dbi(st, "acked", VR_DB_INTEGERKEY, &db))
		return 3;
	struct blob_args a = { .db = db, .count = 1 };
	for (a.first = 0;; a.first++) {
		a.len = 500 + (size_t)(a.first * 7919 % 6000);
		if (vr_store_write(st, put_blobs, &a))
			return 4;
		char line[32];
		int n = snprintf(line, sizeof line, "%llu %zu\n", (unsigned long long)a.first, a.len);
		if (write(STDOUT_FILENO, line, (size_t)n) != n)
			return 5;
	}
}

TEST(acked_writes_survive_sigkill)
{
	const char *dir = fresh_dir();
	int fds[2];
	ASSERT(dir);
	ASSERT_OK(pipe(fds));
	pid_t pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execl("/proc/self/exe", "test_store", "--writer", dir, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);

	static uint64_t lens[1 << 16];
	uint64_t acked = 0;
	FILE *in = fdopen(fds[0], "r");
	ASSERT(in);
	unsigned long long key;
	size_t len;
	int killed = 0;
	while (fscanf(in, "%llu %zu", &key, &len) == 2) {
		if (key != acked || key >= sizeof lens / sizeof lens[0])
			break;
		lens[acked++] = len;
		/* Kill it mid-stream; lines already in the pipe still count. */
		if (acked == 300 && !killed) {
			kill(pid, SIGKILL);
			killed = 1;
		}
	}
	fclose(in);
	int status = 0;
	waitpid(pid, &status, 0);
	ASSERT_MSG(killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		   "writer ended by itself (status %d) after %llu keys", status, (unsigned long long)acked);

	vr_store *st;
	vr_dbi db;
	vr_txn *txn;
	ASSERT_OK(vr_store_open(&st, dir, NULL));
	ASSERT_OK(vr_store_dbi(st, "acked", VR_DB_INTEGERKEY, &db));
	ASSERT_OK(vr_store_read_begin(st, &txn));
	uint64_t bad = 0;
	for (uint64_t i = 0; i < acked; i++) {
		const void *v;
		size_t vl;
		if (vr_get(txn, db, &i, sizeof i, &v, &vl) != 0 || !check_value(v, vl, lens[i], i))
			bad++;
	}
	vr_store_read_end(txn);
	vr_store_close(st);
	ASSERT_MSG(bad == 0, "%llu of %llu acked keys missing or damaged",
		   (unsigned long long)bad, (unsigned long long)acked);
	fprintf(stderr, "  %llu acked keys all present after SIGKILL\n", (unsigned long long)acked);
	remove_dir(dir);
}

static const struct vr_test tests[] = {
	T(put_get_delete_overwrite),
	T(put_reserve),
	T(cursor_order_and_last),
	T(reopen_keeps_data),
	T(map_grows),
	T(map_full_at_max),
	T(unwritable_dir),
	T(readers_during_growth),
	T(read_txn_ends_on_other_thread),
	T(acked_writes_survive_sigkill),
	{ 0 },
};

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--writer"))
		return writer_child(argv[2]);
	return vr_test_main(tests, argc, argv);
}
