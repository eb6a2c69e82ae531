/* openloop: an open-loop load generator for the RPC benchmarks.
 *
 * A closed loop of N callers measures what N callers get; it cannot say
 * what a service does at a given offered rate (Little's law ties its
 * latency to its own throughput, and a slow answer also slows the next
 * send, so the queue a real client would see is never measured: the
 * "coordinated omission" of closed-loop benchmarks). Here calls arrive on a
 * schedule fixed before the run (Poisson arrivals or even spacing at the
 * offered rate), at most in_flight of them outstanding, and each call's
 * latency is measured from its intended send time: a call that had to wait
 * for one of the in_flight slots counts that wait, and is counted as
 * delayed. Nothing is dropped silently: a call still waiting when the
 * drain time ends is counted as unsent, and unsent or failed calls rank
 * above every answered one in the percentiles (INFINITY when a percentile
 * falls on them).
 *
 * DESIGN
 * Threads: in_flight workers, each making one blocking call at a time;
 * they run the warm-up's arrivals, end when all are answered, and a new
 * set runs the window's (so a warm-up backlog, say of a cold cache, is not
 * counted in the window).
 * The arrival times are precomputed; a worker that is free claims the next
 * arrival from one atomic counter and sleeps until its time (absolute
 * clock_nanosleep, 1 us timer slack). A worker that claims an arrival
 * whose time has already passed was not free at that time, nor was any
 * other (a free worker would have claimed it): all in_flight slots were
 * busy, so the send is "delayed by the cap". Each arrival has its own
 * result slot, written only by the worker that claimed it; ol_run joins
 * the workers before it reads them.
 *
 * ol_run_async sends the same schedule from a few sender threads and
 * takes the answers on one more (the caller's asynchronous client: start a
 * call, wait for any call to end), so the generator's threads do not grow
 * with in_flight. With blocking calls, 64 slots are 64 threads each woken
 * twice a call (its arrival's sleep, its answer); on the 2 cores the
 * service shares with its client, that client took twice the service's
 * CPU at 10 k calls/s and its wake-ups were the tail. One sender alone was
 * the tail beside a Train (when it waits for a core every arrival behind
 * it waits too); a few share the arrivals as the workers do. An arrival is
 * delayed when every slot was busy at some moment between its intended
 * time and its send (the sender waits for a free slot); a late send
 * otherwise is the generator's lag, as in ol_run. */
#ifndef VR_BENCH_OPENLOOP_H
#define VR_BENCH_OPENLOOP_H

#include <stddef.h>
#include <stdint.h>

/* One call from worker w (0 .. in_flight - 1; a worker never runs two at
 * once, so per-worker state indexed by w needs no lock). 0 = answered as
 * expected, anything else = an error. */
typedef int (*ol_call_fn)(void *arg, int w);

struct ol_config {
	double rate;       /* offered calls per second, > 0 */
	int in_flight;     /* most calls outstanding (worker threads), >= 1 */
	double warmup_s;   /* arrivals before the window, at the rate: sent, not measured */
	double seconds;    /* the measured window of intended send times, > 0 */
	double drain_s;    /* after the window (and the warm-up), how long queued arrivals may still be sent */
	int poisson;       /* 1: exponential gaps (Poisson arrivals); 0: even spacing */
	uint64_t seed;     /* of the Poisson gaps */
};

struct ol_result {
	size_t offered;     /* arrivals intended in the window */
	size_t answered;    /* of them, answered as expected */
	size_t errors;      /* of them, failed */
	size_t unsent;      /* of them, still waiting for a slot when the drain ended */
	size_t delayed;     /* of them, sent late because in_flight calls were outstanding */
	double offered_qps; /* offered / seconds */
	double achieved_qps; /* answered / (window start .. its last answer), that span at least seconds */
	/* Latency from the intended send time, us; INFINITY where the rank
	 * falls on an unsent or failed call. */
	double p50_us, p90_us, p99_us, p999_us, max_us;
	double lag_p99_us;  /* the generator's own lateness (send - intended) on sends not delayed */
};

/* Runs the schedule of cfg against fn and fills *out. Returns 0, or -1 for
 * a bad cfg, no memory or threads that could not start (nothing run). */
int ol_run(const struct ol_config *cfg, ol_call_fn fn, void *arg, struct ol_result *out);

/* The asynchronous client of ol_run_async. start begins a call in slot s
 * (0 .. in_flight - 1, not in use) and returns 0, or nonzero when it could
 * not (the arrival counts as failed, the slot stays free). wait takes the
 * end of one started call within timeout_s: returns 1 with its slot in *s
 * and *rc 0 when it was answered as expected (nonzero: failed), 0 when
 * none ended in time, -1 when it cannot wait (nothing more is measured).
 * start runs on the sender thread, wait on the receiver; they may overlap. */
#define OL_MAX_SENDERS 64
struct ol_async {
	int (*start)(void *arg, int s);
	int (*wait)(void *arg, double timeout_s, int *s, int *rc);
	void *arg;
	int senders; /* threads that sleep until arrivals and start calls: 0 .. OL_MAX_SENDERS (0: 1) */
};

/* ol_run with an asynchronous client. Returns 0, or -1 for a bad cfg, no
 * memory, a thread that could not start or a wait that failed. */
int ol_run_async(const struct ol_config *cfg, const struct ol_async *ops, struct ol_result *out);

/* A latency of ol_result (us) written into buf as "%.0f", "inf", or "-"
 * for NAN (none measured); returns buf. */
const char *ol_us(char *buf, size_t cap, double us);

#endif
