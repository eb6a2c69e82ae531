/* tcache: the per-user top-k cache (tcache.h). */
#include "tcache.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

struct entry {
	struct entry *prev, *next; /* LRU list, most recent first */
	uint32_t user;
	uint64_t user_epoch, seq;
	uint32_t depth, n;
	int complete;              /* n holds every eligible item */
	struct rk_hit hit[];       /* depth places */
};

struct rk_tcache {
	pthread_mutex_t mu;
	uint64_t version;
	struct entry **slot;       /* by user index */
	uint32_t n_slots;
	struct entry *head, *tail;
	uint64_t seq;              /* changes noted */
	uint32_t log[RK_TCACHE_LOG]; /* change s (s < seq) at s % RK_TCACHE_LOG */
	size_t bytes, limit;
	rk_tcache_stats st;
};

static size_t entry_bytes(uint32_t depth)
{
	return sizeof(struct entry) + (size_t)depth * sizeof(struct rk_hit);
}

int rk_tcache_create(size_t limit_bytes, rk_tcache **out)
{
	*out = NULL;
	if (!limit_bytes)
		return VR_EINVAL;
	rk_tcache *c = calloc(1, sizeof *c);
	if (!c)
		return VR_ENOMEM;
	pthread_mutex_init(&c->mu, NULL);
	c->limit = limit_bytes;
	*out = c;
	return 0;
}

static void unlink_entry(rk_tcache *c, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void push_front(rk_tcache *c, struct entry *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

static void free_entry(rk_tcache *c, struct entry *e)
{
	unlink_entry(c, e);
	c->slot[e->user] = NULL;
	c->bytes -= entry_bytes(e->depth);
	c->st.entries--;
	free(e);
}

static void clear(rk_tcache *c)
{
	while (c->head)
		free_entry(c, c->head);
}

void rk_tcache_destroy(rk_tcache *c)
{
	if (!c)
		return;
	clear(c);
	free(c->slot);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

uint64_t rk_tcache_seq(rk_tcache *c)
{
	pthread_mutex_lock(&c->mu);
	uint64_t s = c->seq;
	pthread_mutex_unlock(&c->mu);
	return s;
}

/* Moves the cache to version v when v is newer; 1 when c serves v now.
 * Caller holds mu. */
static int at_version(rk_tcache *c, uint64_t v)
{
	if (v > c->version) {
		clear(c);
		c->version = v;
	}
	return v == c->version;
}

void rk_tcache_note(rk_tcache *c, uint64_t version, uint32_t item)
{
	pthread_mutex_lock(&c->mu);
	if (at_version(c, version))
		c->log[c->seq++ % RK_TCACHE_LOG] = item;
	pthread_mutex_unlock(&c->mu);
}

void rk_tcache_note_range(rk_tcache *c, uint64_t version, uint32_t from, uint32_t to)
{
	pthread_mutex_lock(&c->mu);
	/* More than the log holds: noting the last RK_TCACHE_LOG + 1 moves the
	 * sequence past every entry's reach, which is all the rest would do. */
	if (to > from && to - from > RK_TCACHE_LOG + 1)
		from = to - (RK_TCACHE_LOG + 1);
	if (at_version(c, version))
		for (uint32_t i = from; i < to; i++)
			c->log[c->seq++ % RK_TCACHE_LOG] = i;
	pthread_mutex_unlock(&c->mu);
}

void rk_tcache_reset(rk_tcache *c, uint64_t version)
{
	pthread_mutex_lock(&c->mu);
	at_version(c, version);
	pthread_mutex_unlock(&c->mu);
}

void rk_tcache_drop(rk_tcache *c, uint32_t user)
{
	pthread_mutex_lock(&c->mu);
	if (user < c->n_slots && c->slot[user])
		free_entry(c, c->slot[user]);
	pthread_mutex_unlock(&c->mu);
}

/* topk.h's order: higher score first, then lower id; NaN last. */
static int before(const struct rk_hit *a, const struct rk_hit *b)
{
	float x = isnan(a->score) ? -INFINITY : a->score, y = isnan(b->score) ? -INFINITY : b->score;
	return x > y || (x == y && a->item < b->item);
}

/* Item h.item changed: out of e's list, then back in by its new score
 * where the list's exactness allows (tcache.h). */
static void merge_one(struct entry *e, struct rk_hit h, int eligible)
{
	uint32_t at = 0;
	while (at < e->n && e->hit[at].item != h.item)
		at++;
	if (at < e->n) {
		memmove(e->hit + at, e->hit + at + 1, (size_t)(e->n - at - 1) * sizeof *e->hit);
		e->n--;
	}
	if (!eligible)
		return;
	uint32_t pos = e->n;
	while (pos > 0 && before(&h, &e->hit[pos - 1]))
		pos--;
	if (pos == e->n && !e->complete)
		return; /* below the last known place: unknown items may beat it */
	if (e->n == e->depth) {
		if (pos == e->n)
			return;
		e->n--; /* the last place falls out */
		e->complete = 0;
	}
	memmove(e->hit + pos + 1, e->hit + pos, (size_t)(e->n - pos) * sizeof *e->hit);
	e->hit[pos] = h;
	e->n++;
}

int rk_tcache_get(rk_tcache *c, uint64_t version, uint32_t user, uint64_t user_epoch,
		  uint64_t seq, const struct rk_index_view *view, const float *user_row,
		  const uint32_t *excl, size_t n_excl, struct rk_topk_ws *ws, int k,
		  struct rk_hit *out, size_t *n_out)
{
	int rc = 0;
	*n_out = 0;
	pthread_mutex_lock(&c->mu);
	struct entry *e = user < c->n_slots ? c->slot[user] : NULL;
	if (!e || version != c->version || seq < e->seq)
		goto miss; /* seq < e->seq: the entry knows rows the caller's view lacks */
	if (e->user_epoch != user_epoch || e->seq + RK_TCACHE_LOG < c->seq || seq > c->seq) {
		free_entry(c, e);
		goto miss;
	}
	for (uint64_t s = e->seq; s < seq; s++) {
		struct rk_hit h = { c->log[s % RK_TCACHE_LOG], 0 };
		int eligible = h.item < view->n && !rk_ids_has(excl, n_excl, h.item);
		if (eligible && (rc = rk_score(view, user_row, &h.item, 1, ws, &h.score))) {
			free_entry(c, e);
			goto leave;
		}
		merge_one(e, h, eligible);
		c->st.merged++;
	}
	if (seq > e->seq)
		e->seq = seq;
	if ((uint32_t)k > e->n && !e->complete)
		goto miss;
	*n_out = (uint32_t)k < e->n ? (size_t)k : e->n;
	memcpy(out, e->hit, *n_out * sizeof *out);
	unlink_entry(c, e);
	push_front(c, e);
	c->st.hits++;
	rc = 1;
	goto leave;
miss:
	c->st.misses++;
leave:
	pthread_mutex_unlock(&c->mu);
	return rc;
}

int rk_tcache_get_fresh(rk_tcache *c, uint64_t version, uint32_t user, uint64_t user_epoch,
			uint64_t seq, int k, struct rk_hit *out, size_t *n_out)
{
	int hit = 0;
	*n_out = 0;
	pthread_mutex_lock(&c->mu);
	struct entry *e = user < c->n_slots ? c->slot[user] : NULL;
	if (e && version == c->version && e->user_epoch == user_epoch && e->seq == seq &&
	    seq == c->seq && ((uint32_t)k <= e->n || e->complete)) {
		*n_out = (uint32_t)k < e->n ? (size_t)k : e->n;
		memcpy(out, e->hit, *n_out * sizeof *out);
		unlink_entry(c, e);
		push_front(c, e);
		c->st.hits++;
		hit = 1;
	}
	pthread_mutex_unlock(&c->mu);
	return hit;
}

int rk_tcache_put(rk_tcache *c, uint64_t version, uint32_t user, uint64_t user_epoch,
		  uint64_t seq, int depth, const struct rk_hit *hits, size_t n)
{
	int rc = 0;
	size_t need = entry_bytes((uint32_t)depth);
	if (depth <= 0 || n > (size_t)depth)
		return VR_EINVAL;
	pthread_mutex_lock(&c->mu);
	if (!at_version(c, version) || seq + RK_TCACHE_LOG < c->seq || seq > c->seq)
		goto leave;
	if (user >= c->n_slots) {
		uint32_t grow = user + 1 > c->n_slots * 2 ? user + 1 : c->n_slots * 2;
		size_t add = (size_t)(grow - c->n_slots) * sizeof *c->slot;
		struct entry **p = realloc(c->slot, (size_t)grow * sizeof *p);
		if (!p) {
			rc = VR_ENOMEM;
			goto leave;
		}
		memset(p + c->n_slots, 0, add);
		c->slot = p;
		c->n_slots = grow;
		c->bytes += add;
	}
	if (c->slot[user])
		free_entry(c, c->slot[user]);
	if (need + c->bytes > c->limit && need > c->limit / 2)
		goto leave; /* would empty most of the cache for one user */
	while (c->tail && c->bytes + need > c->limit) {
		free_entry(c, c->tail);
		c->st.evictions++;
	}
	if (c->bytes + need > c->limit)
		goto leave; /* the slot table alone fills the limit */
	struct entry *e = malloc(need);
	if (!e) {
		rc = VR_ENOMEM;
		goto leave;
	}
	e->user = user;
	e->user_epoch = user_epoch;
	e->seq = seq;
	e->depth = (uint32_t)depth;
	e->n = (uint32_t)n;
	e->complete = n < (size_t)depth;
	memcpy(e->hit, hits, n * sizeof *hits);
	push_front(c, e);
	c->slot[user] = e;
	c->bytes += need;
	c->st.entries++;
leave:
	pthread_mutex_unlock(&c->mu);
	return rc;
}

size_t rk_tcache_recent(rk_tcache *c, uint32_t *out, size_t cap)
{
	size_t n = 0;
	pthread_mutex_lock(&c->mu);
	for (struct entry *e = c->head; e && n < cap; e = e->next)
		out[n++] = e->user;
	pthread_mutex_unlock(&c->mu);
	return n;
}

void rk_tcache_stats_get(rk_tcache *c, rk_tcache_stats *out)
{
	pthread_mutex_lock(&c->mu);
	*out = c->st;
	out->bytes = c->bytes;
	out->limit = c->limit;
	pthread_mutex_unlock(&c->mu);
}
