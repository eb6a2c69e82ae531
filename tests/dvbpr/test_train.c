/* DVBPR end to end with featured and rankd as real processes on loopback:
 * generated data sets (tools/datagen: images whose look drives the users'
 * picks), Train(DVBPR) streaming progress, the served model evaluated
 * against BPR on cold items, an item put after training ranked by its
 * visual terms, featured killed in the middle of a run and the run resumed
 * from its checkpoint, a run cancelled in featured's trunk pass.
 *
 * Why one file at ~1,190 lines: one pipeline (DVBPR through both
 * daemons), its tests sharing the generated data sets and processes. */
#include "datagen.h"
#include "err.h"
#include "fault.h"
#include "harness.h"
#include "log.h"
#include "procs.h"
#include "rpc.h"
#include "visrec/v1/featured.pb-c.h"
#include "visrec/v1/rankd.pb-c.h"

#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdlib.h>

/* A generated data set and its folder. */
struct dataset {
	const char *name;
	int64_t users, items, rows;
	double cold_frac;
	char dir[128];
};

/* Small and quick: the protocol's properties (AUC rises, order invariance,
 * resume). */
static struct dataset small_set = { "small", 40, 60, 700, 0.2, "" };
/* Big enough that the visual signal decides cold items. On the small set
 * even the generator's own visual affinity (the truth) ranks cold test
 * items at AUC 0.72, below BPR's 0.80: with 60 items a user's remaining
 * warm items are mostly unpopular ones with negative β_i, so BPR's 0 for
 * every cold item wins for free. Here the truth reaches 0.84 (hue alone
 * 0.75) and BPR 0.64, over 40 cold test users. */
static struct dataset cold_set = { "cold", 100, 400, 2000, 0.1, "" };

static char tmpdir[64];

/* featured with its first model arch at size px (a string), storing
 * layer's activations (NULL: the output). */
static int start_featured_model(struct proc *p, const char *tag, const char *listen,
				const char *arch, const char *size, const char *layer)
{
	char data[160], err[160];
	snprintf(data, sizeof data, "%s/%s-featured", tmpdir, tag);
	snprintf(err, sizeof err, "%s/%s-featured.stderr", tmpdir, tag);
	char *argv[] = { FEATURED_BIN, "--listen", (char *)listen, "--data", data, "--threads", "2",
			 "--arch", (char *)arch, "--input-size", (char *)size, "--backend", "cpu",
			 layer ? "--feature-layer" : NULL, (char *)layer, NULL };
	if (proc_spawn(p, err, argv))
		return -1;
	return proc_wait_ready(p, "featured", 20000);
}

static int start_featured(struct proc *p, const char *tag, const char *listen)
{
	return start_featured_model(p, tag, listen, "small", "16", NULL);
}

static int start_rankd(struct proc *p, const char *tag, const char *featured, int follow)
{
	char data[160], err[160];
	snprintf(data, sizeof data, "%s/%s-rankd", tmpdir, tag);
	snprintf(err, sizeof err, "%s/%s-rankd.stderr", tmpdir, tag);
	char *argv[] = { RANKD_BIN, "--listen", "127.0.0.1:0", "--data", data, "--threads", "2",
			 "--featured", (char *)featured,
			 follow ? "--follow-featured=true" : "--follow-featured=false", NULL };
	if (proc_spawn(p, err, argv))
		return -1;
	return proc_wait_ready(p, "rankd", 20000);
}

static vr_channel *channel(const char *addr)
{
	vr_channel *ch = NULL;
	vr_channel_opts o = { .max_message_bytes = 64 << 20 };
	vr_channel_create(&ch, addr, &o);
	return ch;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Generates ds once (seeded: the same files every time). */
static int dataset_make(struct dataset *ds)
{
	struct dg_opts o;
	if (ds->dir[0])
		return 0;
	snprintf(ds->dir, sizeof ds->dir, "%s/data-%s", tmpdir, ds->name);
	dg_opts_default(&o);
	o.out_dir = ds->dir;
	o.users = ds->users;
	o.items = ds->items;
	o.interactions = ds->rows;
	o.seed = 3;
	o.cold_frac = ds->cold_frac;
	o.image_min = 32;
	o.image_max = 48;
	o.images = DG_IMAGES_PROCEDURAL;
	return dg_generate(&o, NULL);
}

/* Puts every generated image; shuffle != 0 puts them in a seeded random
 * order instead of id order. */
static int put_images(vr_channel *ch, const struct dataset *ds, unsigned shuffle)
{
	char dir[192], path[512], **names = calloc((size_t)ds->items + 8, sizeof *names);
	int n = 0, rc = 0;
	snprintf(dir, sizeof dir, "%s/images", ds->dir);
	DIR *d = names ? opendir(dir) : NULL;
	if (!d) {
		free(names);
		return -1;
	}
	for (struct dirent *e; (e = readdir(d)) && n < ds->items + 8;)
		if (strstr(e->d_name, ".jpg"))
			names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof *names, cmp_str);
	for (int k = n - 1; shuffle && k > 0; k--) {
		int x = (int)(rand_r(&shuffle) % (unsigned)(k + 1));
		char *t = names[k];
		names[k] = names[x];
		names[x] = t;
	}
	vr_ccall *cc = NULL;
	rc = vr_ccall_start(&cc, ch, "/visrec.v1.Featured/PutItems",
			    &visrec__v1__put_items_response__descriptor, 0, NULL);
	for (int k = 0; !rc && k < n; k++) {
		Visrec__V1__PutItemsRequest r = VISREC__V1__PUT_ITEMS_REQUEST__INIT;
		size_t len = 0;
		snprintf(path, sizeof path, "%s/%s", dir, names[k]);
		uint8_t *jpeg = vr_test_read_file(path, &len);
		*strstr(names[k], ".jpg") = 0;
		r.item_id = names[k];
		r.image.data = jpeg;
		r.image.len = len;
		rc = jpeg ? vr_ccall_send(cc, &r.base) : -1;
		free(jpeg);
	}
	ProtobufCMessage *resp = NULL;
	if (!rc)
		rc = vr_ccall_close_send(cc);
	if (!rc)
		rc = vr_ccall_recv(cc, &resp);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	if (cc && vr_ccall_finish(cc, NULL))
		rc = -1;
	for (int k = 0; k < n; k++)
		free(names[k]);
	free(names);
	return rc;
}

static int add_interactions(vr_channel *ch, const struct dataset *ds)
{
	char path[192];
	size_t len, cap = (size_t)ds->rows + 16;
	snprintf(path, sizeof path, "%s/interactions.csv", ds->dir);
	char *csv = (char *)vr_test_read_file(path, &len);
	if (!csv)
		return -1;
	Visrec__V1__Interaction *rows = calloc(cap, sizeof *rows);
	Visrec__V1__Interaction **ptrs = calloc(cap, sizeof *ptrs);
	size_t n = 0;
	char *save = NULL;
	for (char *line = strtok_r(csv, "\n", &save); line && n < cap;
	     line = strtok_r(NULL, "\n", &save)) {
		char *c1 = strchr(line, ','), *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
		if (!c2 || !strncmp(line, "user,", 5))
			continue;
		*c1 = *c2 = 0;
		visrec__v1__interaction__init(&rows[n]);
		rows[n].user_id = line;
		rows[n].item_id = c1 + 1;
		rows[n].timestamp = atoll(c2 + 1);
		ptrs[n] = &rows[n];
		n++;
	}
	Visrec__V1__AddInteractionsRequest req = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
	req.n_interactions = n;
	req.interactions = ptrs;
	ProtobufCMessage *resp = NULL;
	int rc = vr_client_unary(ch, "/visrec.v1.Rank/AddInteractions", &req.base,
				 &visrec__v1__add_interactions_response__descriptor, &resp, 10000, NULL,
				 NULL);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	free(rows);
	free(ptrs);
	free(csv);
	return rc;
}

/* What a Train call streamed: per epoch validation AUC and loss, and the
 * final progress line. */
struct run_log {
	double auc[32], loss[32];
	uint32_t epochs;          /* epoch lines seen */
	uint32_t last_epoch;      /* the final line's */
	double last_auc, last_loss;
	char state[32];
};

static int train_log(vr_channel *ch, const Visrec__V1__TrainRequest *req, struct run_log *l,
		     vr_status *st)
{
	vr_ccall *cc = NULL;
	int done = 0;
	memset(l, 0, sizeof *l);
	int rc = vr_ccall_start(&cc, ch, "/visrec.v1.Rank/Train",
				&visrec__v1__train_progress__descriptor, 0, NULL);
	if (!rc)
		rc = vr_ccall_send(cc, &req->base);
	if (!rc)
		rc = vr_ccall_close_send(cc);
	while (!rc) {
		Visrec__V1__TrainProgress *p = NULL;
		if (vr_ccall_recv(cc, (ProtobufCMessage **)&p))
			break;
		if (p->done) {
			l->last_epoch = p->epoch;
			l->last_auc = p->val_auc;
			l->last_loss = p->loss;
			snprintf(l->state, sizeof l->state, "%s", p->state);
			done = 1;
		} else if (p->epoch >= 1 && p->epoch <= 32) {
			l->auc[p->epoch - 1] = p->val_auc;
			l->loss[p->epoch - 1] = p->loss;
			l->epochs = p->epoch;
		}
		protobuf_c_message_free_unpacked(&p->base, NULL);
	}
	memset(st, 0, sizeof *st);
	if (cc)
		vr_ccall_finish(cc, st);
	return st->code ? st->code : !done;
}

/* The served model's AUC and RR on all users and AUC on cold ones
 * (standard protocol). */
static int evaluate(vr_channel *ch, double out[3])
{
	Visrec__V1__EvaluateRequest req = VISREC__V1__EVALUATE_REQUEST__INIT;
	Visrec__V1__EvaluateResponse *r = NULL;
	out[0] = out[1] = out[2] = NAN;
	int rc = vr_client_unary(ch, "/visrec.v1.Rank/Evaluate", &req.base,
				 &visrec__v1__evaluate_response__descriptor, (ProtobufCMessage **)&r,
				 30000, NULL, NULL);
	if (rc)
		return rc;
	for (size_t k = 0; k < r->n_results; k++) {
		if (!strcmp(r->results[k]->subset, "all")) {
			out[0] = r->results[k]->auc;
			out[1] = r->results[k]->rr;
		} else if (!strcmp(r->results[k]->subset, "cold")) {
			out[2] = r->results[k]->auc;
		}
	}
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return 0;
}

/* Runs Train; auc[e - 1] gets epoch e's validation AUC (max_auc <= 32).
 * Returns 0 when the run finished, else the call's status code with st
 * filled. */
static int train(vr_channel *ch, const Visrec__V1__TrainRequest *req, double *auc, int max_auc,
		 vr_status *st)
{
	struct run_log l;
	int rc = train_log(ch, req, &l, st);
	for (uint32_t e = 0; e < l.epochs && (int)e < max_auc; e++)
		auc[e] = l.auc[e];
	return rc;
}

/* The served model's AUC on users whose test item is cold. */
static double cold_auc(vr_channel *ch)
{
	double ev[3];
	return evaluate(ch, ev) ? NAN : ev[2];
}

static void dvbpr_request(Visrec__V1__TrainRequest *r, uint32_t epochs)
{
	visrec__v1__train_request__init(r);
	r->model = VISREC__V1__MODEL_KIND__DVBPR;
	r->epochs = epochs;
	r->arch = "small";
	r->input_size = 16;
	r->dims = 8;
	r->visual_dims = 16;
	r->seed = 7;
	r->batch_size = 32;
	r->triples_per_epoch = 640;
	r->cnn_learning_rate = 3e-3f;
	/* rankd's Adam: its default 1e-3 barely moves in the 20 steps of an
	 * epoch here */
	r->learning_rate = 1e-2f;
}

struct pair {
	struct proc f, r;
	vr_channel *fch, *rch;
};

/* The pair with featured's first model arch at size px storing layer. */
static int pair_start_model(struct pair *p, const char *tag, struct dataset *ds, unsigned shuffle,
			    int follow, const char *arch, const char *size, const char *layer)
{
	memset(p, 0, sizeof *p);
	if (dataset_make(ds) ||
	    start_featured_model(&p->f, tag, "127.0.0.1:0", arch, size, layer) ||
	    start_rankd(&p->r, tag, p->f.addr, follow))
		return -1;
	p->fch = channel(p->f.addr);
	p->rch = channel(p->r.addr);
	if (put_images(p->fch, ds, shuffle) || add_interactions(p->rch, ds))
		return -1;
	return 0;
}

static int pair_start(struct pair *p, const char *tag, struct dataset *ds, unsigned shuffle,
		      int follow)
{
	return pair_start_model(p, tag, ds, shuffle, follow, "small", "16", NULL);
}

static void pair_stop(struct pair *p)
{
	vr_channel_destroy(p->fch);
	vr_channel_destroy(p->rch);
	proc_stop(&p->r, 10000);
	proc_stop(&p->f, 10000);
}

/* Puts the JPEG at path as item id through featured's Embed; *version and
 * *dims get the vector's model version and length. */
static int embed_file(vr_channel *fch, const char *id, const char *path, uint32_t *version,
		      uint32_t *dims)
{
	Visrec__V1__EmbedRequest er = VISREC__V1__EMBED_REQUEST__INIT;
	Visrec__V1__EmbedResponse *resp = NULL;
	size_t len = 0;
	er.item_id = (char *)id;
	if (!(er.image.data = vr_test_read_file(path, &len)))
		return VR_EIO;
	er.image.len = len;
	int rc = vr_client_unary(fch, "/visrec.v1.Featured/Embed", &er.base,
				 &visrec__v1__embed_response__descriptor, (ProtobufCMessage **)&resp,
				 10000, NULL, NULL);
	if (!rc) {
		*version = resp->vector->model_version;
		*dims = (uint32_t)resp->vector->n_values;
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	free(er.image.data);
	return rc;
}

TEST(auc_rises_and_ingest_order_invariant)
{
	struct pair p;
	vr_status st;
	double auc[8] = { 0 }, shuffled[8] = { 0 };
	ASSERT_OK(pair_start(&p, "auc", &small_set, 0, 0));
	Visrec__V1__TrainRequest bpr = VISREC__V1__TRAIN_REQUEST__INIT;
	bpr.model = VISREC__V1__MODEL_KIND__BPR;
	bpr.epochs = 5;
	bpr.seed = 7;
	ASSERT_MSG(train(p.rch, &bpr, auc, 8, &st) == 0, "BPR: %s", st.message);
	double bpr_cold = cold_auc(p.rch);
	Visrec__V1__TrainRequest dv;
	dvbpr_request(&dv, 6);
	ASSERT_MSG(train(p.rch, &dv, auc, 8, &st) == 0, "DVBPR: %s", st.message);
	double dv_cold = cold_auc(p.rch);
	fprintf(stderr, "  DVBPR validation AUC by epoch: %.4f %.4f %.4f %.4f %.4f %.4f; cold AUC: "
		"DVBPR %.4f, BPR %.4f\n", auc[0], auc[1], auc[2], auc[3], auc[4], auc[5], dv_cold,
		bpr_cold);
	/* The best later epoch (the one served) against the first: over 40
	 * validation users one epoch's AUC moves by +-.03, and since triples
	 * are drawn per training pair the first epoch already learns most of
	 * what this set holds (.61 -> best .65, last .62; users first: .52 ->
	 * .64, last .59). A model that does not learn stays within noise. */
	double best = auc[1];
	for (int e = 2; e < 6; e++)
		best = auc[e] > best ? auc[e] : best;
	ASSERT_MSG(best > auc[0] + 0.02, "validation AUC did not rise: %.4f -> best %.4f", auc[0],
		   best);
	/* On this small set BPR's 0 for every cold item is hard to beat (see
	 * small_set); beats_bpr_on_cold_items makes that comparison on a set
	 * where the images decide. Here: the visual terms rank cold items well
	 * above chance. */
	ASSERT_MSG(dv_cold > 0.6, "DVBPR's cold AUC %.4f (BPR %.4f)", dv_cold, bpr_cold);
	/* A restarted rankd serves the same DVBPR model from its snapshot. */
	vr_channel_destroy(p.rch);
	proc_stop(&p.r, 10000);
	ASSERT_OK(start_rankd(&p.r, "auc", p.f.addr, 0));
	p.rch = channel(p.r.addr);
	ASSERT_NEAR(cold_auc(p.rch), dv_cold, 1e-6);
	/* An item put after training: Embed answers with the active version,
	 * which DVBPR did not replace (its version 2 is live beside it;
	 * beats_bpr_on_cold_items follows such an item into rankd). */
	char path[256];
	uint32_t version = 0, dims = 0;
	snprintf(path, sizeof path, "%s/images/i000001.jpg", small_set.dir);
	ASSERT_OK(embed_file(p.fch, "new-after-dvbpr", path, &version, &dims));
	ASSERT_EQ_INT(version, 1);
	pair_stop(&p);
	/* The same run on a catalogue put in a shuffled order evaluates the same. */
	ASSERT_OK(pair_start(&p, "shuffled", &small_set, 12345, 0));
	ASSERT_MSG(train(p.rch, &dv, shuffled, 8, &st) == 0, "DVBPR: %s", st.message);
	double sh_cold = cold_auc(p.rch);
	fprintf(stderr, "  shuffled ingest: validation AUC %.4f .. %.4f, cold AUC %.4f\n", shuffled[0],
		shuffled[5], sh_cold);
	for (int e = 0; e < 6; e++)
		ASSERT_NEAR(shuffled[e], auc[e], 1e-6);
	ASSERT_NEAR(sh_cold, dv_cold, 1e-6);
	pair_stop(&p);
}

/* rankd's Info: the served model's featured version into *fversion. */
static int rank_feature_version(vr_channel *ch, uint32_t *fversion)
{
	Visrec__V1__RankInfoRequest req = VISREC__V1__RANK_INFO_REQUEST__INIT;
	Visrec__V1__RankInfoResponse *r = NULL;
	int rc = vr_client_unary(ch, "/visrec.v1.Rank/Info", &req.base,
				 &visrec__v1__rank_info_response__descriptor, (ProtobufCMessage **)&r,
				 10000, NULL, NULL);
	if (rc)
		return rc;
	*fversion = r->feature_version;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return 0;
}

/* featured's active model version and its purpose; live and newest
 * (may be NULL): how many versions are live, and the newest version. */
static int featured_info(vr_channel *ch, uint32_t *version, char *purpose, size_t cap,
			 uint32_t *live, uint32_t *newest)
{
	Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	Visrec__V1__FeaturedInfoResponse *r = NULL;
	int rc = vr_client_unary(ch, "/visrec.v1.Featured/Info", &req.base,
				 &visrec__v1__featured_info_response__descriptor,
				 (ProtobufCMessage **)&r, 10000, NULL, NULL);
	if (rc)
		return rc;
	*version = r->active_model ? r->active_model->version : 0;
	snprintf(purpose, cap, "%s", r->active_model ? r->active_model->purpose : "");
	for (size_t k = 0; k < r->n_models; k++) {
		if (live)
			*live += r->models[k]->live;
		if (newest && r->models[k]->version > *newest)
			*newest = r->models[k]->version;
	}
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return 0;
}

static int featured_active(vr_channel *ch, uint32_t *version, char *purpose, size_t cap)
{
	return featured_info(ch, version, purpose, cap, NULL, NULL);
}

static void log_curve(const char *what, const struct run_log *l)
{
	fprintf(stderr, "  %s validation AUC by epoch:", what);
	for (uint32_t e = 0; e < l->epochs; e++)
		fprintf(stderr, " %.4f", l->auc[e]);
	fprintf(stderr, "; final line: epoch %u, loss %.5f, AUC %.4f, %s\n", l->last_epoch,
		l->last_loss, l->last_auc, l->state);
}

/* The best epoch is the one served, and the progress lines say what
 * happened: a DVBPR run whose last epoch is not its best evaluates as the
 * same run stopped at its best epoch (the runs are deterministic); the
 * final line carries the best epoch's loss and AUC and the epochs run;
 * stopped_early only when patience stopped it. */
TEST(best_epoch_served_progress_truthful)
{
	struct pair p;
	vr_status st;
	struct run_log whole, cut, early;
	double e_whole[3], e_cut[3];
	ASSERT_OK(pair_start(&p, "best", &small_set, 0, 0));
	Visrec__V1__TrainRequest dv;
	dvbpr_request(&dv, 6);
	dv.patience = 10;
	ASSERT_MSG(train_log(p.rch, &dv, &whole, &st) == 0, "DVBPR: %s", st.message);
	log_curve("DVBPR", &whole);
	ASSERT_EQ_INT(whole.epochs, 6);
	uint32_t best = 0;
	for (uint32_t e = 1; e < whole.epochs; e++)
		if (whole.auc[e] > whole.auc[best] + 1e-4)
			best = e;
	/* The data and seed are chosen so the last epoch is not the best. */
	ASSERT_MSG(best + 1 < whole.epochs, "the best epoch is the last (%u)", best + 1);
	ASSERT_EQ_INT(whole.last_epoch, 6);
	ASSERT_STR_EQ(whole.state, "finished");
	ASSERT_NEAR(whole.last_auc, whole.auc[best], 1e-9);
	ASSERT_NEAR(whole.last_loss, whole.loss[best], 1e-9);
	ASSERT(whole.last_loss > 0.01);
	ASSERT_OK(evaluate(p.rch, e_whole));
	/* The same run stopped at the best epoch serves the same model. */
	dv.epochs = best + 1;
	ASSERT_MSG(train_log(p.rch, &dv, &cut, &st) == 0, "DVBPR: %s", st.message);
	ASSERT_STR_EQ(cut.state, "finished");
	ASSERT_OK(evaluate(p.rch, e_cut));
	fprintf(stderr, "  Evaluate after 6 epochs: AUC %.6f RR %.6f cold %.6f; after %u: AUC %.6f "
		"RR %.6f cold %.6f\n", e_whole[0], e_whole[1], e_whole[2], best + 1, e_cut[0],
		e_cut[1], e_cut[2]);
	for (int k = 0; k < 3; k++)
		ASSERT_NEAR(e_whole[k], e_cut[k], 1e-6);
	/* Patience 1: the first epoch without gain stops the run. */
	uint32_t stop = 0;
	for (uint32_t e = 1; e < whole.epochs && !stop; e++)
		if (!(whole.auc[e] > whole.auc[e - 1] + 1e-4))
			stop = e + 1;
	ASSERT(stop);
	dv.epochs = 6;
	dv.patience = 1;
	ASSERT_MSG(train_log(p.rch, &dv, &early, &st) == 0, "DVBPR: %s", st.message);
	log_curve("DVBPR, patience 1", &early);
	if (stop < 6) {
		ASSERT_STR_EQ(early.state, "stopped_early");
		ASSERT_EQ_INT(early.last_epoch, stop);
		ASSERT_EQ_INT(early.epochs, stop);
	}
	/* BPR's run through the CPU trainer: patience running out at the last
	 * epoch is not stopping early, and the final line has the real loss. */
	Visrec__V1__TrainRequest bpr = VISREC__V1__TRAIN_REQUEST__INIT;
	struct run_log b;
	bpr.model = VISREC__V1__MODEL_KIND__BPR;
	bpr.seed = 7;
	bpr.threads = 1;
	bpr.epochs = 30;
	bpr.patience = 1;
	ASSERT_MSG(train_log(p.rch, &bpr, &b, &st) == 0, "BPR: %s", st.message);
	log_curve("BPR, patience 1", &b);
	uint32_t bb = 0;
	for (uint32_t e = 1; e < b.epochs; e++)
		if (b.auc[e] > b.auc[bb] + 1e-4)
			bb = e;
	ASSERT(b.last_loss > 0);
	ASSERT_NEAR(b.last_loss, b.loss[bb], 1e-9);
	ASSERT_NEAR(b.last_auc, b.auc[bb], 1e-9);
	ASSERT_EQ_INT(b.last_epoch, b.epochs);
	ASSERT_STR_EQ(b.state, b.epochs < 30 ? "stopped_early" : "finished");
	bpr.epochs = b.epochs; /* the same run, told to end where it stopped */
	ASSERT_MSG(train_log(p.rch, &bpr, &b, &st) == 0, "BPR: %s", st.message);
	ASSERT_STR_EQ(b.state, "finished");
	/* A step that blows up (SGD at lr 1e8 with λ 1 multiplies a sampled
	 * user's θ by about -1e8) ends the run saying so and what to change; the model
	 * served before stays. */
	double e_bpr[3], e_after[3];
	ASSERT_OK(evaluate(p.rch, e_bpr));
	dv.patience = 0;
	dv.epochs = 3;
	dv.optimizer = "sgd";
	dv.learning_rate = 1e8f;
	dv.lambda = 1;
	ASSERT(train_log(p.rch, &dv, &early, &st) != 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(st.message, "diverged in epoch");
	ASSERT_CONTAINS(st.message, "smaller lr");
	ASSERT_OK(evaluate(p.rch, e_after));
	ASSERT_NEAR(e_after[0], e_bpr[0], 1e-12);
	pair_stop(&p);
}

/* Runs req and checks it streamed exactly ref's curve and final line and
 * serves a model that evaluates as ref_eval. */
static int same_run(vr_channel *ch, const Visrec__V1__TrainRequest *req, const struct run_log *ref,
		    const double ref_eval[3], const char *what)
{
	struct run_log l;
	vr_status st;
	double ev[3];
	if (train_log(ch, req, &l, &st) || evaluate(ch, ev)) {
		fprintf(stderr, "  %s: %s\n", what, st.message);
		return -1;
	}
	int same = l.epochs == ref->epochs && l.last_epoch == ref->last_epoch &&
		   l.last_loss == ref->last_loss && !strcmp(l.state, ref->state);
	for (uint32_t e = 0; e < l.epochs; e++)
		same &= l.auc[e] == ref->auc[e] && l.loss[e] == ref->loss[e];
	for (int k = 0; k < 3; k++)
		same &= ev[k] == ref_eval[k] || (isnan(ev[k]) && isnan(ref_eval[k]));
	fprintf(stderr, "  %s again: AUC %.6f (was %.6f), cold %.6f (was %.6f), %u epochs (was %u): %s\n",
		what, ev[0], ref_eval[0], ev[2], ref_eval[2], l.epochs, ref->epochs,
		same ? "the same" : "DIFFERENT");
	return same ? 0 : -1;
}

/* Models keep the featured version they were trained on, and training is
 * deterministic whatever the daemons' history: the same requests after
 * other runs and after a restart of rankd give the same curves and the
 * same served model, bit for bit (BPR's Hogwild on one thread, its
 * default; VBPR's minibatches are deterministic for any thread count). */
TEST(retrain_after_restart_is_the_same)
{
	struct pair p;
	vr_status st;
	struct run_log lb, lv, ld, lx;
	double eb[3], ev[3], ed[3];
	uint32_t v_features = 0, fv = 0, active = 0;
	char purpose[32];
	ASSERT_OK(pair_start(&p, "again", &small_set, 0, 1));
	ASSERT_OK(featured_active(p.fch, &v_features, purpose, sizeof purpose));
	Visrec__V1__TrainRequest bpr = VISREC__V1__TRAIN_REQUEST__INIT;
	bpr.model = VISREC__V1__MODEL_KIND__BPR;
	bpr.epochs = 5;
	bpr.seed = 7; /* threads 0: BPR's Hogwild then runs on one */
	Visrec__V1__TrainRequest vbpr = VISREC__V1__TRAIN_REQUEST__INIT;
	vbpr.model = VISREC__V1__MODEL_KIND__VBPR;
	vbpr.epochs = 5;
	vbpr.seed = 7;
	vbpr.batch_size = 256;
	Visrec__V1__TrainRequest dv;
	dvbpr_request(&dv, 4);
	ASSERT_MSG(train_log(p.rch, &bpr, &lb, &st) == 0, "BPR: %s", st.message);
	ASSERT_OK(evaluate(p.rch, eb));
	ASSERT_OK(rank_feature_version(p.rch, &fv));
	ASSERT_EQ_INT(fv, 0); /* BPR uses no vectors */
	ASSERT_MSG(train_log(p.rch, &vbpr, &lv, &st) == 0, "VBPR: %s", st.message);
	ASSERT_OK(evaluate(p.rch, ev));
	ASSERT_OK(rank_feature_version(p.rch, &fv));
	ASSERT_EQ_INT(fv, v_features);
	ASSERT_MSG(train_log(p.rch, &dv, &ld, &st) == 0, "DVBPR: %s", st.message);
	ASSERT_OK(evaluate(p.rch, ed));
	/* DVBPR serves the vectors of the version its Finish made. */
	uint32_t v_dvbpr = 0;
	ASSERT_OK(rank_feature_version(p.rch, &v_dvbpr));
	ASSERT_MSG(v_dvbpr > v_features, "DVBPR's feature version %u", v_dvbpr);
	/* A VBPR Train after it: by default on featured's active version, which
	 * stays the pretrained features unless featured switched at DVBPR's
	 * Finish; told the version, on that one. */
	ASSERT_OK(featured_active(p.fch, &active, purpose, sizeof purpose));
	Visrec__V1__TrainRequest v0 = vbpr;
	v0.epochs = 1;
	ASSERT_MSG(train_log(p.rch, &v0, &lx, &st) == 0, "VBPR: %s", st.message);
	ASSERT_OK(rank_feature_version(p.rch, &fv));
	fprintf(stderr, "  after DVBPR (version %u) featured's active version is %u (%s); a VBPR "
		"Train by default takes version %u\n", v_dvbpr, active, purpose, fv);
	ASSERT_EQ_INT(fv, active);
	vbpr.feature_version = v_features;
	ASSERT_MSG(train_log(p.rch, &vbpr, &lv, &st) == 0, "VBPR: %s", st.message);
	ASSERT_OK(rank_feature_version(p.rch, &fv));
	ASSERT_EQ_INT(fv, v_features);
	/* An unknown version is NOT_FOUND, and BPR takes none. */
	Visrec__V1__TrainRequest bad = vbpr;
	bad.feature_version = 999;
	ASSERT_EQ_INT(train_log(p.rch, &bad, &lx, &st), GRPC_STATUS_NOT_FOUND);
	ASSERT_CONTAINS(st.message, "no model version 999");
	bad = bpr;
	bad.feature_version = 1;
	ASSERT_EQ_INT(train_log(p.rch, &bad, &lx, &st), GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(st.message, "feature_version");
	/* After a restart rankd serves the snapshot with its version... */
	vr_channel_destroy(p.rch);
	proc_stop(&p.r, 10000);
	ASSERT_OK(start_rankd(&p.r, "again", p.f.addr, 1));
	p.rch = channel(p.r.addr);
	ASSERT_OK(rank_feature_version(p.rch, &fv));
	ASSERT_EQ_INT(fv, v_features);
	/* ... and every run gives what it gave the first time. */
	ASSERT_OK(same_run(p.rch, &bpr, &lb, eb, "BPR"));
	ASSERT_OK(same_run(p.rch, &vbpr, &lv, ev, "VBPR"));
	ASSERT_OK(same_run(p.rch, &dv, &ld, ed, "DVBPR"));
	pair_stop(&p);
}

/* Scores of n items for user; 0 or the call's error. */
static int score(vr_channel *ch, const char *user, char **items, size_t n, float *out)
{
	Visrec__V1__ScoreRequest req = VISREC__V1__SCORE_REQUEST__INIT;
	Visrec__V1__ScoreResponse *r = NULL;
	req.user_id = (char *)user;
	req.item_ids = items;
	req.n_item_ids = n;
	int rc = vr_client_unary(ch, "/visrec.v1.Rank/Score", &req.base,
				 &visrec__v1__score_response__descriptor, (ProtobufCMessage **)&r, 10000,
				 NULL, NULL);
	if (rc)
		return rc;
	if (r->n_items != n)
		rc = -1;
	for (size_t k = 0; !rc && k < n; k++)
		out[k] = r->items[k]->score;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return rc;
}

/* The first item the generator made cold (truth_items.csv: item,cold,...). */
static int first_cold_item(const struct dataset *ds, char *id, size_t cap)
{
	char path[192];
	size_t len;
	snprintf(path, sizeof path, "%s/truth_items.csv", ds->dir);
	char *csv = (char *)vr_test_read_file(path, &len), *save = NULL;
	int rc = -1;
	for (char *line = csv ? strtok_r(csv, "\n", &save) : NULL; line && rc;
	     line = strtok_r(NULL, "\n", &save)) {
		char *c = strchr(line, ',');
		if (c && !strncmp(c, ",1,", 3)) {
			snprintf(id, cap, "%.*s", (int)(c - line), line);
			rc = 0;
		}
	}
	free(csv);
	return rc;
}

/* How well the served model orders the cold items for the users whose test
 * item is cold: per such user, Score of every cold item, and the share of
 * the other cold items ranked below the test item (ties count half),
 * averaged over those users. The part of the ranking that only the images
 * can do: a model without them gives every cold item the same prior
 * (0.5 here), however high that prior puts them among the warm ones,
 * which is what the cold AUC over all items mostly measures. NAN on an
 * error. Reads the set's truth_items.csv and interactions.csv (each user's
 * last row is its test item). */
static double cold_among_cold_auc(vr_channel *ch, const struct dataset *ds)
{
	enum { MAX_COLD = 256 };
	char path[192], *cold[MAX_COLD], *save = NULL;
	size_t len, n_cold = 0;
	double sum = 0;
	int users = 0, rc = 0;
	snprintf(path, sizeof path, "%s/truth_items.csv", ds->dir);
	char *items = (char *)vr_test_read_file(path, &len);
	for (char *line = items ? strtok_r(items, "\n", &save) : NULL; line && n_cold < MAX_COLD;
	     line = strtok_r(NULL, "\n", &save)) {
		char *c = strchr(line, ',');
		if (c && !strncmp(c, ",1,", 3)) {
			*c = 0;
			cold[n_cold++] = line;
		}
	}
	snprintf(path, sizeof path, "%s/interactions.csv", ds->dir);
	char *csv = (char *)vr_test_read_file(path, &len);
	float sc[MAX_COLD];
	char user[64] = "", last[64] = "";
	save = NULL;
	/* One pass; a sentinel line after the last ends the last user. */
	for (char *line = csv ? strtok_r(csv, "\n", &save) : NULL; !rc; line = strtok_r(NULL, "\n", &save)) {
		char u[64] = "", it[64] = "";
		if (line && sscanf(line, "%63[^,],%63[^,]", u, it) != 2)
			continue; /* the header */
		if (user[0] && (!line || strcmp(u, user))) {
			size_t t = 0;
			while (t < n_cold && strcmp(cold[t], last))
				t++;
			if (t < n_cold) {
				if ((rc = score(ch, user, cold, n_cold, sc)))
					break;
				double below = 0;
				for (size_t k = 0; k < n_cold; k++)
					if (k != t)
						below += sc[k] < sc[t] ? 1 : sc[k] == sc[t] ? 0.5 : 0;
				sum += below / (double)(n_cold - 1);
				users++;
			}
		}
		if (!line)
			break;
		snprintf(user, sizeof user, "%s", u);
		snprintf(last, sizeof last, "%s", it);
	}
	free(csv);
	free(items);
	return rc || !users || n_cold < 2 ? NAN : sum / users;
}

/* The claim, on a set where the images carry the taste: DVBPR's
 * validation AUC rises over epochs and it orders the cold items for their
 * users better than BPR, which gives them all the same prior. (The cold
 * AUC over all items is printed, not compared: BPR's prior alone puts cold
 * items above most warm ones, DVBPR's spreads them by their images.) Then an item put after training (the image of a cold item,
 * under a new id) reaches rankd by the change feed and scores exactly as
 * that cold item, θ_u·φ(X_i) with the trained CNN (β_i = γ_i = 0). */
TEST(beats_bpr_on_cold_items)
{
	struct pair p;
	vr_status st;
	double auc[16] = { 0 }, none[16];
	ASSERT_OK(pair_start(&p, "cold", &cold_set, 0, 1));
	Visrec__V1__TrainRequest bpr = VISREC__V1__TRAIN_REQUEST__INIT;
	bpr.model = VISREC__V1__MODEL_KIND__BPR;
	bpr.epochs = 5;
	bpr.seed = 7;
	bpr.threads = 1; /* Hogwild with one thread: the same model every run */
	ASSERT_MSG(train(p.rch, &bpr, none, 16, &st) == 0, "BPR: %s", st.message);
	double bpr_cold = cold_auc(p.rch), bpr_among = cold_among_cold_auc(p.rch, &cold_set);
	/* The short CPU schedule that works (see the issue note): 16 px, K' 16,
	 * 10 epochs of 2,000 triples in steps of 64; rankd's SGD (better here
	 * than Adam: training.c's dvbpr_settings) at lr 0.2 with
	 * λ 0.05, which keeps warm items' β_i and γ_i from memorising the few
	 * interactions each has, so θ_u·φ decides more of the ranking. */
	Visrec__V1__TrainRequest dv;
	dvbpr_request(&dv, 10);
	dv.dims = 8;
	dv.visual_dims = 16;
	dv.batch_size = 64;
	dv.triples_per_epoch = 0;
	dv.optimizer = "sgd";
	dv.learning_rate = 0.2f;
	dv.lambda = 0.05f;
	dv.patience = 10; /* every epoch runs: the curve below is the test */
	ASSERT_MSG(train(p.rch, &dv, auc, 16, &st) == 0, "DVBPR: %s", st.message);
	double dv_cold = cold_auc(p.rch), dv_among = cold_among_cold_auc(p.rch, &cold_set);
	fprintf(stderr, "  DVBPR validation AUC by epoch:");
	for (int e = 0; e < 10; e++)
		fprintf(stderr, " %.4f", auc[e]);
	fprintf(stderr, "; cold AUC: DVBPR %.4f, BPR %.4f; among cold items: DVBPR %.4f, BPR %.4f\n",
		dv_cold, bpr_cold, dv_among, bpr_among);
	ASSERT_MSG(auc[9] > auc[0] + 0.02, "validation AUC did not rise: %.4f -> %.4f", auc[0],
		   auc[9]);
	ASSERT_MSG(fabs(bpr_among - 0.5) < 1e-9, "BPR orders cold items (%.4f): its prior is not one value",
		   bpr_among);
	ASSERT_MSG(dv_among > bpr_among + 0.03, "among cold items: DVBPR %.4f, BPR %.4f", dv_among,
		   bpr_among);
	/* A cold item put after training. */
	char twin[64], path[256], *ids[2] = { "new-after-dvbpr", twin };
	float sc[2] = { 0 };
	uint32_t version = 0, dims = 0;
	ASSERT_OK(first_cold_item(&cold_set, twin, sizeof twin));
	snprintf(path, sizeof path, "%s/images/%s.jpg", cold_set.dir, twin);
	ASSERT_OK(embed_file(p.fch, ids[0], path, &version, &dims));
	/* Embed answers with the active version (DVBPR's is live beside it);
	 * the item's DVBPR vector reaches rankd by its REEMBEDDED change. */
	ASSERT_EQ_INT(version, 1);
	int rc = -1;
	for (int wait = 0; wait < 100 && rc; wait++) { /* the follower applies it within ms */
		if ((rc = score(p.rch, "u00000", ids, 2, sc)))
			usleep(50000);
	}
	ASSERT_OK(rc);
	fprintf(stderr, "  user u00000: new item %.6f, its cold twin %s %.6f\n", (double)sc[0], twin,
		(double)sc[1]);
	ASSERT(fabsf(sc[1]) > 1e-4f);
	ASSERT_NEAR(sc[0], sc[1], 1e-4);
	pair_stop(&p);
}

/* featured dies during a run: Train ends UNAVAILABLE naming the
 * checkpoint; featured comes back; Train with resume finishes the run. */
TEST(kill_featured_then_resume)
{
	struct pair p;
	vr_status st;
	double auc[16] = { 0 };
	ASSERT_OK(pair_start(&p, "kill", &small_set, 0, 0));
	char addr[64];
	snprintf(addr, sizeof addr, "%s", p.f.addr);
	Visrec__V1__TrainRequest dv;
	dvbpr_request(&dv, 5);
	/* Kill featured once the first epoch (a checkpoint) is reported. */
	vr_ccall *cc = NULL;
	ASSERT_OK(vr_ccall_start(&cc, p.rch, "/visrec.v1.Rank/Train",
				 &visrec__v1__train_progress__descriptor, 0, NULL));
	ASSERT_OK(vr_ccall_send(cc, &dv.base));
	ASSERT_OK(vr_ccall_close_send(cc));
	int killed = 0;
	for (;;) {
		Visrec__V1__TrainProgress *pr = NULL;
		if (vr_ccall_recv(cc, (ProtobufCMessage **)&pr))
			break;
		if (pr->epoch >= 2 && !killed) {
			kill(p.f.pid, SIGKILL);
			waitpid(p.f.pid, NULL, 0);
			p.f.pid = -1;
			killed = 1;
		}
		protobuf_c_message_free_unpacked(&pr->base, NULL);
	}
	vr_ccall_finish(cc, &st);
	ASSERT(killed);
	fprintf(stderr, "  Train after the kill: %s: %s\n", vr_status_name(st.code), st.message);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_UNAVAILABLE);
	ASSERT_CONTAINS(st.message, "featured at");
	ASSERT_CONTAINS(st.message, "resume");
	close(p.f.out);
	ASSERT_OK(start_featured(&p.f, "kill", addr));
	dv.resume = 1;
	int rc = train(p.rch, &dv, auc, 16, &st);
	ASSERT_MSG(rc == 0, "resumed Train: %s: %s", vr_status_name(st.code), st.message);
	ASSERT(auc[4] > 0.5);
	/* The resumed run is the uninterrupted run: same epochs after the
	 * checkpoint, to float precision. */
	double whole[16] = { 0 };
	dv.resume = 0;
	ASSERT_OK(train(p.rch, &dv, whole, 16, &st));
	fprintf(stderr, "  validation AUC, resumed vs uninterrupted: epoch 5 %.6f vs %.6f\n", auc[4],
		whole[4]);
	for (int e = 2; e < 5; e++)
		ASSERT_NEAR(auc[e], whole[e], 1e-6);
	pair_stop(&p);
}

/* rankd dies inside the write of its second checkpoint (common/fault.h),
 * after the models and before the meta: the restarted rankd must find one
 * whole checkpoint, the first (models and meta of the same step), not a
 * mix of the two. Resume then loads it and gets as far as comparing steps
 * with featured, which saved the second before it answered that step, so
 * this resume is refused naming both steps (rankd cannot move featured's
 * checkpoint back); before the checkpoint was one transaction it failed
 * earlier, on rankd's own models being a checkpoint ahead of their meta. */
TEST(rankd_crash_in_checkpoint_keeps_the_last_whole)
{
#ifndef VISREC_FAULTS
	SKIP("built without VISREC_FAULTS (a Release build): no crash points");
#else
	struct pair p;
	vr_status st;
	double auc[8] = { 0 };
	setenv("VISREC_FAULT", "dvbpr-checkpoint@2", 1);
	int started = pair_start(&p, "ckpt", &small_set, 0, 0);
	unsetenv("VISREC_FAULT");
	ASSERT_OK(started);
	Visrec__V1__TrainRequest dv;
	dvbpr_request(&dv, 4); /* 20 steps an epoch: checkpoints at steps 20, 40, ... */
	ASSERT(train(p.rch, &dv, auc, 8, &st) != 0);
	int status = 0;
	ASSERT_EQ_INT(waitpid(p.r.pid, &status, 0), p.r.pid);
	p.r.pid = -1;
	ASSERT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == VR_FAULT_EXIT,
		   "rankd did not stop at the crash point (status %#x; Train: %s: %s)", status,
		   vr_status_name(st.code), st.message);
	close(p.r.out);
	vr_channel_destroy(p.rch);
	ASSERT_OK(start_rankd(&p.r, "ckpt", p.f.addr, 0));
	p.rch = channel(p.r.addr);
	dv.resume = 1;
	ASSERT(train(p.rch, &dv, auc, 8, &st) != 0);
	fprintf(stderr, "  resume after the crash: %s: %s\n", vr_status_name(st.code), st.message);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st.message, "featured's checkpoint is at step 40 and rankd's at step 20");
	pair_stop(&p);
#endif
}

/* The 1-minute load average, for the figures' context. */
static double loadavg(void)
{
	double l = NAN;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f && fscanf(f, "%lf", &l) != 1)
		l = NAN;
	if (f)
		fclose(f);
	return l;
}

/* How many times needle occurs in the file at path (a daemon's log). */
static int log_count(const char *path, const char *needle)
{
	size_t len = 0;
	char *text = (char *)vr_test_read_file(path, &len);
	int n = 0;
	for (char *at = text; at && (at = strstr(at, needle)); at += strlen(needle))
		n++;
	free(text);
	return n;
}

/* Waits up to ms for needle's occurrence number n in the log at path. */
static int log_wait(const char *path, const char *needle, int n, int ms)
{
	int64_t end = procs_now_ms() + ms;
	while (log_count(path, needle) < n)
		if (procs_now_ms() > end)
			return -1;
		else
			usleep(10000);
	return 0;
}

/* The seconds of the last trunk pass featured logged ("... in 3.2 s"). */
static double trunk_seconds(const char *path)
{
	size_t len = 0;
	char *text = (char *)vr_test_read_file(path, &len), *last = NULL;
	for (char *at = text; at && (at = strstr(at, "items' activations (")); at++)
		last = at;
	double s = NAN;
	char *in = last ? strstr(last, ") in ") : NULL;
	if (in && sscanf(in, ") in %lf s", &s) != 1)
		s = NAN;
	free(text);
	return s;
}

/* featured's TrainVisual slot, probed with a Start it refuses: 1 busy
 * (another session runs: FAILED_PRECONDITION), 0 free (the Start reached
 * its checks: INVALID_ARGUMENT), -1 anything else. */
static int featured_tv_busy(vr_channel *fch)
{
	vr_ccall *cc = NULL;
	vr_status st = { 0 };
	Visrec__V1__TrainVisualStart s = VISREC__V1__TRAIN_VISUAL_START__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	s.session_id = "probe";   /* learning_rate 0: INVALID_ARGUMENT */
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_START;
	req.start = &s;
	if (vr_ccall_start(&cc, fch, "/visrec.v1.Featured/TrainVisual",
			   &visrec__v1__train_visual_response__descriptor, 10000, NULL))
		return -1;
	ProtobufCMessage *m = NULL;
	if (!vr_ccall_send(cc, &req.base) && !vr_ccall_recv(cc, &m))
		protobuf_c_message_free_unpacked(m, NULL);
	vr_ccall_finish(cc, &st);
	if (st.code == GRPC_STATUS_FAILED_PRECONDITION && strstr(st.message, "another TrainVisual"))
		return 1;
	return st.code == GRPC_STATUS_INVALID_ARGUMENT ? 0 : -1;
}

/* rankd's Info: whether a Train runs, and the served model's version. */
static int rank_training(vr_channel *rch, uint64_t *model_version)
{
	Visrec__V1__RankInfoRequest req = VISREC__V1__RANK_INFO_REQUEST__INIT;
	Visrec__V1__RankInfoResponse *r = NULL;
	if (vr_client_unary(rch, "/visrec.v1.Rank/Info", &req.base,
			    &visrec__v1__rank_info_response__descriptor, (ProtobufCMessage **)&r, 10000,
			    NULL, NULL))
		return -1;
	int training = r->training;
	if (model_version)
		*model_version = r->model_version;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return training;
}

/* Starts Train(req) and reads its first progress line ("loading"). */
static int train_begin(vr_channel *rch, const Visrec__V1__TrainRequest *req, vr_ccall **cc)
{
	ProtobufCMessage *m = NULL;
	int rc = vr_ccall_start(cc, rch, "/visrec.v1.Rank/Train",
				&visrec__v1__train_progress__descriptor, 0, NULL);
	if (!rc)
		rc = vr_ccall_send(*cc, &req->base);
	if (!rc)
		rc = vr_ccall_close_send(*cc);
	if (!rc)
		rc = vr_ccall_recv(*cc, &m);
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
	return rc;
}

/* Milliseconds until both daemons are free again after a cancel: rankd's
 * Info says no Train runs and featured takes a new TrainVisual; -1 if not
 * within limit_ms. */
static int64_t ms_until_free(vr_channel *rch, vr_channel *fch, int64_t t0, int64_t limit_ms)
{
	int rank_free = 0, feat_free = 0;
	while (procs_now_ms() - t0 < limit_ms) {
		rank_free = rank_free || rank_training(rch, NULL) == 0;
		feat_free = feat_free || featured_tv_busy(fch) == 0;
		if (rank_free && feat_free)
			return procs_now_ms() - t0;
		usleep(5000);
	}
	return -1;
}

/* A DVBPR Train over a frozen trunk (featured's mobilenet_v2 at 160 px up
 * to block_10): the Start's trunk pass over every item takes seconds.
 * Cancelled in the middle of that pass, by its client and then by
 * rankd's shutdown (SIGTERM), the run must let go of both daemons within
 * a small part of a whole pass (measured in the same test): rankd cancels
 * its outstanding TrainVisual call and featured's pass stops between
 * batches. Before, rankd waited in the Start's round trip and featured's
 * pass ran to its end. After the cancel featured takes a new TrainVisual
 * at once, the served model and featured's versions are unchanged, rankd
 * logs the phase it was cancelled in, and neither daemon spends CPU.
 * Then a cancel in Finish's re-embedding (also a pass over every item):
 * its new version stays inactive and not live. Last, featured's own
 * shutdown in the pass: it exits at once too. */
static struct dataset trunk_set = { "trunk", 60, 320, 1200, 0.1, "" };

TEST(cancel_during_trunk_pass)
{
	struct pair p;
	vr_status st;
	vr_ccall *cc = NULL;
	double none[4];
	char flog[512], rlog[512], purpose[32];
	const char *computing = "computing the trunk activations";
	ASSERT_OK(pair_start_model(&p, "cancel", &trunk_set, 0, 0, "mobilenet_v2", "160",
				   "block_10"));
	snprintf(flog, sizeof flog, "%s", p.f.err_path);
	snprintf(rlog, sizeof rlog, "%s", p.r.err_path);
	/* A served model (BPR) and featured's versions to keep. */
	Visrec__V1__TrainRequest bpr = VISREC__V1__TRAIN_REQUEST__INIT;
	bpr.model = VISREC__V1__MODEL_KIND__BPR;
	bpr.epochs = 2;
	bpr.seed = 7;
	ASSERT_MSG(train(p.rch, &bpr, none, 4, &st) == 0, "BPR: %s", st.message);
	uint64_t served = 0, now = 0;
	uint32_t active = 0, active_now = 0;
	ASSERT_EQ_INT(rank_training(p.rch, &served), 0);
	ASSERT_OK(featured_active(p.fch, &active, purpose, sizeof purpose));
	Visrec__V1__TrainRequest dv;
	dvbpr_request(&dv, 1);
	dv.arch = "";   /* the trunk is featured's active model */
	dv.input_size = 0;
	dv.trunk_layer = "block_10";
	dv.head_width = 8;
	dv.visual_dims = 8;
	dv.batch_size = 256;
	dv.triples_per_epoch = 256;

	/* 1. The client cancels in the middle of the trunk pass. */
	ASSERT_OK(train_begin(p.rch, &dv, &cc));
	ASSERT_OK(log_wait(flog, computing, 1, 120000));
	int64_t t0 = procs_now_ms();
	vr_ccall_cancel(cc);
	vr_ccall_finish(cc, NULL);
	int64_t free_ms = ms_until_free(p.rch, p.fch, t0, 300000);
	usleep(500000); /* the calls' own ends settle (about 30 ms of CPU) */
	int64_t c0 = proc_cpu_ms(p.f.pid), r0 = proc_cpu_ms(p.r.pid);
	usleep(1000000);
	int64_t idle_f = proc_cpu_ms(p.f.pid) - c0, idle_r = proc_cpu_ms(p.r.pid) - r0;
	ASSERT_EQ_INT(rank_training(p.rch, &now), 0);
	ASSERT_OK(featured_active(p.fch, &active_now, purpose, sizeof purpose));
	/* featured finished no pass of that session, rankd named the phase. */
	int passes = log_count(flog, "items' activations (");
	int named = log_count(rlog, "cancelled during featured's TrainVisual start (its image "
				    "cache and trunk pass)");
	int released = log_count(flog, "cancelled by the client during the trunk pass");

	/* 2. The whole pass, timed: featured takes a new session at once. */
	vr_ccall *tv = NULL;
	Visrec__V1__TrainVisualStart s = VISREC__V1__TRAIN_VISUAL_START__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	s.session_id = "whole-pass";
	s.dims = 8;
	s.learning_rate = 1e-3f;
	s.seed = 1;
	s.trunk_layer = "block_10";
	s.head_width = 8;
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_START;
	req.start = &s;
	ProtobufCMessage *m = NULL;
	ASSERT_OK(vr_ccall_start(&tv, p.fch, "/visrec.v1.Featured/TrainVisual",
				 &visrec__v1__train_visual_response__descriptor, 0, NULL));
	ASSERT_OK(vr_ccall_send(tv, &req.base));
	int got = vr_ccall_recv(tv, &m);
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
	vr_ccall_close_send(tv);
	ASSERT_EQ_INT(vr_ccall_finish(tv, &st), 0);
	ASSERT_MSG(got == 0, "featured refused a new TrainVisual after the cancel: %s", st.message);
	double pass_s = trunk_seconds(flog);
	fprintf(stderr, "  load %.2f; trunk pass of %lld items: %.2f s; after the client's cancel "
		"both daemons free in %lld ms; idle CPU over 1 s: featured %lld ms, rankd %lld ms\n",
		loadavg(), (long long)trunk_set.items, pass_s, (long long)free_ms,
		(long long)idle_f, (long long)idle_r);
	ASSERT_MSG(free_ms >= 0, "the daemons were still busy 300 s after the cancel");
	ASSERT_MSG(isfinite(pass_s) && pass_s > 0.5, "the trunk pass took %.2f s: too short to "
		   "tell a prompt cancel from a late one", pass_s);
	ASSERT_MSG(free_ms < pass_s * 1000 / 3, "the cancel took %lld ms, the whole pass %.0f ms",
		   (long long)free_ms, pass_s * 1000);
	ASSERT_EQ_INT(passes, 0);
	ASSERT_EQ_INT(named, 1);
	ASSERT_EQ_INT(released, 1);
	ASSERT_EQ_INT((long long)now, (long long)served);
	ASSERT_EQ_INT(active_now, active);
	ASSERT_MSG(idle_f <= 30 && idle_r <= 30, "idle after the cancel: featured %lld ms, rankd "
		   "%lld ms of CPU in 1 s", (long long)idle_f, (long long)idle_r);

	/* 3. The client cancels in Finish's re-embedding: the new version
	 * stays inactive and not live, the served model stays. */
	uint32_t live0 = 0, newest0 = 0, live1 = 0, newest1 = 0;
	ASSERT_OK(featured_info(p.fch, &active_now, purpose, sizeof purpose, &live0, &newest0));
	ASSERT_OK(train_begin(p.rch, &dv, &cc));
	ASSERT_OK(log_wait(flog, "re-embedding every item into version", 1, 300000));
	t0 = procs_now_ms();
	vr_ccall_cancel(cc);
	vr_ccall_finish(cc, NULL);
	free_ms = ms_until_free(p.rch, p.fch, t0, 300000);
	ASSERT_OK(featured_info(p.fch, &active_now, purpose, sizeof purpose, &live1, &newest1));
	ASSERT_EQ_INT(rank_training(p.rch, &now), 0);
	fprintf(stderr, "  cancelled in Finish's re-embedding: both daemons free in %lld ms; "
		"version %u made, live versions %u (were %u)\n", (long long)free_ms, newest1, live1,
		live0);
	ASSERT_MSG(free_ms >= 0 && free_ms < pass_s * 1000 / 3, "the cancel in Finish took %lld ms, "
		   "a trunk pass %.0f ms", (long long)free_ms, pass_s * 1000);
	ASSERT_EQ_INT(newest1, newest0 + 1);
	ASSERT_EQ_INT(live1, live0);
	ASSERT_EQ_INT(active_now, active);
	ASSERT_EQ_INT((long long)now, (long long)served);
	ASSERT_EQ_INT(log_count(flog, "stays inactive and not live"), 1);
	ASSERT_EQ_INT(log_count(rlog, "cancelled during featured's Finish"), 1);

	/* 4. rankd shuts down in the middle of the pass: it exits at once. */
	int before = log_count(flog, computing);
	ASSERT_OK(train_begin(p.rch, &dv, &cc));
	ASSERT_OK(log_wait(flog, computing, before + 1, 120000));
	t0 = procs_now_ms();
	int status = proc_stop(&p.r, 300000);
	int64_t exit_ms = procs_now_ms() - t0;
	vr_ccall_finish(cc, &st);
	int64_t feat_ms = -1;
	while (procs_now_ms() - t0 < 300000 && featured_tv_busy(p.fch) != 0)
		usleep(5000);
	feat_ms = procs_now_ms() - t0;
	fprintf(stderr, "  rankd's SIGTERM in the pass: exited in %lld ms (status %#x), featured "
		"free in %lld ms; the Train: %s: %s\n", (long long)exit_ms, status, (long long)feat_ms,
		vr_status_name(st.code), st.message);
	ASSERT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rankd's exit status %#x", status);
	ASSERT_MSG(exit_ms < pass_s * 1000 / 3, "rankd took %lld ms to exit, the whole pass %.0f ms",
		   (long long)exit_ms, pass_s * 1000);
	/* featured learns of rankd's death from the torn-down stream, then
	 * stops between the pass's layers: half the pass leaves room for a
	 * loaded box (1.5 s of a 3.7 s pass beside e2e.main_job in a clean-
	 * clone run); the activations' log count below shows it never ended
	 * the pass. */
	ASSERT_MSG(feat_ms < pass_s * 1000 / 2, "featured took %lld ms to let go, the whole pass "
		   "%.0f ms", (long long)feat_ms, pass_s * 1000);
	/* the timed pass and the one before Finish only */
	ASSERT_EQ_INT(log_count(flog, "items' activations ("), 2);
	ASSERT_OK(featured_active(p.fch, &active_now, purpose, sizeof purpose));
	ASSERT_EQ_INT(active_now, active);

	/* 5. featured shuts down in the middle of the pass: it exits at once
	 * and tells its client why (UNAVAILABLE: rankd may resume). */
	before = log_count(flog, computing);
	s.session_id = "featured-stops";
	ASSERT_OK(vr_ccall_start(&tv, p.fch, "/visrec.v1.Featured/TrainVisual",
				 &visrec__v1__train_visual_response__descriptor, 0, NULL));
	ASSERT_OK(vr_ccall_send(tv, &req.base));
	ASSERT_OK(log_wait(flog, computing, before + 1, 120000));
	t0 = procs_now_ms();
	status = proc_stop(&p.f, 300000);
	exit_ms = procs_now_ms() - t0;
	m = NULL;
	ASSERT(vr_ccall_recv(tv, &m) != 0);
	vr_ccall_finish(tv, &st);
	fprintf(stderr, "  featured's SIGTERM in the pass: exited in %lld ms (status %#x); its "
		"client got %s: %s\n", (long long)exit_ms, status, vr_status_name(st.code),
		st.message);
	ASSERT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "featured's exit status %#x",
		   status);
	ASSERT_MSG(exit_ms < pass_s * 1000 / 3, "featured took %lld ms to exit, the whole pass "
		   "%.0f ms", (long long)exit_ms, pass_s * 1000);
	/* Its reason, unless a batch outlasted the shutdown's grace (2 s) on a
	 * loaded box and the server cancelled the call first. */
	ASSERT_EQ_INT(st.code, GRPC_STATUS_UNAVAILABLE);
	ASSERT_EQ_INT(log_count(flog, "featured is shutting down during the trunk pass"), 1);
	pair_stop(&p);
}

static const struct vr_test tests[] = {
	T(auc_rises_and_ingest_order_invariant), T(beats_bpr_on_cold_items),
	T(kill_featured_then_resume), T(best_epoch_served_progress_truthful),
	T(retrain_after_restart_is_the_same), T(rankd_crash_in_checkpoint_keeps_the_last_whole),
	T(cancel_during_trunk_pass), { 0 },
};

int main(int argc, char **argv)
{
	vr_log_set_level(VR_LOG_WARN);
	return vr_test_main_in_tmpdir(tests, argc, argv, tmpdir, sizeof tmpdir, "/tmp/vr-dvbpr-train-XXXXXX",
				      vr_rpc_init, vr_rpc_shutdown);
}
