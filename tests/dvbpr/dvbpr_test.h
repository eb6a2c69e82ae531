/* Helpers of the DVBPR tests: featured's service in this process behind a
 * real gRPC server on 127.0.0.1 (so the split protocol runs over real
 * sockets), items put through its executor, generated JPEGs. */
#ifndef DVBPR_TEST_H
#define DVBPR_TEST_H

#include "err.h"
#include "executor.h"
#include "harness.h"
#include "jpeg_fixtures.h"
#include "rpc.h"
#include "service.h"
#include "store.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fd_proc {
	vr_store *st;
	fd_service svc;
	vr_server *srv;
	char addr[64];
	char dir[256];
};

/* Starts featured's service on data dir dir, its first model arch at
 * size px storing layer's activations (NULL: the output). */
static inline int dvt_featured_start_model(struct fd_proc *p, const char *dir, const char *arch,
					   int size, const char *layer)
{
	char err[512] = "";
	memset(p, 0, sizeof *p);
	snprintf(p->dir, sizeof p->dir, "%s", dir);
	vr_store_opts so = { .no_sync = 1 };
	fd_config cfg = { .data_dir = p->dir, .backend = "cpu",
			  .model = { .arch = arch, .input_size = size, .layer = layer, .init_seed = 1 },
			  .batch = 16, .batch_wait_ms = 1, .max_image_bytes = 1 << 24,
			  .max_image_pixels = 1 << 24 };
	int rc = vr_store_open(&p->st, dir, &so);
	if (!rc)
		rc = fd_service_open(&p->svc, p->st, &cfg, err, sizeof err);
	vr_server_opts o = { .listen = "127.0.0.1:0", .threads = 2, .max_message_bytes = 64 << 20 };
	if (!rc)
		rc = vr_server_create(&p->srv, &o);
	if (!rc)
		rc = fd_service_register(&p->svc, p->srv);
	if (!rc)
		rc = vr_server_start(p->srv);
	if (rc) {
		fprintf(stderr, "  featured: %s %s\n", vr_strerror(rc), err);
		return rc;
	}
	snprintf(p->addr, sizeof p->addr, "127.0.0.1:%d", vr_server_port(p->srv));
	return 0;
}

/* featured with the small net at size px. */
static inline int dvt_featured_start(struct fd_proc *p, const char *dir, int size)
{
	return dvt_featured_start_model(p, dir, "small", size, NULL);
}

static inline void dvt_featured_stop(struct fd_proc *p)
{
	vr_server_destroy(p->srv);
	p->srv = NULL;
	if (p->svc.ex || p->svc.fs)
		fd_service_close(&p->svc);
	vr_store_close(p->st);
	p->st = NULL;
}

/* A generated picture for item k: its colours and pattern vary with
 * (cls, k), so a net can tell classes apart. Free with vr_jpeg_free. */
static inline uint8_t *dvt_jpeg(unsigned k, size_t *len)
{
	return fixture_jpeg(40 + (int)(k * 7 % 40), 36 + (int)(k * 5 % 30), k + 1, VR_SUBSAMP_444, 90,
			    len);
}

/* Puts n items (ids[k], jpegs[k]) through the executor, in order. */
static inline int dvt_put(struct fd_proc *p, char **ids, uint8_t **jpeg, size_t *len, int n)
{
	fd_waiter w;
	fd_waiter_init(&w);
	int rc = 0;
	for (int k = 0; k < n && !rc; k++) {
		fd_job job;
		fd_job_init(&job, ids[k], jpeg[k], len[k], 0, &w);
		if (!(rc = fd_executor_submit(p->svc.ex, &job, 10000))) {
			if (!fd_job_wait(&job, 30000))
				rc = VR_ETIMEDOUT;
			else
				rc = job.rc;
		}
	}
	fd_waiter_destroy(&w);
	return rc;
}

static inline vr_channel *dvt_channel(const char *addr)
{
	vr_channel *ch = NULL;
	vr_channel_opts o = { .max_message_bytes = 64 << 20 };
	vr_channel_create(&ch, addr, &o);
	return ch;
}

#endif
