/* featured_shards: a client of every featured shard of a shard list
 * (shardmap.h), for rankd and the visrec CLI. It holds one channel per
 * shard, each sending the map's tag with every call, routes an item to
 * its owner, and fans calls out to all shards at once and merges them:
 * GetVectors streamed from every shard in parallel, Info of every shard.
 * A list of one address is today's single featured: one channel, no tag.
 *
 * Functions here block the calling thread; fan-outs run one thread per
 * shard for the length of the call and return when every shard answered
 * or failed. */
#ifndef VR_FEATURED_SHARDS_H
#define VR_FEATURED_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include "rpc.h"
#include "shardmap.h"
#include "visrec/v1/featured.pb-c.h"

typedef struct vr_shards vr_shards;

/* Parses list (shardmap.h) and creates a channel to every shard with opts
 * (may be NULL; its shard_map is set here). Returns 0; VR_EINVAL or
 * VR_ETOOBIG for a bad list (why says what is wrong, cap bytes), or a
 * vr_channel_create error (why names the shard); VR_ENOMEM. */
int vr_shards_open(vr_shards **out, const char *list, const vr_channel_opts *opts, char *why,
		   size_t cap);
/* Frees the channels; their calls must be finished. NULL is a no-op. */
void vr_shards_close(vr_shards *s);

const vr_shardmap *vr_shards_map(const vr_shards *s);
/* Shards in the map (>= 1). */
size_t vr_shards_count(const vr_shards *s);
/* Shard k's name (its address) and channel, k < count. */
const char *vr_shards_name(const vr_shards *s, size_t k);
vr_channel *vr_shards_channel(const vr_shards *s, size_t k);
/* The index of the shard that owns item id. */
size_t vr_shards_owner(const vr_shards *s, const char *id);

/* Called per vector of GetVectors, by one thread at a time (calls are
 * serialised across shards): the shard it came from, the id, its values
 * (dims floats) and the model version that made them. Non-zero stops every
 * shard's transfer and is returned by vr_shards_get_vectors. */
typedef int (*vr_shards_vector_fn)(void *ctx, size_t shard, const char *item_id,
				   const float *values, uint32_t dims, uint32_t model_version);

/* Streams vectors of model version `version` (0: each shard's active one,
 * which must then be the same on every shard) from every shard at once
 * through fn: all of them when ids is NULL, else those of the n_ids ids,
 * each asked of its owner only (unknown ids and ids with no vector of that
 * version are left out). *dims and *model_version are those of the
 * vectors (0 when no shard holds any). deadline_ms per shard's call (0:
 * none). Returns 0; VR_ERPC when a shard's call fails, st then names the
 * shard and holds its status (the other shards' transfers are cancelled);
 * VR_ECORRUPT when the shards or a shard's messages disagree (dims or
 * version differing between shards or mid-stream, a vector of the wrong
 * length), st INTERNAL naming the shard; VR_ENOMEM; or fn's code. */
int vr_shards_get_vectors(vr_shards *s, uint32_t version, const char *const *ids, size_t n_ids,
			  vr_shards_vector_fn fn, void *ctx, uint32_t *dims,
			  uint32_t *model_version, int64_t deadline_ms, vr_status *st);

/* Info of every shard at once: resp[k] (the caller frees each with
 * protobuf_c_message_free_unpacked) or NULL with st[k] saying why, for k
 * below count; both arrays hold count entries. Returns the number of
 * shards that failed (0: all answered), or VR_ENOMEM. */
int vr_shards_info(vr_shards *s, Visrec__V1__FeaturedInfoResponse **resp, vr_status *st,
		   int64_t deadline_ms);

#endif
