/* health: the standard grpc.health.v1.Health service for our servers.
 *
 * Check answers the status of a service name ("" = the server as a whole;
 * an unknown name is NOT_FOUND). Watch streams the current status, then
 * every change, until the client cancels or the server stops. Statuses
 * are set by the owner of the server with vr_health_set at any time from
 * any thread. */
#ifndef VR_HEALTH_H
#define VR_HEALTH_H

#include "rpc.h"

/* The values of grpc.health.v1.HealthCheckResponse.ServingStatus. */
enum vr_health_status {
	VR_HEALTH_UNKNOWN = 0,
	VR_HEALTH_SERVING = 1,
	VR_HEALTH_NOT_SERVING = 2,
	VR_HEALTH_SERVICE_UNKNOWN = 3,
};

typedef struct vr_health vr_health;

/* Creates the health state with "" set to NOT_SERVING. VR_ENOMEM. */
int vr_health_create(vr_health **out);
/* Frees it; the server it was added to must be shut down. NULL allowed. */
void vr_health_destroy(vr_health *h);
/* Adds Health/Check and Health/Watch to srv (before vr_server_start). */
int vr_health_register(vr_health *h, vr_server *srv);
/* Sets the status of service ("" = overall). VR_EINVAL for a name over
 * 127 bytes or a status out of range, VR_EFULL past 300 names. */
int vr_health_set(vr_health *h, const char *service, enum vr_health_status status);
/* Sets every known service (and "") to status, e.g. NOT_SERVING when
 * shutting down. */
void vr_health_set_all(vr_health *h, enum vr_health_status status);

#endif
