/* featured: the feature service daemon. Parses flags, opens the data
 * directory and the model, serves visrec.v1.Featured and Health until
 * SIGTERM/SIGINT, then drains calls before the executor stops. */
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "service.h"

#include <stdio.h>
#include <unistd.h>

static const char summary[] =
	"featured: stores item images, embeds them with a CNN and serves the vectors\n"
	"(visrec.v1.Featured and grpc.health.v1.Health over gRPC).\n"
	"On a fresh --data directory it creates model version 1 from --arch, --input-size,\n"
	"--num-outputs, --feature-layer and --weights (or --init-seed); later starts reopen the\n"
	"active version and ignore those flags (with a warning) unless --new-model is given.";

int main(int argc, char **argv)
{
	fd_executor_exec_env(argv);  /* the network's OpenMP team waits passively */
	vr_daemon d = { 0 };
	fd_config cfg = { 0 };
	fd_service svc = { 0 };
	const vr_flag flags[] = {
		VR_DAEMON_FLAGS(&d, "127.0.0.1:50051"),
		{ "arch", "VISREC_ARCH", VR_FLAG_STRING, &cfg.model.arch, NULL,
		  "network of a new model: alexnet, cnnf, small or another of gpu/nn.h (default small)", 0 },
		{ "input-size", "VISREC_INPUT_SIZE", VR_FLAG_INT, &cfg.model.input_size, "0",
		  "pixels per side of the network input; 0 = the architecture's default", 0 },
		{ "num-outputs", "VISREC_NUM_OUTPUTS", VR_FLAG_INT, &cfg.model.num_outputs, "0",
		  "K, outputs of the last layer (1000 for ImageNet weights); 0 = the architecture's default", 0 },
		{ "feature-layer", "VISREC_FEATURE_LAYER", VR_FLAG_STRING, &cfg.model.layer, NULL,
		  "layer whose activations are stored: output (the K-dim embedding, default), fc7, fc6, pool5, ...", 0 },
		{ "weights", "VISREC_WEIGHTS", VR_FLAG_STRING, &cfg.model.weights, NULL,
		  "safetensors file of pretrained weights for a new model; unset: random init from --init-seed", 0 },
		{ "init-seed", "VISREC_INIT_SEED", VR_FLAG_UINT64, &cfg.model.init_seed, "1",
		  "seed of the random init of a new model without --weights", 0 },
		{ "new-model", "VISREC_NEW_MODEL", VR_FLAG_BOOL, &cfg.new_model, "false",
		  "when the model flags differ from the active model: add them as a new version, "
		  "re-embed every item and switch to it at start", 0 },
		{ "backend", "VISREC_BACKEND", VR_FLAG_STRING, &cfg.backend, "auto",
		  "auto (CUDA when a GPU answers, else oneDNN when built in, else the reference "
		  "CPU kernels), cuda, onednn, or cpu-ref (= cpu: the reference kernels)", 0 },
		{ "precision", "VISREC_PRECISION", VR_FLAG_STRING, &cfg.precision, "fp32",
		  "math of the network's convolutions and GEMMs: fp32 (exact), tf32 (CUDA) or bf16 "
		  "(CUDA tensor cores, or oneDNN where the CPU has avx512_bf16; bf16 keeps FP32 "
		  "master weights, optimiser state and loss); a backend "
		  "that cannot run it stops featured at start", 0 },
		/* 32: it ingests faster than 16 (AlexNet fc7 on oneDNN, 2 quiet
		 * cores: 107.5 against 85.0 img/s, README issue 21; 64 adds
		 * 2-6%). A re-embedding sees a cancel between the layers of a
		 * batch's forward, not only between batches, so a bigger batch
		 * no longer lengthens a cancelled DVBPR Finish. */
		{ "batch", "VISREC_BATCH", VR_FLAG_INT, &cfg.batch, "32",
		  "images per network call (micro-batch)", 0 },
		{ "batch-wait-ms", "VISREC_BATCH_WAIT_MS", VR_FLAG_INT, &cfg.batch_wait_ms, "5",
		  "how long a partial batch waits for more images", 0 },
		{ "decode-threads", "VISREC_DECODE_THREADS", VR_FLAG_INT, &cfg.decode_threads, "0",
		  "JPEG decode threads; 0 = 1 on two or fewer CPUs, else 2", 0 },
		{ "queue", "VISREC_QUEUE", VR_FLAG_INT, &cfg.queue, "0",
		  "images admitted but not yet embedded; full: RESOURCE_EXHAUSTED; 0 = 4 x --batch", 0 },
		{ "max-image-bytes", "VISREC_MAX_IMAGE_BYTES", VR_FLAG_UINT64, &cfg.max_image_bytes,
		  "8388608", "largest JPEG accepted", 0 },
		{ "max-image-pixels", "VISREC_MAX_IMAGE_PIXELS", VR_FLAG_UINT64, &cfg.max_image_pixels,
		  "50000000", "largest width x height accepted (checked before decoding)", 0 },
		{ "max-trunk-cache-mb", "VISREC_MAX_TRUNK_CACHE_MB", VR_FLAG_UINT64,
		  &cfg.max_trunk_cache_mb, "2048",
		  "largest trunk activation cache of a TrainVisual session with trunk_layer (items x "
		  "C x H x W floats: 9,633 items at block_10 of mobilenet_v2 at 96 px take 133 MB); "
		  "larger starts get RESOURCE_EXHAUSTED", 0 },
		{ "shards", "VISREC_SHARDS", VR_FLAG_STRING, &cfg.shards, NULL,
		  "comma-separated HOST:PORT of every featured shard, the same list given to every "
		  "featured, rankd and visrec (order does not matter); this featured then stores only "
		  "the items rendezvous hashing gives it; unset: one featured holds every item", 0 },
		{ "shard-self", "VISREC_SHARD_SELF", VR_FLAG_STRING, &cfg.shard_self, NULL,
		  "which entry of --shards this featured is, written as in the list", 0 },
		{ "models-from", "VISREC_MODELS_FROM", VR_FLAG_STRING, &cfg.models_from, NULL,
		  "host:port of a featured (another shard) to copy every model version from, instead "
		  "of making version 1 from the model flags, while the data directory holds no item "
		  "(a new shard)", 0 },
		{ 0 },
	};
	static const char *const services[] = { "visrec.v1.Featured", NULL };
	char err[512];

	int code = vr_daemon_init(&d, "featured", summary, flags, argc, argv);
	if (code >= 0)
		return code;
	if (cfg.batch < 1 || cfg.batch_wait_ms < 0 || cfg.decode_threads < 0 || cfg.queue < 0 ||
	    cfg.model.input_size < 0 || cfg.model.num_outputs < 0 || !cfg.max_image_bytes ||
	    !cfg.max_image_pixels) {
		VR_ERROR("--batch and --max-image-* must be > 0; --batch-wait-ms, --decode-threads, "
			 "--queue, --input-size and --num-outputs >= 0");
		return 2;
	}
	cfg.data_dir = d.data;
	code = vr_daemon_open(&d);
	cfg.peer_token = d.admin_token;
	if (!code) {
		int rc = fd_service_open(&svc, d.store, &cfg, err, sizeof err);
		if (rc)
			VR_ERROR("%s", err);
		code = rc ? 1 : 0;
	}
	if (!code && fd_service_register(&svc, d.server)) {
		const char *why = vr_server_error(d.server);
		VR_ERROR("cannot register the service: %s", why[0] ? why : "out of memory");
		code = 1;
	}
	if (!code)
		code = vr_daemon_serve(&d, services);
	if (!code) {
		fd_service_log_ready(&svc);
		vr_daemon_wait(&d);
	}
	vr_daemon_stop(&d);
	if (!code)
		fd_service_log_stats(&svc);
	fd_service_close(&svc);
	if (vr_daemon_close(&d)) {
		fflush(NULL);
		_exit(code);
	}
	return code;
}
