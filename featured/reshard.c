/* reshard: the journal, the ingest check and the three Reshard* handlers
 * (the model in reshard.h).
 *
 * Why one file at ~850 lines: these are one protocol whose invariants
 * (what the journal says is in flight, what a delete may remove, what
 * ingest must refuse) hold only together; split, each half would have to
 * restate the other's. */
#include "reshard.h"

#include "err.h"
#include "fault.h"
#include "ids.h"
#include "log.h"
#include "service.h"
#include "visrec/v1/featured.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A claim looks at no more items than this, so that it answers within a
 * short deadline on a shard of millions; the claimer asks again. */
#define CLAIM_SCAN 8192
#define CLAIM_DEFAULT 64
/* Room left in a message for everything but the items' bytes. */
#define MESSAGE_SLACK (64u << 10)

struct fd_reshard {
	pthread_mutex_t mu;   /* serialises claims and deletes; guards to/source */
	vr_shardmap *to;      /* the journal's TO while one exists, else NULL */
	char source[VR_SHARD_ADDR_MAX + 1];
	/* Bumped after every journal write: Info's kept reply (fd_info_key)
	 * shows the journal's progress, which no item counter tracks. */
	_Atomic uint64_t gen;
};

/* ---- the journal record ------------------------------------------------- */

static const char MAGIC[4] = { 'V', 'R', 'J', '1' };

struct jhead {
	char magic[4];
	uint32_t flags;
	uint64_t moved;
	uint32_t to_len, source_len, cursor_len, n;
};

static int take_str(const uint8_t **p, const uint8_t *end, size_t len, size_t max, char **out)
{
	if (len > max || (size_t)(end - *p) < len || memchr(*p, 0, len))
		return VR_ECORRUPT;
	if (!(*out = malloc(len + 1)))
		return VR_ENOMEM;
	memcpy(*out, *p, len);
	(*out)[len] = 0;
	*p += len;
	return 0;
}

int fd_journal_decode(const void *v, size_t vl, fd_journal *out)
{
	struct jhead h;
	const uint8_t *p = v, *end = p + vl;
	int rc;
	memset(out, 0, sizeof *out);
	if (vl < sizeof h)
		return VR_ECORRUPT;
	memcpy(&h, p, sizeof h);
	p += sizeof h;
	if (memcmp(h.magic, MAGIC, 4) || h.flags & ~(uint32_t)(FD_JOURNAL_DONE | FD_JOURNAL_SWEEP) ||
	    h.n > FD_RESHARD_MAX_ITEMS || (h.n && h.flags & FD_JOURNAL_DONE))
		return VR_ECORRUPT;
	out->flags = h.flags;
	out->moved = h.moved;
	if ((rc = take_str(&p, end, h.to_len, VR_SHARD_LIST_MAX, &out->to)) ||
	    (rc = take_str(&p, end, h.source_len, VR_SHARD_ADDR_MAX, &out->source)) ||
	    (rc = take_str(&p, end, h.cursor_len, FD_MAX_ID, &out->cursor)))
		goto fail;
	rc = VR_ENOMEM;
	if (h.n && (!(out->ids = calloc(h.n, sizeof *out->ids)) ||
		    !(out->sums = calloc(h.n, sizeof *out->sums))))
		goto fail;
	for (; out->n < h.n; out->n++) {
		uint32_t id_len;
		rc = VR_ECORRUPT;
		if ((size_t)(end - p) < 12)
			goto fail;
		memcpy(&out->sums[out->n], p, 8);
		memcpy(&id_len, p + 8, 4);
		p += 12;
		if (!id_len || (rc = take_str(&p, end, id_len, FD_MAX_ID, &out->ids[out->n])))
			goto fail;
	}
	if (p == end)
		return 0;
	rc = VR_ECORRUPT;
fail:
	fd_journal_clear(out);
	return rc;
}

int fd_journal_encode(const fd_journal *j, void **out, size_t *len)
{
	struct jhead h = { { 0 }, j->flags, j->moved, (uint32_t)strlen(j->to),
			   (uint32_t)strlen(j->source), (uint32_t)strlen(j->cursor), (uint32_t)j->n };
	size_t total = sizeof h + h.to_len + h.source_len + h.cursor_len;
	memcpy(h.magic, MAGIC, 4);
	for (size_t i = 0; i < j->n; i++)
		total += 12 + strlen(j->ids[i]);
	uint8_t *p = malloc(total);
	if (!(*out = p))
		return VR_ENOMEM;
	memcpy(p, &h, sizeof h);
	p += sizeof h;
	memcpy(p, j->to, h.to_len);
	p += h.to_len;
	memcpy(p, j->source, h.source_len);
	p += h.source_len;
	memcpy(p, j->cursor, h.cursor_len);
	p += h.cursor_len;
	for (size_t i = 0; i < j->n; i++) {
		uint32_t id_len = (uint32_t)strlen(j->ids[i]);
		memcpy(p, &j->sums[i], 8);
		memcpy(p + 8, &id_len, 4);
		memcpy(p + 12, j->ids[i], id_len);
		p += 12 + id_len;
	}
	*len = total;
	return 0;
}

void fd_journal_clear(fd_journal *j)
{
	for (size_t i = 0; i < j->n; i++)
		free(j->ids[i]);
	free(j->ids);
	free(j->sums);
	free(j->to);
	free(j->source);
	free(j->cursor);
	memset(j, 0, sizeof *j);
}

/* 0 and *j filled, VR_ENOTFOUND (no journal), or an error. */
static int journal_load(fd_fstore *fs, fd_journal *j)
{
	void *v = NULL;
	size_t vl = 0;
	int rc = fd_fstore_note_get(fs, FD_RESHARD_KEY, &v, &vl);
	if (!rc)
		rc = fd_journal_decode(v, vl, j);
	free(v);
	return rc;
}

static int journal_save(fd_service *svc, const fd_journal *j)
{
	void *v;
	size_t vl;
	int rc = fd_journal_encode(j, &v, &vl);
	if (!rc)
		rc = fd_fstore_note_put(svc->fs, FD_RESHARD_KEY, v, vl);
	atomic_fetch_add(&svc->reshard->gen, 1);
	free(v);
	return rc;
}

uint64_t fd_reshard_gen(const fd_service *svc)
{
	return svc->reshard ? atomic_load(&svc->reshard->gen) : 0;
}

/* ---- state and the ingest check ------------------------------------------ */

/* Makes TO of journal j the map ingest checks against. Under mu. */
static int set_leaving(struct fd_reshard *r, const fd_journal *j)
{
	char why[512];
	vr_shardmap *m = NULL;
	int rc = vr_shardmap_parse(&m, j->to, why, sizeof why);
	if (rc)
		return rc;
	vr_shardmap_free(r->to);
	r->to = m;
	snprintf(r->source, sizeof r->source, "%s", j->source);
	return 0;
}

int fd_reshard_open(fd_service *svc, char *err, size_t errlen)
{
	fd_journal j;
	struct fd_reshard *r = calloc(1, sizeof *r);
	if (!r)
		return VR_ENOMEM;
	pthread_mutex_init(&r->mu, NULL);
	svc->reshard = r;
	int rc = journal_load(svc->fs, &j);
	if (rc == VR_ENOTFOUND)
		return 0;
	if (!rc) {
		rc = set_leaving(r, &j);
		if (!(j.flags & FD_JOURNAL_DONE))
			VR_INFO("resharding to %s in progress: %llu items moved, %zu in flight", j.to,
				(unsigned long long)j.moved, j.n);
		fd_journal_clear(&j);
	}
	if (rc)
		snprintf(err, errlen, "cannot read the resharding journal: %s", vr_strerror(rc));
	return rc;
}

void fd_reshard_close(fd_service *svc)
{
	struct fd_reshard *r = svc->reshard;
	if (!r)
		return;
	vr_shardmap_free(r->to);
	pthread_mutex_destroy(&r->mu);
	free(r);
	svc->reshard = NULL;
}

int fd_reshard_progress(fd_service *svc, char **to, uint64_t *moved, int *done)
{
	fd_journal j;
	*to = NULL;
	*moved = 0;
	*done = 0;
	int rc = journal_load(svc->fs, &j);
	if (rc == VR_ENOTFOUND)
		return 0;
	if (rc)
		return rc;
	*to = j.to;
	j.to = NULL;
	*moved = j.moved;
	*done = !!(j.flags & FD_JOURNAL_DONE);
	fd_journal_clear(&j);
	return 0;
}

/* The index of name in m, or -1: a source outside TO loses every item. */
static int leaves(const vr_shardmap *m, int self, const char *id)
{
	return self < 0 || vr_shardmap_owner(m, id, strlen(id)) != (size_t)self;
}

int fd_reshard_check_leaving(const fd_service *svc, const char *id, char *why, size_t cap)
{
	struct fd_reshard *r = svc->reshard;
	int code = GRPC_STATUS_OK;
	if (!r)
		return code;
	pthread_mutex_lock(&r->mu);
	if (r->to && leaves(r->to, vr_shardmap_find(r->to, r->source), id)) {
		size_t k = vr_shardmap_owner(r->to, id, strlen(id));
		snprintf(why, cap, "item %s: this featured (%s) is being resharded to the shard list "
			 "%s (map %s), under which the item belongs to %s: put it there once every "
			 "party holds that list", id, r->source, r->to->list, r->to->tag, r->to->names[k]);
		code = GRPC_STATUS_FAILED_PRECONDITION;
	}
	pthread_mutex_unlock(&r->mu);
	return code;
}

/* ---- items as messages ----------------------------------------------------- */

/* One item of a claim or a re-read import, owning its bytes. */
struct moved {
	Visrec__V1__ReshardItem pb;
	Visrec__V1__ReshardVector v[FD_RESHARD_MAX_VECS];
	Visrec__V1__ReshardVector *vp[FD_RESHARD_MAX_VECS];
	size_t bytes;
};

static void moved_free(struct moved *m)
{
	free(m->pb.item_id);
	free(m->pb.image.data);
	for (size_t i = 0; i < m->pb.n_vectors; i++)
		free(m->v[i].values);
}

static uint64_t le_step(uint64_t h, uint64_t x, size_t bytes)
{
	uint8_t b[8];
	for (size_t i = 0; i < bytes; i++)
		b[i] = (uint8_t)(x >> (8 * i));
	return vr_fnv1a64(h, b, bytes);
}

/* The checksum of featured.proto's ReshardItem (floats in host order,
 * little-endian on every host we build for). */
static uint64_t item_sum(const Visrec__V1__ReshardItem *it)
{
	static const char zero = 0;
	uint64_t h = vr_fnv1a64(VR_FNV_BASIS, it->item_id, strlen(it->item_id));
	h = vr_fnv1a64(h, &zero, 1);
	h = vr_fnv1a64(h, it->image.data, it->image.len);
	h = le_step(h, (uint64_t)it->added_unix, 8);
	h = le_step(h, it->version, 4);
	for (size_t i = 0; i < it->n_vectors; i++) {
		const Visrec__V1__ReshardVector *v = it->vectors[i];
		h = le_step(h, v->model_version, 4);
		h = le_step(h, v->n_values, 4);
		h = vr_fnv1a64(h, v->values, v->n_values * sizeof(float));
	}
	return vr_mix64(h);
}

/* What reading moved items takes: this shard's model rows and versions
 * (ascending, at most FD_RESHARD_MAX_VECS) and a read transaction. */
struct view {
	fd_model_info *rows;
	uint32_t versions[FD_RESHARD_MAX_VECS];
	size_t nv;
	vr_txn *txn;
};

/* Fills v (with a read transaction when txn): 0 or an error; view_close
 * in either case. */
static int view_open(fd_fstore *fs, struct view *v, int txn)
{
	size_t all = 0;
	memset(v, 0, sizeof *v);
	if (!(v->rows = calloc(FD_RESHARD_MAX_VECS, sizeof *v->rows)))
		return VR_ENOMEM;
	int rc = fd_fstore_model_list(fs, v->rows, FD_RESHARD_MAX_VECS, &all);
	if (rc)
		return rc;
	v->nv = all < FD_RESHARD_MAX_VECS ? all : FD_RESHARD_MAX_VECS;
	for (size_t i = 0; i < v->nv; i++)
		v->versions[i] = v->rows[i].version;
	return txn ? vr_store_read_begin(fd_fstore_store(fs), &v->txn) : 0;
}

static void view_close(struct view *v)
{
	vr_store_read_end(v->txn);
	free(v->rows);
	memset(v, 0, sizeof *v);
}

/* Reads item id and every vector it has of v's versions into m, in v's
 * transaction. VR_ENOTFOUND when the item is gone. */
static int moved_read(fd_fstore *fs, const struct view *view, const char *id, struct moved *m)
{
	fd_item it;
	memset(m, 0, sizeof *m);
	visrec__v1__reshard_item__init(&m->pb);
	int rc = fd_fstore_item_get(fs, view->txn, id, &it);
	if (rc)
		return rc;
	if (!(m->pb.item_id = strdup(id)) || !(m->pb.image.data = malloc(it.image_len ? it.image_len : 1)))
		return VR_ENOMEM;
	memcpy(m->pb.image.data, it.image, it.image_len);
	m->pb.image.len = it.image_len;
	m->pb.added_unix = it.added_unix;
	m->pb.version = it.version;
	m->pb.vectors = m->vp;
	m->bytes = it.image_len + strlen(id) + 64;
	for (size_t i = 0; i < view->nv; i++) {
		fd_vec v;
		rc = fd_fstore_vec_num(fs, view->txn, view->versions[i], it.num, &v);
		if (rc == VR_ENOTFOUND)
			continue;
		if (rc)
			return rc;
		Visrec__V1__ReshardVector *pv = &m->v[m->pb.n_vectors];
		visrec__v1__reshard_vector__init(pv);
		if (!(pv->values = malloc(sizeof(float) * (v.dims ? v.dims : 1))))
			return VR_ENOMEM;
		memcpy(pv->values, v.values, sizeof(float) * v.dims);
		pv->n_values = v.dims;
		pv->model_version = v.version;
		m->vp[m->pb.n_vectors++] = pv;
		m->bytes += sizeof(float) * v.dims + 16;
	}
	m->pb.checksum = item_sum(&m->pb);
	return 0;
}

/* Parses to_shards; INVALID_ARGUMENT set on the call otherwise. */
static int parse_to(vr_call *call, const char *to, vr_shardmap **m)
{
	char why[512];
	int rc = vr_shardmap_parse(m, to, why, sizeof why);
	if (rc == VR_ENOMEM)
		return rc;
	if (rc)
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "to_shards: %s", why);
	return GRPC_STATUS_OK;
}

/* The id rule over a request's ids, before anything else: items (n
 * ReshardItems, plain 0) or item_ids (n strings, plain 1).
 * INVALID_ARGUMENT naming the id's place, set on the call. */
static int ids_check(vr_call *call, void *list, size_t n, int plain)
{
	char name[48], why[512];
	for (size_t i = 0; i < n; i++) {
		const char *id = plain ? ((char **)list)[i] :
			((Visrec__V1__ReshardItem **)list)[i]->item_id;
		snprintf(name, sizeof name, plain ? "item_ids[%zu]" : "items[%zu].item_id", i);
		if (vr_id_check_named(name, id, strlen(id), why, sizeof why))
			return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
	}
	return GRPC_STATUS_OK;
}

/* ---- ReshardClaim -------------------------------------------------------- */

struct claim {
	struct moved *items;
	size_t n, cap;
	size_t bytes, budget;
	uint64_t scanned;
};

/* Scans from j->cursor for up to max items leaving under m, advancing the
 * cursor; the sweep pass and done as reshard.h says. */
static int claim_scan(fd_service *svc, fd_journal *j, const vr_shardmap *m, struct claim *c)
{
	struct view view;
	char *cursor = malloc(FD_MAX_ID + 1);
	int self = vr_shardmap_find(m, j->source);
	int rc = view_open(svc->fs, &view, 1);
	if (!rc && !cursor)
		rc = VR_ENOMEM;
	if (rc)
		goto leave;
	snprintf(cursor, FD_MAX_ID + 1, "%s", j->cursor);
	while (c->n < c->cap && c->scanned < CLAIM_SCAN) {
		fd_item it;
		rc = fd_fstore_item_next(svc->fs, view.txn, cursor, &it);
		if (rc == VR_ENOTFOUND) {
			rc = 0;
			if (c->n)
				break;
			if (j->flags & FD_JOURNAL_SWEEP) {
				j->flags = FD_JOURNAL_DONE;
				break;
			}
			j->flags |= FD_JOURNAL_SWEEP;
			cursor[0] = 0;
			continue;
		}
		if (rc)
			goto leave;
		c->scanned++;
		char id[FD_MAX_ID + 1];
		memcpy(id, it.item_id, it.id_len);
		id[it.id_len] = 0;
		if (leaves(m, self, id)) {
			struct moved *mv = &c->items[c->n];
			rc = moved_read(svc->fs, &view, id, mv);
			if (rc) {
				moved_free(mv);
				goto leave;
			}
			if (c->n && c->bytes + mv->bytes > c->budget) {
				moved_free(mv);
				break;
			}
			c->bytes += mv->bytes;
			c->n++;
		}
		memcpy(cursor, id, it.id_len + 1);
	}
	free(j->cursor);
	j->cursor = cursor;
	cursor = NULL;
leave:
	view_close(&view);
	free(cursor);
	return rc;
}

/* The journal for a claim to m from source: the one there (resumed), or a
 * new one; FAILED_PRECONDITION set on the call when another reshard is
 * unfinished or source disagrees with it. */
static int claim_journal(vr_call *call, fd_service *svc, const vr_shardmap *m, const char *source,
			 fd_journal *j)
{
	int rc = journal_load(svc->fs, j);
	if (rc && rc != VR_ENOTFOUND)
		return rc;
	if (!rc && strcmp(j->to, m->list)) {
		if (!(j->flags & FD_JOURNAL_DONE)) {
			rc = vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
					   "this featured is being resharded to the shard list %s "
					   "(%llu items moved so far): finish that with visrec reshard "
					   "--to %s before another", j->to,
					   (unsigned long long)j->moved, j->to);
			fd_journal_clear(j);
			return rc;
		}
		fd_journal_clear(j);
		rc = VR_ENOTFOUND;
	}
	if (!rc && strcmp(j->source, source)) {
		rc = vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
				   "source %s: this featured's reshard to %s was started as %s",
				   source, j->to, j->source);
		fd_journal_clear(j);
		return rc;
	}
	if (rc == VR_ENOTFOUND) {
		memset(j, 0, sizeof *j);
		if (!(j->to = strdup(m->list)) || !(j->source = strdup(source)) ||
		    !(j->cursor = strdup(""))) {
			fd_journal_clear(j);
			return VR_ENOMEM;
		}
		VR_INFO("resharding to %s (map %s) as %s: first claim", m->list, m->tag, source);
	}
	return 0;
}

/* The batch in flight, read again, whole whatever max_items says now (c
 * has room for it; an item gone meanwhile is left out: only a delete
 * removes it, which also clears the batch). */
static int claim_resume(fd_service *svc, const fd_journal *j, struct claim *c)
{
	struct view view;
	int rc = view_open(svc->fs, &view, 1);
	for (size_t i = 0; !rc && i < j->n; i++) {
		rc = moved_read(svc->fs, &view, j->ids[i], &c->items[c->n]);
		if (!rc)
			c->n++;
		else
			moved_free(&c->items[c->n]);
		if (rc == VR_ENOTFOUND)
			rc = 0;
	}
	view_close(&view);
	return rc;
}

/* Sets the batch of j to c's items. */
static int journal_batch(fd_journal *j, const struct claim *c)
{
	if (!c->n)
		return 0;
	if (!(j->ids = calloc(c->n, sizeof *j->ids)) || !(j->sums = calloc(c->n, sizeof *j->sums)))
		return VR_ENOMEM;
	for (; j->n < c->n; j->n++) {
		if (!(j->ids[j->n] = strdup(c->items[j->n].pb.item_id)))
			return VR_ENOMEM;
		j->sums[j->n] = c->items[j->n].pb.checksum;
	}
	return 0;
}

/* Whether s is one address of a shard list; why says why not. */
static int one_address(const char *s, char *why, size_t cap)
{
	vr_shardmap *m = NULL;
	if (!s[0] || strchr(s, ',')) {
		snprintf(why, cap, "%s", s[0] ? "a list, not one address" : "required");
		return 0;
	}
	int ok = !vr_shardmap_parse(&m, s, why, cap);
	vr_shardmap_free(m);
	return ok;
}

int fd_reshard_claim(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	struct fd_reshard *r = svc->reshard;
	const Visrec__V1__ReshardClaimRequest *req = (const void *)vr_call_request(call);
	Visrec__V1__ReshardClaimResponse resp = VISREC__V1__RESHARD_CLAIM_RESPONSE__INIT;
	Visrec__V1__ReshardItem **ptrs = NULL;
	struct claim c = { 0 };
	fd_journal j = { 0 };
	vr_shardmap *m = NULL;
	char why[512];
	const char *source = req->source;
	int code = fd_check_shard_map(svc, call);
	if (code || (code = parse_to(call, req->to_shards, &m)))
		return code;
	if (svc->shards) {
		const char *self = svc->shards->names[svc->shard_self];
		if (source[0] && strcmp(source, self)) {
			code = vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "source %s is not this "
					     "featured's --shard-self %s", source, self);
			goto leave;
		}
		source = self;
	} else if (!one_address(source, why, sizeof why)) {
		code = vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "source \"%.300s\": this "
				     "featured runs without --shards, so name it as one address of "
				     "the old list (%s)", source, why);
		goto leave;
	}
	if (req->max_items > FD_RESHARD_MAX_ITEMS) {
		code = vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "max_items %u is over the "
				     "limit of %d", req->max_items, FD_RESHARD_MAX_ITEMS);
		goto leave;
	}
	c.cap = req->max_items ? req->max_items : CLAIM_DEFAULT;
	c.budget = vr_call_max_message(call) > 2 * MESSAGE_SLACK ?
		vr_call_max_message(call) - MESSAGE_SLACK : MESSAGE_SLACK;
	pthread_mutex_lock(&r->mu);
	code = claim_journal(call, svc, m, source, &j);
	if (code)
		goto unlock;
	/* A batch in flight is answered whole, whatever max_items says now. */
	if (j.n > c.cap)
		c.cap = j.n;
	if (!(c.items = calloc(c.cap, sizeof *c.items))) {
		code = VR_ENOMEM;
		goto unlock;
	}
	/* Ingest refuses leaving items before the scan starts (reshard.h). */
	if ((code = set_leaving(r, &j)))
		goto unlock;
	if (j.n) {
		resp.resumed = 1;
		code = claim_resume(svc, &j, &c);
	} else if (!(j.flags & FD_JOURNAL_DONE)) {
		if (!(code = claim_scan(svc, &j, m, &c)) && !(code = journal_batch(&j, &c)))
			code = journal_save(svc, &j);
	}
unlock:
	pthread_mutex_unlock(&r->mu);
	if (code)
		goto leave;
	vr_fault("reshard-claimed");
	code = VR_ENOMEM;
	if (c.n && !(ptrs = calloc(c.n, sizeof *ptrs)))
		goto leave;
	for (size_t i = 0; i < c.n; i++)
		ptrs[i] = &c.items[i].pb;
	resp.n_items = c.n;
	resp.items = ptrs;
	resp.done = !!(j.flags & FD_JOURNAL_DONE);
	resp.moved = j.moved;
	resp.to_map = m->tag;
	resp.scanned = c.scanned;
	code = vr_call_send(call, &resp.base);
leave:
	for (size_t i = 0; i < c.n; i++)
		moved_free(&c.items[i]);
	free(c.items);
	free(ptrs);
	fd_journal_clear(&j);
	vr_shardmap_free(m);
	return code ? code : GRPC_STATUS_OK;
}

/* ---- ReshardImport ------------------------------------------------------- */

int fd_reshard_check_item(const fd_service *svc, const vr_shardmap *m, int self,
			  const fd_model_info *rows, size_t n, const Visrec__V1__ReshardItem *it,
			  size_t index, char *why, size_t cap)
{
	int code = fd_check_item(svc, it->item_id, it->image.len, why, cap);
	if (code)
		return code;
	size_t k = vr_shardmap_owner(m, it->item_id, strlen(it->item_id));
	if ((int)k != self) {
		snprintf(why, cap, "items[%zu] %s belongs to %s under the new list, not to this "
			 "featured (%s)", index, it->item_id, m->names[k], m->names[self]);
		return GRPC_STATUS_FAILED_PRECONDITION;
	}
	if (it->n_vectors > FD_RESHARD_MAX_VECS) {
		snprintf(why, cap, "items[%zu] %s has %zu vectors, over the limit of %d", index,
			 it->item_id, it->n_vectors, FD_RESHARD_MAX_VECS);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	for (size_t v = 0; v < it->n_vectors; v++) {
		const Visrec__V1__ReshardVector *rv = it->vectors[v];
		size_t r = 0;
		if (v && rv->model_version <= it->vectors[v - 1]->model_version) {
			snprintf(why, cap, "items[%zu] %s: vectors[%zu] is of model version %u, not "
				 "above the one before", index, it->item_id, v, rv->model_version);
			return GRPC_STATUS_INVALID_ARGUMENT;
		}
		while (r < n && rows[r].version != rv->model_version)
			r++;
		if (r == n || rows[r].dims != rv->n_values) {
			snprintf(why, cap, "items[%zu] %s has a vector of model version %u with %zu "
				 "values, and this featured %s: install the source's model versions "
				 "here first", index, it->item_id, rv->model_version, rv->n_values,
				 r == n ? "has no such version" : "gives that version other dims");
			return GRPC_STATUS_FAILED_PRECONDITION;
		}
	}
	if (item_sum(it) != it->checksum) {
		snprintf(why, cap, "items[%zu] %s: its checksum %016llx is not that of its content "
			 "(%016llx)", index, it->item_id, (unsigned long long)it->checksum,
			 (unsigned long long)item_sum(it));
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	return GRPC_STATUS_OK;
}

int fd_reshard_import(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	const Visrec__V1__ReshardImportRequest *req = (const void *)vr_call_request(call);
	Visrec__V1__ReshardImportResponse resp = VISREC__V1__RESHARD_IMPORT_RESPONSE__INIT;
	struct view view = { 0 };
	fd_import *im = NULL;
	fd_import_vec *iv = NULL;
	vr_shardmap *m = NULL;
	size_t nvec = 0;
	char why[600];
	int code = fd_check_shard_map(svc, call);
	if (code)
		return code;
	if (!req->n_items || req->n_items > FD_RESHARD_MAX_ITEMS)
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "items: %zu, want 1 to %d",
				     req->n_items, FD_RESHARD_MAX_ITEMS);
	if ((code = ids_check(call, req->items, req->n_items, 0)))
		return code;
	if (!svc->shards)
		return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "this featured runs "
				     "without --shards: start it with the new list as --shards and "
				     "itself as --shard-self to import moved items");
	if ((code = parse_to(call, req->to_shards, &m)))
		return code;
	int self = vr_shardmap_find(m, svc->shards->names[svc->shard_self]);
	if (self < 0) {
		code = vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "this featured (%s) is "
				     "not in the new list %s", svc->shards->names[svc->shard_self],
				     m->list);
		goto leave;
	}
	code = VR_ENOMEM;
	if (!(im = calloc(req->n_items, sizeof *im)) ||
	    !(resp.checksums = calloc(req->n_items, sizeof *resp.checksums)))
		goto leave;
	if ((code = view_open(svc->fs, &view, 0)))
		goto leave;
	for (size_t i = 0; i < req->n_items; i++) {
		const Visrec__V1__ReshardItem *it = req->items[i];
		if ((code = fd_reshard_check_item(svc, m, self, view.rows, view.nv, it, i, why,
						  sizeof why))) {
			code = vr_call_error(call, code, "%s", why);
			goto leave;
		}
		nvec += it->n_vectors;
	}
	code = VR_ENOMEM;
	if (!(iv = calloc(nvec ? nvec : 1, sizeof *iv)))
		goto leave;
	nvec = 0;
	for (size_t i = 0; i < req->n_items; i++) {
		const Visrec__V1__ReshardItem *it = req->items[i];
		im[i] = (fd_import){ .item_id = it->item_id, .image = it->image.data,
				     .image_len = it->image.len, .added_unix = it->added_unix,
				     .version = it->version, .vecs = iv + nvec, .nvecs = it->n_vectors };
		for (size_t v = 0; v < it->n_vectors; v++)
			iv[nvec++] = (fd_import_vec){ it->vectors[v]->model_version,
						      (uint32_t)it->vectors[v]->n_values,
						      it->vectors[v]->values };
	}
	if ((code = fd_fstore_import(svc->fs, im, req->n_items)))
		goto leave;
	vr_fault("reshard-imported");
	/* The checksums of what is stored now, read back, not of the request. */
	if ((code = vr_store_read_begin(fd_fstore_store(svc->fs), &view.txn)))
		goto leave;
	for (size_t i = 0; i < req->n_items; i++) {
		struct moved mv;
		code = moved_read(svc->fs, &view, req->items[i]->item_id, &mv);
		resp.checksums[i] = mv.pb.checksum;
		moved_free(&mv);
		if (code)
			goto leave;
	}
	view_close(&view);
	resp.n_checksums = req->n_items;
	code = vr_call_send(call, &resp.base);
leave:
	view_close(&view);
	free(resp.checksums);
	free(iv);
	free(im);
	vr_shardmap_free(m);
	return code ? code : GRPC_STATUS_OK;
}

/* ---- ReshardDelete ------------------------------------------------------- */

/* Checks a delete against journal j and the items as stored now.
 * GRPC_STATUS_OK or a code with why. */
static int delete_check(fd_service *svc, const fd_journal *j,
			const Visrec__V1__ReshardDeleteRequest *req, char *why, size_t cap)
{
	struct view view = { 0 };
	int code = GRPC_STATUS_FAILED_PRECONDITION;
	if (!j->n || req->n_item_ids != j->n) {
		snprintf(why, cap, "the batch to delete has %zu items and the journal's batch in "
			 "flight %zu: claim again and delete what the claim answers", req->n_item_ids,
			 j->n);
		goto leave;
	}
	if (req->n_checksums != j->n) {
		snprintf(why, cap, "checksums: %zu, want one per item (%zu)", req->n_checksums, j->n);
		code = GRPC_STATUS_INVALID_ARGUMENT;
		goto leave;
	}
	if ((code = view_open(svc->fs, &view, 1)))
		goto leave;
	for (size_t i = 0; i < j->n; i++) {
		struct moved mv;
		code = GRPC_STATUS_FAILED_PRECONDITION;
		if (strcmp(req->item_ids[i], j->ids[i])) {
			snprintf(why, cap, "item_ids[%zu] %.300s is not the claimed batch's (%s): "
				 "claim again", i, req->item_ids[i], j->ids[i]);
			goto leave;
		}
		code = GRPC_STATUS_ABORTED;
		if (req->checksums[i] != j->sums[i]) {
			snprintf(why, cap, "item %s: the target stored checksum %016llx, the source "
				 "claimed %016llx: nothing deleted; claim again to copy the batch "
				 "anew", j->ids[i], (unsigned long long)req->checksums[i],
				 (unsigned long long)j->sums[i]);
			goto leave;
		}
		int rc = moved_read(svc->fs, &view, j->ids[i], &mv);
		uint64_t now = mv.pb.checksum;
		moved_free(&mv);
		if (rc == VR_ENOTFOUND)
			continue;
		if (rc) {
			code = rc;
			goto leave;
		}
		if (now != j->sums[i]) {
			snprintf(why, cap, "item %s changed here since it was claimed (checksum "
				 "%016llx, claimed %016llx): nothing deleted", j->ids[i],
				 (unsigned long long)now, (unsigned long long)j->sums[i]);
			goto leave;
		}
	}
	code = GRPC_STATUS_OK;
leave:
	view_close(&view);
	return code;
}

int fd_reshard_delete(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	struct fd_reshard *r = svc->reshard;
	const Visrec__V1__ReshardDeleteRequest *req = (const void *)vr_call_request(call);
	Visrec__V1__ReshardDeleteResponse resp = VISREC__V1__RESHARD_DELETE_RESPONSE__INIT;
	fd_journal j = { 0 }, after;
	vr_shardmap *m = NULL;
	void *rec = NULL;
	size_t len;
	char why[700];
	int code = fd_check_shard_map(svc, call);
	if (code || (code = ids_check(call, req->item_ids, req->n_item_ids, 1)) ||
	    (code = parse_to(call, req->to_shards, &m)))
		return code;
	pthread_mutex_lock(&r->mu);
	code = journal_load(svc->fs, &j);
	if (code == VR_ENOTFOUND || (!code && strcmp(j.to, m->list))) {
		code = vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "no reshard to %s is "
				     "journalled on this featured: claim a batch first", m->list);
		goto unlock;
	}
	if (code)
		goto unlock;
	if ((code = delete_check(svc, &j, req, why, sizeof why))) {
		if (code > 0)
			code = vr_call_error(call, code, "%s", why);
		goto unlock;
	}
	after = j;
	after.n = 0;
	after.moved = j.moved + j.n;
	if ((code = fd_journal_encode(&after, &rec, &len)) ||
	    (code = fd_fstore_remove(svc->fs, (const char *const *)j.ids, j.n, FD_RESHARD_KEY, rec,
				     len, &resp.deleted)))
		goto unlock;
	atomic_fetch_add(&r->gen, 1);
	resp.moved = after.moved;
unlock:
	pthread_mutex_unlock(&r->mu);
	free(rec);
	fd_journal_clear(&j);
	vr_shardmap_free(m);
	if (code)
		return code;
	vr_fault("reshard-deleted");
	code = vr_call_send(call, &resp.base);
	return code ? code : GRPC_STATUS_OK;
}
