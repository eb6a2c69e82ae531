/* train_visual: the TrainVisual handler (protocol in train_visual.h).
 *
 * DESIGN
 * Threads. The stream runs on a handler thread of its own (a bidi call).
 * It reads a message, does the cheap part (checks, mapping item ids to
 * cached images, packing the reply) and hands the network part to the
 * executor thread with fd_executor_call, which owns the backend: building
 * the net and its optimiser, the image set, a step's forward, backward and
 * Adam step, checkpoint saves, and freeing them. The image cache is built
 * at Start a chunk at a time: a short read transaction copies a chunk's
 * JPEGs out of the images database (never one transaction over all of
 * them, which would stall a map resize: store.h), then DECODE_THREADS
 * short-lived threads (a decoder each) decode it, joined before the next
 * chunk; then the executor copies it into an image set on the backend
 * (nn_images: on a GPU, so a step sends 2n indices instead of 2n images)
 * and the host copy is freed. A GPU without room for it leaves the cache
 * in host memory, and steps send the images as before.
 * Ownership. The session (struct tv) belongs to the handler thread; its
 * net and optimiser are touched only inside executor tasks. At Finish with
 * reembed the net passes to the executor (fd_executor_reembed) and the
 * session forgets it.
 * End. The stream ends at Finish, when rankd half-closes or cancels, or on
 * the first error; the session's net is then freed on the executor thread,
 * and the process-wide busy flag is released.
 * Cancellation. The long passes look at the call between batches
 * (stopped()): reading and decoding the images (a chunk), the trunk pass
 * (TRUNK_BATCH items) and Finish's re-embedding (between chunks of
 * --batch items, and between the layers of each chunk's forward), so a
 * cancel by rankd, a deadline, or featured's shutdown ends them within
 * one batch (the re-embedding within one layer), not at the end of the
 * pass. The trunk pass and the re-embedding's forwards run on the
 * executor thread while the handler waits for them: the handler lends it
 * the call, which only that task touches meanwhile (rpc.h). A cancelled Start leaves
 * nothing behind; a cancelled Finish leaves its new version inactive and
 * not live (its vectors written so far stay, as after any failed
 * re-embedding), so nothing serves it.
 *
 * Why one file at ~1,040 lines: it is the one TrainVisual session, from
 * Start through steps and checkpoints to Finish; every part touches the
 * session struct and the executor tasks above. */
#include "train_visual.h"

#include "decode.h"
#include "deadline.h"
#include "err.h"
#include "executor.h"
#include "grow.h"
#include "log.h"
#include "models.h"
#include "safetensors.h"
#include "service.h"
#include "visrec/v1/featured.pb-c.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHECKPOINT_EVERY 200
#define MAX_SESSION 64
#define DECODE_THREADS 2   /* decoders building a session's image cache */
#define READ_CHUNK 64      /* items read from the store per read transaction */
#define READ_CHUNK_BYTES (8u << 20) /* ... or this much JPEG, whichever comes first */
#define PEER_MS 120000     /* one GetImages page of another shard */
#define TRUNK_BATCH 16     /* items per trunk forward; cancellation is seen between them */

static char g_data_dir[4096] = ".";
static atomic_int g_busy;

void fd_train_visual_configure(const char *data_dir)
{
	snprintf(g_data_dir, sizeof g_data_dir, "%s", data_dir ? data_dir : ".");
}

struct tv {
	fd_service *svc;
	vr_call *call;         /* the stream; lent to trunk_task while it runs */
	char session[MAX_SESSION + 1];
	char arch[32];
	int dims, size, every;
	float lr, wd;
	uint64_t seed, step;
	int resume;
	int all_shards;        /* cache every shard's items (the DVBPR trainer) */
	int peer_code;         /* a peer's GetImages status when it failed */
	char ckpt[4400];
	char best[4400];       /* the net mark_best kept (no optimiser state) */
	/* executor thread only */
	nn_net *net;
	nn_optim *opt;
	/* the image cache: n items, ids sorted (LMDB key order), their pixels
	 * in an image set on the backend, else (no room there) on the host */
	size_t n_items;        /* distinct ids, in ids and slot */
	size_t n_cached;       /* images in the cache (n_items, or more after duplicates) */
	char **ids;
	uint32_t *slot;        /* sorted position -> cache index (sources read in turn) */
	char *id_blob;
	uint8_t *pix;
	nn_images *set;        /* executor thread only */
	/* per-step buffers, allocated once at Start */
	uint32_t *idx;         /* 2 × max triples: the step's items, as cache indices */
	const uint8_t **img;   /* the same as host images, when there is no set */
	float *phi, *dphi;     /* 2 × max triples × K */
	float *out;            /* a reply: loss, g (max triples each), dtheta */
	/* a trunk session (trunk_layer): the active model's net up to the
	 * cut computes every item's activations once (act, n_items × act_n
	 * floats); net is then the part above the cut and a step gathers its
	 * input rows into x */
	char trunk_layer[32], weights[4400];
	int head_width, head_norm, max_triples;
	uint32_t trunk_outputs;
	nn_net *trunk;         /* executor thread only; kept for Finish */
	float *act, *x;
	size_t act_n;
	uint64_t cap_bytes;
	/* the current step (set by the handler before the task) */
	size_t n;
	const float *theta, *margin;
	float *loss, *g, *dtheta;
	double net_s;
	char err[512];
};

/* ---- the image cache --------------------------------------------------- */

static int cmp_id(const void *key, const void *elem)
{
	return strcmp(key, *(char *const *)elem);
}

/* The cache index of item id, or -1. */
static long cached(const struct tv *s, const char *id)
{
	char **hit = bsearch(id, s->ids, s->n_items, sizeof *s->ids, cmp_id);
	return hit ? (long)s->slot[hit - s->ids] : -1;
}

/* Whether the stream's client cancelled (or its deadline passed):
 * VR_ECANCELLED, or featured is shutting down: VR_ESHUTDOWN (UNAVAILABLE
 * to rankd, which may resume), with s->err naming the phase and how far
 * it got (done of total items); else 0. Called between the batches of a
 * long pass by whichever thread holds the call. */
static int stopped(struct tv *s, const char *phase, size_t done, size_t total)
{
	if (!vr_call_stopping(s->call))
		return 0;
	int down = vr_call_server_stopping(s->call);
	snprintf(s->err, sizeof s->err, "%s during %s, after %zu of %zu items",
		 down ? "featured is shutting down" : "cancelled by the client", phase, done, total);
	return down ? VR_ESHUTDOWN : VR_ECANCELLED;
}

/* fd_executor_reembed's stop: the call is cancelled or featured stops.
 * Also asked on the executor thread between a chunk's layers, while the
 * handler waits in fd_executor_reembed (the call lent, as to the trunk
 * pass). */
static int reembed_stop(void *arg)
{
	return vr_call_stopping(((struct tv *)arg)->call);
}

/* One decode thread's share of a chunk: items k ≡ first (mod step) of the
 * chunk's count, which land at cache index base + k. */
struct slice {
	struct tv *s;
	fd_decoder *dec;
	const uint8_t *jpeg;   /* the chunk's JPEGs, back to back */
	const size_t *joff, *jlen;
	const size_t *id_off;  /* cache index -> offset of its id in s->id_blob */
	size_t base, count, first, step;
	pthread_t tid;
	int rc;
	char why[352];  /* item id (64) + the decoder's 256-byte reason */
};

static void *decode_slice(void *arg)
{
	struct slice *c = arg;
	struct tv *s = c->s;
	size_t px = (size_t)s->size * s->size * 3;
	for (size_t k = c->first; k < c->count && !c->rc; k += c->step) {
		char why[256] = "";
		c->rc = fd_decode(c->dec, c->jpeg + c->joff[k], c->jlen[k], s->size, 0,
				  s->pix + (c->base + k) * px, NULL, why, sizeof why);
		if (c->rc)
			snprintf(c->why, sizeof c->why, "item \"%.64s\": %s",
				 s->id_blob + c->id_off[c->base + k], why);
	}
	return NULL;
}

/* A chunk of stored items being read: their ids go to the session's blob
 * (offsets in id_off, since the blob moves as it grows), their JPEGs are
 * copied out of the map so that no read transaction is open while they
 * decode. */
struct reading {
	size_t n;               /* items read so far */
	size_t *id_off;
	uint64_t cap;           /* room in id_off */
	size_t id_used;
	uint64_t id_cap;
	uint8_t *jpeg;          /* this chunk's JPEGs */
	size_t jpeg_used;
	uint64_t jpeg_cap;
	size_t joff[READ_CHUNK], jlen[READ_CHUNK], m;
	char after[FD_MAX_ID + 1]; /* the last id read from the source being read */
};

/* Adds one item to the chunk being read. */
static int chunk_add(struct tv *s, struct reading *r, const char *id, size_t id_len,
		     const void *image, size_t image_len)
{
	size_t k = r->n + r->m;
	int rc;
	if ((rc = vr_grow((void **)&r->id_off, sizeof *r->id_off, k + 1, &r->cap)) ||
	    (rc = vr_grow((void **)&s->id_blob, 1, r->id_used + id_len + 1, &r->id_cap)) ||
	    (rc = vr_grow((void **)&r->jpeg, 1, r->jpeg_used + image_len, &r->jpeg_cap)))
		return rc;
	memcpy(s->id_blob + r->id_used, id, id_len);
	s->id_blob[r->id_used + id_len] = 0;
	memcpy(r->after, id, id_len);
	r->after[id_len] = 0;
	r->id_off[k] = r->id_used;
	r->id_used += id_len + 1;
	memcpy(r->jpeg + r->jpeg_used, image, image_len);
	r->joff[r->m] = r->jpeg_used;
	r->jlen[r->m] = image_len;
	r->jpeg_used += image_len;
	r->m++;
	return 0;
}

/* Reads the next chunk (at most READ_CHUNK items or READ_CHUNK_BYTES of
 * JPEG, at least one item) after r->after, in one short read
 * transaction. r->m is 0 past the last item. */
static int read_chunk(struct tv *s, struct reading *r)
{
	fd_fstore *fs = s->svc->fs;
	vr_txn *txn = NULL;
	fd_item it;
	char after[FD_MAX_ID + 1];
	snprintf(after, sizeof after, "%s", r->after);
	r->m = 0;
	r->jpeg_used = 0;
	int rc = vr_store_read_begin(fd_fstore_store(fs), &txn);
	while (!rc && r->m < READ_CHUNK && (!r->m || r->jpeg_used < READ_CHUNK_BYTES) &&
	       !(rc = fd_fstore_item_next(fs, txn, after, &it)) &&
	       !(rc = chunk_add(s, r, it.item_id, it.id_len, it.image, it.image_len)))
		snprintf(after, sizeof after, "%s", r->after);
	vr_store_read_end(txn);
	return rc == VR_ENOTFOUND ? 0 : rc;
}

/* The next chunk of another shard's items (all_shards), after r->after:
 * one GetImages page (at most READ_CHUNK items, featured's byte bound),
 * with the stream's cancellation passed on. r->m is 0 past its last. */
static int read_peer(struct tv *s, struct reading *r, vr_channel *ch, const char *name)
{
	Visrec__V1__GetImagesRequest req = VISREC__V1__GET_IMAGES_REQUEST__INIT;
	vr_ccall *cc = NULL;
	vr_status st = { 0 };
	char after[FD_MAX_ID + 1];
	snprintf(after, sizeof after, "%s", r->after);
	req.after = after;
	req.max_items = READ_CHUNK;
	r->m = 0;
	r->jpeg_used = 0;
	int rc = vr_ccall_start(&cc, ch, "/visrec.v1.Featured/GetImages",
				&visrec__v1__item_image__descriptor, PEER_MS, s->call);
	if (!rc && !(rc = vr_ccall_send(cc, &req.base)))
		rc = vr_ccall_close_send(cc);
	while (!rc) {
		Visrec__V1__ItemImage *im = NULL;
		if ((rc = vr_ccall_recv(cc, (ProtobufCMessage **)&im))) {
			rc = rc == VR_EEOF ? 0 : rc;
			break;
		}
		size_t len = strlen(im->item_id);
		if (r->m >= READ_CHUNK || !len || len > FD_MAX_ID || !im->image.len ||
		    strcmp(im->item_id, r->after) <= 0) {
			snprintf(s->err, sizeof s->err, "shard %s answered GetImages out of its contract "
				 "(more than %d items, a bad id or an empty image)", name, READ_CHUNK);
			rc = VR_ECORRUPT;
		} else {
			rc = chunk_add(s, r, im->item_id, len, im->image.data, im->image.len);
		}
		protobuf_c_message_free_unpacked(&im->base, NULL);
	}
	if (cc) {
		if (rc && rc != VR_ERPC)
			vr_ccall_cancel(cc);
		int frc = vr_ccall_finish(cc, &st);
		if (frc && (!rc || rc == VR_ERPC)) {
			rc = VR_ERPC;
			s->peer_code = st.code;
			snprintf(s->err, sizeof s->err, "reading the images of shard %s: GetImages "
				 "failed: %s: %s", name, vr_status_name(st.code), st.message);
		}
	}
	if (rc && !s->err[0])
		snprintf(s->err, sizeof s->err, "reading the images of shard %s: %s", name,
			 vr_strerror(rc));
	return rc;
}

/* The trunk activations of n items must fit featured's cap. */
static int trunk_fits(struct tv *s, size_t n)
{
	if (!s->trunk_layer[0] || (double)n * s->act_n * sizeof(float) <= (double)s->cap_bytes)
		return 0;
	snprintf(s->err, sizeof s->err, "the trunk activations of %zu items at %s take %.0f MB "
		 "(%zu floats each), over featured's --max-trunk-cache-mb %.0f: cut higher, use a "
		 "smaller input_size, or raise the flag", n, s->trunk_layer,
		 (double)n * s->act_n * sizeof(float) / 1e6, s->act_n, (double)s->cap_bytes / 1e6);
	return VR_EFULL;
}

struct sorted {
	const char *id;
	uint32_t k;
};

static int cmp_sorted(const void *a, const void *b)
{
	return strcmp(((const struct sorted *)a)->id, ((const struct sorted *)b)->id);
}

/* The cache's ids in sorted order for cached()'s search, each with its
 * cache index (the sources were read one after another). An id read twice
 * (an item a reshard is moving, on two shards for a moment) keeps its
 * first copy. */
static int cache_index(struct tv *s, const size_t *id_off, size_t n)
{
	struct sorted *e = malloc((n ? n : 1) * sizeof *e);
	if (!e || !(s->ids = malloc(n * sizeof *s->ids)) || !(s->slot = malloc(n * sizeof *s->slot))) {
		free(e);
		return VR_ENOMEM;
	}
	for (size_t k = 0; k < n; k++)
		e[k] = (struct sorted){ s->id_blob + id_off[k], (uint32_t)k };
	qsort(e, n, sizeof *e, cmp_sorted);
	size_t m = 0;
	for (size_t k = 0; k < n; k++) {
		if (m && !strcmp(e[k].id, s->ids[m - 1]))
			continue;
		s->ids[m] = (char *)e[k].id;
		s->slot[m++] = e[k].k;
	}
	if (m < n)
		VR_WARN("TrainVisual %s: %zu items were read from two shards (a reshard moving "
			"them?); each keeps one image", s->session, n - m);
	s->n_items = m;
	s->n_cached = n;
	free(e);
	return 0;
}

/* Decodes every stored item into the cache, a chunk at a time: one short
 * read transaction copies a chunk's ids and JPEGs out of the map (a
 * transaction held across all the decoding would hold off every write
 * that must grow the map: store.h), then DECODE_THREADS threads, each
 * with its own decoder, decode an interleaved share of it. Items stored
 * meanwhile are in the cache if their ids sort after the chunk being read.
 * With all_shards on a shard, the other shards' items follow, a GetImages
 * page per chunk from each in turn (the map's order), decoded the same
 * way; the cache then holds every item of the map. */
static int cache_build(struct tv *s)
{
	struct reading r = { 0 };
	fd_decoder *dec[DECODE_THREADS] = { 0 };
	size_t px = (size_t)s->size * s->size * 3, pix_cap = 0;
	uint64_t stored = 0, last_seq;
	const vr_shardmap *map = s->all_shards && s->svc->shards && s->svc->shards->n > 1 ?
		s->svc->shards : NULL;
	size_t src = 0, nsrc = map ? map->n + 1 : 1; /* 0: this store; k > 0: map shard k - 1 */
	vr_channel *ch = NULL;
	int rc = fd_fstore_stats(s->svc->fs, &stored, &last_seq);
	for (int t = 0; !rc && t < DECODE_THREADS; t++)
		rc = fd_decoder_create(&dec[t], NULL);
	/* The count sizes the pixels; items put meanwhile grow them. */
	if (!rc)
		rc = trunk_fits(s, (size_t)stored);
	if (!rc && stored && !(s->pix = malloc((size_t)stored * px)))
		rc = VR_ENOMEM;
	if (!rc)
		pix_cap = (size_t)stored;
	while (!rc && src < nsrc) {
		if (src && !ch) {
			if (src - 1 == s->svc->shard_self) {
				src++;
				continue;
			}
			vr_channel_opts o = { .token = s->svc->peer_token, .shard_map = map->tag,
					      .max_message_bytes = 64u << 20 };
			if ((rc = vr_channel_create(&ch, map->names[src - 1], &o))) {
				snprintf(s->err, sizeof s->err, "a channel to shard %s: %s",
					 map->names[src - 1], vr_strerror(rc));
				break;
			}
			r.after[0] = 0;
		}
		if ((rc = src ? read_peer(s, &r, ch, map->names[src - 1]) : read_chunk(s, &r)))
			break;
		if (!r.m) { /* this source is done: the next */
			vr_channel_destroy(ch);
			ch = NULL;
			r.after[0] = 0;
			src++;
			continue;
		}
		if (r.n + r.m > pix_cap) {
			size_t nc = pix_cap + pix_cap / 4 > r.n + r.m ? pix_cap + pix_cap / 4 : r.n + r.m;
			uint8_t *p = (rc = trunk_fits(s, nc)) ? NULL : realloc(s->pix, nc * px);
			if (!p) {
				rc = rc ? rc : VR_ENOMEM;
				break;
			}
			s->pix = p;
			pix_cap = nc;
		}
		struct slice sl[DECODE_THREADS];
		int nt = 0;
		for (; nt < DECODE_THREADS; nt++) {
			sl[nt] = (struct slice){ .s = s, .dec = dec[nt], .jpeg = r.jpeg, .joff = r.joff,
						 .jlen = r.jlen, .id_off = r.id_off, .base = r.n,
						 .count = r.m, .first = (size_t)nt, .step = DECODE_THREADS };
			if (pthread_create(&sl[nt].tid, NULL, decode_slice, &sl[nt])) {
				rc = -EAGAIN;
				break;
			}
		}
		for (int t = 0; t < nt; t++) {
			pthread_join(sl[t].tid, NULL);
			if (!rc && sl[t].rc) {
				rc = sl[t].rc;
				snprintf(s->err, sizeof s->err, "%s", sl[t].why);
			}
		}
		r.n += r.m;
		if (!rc)
			rc = stopped(s, "reading and decoding the item images", r.n, (size_t)stored);
	}
	vr_channel_destroy(ch);
	if (rc == VR_ENOMEM && !s->err[0])
		snprintf(s->err, sizeof s->err, "cannot allocate the image cache (%zu items × %zu bytes)",
			 r.n + r.m, px);
	if (!rc && !r.n) {
		rc = VR_ESTATE;
		snprintf(s->err, sizeof s->err, "featured holds no item images; put items before training");
	}
	if (!rc && !(rc = trunk_fits(s, r.n)))
		rc = cache_index(s, r.id_off, r.n);
	if (!rc)
		VR_INFO("TrainVisual %s: %zu item images cached at %d px (%.1f MB)%s%s", s->session,
			s->n_items, s->size, (double)(r.n * px) / 1e6, map ? ", every shard's, of " : "",
			map ? map->list : "");
	for (int t = 0; t < DECODE_THREADS; t++)
		fd_decoder_destroy(dec[t]);
	free(r.id_off);
	free(r.jpeg);
	if (rc)
		s->n_items = s->n_cached = 0;
	if (rc && !s->err[0])
		snprintf(s->err, sizeof s->err, "cannot build the image cache: %s", vr_strerror(rc));
	return rc;
}

/* ---- executor tasks ---------------------------------------------------- */

static int save_ckpt(struct tv *s)
{
	char step[32], seed[32];
	snprintf(step, sizeof step, "%llu", (unsigned long long)s->step);
	snprintf(seed, sizeof seed, "%llu", (unsigned long long)s->seed);
	const char *meta[] = { "session_id", s->session, "step", step, "seed", seed, NULL };
	int rc = nn_net_save(s->net, s->ckpt, s->opt, meta);
	if (rc)
		snprintf(s->err, sizeof s->err, "cannot write the checkpoint %.300s: %s", s->ckpt,
			 vr_strerror(rc));
	return rc;
}

/* A trunk session's trunk: the active model's arch and weights, inference
 * only, returning the map the trained net starts from. */
static int trunk_open(fd_executor *ex, struct tv *s)
{
	struct nn_net_opts o = { .num_outputs = (int)s->trunk_outputs, .input_size = s->size,
				 .max_batch = 32, .output_layer = nn_net_input_layer(s->net),
				 .inference_only = 1 };
	int rc = nn_net_create(fd_executor_backend(ex), s->arch, &o, &s->trunk, s->err,
			       sizeof s->err);
	if (!rc && (rc = nn_net_load(s->trunk, s->weights, NULL)))
		snprintf(s->err, sizeof s->err, "loading the trunk from %.300s: %s", s->weights,
			 nn_net_errmsg(s->trunk));
	return rc;
}

static int start_task(fd_executor *ex, void *arg)
{
	struct tv *s = arg;
	int trunk = s->trunk_layer[0] != 0;
	struct nn_net_opts o = { .num_outputs = s->dims, .input_size = s->size,
				 .max_batch = 2 * s->max_triples,
				 .input_layer = trunk ? s->trunk_layer : NULL,
				 .head_width = s->head_width, .head_norm = s->head_norm };
	struct nn_optim_opts a = { .kind = NN_OPTIM_ADAM, .lr = s->lr, .weight_decay = s->wd };
	int rc = nn_net_create(fd_executor_backend(ex), s->arch, &o, &s->net, s->err, sizeof s->err);
	if (rc)
		return rc;
	if (trunk) {
		s->act_n = nn_net_input_count(s->net);
		if ((rc = trunk_open(ex, s)))
			return rc;
	}
	if ((rc = nn_optim_create(s->net, &a, &s->opt))) {
		snprintf(s->err, sizeof s->err, "cannot create Adam: %s", nn_net_errmsg(s->net));
		return rc;
	}
	if (s->resume) {
		if ((rc = nn_net_load(s->net, s->ckpt, s->opt))) {
			snprintf(s->err, sizeof s->err, "cannot resume session %s from %.300s: %s%s%s",
				 s->session, s->ckpt, vr_strerror(rc), nn_net_errmsg(s->net)[0] ? ": " : "",
				 nn_net_errmsg(s->net));
			return rc == -ENOENT ? VR_ESTATE : rc;
		}
		s->step = (uint64_t)nn_optim_steps(s->opt);
		nn_net_set_rng(s->net, s->seed, s->step);
		return 0;
	}
	if ((rc = nn_net_init(s->net, s->seed)))
		snprintf(s->err, sizeof s->err, "cannot initialise the net: %s", nn_net_errmsg(s->net));
	/* Above the cut the pretrained layers start from the trunk's weights;
	 * a new head keeps its seeded init (nn_net_load's rule). */
	if (!rc && trunk && (rc = nn_net_load(s->net, s->weights, NULL)))
		snprintf(s->err, sizeof s->err, "loading %.300s above the cut: %s", s->weights,
			 nn_net_errmsg(s->net));
	return rc;
}

/* Runs the trunk over the cached images into s->act, then frees the
 * images: steps never touch pixels again. Ends early (stopped()) when the
 * call is cancelled or featured stops: the handler lent it (see DESIGN). */
static int trunk_task(fd_executor *ex, void *arg)
{
	struct tv *s = arg;
	const size_t px = (size_t)s->size * s->size * 3;
	const uint8_t *img[TRUNK_BATCH];
	double t0 = vr_now_s();
	int rc = 0;
	(void)ex;
	VR_INFO("TrainVisual %s: computing the trunk activations of %zu items (%s up to %s)",
		s->session, s->n_cached, s->arch, s->trunk_layer);
	for (size_t i = 0; !rc && i < s->n_cached; i += TRUNK_BATCH) {
		int nb = s->n_cached - i < TRUNK_BATCH ? (int)(s->n_cached - i) : TRUNK_BATCH;
		if ((rc = stopped(s, "the trunk pass", i, s->n_cached)))
			return rc;
		for (int k = 0; k < nb; k++)
			img[k] = s->pix + (i + (size_t)k) * px;
		rc = nn_net_forward_u8(s->trunk, img, nb, 0, s->act + i * s->act_n);
	}
	if (rc) {
		snprintf(s->err, sizeof s->err, "computing the trunk activations: %s",
			 nn_net_errmsg(s->trunk));
		return rc;
	}
	free(s->pix);
	s->pix = NULL;
	VR_INFO("TrainVisual %s: trunk %s up to %s: %zu items' activations (%zu floats each, "
		"%.1f MB) in %.1f s", s->session, s->arch, s->trunk_layer, s->n_cached, s->act_n,
		(double)s->n_cached * s->act_n * sizeof(float) / 1e6, vr_now_s() - t0);
	return 0;
}

static int free_task(fd_executor *ex, void *arg)
{
	struct tv *s = arg;
	(void)ex;
	nn_optim_destroy(s->opt);
	nn_net_destroy(s->net);
	nn_net_destroy(s->trunk);
	nn_images_destroy(s->set);
	s->opt = NULL;
	s->net = NULL;
	s->trunk = NULL;
	s->set = NULL;
	return 0;
}

/* Copies the host cache into an image set on the backend and frees the
 * host copy; without room on the device the cache stays on the host. */
static int upload_task(fd_executor *ex, void *arg)
{
	enum { SLICE = 256 };
	struct tv *s = arg;
	nn_backend *b = fd_executor_backend(ex);
	const size_t px = (size_t)s->size * s->size * 3;
	int rc = nn_images_create(b, s->n_cached, s->size, &s->set);
	if (rc == VR_ENOMEM) {
		VR_WARN("TrainVisual %s: no room for %.1f MB of images on %s; they stay in host "
			"memory and cross to it every step", s->session, (double)(s->n_cached * px) / 1e6,
			nn_backend_name(b));
		return 0;
	}
	for (size_t i = 0; !rc && i < s->n_cached; i += SLICE)
		rc = nn_images_put(s->set, i, s->n_cached - i < SLICE ? s->n_cached - i : SLICE,
				   s->pix + i * px);
	if (rc) {
		nn_images_destroy(s->set);
		s->set = NULL;
		snprintf(s->err, sizeof s->err, "cannot copy the images to the %s backend: %s",
			 nn_backend_name(b), vr_strerror(rc));
		return rc;
	}
	free(s->pix);
	s->pix = NULL;
	VR_INFO("TrainVisual %s: the images are an image set on the %s backend", s->session,
		nn_backend_name(b));
	return 0;
}

/* A training or evaluation forward of the n images the step mapped (in
 * a trunk session: of their cached activations). */
static int forward(struct tv *s, int n, int train, float *out)
{
	if (s->act) {
		for (int k = 0; k < n; k++)
			memcpy(s->x + (size_t)k * s->act_n, s->act + (size_t)s->idx[k] * s->act_n,
			       sizeof(float) * s->act_n);
		return nn_net_forward(s->net, s->x, n, train, out);
	}
	return s->set ? nn_net_forward_images(s->net, s->set, s->idx, n, train, out)
		      : nn_net_forward_u8(s->net, s->img, n, train, out);
}

static int step_task(fd_executor *ex, void *arg)
{
	struct tv *s = arg;
	size_t n = s->n, K = (size_t)s->dims;
	double t0 = vr_now_s();
	(void)ex;
	int rc = nn_net_zero_grad(s->net);
	if (!rc)
		rc = forward(s, (int)(2 * n), 1, s->phi);
	if (rc)
		goto fail;
	nn_bpr_triples(s->phi, n, K, s->theta, s->margin, s->loss, s->g, s->dphi, s->dtheta);
	if ((rc = nn_net_backward(s->net, s->dphi, NULL)) || (rc = nn_optim_step(s->opt)))
		goto fail;
	s->step++;
	s->net_s = vr_now_s() - t0;
	if (s->every && s->step % (uint64_t)s->every == 0)
		return save_ckpt(s);
	return 0;
fail:
	snprintf(s->err, sizeof s->err, "network step failed: %s: %s", vr_strerror(rc),
		 nn_net_errmsg(s->net));
	return rc;
}

static int embed_task(fd_executor *ex, void *arg)
{
	struct tv *s = arg;
	double t0 = vr_now_s();
	(void)ex;
	int rc = forward(s, (int)s->n, 0, s->dtheta);
	if (rc)
		snprintf(s->err, sizeof s->err, "embedding failed: %s: %s", vr_strerror(rc),
			 nn_net_errmsg(s->net));
	s->net_s = vr_now_s() - t0;
	return rc;
}

/* Keeps the net as it is now in s->best, tagged with its step. */
static int mark_best_task(fd_executor *ex, void *arg)
{
	struct tv *s = arg;
	char step[32];
	(void)ex;
	snprintf(step, sizeof step, "%llu", (unsigned long long)s->step);
	const char *meta[] = { "session_id", s->session, "step", step, NULL };
	int rc = nn_net_save(s->net, s->best, NULL, meta);
	if (rc)
		snprintf(s->err, sizeof s->err, "cannot write the best net %.300s: %s", s->best,
			 vr_strerror(rc));
	return rc;
}

struct finish {
	struct tv *s;
	uint64_t from_step;    /* 0: the net as it is */
	nn_net *net;           /* what embeds the items: the session's, or trunk + trained part */
	fd_model_info info;
};

/* A trunk session's model: the whole architecture on images, its trunk
 * from the pretrained weights and the rest from the trained net (same
 * parameter names: the head, or the layers above the cut). */
static int serving_net(fd_executor *ex, struct tv *s, nn_net **out)
{
	struct nn_net_opts o = { .num_outputs = s->dims, .input_size = s->size,
				 .max_batch = fd_executor_batch(ex), .inference_only = 1,
				 .head_layer = s->head_width ? s->trunk_layer : NULL,
				 .head_width = s->head_width, .head_norm = s->head_norm };
	float mean[3], std[3];
	int rc = nn_net_create(fd_executor_backend(ex), s->arch, &o, out, s->err, sizeof s->err);
	if (rc)
		return rc;
	nn_net_norm(s->trunk, mean, std);
	nn_net_set_norm(*out, mean, std);
	if ((rc = nn_net_init(*out, s->seed)) || (rc = nn_net_params_copy(*out, s->trunk, NULL)) ||
	    (rc = nn_net_params_copy(*out, s->net, NULL))) {
		snprintf(s->err, sizeof s->err, "assembling trunk and trained net: %s",
			 nn_net_errmsg(*out));
		nn_net_destroy(*out);
		*out = NULL;
	}
	return rc;
}

/* Saves the last checkpoint, drops Adam, puts back the net kept at
 * from_step when asked and records the net (in a trunk session, trunk +
 * trained part) as a new model version, not active. */
static int finish_task(fd_executor *ex, void *arg)
{
	struct finish *f = arg;
	struct tv *s = f->s;
	int rc = save_ckpt(s);
	if (rc)
		return rc;
	nn_optim_destroy(s->opt);
	s->opt = NULL;
	if (f->from_step && (rc = nn_net_load(s->net, s->best, NULL))) {
		snprintf(s->err, sizeof s->err, "cannot load the best net %.300s: %s%s%s", s->best,
			 vr_strerror(rc), nn_net_errmsg(s->net)[0] ? ": " : "", nn_net_errmsg(s->net));
		return rc;
	}
	f->net = s->net;
	if (s->trunk && (rc = serving_net(ex, s, &f->net)))
		return rc;
	rc = fd_model_add(fd_executor_fstore(ex), g_data_dir, f->net, NULL, 0, &f->info, s->err,
			  sizeof s->err);
	if (rc && f->net != s->net) {
		nn_net_destroy(f->net);
		f->net = NULL;
	}
	return rc;
}

static int destroy_task(fd_executor *ex, void *arg)
{
	(void)ex;
	nn_net_destroy(arg);
	return 0;
}

/* ---- the stream -------------------------------------------------------- */

static int session_ok(const char *id)
{
	size_t len = strlen(id);
	if (!len || len > MAX_SESSION)
		return 0;
	for (size_t k = 0; k < len; k++) {
		char c = id[k];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return id[0] != '.';
}

int fd_tv_check_start(const Visrec__V1__TrainVisualStart *m, char *why, size_t cap)
{
	struct nn_arch_info ai;
	const char *arch = m->arch && m->arch[0] ? m->arch : "small";
	if (nn_arch_info(arch, &ai)) {
		snprintf(why, cap, "arch \"%.32s\" is not known", arch);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (!m->session_id || !session_ok(m->session_id)) {
		snprintf(why, cap, "session_id must be 1..%d characters of [A-Za-z0-9._-], not starting with '.'",
			 MAX_SESSION);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (!isfinite(m->learning_rate) || m->learning_rate <= 0 || !isfinite(m->weight_decay) ||
	    m->weight_decay < 0 || m->dims > 4096 || m->input_size > 1024) {
		snprintf(why, cap, "learning_rate must be > 0, weight_decay >= 0, dims <= 4096, input_size <= 1024");
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (m->trunk_layer && strlen(m->trunk_layer) >= 32) {
		snprintf(why, cap, "trunk_layer is a layer name of at most 31 characters");
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (m->head_width > 4096 || (m->head_width && !(m->trunk_layer && m->trunk_layer[0]))) {
		snprintf(why, cap, "head_width (at most 4096) needs trunk_layer");
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (m->head_norm && !m->head_width) {
		snprintf(why, cap, "head_norm normalises a head's output and needs head_width > 0");
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	return GRPC_STATUS_OK;
}

int fd_tv_max_triples(const Visrec__V1__TrainVisualStart *m)
{
	return m->trunk_layer && m->trunk_layer[0] ? FD_TV_MAX_HEAD_TRIPLES : FD_TV_MAX_TRIPLES;
}

static int on_start(vr_call *call, struct tv *s, const Visrec__V1__TrainVisualStart *m)
{
	struct nn_arch_info ai;
	char why[200], trunk_arch[32];
	const char *arch = m->arch && m->arch[0] ? m->arch : "small";
	int code = fd_tv_check_start(m, why, sizeof why);
	if (code)
		return vr_call_error(call, code, "%s", why);
	nn_arch_info(arch, &ai);
	s->max_triples = fd_tv_max_triples(m);
	if (m->trunk_layer && m->trunk_layer[0]) {
		/* The trunk is featured's active model: its arch, size and weights. */
		fd_model_info active;
		fd_executor_model(s->svc->ex, &active);
		if (m->arch && m->arch[0] && strcmp(m->arch, active.arch))
			return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT,
					     "a trunk session's trunk is featured's active model version %u, "
					     "a %s; arch \"%s\" differs (leave it empty)", active.version,
					     active.arch, m->arch);
		snprintf(trunk_arch, sizeof trunk_arch, "%s", active.arch); /* active ends here */
		arch = trunk_arch;
		nn_arch_info(arch, &ai);
		snprintf(s->trunk_layer, sizeof s->trunk_layer, "%s", m->trunk_layer);
		snprintf(s->weights, sizeof s->weights, "%s/%s", g_data_dir, active.weights);
		s->head_width = (int)m->head_width;
		s->head_norm = m->head_norm;
		s->trunk_outputs = active.num_outputs;
		ai.input_size = (int)active.input_size;
		uint64_t mb = s->svc->max_trunk_cache_mb ? s->svc->max_trunk_cache_mb : 2048;
		s->cap_bytes = mb << 20;
	}
	snprintf(s->arch, sizeof s->arch, "%s", arch);
	snprintf(s->session, sizeof s->session, "%s", m->session_id);
	s->dims = m->dims ? (int)m->dims : ai.num_outputs;
	s->size = m->input_size ? (int)m->input_size : ai.input_size;
	s->lr = m->learning_rate;
	s->wd = m->weight_decay;
	s->seed = m->seed;
	s->resume = m->resume;
	s->all_shards = m->all_shards;
	s->every = m->checkpoint_every ? (int)m->checkpoint_every : CHECKPOINT_EVERY;
	char dir[4200];
	snprintf(dir, sizeof dir, "%s/train", g_data_dir);
	if (mkdir(dir, 0755) && errno != EEXIST)
		return vr_call_error(call, GRPC_STATUS_INTERNAL, "cannot create %s: %s", dir,
				     strerror(errno));
	snprintf(s->ckpt, sizeof s->ckpt, "%s/%s.safetensors", dir, s->session);
	snprintf(s->best, sizeof s->best, "%s/%s.best.safetensors", dir, s->session);
	int rc = fd_executor_call(s->svc->ex, start_task, s);
	if (rc)
		return vr_call_error(call, vr_status_from_rc(rc), "TrainVisual start: %s", s->err);
	size_t mt = (size_t)s->max_triples, mx = 2 * mt, K = (size_t)s->dims;
	s->img = malloc(mx * sizeof *s->img);
	s->idx = malloc(mx * sizeof *s->idx);
	s->phi = malloc(mx * K * sizeof(float));
	s->dphi = malloc(mx * K * sizeof(float));
	s->out = malloc((2 * mt + mt * K) * sizeof(float));
	if (s->act_n)
		s->x = malloc(mx * s->act_n * sizeof(float));
	if (!s->img || !s->idx || !s->phi || !s->dphi || !s->out || (s->act_n && !s->x))
		return VR_ENOMEM;
	if ((rc = cache_build(s)))
		/* A shard's refusal keeps its code (NOT_FOUND, FAILED_PRECONDITION
		 * of another map...); one that cannot be reached is UNAVAILABLE. */
		return vr_call_error(call, rc == VR_ERPC && s->peer_code ? s->peer_code :
				     vr_status_from_rc(rc), "TrainVisual start: %s", s->err);
	if (s->act_n) {
		if (!(s->act = malloc(s->n_cached * s->act_n * sizeof(float))))
			return vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
					     "TrainVisual start: cannot allocate %.0f MB of trunk activations",
					     (double)s->n_cached * s->act_n * sizeof(float) / 1e6);
		rc = fd_executor_call(s->svc->ex, trunk_task, s);
	} else {
		rc = fd_executor_call(s->svc->ex, upload_task, s);
	}
	if (rc)
		return vr_call_error(call, vr_status_from_rc(rc), "TrainVisual start: %s", s->err);
	fd_model_info active;
	fd_executor_model(s->svc->ex, &active);
	Visrec__V1__TrainVisualStarted st = VISREC__V1__TRAIN_VISUAL_STARTED__INIT;
	Visrec__V1__TrainVisualResponse r = VISREC__V1__TRAIN_VISUAL_RESPONSE__INIT;
	st.session_id = s->session;
	st.step = s->step;
	st.base_model_version = active.version;
	st.dims = (uint32_t)s->dims;
	r.msg_case = VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_STARTED;
	r.started = &st;
	VR_INFO("TrainVisual %s: %s %s%s%s K=%d S=%d%s, Adam lr %g wd %g, at step %llu", s->session,
		s->resume ? "resumed" : "started", s->arch, s->trunk_layer[0] ? " above " : "",
		s->trunk_layer, s->dims, s->size, s->head_width ? " with a conv1x1 head" : "",
		(double)s->lr, (double)s->wd, (unsigned long long)s->step);
	return vr_call_send(call, &r.base);
}

static int same_session(const struct tv *s, const char *id)
{
	return id && !strcmp(id, s->session);
}

/* A message for another session than the stream's: FAILED_PRECONDITION. */
static int wrong_session(vr_call *call, const struct tv *s, const char *what, const char *id)
{
	return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
			     "%s for session \"%.64s\" on the stream of session \"%s\"", what,
			     id ? id : "", s->session);
}

/* Maps ids to cached images into s->idx[off..off+n) (and s->img, when the
 * cache is on the host); field names the ids in messages ("step.pos_items"). */
static int map_items(vr_call *call, struct tv *s, char **ids, size_t n, size_t off,
		     const char *field)
{
	for (size_t t = 0; t < n; t++) {
		char name[64], why[256];
		snprintf(name, sizeof name, "%s[%zu]", field, t);
		if (vr_id_check_named(name, ids[t], strlen(ids[t]), why, sizeof why))
			return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
		long k = cached(s, ids[t]);
		s->idx[off + t] = (uint32_t)k;
		if (k >= 0 && s->pix)
			s->img[off + t] = s->pix + (size_t)k * s->size * s->size * 3;
		if (k < 0)
			return vr_call_error(call, GRPC_STATUS_NOT_FOUND,
					     "%s: item \"%s\" has no image in this training session's cache "
					     "(items put after TrainVisual started are not in it)", name,
					     vr_id_escape(why, 72, ids[t], strlen(ids[t])));
	}
	return 0;
}

int fd_tv_check_step(const Visrec__V1__TrainVisualStep *m, size_t dims, int max_triples,
		     char *why, size_t cap)
{
	size_t n = m->n_pos_items;
	if (!n || n > (size_t)max_triples) {
		snprintf(why, cap, "a step of this session carries 1..%d triples, not %zu", max_triples,
			 n);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	if (m->n_neg_items != n || m->n_margin != n || m->n_theta != n * dims) {
		snprintf(why, cap, "a step needs n neg_items, n margins and n × %zu theta values", dims);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	return GRPC_STATUS_OK;
}

static int on_step(vr_call *call, struct tv *s, const Visrec__V1__TrainVisualStep *m)
{
	size_t n = m->n_pos_items, K = (size_t)s->dims;
	if (!same_session(s, m->session_id))
		return wrong_session(call, s, "step", m->session_id);
	if (m->step != s->step + 1)
		return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
				     "step %llu out of order: session %s is at step %llu (a peer restarted? "
				     "start again with resume)", (unsigned long long)m->step, s->session,
				     (unsigned long long)s->step);
	char why[200];
	int rc = fd_tv_check_step(m, K, s->max_triples, why, sizeof why);
	if (rc)
		return vr_call_error(call, rc, "%s", why);
	rc = map_items(call, s, m->pos_items, n, 0, "step.pos_items");
	if (!rc)
		rc = map_items(call, s, m->neg_items, n, n, "step.neg_items");
	if (rc)
		return rc;
	s->n = n;
	s->theta = m->theta;
	s->margin = m->margin;
	s->loss = s->out;
	s->g = s->out + n;
	s->dtheta = s->out + 2 * n;
	if ((rc = fd_executor_call(s->svc->ex, step_task, s)))
		return vr_call_error(call, vr_status_from_rc(rc), "TrainVisual step %llu: %s",
				     (unsigned long long)m->step, s->err);
	Visrec__V1__TrainVisualStepResult sr = VISREC__V1__TRAIN_VISUAL_STEP_RESULT__INIT;
	Visrec__V1__TrainVisualResponse r = VISREC__V1__TRAIN_VISUAL_RESPONSE__INIT;
	sr.step = m->step;
	sr.n_loss = sr.n_g = n;
	sr.loss = s->loss;
	sr.g = s->g;
	sr.n_dtheta = n * K;
	sr.dtheta = s->dtheta;
	sr.network_seconds = s->net_s;
	r.msg_case = VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_STEP;
	r.step = &sr;
	return vr_call_send(call, &r.base);
}

static int on_embed(vr_call *call, struct tv *s, const Visrec__V1__TrainVisualEmbed *m)
{
	size_t n = m->n_items, K = (size_t)s->dims;
	if (!same_session(s, m->session_id))
		return wrong_session(call, s, "embed", m->session_id);
	if (!n || n > (size_t)s->max_triples)
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT,
				     "an embed of this session carries 1..%d items, not %zu",
				     s->max_triples, n);
	int rc = map_items(call, s, m->items, n, 0, "embed.items");
	if (rc)
		return rc;
	s->n = n;
	s->dtheta = s->out; /* the embedding goes where a step's reply would */
	if ((rc = fd_executor_call(s->svc->ex, embed_task, s)))
		return vr_call_error(call, vr_status_from_rc(rc), "TrainVisual embed: %s", s->err);
	Visrec__V1__TrainVisualEmbedded e = VISREC__V1__TRAIN_VISUAL_EMBEDDED__INIT;
	Visrec__V1__TrainVisualResponse r = VISREC__V1__TRAIN_VISUAL_RESPONSE__INIT;
	e.dims = (uint32_t)K;
	e.n_values = n * K;
	e.values = s->dtheta;
	e.network_seconds = s->net_s;
	r.msg_case = VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_EMBEDDED;
	r.embedded = &e;
	return vr_call_send(call, &r.base);
}

static int on_mark_best(vr_call *call, struct tv *s, const Visrec__V1__TrainVisualMarkBest *m)
{
	if (!same_session(s, m->session_id))
		return wrong_session(call, s, "mark_best", m->session_id);
	int rc = fd_executor_call(s->svc->ex, mark_best_task, s);
	if (rc)
		return vr_call_error(call, vr_status_from_rc(rc), "TrainVisual mark_best: %s", s->err);
	Visrec__V1__TrainVisualMarked mk = VISREC__V1__TRAIN_VISUAL_MARKED__INIT;
	Visrec__V1__TrainVisualResponse r = VISREC__V1__TRAIN_VISUAL_RESPONSE__INIT;
	mk.step = s->step;
	r.msg_case = VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_MARKED;
	r.marked = &mk;
	return vr_call_send(call, &r.base);
}

/* GRPC_STATUS_OK when s->best holds this session's net of step, else
 * FAILED_PRECONDITION with the reason in why. Read on the handler thread:
 * the file is the executor's only inside its tasks, and none runs now. */
static int best_check(const struct tv *s, uint64_t step, char *why, size_t cap)
{
	nn_st_file *f = NULL;
	char err[128] = "";
	if (nn_st_open(s->best, &f, err, sizeof err)) {
		snprintf(why, cap, "from_step %llu: session %s kept no best net (mark_best keeps one): %s",
			 (unsigned long long)step, s->session, err);
		return GRPC_STATUS_FAILED_PRECONDITION;
	}
	const char *id = nn_st_meta(f, "session_id"), *at = nn_st_meta(f, "step");
	int ok = id && !strcmp(id, s->session) && at && strtoull(at, NULL, 10) == step;
	if (!ok)
		snprintf(why, cap, "from_step %llu: the best net session %s kept is of step %s",
			 (unsigned long long)step, s->session, at ? at : "(none)");
	nn_st_close(f);
	return ok ? GRPC_STATUS_OK : GRPC_STATUS_FAILED_PRECONDITION;
}

static int on_finish(vr_call *call, struct tv *s, const Visrec__V1__TrainVisualFinish *m, int *done)
{
	struct finish f = { .s = s, .from_step = m->from_step };
	uint64_t embedded = 0;
	char why[256];
	if (!same_session(s, m->session_id))
		return wrong_session(call, s, "finish", m->session_id);
	*done = 1;
	if (m->reembed && m->from_step && best_check(s, m->from_step, why, sizeof why))
		return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "TrainVisual finish: %s", why);
	Visrec__V1__TrainVisualFinished fin = VISREC__V1__TRAIN_VISUAL_FINISHED__INIT;
	Visrec__V1__TrainVisualResponse r = VISREC__V1__TRAIN_VISUAL_RESPONSE__INIT;
	if (m->reembed) {
		int rc = fd_executor_call(s->svc->ex, finish_task, &f);
		if (rc)
			return vr_call_error(call, vr_status_from_rc(rc), "TrainVisual finish: %s", s->err);
		VR_INFO("TrainVisual %s: re-embedding every item into version %u", s->session,
			f.info.version);
		rc = fd_executor_reembed(s->svc->ex, f.net, &f.info, FD_REEMBED_LIVE, reembed_stop, s,
					 &embedded, s->err, sizeof s->err);
		if (rc) {
			if (f.net != s->net)
				fd_executor_call(s->svc->ex, destroy_task, f.net);
			if (rc == VR_ECANCELLED) { /* reembed_stop: the call stopped */
				int why = stopped(s, "Finish's re-embedding", (size_t)embedded,
						  s->n_items);
				size_t at = strlen(s->err);
				rc = why ? why : rc;
				snprintf(s->err + at, sizeof s->err - at,
					 "; version %u stays inactive and not live", f.info.version);
			}
			return vr_call_error(call, vr_status_from_rc(rc),
					     "TrainVisual finish: re-embedding into version %u: %s",
					     f.info.version, s->err);
		}
		if (f.net == s->net)
			s->net = NULL; /* the executor's now */
		fin.model_version = f.info.version;
		VR_INFO("TrainVisual %s: finished at step %llu; %llu items embedded with the net of "
			"step %llu into version %u, now live beside the active version", s->session,
			(unsigned long long)s->step, (unsigned long long)embedded,
			(unsigned long long)(m->from_step ? m->from_step : s->step), f.info.version);
	}
	fin.items_embedded = embedded;
	r.msg_case = VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_FINISHED;
	r.finished = &fin;
	return vr_call_send(call, &r.base);
}

int fd_train_visual(vr_call *call, void *ctx)
{
	struct tv *s = NULL;
	int rc = fd_check_shard_map(ctx, call), started = 0, done = 0, expected = 0;
	if (rc)
		return rc;
	if (!atomic_compare_exchange_strong(&g_busy, &expected, 1))
		return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
				     "another TrainVisual session is running on this featured");
	if (!(s = calloc(1, sizeof *s))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	s->svc = ctx;
	s->call = call;
	while (!done && !rc) {
		Visrec__V1__TrainVisualRequest *m = NULL;
		if ((rc = vr_call_read(call, (ProtobufCMessage **)&m))) {
			if (rc == VR_EEOF)
				rc = 0;
			break;
		}
		switch (m->msg_case) {
		case VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_START:
			rc = started ? vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
						     "the session has started already")
				     : on_start(call, s, m->start);
			started = 1;
			break;
		case VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_STEP:
			rc = !started ? vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
						      "send TrainVisualStart before steps")
				      : on_step(call, s, m->step);
			break;
		case VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_EMBED:
			rc = !started ? vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
						      "send TrainVisualStart before embed")
				      : on_embed(call, s, m->embed);
			break;
		case VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_MARK_BEST:
			rc = !started ? vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
						      "send TrainVisualStart before mark_best")
				      : on_mark_best(call, s, m->mark_best);
			break;
		case VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_FINISH:
			rc = !started ? vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
						      "send TrainVisualStart before finish")
				      : on_finish(call, s, m->finish, &done);
			break;
		default:
			rc = vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT,
					   "a TrainVisualRequest needs start, step, embed, mark_best or finish");
		}
		protobuf_c_message_free_unpacked(&m->base, NULL);
	}
leave:
	if (rc && s && vr_call_stopping(call))
		VR_INFO("TrainVisual %s: stopped: %s; the session is released",
			s->session[0] ? s->session : "(not started)",
			s->err[0] ? s->err : "the call ended");
	if (s) {
		if (s->net || s->opt || s->set || s->trunk)
			fd_executor_call(s->svc->ex, free_task, s);
		free(s->ids);
		free(s->slot);
		free(s->id_blob);
		free(s->pix);
		free(s->img);
		free(s->idx);
		free(s->phi);
		free(s->dphi);
		free(s->out);
		free(s->act);
		free(s->x);
		free(s);
	}
	atomic_store(&g_busy, 0);
	return rc;
}
