/* model_copy: GetModel and --models-from (the model in model_copy.h). */
#include "model_copy.h"

#include "err.h"
#include "fault.h"
#include "log.h"
#include "models.h"
#include "service.h"
#include "shardmap.h"
#include "visrec/v1/featured.pb-c.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1u << 20)
/* The whole copy of one version; weights of the largest nets are a few
 * hundred MiB. */
#define FETCH_MS 600000
#define INFO_MS 30000

/* ---- sender -------------------------------------------------------------- */

int fd_get_model(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	const Visrec__V1__GetModelRequest *req = (const void *)vr_call_request(call);
	Visrec__V1__ModelChunk msg = VISREC__V1__MODEL_CHUNK__INIT;
	fd_model_info m, active, live[FD_MAX_LIVE];
	char path[4096];
	struct stat sb;
	uint8_t *buf = NULL;
	char *row = NULL;
	int fd = -1, code;
	uint64_t h = VR_FNV_BASIS, sent = 0;
	int rc = fd_fstore_model_get(svc->fs, req->model_version, &m);
	if (rc == VR_ENOTFOUND)
		return vr_call_error(call, GRPC_STATUS_NOT_FOUND, "model version %u is not held by "
				     "this featured (see Info.models)", req->model_version);
	if (rc)
		return rc;
	snprintf(path, sizeof path, "%s/%s", svc->data_dir, m.weights);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb)) {
		code = vr_call_error(call, GRPC_STATUS_INTERNAL, "model version %u: cannot read %s: %s",
				     m.version, m.weights, strerror(errno));
		goto leave;
	}
	code = VR_ENOMEM;
	if (!(buf = malloc(CHUNK)) || !(row = fd_model_encode(&m)))
		goto leave;
	fd_executor_model(svc->ex, &active);
	int nlive = fd_executor_live(svc->ex, live);
	msg.model_version = m.version;
	msg.row = row;
	msg.size = (uint64_t)sb.st_size;
	msg.active = active.version == m.version;
	for (int i = 0; i < nlive; i++)
		msg.live |= live[i].version == m.version;
	for (;;) {
		ssize_t n = read(fd, buf, CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			code = vr_call_error(call, GRPC_STATUS_INTERNAL, "model version %u: reading %s: "
					     "%s", m.version, m.weights, strerror(errno));
			goto leave;
		}
		h = vr_fnv1a64(h, buf, (size_t)n);
		sent += (uint64_t)n;
		msg.data = (ProtobufCBinaryData){ (size_t)n, buf };
		msg.last = n == 0;
		msg.checksum = msg.last ? vr_mix64(h) : 0;
		if ((code = vr_call_send(call, &msg.base)))
			goto leave;
		if (msg.last)
			break;
		msg.row = (char *)"";
		msg.size = 0;
		msg.active = msg.live = 0;
	}
	code = sent == (uint64_t)sb.st_size ? GRPC_STATUS_OK :
		vr_call_error(call, GRPC_STATUS_INTERNAL, "model version %u: %s changed while sent",
			      m.version, m.weights);
leave:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(row);
	return code;
}

/* ---- receiver ------------------------------------------------------------ */

struct fetch {
	fd_fstore *fs;
	const char *data_dir, *addr;
	vr_channel *ch;
	char *err;
	size_t errlen;
	const char *label;     /* how messages name the copy: "--models-from" */
	int never_active;      /* AdoptModel: record the row inactive whatever the sender's */
	vr_call *parent;       /* AdoptModel's call: its cancel ends GetModel */
	int copied;            /* fetch_version wrote the file (not held already) */
	int rpc_code;          /* the sender's status when a call to it failed */
};

static int rpc_failed(struct fetch *f, const char *what, int rc, const vr_status *st)
{
	if (rc == VR_ERPC)
		f->rpc_code = st->code;
	if (rc == VR_ERPC)
		snprintf(f->err, f->errlen, "%s %s: %s failed: %s: %s", f->label, f->addr, what,
			 vr_status_name(st->code), st->message);
	else
		snprintf(f->err, f->errlen, "%s %s: %s: %s", f->label, f->addr, what, vr_strerror(rc));
	return rc == VR_ERPC ? rc : rc ? rc : VR_ECORRUPT;
}

/* Writes the chunks of one version into path (fd), checking them. */
static int receive_file(struct fetch *f, vr_ccall *cc, int fd, uint32_t version,
			fd_model_info *row, int *active, int *live)
{
	uint64_t h = VR_FNV_BASIS, got = 0, size = 0;
	int first = 1;
	for (;;) {
		Visrec__V1__ModelChunk *c = NULL;
		int rc = vr_ccall_recv(cc, (ProtobufCMessage **)&c);
		if (rc == VR_EEOF) {
			snprintf(f->err, f->errlen, "%s %s: model version %u ended before its "
				 "last chunk", f->label, f->addr, version);
			return VR_ECORRUPT;
		}
		if (rc)
			return rc;
		rc = 0;
		if (c->model_version != version)
			rc = VR_ECORRUPT;
		if (!rc && first) {
			char want[64];
			snprintf(want, sizeof want, "models/v%u.safetensors", version);
			if (fd_model_decode(c->row, strlen(c->row), row) || row->version != version ||
			    strcmp(row->weights, want))
				rc = VR_ECORRUPT;
			size = c->size;
			*active = c->active;
			*live = c->live;
			first = 0;
		}
		for (size_t off = 0; !rc && off < c->data.len;) {
			ssize_t n = write(fd, c->data.data + off, c->data.len - off);
			if (n < 0 && errno != EINTR)
				rc = -errno;
			if (n > 0)
				off += (size_t)n;
		}
		h = vr_fnv1a64(h, c->data.data, c->data.len);
		got += c->data.len;
		int last = c->last;
		uint64_t sum = c->checksum;
		protobuf_c_message_free_unpacked(&c->base, NULL);
		if (!rc && last && (got != size || sum != vr_mix64(h)))
			rc = VR_ECORRUPT;
		if (rc) {
			snprintf(f->err, f->errlen, "%s %s: model version %u: %s", f->label, f->addr,
				 version, rc == VR_ECORRUPT ? "its row, size or checksum disagrees "
				 "with what came" : vr_strerror(rc));
			return rc;
		}
		if (last)
			return fsync(fd) ? -errno : 0;
	}
}

/* Copies one version (skipping one held with the same row). */
static int fetch_version(struct fetch *f, uint32_t version, int *is_live)
{
	Visrec__V1__GetModelRequest req = VISREC__V1__GET_MODEL_REQUEST__INIT;
	fd_model_info row, here;
	char path[4096], tmp[4200];
	vr_ccall *cc = NULL;
	vr_status st = { 0 };
	int active = 0, fd = -1;
	req.model_version = version;
	snprintf(path, sizeof path, "%s/models", f->data_dir);
	if (mkdir(path, 0755) && errno != EEXIST) {
		snprintf(f->err, f->errlen, "cannot create %s: %s", path, strerror(errno));
		return -errno;
	}
	snprintf(path, sizeof path, "%s/models/v%u.safetensors", f->data_dir, version);
	snprintf(tmp, sizeof tmp, "%s.part", path);
	int rc = vr_ccall_start(&cc, f->ch, "/visrec.v1.Featured/GetModel",
				&visrec__v1__model_chunk__descriptor, FETCH_MS, f->parent);
	if (!rc && !(rc = vr_ccall_send(cc, &req.base)))
		rc = vr_ccall_close_send(cc);
	if (!rc && (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
		rc = -errno;
		snprintf(f->err, f->errlen, "cannot create %s: %s", tmp, strerror(errno));
	}
	if (!rc)
		rc = receive_file(f, cc, fd, version, &row, &active, is_live);
	if (cc) {
		if (rc)
			vr_ccall_cancel(cc);
		int frc = vr_ccall_finish(cc, &st);
		if (frc && (!rc || rc == VR_ERPC))
			rc = rpc_failed(f, "GetModel", frc, &st);
	}
	if (fd >= 0 && close(fd) && !rc)
		rc = -errno;
	if (!rc && fd_fstore_model_get(f->fs, version, &here) == 0) {
		char *a = fd_model_encode(&row), *b = fd_model_encode(&here);
		rc = !a || !b ? VR_ENOMEM : strcmp(a, b) ? VR_EEXIST : 0;
		free(a);
		free(b);
		unlink(tmp);
		if (rc == VR_EEXIST)
			snprintf(f->err, f->errlen, "model version %u here differs from %s's: %s",
				 version, f->addr, f->never_active ? "this shard made or copied "
				 "another version under that number (its models diverged: start it "
				 "with an empty data directory and --models-from)" : "start with an "
				 "empty data directory to copy its models");
		return rc;
	}
	if (!rc && rename(tmp, path)) {
		rc = -errno;
		snprintf(f->err, f->errlen, "cannot rename %s: %s", tmp, strerror(errno));
	}
	if (!rc && (rc = fd_fstore_model_add(f->fs, &row, active && !f->never_active)))
		snprintf(f->err, f->errlen, "cannot record model version %u: %s", version,
			 vr_strerror(rc));
	if (rc)
		unlink(tmp);
	f->copied = !rc;
	if (!rc)
		VR_INFO("model version %u (%s, %s, %u dims%s) copied from %s", version, row.arch,
			row.layer, row.dims, active ? ", active" : "", f->addr);
	return rc;
}

int fd_models_fetch(fd_fstore *fs, const char *data_dir, const char *addr, const char *token,
		    char *err, size_t errlen)
{
	Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	Visrec__V1__FeaturedInfoResponse *info = NULL;
	vr_channel_opts o = { .token = token, .max_message_bytes = 4 * CHUNK };
	struct fetch f = { fs, data_dir, addr, NULL, err, errlen, "--models-from", 0, NULL, 0, 0 };
	uint32_t live[FD_MAX_LIVE];
	size_t nlive = 0;
	vr_status st = { 0 };
	int rc = vr_channel_create(&f.ch, addr, &o);
	if (rc) {
		snprintf(err, errlen, "--models-from %s: %s", addr, vr_strerror(rc));
		return rc;
	}
	rc = vr_client_unary(f.ch, "/visrec.v1.Featured/Info", &req.base,
			     &visrec__v1__featured_info_response__descriptor,
			     (ProtobufCMessage **)&info, INFO_MS, NULL, &st);
	if (rc) {
		rc = rpc_failed(&f, "Info", rc, &st);
		goto leave;
	}
	if (!info->active_model || info->n_models >= 256) {
		snprintf(err, errlen, "--models-from %s: it reports %s", addr, info->active_model ?
			 "256 or more model versions (more than Info lists)" : "no active model");
		rc = VR_ESTATE;
		goto leave;
	}
	/* The active version first: then the data directory can start. */
	uint32_t first = info->active_model->version;
	int is_live = 0;
	if ((rc = fetch_version(&f, first, &is_live)))
		goto leave;
	for (size_t i = 0; i < info->n_models; i++) {
		uint32_t v = info->models[i]->version;
		if (v == first)
			continue;
		if ((rc = fetch_version(&f, v, &is_live)))
			goto leave;
		if (is_live && nlive < FD_MAX_LIVE)
			live[nlive++] = v;
	}
	if (nlive && (rc = fd_fstore_live_set(fs, live, nlive)))
		snprintf(err, errlen, "cannot record the live versions: %s", vr_strerror(rc));
leave:
	if (info)
		protobuf_c_message_free_unpacked(&info->base, NULL);
	vr_channel_destroy(f.ch);
	return rc;
}

/* ---- AdoptModel ---------------------------------------------------------- */

static atomic_int g_adopting;

int fd_adopt_check(const fd_service *svc, const Visrec__V1__AdoptModelRequest *req, char *why,
		   size_t cap)
{
	if (!svc->shards) {
		snprintf(why, cap, "AdoptModel copies a version from another shard, and this featured "
			 "runs without --shards");
		return GRPC_STATUS_FAILED_PRECONDITION;
	}
	if (!req->model_version) {
		snprintf(why, cap, "model_version must be > 0");
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	int k = req->from ? vr_shardmap_find(svc->shards, req->from) : -1;
	if (k < 0 || (size_t)k == svc->shard_self) {
		snprintf(why, cap, "from \"%.255s\" must be another entry of this featured's shard list "
			 "(%.400s), written as there; this one is %s", req->from ? req->from : "",
			 svc->shards->list, svc->shards->names[svc->shard_self]);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	return GRPC_STATUS_OK;
}

struct adopt {
	fd_service *svc;
	fd_model_info info;
	nn_net *net;
	char err[512];
};

static int adopt_open_task(fd_executor *ex, void *arg)
{
	struct adopt *a = arg;
	return fd_model_open(fd_executor_backend(ex), a->svc->data_dir, &a->info,
			     fd_executor_batch(ex), &a->net, a->err, sizeof a->err);
}

static int adopt_free_task(fd_executor *ex, void *arg)
{
	(void)ex;
	nn_net_destroy(arg);
	return 0;
}

static int adopt_stop(void *call)
{
	return vr_call_stopping(call);
}

/* The versions `from` holds that this shard lacks, but for want: those an
 * earlier adoption that failed here (this shard was down) left out. They
 * are copied as they are, neither active nor live, so that every shard
 * keeps the same versions (resharding refuses shards that differ). */
static int copy_missing(struct fetch *f, uint32_t want)
{
	Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	Visrec__V1__FeaturedInfoResponse *info = NULL;
	vr_status st = { 0 };
	fd_model_info here;
	int is_live = 0, rc = vr_client_unary(f->ch, "/visrec.v1.Featured/Info", &req.base,
					      &visrec__v1__featured_info_response__descriptor,
					      (ProtobufCMessage **)&info, INFO_MS, f->parent, &st);
	if (rc)
		return rpc_failed(f, "Info", rc, &st);
	for (size_t i = 0; !rc && i < info->n_models; i++) {
		uint32_t v = info->models[i]->version;
		if (v != want && fd_fstore_model_get(f->fs, v, &here) == VR_ENOTFOUND)
			rc = fetch_version(f, v, &is_live);
	}
	protobuf_c_message_free_unpacked(&info->base, NULL);
	f->copied = 0;
	return rc;
}

/* Copies the version (fetch_version: nothing overwritten, the same row not
 * copied twice) after any other this shard lacks (copy_missing), then re-embeds this shard's items with it into a live
 * version, unless it is live or active here already (a retried fan-out). */
static int adopt(vr_call *call, fd_service *svc, const Visrec__V1__AdoptModelRequest *req,
		 Visrec__V1__AdoptModelResponse *resp, struct adopt *a)
{
	vr_channel_opts o = { .token = svc->peer_token, .max_message_bytes = 4 * CHUNK };
	struct fetch f = { svc->fs, svc->data_dir, req->from, NULL, a->err, sizeof a->err,
			   "AdoptModel from", 1, call, 0, 0 };
	uint32_t active, live[FD_MAX_LIVE];
	uint64_t embedded = 0;
	int is_live = 0, rc = vr_channel_create(&f.ch, req->from, &o);
	if (rc)
		return vr_call_error(call, GRPC_STATUS_INTERNAL, "AdoptModel: a channel to %s: %s",
				     req->from, vr_strerror(rc));
	if (!(rc = copy_missing(&f, req->model_version)))
		rc = fetch_version(&f, req->model_version, &is_live);
	vr_channel_destroy(f.ch);
	if (rc == VR_ERPC)
		return vr_call_error(call, f.rpc_code == GRPC_STATUS_NOT_FOUND ? GRPC_STATUS_NOT_FOUND :
				     f.rpc_code == GRPC_STATUS_CANCELLED ? GRPC_STATUS_CANCELLED :
				     GRPC_STATUS_UNAVAILABLE, "%s", a->err);
	if (rc)
		return vr_call_error(call, rc == VR_EEXIST ? GRPC_STATUS_FAILED_PRECONDITION :
				     rc == VR_ECORRUPT ? GRPC_STATUS_DATA_LOSS : vr_status_from_rc(rc),
				     "AdoptModel: %s", a->err);
	resp->copied = f.copied;
	resp->model_version = req->model_version;
	int nlive = fd_executor_versions(svc->ex, &active, live);
	for (int i = 0; i < nlive; i++)
		if (live[i] == req->model_version)
			return GRPC_STATUS_OK;
	if (active == req->model_version)
		return GRPC_STATUS_OK;
	if ((rc = fd_fstore_model_get(svc->fs, req->model_version, &a->info)))
		return vr_call_error(call, vr_status_from_rc(rc), "AdoptModel: reading the row of "
				     "version %u: %s", req->model_version, vr_strerror(rc));
	if ((rc = fd_executor_call(svc->ex, adopt_open_task, a)))
		return vr_call_error(call, vr_status_from_rc(rc), "AdoptModel: opening version %u: %s",
				     req->model_version, a->err);
	VR_INFO("AdoptModel: re-embedding this shard's items with version %u (from %s)",
		req->model_version, req->from);
	rc = fd_executor_reembed(svc->ex, a->net, &a->info, FD_REEMBED_LIVE, adopt_stop, call,
				 &embedded, a->err, sizeof a->err);
	if (rc) {
		fd_executor_call(svc->ex, adopt_free_task, a->net);
		a->net = NULL;
		return vr_call_error(call, rc == VR_ECANCELLED ? GRPC_STATUS_CANCELLED :
				     vr_status_from_rc(rc), "AdoptModel: re-embedding into version %u "
				     "after %llu items: %s; the version stays not live here", req->model_version,
				     (unsigned long long)embedded, a->err);
	}
	a->net = NULL; /* the executor's now */
	resp->items_embedded = embedded;
	VR_INFO("AdoptModel: version %u (from %s) is live here: %llu items embedded%s",
		req->model_version, req->from, (unsigned long long)embedded,
		f.copied ? ", its weights copied" : "");
	return GRPC_STATUS_OK;
}

int fd_adopt_model(vr_call *call, void *ctx)
{
	fd_service *svc = ctx;
	const Visrec__V1__AdoptModelRequest *req = (const void *)vr_call_request(call);
	Visrec__V1__AdoptModelResponse resp = VISREC__V1__ADOPT_MODEL_RESPONSE__INIT;
	struct adopt a = { .svc = svc };
	char why[1024];
	int code = fd_check_shard_map(svc, call), expected = 0;
	if (code)
		return code;
	if ((code = fd_adopt_check(svc, req, why, sizeof why)))
		return vr_call_error(call, code, "%s", why);
	if (!atomic_compare_exchange_strong(&g_adopting, &expected, 1))
		return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
				     "another AdoptModel is running on this featured");
	vr_fault("adopt-model");
	code = adopt(call, svc, req, &resp, &a);
	atomic_store(&g_adopting, 0);
	return code ? code : vr_call_send(call, &resp.base);
}
