/* store: the LMDB environment of a service (contract in store.h).
 *
 * DESIGN
 * Threads: any thread reads or writes; LMDB itself serialises writers with
 * its own lock and lets readers run beside them. The environment is opened
 * with MDB_NOTLS, so a read transaction is not tied to the thread that
 * began it (a handler may begin it on one thread and end it on another).
 *
 * Map growth: LMDB only lets a process change its map size while it has no
 * transaction open. Every transaction therefore passes a gate: begin enters
 * it (shared), end leaves it. A writer that hits MDB_MAP_FULL aborts, then
 * closes the gate (exclusive): new entrants wait, the grower waits until
 * the last active transaction has left, calls mdb_env_set_mapsize with the
 * doubled size, opens the gate and runs the callback again. The gate is a
 * mutex, a condition variable and a counter rather than a pthread rwlock
 * because a read transaction may end on another thread than the one that
 * began it, which a rwlock does not allow. Two writers that both hit the
 * full map grow it once: a grower only grows if the size is still the one
 * its failed transaction saw.
 *
 * Full disk: LMDB writes a transaction's pages at commit (and may spill
 * some during a big one) and the file grows as they land beyond its end,
 * so a full file system fails the commit; LMDB aborts the transaction and
 * the last committed state stays as it was, on disk and in the map. The
 * write is answered VR_ENOSPACE naming the directory. LMDB turns a short
 * write, which is how a full file system usually answers, into EIO; an
 * EIO counts as a full disk when the file system has under 1 MiB left.
 *
 * Ownership: the store owns the MDB_env; a vr_txn is a small heap object
 * owned by whoever began it (for writes, vr_store_write on its stack); a
 * cursor is owned by its opener and must be closed before its transaction
 * ends. Closing the store with transactions open is a caller bug. */
#include "store.h"

#include "deadline.h"
#include "err.h"
#include "log.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct vr_store {
	MDB_env *env;
	char *dir;
	size_t max_map_bytes;
	pthread_mutex_t gate_mu;  /* guards everything below */
	pthread_cond_t gate_cv;
	unsigned active;          /* transactions of this process now open */
	int resizing;             /* a grower holds the gate closed */
	size_t map_bytes;
	unsigned grow_count;
};

struct vr_txn {
	MDB_txn *txn;
	vr_store *st;
	int map_full; /* a put hit MDB_MAP_FULL: vr_store_write grows and retries */
};

struct vr_cursor {
	MDB_cursor *cur;
};

static _Thread_local char last_error[256];

const char *vr_store_last_error(void)
{
	return last_error;
}

/* Maps an LMDB return code to ours and records the LMDB text. LMDB passes
 * system failures (open, fsync, mmap) through as positive errno values. */
static int store_err(int mrc, const char *what)
{
	if (mrc == 0)
		return 0;
	if (mrc == MDB_NOTFOUND)
		return VR_ENOTFOUND;
	snprintf(last_error, sizeof last_error, "%s: %s", what, mdb_strerror(mrc));
	switch (mrc) {
	case MDB_KEYEXIST: return VR_EEXIST;
	case MDB_MAP_FULL: return VR_EMAPFULL;
	case MDB_CORRUPTED:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
	case MDB_PAGE_NOTFOUND: return VR_ECORRUPT;
	case ENOMEM: return VR_ENOMEM;
	}
	if (mrc > 0)
		return -mrc;
	return VR_ESTORE;
}

/* Whether the file system of dir has (next to) no space left. */
static int fs_full(const char *dir)
{
	struct statvfs sv;
	return statvfs(dir, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < ((uint64_t)1 << 20);
}

/* store_err for a failure that may come from writing pages to disk. */
static int write_err(vr_store *st, int mrc, const char *what)
{
	if (mrc == ENOSPC || mrc == EDQUOT || (mrc == EIO && fs_full(st->dir))) {
		snprintf(last_error, sizeof last_error,
			 "no space left on the file system of %s (%s: %s); free some space there or "
			 "give it more", st->dir, what, mdb_strerror(mrc));
		return VR_ENOSPACE;
	}
	return store_err(mrc, what);
}

static void gate_enter(vr_store *st, size_t *map_bytes)
{
	pthread_mutex_lock(&st->gate_mu);
	while (st->resizing)
		pthread_cond_wait(&st->gate_cv, &st->gate_mu);
	st->active++;
	if (map_bytes)
		*map_bytes = st->map_bytes;
	pthread_mutex_unlock(&st->gate_mu);
}

static void gate_leave(vr_store *st)
{
	pthread_mutex_lock(&st->gate_mu);
	st->active--;
	if (st->active == 0 && st->resizing)
		pthread_cond_broadcast(&st->gate_cv);
	pthread_mutex_unlock(&st->gate_mu);
}

/* Resizes the map with no transaction of this process open. new_bytes 0
 * adopts a size another process set (MDB_MAP_RESIZED); otherwise the map
 * doubles, unless it already grew since the caller saw seen_bytes. */
static int grow_map(vr_store *st, size_t seen_bytes, int adopt)
{
	int rc = 0;
	pthread_mutex_lock(&st->gate_mu);
	while (st->resizing)
		pthread_cond_wait(&st->gate_cv, &st->gate_mu);
	if (!adopt && st->map_bytes != seen_bytes)
		goto leave;
	if (!adopt && st->map_bytes >= st->max_map_bytes) {
		snprintf(last_error, sizeof last_error,
			 "map full at %zu bytes, the configured maximum, in %s", st->map_bytes, st->dir);
		rc = VR_EMAPFULL;
		goto leave;
	}
	st->resizing = 1;
	while (st->active > 0)
		pthread_cond_wait(&st->gate_cv, &st->gate_mu);
	size_t want = 0;
	if (!adopt) {
		want = st->map_bytes > st->max_map_bytes / 2 ? st->max_map_bytes : st->map_bytes * 2;
	}
	rc = store_err(mdb_env_set_mapsize(st->env, want), "mdb_env_set_mapsize");
	if (rc == 0) {
		MDB_envinfo info;
		mdb_env_info(st->env, &info);
		st->map_bytes = info.me_mapsize;
		if (!adopt) {
			st->grow_count++;
			VR_INFO("store: map grown to %zu bytes", st->map_bytes);
		}
	}
	st->resizing = 0;
	pthread_cond_broadcast(&st->gate_cv);
leave:
	pthread_mutex_unlock(&st->gate_mu);
	return rc;
}

/* mkdir -p; an existing directory is fine. */
static int make_dirs(const char *dir)
{
	char path[4096];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof path)
		return VR_EINVAL;
	memcpy(path, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		char saved = path[i];
		path[i] = '\0';
		if (mkdir(path, 0750) != 0 && errno != EEXIST)
			return -errno;
		path[i] = saved;
	}
	struct stat sb;
	if (stat(dir, &sb) != 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode))
		return -ENOTDIR;
	return 0;
}

int vr_store_open(vr_store **out, const char *dir, const vr_store_opts *opts)
{
	vr_store_opts o = opts ? *opts : (vr_store_opts){ 0 };
	size_t initial = o.initial_map_bytes ? o.initial_map_bytes : (size_t)64 << 20;
	size_t max = o.max_map_bytes ? o.max_map_bytes : (size_t)1 << 40;
	vr_store *st = NULL;
	int rc;

	*out = NULL;
	last_error[0] = '\0';
	if (!dir)
		return VR_EINVAL;
	if (initial > max)
		initial = max;
	rc = make_dirs(dir);
	if (rc != 0) {
		snprintf(last_error, sizeof last_error, "%s: %s", dir, vr_strerror(rc));
		return rc;
	}
	/* LMDB would fail later with a less direct message; a read-only data
	 * directory is the usual operator mistake. */
	if (access(dir, W_OK | X_OK) != 0) {
		rc = -errno;
		snprintf(last_error, sizeof last_error, "%s: %s", dir, vr_strerror(rc));
		return rc;
	}

	st = calloc(1, sizeof *st);
	if (!st || !(st->dir = strdup(dir))) {
		free(st);
		return VR_ENOMEM;
	}
	pthread_mutex_init(&st->gate_mu, NULL);
	vr_cond_init(&st->gate_cv);
	st->max_map_bytes = max;

	rc = store_err(mdb_env_create(&st->env), "mdb_env_create");
	if (rc)
		goto fail;
	rc = store_err(mdb_env_set_maxdbs(st->env, o.max_dbs ? o.max_dbs : 16), "mdb_env_set_maxdbs");
	if (rc)
		goto fail;
	rc = store_err(mdb_env_set_maxreaders(st->env, o.max_readers ? o.max_readers : 256),
		       "mdb_env_set_maxreaders");
	if (rc)
		goto fail;
	rc = store_err(mdb_env_set_mapsize(st->env, initial), "mdb_env_set_mapsize");
	if (rc)
		goto fail;
	rc = store_err(mdb_env_open(st->env, dir, MDB_NOTLS | (o.no_sync ? MDB_NOSYNC : 0), 0640),
		       "mdb_env_open");
	if (rc)
		goto fail;

	/* A previous process killed with readers open leaves their slots
	 * taken; free them now rather than run out later. */
	int dead = 0;
	rc = store_err(mdb_reader_check(st->env, &dead), "mdb_reader_check");
	if (rc)
		goto fail;
	if (dead > 0)
		VR_INFO("store: %s: cleared %d reader slot(s) left by a dead process", dir, dead);

	/* The file may hold a bigger map than asked for (it grew before). */
	MDB_envinfo info;
	mdb_env_info(st->env, &info);
	st->map_bytes = info.me_mapsize;
	*out = st;
	return 0;
fail:
	vr_store_close(st);
	return rc;
}

void vr_store_close(vr_store *st)
{
	if (!st)
		return;
	if (st->env)
		mdb_env_close(st->env);
	pthread_cond_destroy(&st->gate_cv);
	pthread_mutex_destroy(&st->gate_mu);
	free(st->dir);
	free(st);
}

size_t vr_store_map_bytes(vr_store *st)
{
	pthread_mutex_lock(&st->gate_mu);
	size_t n = st->map_bytes;
	pthread_mutex_unlock(&st->gate_mu);
	return n;
}

size_t vr_store_used_bytes(vr_store *st)
{
	MDB_envinfo info;
	MDB_stat stat;
	size_t seen;
	/* Inside the gate: LMDB reads its meta pages in the map, which a
	 * grower remaps. */
	gate_enter(st, &seen);
	int bad = mdb_env_info(st->env, &info) || mdb_env_stat(st->env, &stat);
	gate_leave(st);
	return bad ? 0 : (size_t)(info.me_last_pgno + 1) * stat.ms_psize;
}

unsigned vr_store_grow_count(vr_store *st)
{
	pthread_mutex_lock(&st->gate_mu);
	unsigned n = st->grow_count;
	pthread_mutex_unlock(&st->gate_mu);
	return n;
}

int vr_store_write(vr_store *st, vr_store_write_fn fn, void *arg)
{
	int rc;
	for (;;) {
		vr_txn t = { .st = st };
		size_t seen;
		gate_enter(st, &seen);
		int mrc = mdb_txn_begin(st->env, NULL, 0, &t.txn);
		if (mrc == MDB_MAP_RESIZED) {
			gate_leave(st);
			rc = grow_map(st, seen, 1);
			if (rc)
				return rc;
			continue;
		}
		if (mrc) {
			gate_leave(st);
			return store_err(mrc, "mdb_txn_begin");
		}
		rc = fn(&t, arg);
		if (rc != 0 || t.map_full) {
			mdb_txn_abort(t.txn);
			gate_leave(st);
			if (!t.map_full)
				return rc;
		} else {
			mrc = mdb_txn_commit(t.txn);
			gate_leave(st);
			if (mrc != MDB_MAP_FULL)
				return write_err(st, mrc, "mdb_txn_commit");
		}
		rc = grow_map(st, seen, 0);
		if (rc)
			return rc;
	}
}

static int open_dbi_fn(vr_txn *txn, void *arg)
{
	struct { const char *name; unsigned flags; MDB_dbi dbi; } *a = arg;
	return store_err(mdb_dbi_open(txn->txn, a->name, a->flags, &a->dbi), "mdb_dbi_open");
}

int vr_store_dbi(vr_store *st, const char *name, unsigned flags, vr_dbi *out)
{
	struct { const char *name; unsigned flags; MDB_dbi dbi; } a = {
		name, MDB_CREATE | ((flags & VR_DB_INTEGERKEY) ? MDB_INTEGERKEY : 0u), 0
	};
	int rc = vr_store_write(st, open_dbi_fn, &a);
	if (rc == 0)
		*out = a.dbi;
	return rc;
}

int vr_store_read_begin(vr_store *st, vr_txn **out)
{
	vr_txn *t = calloc(1, sizeof *t);
	int rc;
	*out = NULL;
	if (!t)
		return VR_ENOMEM;
	t->st = st;
	for (;;) {
		size_t seen;
		gate_enter(st, &seen);
		int mrc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t->txn);
		if (mrc == 0)
			break;
		gate_leave(st);
		if (mrc != MDB_MAP_RESIZED) {
			rc = store_err(mrc, "mdb_txn_begin(read)");
			goto fail;
		}
		rc = grow_map(st, seen, 1);
		if (rc)
			goto fail;
	}
	*out = t;
	return 0;
fail:
	free(t);
	return rc;
}

void vr_store_read_end(vr_txn *txn)
{
	if (!txn)
		return;
	mdb_txn_abort(txn->txn);
	gate_leave(txn->st);
	free(txn);
}

/* Put-side failures: a full map is remembered so vr_store_write retries
 * even if the callback swallowed the error. */
static int put_err(vr_txn *txn, int mrc, const char *what)
{
	if (mrc == MDB_MAP_FULL)
		txn->map_full = 1;
	return write_err(txn->st, mrc, what);
}

int vr_get(vr_txn *txn, vr_dbi db, const void *key, size_t klen,
	   const void **val, size_t *len)
{
	MDB_val k = { klen, (void *)key }, v;
	int rc = store_err(mdb_get(txn->txn, db, &k, &v), "mdb_get");
	if (rc)
		return rc;
	*val = v.mv_data;
	*len = v.mv_size;
	return 0;
}

int vr_put(vr_txn *txn, vr_dbi db, const void *key, size_t klen,
	   const void *val, size_t len)
{
	MDB_val k = { klen, (void *)key }, v = { len, (void *)val };
	return put_err(txn, mdb_put(txn->txn, db, &k, &v, 0), "mdb_put");
}

int vr_put_reserve(vr_txn *txn, vr_dbi db, const void *key, size_t klen,
		   size_t len, void **val)
{
	MDB_val k = { klen, (void *)key }, v = { len, NULL };
	int rc = put_err(txn, mdb_put(txn->txn, db, &k, &v, MDB_RESERVE), "mdb_put(reserve)");
	if (rc)
		return rc;
	*val = v.mv_data;
	return 0;
}

int vr_del(vr_txn *txn, vr_dbi db, const void *key, size_t klen)
{
	MDB_val k = { klen, (void *)key };
	return put_err(txn, mdb_del(txn->txn, db, &k, NULL), "mdb_del");
}

int vr_count(vr_txn *txn, vr_dbi db, uint64_t *out)
{
	MDB_stat ms;
	int rc = store_err(mdb_stat(txn->txn, db, &ms), "mdb_stat");
	if (rc == 0)
		*out = ms.ms_entries;
	return rc;
}

int vr_last_u64(vr_txn *txn, vr_dbi db, uint64_t *key)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = store_err(mdb_cursor_open(txn->txn, db, &cur), "mdb_cursor_open");
	if (rc)
		return rc;
	rc = store_err(mdb_cursor_get(cur, &k, &v, MDB_LAST), "mdb_cursor_get(last)");
	if (rc == 0 && k.mv_size != sizeof *key) {
		snprintf(last_error, sizeof last_error,
			 "vr_last_u64: key of %zu bytes in a db of uint64 keys", k.mv_size);
		rc = VR_ECORRUPT;
	}
	if (rc == 0)
		memcpy(key, k.mv_data, sizeof *key);
	mdb_cursor_close(cur);
	return rc;
}

int vr_cursor_open(vr_txn *txn, vr_dbi db, vr_cursor **out)
{
	vr_cursor *c = calloc(1, sizeof *c);
	*out = NULL;
	if (!c)
		return VR_ENOMEM;
	int rc = store_err(mdb_cursor_open(txn->txn, db, &c->cur), "mdb_cursor_open");
	if (rc) {
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

static int cursor_get(vr_cursor *c, MDB_val *k, MDB_cursor_op op,
		      const void **key, size_t *kl, const void **v, size_t *vl)
{
	MDB_val val;
	int rc = store_err(mdb_cursor_get(c->cur, k, &val, op), "mdb_cursor_get");
	if (rc)
		return rc;
	if (key)
		*key = k->mv_data;
	if (kl)
		*kl = k->mv_size;
	if (v)
		*v = val.mv_data;
	if (vl)
		*vl = val.mv_size;
	return 0;
}

int vr_cursor_seek(vr_cursor *c, const void *key, size_t klen,
		   const void **k, size_t *kl, const void **v, size_t *vl)
{
	MDB_val mk = { klen, (void *)key };
	return cursor_get(c, &mk, key ? MDB_SET_RANGE : MDB_FIRST, k, kl, v, vl);
}

int vr_cursor_next(vr_cursor *c, const void **k, size_t *kl,
		   const void **v, size_t *vl)
{
	MDB_val mk;
	return cursor_get(c, &mk, MDB_NEXT, k, kl, v, vl);
}

void vr_cursor_close(vr_cursor *c)
{
	if (!c)
		return;
	mdb_cursor_close(c->cur);
	free(c);
}
