/* Unit tests of the open-loop generator (openloop.h) against a service
 * whose every call takes a known time (a sleep of SERVICE_MS on the
 * worker's thread, so the worker slots are the only queue): under its
 * capacity nothing is delayed and latency is the service time; over it,
 * sends are delayed by the cap, latency from the intended time grows with
 * the backlog, the achieved rate is the capacity, and what the drain cannot
 * send is counted, not dropped. */
#include "deadline.h"
#include "harness.h"
#include "openloop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <errno.h>
#include <time.h>

#define SERVICE_MS 10

static atomic_long calls;

static int sleepy(void *arg, int w)
{
	(void)w;
	long every = arg ? *(long *)arg : 0; /* fail each every-th call */
	long n = atomic_fetch_add(&calls, 1) + 1;
	struct timespec ts = { 0, SERVICE_MS * 1000000L };
	nanosleep(&ts, NULL);
	return every && n % every == 0;
}

/* sleepy as an asynchronous service (ol_run_async): a call started in a
 * slot ends SERVICE_MS later (in start order, the time being the same for
 * all) and fails as sleepy's would. */
#define FAKE_RING 4096
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int slot[FAKE_RING], fail[FAKE_RING];
	double end[FAKE_RING];
	size_t head, tail;
	long every;
} fake = { .mu = PTHREAD_MUTEX_INITIALIZER };

static int fake_start(void *arg, int s)
{
	(void)arg;
	long n = atomic_fetch_add(&calls, 1) + 1;
	pthread_mutex_lock(&fake.mu);
	size_t i = fake.tail++ % FAKE_RING;
	fake.slot[i] = s;
	fake.fail[i] = fake.every && n % fake.every == 0;
	fake.end[i] = vr_now_s() + SERVICE_MS * 1e-3;
	pthread_cond_signal(&fake.cv);
	pthread_mutex_unlock(&fake.mu);
	return 0;
}

static int fake_wait(void *arg, double timeout_s, int *s, int *rc)
{
	(void)arg;
	int64_t until = vr_now_ms() + (int64_t)(timeout_s * 1e3);
	pthread_mutex_lock(&fake.mu);
	while (fake.head == fake.tail && !vr_cond_wait_until(&fake.cv, &fake.mu, until))
		;
	if (fake.head == fake.tail) {
		pthread_mutex_unlock(&fake.mu);
		return 0;
	}
	size_t i = fake.head++ % FAKE_RING;
	double end = fake.end[i];
	*s = fake.slot[i];
	*rc = fake.fail[i];
	pthread_mutex_unlock(&fake.mu);
	struct timespec ts = { .tv_sec = (time_t)end, .tv_nsec = (long)((end - (double)(time_t)end) * 1e9) };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
	return 1;
}

/* Every test runs with blocking workers (ol_run) and, as NAME_async,
 * with the asynchronous sender and receiver (ol_run_async). */
static int async_mode;

static int run(const struct ol_config *c, long *every, struct ol_result *r)
{
	if (!async_mode)
		return ol_run(c, sleepy, every, r);
	struct ol_async ops = { fake_start, fake_wait, NULL, 3 };
	fake.every = every ? *every : 0;
	return ol_run_async(c, &ops, r);
}

/* 100/s on 4 slots of 10 ms (capacity 400/s), evenly spaced. */
TEST(under_capacity_is_not_delayed)
{
	struct ol_config c = { .rate = 100, .in_flight = 4, .warmup_s = 0.1, .seconds = 1, .drain_s = 5 };
	struct ol_result r;
	ASSERT_OK(run(&c, NULL, &r));
	ASSERT_MSG(r.offered >= 99 && r.offered <= 101, "%zu arrivals for 100 expected", r.offered);
	ASSERT_EQ_INT(r.answered, r.offered);
	ASSERT_EQ_INT(r.unsent + r.errors, 0);
	ASSERT_MSG(r.delayed <= 2, "%zu of 100 sends delayed at a quarter of capacity", r.delayed);
	ASSERT_MSG(r.p50_us >= SERVICE_MS * 1000 && r.p50_us < SERVICE_MS * 3000, "p50 %.0f us", r.p50_us);
	ASSERT_MSG(r.achieved_qps > 85 && r.achieved_qps <= 100.5, "achieved %.1f/s", r.achieved_qps);
}

/* 1,000/s offered for 1 s on a capacity of 400/s: the backlog grows by
 * 600/s, so the last arrivals wait ~1.5 s. A generator that measured from
 * the actual send (or sent only when a slot was free) would show ~10 ms. */
TEST(over_capacity_counts_the_wait)
{
	struct ol_config c = { .rate = 1000, .in_flight = 4, .warmup_s = 0, .seconds = 1, .drain_s = 10 };
	struct ol_result r;
	ASSERT_OK(run(&c, NULL, &r));
	ASSERT_EQ_INT(r.offered, 1000);
	ASSERT_EQ_INT(r.answered, 1000);
	ASSERT_EQ_INT(r.unsent, 0);
	ASSERT_MSG(r.delayed > 900, "only %zu of 1000 sends delayed at 2.5x capacity", r.delayed);
	ASSERT_MSG(r.achieved_qps < 420 && r.achieved_qps > 250, "achieved %.1f/s on a capacity of 400/s",
		   r.achieved_qps);
	ASSERT_MSG(r.p50_us > 400000, "p50 %.0f us hides the backlog", r.p50_us);
	ASSERT_MSG(r.p99_us > 1000000 && r.p99_us < 3000000, "p99 %.0f us", r.p99_us);
	ASSERT(r.max_us >= r.p999_us && r.p999_us >= r.p99_us && r.p99_us >= r.p90_us && r.p90_us >= r.p50_us);
}

/* No drain: what is still queued when the window ends is unsent, and the
 * percentiles that fall on it are infinite, not the answered calls'. */
TEST(unsent_are_counted_and_rank_last)
{
	struct ol_config c = { .rate = 1000, .in_flight = 4, .warmup_s = 0, .seconds = 0.5, .drain_s = 0 };
	struct ol_result r;
	ASSERT_OK(run(&c, NULL, &r));
	ASSERT_EQ_INT(r.offered, 500);
	ASSERT_EQ_INT(r.answered + r.unsent + r.errors, 500);
	ASSERT_MSG(r.unsent > 200, "%zu unsent of 500 at 2.5x capacity with no drain", r.unsent);
	ASSERT(isinf(r.p99_us) && isinf(r.max_us));
	ASSERT(!isinf(r.p50_us) || r.unsent >= 250);
}

/* Failed calls are counted and rank above every answer. */
TEST(errors_rank_last)
{
	long every = 10;
	struct ol_config c = { .rate = 200, .in_flight = 8, .warmup_s = 0, .seconds = 1, .drain_s = 5 };
	struct ol_result r;
	atomic_store(&calls, 0);
	ASSERT_OK(run(&c, &every, &r));
	ASSERT_EQ_INT(r.offered, 200);
	ASSERT_EQ_INT(r.errors, 20);
	ASSERT_EQ_INT(r.answered, 180);
	ASSERT(!isinf(r.p50_us) && isinf(r.p99_us));
}

/* Poisson arrivals: the count in the window is the rate's, give or take
 * a few standard deviations, and the same seed gives the same schedule. */
TEST(poisson_offers_the_rate)
{
	struct ol_config c = { .rate = 2000, .in_flight = 64, .warmup_s = 0, .seconds = 0.5, .drain_s = 5,
			       .poisson = 1, .seed = 7 };
	struct ol_result a, b;
	ASSERT_OK(run(&c, NULL, &a));
	ASSERT_OK(run(&c, NULL, &b));
	ASSERT_MSG(fabs((double)a.offered - 1000) < 5 * sqrt(1000), "%zu arrivals for 1000 expected", a.offered);
	ASSERT_EQ_INT(a.offered, b.offered);
	ASSERT_EQ_INT(a.answered, a.offered);
}

TEST(bad_config_is_refused)
{
	struct ol_result r;
	struct ol_config c = { .rate = 0, .in_flight = 1, .seconds = 1 };
	ASSERT_NE_INT(run(&c, NULL, &r), 0);
	c = (struct ol_config){ .rate = 10, .in_flight = 0, .seconds = 1 };
	ASSERT_NE_INT(run(&c, NULL, &r), 0);
}

#define ASYNC(name) TEST(name##_async) { async_mode = 1; test_##name(); async_mode = 0; }
ASYNC(under_capacity_is_not_delayed)
ASYNC(over_capacity_counts_the_wait)
ASYNC(unsent_are_counted_and_rank_last)
ASYNC(errors_rank_last)
ASYNC(poisson_offers_the_rate)
ASYNC(bad_config_is_refused)

static const struct vr_test tests[] = {
	T(under_capacity_is_not_delayed),
	T(over_capacity_counts_the_wait),
	T(unsent_are_counted_and_rank_last),
	T(errors_rank_last),
	T(poisson_offers_the_rate),
	T(bad_config_is_refused),
	T(under_capacity_is_not_delayed_async),
	T(over_capacity_counts_the_wait_async),
	T(unsent_are_counted_and_rank_last_async),
	T(errors_rank_last_async),
	T(poisson_offers_the_rate_async),
	T(bad_config_is_refused_async),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
