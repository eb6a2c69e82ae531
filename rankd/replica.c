/* replica: rankd read replicas (DESIGN.md section 10). One rankd is the
 * writer (imports interactions, trains); any number of replicas
 * (rankd --writer ADDR) serve Recommend, RecommendBatch, Score, Evaluate
 * and Audience from copies of its state:
 *   - interactions: the writer's log (interactions.h), streamed by
 *     InteractionFeed from the replica's own last sequence and replayed in
 *     order, so ids get the writer's indices and live exclusions hold
 *     within the feed's lag;
 *   - models: each snapshot the writer serves (snapshot.h's export),
 *     streamed by Snapshot in CRC-32-checked chunks that the replica stages
 *     in LMDB, so a restart resumes after the last chunk, then imported
 *     and swapped in as a restart would load it.
 * Writes (AddInteractions, Train) on a replica are FAILED_PRECONDITION
 * naming the writer.
 *
 * DESIGN (threads)
 * Writer: each InteractionFeed is a follower stream on a thread of the
 * server's followers' pool. It sends the log after the asked sequence,
 * then sleeps on svc->feed_cv until feed_gen moves (a commit to the log,
 * a model swap) or the call ends (vr_call_wake_on_stop): an idle feed
 * uses no CPU. Snapshot is an admin stream that exports once and sends.
 * Replica: one thread owns the feed call and the snapshot downloads. It
 * applies each record (rk_service_add under ix_lock exclusive) and, when
 * the writer's model version differs from the served one, leaves the
 * feed, downloads that snapshot, and swaps it in once its interactions
 * know every item the snapshot holds. A broken stream is retried after a
 * back-off (100 ms doubling to 5 s) spent in a timed wait that stop
 * interrupts. Info reads the lag fields under rep->mu. */
#include "service.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "deadline.h"
#include "err.h"
#include "fault.h"
#include "log.h"

#define FEED_BATCH_BYTES (4u << 20) /* log bytes read per transaction */
#define CHUNK_BYTES (1u << 20)      /* Snapshot's default chunk */
#define CHUNK_MIN 4096
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define NEED_SNAPSHOT 1 /* on_message: leave the feed to download a snapshot */

static uint64_t served_version(rk_service *svc)
{
	rk_served *s = rk_serving_get(&svc->serving);
	uint64_t v = s ? s->info.version : 0;
	rk_served_unref(s);
	return v;
}

int rk_refuse_write(rk_service *svc, vr_call *call)
{
	if (!svc->writer_addr)
		return 0;
	return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
			     "this rankd is a read replica of the writer at %s; send %s to the writer",
			     svc->writer_addr, strrchr(vr_call_method(call), '/') + 1);
}

void rk_feed_notify(rk_service *svc)
{
	pthread_mutex_lock(&svc->feed_mu);
	svc->feed_gen++;
	pthread_cond_broadcast(&svc->feed_cv);
	pthread_mutex_unlock(&svc->feed_mu);
}

static void feed_wake(void *arg)
{
	rk_feed_notify(arg);
}

/* ---- the writer's side ------------------------------------------------------ */

struct feed_send {
	vr_call *call;
	uint64_t writer_seq, version, sent;
};

static int send_record(void *ctx, uint64_t seq, const void *rec, size_t len)
{
	struct feed_send *f = ctx;
	rk_log_record r;
	Visrec__V1__InteractionFeedMessage m = VISREC__V1__INTERACTION_FEED_MESSAGE__INIT;
	m.seq = seq;
	m.record.data = (uint8_t *)rec;
	m.record.len = len;
	m.writer_seq = f->writer_seq > seq ? f->writer_seq : seq;
	m.model_version = f->version;
	if (!rk_log_decode(rec, len, &r)) {
		m.commit_unix_ms = r.commit_unix_ms;
		free(r.rows);
	}
	int rc = vr_call_send(f->call, &m.base);
	if (!rc)
		f->sent = seq;
	return rc;
}

int rk_handle_interaction_feed(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	const Visrec__V1__InteractionFeedRequest *req = (const void *)vr_call_request(call);
	int code = rk_refuse_write(svc, call);
	if (code)
		return code;
	pthread_rwlock_rdlock(&svc->ix_lock);
	int partial = rk_interactions_log_partial(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (partial)
		return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
				     "this writer's store holds interactions from before its interaction log "
				     "began, which a replica cannot copy; re-import them into a fresh writer");
	int rc = vr_call_wake_on_stop(call, feed_wake, svc);
	if (rc)
		return rc;
	struct feed_send f = { .call = call, .sent = req->after_seq };
	uint64_t sent_version = UINT64_MAX;
	for (;;) {
		pthread_mutex_lock(&svc->feed_mu);
		uint64_t gen = svc->feed_gen;
		pthread_mutex_unlock(&svc->feed_mu);
		pthread_rwlock_rdlock(&svc->ix_lock);
		f.writer_seq = rk_interactions_log_seq(svc->ix);
		pthread_rwlock_unlock(&svc->ix_lock);
		f.version = served_version(svc);
		if (f.sent > f.writer_seq)
			return vr_call_error(call, GRPC_STATUS_OUT_OF_RANGE,
					     "after_seq %" PRIu64 " is beyond this writer's log (%" PRIu64
					     "): the replica's data directory belongs to another writer; "
					     "start the replica on an empty one", f.sent, f.writer_seq);
		if (f.version != sent_version) {
			Visrec__V1__InteractionFeedMessage m = VISREC__V1__INTERACTION_FEED_MESSAGE__INIT;
			m.writer_seq = f.writer_seq;
			m.model_version = f.version;
			if ((rc = vr_call_send(call, &m.base)))
				return rc == VR_ECANCELLED ? GRPC_STATUS_OK : rc;
			sent_version = f.version;
		}
		if (f.sent < f.writer_seq) {
			rc = rk_interactions_log_read(svc->ix, f.sent, FEED_BATCH_BYTES, send_record, &f);
			if (rc == VR_ECANCELLED)
				return GRPC_STATUS_OK;
			if (rc == VR_ETOOBIG)
				return vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
						     "log record %" PRIu64 " is over the message limit; raise "
						     "--max-message-bytes on the writer and its replicas", f.sent + 1);
			if (rc)
				return rc;
			continue;
		}
		pthread_mutex_lock(&svc->feed_mu);
		while (svc->feed_gen == gen && !vr_call_stopping(call))
			pthread_cond_wait(&svc->feed_cv, &svc->feed_mu);
		pthread_mutex_unlock(&svc->feed_mu);
		if (vr_call_stopping(call))
			return GRPC_STATUS_OK;
	}
}

int rk_handle_snapshot(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	const Visrec__V1__SnapshotRequest *req = (const void *)vr_call_request(call);
	int code = rk_refuse_write(svc, call);
	if (code)
		return code;
	if (req->chunk_bytes && (req->chunk_bytes < CHUNK_MIN || req->chunk_bytes > CHUNK_BYTES))
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT,
				     "chunk_bytes %u is out of range: 0 (1 MiB) or %u .. %u", req->chunk_bytes,
				     CHUNK_MIN, CHUNK_BYTES);
	rk_snap_reader *r = NULL;
	int rc = rk_snap_reader_open(&svc->snap, req->version, &r);
	if (rc == VR_ENOTFOUND)
		return vr_call_error(call, GRPC_STATUS_NOT_FOUND,
				     req->version ? "no model snapshot v%" PRIu64 " here (the writer keeps "
				     "only the served one; ask for version 0)" : "no model trained yet%.0" PRIu64,
				     req->version);
	if (rc)
		return vr_call_error(call, vr_status_from_rc(rc), "cannot export the snapshot: %s",
				     vr_strerror(rc));
	size_t len = rk_snap_reader_size(r);
	size_t chunk = req->chunk_bytes ? req->chunk_bytes : CHUNK_BYTES;
	size_t limit = vr_call_max_message(call) - 256;
	if (chunk > limit)
		chunk = limit;
	if (req->offset > len) {
		rk_snap_reader_close(r);
		return vr_call_error(call, GRPC_STATUS_OUT_OF_RANGE,
				     "offset %" PRIu64 " is beyond the snapshot's %zu bytes", req->offset, len);
	}
	/* One chunk in memory at a time, copied from where the store keeps the
	 * export (rk_snap_reader), not the whole export. */
	void *buf = malloc(chunk);
	if (!buf) {
		rk_snap_reader_close(r);
		return vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory for a %zu-byte chunk", chunk);
	}
	Visrec__V1__SnapshotChunk m = VISREC__V1__SNAPSHOT_CHUNK__INIT;
	m.version = rk_snap_reader_version(r);
	m.total_bytes = len;
	m.whole_crc32 = rk_snap_reader_crc(r);
	size_t off = (size_t)req->offset;
	do {
		size_t n = len - off < chunk ? len - off : chunk;
		rk_snap_reader_read(r, off, buf, n);
		m.offset = off;
		m.data.data = buf;
		m.data.len = n;
		m.crc32 = (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), buf, n);
		if ((rc = vr_call_send(call, &m.base)))
			break;
		off += n;
	} while (off < len);
	free(buf);
	rk_snap_reader_close(r);
	return rc == VR_ECANCELLED ? GRPC_STATUS_OK : rc ? rc : GRPC_STATUS_OK;
}

/* ---- the replica's side ------------------------------------------------------ */

struct rk_replica {
	rk_service *svc;
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* under mu */
	int stop, connected;
	vr_ccall *cc;
	uint64_t writer_seq, applied;
	int64_t behind_since_ms, last_contact_ms;
	/* the replica thread's own */
	uint64_t want;          /* the writer's model version, when not served */
	void *pending;          /* a downloaded, checked export of want */
	rk_snap_export_view px;
};

static int stopping(struct rk_replica *r)
{
	pthread_mutex_lock(&r->mu);
	int s = r->stop;
	pthread_mutex_unlock(&r->mu);
	return s;
}

static void set_cc(struct rk_replica *r, vr_ccall *cc)
{
	pthread_mutex_lock(&r->mu);
	r->cc = cc;
	if (cc && r->stop)
		vr_ccall_cancel(cc);
	if (!cc)
		r->connected = 0;
	pthread_mutex_unlock(&r->mu);
}

/* Downloads snapshot version into the stage (resuming what is staged) and
 * keeps it, checked, as r->pending. */
static int fetch_snapshot(struct rk_replica *r, uint64_t version)
{
	rk_service *svc = r->svc;
	uint64_t sv, total, have;
	uint32_t whole;
	vr_ccall *cc = NULL;
	ProtobufCMessage *msg = NULL;
	vr_status st = { 0 };
	int rc = rk_snap_stage_state(&svc->snap, &sv, &total, &whole, &have);
	if (rc)
		return rc;
	if (sv != version)
		have = 0;
	if (have && have == total)
		goto complete;
	Visrec__V1__SnapshotRequest req = VISREC__V1__SNAPSHOT_REQUEST__INIT;
	req.version = version;
	req.offset = have;
	req.chunk_bytes = (uint32_t)svc->snapshot_chunk;
	if (have)
		VR_INFO("resuming model snapshot v%" PRIu64 " from the writer at byte %" PRIu64 " of %" PRIu64,
			version, have, total);
	if ((rc = vr_ccall_start(&cc, svc->writer, "/visrec.v1.Rank/Snapshot",
				 &visrec__v1__snapshot_chunk__descriptor, 0, NULL)))
		return rc;
	set_cc(r, cc);
	if (!(rc = vr_ccall_send(cc, &req.base)) && !(rc = vr_ccall_close_send(cc))) {
		while (!(rc = vr_ccall_recv(cc, &msg))) {
			const Visrec__V1__SnapshotChunk *c = (const void *)msg;
			uint32_t crc = (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), c->data.data, c->data.len);
			if (c->version != version || c->offset != have || crc != c->crc32 ||
			    (have && (c->total_bytes != total || c->whole_crc32 != whole)) ||
			    c->data.len > c->total_bytes - c->offset) {
				VR_WARN("model snapshot v%" PRIu64 " from the writer: chunk at %" PRIu64
					" disagrees with what is staged (CRC, offset or size); starting over",
					version, c->offset);
				rk_snap_stage_clear(&svc->snap);
				rc = VR_ECORRUPT;
				break;
			}
			total = c->total_bytes;
			whole = c->whole_crc32;
			if ((rc = rk_snap_stage_put(&svc->snap, version, total, whole, have, c->data.data,
						    c->data.len)))
				break;
			have += c->data.len;
			vr_fault("replica-chunk");
			protobuf_c_message_free_unpacked(msg, NULL);
			msg = NULL;
		}
	}
	if (msg)
		protobuf_c_message_free_unpacked(msg, NULL);
	if (rc && rc != VR_EEOF && rc != VR_ERPC)
		vr_ccall_cancel(cc);
	set_cc(r, NULL);
	int frc = vr_ccall_finish(cc, &st);
	if (rc == VR_EEOF)
		rc = frc;
	if (rc) {
		if (rc == VR_ERPC)
			VR_WARN("model snapshot v%" PRIu64 " from the writer: %s: %s", version,
				vr_status_name(st.code), st.message);
		return rc;
	}
	if (have != total)
		return VR_ECORRUPT;
complete:
	free(r->pending);
	r->pending = NULL;
	if ((rc = rk_snap_stage_take(&svc->snap, total, &r->pending)))
		return rc;
	if ((uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), r->pending, total) != whole ||
	    rk_snap_export_decode(r->pending, total, &r->px) || r->px.meta.version != version) {
		VR_WARN("model snapshot v%" PRIu64 " from the writer fails its whole CRC or framing; "
			"downloading it again", version);
		free(r->pending);
		r->pending = NULL;
		rk_snap_stage_clear(&svc->snap);
		return VR_ECORRUPT;
	}
	return 0;
}

/* Swaps the pending snapshot in once the interactions know its items. */
static int install_pending(struct rk_replica *r)
{
	rk_service *svc = r->svc;
	char err[512];
	if (!r->pending)
		return 0;
	pthread_rwlock_rdlock(&svc->ix_lock);
	uint32_t items = rk_interactions_items(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (items < r->px.need_items)
		return 0; /* the feed brings them */
	int rc = rk_snap_import(&svc->snap, &r->px);
	if (!rc)
		rc = rk_service_install(svc, r->px.meta.version, r->px.featured_seq, err, sizeof err);
	else
		snprintf(err, sizeof err, "cannot store it: %s", vr_strerror(rc));
	if (rc) {
		VR_ERROR("model snapshot v%" PRIu64 " from the writer: %s", r->px.meta.version, err);
		return rc;
	}
	VR_INFO("serving the writer's model v%" PRIu64, r->px.meta.version);
	free(r->pending);
	r->pending = NULL;
	r->want = 0;
	rk_snap_stage_clear(&svc->snap);
	return 0;
}

/* Applies one feed message. NEED_SNAPSHOT: leave the feed to download. */
static int on_message(struct rk_replica *r, const Visrec__V1__InteractionFeedMessage *m)
{
	rk_service *svc = r->svc;
	int rc = 0;
	if (m->record.len) {
		pthread_rwlock_rdlock(&svc->ix_lock);
		uint64_t applied = rk_interactions_log_seq(svc->ix);
		pthread_rwlock_unlock(&svc->ix_lock);
		if (m->seq <= applied)
			goto seen;
		rk_log_record rec;
		if ((rc = rk_log_decode(m->record.data, m->record.len, &rec))) {
			VR_ERROR("the writer's log record %" PRIu64 " does not decode", m->seq);
			return rc;
		}
		rk_add_stats st;
		uint64_t totals[3];
		rc = rk_service_add(svc, rec.rows, rec.n, m->seq, &rec, &st, totals);
		free(rec.rows);
		if (rc) {
			VR_ERROR("the writer's log record %" PRIu64 " cannot be applied: %s%s", m->seq,
				 vr_strerror(rc), rc == VR_ESTATE ? " (this store is not a copy of the "
				 "writer's: start the replica on an empty data directory)" : "");
			return rc;
		}
	}
seen:;
	pthread_rwlock_rdlock(&svc->ix_lock);
	uint64_t applied = rk_interactions_log_seq(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	pthread_mutex_lock(&r->mu);
	r->connected = 1;
	r->last_contact_ms = vr_now_ms();
	if (m->writer_seq > r->writer_seq)
		r->writer_seq = m->writer_seq;
	r->applied = applied;
	if (r->applied >= r->writer_seq)
		r->behind_since_ms = 0;
	else if (!r->behind_since_ms)
		r->behind_since_ms = r->last_contact_ms;
	pthread_mutex_unlock(&r->mu);
	if (m->model_version && m->model_version != served_version(svc) &&
	    (!r->pending || r->px.meta.version != m->model_version)) {
		r->want = m->model_version;
		return NEED_SNAPSHOT;
	}
	return install_pending(r);
}

static int feed_once(struct rk_replica *r, vr_status *st)
{
	rk_service *svc = r->svc;
	vr_ccall *cc = NULL;
	ProtobufCMessage *msg = NULL;
	Visrec__V1__InteractionFeedRequest req = VISREC__V1__INTERACTION_FEED_REQUEST__INIT;
	st->code = GRPC_STATUS_OK;
	st->message[0] = 0;
	pthread_rwlock_rdlock(&svc->ix_lock);
	req.after_seq = rk_interactions_log_seq(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	int rc = vr_ccall_start(&cc, svc->writer, "/visrec.v1.Rank/InteractionFeed",
				&visrec__v1__interaction_feed_message__descriptor, 0, NULL);
	if (rc)
		return rc;
	set_cc(r, cc);
	if (!(rc = vr_ccall_send(cc, &req.base)) && !(rc = vr_ccall_close_send(cc))) {
		while (!(rc = vr_ccall_recv(cc, &msg))) {
			rc = on_message(r, (const void *)msg);
			protobuf_c_message_free_unpacked(msg, NULL);
			if (rc)
				break;
		}
	}
	if (rc && rc != VR_EEOF && rc != VR_ERPC)
		vr_ccall_cancel(cc);
	set_cc(r, NULL);
	vr_ccall_finish(cc, st);
	return rc == VR_EEOF ? VR_ERPC : rc;
}

static void *replica_main(void *arg)
{
	struct rk_replica *r = arg;
	int backoff = BACKOFF_MIN_MS, warned = 0;
	while (!stopping(r)) {
		vr_status st;
		int rc = feed_once(r, &st);
		if (rc == NEED_SNAPSHOT && !stopping(r)) {
			rc = fetch_snapshot(r, r->want);
			if (!rc)
				rc = install_pending(r);
		}
		if (stopping(r))
			break;
		if (!rc) {
			backoff = BACKOFF_MIN_MS;
			warned = 0;
			continue;
		}
		if (!warned++)
			VR_WARN("the writer's feed at %s broke (%s%s%s); retrying with back-off up to %d ms",
				r->svc->writer_addr, rc == VR_ERPC ? vr_status_name(st.code) : vr_strerror(rc),
				st.message[0] ? ": " : "", st.message, BACKOFF_MAX_MS);
		int64_t until = vr_deadline_ms(backoff);
		pthread_mutex_lock(&r->mu);
		while (!r->stop && !vr_cond_wait_until(&r->cv, &r->mu, until))
			;
		pthread_mutex_unlock(&r->mu);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

int rk_replica_start(rk_service *svc)
{
	struct rk_replica *r = calloc(1, sizeof *r);
	if (!r)
		return VR_ENOMEM;
	r->svc = svc;
	r->last_contact_ms = vr_now_ms();
	pthread_mutex_init(&r->mu, NULL);
	vr_cond_init(&r->cv);
	int e = pthread_create(&r->tid, NULL, replica_main, r);
	if (e) {
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		free(r);
		VR_ERROR("cannot start following the writer: %s", strerror(e));
		return -e;
	}
	svc->replica = r;
	return 0;
}

void rk_replica_stop(rk_service *svc)
{
	struct rk_replica *r = svc->replica;
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = 1;
	if (r->cc)
		vr_ccall_cancel(r->cc);
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->tid, NULL);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	free(r->pending);
	free(r);
	svc->replica = NULL;
}

void rk_replica_info(rk_service *svc, Visrec__V1__RankInfoResponse *resp)
{
	struct rk_replica *r = svc->replica;
	if (!svc->writer_addr || !r)
		return;
	resp->writer = (char *)svc->writer_addr;
	pthread_mutex_lock(&r->mu);
	int64_t now = vr_now_ms();
	resp->writer_connected = r->connected;
	resp->seq_behind = r->writer_seq > resp->interactions_seq ? r->writer_seq - resp->interactions_seq : 0;
	if (!r->connected)
		resp->seconds_behind = r->last_contact_ms ? (double)(now - r->last_contact_ms) / 1000.0 : 0;
	else if (resp->seq_behind && r->behind_since_ms)
		resp->seconds_behind = (double)(now - r->behind_since_ms) / 1000.0;
	pthread_mutex_unlock(&r->mu);
}
