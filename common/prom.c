/* prom: the metrics registry, its text rendering, and the HTTP endpoint
 * (see prom.h).
 *
 * DESIGN
 * Locks. reg_mu guards the family list and each family's series list;
 * both only grow, and a series never moves, so a pointer handed out stays
 * valid and updates take no lock: a counter or gauge is the bits of a
 * double in an atomic word (add is a compare-and-swap loop, which is cheap
 * while few threads hit one series), a histogram's buckets are atomic
 * counts. scrape_mu serialises scrapes and guards the collector list; the
 * collectors run under scrape_mu alone, so they may create series, and
 * vr_prom_collector_remove (which takes scrape_mu) cannot return while its
 * collector runs. Order: scrape_mu, then reg_mu.
 *
 * Histograms keep a count per bucket, not cumulative ones; the renderer
 * sums them, and writes _count as that same sum, so a scrape racing an
 * observation still has its +Inf bucket equal to _count (the _sum may be
 * one observation off).
 *
 * HTTP. libmicrohttpd with its internal polling thread over epoll: the
 * thread sleeps in epoll_wait until a connection comes, so an idle daemon
 * spends nothing on its metrics. We bind the listening socket ourselves to
 * report why a bind fails and which port 0 picked. The request handler
 * only compares the method and the path; the library parses HTTP, and
 * bounds it (connection memory limit, connection count, idle timeout). */
#include "prom.h"

#include "err.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct vr_prom_series {
	struct vr_prom_series *next;
	char *labels;          /* rendered: name="value",... (no braces); "" without labels */
	_Atomic uint64_t bits; /* counter, gauge: the double's bits; histogram: the sum's */
	_Atomic uint64_t bucket[VR_PROM_MAX_BUCKETS + 1]; /* histogram: per bucket, +Inf last */
	const vr_prom_family *f;
};

struct vr_prom_family {
	struct vr_prom_family *next;
	char *name, *help;
	enum vr_prom_type type;
	int nlabels;
	char label[VR_PROM_MAX_LABELS][64];
	int nbuckets;
	double bucket[VR_PROM_MAX_BUCKETS];
	vr_prom_series *series, **tail;
};

struct collector {
	void (*fn)(void *);
	void *arg;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static vr_prom_family *families, **families_tail = &families;
static pthread_mutex_t scrape_mu = PTHREAD_MUTEX_INITIALIZER;
static struct collector *collectors;
static size_t ncollectors, cap_collectors;

const double vr_prom_rpc_buckets[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
				       0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
				       5,      10,      30,     60 };
const int vr_prom_rpc_nbuckets = (int)(sizeof vr_prom_rpc_buckets / sizeof vr_prom_rpc_buckets[0]);

/* ---- the buffer the text is written to ---------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
	int oom;
};

static void buf_need(struct buf *b, size_t more)
{
	if (b->oom || b->len + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = 1;
		return;
	}
	b->p = p;
	b->cap = cap;
}

static void buf_put(struct buf *b, const char *s, size_t n)
{
	buf_need(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof tmp) {
		buf_put(b, tmp, (size_t)n);
		return;
	}
	buf_need(b, (size_t)n);
	if (b->oom)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* A label value or HELP text: backslash and newline escaped, and the
 * double quote too in label values (the format's only escapes). */
static void buf_escaped(struct buf *b, const char *s, int quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			buf_put(b, "\\\\", 2);
		else if (*s == '\n')
			buf_put(b, "\\n", 2);
		else if (*s == '"' && quote)
			buf_put(b, "\\\"", 2);
		else
			buf_put(b, s, 1);
	}
}

/* The shortest text that reads back as v (Go's ParseFloat takes it). */
static void fmt_double(char *out, size_t cap, double v)
{
	if (isnan(v)) {
		snprintf(out, cap, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(out, cap, "%.0f", v);
		return;
	}
	for (int prec = 6; prec <= 17; prec++) {
		snprintf(out, cap, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			return;
	}
}

/* ---- registry ------------------------------------------------------------ */

static double from_bits(uint64_t u)
{
	double d;
	memcpy(&d, &u, sizeof d);
	return d;
}

static uint64_t to_bits(double d)
{
	uint64_t u;
	memcpy(&u, &d, sizeof u);
	return u;
}

static int valid_name(const char *s)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '_' || *s == ':'))
			return 0;
	return 1;
}

vr_prom_family *vr_prom_register(const char *name, const char *help, enum vr_prom_type type,
				 const char *labels, const double *buckets, int nbuckets)
{
	if (!valid_name(name) || !help || (type == VR_PROM_HISTOGRAM &&
					   (!buckets || nbuckets < 1 || nbuckets > VR_PROM_MAX_BUCKETS)))
		return NULL;
	pthread_mutex_lock(&reg_mu);
	vr_prom_family *f;
	for (f = families; f; f = f->next)
		if (!strcmp(f->name, name))
			break;
	if (f) {
		if (f->type != type)
			f = NULL;
		goto leave;
	}
	if (!(f = calloc(1, sizeof *f)))
		goto leave;
	f->type = type;
	f->tail = &f->series;
	const char *p = labels && *labels ? labels : NULL;
	while (p) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		if (f->nlabels == VR_PROM_MAX_LABELS || n == 0 || n >= sizeof f->label[0])
			goto bad;
		memcpy(f->label[f->nlabels], p, n);
		f->label[f->nlabels][n] = 0;
		if (!valid_name(f->label[f->nlabels]) || !strcmp(f->label[f->nlabels], "le"))
			goto bad;
		f->nlabels++;
		p = comma ? comma + 1 : NULL;
	}
	if (type == VR_PROM_HISTOGRAM) {
		for (int i = 0; i < nbuckets; i++)
			if (!isfinite(buckets[i]) || (i && buckets[i] <= buckets[i - 1]))
				goto bad;
		memcpy(f->bucket, buckets, (size_t)nbuckets * sizeof *buckets);
		f->nbuckets = nbuckets;
	}
	f->name = strdup(name);
	f->help = strdup(help);
	if (!f->name || !f->help)
		goto bad;
	*families_tail = f;
	families_tail = &f->next;
	goto leave;
bad:
	if (f) {
		free(f->name);
		free(f->help);
		free(f);
	}
	f = NULL;
leave:
	pthread_mutex_unlock(&reg_mu);
	return f;
}

vr_prom_series *vr_prom_get(vr_prom_family *f, ...)
{
	if (!f)
		return NULL;
	struct buf key = { 0 };
	va_list ap;
	va_start(ap, f);
	for (int i = 0; i < f->nlabels; i++) {
		const char *v = va_arg(ap, const char *);
		buf_printf(&key, "%s%s=\"", i ? "," : "", f->label[i]);
		buf_escaped(&key, v ? v : "", 1);
		buf_put(&key, "\"", 1);
	}
	va_end(ap);
	if (!key.p)
		key.p = strdup("");
	if (key.oom || !key.p) {
		free(key.p);
		return NULL;
	}
	pthread_mutex_lock(&reg_mu);
	vr_prom_series *s;
	for (s = f->series; s; s = s->next)
		if (!strcmp(s->labels, key.p))
			break;
	if (!s && (s = calloc(1, sizeof *s))) {
		s->labels = key.p;
		key.p = NULL;
		s->f = f;
		*f->tail = s;
		f->tail = &s->next;
	}
	pthread_mutex_unlock(&reg_mu);
	free(key.p);
	return s;
}

void vr_prom_add(vr_prom_series *s, double v)
{
	if (!s)
		return;
	uint64_t old = atomic_load_explicit(&s->bits, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&s->bits, &old, to_bits(from_bits(old) + v),
						      memory_order_relaxed, memory_order_relaxed))
		;
}

void vr_prom_set(vr_prom_series *s, double v)
{
	if (s)
		atomic_store_explicit(&s->bits, to_bits(v), memory_order_relaxed);
}

double vr_prom_value(const vr_prom_series *s)
{
	return s ? from_bits(atomic_load_explicit(&((vr_prom_series *)s)->bits, memory_order_relaxed)) : 0;
}

void vr_prom_observe(vr_prom_series *s, double v)
{
	if (!s)
		return;
	const vr_prom_family *f = s->f;
	int i = 0;
	while (i < f->nbuckets && !(v <= f->bucket[i]))
		i++;
	atomic_fetch_add_explicit(&s->bucket[i], 1, memory_order_relaxed);
	vr_prom_add(s, v);
}

int vr_prom_collector(void (*fn)(void *arg), void *arg)
{
	int rc = 0;
	pthread_mutex_lock(&scrape_mu);
	if (ncollectors == cap_collectors) {
		size_t cap = cap_collectors ? 2 * cap_collectors : 8;
		struct collector *c = realloc(collectors, cap * sizeof *c);
		if (!c) {
			rc = VR_ENOMEM;
			goto leave;
		}
		collectors = c;
		cap_collectors = cap;
	}
	collectors[ncollectors++] = (struct collector){ fn, arg };
leave:
	pthread_mutex_unlock(&scrape_mu);
	return rc;
}

void vr_prom_collector_remove(void (*fn)(void *arg), void *arg)
{
	pthread_mutex_lock(&scrape_mu);
	for (size_t i = 0; i < ncollectors; i++) {
		if (collectors[i].fn == fn && collectors[i].arg == arg) {
			memmove(&collectors[i], &collectors[i + 1],
				(ncollectors - i - 1) * sizeof *collectors);
			ncollectors--;
			break;
		}
	}
	pthread_mutex_unlock(&scrape_mu);
}

static void render_series(struct buf *b, const vr_prom_family *f, vr_prom_series *s)
{
	char num[64];
	const char *open = s->labels[0] ? "{" : "", *close = s->labels[0] ? "}" : "";
	if (f->type != VR_PROM_HISTOGRAM) {
		fmt_double(num, sizeof num, vr_prom_value(s));
		buf_printf(b, "%s%s%s%s %s\n", f->name, open, s->labels, close, num);
		return;
	}
	uint64_t cum = 0;
	const char *sep = s->labels[0] ? "," : "";
	for (int i = 0; i <= f->nbuckets; i++) {
		cum += atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
		if (i < f->nbuckets)
			fmt_double(num, sizeof num, f->bucket[i]);
		else
			snprintf(num, sizeof num, "+Inf");
		buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, s->labels, sep, num,
			   (unsigned long long)cum);
	}
	fmt_double(num, sizeof num, vr_prom_value(s));
	buf_printf(b, "%s_sum%s%s%s %s\n", f->name, open, s->labels, close, num);
	buf_printf(b, "%s_count%s%s%s %llu\n", f->name, open, s->labels, close, (unsigned long long)cum);
}

int vr_prom_render(char **out, size_t *len)
{
	static const char *const type_names[] = { "counter", "gauge", "histogram" };
	struct buf b = { 0 };
	pthread_mutex_lock(&scrape_mu);
	for (size_t i = 0; i < ncollectors; i++)
		collectors[i].fn(collectors[i].arg);
	pthread_mutex_lock(&reg_mu);
	for (vr_prom_family *f = families; f; f = f->next) {
		if (!f->series)
			continue; /* a family with no series yet says nothing */
		buf_printf(&b, "# HELP %s ", f->name);
		buf_escaped(&b, f->help, 0);
		buf_printf(&b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
		for (vr_prom_series *s = f->series; s; s = s->next)
			render_series(&b, f, s);
	}
	pthread_mutex_unlock(&reg_mu);
	pthread_mutex_unlock(&scrape_mu);
	if (!b.p)
		b.p = strdup("");
	if (b.oom || !b.p) {
		free(b.p);
		return VR_ENOMEM;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

/* ---- HTTP ---------------------------------------------------------------- */

struct vr_prom_http {
	struct MHD_Daemon *mhd;
	int port;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *text,
			     const char *allow)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text,
								  MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (allow)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **state)
{
	(void)cls;
	(void)version;
	(void)upload;
	(void)upload_size;
	(void)state;
	if (strcmp(url, "/metrics"))
		return reply(conn, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n", NULL);
	int head = !strcmp(method, MHD_HTTP_METHOD_HEAD);
	if (strcmp(method, MHD_HTTP_METHOD_GET) && !head)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics\n", "GET, HEAD");
	char *text = NULL;
	size_t len = 0;
	if (vr_prom_render(&text, &len))
		return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n", NULL);
	struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
	enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* The library's own messages (a refused connection, a malformed request)
 * at debug: a client must not be able to fill the log. What stops the
 * endpoint from serving (its start) we report ourselves. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	if (!vr_log_enabled(VR_LOG_DEBUG))
		return;
	char line[512];
	vsnprintf(line, sizeof line, fmt, ap);
	size_t n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = 0;
	VR_DEBUG("metrics http: %s", line);
}

/* addr "HOST:PORT" or "[V6]:PORT" with a numeric host (or localhost)
 * into sa; 0 or VR_EINVAL. */
static int parse_addr(const char *addr, struct sockaddr_storage *sa, socklen_t *salen)
{
	const char *colon = strrchr(addr, ':');
	if (!colon || !colon[1])
		return VR_EINVAL;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return VR_EINVAL;
	size_t n = (size_t)(colon - addr);
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		addr++;
		n -= 2;
	}
	char host[64];
	if (n == 0 || n >= sizeof host)
		return VR_EINVAL;
	memcpy(host, addr, n);
	host[n] = 0;
	if (!strcmp(host, "localhost"))
		snprintf(host, sizeof host, "127.0.0.1");
	memset(sa, 0, sizeof *sa);
	struct sockaddr_in *a4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)sa;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*salen = sizeof *a4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*salen = sizeof *a6;
		return 0;
	}
	return VR_EINVAL;
}

int vr_prom_http_start(vr_prom_http **out, const char *addr, char *err, size_t errlen)
{
	struct sockaddr_storage sa;
	socklen_t salen = 0;
	int fd = -1, rc = 0;
	vr_prom_http *h = NULL;
	if (!addr || parse_addr(addr, &sa, &salen)) {
		snprintf(err, errlen, "--metrics-listen \"%s\" is not HOST:PORT with a numeric host "
			 "(127.0.0.1:9090, [::1]:9090, 0.0.0.0:9090)", addr ? addr : "");
		return VR_EINVAL;
	}
	fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
	    bind(fd, (struct sockaddr *)&sa, salen) || listen(fd, 16)) {
		rc = -errno;
		snprintf(err, errlen, "cannot serve metrics on %s: %s", addr, strerror(errno));
		goto fail;
	}
	if (getsockname(fd, (struct sockaddr *)&sa, &salen)) {
		rc = -errno;
		snprintf(err, errlen, "cannot serve metrics on %s: %s", addr, strerror(errno));
		goto fail;
	}
	if (!(h = calloc(1, sizeof *h))) {
		rc = VR_ENOMEM;
		snprintf(err, errlen, "cannot serve metrics: out of memory");
		goto fail;
	}
	h->port = ntohs(sa.ss_family == AF_INET ? ((struct sockaddr_in *)&sa)->sin_port
						 : ((struct sockaddr_in6 *)&sa)->sin6_port);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	if (sa.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* The logger first, or the library logs its own way before it. */
	h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
				  MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
				  MHD_OPTION_LISTEN_SOCKET, fd,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
				  MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)8,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
				  MHD_OPTION_END);
	if (!h->mhd) {
		rc = VR_EIO;
		snprintf(err, errlen, "cannot serve metrics on %s: libmicrohttpd did not start", addr);
		goto fail;
	}
	*out = h;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(h);
	return rc;
}

int vr_prom_http_port(const vr_prom_http *h)
{
	return h ? h->port : 0;
}

void vr_prom_http_stop(vr_prom_http *h)
{
	if (!h)
		return;
	/* MHD_stop_daemon closes the listening socket we handed it. */
	MHD_stop_daemon(h->mhd);
	free(h);
}
