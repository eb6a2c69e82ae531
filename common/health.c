/* health: grpc.health.v1.Health (Check and Watch) over the rpc layer.
 *
 * The statuses live in a small table under a mutex; every change wakes
 * the Watch threads. Watch is a follower method: its call's cancellation
 * and the server's shutdown wake them too (vr_call_wake_on_stop), so a
 * watcher sleeps until something happens and costs nothing meanwhile. */
#include "health.h"

#include "deadline.h"
#include "err.h"
#include "grpc/health/v1/health.pb-c.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for a daemon's services and a name per featured shard (rankd). */
enum { MAX_SERVICES = 300, NAME_MAX_LEN = 127 };

struct entry {
	char name[NAME_MAX_LEN + 1];
	enum vr_health_status status;
};

struct vr_health {
	pthread_mutex_t mu;
	pthread_cond_t cv;
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
	vr_cond_init(&h->cv);
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

static void wake_watchers(void *arg)
{
	vr_health *h = arg;
	pthread_mutex_lock(&h->mu);
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

static int watch(vr_call *call, void *ctx)
{
	vr_health *h = ctx;
	const Grpc__Health__V1__HealthCheckRequest *req = (const void *)vr_call_request(call);
	int last = -1;
	int rc = vr_call_wake_on_stop(call, wake_watchers, h);
	if (rc)
		return rc;
	for (;;) {
		pthread_mutex_lock(&h->mu);
		int stopping, status;
		for (;;) {
			struct entry *e = lookup(h, req->service);
			status = e ? (int)e->status : VR_HEALTH_SERVICE_UNKNOWN;
			stopping = vr_call_stopping(call);
			if (status != last || stopping)
				break;
			pthread_cond_wait(&h->cv, &h->mu);
		}
		pthread_mutex_unlock(&h->mu);
		if (status != last) {
			Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
			resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
			if ((rc = vr_call_send(call, &resp.base)))
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
		  .kind = VR_SERVER_STREAM, .handler = watch, .ctx = h, .follower = 1 },
	};
	return vr_server_add_service(srv, methods, 2);
}
