/* bench_dvbpr: DVBPR split-training steps on this machine's CPU, and the
 * split of a step's time between featured's network, the RPC round trip
 * (send to reply, less featured's network time: serialisation, loopback,
 * the executor hand-off) and rankd's own work (margins, packing, the SGD
 * update). featured's service runs in this process behind a real gRPC
 * server on 127.0.0.1; rankd's client (rankd/dvbpr.h) drives it.
 *
 *   bench_dvbpr [arch] [input_size] [batch] [steps] [items] [trunk:width[:l2] [trunk_batch]]
 *   defaults:    small 64 128 20 500
 *
 * Prints one line per setting with steps/s, triples/s and milliseconds
 * per step of each part, plus the image cache's size. With trunk:width
 * (e.g. block_10:128) featured's active model is arch at input_size, and
 * the same run measures two sessions, K 32: the whole net trained end to
 * end (batch), then DVBPR over the frozen trunk cut at trunk with a
 * conv1x1 head of width (trunk_batch, default 1024, triples per step),
 * ending with its L2 normalisation with ":l2" (run.sh's default), its
 * Start (decode + the trunk's activations for every item) timed apart. */
#include "dvbpr.h"
#include "dvbpr_test.h"
#include "log.h"
#include "model.h"
#include "sampler.h"

#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* One session of opts o: Start, a warm-up step, steps timed steps of
 * batch triples; prints its line. 0 or 1. */
static int session(struct fd_proc *fp, rk_model *m, const rk_dvbpr_opts *o, const char *what,
		   int batch, int steps, int size, int n_items, double *tps)
{
	rk_dvbpr *d = NULL;
	vr_status st = { 0 };
	int rc = 1;
	vr_channel *ch = dvt_channel(fp->addr);
	uint32_t *u = malloc(3 * (size_t)batch * sizeof *u), *i = u + batch, *j = u + 2 * batch;
	double t0 = now_s();
	if (rk_dvbpr_open(&d, ch, m, o, NULL, &st)) {
		fprintf(stderr, "open: %s\n", st.message);
		goto leave;
	}
	double t_start = now_s() - t0;
	rk_rng rng;
	rk_rng_seed(&rng, 1, 0);
	/* One warm-up step, then the timed ones. */
	rk_dvbpr_stats s0, s1;
	for (int step = 0; step <= steps; step++) {
		if (step == 1) {
			rk_dvbpr_stats_get(d, &s0);
			t0 = now_s();
		}
		for (int t = 0; t < batch; t++) {
			u[t] = rk_rng_below(&rng, m->d.n_users);
			i[t] = rk_rng_below(&rng, m->d.n_items);
			j[t] = (i[t] + 1 + rk_rng_below(&rng, m->d.n_items - 1)) % m->d.n_items;
		}
		if (rk_dvbpr_step(d, m, u, i, j, (size_t)batch, 0.05f, 0.0025f, NULL, &st)) {
			fprintf(stderr, "step: %s\n", st.message);
			goto leave;
		}
	}
	double wall = now_s() - t0;
	rk_dvbpr_stats_get(d, &s1);
	double n = steps;
	*tps = n * batch / wall;
	printf("%s S=%d K=%u batch %d, %d items (image cache %.1f MB, Start %.2f s): "
	       "%.3f steps/s, %.0f triples/s; per step %.1f ms = featured network %.1f ms + "
	       "round trip %.2f ms + rankd %.3f ms\n",
	       what, size, m->d.k2, batch, n_items, n_items * 3.0 * size * size / 1e6, t_start,
	       n / wall, *tps, 1e3 * wall / n, 1e3 * (s1.network_s - s0.network_s) / n,
	       1e3 * (s1.round_trip_s - s0.round_trip_s) / n, 1e3 * (s1.rankd_s - s0.rankd_s) / n);
	fflush(stdout);
	uint32_t version;
	uint64_t embedded;
	rc = rk_dvbpr_finish(d, 0, 0, &version, &embedded, &st) ? 1 : 0;
leave:
	rk_dvbpr_close(d);
	vr_channel_destroy(ch);
	free(u);
	return rc;
}

int main(int argc, char **argv)
{
	const char *arch = argc > 1 ? argv[1] : "small";
	int size = argc > 2 ? atoi(argv[2]) : 64;
	int batch = argc > 3 ? atoi(argv[3]) : 128;
	int steps = argc > 4 ? atoi(argv[4]) : 20;
	int n_items = argc > 5 ? atoi(argv[5]) : 500;
	const char *trunk_spec = argc > 6 ? argv[6] : NULL;
	int trunk_batch = argc > 7 ? atoi(argv[7]) : 1024;
	char tmp[] = "/tmp/vr-bench-dvbpr-XXXXXX", trunk[32] = "";
	int head_width = 0, head_norm = 0;
	struct fd_proc fp = { 0 };
	rk_model *m = NULL;
	int rc = 1;
	if (trunk_spec && (sscanf(trunk_spec, "%31[^:]:%d", trunk, &head_width) != 2 ||
			   head_width < 0 || trunk_batch < 1 || trunk_batch > 1024))
		return 2;
	if (trunk_spec) {
		size_t sl = strlen(trunk_spec);
		head_norm = sl > 3 && !strcmp(trunk_spec + sl - 3, ":l2");
	}
	if (!mkdtemp(tmp) || batch < 1 || batch > 128 || steps < 1 || n_items < 2)
		return 2;
	vr_log_set_level(VR_LOG_WARN);
	vr_rpc_init();
	char **ids = calloc((size_t)n_items, sizeof *ids);
	uint8_t **jpeg = calloc((size_t)n_items, sizeof *jpeg);
	size_t *len = calloc((size_t)n_items, sizeof *len);
	for (int k = 0; k < n_items; k++) {
		ids[k] = malloc(16);
		snprintf(ids[k], 16, "i%06d", k);
		jpeg[k] = fixture_jpeg(size + k % 64, size + k % 48, (unsigned)k + 1, VR_SUBSAMP_420, 90,
				       &len[k]);
	}
	if ((trunk[0] ? dvt_featured_start_model(&fp, tmp, arch, size, NULL)
		      : dvt_featured_start(&fp, tmp, 16)) ||
	    dvt_put(&fp, ids, jpeg, len, n_items))
		goto leave;
	struct nn_arch_info ai;
	nn_arch_info(arch, &ai);
	rk_model_dims md = { .kind = RK_MODEL_DVBPR, .n_users = 100, .n_items = (uint32_t)n_items,
			     .k = 100, .k2 = trunk[0] ? 32 : (uint32_t)ai.num_outputs };
	if (rk_model_create(&m, &md))
		goto leave;
	rk_model_init(m, 1);
	rk_dvbpr_opts o = { .arch = arch, .input_size = (uint32_t)size, .cnn_lr = 1e-3f,
			    .cnn_wd = 1e-4f, .seed = 1, .session_id = "bench", .checkpoint_every = 100000,
			    .item_ids = (const char *const *)ids, .n_items = (uint32_t)n_items,
			    .max_batch = (uint32_t)batch, .optim = RK_OPT_SGD };
	double full = 0, cached = 0;
	char what[96];
	snprintf(what, sizeof what, "%s (whole net)", arch);
	if (session(&fp, m, &o, what, batch, steps, size, n_items, &full))
		goto leave;
	if (trunk[0]) {
		o.arch = NULL;
		o.input_size = 0;
		o.session_id = "bench-trunk";
		o.trunk_layer = trunk;
		o.head_width = (uint32_t)head_width;
		o.head_norm = head_norm;
		o.max_batch = (uint32_t)trunk_batch;
		snprintf(what, sizeof what, "%s trunk cached at %s, head %d%s", arch, trunk, head_width,
			 head_norm ? " + L2" : "");
		if (session(&fp, m, &o, what, trunk_batch, steps, size, n_items, &cached))
			goto leave;
		printf("cached trunk: %.1f x the whole net's triples/s\n", cached / full);
	}
	rc = 0;
leave:
	rk_model_free(m);
	dvt_featured_stop(&fp);
	for (int k = 0; k < n_items; k++) {
		free(ids[k]);
		vr_jpeg_free(jpeg[k]);
	}
	free(ids);
	free(jpeg);
	free(len);
	vr_rpc_shutdown();
	vr_test_rmtree(tmp);
	return rc;
}
