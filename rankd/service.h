/* rankd's gRPC service: the visrec.v1.Rank method table and the state its
 * handlers share. Later work swaps handlers into the table in service.c
 * and adds fields here; main.c only creates and registers it. */
#ifndef RK_SERVICE_H
#define RK_SERVICE_H

#include "rpc.h"
#include "store.h"

typedef struct rk_service {
	vr_store *store;          /* the daemon's LMDB environment (not owned) */
	vr_channel *featured;     /* channel to featured (not owned) */
	const char *featured_addr;
} rk_service;

/* Adds every visrec.v1.Rank method to srv, each handler getting svc.
 * Returns 0 or the error of vr_server_add_service. */
int rk_service_register(rk_service *svc, vr_server *srv);

#endif
