/* deadline: monotonic time, deadlines and the condition variables that
 * wait for them (contract in deadline.h). */
#include "deadline.h"

#include "err.h"

#include <errno.h>
#include <time.h>

int64_t vr_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

double vr_now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int64_t vr_deadline_ms(int64_t timeout_ms)
{
	if (timeout_ms < 0)
		return VR_FOREVER;
	int64_t now = vr_now_ms();
	return timeout_ms > VR_FOREVER - now ? VR_FOREVER : now + timeout_ms;
}

void vr_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
}

int vr_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms)
{
	if (deadline_ms == VR_FOREVER) {
		pthread_cond_wait(cv, mu);
		return 0;
	}
	struct timespec until = { .tv_sec = deadline_ms / 1000,
				  .tv_nsec = (long)(deadline_ms % 1000) * 1000000L };
	if (deadline_ms < 0)
		until = (struct timespec){ 0 };
	return pthread_cond_timedwait(cv, mu, &until) == ETIMEDOUT ? VR_ETIMEDOUT : 0;
}
