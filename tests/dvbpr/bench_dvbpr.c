/* bench_dvbpr: DVBPR split-training steps on this machine's CPU, and the
 * split of a step's time between featured's network, the RPC round trip
 * (send to reply, less featured's network time: serialisation, loopback,
 * the executor hand-off) and rankd's own work (margins, packing, the SGD
 * update). featured's service runs in this process behind a real gRPC
 * server on 127.0.0.1; rankd's client (rankd/dvbpr.h) drives it.
 *
 *   bench_dvbpr [arch] [input_size] [batch] [steps] [items]
 *   defaults:    small 64 128 20 500
 *
 * Prints one line per setting with steps/s, triples/s and milliseconds
 * per step of each part, plus the image cache's size. */
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

int main(int argc, char **argv)
{
	const char *arch = argc > 1 ? argv[1] : "small";
	int size = argc > 2 ? atoi(argv[2]) : 64;
	int batch = argc > 3 ? atoi(argv[3]) : 128;
	int steps = argc > 4 ? atoi(argv[4]) : 20;
	int n_items = argc > 5 ? atoi(argv[5]) : 500;
	char tmp[] = "/tmp/vr-bench-dvbpr-XXXXXX";
	struct fd_proc fp;
	rk_model *m = NULL;
	rk_dvbpr *d = NULL;
	vr_status st = { 0 };
	int rc = 1;
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
		jpeg[k] = fixture_jpeg(size + k % 64, size + k % 48, (unsigned)k + 1, FD_SUBSAMP_420, 90,
				       &len[k]);
	}
	if (dvt_featured_start(&fp, tmp, 16) || dvt_put(&fp, ids, jpeg, len, n_items))
		goto leave;
	struct nn_arch_info ai;
	nn_arch_info(arch, &ai);
	rk_model_dims md = { .kind = RK_MODEL_DVBPR, .n_users = 100, .n_items = (uint32_t)n_items,
			     .k = 100, .k2 = (uint32_t)ai.num_outputs };
	if (rk_model_create(&m, &md))
		goto leave;
	rk_model_init(m, 1);
	vr_channel *ch = dvt_channel(fp.addr);
	rk_dvbpr_opts o = { .arch = arch, .input_size = (uint32_t)size, .cnn_lr = 1e-3f,
			    .cnn_wd = 1e-4f, .seed = 1, .session_id = "bench", .checkpoint_every = 100000,
			    .item_ids = (const char *const *)ids, .n_items = (uint32_t)n_items,
			    .max_batch = (uint32_t)batch };
	double t0 = now_s();
	if (rk_dvbpr_open(&d, ch, m, &o, NULL, &st)) {
		fprintf(stderr, "open: %s\n", st.message);
		goto leave;
	}
	double t_start = now_s() - t0;
	uint32_t *u = malloc(3 * (size_t)batch * sizeof *u), *i = u + batch, *j = u + 2 * batch;
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
			u[t] = rk_rng_below(&rng, md.n_users);
			i[t] = rk_rng_below(&rng, md.n_items);
			j[t] = (i[t] + 1 + rk_rng_below(&rng, md.n_items - 1)) % md.n_items;
		}
		if (rk_dvbpr_step(d, m, u, i, j, (size_t)batch, 0.05f, 0.0025f, NULL, &st)) {
			fprintf(stderr, "step: %s\n", st.message);
			goto leave;
		}
	}
	double wall = now_s() - t0;
	rk_dvbpr_stats_get(d, &s1);
	double n = steps;
	printf("%s S=%d K=%d batch %d, %d items (cache %.1f MB, Start with decode %.2f s): "
	       "%.3f steps/s, %.0f triples/s; per step %.1f ms = featured network %.1f ms + "
	       "round trip %.2f ms + rankd %.3f ms\n",
	       arch, size, ai.num_outputs, batch, n_items, n_items * 3.0 * size * size / 1e6, t_start,
	       n / wall, n * batch / wall, 1e3 * wall / n, 1e3 * (s1.network_s - s0.network_s) / n,
	       1e3 * (s1.round_trip_s - s0.round_trip_s) / n, 1e3 * (s1.rankd_s - s0.rankd_s) / n);
	free(u);
	rc = 0;
leave:
	rk_dvbpr_close(d);
	rk_model_free(m);
	dvt_featured_stop(&fp);
	for (int k = 0; k < n_items; k++) {
		free(ids[k]);
		fd_jpeg_free(jpeg[k]);
	}
	free(ids);
	free(jpeg);
	free(len);
	vr_rpc_shutdown();
	dvt_rmtree(tmp);
	return rc;
}
