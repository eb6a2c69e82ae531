/* deadline: the one clock of every timed wait in visrec.
 *
 * Every deadline is a point on CLOCK_MONOTONIC in milliseconds
 * (vr_now_ms), and every condition variable is initialised with
 * vr_cond_init so that pthread_cond_timedwait measures against that same
 * clock. A condition variable made with the default attributes measures
 * CLOCK_REALTIME: a monotonic deadline then lies decades in its past and
 * the wait returns at once, so a loop around it spins (featured's change
 * feed did, one core per follower). Hence, in the services, the tools and
 * common/: no pthread_cond_init, no clock_gettime for a deadline, and no
 * pthread_cond_timedwait outside this module.
 *
 *   pthread_cond_t cv;  vr_cond_init(&cv);
 *   int64_t until = vr_deadline_ms(500);
 *   pthread_mutex_lock(&mu);
 *   while (!ready && vr_cond_wait_until(&cv, &mu, until) == 0)
 *           ;
 *   pthread_mutex_unlock(&mu); */
#ifndef VR_DEADLINE_H
#define VR_DEADLINE_H

#include <pthread.h>
#include <stdint.h>

/* A deadline that never comes: vr_cond_wait_until waits untimed. */
#define VR_FOREVER INT64_MAX

/* Milliseconds on CLOCK_MONOTONIC (an arbitrary origin; for deadlines and
 * intervals, never for wall time). */
int64_t vr_now_ms(void);
/* Seconds on the same clock, with sub-microsecond resolution (for
 * measuring how long something took). */
double vr_now_s(void);
/* The deadline timeout_ms from now; a negative timeout is VR_FOREVER. */
int64_t vr_deadline_ms(int64_t timeout_ms);

/* Initialises cv to wait on CLOCK_MONOTONIC. Every condition variable of
 * the services and libraries is made here, timed or not, so that none can
 * be the odd one out when a timed wait is added later. */
void vr_cond_init(pthread_cond_t *cv);
/* pthread_cond_wait on cv (mu held) until a wake-up or deadline_ms
 * (vr_now_ms scale; VR_FOREVER: no deadline). Returns 0 when woken
 * (possibly spuriously: callers loop on their condition) and VR_ETIMEDOUT
 * once the deadline has passed. */
int vr_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms);

#endif
