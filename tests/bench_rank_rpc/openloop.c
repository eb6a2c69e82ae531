/* openloop: the open-loop load generator (openloop.h says how it counts). */
#include "openloop.h"

#include "deadline.h"
#include "xoshiro.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#define UNSENT UINT32_MAX
#define FAILED (UINT32_MAX - 1)
#define LONGEST (UINT32_MAX - 2) /* an answered call's latency is clamped below the sentinels */

struct run {
	const struct ol_config *cfg;
	ol_call_fn fn;
	void *arg;
	double t0;        /* CLOCK_MONOTONIC seconds of arrival time 0 */
	double stop_at;   /* no send after this (the drain's end) */
	const double *at; /* arrival k's intended time, s after t0 */
	size_t n;
	atomic_size_t next;   /* the next arrival to claim; the phase ends at n */
	uint32_t *lat;    /* per arrival: us from intended time to answer, or UNSENT / FAILED */
	float *lag;       /* per arrival: send - intended (us); -1 when delayed by the cap */
	/* ol_run_async's, under mu: the free slots (a stack), each busy slot's
	 * arrival, how many are busy, when the last moment of all busy ended. */
	const struct ol_async *ops;
	pthread_mutex_t mu;
	pthread_cond_t freed;
	int *free_slots, n_free, busy, sending;
	size_t *slot_arrival;
	double full_ended;
	int wait_failed;
};

struct worker {
	pthread_t tid;
	struct run *r;
	int w;
};

static double mono_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void sleep_until(double t)
{
	struct timespec ts = { .tv_sec = (time_t)t, .tv_nsec = (long)((t - (double)(time_t)t) * 1e9) };
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void *worker_main(void *p)
{
	struct worker *wk = p;
	struct run *r = wk->r;
	/* The default 50 us of timer slack would be the generator's own lag. */
	prctl(PR_SET_TIMERSLACK, 1UL);
	for (;;) {
		size_t k = atomic_fetch_add(&r->next, 1);
		if (k >= r->n)
			break;
		double due = r->t0 + r->at[k], now = mono_s();
		if (now > r->stop_at)
			break; /* this arrival and every later one stay UNSENT */
		int late = now > due;
		if (!late)
			sleep_until(due);
		double s = mono_s();
		int rc = r->fn(r->arg, wk->w);
		double e = mono_s(), us = (e - due) * 1e6;
		r->lag[k] = late ? -1.0f : (float)((s - due) * 1e6);
		r->lat[k] = rc ? FAILED : us >= (double)LONGEST ? LONGEST : (uint32_t)us;
	}
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

/* The q-quantile of sorted v[0..n) (nearest rank), INFINITY on a sentinel. */
static double quantile(const uint32_t *v, size_t n, double q)
{
	if (!n)
		return NAN;
	size_t i = (size_t)ceil(q * (double)n);
	i = i ? i - 1 : 0;
	if (i >= n)
		i = n - 1;
	return v[i] > LONGEST ? INFINITY : (double)v[i];
}

/* Runs arrivals [from, to) of r's schedule on in_flight workers, arrival
 * time origin (schedule time) sent 10 ms from now, nothing sent after
 * origin + until seconds; returns when every worker has ended. 0, or -1
 * when a thread could not start (then nothing of the phase is measured). */
static int run_phase(struct run *r, struct worker *wk, int in_flight, size_t from, size_t to, double origin,
		     double until)
{
	int started = 0;
	atomic_init(&r->next, from);
	r->n = to;
	r->t0 = mono_s() + 0.01 - origin; /* the workers are up before the first arrival */
	r->stop_at = r->t0 + origin + until;
	for (; started < in_flight; started++) {
		wk[started] = (struct worker){ .r = r, .w = started };
		if (pthread_create(&wk[started].tid, NULL, worker_main, &wk[started]))
			break;
	}
	if (started < in_flight)
		atomic_store(&r->next, to); /* the started ones end at once */
	for (int w = 0; w < started; w++)
		pthread_join(wk[w].tid, NULL);
	return started < in_flight ? -1 : 0;
}

/* The receiver of an asynchronous phase: records each ended call and frees
 * its slot, until the sender is done and no call is out. */
static void *receiver_main(void *p)
{
	struct run *r = p;
	for (;;) {
		pthread_mutex_lock(&r->mu);
		int over = !r->sending && !r->busy;
		pthread_mutex_unlock(&r->mu);
		if (over)
			break;
		int s, rc, got = r->ops->wait(r->ops->arg, 0.05, &s, &rc);
		double e = mono_s();
		pthread_mutex_lock(&r->mu);
		if (got < 0) {
			r->wait_failed = 1;
			r->busy = 0;
			pthread_cond_broadcast(&r->freed);
			pthread_mutex_unlock(&r->mu);
			break;
		}
		if (got) {
			size_t k = r->slot_arrival[s];
			double us = (e - (r->t0 + r->at[k])) * 1e6;
			r->lat[k] = rc ? FAILED : us >= (double)LONGEST ? LONGEST : (uint32_t)us;
			if (!r->n_free)
				r->full_ended = e;
			r->free_slots[r->n_free++] = s;
			r->busy--;
			pthread_cond_signal(&r->freed);
		}
		pthread_mutex_unlock(&r->mu);
	}
	return NULL;
}

/* A sender of an asynchronous phase: claims the next arrival, sleeps
 * until its time, takes a free slot (waiting, and so delayed, when none
 * is) and starts the call there. */
static void *sender_main(void *p)
{
	struct run *r = p;
	prctl(PR_SET_TIMERSLACK, 1UL);
	for (;;) {
		size_t k = atomic_fetch_add(&r->next, 1);
		if (k >= r->n)
			break;
		double due = r->t0 + r->at[k];
		if (mono_s() > r->stop_at)
			break; /* this arrival and every later one stay UNSENT */
		sleep_until(due);
		pthread_mutex_lock(&r->mu);
		int waited = 0;
		/* mono_s and vr_now_ms read the same clock. */
		while (!r->n_free && !r->wait_failed) {
			waited = 1;
			if (vr_cond_wait_until(&r->freed, &r->mu, (int64_t)(r->stop_at * 1e3) + 1))
				break;
		}
		if (!r->n_free || r->wait_failed) {
			pthread_mutex_unlock(&r->mu);
			break;
		}
		int s = r->free_slots[--r->n_free];
		r->slot_arrival[s] = k;
		r->busy++;
		double now = mono_s();
		r->lag[k] = waited || r->full_ended > due ? -1.0f : (float)((now - due) * 1e6);
		pthread_mutex_unlock(&r->mu);
		if (r->ops->start(r->ops->arg, s)) {
			pthread_mutex_lock(&r->mu);
			r->lat[k] = FAILED;
			r->free_slots[r->n_free++] = s;
			r->busy--;
			pthread_mutex_unlock(&r->mu);
		}
	}
	return NULL;
}

/* run_phase for ol_run_async: ops->senders threads (this one among them)
 * send, a receiver takes the answers. */
static int run_phase_async(struct run *r, int in_flight, size_t from, size_t to, double origin, double until)
{
	pthread_t rx, tx[OL_MAX_SENDERS];
	int senders = r->ops->senders < 1 ? 1 : r->ops->senders, started = 1;
	atomic_init(&r->next, from);
	r->n = to;
	r->t0 = mono_s() + 0.01 - origin;
	r->stop_at = r->t0 + origin + until;
	r->n_free = in_flight;
	for (int s = 0; s < in_flight; s++)
		r->free_slots[s] = in_flight - 1 - s;
	r->busy = 0;
	r->sending = 1;
	r->full_ended = -1;
	if (pthread_create(&rx, NULL, receiver_main, r))
		return -1;
	for (; started < senders; started++)
		if (pthread_create(&tx[started], NULL, sender_main, r))
			break;
	if (started < senders)
		atomic_store(&r->next, to); /* the started ones end at once */
	sender_main(r);
	for (int t = 1; t < started; t++)
		pthread_join(tx[t], NULL);
	pthread_mutex_lock(&r->mu);
	r->sending = 0;
	pthread_mutex_unlock(&r->mu);
	pthread_join(rx, NULL);
	return r->wait_failed || started < senders ? -1 : 0;
}

static int run_schedule(const struct ol_config *cfg, ol_call_fn fn, void *arg, const struct ol_async *ops,
			struct ol_result *out);

int ol_run(const struct ol_config *cfg, ol_call_fn fn, void *arg, struct ol_result *out)
{
	return run_schedule(cfg, fn, arg, NULL, out);
}

int ol_run_async(const struct ol_config *cfg, const struct ol_async *ops, struct ol_result *out)
{
	return run_schedule(cfg, NULL, NULL, ops, out);
}

/* The schedule, its phases (threaded with fn, or asynchronous with ops)
 * and the counts. */
static int run_schedule(const struct ol_config *cfg, ol_call_fn fn, void *arg, const struct ol_async *ops,
			struct ol_result *out)
{
	memset(out, 0, sizeof *out);
	if (!(cfg->rate > 0) || cfg->in_flight < 1 || !(cfg->seconds > 0) || cfg->warmup_s < 0 || cfg->drain_s < 0 ||
	    (ops && ops->senders > OL_MAX_SENDERS))
		return -1;
	double span = cfg->warmup_s + cfg->seconds;
	if (cfg->rate * span * 1.5 + 16 > 2e8)
		return -1;
	size_t cap = (size_t)(cfg->rate * span * 1.5) + 16, n = 0, first = 0;
	struct run r = { .cfg = cfg, .fn = fn, .arg = arg, .ops = ops, .mu = PTHREAD_MUTEX_INITIALIZER };
	double *at = malloc(cap * sizeof *at);
	struct worker *wk = calloc((size_t)cfg->in_flight, sizeof *wk);
	uint32_t *sorted = NULL;
	float *lags = NULL;
	int rc = -1;
	vr_cond_init(&r.freed);
	r.free_slots = malloc((size_t)cfg->in_flight * sizeof *r.free_slots);
	r.slot_arrival = malloc((size_t)cfg->in_flight * sizeof *r.slot_arrival);
	if (!at || !wk || !r.free_slots || !r.slot_arrival)
		goto leave;
	/* The schedule: arrival times in [0, span), the window's from warmup_s. */
	uint64_t s[4], x = cfg->seed;
	for (int q = 0; q < 4; q++)
		s[q] = vr_splitmix64_next(&x);
	for (double t = 0;;) {
		if (cfg->poisson) {
			double u = (double)(vr_xoshiro_next(s) >> 11) * 0x1.0p-53; /* [0, 1) */
			t += -log1p(-u) / cfg->rate;
		} else if (n) {
			t = (double)n / cfg->rate;
		}
		if (t >= span)
			break;
		if (n == cap) {
			double *g = realloc(at, 2 * cap * sizeof *at);
			if (!g)
				goto leave;
			at = g;
			cap *= 2;
		}
		if (t < cfg->warmup_s)
			first = n + 1;
		at[n++] = t;
	}
	r.at = at;
	r.n = n;
	r.lat = malloc((n + 1) * sizeof *r.lat);
	r.lag = malloc((n + 1) * sizeof *r.lag);
	if (!r.lat || !r.lag)
		goto leave;
	for (size_t k = 0; k < n; k++) {
		r.lat[k] = UNSENT;
		r.lag[k] = -1;
	}
	/* The warm-up's arrivals, then, once they are all answered, the
	 * window's: a backlog of the warm-up (a cold cache, new connections)
	 * is not measured as the window's. */
	if (first && (ops ? run_phase_async(&r, cfg->in_flight, 0, first, 0, cfg->warmup_s + cfg->drain_s)
			  : run_phase(&r, wk, cfg->in_flight, 0, first, 0, cfg->warmup_s + cfg->drain_s)))
		goto leave;
	if (ops ? run_phase_async(&r, cfg->in_flight, first, n, cfg->warmup_s, cfg->seconds + cfg->drain_s)
		: run_phase(&r, wk, cfg->in_flight, first, n, cfg->warmup_s, cfg->seconds + cfg->drain_s))
		goto leave;

	/* The window's arrivals: counts, achieved rate, percentiles. */
	size_t m = n - first, nl = 0;
	sorted = malloc((m + 1) * sizeof *sorted);
	lags = malloc((m + 1) * sizeof *lags);
	if (!sorted || !lags)
		goto leave;
	double last = cfg->warmup_s + cfg->seconds;
	for (size_t k = first; k < n; k++) {
		uint32_t v = r.lat[k];
		sorted[k - first] = v;
		if (v == UNSENT)
			out->unsent++;
		else if (v == FAILED)
			out->errors++;
		else {
			out->answered++;
			double done = at[k] + v * 1e-6;
			if (done > last)
				last = done;
		}
		if (v != UNSENT && r.lag[k] < 0)
			out->delayed++;
		else if (v != UNSENT)
			lags[nl++] = r.lag[k];
	}
	out->offered = m;
	out->offered_qps = (double)m / cfg->seconds;
	out->achieved_qps = (double)out->answered / (last - cfg->warmup_s);
	qsort(sorted, m, sizeof *sorted, cmp_u32);
	out->p50_us = quantile(sorted, m, 0.50);
	out->p90_us = quantile(sorted, m, 0.90);
	out->p99_us = quantile(sorted, m, 0.99);
	out->p999_us = quantile(sorted, m, 0.999);
	out->max_us = quantile(sorted, m, 1.0);
	qsort(lags, nl, sizeof *lags, cmp_float);
	out->lag_p99_us = nl ? lags[(size_t)ceil(0.99 * (double)nl) - 1] : NAN;
	rc = 0;
leave:
	free(sorted);
	free(lags);
	free(r.lat);
	free(r.lag);
	free(at);
	free(wk);
	free(r.free_slots);
	free(r.slot_arrival);
	pthread_cond_destroy(&r.freed);
	return rc;
}

const char *ol_us(char *buf, size_t cap, double us)
{
	if (isnan(us))
		snprintf(buf, cap, "-");
	else if (isinf(us))
		snprintf(buf, cap, "inf");
	else
		snprintf(buf, cap, "%.0f", us);
	return buf;
}
