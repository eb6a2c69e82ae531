/* prom: the process's Prometheus metrics, and the HTTP endpoint that
 * serves them (text exposition format 0.0.4).
 *
 * One registry per process. A family (name, help, type, label names) holds
 * series, one per set of label values; a series is found or created once
 * under the registry's lock and its pointer kept, so hot paths touch only
 * atomics: a counter or gauge is one double (its bits in an atomic word),
 * a histogram a count per fixed bucket plus a sum. Values that are cheap to
 * read where they live (queue depths, store sizes, the executor's
 * counters) are not pushed: a collector registered with vr_prom_collector
 * runs at every scrape and sets them then.
 *
 *   static vr_prom_family *f;
 *   f = vr_prom_register("visrec_x_total", "What it counts.", VR_PROM_COUNTER, "kind", NULL, 0);
 *   vr_prom_series *s = vr_prom_get(f, "a");   // keep s
 *   vr_prom_add(s, 1);
 *
 * Names follow Prometheus's conventions: base units in the name
 * (_seconds, _bytes), counters end in _total, an _info gauge is 1 with the
 * facts in its labels. Families and series live until the process ends
 * (there are few: label values come from our own tables, never from a
 * request). */
#ifndef VR_PROM_H
#define VR_PROM_H

#include <stddef.h>

enum vr_prom_type { VR_PROM_COUNTER, VR_PROM_GAUGE, VR_PROM_HISTOGRAM };

typedef struct vr_prom_family vr_prom_family;
typedef struct vr_prom_series vr_prom_series;

#define VR_PROM_MAX_LABELS 4
#define VR_PROM_MAX_BUCKETS 24

/* The family called name, registered now or found (same name: the first
 * registration wins; the type must match or NULL comes back). labels:
 * comma-separated label names ("method,code"), NULL or "" for none, at
 * most VR_PROM_MAX_LABELS. Histograms: buckets[0..nbuckets) ascending upper
 * bounds (+Inf is implied), at most VR_PROM_MAX_BUCKETS. NULL without
 * memory or for bad arguments. */
vr_prom_family *vr_prom_register(const char *name, const char *help, enum vr_prom_type type,
				 const char *labels, const double *buckets, int nbuckets);
/* The series of f with the given label values (as many as f has labels;
 * NULL values read as ""), created on first use. NULL when f is NULL or
 * memory ran out: every update function accepts NULL and does nothing, so
 * a daemon short of memory serves on without its metrics. */
vr_prom_series *vr_prom_get(vr_prom_family *f, ...);

/* Counters and gauges. */
void vr_prom_add(vr_prom_series *s, double v);
void vr_prom_set(vr_prom_series *s, double v);
double vr_prom_value(const vr_prom_series *s);
/* Histograms: one observation. */
void vr_prom_observe(vr_prom_series *s, double v);

/* fn(arg) runs at each scrape, before the text is written, under the
 * registry's lock (so it must not call vr_prom_register or vr_prom_get;
 * vr_prom_set of series it got before is what it is for). Removed by
 * vr_prom_collector_remove(fn, arg) before arg goes away. 0 or VR_ENOMEM. */
int vr_prom_collector(void (*fn)(void *arg), void *arg);
void vr_prom_collector_remove(void (*fn)(void *arg), void *arg);

/* Runs the collectors and writes every family in the exposition format
 * into a buffer of the caller's (free it). 0 or VR_ENOMEM. */
int vr_prom_render(char **out, size_t *len);

/* The RPC latency buckets, in seconds (100 µs .. 60 s). */
extern const double vr_prom_rpc_buckets[];
extern const int vr_prom_rpc_nbuckets;

/* ---- the HTTP endpoint ------------------------------------------------- */

typedef struct vr_prom_http vr_prom_http;

/* Serves GET /metrics on addr ("HOST:PORT", "[v6]:PORT"; port 0 picks a
 * free one) from libmicrohttpd's own polling thread (epoll: it sleeps
 * until a connection comes). Other paths get 404, other methods 405. At
 * most 16 connections, 8 per client address, a 10 s idle timeout and
 * 16 KiB of request per connection. Returns 0, VR_EINVAL (addr is no
 * numeric address: names are not resolved), -errno, or VR_EIO (the
 * library refused); err says why in one line. */
int vr_prom_http_start(vr_prom_http **out, const char *addr, char *err, size_t errlen);
/* The bound port. */
int vr_prom_http_port(const vr_prom_http *h);
/* Stops the thread and closes the socket; NULL is allowed. */
void vr_prom_http_stop(vr_prom_http *h);

#endif
