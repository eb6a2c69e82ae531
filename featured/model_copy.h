/* model_copy: copying model versions from one featured shard to a new one,
 * so that every shard embeds with the same weights under the same version
 * numbers (resharding moves vectors as they are: a shard whose version 1
 * were other weights would mix two embeddings under one number).
 *
 * The sender is the GetModel handler: the version's row, then its weights
 * file in chunks, then a checksum. The receiver is fd_models_fetch, run by
 * a featured started with --models-from ADDR on a data directory that holds
 * no item yet, before its executor opens the active model: it copies every
 * version ADDR holds, the active one first (so a crash after it leaves a
 * data directory that starts, and a restart with the flag copies the
 * rest), each file written beside its final name, checked against size
 * and checksum, synced, then renamed, and only then its row added. Live
 * versions are set last. A version already there with the same row is
 * skipped, one with another row is an error: nothing is overwritten. */
#ifndef FD_MODEL_COPY_H
#define FD_MODEL_COPY_H

#include "fstore.h"
#include "rpc.h"

#include <stddef.h>

/* Copies ADDR's model versions into fs and data_dir as above, calling
 * with token (may be NULL) as an admin. Returns 0, or an error with the
 * cause in err: VR_ERPC (ADDR failed; err has its status), VR_ECORRUPT (a
 * file whose size or checksum disagrees, a row that does not parse or
 * names another file than models/v<N>.safetensors), VR_EEXIST (a version
 * here differs from ADDR's), -errno, VR_ENOMEM, the store's errors. */
int fd_models_fetch(fd_fstore *fs, const char *data_dir, const char *addr, const char *token,
		    char *err, size_t errlen);

/* The GetModel handler (ctx is the fd_service). */
int fd_get_model(vr_call *call, void *ctx);

/* The AdoptModel handler (featured.proto; ctx is the fd_service): copies
 * one version from another shard as fd_models_fetch copies each (same
 * row, same number; another row under that number is FAILED_PRECONDITION)
 * while the daemon runs (after any other version the sender holds and this
 * shard lacks, neither active nor live: versions stay the same on every
 * shard), then re-embeds this shard's items with it and makes it live
 * (fd_executor_reembed, FD_REEMBED_LIVE). A version live or
 * active here already answers once its row is checked against the
 * sender's, without re-embedding. */
int fd_adopt_model(vr_call *call, void *ctx);
/* AdoptModel's request check: GRPC_STATUS_OK, or FAILED_PRECONDITION
 * (featured not sharded) or INVALID_ARGUMENT (version 0, from not another
 * entry of the shard list) with the reason in why (cap bytes). */
struct fd_service;
struct Visrec__V1__AdoptModelRequest;
int fd_adopt_check(const struct fd_service *svc, const struct Visrec__V1__AdoptModelRequest *req,
		   char *why, size_t cap);

#endif
