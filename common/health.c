/* health: grpc.health.v1.Health (Check and Watch) over the rpc layer.
 *
 * The statuses live in a small table under a mutex; every change bumps a
 * version and wakes the Watch threads, which also wake every 100 ms to see
 * whether their call was cancelled or the server is stopping (a handler
 * cannot sleep on its call's queue and a condition variable at once). */
#include "health.h"

#include "err.h"
#include "grpc/health/v1/health.pb-c.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_SERVICES = 32, NAME_MAX_LEN = 127, WATCH_POLL_MS = 100 };

struct entry {
	char name[NAME_MAX_LEN + 1];
	enum vr_health_status status;
};

struct vr_health {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* CLOCK_MONOTONIC */
	struct entry e[MAX_SERVICES];
	int n;
};

static struct entry *lookup(vr_health *h, const char *service)
{
	for (int i = 0; i < h->n; i++)
		if (!strcmp(h->e[i].name, service))
			return &h->e[i];
	return NULL;
}

int vr_health_create(vr_health **out)
{
	vr_health *h = calloc(1, sizeof *h);
	if (!h)
		return VR_ENOMEM;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&h->mu, NULL);
	h->n = 1; /* "" */
	h->e[0].status = VR_HEALTH_NOT_SERVING;
	*out = h;
	return 0;
}

void vr_health_destroy(vr_health *h)
{
	if (!h)
		return;
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

int vr_health_set(vr_health *h, const char *service, enum vr_health_status status)
{
	int rc = 0;
	if (!service || strlen(service) > NAME_MAX_LEN || status < VR_HEALTH_UNKNOWN ||
	    status > VR_HEALTH_NOT_SERVING)
		return VR_EINVAL;
	pthread_mutex_lock(&h->mu);
	struct entry *e = lookup(h, service);
	if (!e) {
		if (h->n == MAX_SERVICES) {
			rc = VR_EFULL;
			goto leave;
		}
		e = &h->e[h->n++];
		snprintf(e->name, sizeof e->name, "%s", service);
	}
	e->status = status;
	pthread_cond_broadcast(&h->cv);
leave:
	pthread_mutex_unlock(&h->mu);
	return rc;
}

void vr_health_set_all(vr_health *h, enum vr_health_status status)
{
	pthread_mutex_lock(&h->mu);
	for (int i = 0; i < h->n; i++)
		h->e[i].status = status;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

static int check(vr_call *call, void *ctx)
{
	vr_health *h = ctx;
	const Grpc__Health__V1__HealthCheckRequest *req = (const void *)vr_call_request(call);
	pthread_mutex_lock(&h->mu);
	struct entry *e = lookup(h, req->service);
	int status = e ? (int)e->status : -1;
	pthread_mutex_unlock(&h->mu);
	if (status < 0)
		return vr_call_error(call, GRPC_STATUS_NOT_FOUND, "unknown service \"%s\"", req->service);
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
	int rc = vr_call_send(call, &resp.base);
	return rc ? rc : GRPC_STATUS_OK;
}

static int watch(vr_call *call, void *ctx)
{
	vr_health *h = ctx;
	const Grpc__Health__V1__HealthCheckRequest *req = (const void *)vr_call_request(call);
	int last = -1;
	for (;;) {
		int stopping = vr_call_stopping(call);
		pthread_mutex_lock(&h->mu);
		struct entry *e = lookup(h, req->service);
		int status = e ? (int)e->status : VR_HEALTH_SERVICE_UNKNOWN;
		if (status == last && !stopping) {
			struct timespec until;
			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_nsec += WATCH_POLL_MS * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&h->cv, &h->mu, &until);
			e = lookup(h, req->service);
			status = e ? (int)e->status : VR_HEALTH_SERVICE_UNKNOWN;
		}
		pthread_mutex_unlock(&h->mu);
		if (status != last) {
			Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
			resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
			int rc = vr_call_send(call, &resp.base);
			if (rc)
				return rc;
			last = status;
		}
		if (stopping) {
			if (vr_call_cancelled(call))
				return GRPC_STATUS_CANCELLED;
			return vr_call_error(call, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
		}
	}
}

int vr_health_register(vr_health *h, vr_server *srv)
{
	const vr_method methods[] = {
		{ .path = "/grpc.health.v1.Health/Check",
		  .request = &grpc__health__v1__health_check_request__descriptor,
		  .response = &grpc__health__v1__health_check_response__descriptor,
		  .kind = VR_UNARY, .handler = check, .ctx = h },
		{ .path = "/grpc.health.v1.Health/Watch",
		  .request = &grpc__health__v1__health_check_request__descriptor,
		  .response = &grpc__health__v1__health_check_response__descriptor,
		  .kind = VR_SERVER_STREAM, .handler = watch, .ctx = h },
	};
	return vr_server_add_service(srv, methods, 2);
}
