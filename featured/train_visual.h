/* train_visual: featured's half of DVBPR's split training, the
 * visrec.v1.Featured/TrainVisual bidi stream (DESIGN.md section 2).
 *
 * rankd owns θ_u, γ and β and samples the triples; featured owns the CNN φ.
 * One stream is one session:
 *   Start   featured builds the net (arch, K, S; seeded init, or the
 *           session's checkpoint when resume is set), Adam over it, and
 *           decodes every stored item's image ONCE into an in-memory cache
 *           of S×S×3 bytes per item (N·S²·3 bytes: 9,633 items take 118 MB
 *           at 64 px, 1.45 GB at 224 px), so no step decodes JPEG. Items
 *           put after Start are not in the cache (NOT_FOUND if a step names
 *           one). Replies Started with the step it stands at.
 *   Step s  (s = the last step + 1; anything else is FAILED_PRECONDITION, so
 *           a restarted peer is detected) with n triples (i, j, θ_u, m):
 *           one training-mode forward of the 2n images [i..., j...] gives
 *           φ_i, φ_j; x = m + θ_u·(φ_i − φ_j); loss = −ln σ(x); g = σ(−x);
 *           the batch loss is the SUM over triples (as rankd's minibatch
 *           trainer and the tutorial's reduction="sum"), so
 *           dL/dφ_i = −g θ_u, dL/dφ_j = +g θ_u per triple, unscaled; one
 *           backward, one Adam step (L2 weight decay in the gradient, as
 *           torch.optim.Adam). Replies loss, g and dL/dθ_u = −g (φ_i − φ_j).
 *   Embed   with n <= FD_TV_MAX_TRIPLES item ids: φ of each with the
 *           current net in evaluation mode (dropout off), replied as
 *           Embedded (n × K values), training nothing: rankd's per-epoch
 *           validation. It may come between any two steps.
 *   MarkBest  keeps the net as it is now (no Adam state) as the session's
 *           best, in DATA/train/<session>.best.safetensors tagged with its
 *           step, replacing the one kept before; replies Marked with the
 *           step. rankd sends it after an epoch whose validation AUC is the
 *           best so far, so the net it serves is that epoch's (a file, so a
 *           resumed session after a restart of featured still has it).
 *   Finish  reembed: the trained net becomes a new model version (purpose
 *           "embedding", K dims) and every item is embedded with it; the
 *           active version does NOT change (VBPR's features stay GetVectors'
 *           default): the new version becomes live (executor.h), so items
 *           put later get its vector too, with a REEMBEDDED change of it.
 *           Replies Finished with the version, which rankd's DVBPR model
 *           fetches (GetVectors model_version) and follows in Watch.
 *           With from_step the net is the one MarkBest kept at that step
 *           (FAILED_PRECONDITION when the kept one is of another step or
 *           none was kept). Without reembed the session just ends.
 * Trunk sessions (Start's trunk_layer): the trunk is featured's active
 * model (arch, input size, weights) up to trunk_layer, frozen; at Start it
 * computes every item's activations once into memory (N × C×H×W floats:
 * 9,633 items at block_10 of mobilenet_v2 at 96 px, 96×6×6, take 133 MB;
 * over --max-trunk-cache-mb is RESOURCE_EXHAUSTED), and the session's net
 * is only the part above the cut: head_width > 0, a conv1x1 head
 * (nn.h), else the active model's upper layers (fine-tuned from its
 * weights, the last resized to K). Steps and Embed run that part alone
 * and take up to FD_TV_MAX_HEAD_TRIPLES. Finish assembles trunk + trained
 * part into one net on images, the new version.
 * Checkpoints: every checkpoint_every steps (default 200) and at Finish the
 * net with its Adam state is saved to DATA/train/<session>.safetensors
 * (written aside and renamed); a Start with resume and the same session
 * reopens it and answers the step it holds (Adam's step count).
 *
 * One session at a time per process: a second TrainVisual while one runs
 * gets FAILED_PRECONDITION. The network work runs on the executor thread
 * (fd_executor_call), between ingest batches. */
#ifndef FD_TRAIN_VISUAL_H
#define FD_TRAIN_VISUAL_H

#include "rpc.h"
#include "visrec/v1/featured.pb-c.h"

#include <stddef.h>

/* Most triples per step (the net holds 2× as many images), and in a
 * trunk session, whose step runs only the part above the cut. */
#define FD_TV_MAX_TRIPLES 128
#define FD_TV_MAX_HEAD_TRIPLES 1024

/* Where checkpoints and new model versions go; call once before serving
 * (fd_service_open does). */
void fd_train_visual_configure(const char *data_dir);

/* The checks of a Start and of a step's sizes (dims: the session's K)
 * that need no session state: GRPC_STATUS_OK, or INVALID_ARGUMENT with
 * the reason in why (cap bytes). The handler runs them first. */
int fd_tv_check_start(const Visrec__V1__TrainVisualStart *m, char *why, size_t cap);
int fd_tv_check_step(const Visrec__V1__TrainVisualStep *m, size_t dims, int max_triples,
		     char *why, size_t cap);
/* The most triples a step (and items an Embed) of a session started with
 * m may carry: FD_TV_MAX_HEAD_TRIPLES with a trunk, else FD_TV_MAX_TRIPLES. */
int fd_tv_max_triples(const Visrec__V1__TrainVisualStart *m);

/* The TrainVisual handler; ctx is the fd_service. Errors go to the call's
 * status: INVALID_ARGUMENT (bad start or step), FAILED_PRECONDITION (no
 * Start first, session or step mismatch, another session running, resume
 * without a checkpoint), NOT_FOUND (an item not in the cache), and the
 * network's or store's errors. */
int fd_train_visual(vr_call *call, void *ctx);

#endif
