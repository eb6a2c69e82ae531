/* featured_client: rankd's side of featured's change feed: featured's
 * position in it (Info), and a follower of it (Watch) that keeps rankd's
 * catalogue current without retraining. Item vectors come from every
 * shard at once through common/featured_shards.h.
 *
 * The follower is one thread that holds one Watch(after_seq, with vectors)
 * open and hands each change to a callback, in sequence order. When the
 * stream ends (featured restarts, the network fails) it reconnects from the
 * last change the callback accepted, after a back-off that doubles from
 * 100 ms to 5 s while featured stays away. A rewind makes it start over
 * from an earlier sequence (rankd does that when it swaps in a model built
 * from a GetVectors that may have missed the latest changes). Stopping
 * cancels the open call and joins the thread. */
#ifndef RK_FEATURED_CLIENT_H
#define RK_FEATURED_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "rpc.h"
#include "visrec/v1/featured.pb-c.h"

/* featured's last change-feed sequence (Info.last_seq). Returns 0 or
 * VR_ERPC with st filled. */
int rk_fc_last_seq(vr_channel *ch, uint64_t *seq, vr_status *st);

/* Called by the follower's thread for each change, in order. Return 0 to
 * accept it (the follower then resumes after its seq), VR_ECANCELLED to
 * have the follower drop the stream and reopen it at once (after a rewind),
 * anything else to retry the change after the back-off. */
typedef int (*rk_follow_fn)(void *ctx, const Visrec__V1__ItemChange *change);

typedef struct rk_follower rk_follower;

/* Starts following featured's changes after after_seq. Returns 0,
 * VR_ENOMEM, or -errno when the thread cannot start. */
int rk_follower_start(rk_follower **out, vr_channel *ch, uint64_t after_seq, rk_follow_fn fn,
		      void *ctx);
/* Makes the follower start over after seq (if it is below where it is):
 * the open Watch is cancelled and reopened. Any thread. */
void rk_follower_rewind(rk_follower *f, uint64_t seq);
/* 1 while a rewind is requested and the follower has not reopened yet. */
int rk_follower_rewinding(rk_follower *f);
/* The sequence of the last change accepted (or after_seq). */
uint64_t rk_follower_seq(rk_follower *f);
/* 1 while a Watch is open and featured has answered it. */
int rk_follower_streaming(rk_follower *f);
/* Stops and frees the follower. NULL is a no-op. */
void rk_follower_stop(rk_follower *f);

#endif
