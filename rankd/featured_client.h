/* featured_client: rankd's side of featured's change feed: featured's
 * position in it (Info), and a follower of it (Watch) that keeps rankd's
 * catalogue current without retraining. Item vectors come from every
 * shard at once through common/featured_shards.h; rankd runs one follower
 * per shard (service.c), each with its own position in its shard's feed.
 *
 * A follower is one thread that holds one Watch(after_seq, with vectors)
 * open and hands each change to a callback, in sequence order. Before it
 * opens a Watch while it is not connected, it asks the shard's Info (which
 * answers at once, unlike a Watch with nothing new to send): an answer
 * makes it connected, and the next broken Watch or failed Info makes it
 * not connected again, with the reason kept (rk_follower_state) and a
 * second callback told of each change of state. When the stream ends
 * (featured restarts, the network fails) it reconnects from the last
 * change the callback accepted, after a back-off that doubles from 100 ms
 * to 5 s while featured stays away. A rewind makes it start over from an
 * earlier sequence (rankd does that when it swaps in a model built from a
 * GetVectors that may have missed the latest changes). Stopping cancels
 * the open call and joins the thread. */
#ifndef RK_FEATURED_CLIENT_H
#define RK_FEATURED_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "rpc.h"
#include "visrec/v1/featured.pb-c.h"

/* Called by the follower's thread for each change, in order. Return 0 to
 * accept it (the follower then resumes after its seq), VR_ECANCELLED to
 * have the follower drop the stream and reopen it at once (after a rewind),
 * anything else to retry the change after the back-off. */
typedef int (*rk_follow_fn)(void *ctx, const Visrec__V1__ItemChange *change);

/* Called by the follower's thread, with no lock held, when it becomes
 * connected (error NULL) or stops being connected (error: why, e.g.
 * "UNAVAILABLE: failed to connect to all addresses"). */
typedef void (*rk_follow_state_fn)(void *ctx, int connected, const char *error);

typedef struct rk_follower rk_follower;

/* Starts following the change feed of the featured at ch (name: its
 * address, for logs) after after_seq: fn gets each change, state_fn (may
 * be NULL) each change of state, both with ctx. Returns 0, VR_ENOMEM, or
 * -errno when the thread cannot start. */
int rk_follower_start(rk_follower **out, vr_channel *ch, const char *name, uint64_t after_seq,
		      rk_follow_fn fn, rk_follow_state_fn state_fn, void *ctx);
/* Makes the follower start over after seq (if it is below where it is):
 * the open Watch is cancelled and reopened. Any thread. */
void rk_follower_rewind(rk_follower *f, uint64_t seq);
/* 1 while a rewind is requested and the follower has not reopened yet. */
int rk_follower_rewinding(rk_follower *f);
/* The sequence of the last change accepted (or after_seq). */
uint64_t rk_follower_seq(rk_follower *f);
/* Where a follower stands. */
typedef struct rk_follower_state {
	uint64_t seq;          /* the last change accepted (or after_seq) */
	uint64_t head;         /* featured's last seq when it last answered Info */
	int connected;         /* featured answered, and no Watch broke since */
	int64_t since_unix_ms; /* when connected last changed (the start, before) */
	char error[256];       /* why the feed last broke or Info failed; "" never */
} rk_follower_state;

void rk_follower_state_get(rk_follower *f, rk_follower_state *out);
/* Stops the follower's thread (cancels its call, joins it) and keeps the
 * follower: its seq and state stay readable until rk_follower_stop. One
 * thread at a time; NULL is a no-op. */
void rk_follower_halt(rk_follower *f);
/* Stops (when not halted yet) and frees the follower. NULL is a no-op. */
void rk_follower_stop(rk_follower *f);

#endif
