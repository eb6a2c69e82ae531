/* rpc: the parts the server and the client share: process start and stop,
 * gRPC's log routed into ours, status codes, and moving protobuf-c messages
 * in and out of core's byte buffers. */
#include "rpc_int.h"

#include "deadline.h"
#include "err.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* gRPC writes multi-line messages of its own format to stderr; ours are
 * one line each, so its lines come through our logger, newlines folded. */
static void log_from_grpc(gpr_log_func_args *a)
{
	enum vr_log_level level = a->severity == GPR_LOG_SEVERITY_ERROR ? VR_LOG_WARN : VR_LOG_DEBUG;
	if (!vr_log_enabled(level))
		return;
	char line[1024];
	snprintf(line, sizeof line, "%s", a->message ? a->message : "");
	for (char *p = line; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	const char *file = a->file ? strrchr(a->file, '/') : NULL;
	vr_log(level, "grpc %s:%d: %s", file ? file + 1 : (a->file ? a->file : "?"), a->line, line);
}

int vr_rpc_init(void)
{
	gpr_set_log_function(log_from_grpc);
	grpc_init();
	return 0;
}

void vr_rpc_shutdown(void)
{
	grpc_shutdown_blocking();
}

/* grpc_shutdown_blocking() of core 1.51 joins core's executor threads, and
 * one of them can be inside a poll with a timer of up to ~10 s (seen at
 * featured's exit after large server streams, about one run in six). The
 * daemons promise to exit within 5 s of SIGTERM, so the blocking shutdown
 * runs on a helper thread and the caller waits for it only so long. */
struct shutdown_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
};

/* Static: the helper thread may outlive the caller. */
static struct shutdown_wait shutdown_wait = { .mu = PTHREAD_MUTEX_INITIALIZER };
static pthread_once_t shutdown_wait_once = PTHREAD_ONCE_INIT;

static void shutdown_wait_init(void)
{
	vr_cond_init(&shutdown_wait.cv);
}

static void *shutdown_main(void *arg)
{
	struct shutdown_wait *w = arg;
	grpc_shutdown_blocking();
	pthread_mutex_lock(&w->mu);
	w->done = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int vr_rpc_shutdown_within(int limit_ms)
{
	struct shutdown_wait *w = &shutdown_wait;
	pthread_t th;
	pthread_once(&shutdown_wait_once, shutdown_wait_init);
	if (pthread_create(&th, NULL, shutdown_main, w)) {
		grpc_shutdown_blocking();
		return 0;
	}
	int64_t end = vr_deadline_ms(limit_ms);
	pthread_mutex_lock(&w->mu);
	while (!w->done && !vr_cond_wait_until(&w->cv, &w->mu, end))
		;
	int done = w->done;
	pthread_mutex_unlock(&w->mu);
	if (!done) {
		pthread_detach(th);
		return VR_ETIMEDOUT;
	}
	pthread_join(th, NULL);
	return 0;
}

int vr_status_from_rc(int rc)
{
	if (rc >= 0 && rc <= GRPC_STATUS_UNAUTHENTICATED)
		return rc;
	switch (rc) {
	case VR_EINVAL: return GRPC_STATUS_INVALID_ARGUMENT;
	case VR_ENOTFOUND: return GRPC_STATUS_NOT_FOUND;
	case VR_EEXIST: return GRPC_STATUS_ALREADY_EXISTS;
	case VR_EFULL:
	case VR_ETOOBIG:
	case VR_ENOSPACE:
	case VR_EMAPFULL: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case VR_ECANCELLED: return GRPC_STATUS_CANCELLED;
	case VR_ETIMEDOUT: return GRPC_STATUS_DEADLINE_EXCEEDED;
	case VR_ESHUTDOWN:
	case VR_ERPC: return GRPC_STATUS_UNAVAILABLE;
	case VR_EUNSUPPORTED: return GRPC_STATUS_UNIMPLEMENTED;
	case VR_ESTATE: return GRPC_STATUS_FAILED_PRECONDITION;
	}
	return GRPC_STATUS_INTERNAL;
}

const char *vr_status_name(int code)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
		"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	};
	if (code >= 0 && code < (int)(sizeof names / sizeof names[0]))
		return names[code];
	return "UNKNOWN_CODE";
}

int vr__pack(const ProtobufCMessage *m, size_t max, grpc_byte_buffer **out)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	if (n > max)
		return VR_ETOOBIG;
	grpc_slice s = grpc_slice_malloc(n);
	protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
	*out = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return *out ? 0 : VR_ENOMEM;
}

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

/* Message fields nest no deeper than this in our protos; deeper bytes are
 * left unsearched rather than recursed into without end. */
#define NUL_DEPTH 16
/* Repeated fields are numbered ("items[3]") among a message's first this
 * many fields; ours have at most 21. */
#define NUL_FIELDS 64

/* Searches the wire bytes [p, end) of a d message for a string field that
 * holds a NUL byte, naming it in path (cap bytes, used of them taken by the
 * enclosing fields). Returns 1 with *off set, else 0. */
static int find_nul(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
		    char *path, size_t used, size_t cap, int depth, size_t *off)
{
	unsigned seen[NUL_FIELDS] = { 0 };
	while (p < end) {
		uint64_t key, n;
		if (read_varint(&p, end, &key))
			return 0;
		switch (key & 7) {
		case 0:
			if (read_varint(&p, end, &n))
				return 0;
			continue;
		case 1:
			if (end - p < 8)
				return 0;
			p += 8;
			continue;
		case 5:
			if (end - p < 4)
				return 0;
			p += 4;
			continue;
		case 2:
			break;
		default:
			return 0;
		}
		if (read_varint(&p, end, &n) || n > (uint64_t)(end - p))
			return 0;
		const uint8_t *v = p;
		p += n;
		const ProtobufCFieldDescriptor *f = key >> 3 <= UINT32_MAX ?
			protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3)) : NULL;
		if (!f || (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE))
			continue;
		size_t fi = (size_t)(f - d->fields);
		int w;
		if (f->label == PROTOBUF_C_LABEL_REPEATED && fi < NUL_FIELDS)
			w = snprintf(path + used, cap - used, "%s%s[%u]", used ? "." : "", f->name, seen[fi]++);
		else
			w = snprintf(path + used, cap - used, "%s%s", used ? "." : "", f->name);
		size_t at = w < 0 ? used : used + (size_t)w < cap ? used + (size_t)w : cap - 1;
		if (f->type == PROTOBUF_C_TYPE_STRING) {
			const uint8_t *z = memchr(v, 0, (size_t)n);
			if (z) {
				*off = (size_t)(z - v);
				return 1;
			}
		} else if (depth < NUL_DEPTH &&
			   find_nul(f->descriptor, v, v + n, path, at, cap, depth + 1, off)) {
			return 1;
		}
		path[used] = 0;
	}
	return 0;
}

/* Unpacks s as a d message; with why, reports a string with a NUL byte. */
static int unpack_slice(grpc_slice s, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out,
			char *why, size_t cap)
{
	const uint8_t *p = GRPC_SLICE_START_PTR(s);
	size_t len = GRPC_SLICE_LENGTH(s), off;
	if (!(*out = protobuf_c_message_unpack(d, NULL, len, p)))
		return VR_EINVAL;
	if (why && cap) {
		char path[200] = "";
		why[0] = 0;
		if (find_nul(d, p, p + len, path, 0, sizeof path, 0, &off))
			snprintf(why, cap, "%s contains a NUL byte at offset %zu", path, off);
	}
	return 0;
}

int vr__unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d,
	       ProtobufCMessage **out, char *why, size_t cap)
{
	/* A message that arrived in one slice unpacks in place; others are
	 * joined (and decompressed) by the reader first. */
	if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
	    bb->data.raw.slice_buffer.count == 1)
		return unpack_slice(bb->data.raw.slice_buffer.slices[0], d, out, why, cap);
	grpc_byte_buffer_reader r;
	*out = NULL;
	if (!grpc_byte_buffer_reader_init(&r, bb))
		return VR_EINVAL;
	grpc_slice s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	int rc = unpack_slice(s, d, out, why, cap);
	grpc_slice_unref(s);
	return rc;
}

gpr_timespec vr__deadline(int64_t ms)
{
	if (ms <= 0)
		return gpr_inf_future(GPR_CLOCK_MONOTONIC);
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

int vr__read_file(const char *path, char **out)
{
	int rc = 0;
	char *buf = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat sb;
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		goto leave;
	}
	size_t n = (size_t)sb.st_size, got = 0;
	buf = malloc(n + 1);
	if (!buf) {
		rc = VR_ENOMEM;
		goto leave;
	}
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = r < 0 ? -errno : VR_EIO;
			goto leave;
		}
		got += (size_t)r;
	}
	buf[n] = 0;
	*out = buf;
	buf = NULL;
leave:
	free(buf);
	close(fd);
	return rc;
}

void vr__message_args(grpc_arg storage[2], size_t max)
{
	int lim = max > (size_t)0x7fffffff ? 0x7fffffff : (int)max;
	storage[0].type = GRPC_ARG_INTEGER;
	storage[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	storage[0].value.integer = lim;
	storage[1].type = GRPC_ARG_INTEGER;
	storage[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
	storage[1].value.integer = lim;
}
