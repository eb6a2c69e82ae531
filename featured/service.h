/* featured's gRPC service: the visrec.v1.Featured method table and the
 * state its handlers share. Later work swaps handlers into the table in
 * service.c and adds fields here; main.c only creates and registers it. */
#ifndef FD_SERVICE_H
#define FD_SERVICE_H

#include "rpc.h"
#include "store.h"

typedef struct fd_service {
	vr_store *store; /* the daemon's LMDB environment (not owned) */
} fd_service;

/* Adds every visrec.v1.Featured method to srv, each handler getting svc.
 * Returns 0 or the error of vr_server_add_service. */
int fd_service_register(fd_service *svc, vr_server *srv);

#endif
