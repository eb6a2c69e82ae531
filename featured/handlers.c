/* featured's handlers of visrec.v1.Featured: they check requests, hand
 * images to the executor and wait for their commits, and read vectors and
 * changes from the store in short read transactions that end before any
 * send. */
#include "service.h"

#include "deadline.h"
#include "err.h"
#include "grow.h"
#include "log.h"
#include "reshard.h"
#include "visrec/v1/featured.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often a waiting handler looks at its call's cancellation. */
#define POLL_MS 100
/* GetVectors chunks stay under this (and under the message limit): a
 * bigger chunk buys nothing on the wire and costs memory per call. */
#define CHUNK_BYTES ((size_t)4 << 20)
/* Changes read per transaction by Watch. */
#define WATCH_BATCH 16

static int64_t job_deadline(vr_call *call)
{
	int64_t left = vr_call_deadline_ms(call);
	if (left == INT64_MAX)
		return 0;
	return vr_now_ms() + (left > 0 ? left : 0);
}

/* The status of a finished job: bad images are the caller's to fix. */
static int job_status(const fd_job *job)
{
	if (job->rc == VR_EINVAL || job->rc == VR_ETOOBIG)
		return GRPC_STATUS_INVALID_ARGUMENT;
	return vr_status_from_rc(job->rc);
}

int fd_check_item(const fd_service *svc, const char *id, size_t image_len, char *why, size_t cap)
{
	if (vr_id_check_named("item_id", id, strlen(id), why, cap))
		return GRPC_STATUS_INVALID_ARGUMENT;
	if (!image_len) {
		snprintf(why, cap, "item %s: no image bytes", id);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (image_len > svc->max_image_bytes) {
		snprintf(why, cap, "item %s: image of %zu bytes is over the limit of %llu bytes", id,
			 image_len, (unsigned long long)svc->max_image_bytes);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	return GRPC_STATUS_OK;
}

int fd_check_shard_map(const fd_service *svc, vr_call *call)
{
	char tag[VR_SHARDMAP_TAG + 8], why[512];
	const vr_shardmap *m = svc->shards && svc->shards->n > 1 ? svc->shards : NULL;
	int len = vr_call_metadata(call, VR_SHARDMAP_KEY, tag, sizeof tag);
	if (len == VR_ETOOBIG)
		snprintf(tag, sizeof tag, "(too long)");
	if (!vr_shardmap_check_tag(m, m ? m->names[svc->shard_self] : NULL,
				   len == VR_ENOTFOUND ? NULL : tag, why, sizeof why))
		return GRPC_STATUS_OK;
	return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "%s", why);
}

int fd_check_owner(const fd_service *svc, const char *id, char *why, size_t cap)
{
	const vr_shardmap *m = svc->shards;
	if (!m)
		return fd_reshard_check_leaving(svc, id, why, cap);
	size_t k = vr_shardmap_owner(m, id, strlen(id));
	if (k == svc->shard_self)
		return fd_reshard_check_leaving(svc, id, why, cap);
	snprintf(why, cap, "item %s belongs to shard %s, not to this one (%s) of the map %s: "
		 "send it there", id, m->names[k], m->names[svc->shard_self], m->tag);
	return GRPC_STATUS_FAILED_PRECONDITION;
}

/* ---- PutItems ---------------------------------------------------------- */

struct pending {
	Visrec__V1__PutItemsRequest *req; /* holds the JPEG until the job is done */
	fd_job job;
	size_t index;                     /* its ItemStatus */
};

struct put_state {
	fd_service *svc;
	vr_call *call;
	fd_waiter waiter;
	struct pending *ring;             /* jobs in flight, oldest at head */
	size_t cap, head, n;
	Visrec__V1__ItemStatus *st;       /* one per request message */
	size_t nst, cap_st;
	uint32_t accepted, rejected;
};

static int add_status(struct put_state *ps, const char *item_id, size_t *index)
{
	if (ps->nst == ps->cap_st) {
		size_t cap = ps->cap_st ? 2 * ps->cap_st : 64;
		Visrec__V1__ItemStatus *st = realloc(ps->st, cap * sizeof *st);
		if (!st)
			return VR_ENOMEM;
		ps->st = st;
		ps->cap_st = cap;
	}
	Visrec__V1__ItemStatus *s = &ps->st[ps->nst];
	visrec__v1__item_status__init(s);
	s->message = (char *)"";
	if (!(s->item_id = strdup(item_id)))
		return VR_ENOMEM;
	*index = ps->nst++;
	return 0;
}

static void set_status(struct put_state *ps, size_t index, int code, const char *message,
		       uint64_t seq)
{
	Visrec__V1__ItemStatus *s = &ps->st[index];
	s->code = code;
	s->seq = seq;
	if (code) {
		char *m = strdup(message);
		if (m)
			s->message = m;
		ps->rejected++;
	} else {
		ps->accepted++;
	}
}

/* Waits for the oldest job in flight and records it. */
static void finish_front(struct put_state *ps)
{
	struct pending *p = &ps->ring[ps->head];
	while (!fd_job_wait(&p->job, POLL_MS))
		if (vr_call_cancelled(ps->call))
			for (size_t i = 0; i < ps->n; i++)
				atomic_store(&ps->ring[(ps->head + i) % ps->cap].job.cancelled, 1);
	char msg[400];
	if (p->job.rc)
		snprintf(msg, sizeof msg, "item %s: %s", p->job.item_id, p->job.why);
	set_status(ps, p->index, p->job.rc ? job_status(&p->job) : GRPC_STATUS_OK, msg, p->job.seq);
	protobuf_c_message_free_unpacked(&p->req->base, NULL);
	p->req = NULL;
	ps->head = (ps->head + 1) % ps->cap;
	ps->n--;
}

/* Records every job at the front that is done already. */
static void reap(struct put_state *ps)
{
	while (ps->n) {
		struct pending *p = &ps->ring[ps->head];
		pthread_mutex_lock(&ps->waiter.mu);
		int done = p->job.done;
		pthread_mutex_unlock(&ps->waiter.mu);
		if (!done)
			break;
		finish_front(ps);
	}
}

/* Takes one request message: checks it and hands it to the executor, or
 * records why not. nul says why its item_id holds a NUL byte ("" when it
 * does not; vr_call_read_each). A refused id is not echoed in the item's
 * status (item_id ""; strict clients fail a whole reply on bad UTF-8): its
 * message names it by its place in the stream and shows it escaped.
 * Takes ownership of req. */
static int put_one(struct put_state *ps, Visrec__V1__PutItemsRequest *req, const char *nul)
{
	char why[400];
	size_t index;
	int bad_id = nul[0] || vr_id_check(req->item_id, strlen(req->item_id), NULL, 0);
	int rc = add_status(ps, bad_id ? "" : req->item_id, &index);
	if (rc) {
		protobuf_c_message_free_unpacked(&req->base, NULL);
		return rc;
	}
	int code = GRPC_STATUS_INVALID_ARGUMENT;
	if (nul[0])
		snprintf(why, sizeof why, "%s", nul);
	else if (!(code = fd_check_item(ps->svc, req->item_id, req->image.len, why, sizeof why)))
		code = fd_check_owner(ps->svc, req->item_id, why, sizeof why);
	if (code) {
		char msg[440];
		if (bad_id) /* no id to name it by */
			snprintf(msg, sizeof msg, "message %zu of the stream: %s", index + 1, why);
		else
			snprintf(msg, sizeof msg, "%s", why);
		set_status(ps, index, code, msg, 0);
		protobuf_c_message_free_unpacked(&req->base, NULL);
		return 0;
	}
	if (ps->n == ps->cap)
		finish_front(ps);
	struct pending *p = &ps->ring[(ps->head + ps->n) % ps->cap];
	p->req = req;
	p->index = index;
	fd_job_init(&p->job, req->item_id, req->image.data, req->image.len, job_deadline(ps->call),
		    &ps->waiter);
	while ((rc = fd_executor_submit(ps->svc->ex, &p->job, POLL_MS)) == VR_EFULL &&
	       !vr_call_stopping(ps->call))
		reap(ps);
	if (rc) {
		set_status(ps, index, GRPC_STATUS_UNAVAILABLE, "featured is shutting down", 0);
		protobuf_c_message_free_unpacked(&req->base, NULL);
		p->req = NULL;
		return 0;
	}
	ps->n++;
	return 0;
}

int fd_put_items(vr_call *call, void *ctx)
{
	struct put_state ps = { .svc = ctx, .call = call };
	Visrec__V1__ItemStatus **items = NULL;
	int rc = fd_check_shard_map(ps.svc, call);
	if (rc)
		return rc;
	fd_waiter_init(&ps.waiter);
	ps.cap = (size_t)fd_executor_queue_cap(ps.svc->ex);
	if (!(ps.ring = calloc(ps.cap, sizeof *ps.ring))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (;;) {
		ProtobufCMessage *m = NULL;
		char nul[256];
		reap(&ps);
		if ((rc = vr_call_read_each(call, &m, nul, sizeof nul)))
			break;
		if ((rc = put_one(&ps, (Visrec__V1__PutItemsRequest *)m, nul)))
			break;
	}
	if (rc && rc != VR_EEOF)
		for (size_t i = 0; i < ps.n; i++)
			atomic_store(&ps.ring[(ps.head + i) % ps.cap].job.cancelled, 1);
	while (ps.n)
		finish_front(&ps);
	if (rc != VR_EEOF)
		goto leave;
	if (ps.nst && !(items = malloc(ps.nst * sizeof *items))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (size_t i = 0; i < ps.nst; i++)
		items[i] = &ps.st[i];
	Visrec__V1__PutItemsResponse resp = VISREC__V1__PUT_ITEMS_RESPONSE__INIT;
	resp.accepted = ps.accepted;
	resp.rejected = ps.rejected;
	resp.n_items = ps.nst;
	resp.items = items;
	rc = vr_call_send(call, &resp.base);
	if (rc == VR_ETOOBIG)
		rc = vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				   "the reply for %zu items (%u stored) is over the message limit; "
				   "send fewer items per PutItems call", ps.nst, ps.accepted);
	else if (!rc)
		rc = GRPC_STATUS_OK;
leave:
	for (size_t i = 0; i < ps.nst; i++) {
		free(ps.st[i].item_id);
		if (ps.st[i].message[0])
			free(ps.st[i].message);
	}
	free(ps.st);
	free(items);
	free(ps.ring);
	fd_waiter_destroy(&ps.waiter);
	return rc;
}

/* ---- Embed ----------------------------------------------------------------- */

int fd_embed(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	const Visrec__V1__EmbedRequest *req = (const void *)vr_call_request(call);
	char why[400];
	fd_model_info model;
	fd_waiter waiter;
	fd_job job;
	int code = fd_check_shard_map(svc, call);
	if (code)
		return code;
	if ((code = fd_check_item(svc, req->item_id, req->image.len, why, sizeof why)) ||
	    (code = fd_check_owner(svc, req->item_id, why, sizeof why)))
		return vr_call_error(call, code, "%s", why);
	fd_executor_model(svc->ex, &model);
	float *vec = malloc(sizeof(float) * (model.dims ? model.dims : 1));
	if (!vec)
		return VR_ENOMEM;
	fd_waiter_init(&waiter);
	fd_job_init(&job, req->item_id, req->image.data, req->image.len, job_deadline(call), &waiter);
	job.vector = vec;
	job.vector_cap = model.dims;
	int rc = fd_executor_submit(svc->ex, &job, 0);
	if (rc == VR_EFULL) {
		code = vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				     "featured is at capacity (queue of %d images full); retry with backoff",
				     fd_executor_queue_cap(svc->ex));
		goto leave;
	}
	if (rc) {
		code = vr_call_error(call, GRPC_STATUS_UNAVAILABLE, "featured is shutting down");
		goto leave;
	}
	while (!fd_job_wait(&job, POLL_MS))
		if (vr_call_cancelled(call))
			atomic_store(&job.cancelled, 1);
	if (job.rc) {
		code = vr_call_error(call, job_status(&job), "item %s: %s", req->item_id, job.why);
		goto leave;
	}
	if (job.dims > job.vector_cap) {
		code = vr_call_error(call, GRPC_STATUS_ABORTED,
				     "item %s is stored, but the active model changed meanwhile; "
				     "read its vector with GetVectors", req->item_id);
		goto leave;
	}
	Visrec__V1__Vector v = VISREC__V1__VECTOR__INIT;
	Visrec__V1__EmbedResponse resp = VISREC__V1__EMBED_RESPONSE__INIT;
	v.item_id = req->item_id;
	v.model_version = job.version;
	v.n_values = job.dims;
	v.values = vec;
	resp.vector = &v;
	resp.seq = job.seq;
	rc = vr_call_send(call, &resp.base);
	code = rc ? rc : GRPC_STATUS_OK;
leave:
	fd_waiter_destroy(&waiter);
	free(vec);
	return code;
}

/* ---- GetVectors ------------------------------------------------------------ */

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Bytes a length-delimited field of len bytes takes (tag < 16). */
static size_t field_len(size_t len)
{
	return 1 + varint_len(len) + len;
}

/* Bytes one Vector takes inside a GetVectorsResponse. */
static size_t vector_bytes(size_t id_len, uint32_t version, uint32_t dims)
{
	size_t inner = (id_len ? field_len(id_len) : 0) + (version ? 1 + varint_len(version) : 0) +
		       (dims ? field_len((size_t)dims * 4) : 0);
	return field_len(inner);
}

struct chunk {
	Visrec__V1__Vector *vecs;
	Visrec__V1__Vector **ptrs;
	float *values;
	char *ids;           /* cap ids of FD_MAX_ID + 1 bytes */
	char **missing;      /* the request's ids (not copies) */
	size_t cap, n, nmissing, used, budget;
};

static int chunk_alloc(struct chunk *c, size_t cap, uint32_t dims, size_t nmissing)
{
	c->cap = cap;
	c->vecs = calloc(cap ? cap : 1, sizeof *c->vecs);
	c->ptrs = calloc(cap ? cap : 1, sizeof *c->ptrs);
	c->values = malloc(sizeof(float) * (cap ? cap : 1) * (dims ? dims : 1));
	c->ids = malloc((cap ? cap : 1) * (FD_MAX_ID + 1));
	c->missing = calloc(nmissing ? nmissing : 1, sizeof *c->missing);
	return c->vecs && c->ptrs && c->values && c->ids && c->missing ? 0 : VR_ENOMEM;
}

static void chunk_free(struct chunk *c)
{
	free(c->vecs);
	free(c->ptrs);
	free(c->values);
	free(c->ids);
	free(c->missing);
}

/* Copies v into the chunk if it fits; returns 1 if it did. */
static int chunk_add(struct chunk *c, const fd_vec *v)
{
	size_t bytes = vector_bytes(v->id_len, v->version, v->dims);
	if (c->n == c->cap || c->used + bytes > c->budget)
		return 0;
	Visrec__V1__Vector *out = &c->vecs[c->n];
	visrec__v1__vector__init(out);
	out->item_id = c->ids + c->n * (FD_MAX_ID + 1);
	memcpy(out->item_id, v->item_id, v->id_len);
	out->item_id[v->id_len] = 0;
	out->model_version = v->version;
	out->n_values = v->dims;
	out->values = c->values + c->n * (size_t)v->dims;
	memcpy(out->values, v->values, sizeof(float) * v->dims);
	c->ptrs[c->n++] = out;
	c->used += bytes;
	return 1;
}

static int chunk_send(vr_call *call, struct chunk *c, const fd_model_info *m, size_t first_missing)
{
	Visrec__V1__GetVectorsResponse resp = VISREC__V1__GET_VECTORS_RESPONSE__INIT;
	resp.model_version = m->version;
	resp.dims = m->dims;
	resp.n_vectors = c->n;
	resp.vectors = c->ptrs;
	resp.n_missing = c->nmissing - first_missing;
	resp.missing = c->missing + first_missing;
	int rc = vr_call_send(call, &resp.base);
	c->n = 0;
	c->used = 0;
	return rc;
}

static int send_all(vr_call *call, fd_fstore *fs, struct chunk *c, const fd_model_info *m)
{
	uint64_t from = 0;
	int rc, done = 0;
	while (!done) {
		vr_txn *txn;
		fd_vec v;
		if ((rc = vr_store_read_begin(fd_fstore_store(fs), &txn)))
			return rc;
		while (!(rc = fd_fstore_vec_next(fs, txn, m->version, from, &v)) && chunk_add(c, &v))
			from = v.num + 1;
		vr_store_read_end(txn);
		if (rc && rc != VR_ENOTFOUND)
			return rc;
		done = rc == VR_ENOTFOUND;
		if ((rc = chunk_send(call, c, m, 0)))
			return rc;
	}
	return 0;
}

static int send_ids(vr_call *call, fd_fstore *fs, struct chunk *c, const fd_model_info *m,
		    char **ids, size_t n_ids)
{
	size_t i = 0;
	int rc;
	do {
		vr_txn *txn;
		fd_vec v;
		size_t first_missing = c->nmissing;
		if ((rc = vr_store_read_begin(fd_fstore_store(fs), &txn)))
			return rc;
		for (; i < n_ids; i++) {
			rc = fd_fstore_vec_get(fs, txn, m->version, ids[i], &v);
			if (rc == VR_ENOTFOUND) {
				size_t bytes = field_len(strlen(ids[i]));
				if (c->used + bytes > c->budget)
					break;
				c->missing[c->nmissing++] = ids[i];
				c->used += bytes;
			} else if (rc || !chunk_add(c, &v)) {
				break;
			}
		}
		vr_store_read_end(txn);
		if (rc && rc != VR_ENOTFOUND)
			return rc;
		if ((rc = chunk_send(call, c, m, first_missing)))
			return rc;
	} while (i < n_ids);
	return 0;
}

int fd_get_vectors(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	const Visrec__V1__GetVectorsRequest *req = (const void *)vr_call_request(call);
	fd_model_info m;
	struct chunk c = { 0 };
	uint64_t items = 0, last;
	int code = fd_check_shard_map(svc, call);
	if (code)
		return code;
	for (size_t i = 0; !req->all && i < req->n_item_ids; i++) {
		char why[256], name[32];
		snprintf(name, sizeof name, "item_ids[%zu]", i);
		if (vr_id_check_named(name, req->item_ids[i], strlen(req->item_ids[i]), why, sizeof why))
			return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
	}
	int rc = fd_fstore_model_get(svc->fs, req->model_version, &m);
	if (rc == VR_ENOTFOUND)
		return vr_call_error(call, GRPC_STATUS_NOT_FOUND, "model version %u does not exist",
				     req->model_version);
	if (rc || (rc = fd_fstore_stats(svc->fs, &items, &last)))
		return rc;
	size_t limit = vr_call_max_message(call);
	c.budget = (limit < CHUNK_BYTES ? limit : CHUNK_BYTES) - 16;
	size_t biggest = vector_bytes(FD_MAX_ID, m.version, m.dims);
	if (biggest > c.budget)
		return vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				     "a vector of %u dims takes up to %zu bytes, over the message limit of %zu; "
				     "raise --max-message-bytes", m.dims, biggest, limit);
	size_t cap = c.budget / vector_bytes(1, m.version, m.dims);
	size_t want = req->all ? items : req->n_item_ids;
	if (cap > want)
		cap = want;
	if (req->max_per_message && cap > req->max_per_message)
		cap = req->max_per_message;
	if (!cap)
		cap = 1; /* items may arrive meanwhile */
	if ((rc = chunk_alloc(&c, cap, m.dims, req->all ? 0 : req->n_item_ids)))
		goto leave;
	if (req->all)
		rc = send_all(call, svc->fs, &c, &m);
	else
		rc = send_ids(call, svc->fs, &c, &m, req->item_ids, req->n_item_ids);
	if (!rc)
		rc = GRPC_STATUS_OK;
leave:
	chunk_free(&c);
	return rc;
}

/* ---- Watch ------------------------------------------------------------------- */

/* Watch's stop condition for fd_fstore_wait. */
static int watch_stopping(void *call)
{
	return vr_call_stopping(call);
}

struct watch_entry {
	Visrec__V1__ItemChange change;
	Visrec__V1__Vector vector;
	char id[FD_MAX_ID + 1];
	size_t values_at;    /* offset in the values buffer */
};

int fd_watch(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	const Visrec__V1__WatchRequest *req = (const void *)vr_call_request(call);
	struct watch_entry e[WATCH_BATCH];
	float *values = NULL;
	size_t values_cap = 0;
	uint64_t after = req->after_seq;
	int code = fd_check_shard_map(svc, call);
	if (code)
		return code;
	/* A follower sleeps until a commit, its cancellation or shutdown
	 * wakes it: an idle feed costs no CPU. */
	int rc = vr_call_wake_on_stop(call, fd_fstore_wake, svc->fs);
	while (!rc) {
		if (vr_call_stopping(call)) {
			rc = vr_call_cancelled(call) ? VR_ECANCELLED :
				vr_call_error(call, GRPC_STATUS_UNAVAILABLE,
					      "featured is shutting down; resume with after_seq %llu",
					      (unsigned long long)after);
			break;
		}
		vr_txn *txn;
		fd_change ch;
		fd_vec v;
		int n = 0;
		size_t used = 0;
		if ((rc = vr_store_read_begin(fd_fstore_store(svc->fs), &txn)))
			break;
		uint64_t from = after;
		while (n < WATCH_BATCH && !(rc = fd_fstore_change_next(svc->fs, txn, from, &ch))) {
			struct watch_entry *w = &e[n++];
			from = ch.seq;
			visrec__v1__item_change__init(&w->change);
			w->change.seq = ch.seq;
			w->change.kind = (Visrec__V1__ItemChange__Kind)ch.kind;
			w->change.model_version = ch.version;
			w->change.item_id = w->id;
			size_t len = ch.id_len > FD_MAX_ID ? FD_MAX_ID : ch.id_len;
			memcpy(w->id, ch.item_id, len);
			w->id[len] = 0;
			w->values_at = SIZE_MAX;
			if (!req->include_vectors || !len || ch.kind == FD_REMOVED)
				continue;
			rc = fd_fstore_vec_get(svc->fs, txn, ch.version, w->id, &v);
			if (rc == VR_ENOTFOUND)
				continue;
			if (rc)
				break;
			if (used + v.dims > values_cap) {
				size_t cap = 2 * (used + v.dims);
				float *grown = realloc(values, sizeof(float) * cap);
				if (!grown) {
					rc = VR_ENOMEM;
					break;
				}
				values = grown;
				values_cap = cap;
			}
			memcpy(values + used, v.values, sizeof(float) * v.dims);
			visrec__v1__vector__init(&w->vector);
			w->vector.item_id = w->id;
			w->vector.model_version = v.version;
			w->vector.n_values = v.dims;
			w->values_at = used;
			used += v.dims;
		}
		vr_store_read_end(txn);
		if (rc && rc != VR_ENOTFOUND)
			break;
		rc = 0;
		for (int i = 0; i < n && !rc; i++) {
			if (e[i].values_at != SIZE_MAX) {
				e[i].vector.values = values + e[i].values_at;
				e[i].change.vector = &e[i].vector;
			}
			if (!(rc = vr_call_send(call, &e[i].change.base)))
				after = e[i].change.seq;
		}
		if (rc)
			break;
		if (!n)
			fd_fstore_wait(svc->fs, after, VR_FOREVER, watch_stopping, call);
	}
	free(values);
	return rc;
}

/* ---- Info ---------------------------------------------------------------------- */

#define MAX_MODELS 256

static void model_to_proto(const fd_model_info *m, Visrec__V1__ModelVersionInfo *out)
{
	visrec__v1__model_version_info__init(out);
	out->version = m->version;
	out->arch = (char *)m->arch;
	out->output_layer = (char *)m->layer;
	out->dims = m->dims;
	out->input_size = m->input_size;
	out->weights_file = (char *)m->weights;
	out->created_unix = m->created_unix;
	out->purpose = (char *)m->purpose;
}

/* Builds Info's reply packed into *bytes (malloc'd, *len of them). */
static int info_build(fd_service *svc, uint8_t **bytes, size_t *len)
{
	Visrec__V1__FeaturedInfoResponse resp = VISREC__V1__FEATURED_INFO_RESPONSE__INIT;
	Visrec__V1__ModelVersionInfo active_pb, *models_pb = NULL, **ptrs = NULL;
	fd_model_info active, *models = NULL;
	char *reshard_to = NULL;
	size_t n = 0;
	int rc = VR_ENOMEM, done = 0;
	fd_executor_model(svc->ex, &active);
	if (!(models = calloc(MAX_MODELS, sizeof *models)) ||
	    !(models_pb = calloc(MAX_MODELS, sizeof *models_pb)) ||
	    !(ptrs = calloc(MAX_MODELS, sizeof *ptrs)))
		goto leave;
	if ((rc = fd_fstore_model_list(svc->fs, models, MAX_MODELS, &n)) ||
	    (rc = fd_fstore_stats(svc->fs, &resp.items, &resp.last_seq)))
		goto leave;
	if (n > MAX_MODELS)
		n = MAX_MODELS;
	fd_model_info live[FD_MAX_LIVE];
	int nlive = fd_executor_live(svc->ex, live);
	for (size_t i = 0; i < n; i++) {
		model_to_proto(&models[i], &models_pb[i]);
		for (int v = 0; v < nlive; v++)
			models_pb[i].live |= live[v].version == models[i].version;
		ptrs[i] = &models_pb[i];
	}
	model_to_proto(&active, &active_pb);
	resp.server_version = (char *)VISREC_VERSION;
	resp.backend = (char *)fd_executor_backend_name(svc->ex);
	resp.device = (char *)fd_executor_device(svc->ex);
	resp.active_model = &active_pb;
	resp.n_models = n;
	resp.models = ptrs;
	resp.max_image_bytes = svc->max_image_bytes;
	resp.max_image_pixels = svc->max_image_pixels;
	if ((rc = fd_reshard_progress(svc, &reshard_to, &resp.reshard_moved, &done)))
		goto leave;
	resp.reshard_to = reshard_to ? reshard_to : (char *)"";
	resp.reshard_done = done;
	if (svc->shards) {
		resp.n_shards = svc->shards->n;
		resp.shards = svc->shards->names;
		resp.shard_self = svc->shards->names[svc->shard_self];
		resp.shard_map = svc->shards->tag;
	}
	*len = protobuf_c_message_get_packed_size(&resp.base);
	rc = VR_ENOMEM;
	if ((*bytes = malloc(*len ? *len : 1))) {
		protobuf_c_message_pack(&resp.base, *bytes);
		rc = 0;
	}
leave:
	free(reshard_to);
	free(models);
	free(models_pb);
	free(ptrs);
	return rc;
}

/* Info's reply is kept packed (fd_service.info_bytes) for the inputs it
 * was built from, read before building, so a kept reply is never older
 * than its key; a call whose key differs builds anew and keeps its own. */
int fd_info(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	fd_info_key key;
	memset(&key, 0, sizeof key);
	key.models_gen = fd_fstore_models_gen(svc->fs);
	key.last_seq = fd_fstore_last_seq(svc->fs);
	key.reshard_gen = fd_reshard_gen(svc);
	key.nlive = (uint32_t)fd_executor_versions(svc->ex, &key.active, key.live);
	int rc;
	pthread_rwlock_rdlock(&svc->info_lock);
	if (svc->info_bytes && !memcmp(&key, &svc->info_key, sizeof key)) {
		rc = vr_call_send_packed(call, svc->info_bytes, svc->info_len);
		pthread_rwlock_unlock(&svc->info_lock);
		return rc ? rc : GRPC_STATUS_OK;
	}
	pthread_rwlock_unlock(&svc->info_lock);
	uint8_t *bytes;
	size_t len;
	if ((rc = info_build(svc, &bytes, &len)))
		return rc;
	rc = vr_call_send_packed(call, bytes, len);
	pthread_rwlock_wrlock(&svc->info_lock);
	free(svc->info_bytes);
	svc->info_bytes = bytes;
	svc->info_len = len;
	svc->info_key = key;
	pthread_rwlock_unlock(&svc->info_lock);
	return rc ? rc : GRPC_STATUS_OK;
}

/* ---- GetImages ----------------------------------------------------------- */

int fd_get_images_check(const fd_service *svc, const Visrec__V1__GetImagesRequest *req,
			char *why, size_t cap)
{
	if (req->n_item_ids > FD_GET_IMAGES_MAX) {
		snprintf(why, cap, "item_ids holds %zu ids, at most %d a call", req->n_item_ids,
			 FD_GET_IMAGES_MAX);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (req->max_items > FD_GET_IMAGES_MAX) {
		snprintf(why, cap, "max_items %u is over %d", req->max_items, FD_GET_IMAGES_MAX);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (req->n_item_ids && ((req->after && req->after[0]) || req->max_items)) {
		snprintf(why, cap, "give item_ids, or a page (after, max_items), not both");
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (req->after && req->after[0] &&
	    vr_id_check_named("after", req->after, strlen(req->after), why, cap))
		return GRPC_STATUS_INVALID_ARGUMENT;
	for (size_t i = 0; i < req->n_item_ids; i++) {
		char name[32];
		snprintf(name, sizeof name, "item_ids[%zu]", i);
		if (vr_id_check_named(name, req->item_ids[i], strlen(req->item_ids[i]), why, cap))
			return GRPC_STATUS_INVALID_ARGUMENT;
	}
	/* Read-only, so the map decides alone: an item a reshard is moving
	 * away is still readable here until it is deleted. */
	const vr_shardmap *m = svc->shards;
	for (size_t i = 0; m && i < req->n_item_ids; i++) {
		const char *id = req->item_ids[i];
		size_t k = vr_shardmap_owner(m, id, strlen(id));
		if (k != svc->shard_self) {
			char esc[80];
			snprintf(why, cap, "item_ids[%zu] \"%s\" belongs to shard %s, not to this one (%s): "
				 "ask its owner", i, vr_id_escape(esc, sizeof esc, id, strlen(id)),
				 m->names[k], m->names[svc->shard_self]);
			return GRPC_STATUS_FAILED_PRECONDITION;
		}
	}
	return GRPC_STATUS_OK;
}

/* The items of one answer, copied out of the map in one short read
 * transaction (nothing is sent while it is open). */
struct images {
	char (*ids)[FD_MAX_ID + 1];
	size_t *off, *len, n;
	uint8_t *jpeg;
	size_t used;
	uint64_t cap;
};

#define GET_IMAGES_BYTES (8u << 20)

/* Reads the next batch into im: a page of at most want items or
 * GET_IMAGES_BYTES after *after (ids NULL), else the one id ids[0] (so
 * that 64 listed images of the largest size are never held at once). One
 * short read transaction; VR_ENOTFOUND for a listed id not stored. */
static int images_read(fd_service *svc, struct images *im, char *after, const char *id,
		       size_t want)
{
	vr_txn *txn = NULL;
	im->n = im->used = 0;
	int rc = vr_store_read_begin(fd_fstore_store(svc->fs), &txn);
	while (!rc && im->n < (id ? 1 : want) && (!im->n || im->used < GET_IMAGES_BYTES)) {
		fd_item it;
		rc = id ? fd_fstore_item_get(svc->fs, txn, id, &it)
			: fd_fstore_item_next(svc->fs, txn, after, &it);
		if (rc || (rc = vr_grow((void **)&im->jpeg, 1, im->used + it.image_len, &im->cap)))
			break;
		memcpy(im->ids[im->n], it.item_id, it.id_len);
		im->ids[im->n][it.id_len] = 0;
		memcpy(after, it.item_id, it.id_len);
		after[it.id_len] = 0;
		memcpy(im->jpeg + im->used, it.image, it.image_len);
		im->off[im->n] = im->used;
		im->len[im->n] = it.image_len;
		im->used += it.image_len;
		im->n++;
	}
	vr_store_read_end(txn);
	return rc == VR_ENOTFOUND && !id ? 0 : rc;
}

int fd_get_images(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	const Visrec__V1__GetImagesRequest *req = (const void *)vr_call_request(call);
	struct images im = { 0 };
	char why[512], after[FD_MAX_ID + 1];
	int code = fd_check_shard_map(svc, call);
	if (code)
		return code;
	if ((code = fd_get_images_check(svc, req, why, sizeof why)))
		return vr_call_error(call, code, "%s", why);
	size_t want = req->n_item_ids ? 1 : req->max_items ? req->max_items : FD_GET_IMAGES_MAX;
	if (!(im.ids = malloc(want * sizeof *im.ids)) || !(im.off = malloc(want * sizeof *im.off)) ||
	    !(im.len = malloc(want * sizeof *im.len))) {
		code = VR_ENOMEM;
		goto leave;
	}
	snprintf(after, sizeof after, "%s", req->after ? req->after : "");
	size_t limit = vr_call_max_message(call);
	for (size_t b = 0; b < (req->n_item_ids ? req->n_item_ids : 1); b++) {
		const char *id = req->n_item_ids ? req->item_ids[b] : NULL;
		int rc = images_read(svc, &im, after, id, want);
		if (rc == VR_ENOTFOUND) {
			code = vr_call_error(call, GRPC_STATUS_NOT_FOUND, "item_ids[%zu] \"%s\" is not "
					     "stored on this shard", b, vr_id_escape(why, 80, id, strlen(id)));
			goto leave;
		}
		if (rc) {
			code = rc;
			goto leave;
		}
		for (size_t k = 0; k < im.n; k++) {
			Visrec__V1__ItemImage msg = VISREC__V1__ITEM_IMAGE__INIT;
			if (im.len[k] + FD_MAX_ID + 16 > limit) {
				code = vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
						     "item \"%s\"'s image of %zu bytes is over the message "
						     "limit of %zu bytes: raise --max-message-bytes", im.ids[k],
						     im.len[k], limit);
				goto leave;
			}
			msg.item_id = im.ids[k];
			msg.image = (ProtobufCBinaryData){ im.len[k], im.jpeg + im.off[k] };
			if ((code = vr_call_send(call, &msg.base)))
				goto leave;
		}
	}
	code = GRPC_STATUS_OK;
leave:
	free(im.ids);
	free(im.off);
	free(im.len);
	free(im.jpeg);
	return code;
}
