/* interactions: id maps, deduplicated (user, item, time) pairs, CSR
 * snapshots, the last-item split and LMDB persistence (the CSV form is
 * common/icsv.h's).
 *
 * Both id maps are common/intern.h tables; the pair set is an
 * open-addressing table keyed by (u << 32 | i). Lookups never allocate. A batch
 * is written to LMDB first (one transaction, repeatable as vr_store_write
 * requires: it only puts) and applied to memory afterwards, with every
 * array reserved beforehand so that applying cannot fail: memory mirrors
 * what is committed. */
#include "interactions.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "grow.h"
#include "intern.h"

#define EMPTY64 UINT64_MAX

/* A user or item map: the ids (common/intern.h) and how many of them are
 * in LMDB. */
struct idmap {
	vr_intern ids;
	uint32_t persisted;  /* ids [0, persisted) are in LMDB */
	vr_dbi db;
};

struct rk_interactions {
	vr_store *st;
	struct idmap users, items;
	uint32_t *pu, *pi;   /* pairs in insertion order */
	int64_t *pts;
	uint64_t n, cap;
	uint64_t *keys;      /* pair table: u << 32 | i, or EMPTY64 */
	uint32_t *slots;     /* pair table: index into pu/pi/pts */
	uint64_t mask;
	vr_dbi db_pairs;
	uint32_t *ru, *ri;   /* batch scratch: resolved indices */
	size_t scratch_cap;
	/* The log (interactions.h): its db, last sequence, and whether the
	 * store held ids before the log began (a replica cannot start then). */
	vr_dbi db_log;
	uint64_t log_seq;
	int log_partial;
};

static uint64_t hash_pair(uint64_t key)
{
	key ^= key >> 31;
	key *= 0x9e3779b97f4a7c15ull;
	return key ^ (key >> 29);
}

/* Grows n parallel arrays (*arrays[k] of elem[k]-byte elements) that share
 * one capacity *cap to hold need each; *cap changes only when all grew. */
static int grow_parallel(void **const arrays[], const size_t elem[], int n, uint64_t need,
			 uint64_t *cap)
{
	uint64_t c = *cap;
	for (int k = 0; k < n; k++) {
		c = *cap;
		int rc = vr_grow(arrays[k], elem[k], need, &c);
		if (rc)
			return rc;
	}
	*cap = c;
	return 0;
}

/* ---- id maps ---- */

/* Makes room for extra more ids of up to chars bytes in all, so that
 * vr_intern_add cannot fail. */
static int idmap_reserve(struct idmap *m, uint64_t extra, uint64_t chars)
{
	if ((uint64_t)m->ids.n + extra > RK_INDEX_MAX)
		return VR_ETOOBIG;
	return vr_intern_reserve(&m->ids, extra, chars);
}

/* ---- pairs ---- */

static uint64_t pair_find(const rk_interactions *ix, uint64_t key)
{
	if (!ix->keys)
		return EMPTY64;
	for (uint64_t s = hash_pair(key) & ix->mask;; s = (s + 1) & ix->mask) {
		if (ix->keys[s] == key)
			return ix->slots[s];
		if (ix->keys[s] == EMPTY64)
			return EMPTY64;
	}
}

static int pairs_reserve(rk_interactions *ix, uint64_t extra)
{
	uint64_t need = ix->n + extra;
	if (need > RK_PAIRS_MAX)
		return VR_ETOOBIG;
	void **const pairs[] = { (void **)&ix->pu, (void **)&ix->pi, (void **)&ix->pts };
	const size_t sizes[] = { sizeof(*ix->pu), sizeof(*ix->pi), sizeof(*ix->pts) };
	uint64_t cap = ix->cap;
	int rc = grow_parallel(pairs, sizes, 3, need, &cap);
	if (rc)
		return rc;
	ix->cap = cap;
	uint64_t slots = ix->keys ? ix->mask + 1 : 0;
	if (need * 2 <= slots)
		return 0;
	uint64_t ns = 1024;
	while (ns < need * 2)
		ns *= 2;
	uint64_t *keys = malloc(ns * sizeof(*keys));
	uint32_t *sl = malloc(ns * sizeof(*sl));
	if (!keys || !sl) {
		free(keys);
		free(sl);
		return VR_ENOMEM;
	}
	memset(keys, 0xff, ns * sizeof(*keys));
	for (uint64_t k = 0; k < ix->n; k++) {
		uint64_t key = (uint64_t)ix->pu[k] << 32 | ix->pi[k];
		uint64_t s = hash_pair(key) & (ns - 1);
		while (keys[s] != EMPTY64)
			s = (s + 1) & (ns - 1);
		keys[s] = key;
		sl[s] = (uint32_t)k;
	}
	free(ix->keys);
	free(ix->slots);
	ix->keys = keys;
	ix->slots = sl;
	ix->mask = ns - 1;
	return 0;
}

/* Adds or updates a pair; room was reserved. Returns 1 if new. */
static int pair_put(rk_interactions *ix, uint32_t u, uint32_t i, int64_t ts)
{
	uint64_t key = (uint64_t)u << 32 | i;
	uint64_t s = hash_pair(key) & ix->mask;
	for (; ix->keys[s] != EMPTY64; s = (s + 1) & ix->mask) {
		if (ix->keys[s] == key) {
			uint32_t k = ix->slots[s];
			if (ts > ix->pts[k])
				ix->pts[k] = ts;
			return 0;
		}
	}
	ix->keys[s] = key;
	ix->slots[s] = (uint32_t)ix->n;
	ix->pu[ix->n] = u;
	ix->pi[ix->n] = i;
	ix->pts[ix->n] = ts;
	ix->n++;
	return 1;
}

static void pair_key(uint8_t key[8], uint32_t u, uint32_t i)
{
	for (int b = 0; b < 4; b++) {
		key[b] = (uint8_t)(u >> (24 - 8 * b));
		key[4 + b] = (uint8_t)(i >> (24 - 8 * b));
	}
}

/* ---- persistence ---- */

struct write_ctx {
	rk_interactions *ix;
	const rk_interaction_in *rows;
	size_t n;
	uint32_t items_before; /* ids [persisted, items_before) came from intern */
	uint64_t seq_after;    /* out: the log's last sequence once written */
};

#define LOG_MAGIC 0x314c4b52u /* "RKL1" */
#define LOG_HEADER 24         /* magic, type, commit ms, count */

static int64_t now_unix_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static uint8_t *log_header(uint8_t *p, uint32_t type, uint32_t n)
{
	uint32_t magic = LOG_MAGIC;
	int64_t ms = now_unix_ms();
	memcpy(p, &magic, 4);
	memcpy(p + 4, &type, 4);
	memcpy(p + 8, &ms, 8);
	memcpy(p + 16, &n, 4);
	memset(p + 20, 0, 4);
	return p + LOG_HEADER;
}

/* An ITEMS record's limits: what a replica decodes (RK_LOG_MAX_ROWS) and,
 * in bytes, well under a feed message (4 MiB by default). */
#define LOG_ITEMS_MAX_BYTES (1u << 20)

/* Appends the log records of the item ids [from, to) (RK_LOG_ITEMS) from
 * *seq + 1 on, as many as the limits above need: a flush of 300,000
 * interned items once wrote one record that no replica would decode. */
static int log_items(vr_txn *txn, rk_interactions *ix, uint32_t from, uint32_t to, uint64_t *seq)
{
	while (from < to) {
		size_t bytes = LOG_HEADER;
		uint32_t end = from;
		for (; end < to && end - from < RK_LOG_MAX_ROWS; end++) {
			size_t len;
			vr_intern_id(&ix->items.ids, end, &len);
			if (end > from && bytes + 2 + len > LOG_ITEMS_MAX_BYTES)
				break;
			bytes += 2 + len;
		}
		void *dst;
		uint64_t key = *seq + 1;
		int rc = vr_put_reserve(txn, ix->db_log, &key, sizeof key, bytes, &dst);
		if (rc)
			return rc;
		uint8_t *p = log_header(dst, RK_LOG_ITEMS, end - from);
		for (uint32_t k = from; k < end; k++) {
			size_t len;
			const char *id = vr_intern_id(&ix->items.ids, k, &len);
			uint16_t l = (uint16_t)len;
			memcpy(p, &l, 2);
			memcpy(p + 2, id, len);
			p += 2 + len;
		}
		*seq = key;
		from = end;
	}
	return 0;
}

static int log_rows(vr_txn *txn, rk_interactions *ix, const rk_interaction_in *rows, size_t n,
		    uint64_t *seq)
{
	size_t bytes = LOG_HEADER;
	for (size_t r = 0; r < n; r++)
		bytes += 12 + rows[r].user_len + rows[r].item_len;
	void *dst;
	uint64_t key = *seq + 1;
	int rc = vr_put_reserve(txn, ix->db_log, &key, sizeof key, bytes, &dst);
	if (rc)
		return rc;
	uint8_t *p = log_header(dst, RK_LOG_ROWS, (uint32_t)n);
	for (size_t r = 0; r < n; r++) {
		uint16_t ul = (uint16_t)rows[r].user_len, il = (uint16_t)rows[r].item_len;
		memcpy(p, &ul, 2);
		memcpy(p + 2, &il, 2);
		memcpy(p + 4, &rows[r].ts, 8);
		memcpy(p + 12, rows[r].user, ul);
		memcpy(p + 12 + ul, rows[r].item, il);
		p += 12 + ul + il;
	}
	*seq = key;
	return 0;
}

static int put_pending(vr_txn *txn, const struct idmap *m)
{
	for (uint32_t k = m->persisted; k < m->ids.n; k++) {
		size_t len;
		const char *id = vr_intern_id(&m->ids, k, &len);
		int rc = vr_put(txn, m->db, id, len, &k, sizeof(k));
		if (rc)
			return rc;
	}
	return 0;
}

static int write_batch(vr_txn *txn, void *arg)
{
	struct write_ctx *w = arg;
	rk_interactions *ix = w->ix;
	uint64_t seq = ix->log_seq;
	int rc = put_pending(txn, &ix->users);
	if (!rc)
		rc = put_pending(txn, &ix->items);
	if (!rc && w->items_before > ix->items.persisted)
		rc = log_items(txn, ix, ix->items.persisted, w->items_before, &seq);
	if (!rc && w->n)
		rc = log_rows(txn, ix, w->rows, w->n, &seq);
	w->seq_after = seq;
	for (size_t r = 0; !rc && r < w->n; r++) {
		uint8_t key[8];
		pair_key(key, ix->ru[r], ix->ri[r]);
		int64_t ts = w->rows[r].ts;
		const void *v;
		size_t vl;
		int g = vr_get(txn, ix->db_pairs, key, sizeof(key), &v, &vl);
		if (g == 0 && vl == sizeof(int64_t)) {
			int64_t old;
			memcpy(&old, v, sizeof(old));
			if (old >= ts)
				continue;
		} else if (g != 0 && g != VR_ENOTFOUND) {
			rc = g;
			break;
		}
		rc = vr_put(txn, ix->db_pairs, key, sizeof(key), &ts, sizeof(ts));
	}
	return rc;
}

static void mark_persisted(rk_interactions *ix)
{
	ix->users.persisted = ix->users.ids.n;
	ix->items.persisted = ix->items.ids.n;
}

int rk_interactions_flush(rk_interactions *ix)
{
	if (!ix->st || (ix->users.persisted == ix->users.ids.n && ix->items.persisted == ix->items.ids.n))
		return 0;
	struct write_ctx w = {ix, NULL, 0, ix->items.ids.n, 0};
	int rc = vr_store_write(ix->st, write_batch, &w);
	if (!rc) {
		mark_persisted(ix);
		ix->log_seq = w.seq_after;
	}
	return rc;
}

/* Loads one id map: every index 0..count-1 exactly once. */
static int load_ids(vr_txn *txn, struct idmap *m)
{
	uint64_t count;
	vr_cursor *c = NULL;
	struct { const char *p; size_t len; } *byidx = NULL;
	int rc = vr_count(txn, m->db, &count);
	if (rc)
		goto leave;
	if (count > RK_INDEX_MAX) {
		rc = VR_ECORRUPT;
		goto leave;
	}
	byidx = calloc(count ? count : 1, sizeof(*byidx));
	if (!byidx) {
		rc = VR_ENOMEM;
		goto leave;
	}
	uint64_t chars = 0;
	rc = vr_cursor_open(txn, m->db, &c);
	if (rc)
		goto leave;
	const void *k, *v;
	size_t kl, vl;
	for (rc = vr_cursor_seek(c, NULL, 0, &k, &kl, &v, &vl); rc == 0;
	     rc = vr_cursor_next(c, &k, &kl, &v, &vl)) {
		uint32_t idx;
		if (vl != sizeof(idx) || kl == 0 || kl > RK_ID_MAX) {
			rc = VR_ECORRUPT;
			goto leave;
		}
		memcpy(&idx, v, sizeof(idx));
		if (idx >= count || byidx[idx].p) {
			rc = VR_ECORRUPT;
			goto leave;
		}
		byidx[idx].p = k;
		byidx[idx].len = kl;
		chars += kl + 1;
	}
	if (rc != VR_ENOTFOUND)
		goto leave;
	rc = idmap_reserve(m, count, chars);
	for (uint64_t x = 0, n0 = m->ids.n; !rc && x < count; x++)
		if (vr_intern_add(&m->ids, byidx[x].p, byidx[x].len) != n0 + x)
			rc = VR_ECORRUPT; /* an id stored twice */
	m->persisted = m->ids.n;
leave:
	vr_cursor_close(c);
	free(byidx);
	return rc;
}

static int load_pairs(vr_txn *txn, rk_interactions *ix)
{
	uint64_t count;
	vr_cursor *c = NULL;
	int rc = vr_count(txn, ix->db_pairs, &count);
	if (!rc)
		rc = pairs_reserve(ix, count);
	if (!rc)
		rc = vr_cursor_open(txn, ix->db_pairs, &c);
	if (rc)
		goto leave;
	const void *k, *v;
	size_t kl, vl;
	for (rc = vr_cursor_seek(c, NULL, 0, &k, &kl, &v, &vl); rc == 0;
	     rc = vr_cursor_next(c, &k, &kl, &v, &vl)) {
		const uint8_t *b = k;
		if (kl != 8 || vl != sizeof(int64_t)) {
			rc = VR_ECORRUPT;
			goto leave;
		}
		uint32_t u = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
		uint32_t i = (uint32_t)b[4] << 24 | (uint32_t)b[5] << 16 | (uint32_t)b[6] << 8 | b[7];
		int64_t ts;
		memcpy(&ts, v, sizeof(ts));
		if (u >= ix->users.ids.n || i >= ix->items.ids.n || ix->n >= count) {
			rc = VR_ECORRUPT;
			goto leave;
		}
		pair_put(ix, u, i, ts);
	}
	if (rc == VR_ENOTFOUND)
		rc = 0;
leave:
	vr_cursor_close(c);
	return rc;
}

int rk_interactions_open(rk_interactions **out, vr_store *st)
{
	vr_txn *txn = NULL;
	int rc = 0;
	rk_interactions *ix = calloc(1, sizeof(*ix));
	if (!ix)
		return VR_ENOMEM;
	ix->st = st;
	if (!st)
		goto leave;
	rc = vr_store_dbi(st, "users", 0, &ix->users.db);
	if (!rc)
		rc = vr_store_dbi(st, "items", 0, &ix->items.db);
	if (!rc)
		rc = vr_store_dbi(st, "interactions", 0, &ix->db_pairs);
	if (!rc)
		rc = vr_store_dbi(st, "interaction_log", VR_DB_INTEGERKEY, &ix->db_log);
	if (!rc)
		rc = vr_store_read_begin(st, &txn);
	if (!rc)
		rc = load_ids(txn, &ix->users);
	if (!rc)
		rc = load_ids(txn, &ix->items);
	if (!rc)
		rc = load_pairs(txn, ix);
	if (!rc) {
		rc = vr_last_u64(txn, ix->db_log, &ix->log_seq);
		if (rc == VR_ENOTFOUND) {
			ix->log_seq = 0;
			ix->log_partial = ix->users.ids.n || ix->items.ids.n;
			rc = 0;
		}
	}
	vr_store_read_end(txn);
leave:
	if (rc) {
		rk_interactions_close(ix);
		ix = NULL;
	}
	*out = ix;
	return rc;
}

void rk_interactions_close(rk_interactions *ix)
{
	if (!ix)
		return;
	vr_intern_free(&ix->users.ids);
	vr_intern_free(&ix->items.ids);
	free(ix->pu);
	free(ix->pi);
	free(ix->pts);
	free(ix->keys);
	free(ix->slots);
	free(ix->ru);
	free(ix->ri);
	free(ix);
}

/* ---- queries ---- */

uint32_t rk_interactions_users(const rk_interactions *ix) { return ix->users.ids.n; }
uint32_t rk_interactions_items(const rk_interactions *ix) { return ix->items.ids.n; }
uint64_t rk_interactions_count(const rk_interactions *ix) { return ix->n; }

static int find(const struct idmap *m, const char *id, size_t len, uint32_t *out)
{
	uint32_t k = vr_intern_find(&m->ids, id, len);
	if (k == VR_INTERN_NONE)
		return VR_ENOTFOUND;
	*out = k;
	return 0;
}

int rk_users_find(const rk_interactions *ix, const char *id, size_t len, uint32_t *out)
{
	return find(&ix->users, id, len, out);
}

int rk_items_find(const rk_interactions *ix, const char *id, size_t len, uint32_t *out)
{
	return find(&ix->items, id, len, out);
}

const char *rk_user_id(const rk_interactions *ix, uint32_t u, size_t *len)
{
	return vr_intern_id(&ix->users.ids, u, len);
}

const char *rk_item_id(const rk_interactions *ix, uint32_t i, size_t *len)
{
	return vr_intern_id(&ix->items.ids, i, len);
}

int rk_items_intern(rk_interactions *ix, const char *id, size_t len, uint32_t *out)
{
	if (vr_id_check(id, len, NULL, 0))
		return VR_EINVAL;
	int rc = idmap_reserve(&ix->items, 1, len + 1);
	if (rc)
		return rc;
	*out = vr_intern_add(&ix->items.ids, id, len);
	return 0;
}

int rk_interactions_has(const rk_interactions *ix, uint32_t u, uint32_t i, int64_t *ts)
{
	uint64_t k = pair_find(ix, (uint64_t)u << 32 | i);
	if (k == EMPTY64)
		return 0;
	if (ts)
		*ts = ix->pts[k];
	return 1;
}

/* ---- adding ---- */

int rk_interactions_add_batch(rk_interactions *ix, const rk_interaction_in *rows, size_t n,
			      rk_add_stats *stats)
{
	rk_add_stats local;
	if (!stats)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	uint64_t uchars = 0, ichars = 0;
	for (size_t r = 0; r < n; r++) {
		if (vr_id_check(rows[r].user, rows[r].user_len, NULL, 0) ||
		    vr_id_check(rows[r].item, rows[r].item_len, NULL, 0)) {
			stats->bad_row = r;
			return VR_EINVAL;
		}
		uchars += rows[r].user_len + 1;
		ichars += rows[r].item_len + 1;
	}
	void **const rows_idx[] = { (void **)&ix->ru, (void **)&ix->ri };
	const size_t sizes[] = { sizeof(*ix->ru), sizeof(*ix->ri) };
	uint64_t cap = ix->scratch_cap;
	int rc = grow_parallel(rows_idx, sizes, 2, n, &cap);
	if (rc)
		return rc;
	ix->scratch_cap = (size_t)cap;
	rc = idmap_reserve(&ix->users, n, uchars);
	if (!rc)
		rc = idmap_reserve(&ix->items, n, ichars);
	if (!rc)
		rc = pairs_reserve(ix, n);
	if (rc)
		return rc;
	uint32_t items_before = ix->items.ids.n;
	for (size_t r = 0; r < n; r++) {
		ix->ru[r] = vr_intern_add(&ix->users.ids, rows[r].user, rows[r].user_len);
		ix->ri[r] = vr_intern_add(&ix->items.ids, rows[r].item, rows[r].item_len);
	}
	if (ix->st) {
		struct write_ctx w = {ix, rows, n, items_before, 0};
		rc = vr_store_write(ix->st, write_batch, &w);
		if (rc)
			return rc;
		mark_persisted(ix);
		ix->log_seq = w.seq_after;
	}
	for (size_t r = 0; r < n; r++) {
		if (pair_put(ix, ix->ru[r], ix->ri[r], rows[r].ts))
			stats->added++;
		else
			stats->updated++;
	}
	return 0;
}

/* ---- the log ---- */

uint64_t rk_interactions_log_seq(const rk_interactions *ix) { return ix->log_seq; }
int rk_interactions_log_partial(const rk_interactions *ix) { return ix->log_partial; }

int rk_interactions_log_read(rk_interactions *ix, uint64_t after, size_t max_bytes,
			     rk_log_fn fn, void *ctx)
{
	vr_txn *txn;
	vr_cursor *cur = NULL;
	const void *k, *v;
	size_t kl, vl, sent = 0;
	uint64_t from = after + 1;
	if (!ix->st)
		return 0;
	int rc = vr_store_read_begin(ix->st, &txn);
	if (rc)
		return rc;
	if ((rc = vr_cursor_open(txn, ix->db_log, &cur)))
		goto leave;
	rc = vr_cursor_seek(cur, &from, sizeof from, &k, &kl, &v, &vl);
	while (!rc && sent < max_bytes) {
		uint64_t seq;
		if (kl != sizeof seq) {
			rc = VR_ECORRUPT;
			break;
		}
		memcpy(&seq, k, sizeof seq);
		if ((rc = fn(ctx, seq, v, vl)))
			break;
		sent += vl;
		rc = vr_cursor_next(cur, &k, &kl, &v, &vl);
	}
	if (rc == VR_ENOTFOUND)
		rc = 0;
leave:
	vr_cursor_close(cur);
	vr_store_read_end(txn);
	return rc;
}

int rk_log_decode(const void *rec, size_t len, rk_log_record *out)
{
	const uint8_t *p = rec, *end = p + len;
	uint32_t magic, type, n;
	memset(out, 0, sizeof *out);
	if (len < LOG_HEADER)
		return VR_ECORRUPT;
	memcpy(&magic, p, 4);
	memcpy(&type, p + 4, 4);
	memcpy(&out->commit_unix_ms, p + 8, 8);
	memcpy(&n, p + 16, 4);
	if (magic != LOG_MAGIC || (type != RK_LOG_ROWS && type != RK_LOG_ITEMS) ||
	    n > RK_LOG_MAX_ROWS)
		return VR_ECORRUPT;
	p += LOG_HEADER;
	out->type = type;
	out->n = n;
	if (!(out->rows = calloc(n ? n : 1, sizeof *out->rows)))
		return VR_ENOMEM;
	for (uint32_t r = 0; r < n; r++) {
		rk_interaction_in *row = &out->rows[r];
		uint16_t ul = 0, il;
		if (type == RK_LOG_ROWS) {
			if (end - p < 12)
				goto bad;
			memcpy(&ul, p, 2);
			memcpy(&il, p + 2, 2);
			memcpy(&row->ts, p + 4, 8);
			p += 12;
		} else {
			if (end - p < 2)
				goto bad;
			memcpy(&il, p, 2);
			p += 2;
		}
		if ((size_t)(end - p) < (size_t)ul + il)
			goto bad;
		row->user = (const char *)p;
		row->user_len = ul;
		row->item = (const char *)p + ul;
		row->item_len = il;
		p += ul + il;
		if ((type == RK_LOG_ROWS && vr_id_check(row->user, ul, NULL, 0)) ||
		    vr_id_check(row->item, il, NULL, 0))
			goto bad;
	}
	if (p != end)
		goto bad;
	return 0;
bad:
	free(out->rows);
	out->rows = NULL;
	return VR_ECORRUPT;
}

int rk_interactions_log_apply(rk_interactions *ix, uint64_t seq, const rk_log_record *r,
			      rk_add_stats *stats)
{
	if (seq != ix->log_seq + 1)
		return VR_ESTATE;
	if (r->type == RK_LOG_ROWS) {
		int rc = rk_interactions_add_batch(ix, r->rows, r->n, stats);
		return rc ? rc : ix->log_seq == seq ? 0 : VR_ESTATE;
	}
	for (uint32_t k = 0; k < r->n; k++) {
		uint32_t i;
		if (!rk_items_find(ix, r->rows[k].item, r->rows[k].item_len, &i))
			return VR_ESTATE; /* the writer's index of it differs */
		int rc = rk_items_intern(ix, r->rows[k].item, r->rows[k].item_len, &i);
		if (rc)
			return rc;
	}
	int rc = rk_interactions_flush(ix);
	return rc ? rc : ix->log_seq == seq ? 0 : VR_ESTATE;
}

/* ---- CSR ---- */

struct item_ts {
	uint32_t item;
	int64_t ts;
};

static int cmp_item(const void *a, const void *b)
{
	uint32_t x = ((const struct item_ts *)a)->item, y = ((const struct item_ts *)b)->item;
	return (x > y) - (x < y);
}

static int csr_alloc(rk_csr *c, uint32_t n_users, uint32_t n_items, uint64_t nnz)
{
	memset(c, 0, sizeof(*c));
	c->n_users = n_users;
	c->n_items = n_items;
	c->nnz = nnz;
	c->off = calloc((size_t)n_users + 1, sizeof(*c->off));
	c->item = malloc((nnz ? nnz : 1) * sizeof(*c->item));
	c->ts = malloc((nnz ? nnz : 1) * sizeof(*c->ts));
	if (!c->off || !c->item || !c->ts) {
		rk_csr_free(c);
		return VR_ENOMEM;
	}
	return 0;
}

int rk_interactions_csr(const rk_interactions *ix, rk_csr *out)
{
	struct item_ts *tmp = NULL;
	uint64_t *fill = NULL;
	int rc = csr_alloc(out, ix->users.ids.n, ix->items.ids.n, ix->n);
	if (rc)
		return rc;
	tmp = malloc((ix->n ? ix->n : 1) * sizeof(*tmp));
	fill = malloc(((size_t)ix->users.ids.n + 1) * sizeof(*fill));
	if (!tmp || !fill) {
		rc = VR_ENOMEM;
		rk_csr_free(out);
		goto leave;
	}
	for (uint64_t k = 0; k < ix->n; k++)
		out->off[ix->pu[k] + 1]++;
	for (uint32_t u = 0; u < ix->users.ids.n; u++)
		out->off[u + 1] += out->off[u];
	memcpy(fill, out->off, ((size_t)ix->users.ids.n + 1) * sizeof(*fill));
	for (uint64_t k = 0; k < ix->n; k++)
		tmp[fill[ix->pu[k]]++] = (struct item_ts){ix->pi[k], ix->pts[k]};
	for (uint32_t u = 0; u < ix->users.ids.n; u++)
		qsort(tmp + out->off[u], (size_t)(out->off[u + 1] - out->off[u]), sizeof(*tmp), cmp_item);
	for (uint64_t k = 0; k < ix->n; k++) {
		out->item[k] = tmp[k].item;
		out->ts[k] = tmp[k].ts;
	}
leave:
	free(tmp);
	free(fill);
	return rc;
}

int rk_split_last(const rk_csr *all, rk_csr *train, uint32_t *test_item)
{
	uint64_t held = 0;
	for (uint32_t u = 0; u < all->n_users; u++)
		held += all->off[u + 1] - all->off[u] >= 2;
	int rc = csr_alloc(train, all->n_users, all->n_items, all->nnz - held);
	if (rc)
		return rc;
	uint64_t o = 0;
	for (uint32_t u = 0; u < all->n_users; u++) {
		uint64_t a = all->off[u], b = all->off[u + 1], last = b;
		test_item[u] = RK_NONE;
		if (b - a >= 2) {
			last = a;
			for (uint64_t k = a + 1; k < b; k++)
				if (all->ts[k] >= all->ts[last])
					last = k;
			test_item[u] = all->item[last];
		}
		train->off[u] = o;
		for (uint64_t k = a; k < b; k++) {
			if (k == last)
				continue;
			train->item[o] = all->item[k];
			train->ts[o] = all->ts[k];
			o++;
		}
	}
	train->off[all->n_users] = o;
	return 0;
}

void rk_csr_item_counts(const rk_csr *c, uint32_t *counts)
{
	memset(counts, 0, (size_t)c->n_items * sizeof(*counts));
	for (uint64_t k = 0; k < c->nnz; k++)
		counts[c->item[k]]++;
}

void rk_csr_free(rk_csr *c)
{
	free(c->off);
	free(c->item);
	free(c->ts);
	memset(c, 0, sizeof(*c));
}
