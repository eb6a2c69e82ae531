/* gpu/: the neural-network library. Its public contract: a backend chosen at
 * run time, nets (AlexNet, CNN-F, a small CPU net, MobileNetV2, ResNet-50;
 * arch.c says what each is) with forward and backward
 * passes over one parameter arena, optimisers, and safetensors weights.
 *
 * Typical use (featured's executor):
 *   nn_backend *b;  nn_backend_open("auto", &b);      // CUDA if a device answers
 *   struct nn_net_opts o = { .max_batch = 64, .output_layer = "fc7" };
 *   nn_net *net;  nn_net_create(b, "alexnet", &o, &net, NULL, 0);
 *   nn_net_load(net, "alexnet.safetensors", NULL);    // or nn_net_init(net, seed)
 *   nn_net_forward(net, images, n, 0, vectors);       // host NCHW in, host out
 * and for training (DVBPR):
 *   nn_optim_create(net, &(struct nn_optim_opts){ .kind = NN_OPTIM_ADAM,
 *       .lr = 1e-3f, .weight_decay = 1e-4f }, &opt);
 *   nn_net_zero_grad(net); nn_net_forward(net, x, n, 1, y);
 *   ...loss on the host, dL/dy into dy...
 *   nn_net_backward(net, dy, NULL); nn_optim_step(opt);
 *
 * Every function returning int returns 0 or a negative VR_E* code
 * (common/err.h). Functions taking a net also leave a sentence naming the
 * cause in nn_net_errmsg(net) when they fail. A backend, and every net and
 * optimiser on it, must be used by one thread at a time. */
#ifndef NN_H
#define NN_H

#include <stddef.h>
#include <stdint.h>

typedef struct nn_backend nn_backend;
typedef struct nn_net nn_net;
typedef struct nn_optim nn_optim;
typedef struct nn_images nn_images;

/* ---- Backends ---------------------------------------------------------- */

/* Opens a backend: "auto" (CUDA when compiled in and a device answers,
 * else oneDNN when compiled in, else the reference CPU kernels), "cuda",
 * "onednn" (the CPU through oneDNN), "cpu-ref" or "cpu" (both the
 * reference CPU kernels, which every other backend is checked against).
 * Errors: VR_EINVAL (unknown name), VR_EUNSUPPORTED ("cuda" or "onednn"
 * not compiled in), VR_EDEVICE ("cuda" and no device answers), VR_ENOMEM. The CUDA backend runs exact FP32 unless the
 * environment names another precision when it opens (NN_CUDA_PRECISION,
 * below); gpu/cuda/cuda.c lists its other settings. */
int nn_backend_open(const char *name, nn_backend **out);
/* As nn_backend_open, and on failure writes the cause to errbuf (may be
 * NULL), e.g. "cuda: no CUDA device found: ...". */
int nn_backend_open_err(const char *name, nn_backend **out, char *errbuf, size_t errlen);
void nn_backend_close(nn_backend *b);
/* The math a backend's convolutions and fully connected layers run in:
 * FP32 (exact, every backend), TF32 (tensor-core TF32, CUDA) or BF16
 * (CUDA on sm_80 and later: BF16 operands with FP32 accumulation, FP32
 * results, master weights and optimiser state; ungrouped convolutions,
 * in NHWC, and GEMMs; every other op stays FP32. oneDNN on a CPU with
 * avx512_bf16: the same for the forward pass of convolutions and fully
 * connected layers; their backward stays FP32). */
enum nn_precision { NN_PRECISION_FP32 = 1, NN_PRECISION_TF32, NN_PRECISION_BF16 };
/* "fp32", "tf32" or "bf16" to *out; VR_EINVAL for anything else. */
int nn_precision_parse(const char *name, int *out);
const char *nn_precision_name(int precision);
/* Sets the precision of the nets made on b from now on (nets made before
 * keep theirs; set it before making any). The CUDA backend opens in the
 * precision NN_CUDA_PRECISION names (or tf32 for NN_CUDA_TF32=1), FP32
 * by default. Errors: VR_EINVAL (not an enum nn_precision),
 * VR_EUNSUPPORTED (the backend or its device cannot: the reference CPU
 * backend runs FP32 only, oneDNN BF16 only where the CPU has avx512_bf16,
 * and then its nn_backend_device says why). */
int nn_backend_set_precision(nn_backend *b, int precision);
int nn_backend_precision(const nn_backend *b);
/* Sets how many threads b's ops use from now on (the oneDNN backend's
 * OpenMP team, which opens with one per CPU or OMP_NUM_THREADS), so a
 * program that runs other work beside the net (featured's decode pool)
 * can split the CPUs; nn_backend_device says the count. Errors:
 * VR_EINVAL (threads < 1), VR_EUNSUPPORTED (a backend whose threads are
 * not set here: the reference's are OpenBLAS's, CUDA's the device's). */
int nn_backend_set_threads(nn_backend *b, int threads);
/* "cpu" or "cuda": the backend that was picked. */
const char *nn_backend_name(const nn_backend *b);
/* One line on what runs the ops and, for "auto", why it was picked,
 * e.g. "OpenBLAS 0.3.21 Haswell, 2 threads (cuda: not compiled in)". */
const char *nn_backend_device(const nn_backend *b);

/* ---- Architectures ----------------------------------------------------- */

struct nn_arch_info {
	const char *name;          /* "alexnet", "cnnf", "small", "mobilenet_v2", "resnet50" */
	const char *summary;       /* one line */
	int num_outputs;           /* default K */
	int input_size;            /* default S: input is 3 x S x S */
	int min_input_size;        /* smallest S the layers accept */
	float mean[3], std[3];     /* input normalisation: (rgb / 255 - mean) / std */
};

/* Fills *out for arch. Errors: VR_ENOTFOUND. */
int nn_arch_info(const char *arch, struct nn_arch_info *out);
/* The architecture names, NULL-terminated. */
const char *const *nn_arch_names(void);

/* ---- Nets -------------------------------------------------------------- */

struct nn_net_opts {
	int num_outputs;           /* K; 0: the architecture's default */
	int input_size;            /* S; 0: the architecture's default */
	int max_batch;             /* most images per call; 0: 32 */
	/* The layer nn_net_forward returns and nn_net_backward starts from:
	 * NULL or "output" (the last layer), a layer name in the state_dict
	 * style ("classifier.4") or an alias ("fc6", "fc7": after their ReLU,
	 * as Caffe's in-place blobs; "pool5", "avgpool"). */
	const char *output_layer;
	/* Nonzero: no gradients or backward; activation memory is reused
	 * between layers (serving). */
	int inference_only;
	/* A net that starts at a cut (NULL: at the image). The layers up to
	 * and including this one (a name or alias as output_layer) are not
	 * built; the net's input is that layer's output, n x C x H x W floats
	 * (nn_net_input_dims), e.g. a pretrained trunk's activations computed
	 * once. A feature tap (a layer no other layer reads, such as
	 * mobilenet_v2's "block_10" global average) names the map it pools, so
	 * "block_10" cuts at the 96 x 6 x 6 map at 96 px. A cut inside a
	 * residual block (a layer above it reading a tensor from below it) is
	 * refused with VR_EINVAL. Without a head the layers above the cut are
	 * kept, the last one resized to num_outputs. */
	const char *input_layer;
	/* head_width > 0 replaces everything above head_layer (NULL: the cut,
	 * input_layer) by a trained head: conv 1x1 C -> head_width + ReLU +
	 * global average pool + linear -> num_outputs, layers "head.conv",
	 * "head.relu", "head.pool", "head.fc". So {input_layer = L, head_width
	 * = W} is the head alone (DVBPR over cached trunk activations) and
	 * {head_layer = L, head_width = W} the trunk with the same head on
	 * images (serving: the same parameter names). */
	const char *head_layer;
	int head_width;
	/* With head_width: nonzero ends the head with "head.norm", each
	 * image's num_outputs values divided by their L2 norm, so the
	 * embedding has unit length (DVBPR: the user side's L2 penalty then
	 * weighs the preference, not a scale the head may grow). The weights
	 * metadata records it as "layer:width:l2". */
	int head_norm;
};

/* Builds arch on b with memory for opts->max_batch images: parameters
 * (not initialised: call nn_net_init or nn_net_load), activations,
 * gradients and the workspace, all allocated here and never per call.
 * opts may be NULL. errbuf (may be NULL) receives the cause on failure.
 * Errors: VR_ENOTFOUND (arch or output layer), VR_EINVAL (input size too
 * small, bad option), VR_ENOMEM, backend errors; *out is then NULL. */
int nn_net_create(nn_backend *b, const char *arch, const struct nn_net_opts *opts, nn_net **out,
	char *errbuf, size_t errlen);
void nn_net_destroy(nn_net *net);
/* The last failure's cause on this net, "" if none. */
const char *nn_net_errmsg(const nn_net *net);

const char *nn_net_arch(const nn_net *net);
/* The precision the net's layers were planned in (its backend's at
 * nn_net_create: enum nn_precision). */
int nn_net_precision(const nn_net *net);
int nn_net_num_outputs(const nn_net *net);
int nn_net_input_size(const nn_net *net);
int nn_net_max_batch(const nn_net *net);
/* Per-image dims of the net's input: 3 x S x S, or at a cut (opts'
 * input_layer) the cut layer's C x H x W; and their product. */
void nn_net_input_dims(const nn_net *net, int *c, int *h, int *w);
size_t nn_net_input_count(const nn_net *net);
/* At a cut: the layer of the whole architecture whose output is this
 * net's input (for "block_10", "block_10_project_BN"), the output_layer
 * of the trunk net that computes that input; NULL without a cut. */
const char *nn_net_input_layer(const nn_net *net);
/* Per-image dims of the output layer (c, h, w; fc outputs are c x 1 x 1),
 * and their product. */
void nn_net_output_dims(const nn_net *net, int *c, int *h, int *w);
size_t nn_net_output_size(const nn_net *net);
/* Per-image size of a layer's output. Errors: VR_ENOTFOUND. */
int nn_net_layer_size(const nn_net *net, const char *layer, size_t *size);
/* The input normalisation the net declares (arch default, or the weights
 * file's metadata after nn_net_load). */
void nn_net_norm(const nn_net *net, float mean[3], float std[3]);
void nn_net_set_norm(nn_net *net, const float mean[3], const float std[3]);

/* PyTorch's default initialisation: conv and linear weights and biases
 * uniform in +-1/sqrt(fan_in), batch-norm gamma 1, beta 0, mean 0, var 1.
 * Also seeds dropout. Deterministic for a seed. */
int nn_net_init(nn_net *net, uint64_t seed);

/* Positions the dropout stream: the next training forward draws the masks
 * of step + 1 under seed (nn_net_init(net, seed) means step 0). Lets a
 * resumed run continue its stream, or a check replay one forward's masks. */
void nn_net_set_rng(nn_net *net, uint64_t seed, uint64_t step);

/* Runs n images (1 <= n <= max_batch; host memory, n x 3 x S x S floats,
 * already normalised; at a cut n x nn_net_input_count floats of the cut
 * layer's output) through the net up to the output layer and writes
 * n x nn_net_output_size floats to out (host). train != 0 applies dropout
 * (a fresh mask per call, from the seed) and keeps what backward needs.
 * Errors: VR_EINVAL (n out of range), VR_ECANCELLED (nn_net_set_stop's
 * stop said so), backend errors. */
int nn_net_forward(nn_net *net, const float *input, int n, int train, float *out);

/* As nn_net_forward, from decoded images: images[i] points to S x S x 3
 * bytes (HWC RGB, host memory), normalised with the net's mean and std
 * (nn_net_norm) on the backend, so a GPU receives a quarter of the bytes
 * and the host does no float work. The caller may reuse the images once
 * it returns. Errors: VR_EINVAL (n out of range, a NULL image, a net that
 * starts at a cut), backend errors. */
int nn_net_forward_u8(nn_net *net, const uint8_t *const *images, int n, int train, float *out);

/* From now on every forward (nn_net_forward*, nn_net_features) calls
 * stop(arg) on its own thread before each layer and, once it returns
 * nonzero, returns VR_ECANCELLED without running the rest: out is not
 * written and a backward is refused (VR_ESTATE) until the next forward,
 * which runs as usual (a cancelled training forward has spent its dropout
 * step). So a pass over many images can end
 * within one layer, not one batch; stop must be cheap (it runs some 50
 * times a forward). On a GPU it is asked as layers are queued, not as
 * they finish. stop NULL: no checks (the default; ingest sets none). */
void nn_net_set_stop(nn_net *net, int (*stop)(void *arg), void *arg);

/* ---- Image sets: decoded images kept in the backend's memory ----------
 * A training step that draws its images from a fixed catalogue (DVBPR)
 * should not send them over the bus each time: an image set holds n
 * images of S x S x 3 bytes (HWC RGB) in the backend's memory, on the GPU
 * for CUDA (9,633 images at 224: 1.45 GB), in host memory for the CPU. */

/* Allocates a set of n images of size x size. Errors: VR_EINVAL (n or
 * size 0), VR_ENOMEM (the device or host has no room: the caller may keep
 * the images on the host and use nn_net_forward_u8), backend errors. */
int nn_images_create(nn_backend *b, size_t n, int size, nn_images **out);
void nn_images_destroy(nn_images *set);
size_t nn_images_count(const nn_images *set);
int nn_images_size(const nn_images *set);
/* Copies count images (count x S x S x 3 bytes, host memory) into the set
 * at index first. Errors: VR_EINVAL (out of range), backend errors. */
int nn_images_put(nn_images *set, size_t first, size_t count, const uint8_t *images);

/* As nn_net_forward_u8, for the images idx[0..n) of set (same backend,
 * S equal to the net's input size), normalised on the backend: nothing
 * but the n indices crosses the bus. Errors: VR_EINVAL (n out of range,
 * an index not in the set, another backend or size), backend errors. */
int nn_net_forward_images(nn_net *net, const nn_images *set, const uint32_t *idx, int n,
	int train, float *out);

/* Evaluation-mode forward up to layer (a name or alias as output_layer)
 * and writes its n x nn_net_layer_size floats to out. Invalidates a pending
 * backward. Errors: VR_ENOTFOUND, VR_EINVAL, backend errors. */
int nn_net_features(nn_net *net, const char *layer, const float *input, int n, float *out);

/* Backpropagates dout (host, n x output size, for the n of the last
 * nn_net_forward) and ADDS the parameter gradients into the gradient
 * arena. If dinput is non-NULL, also writes dL/dinput there (host,
 * n x 3 x S x S); otherwise the first layer's input gradient is skipped.
 * Errors: VR_ESTATE (no forward to go back through, or an inference-only
 * net), backend errors. */
int nn_net_backward(nn_net *net, const float *dout, float *dinput);
int nn_net_zero_grad(nn_net *net);

/* ---- DVBPR's loss ------------------------------------------------------ */

/* The BPR loss of n triples (u, i, j) on the net's outputs, and its
 * gradients: phi holds 2n rows of k floats, the n positives' φ(X_i) then
 * the n negatives' φ(X_j), as one forward of [i..., j...] returns them;
 * theta the n users' θ_u (n x k); margin (may be NULL: zeros) the rest of
 * each x_uij, so x_uij = margin + θ_u·(φ_i − φ_j). Writes, per triple,
 * loss = −ln σ(x_uij) and g = σ(−x_uij) (loss and g may be NULL), and
 * dphi (2n x k: −g θ_u for the positive, g θ_u for the negative, ready for
 * nn_net_backward) and dtheta = −g (φ_i − φ_j) (n x k). The loss is the
 * SUM over triples, as the tutorial's DVBPR: its gradient is not divided
 * by n. Returns the summed loss. */
double nn_bpr_triples(const float *phi, size_t n, size_t k, const float *theta,
	const float *margin, float *loss, float *g, float *dphi, float *dtheta);

/* ---- Parameters -------------------------------------------------------- */

/* The arena: trainable parameters first (what optimisers step), then
 * buffers (batch-norm running statistics). Counts are floats. */
size_t nn_net_param_count(const nn_net *net);
size_t nn_net_trainable_count(const nn_net *net);

struct nn_tensor_info {
	const char *name;          /* state_dict name, e.g. "features.0.weight" */
	int ndim;
	int shape[4];
	size_t numel;
	size_t offset;             /* floats from the arena's start */
	int trainable;
};
int nn_net_tensor_count(const nn_net *net);
/* Errors: VR_EINVAL (i out of range). */
int nn_net_tensor_at(const nn_net *net, int i, struct nn_tensor_info *out);
/* Errors: VR_ENOTFOUND. */
int nn_net_tensor_find(const nn_net *net, const char *name, struct nn_tensor_info *out);

/* Copies into dst every parameter tensor of src that dst has under the
 * same name and shape (e.g. a trained head into the net that runs it
 * behind its trunk); *copied (may be NULL) gets their number. Both nets
 * on one backend. Errors: VR_EINVAL (other backends), VR_ENOMEM, backend
 * errors. */
int nn_net_params_copy(nn_net *dst, nn_net *src, int *copied);

/* Copy the whole arena (nn_net_param_count floats) or its gradients
 * (nn_net_trainable_count floats) to or from host memory. */
int nn_net_params_get(nn_net *net, float *host);
int nn_net_params_set(nn_net *net, const float *host);
int nn_net_grads_get(nn_net *net, float *host);

/* ---- Weights files (safetensors) --------------------------------------- */

/* Writes every tensor of the net as F32 with metadata format=visrec-nn,
 * arch, num_outputs, input_size, mean, std, input_layer and head (a cut or
 * head net: "layer:width", width 0 for the resized last layer), plus meta (key, value pairs
 * ending with NULL; may be NULL). If opt is non-NULL its state is saved too
 * (tensors "optim.m", "optim.v", metadata optim and optim_step), so a run
 * can resume. The file is written beside path and renamed over it.
 * Errors: -errno, VR_EIO, VR_ENOMEM. */
int nn_net_save(nn_net *net, const char *path, const nn_optim *opt, const char *const *meta);

/* Loads every tensor of the net by name from a safetensors file (F32, F16
 * or BF16). Tensors in the file that the net lacks are ignored (e.g.
 * num_batches_tracked, the layers below a cut). A net's new or resized
 * head (opts' head_width, or the last layer above a cut) is loaded only
 * from a file saved with the same head (metadata "head"); from any other
 * file, such as the pretrained full net, it keeps its values: call
 * nn_net_init(net, seed) first. If the file has metadata, its arch must match and
 * its mean/std become the net's normalisation. If opt is non-NULL, the
 * optimiser state must be in the file and is restored. On error the net's
 * parameters may be partly loaded. Errors: -errno (cannot open),
 * VR_ECORRUPT (malformed file), VR_ENOTFOUND (a tensor missing), VR_ESHAPE
 * (a tensor's shape differs: both shapes in the message), VR_EINVAL (arch
 * or optimiser mismatch). */
int nn_net_load(nn_net *net, const char *path, nn_optim *opt);

/* Creates a net from a file nn_net_save wrote: arch, K, S, cut and head
 * from its metadata (opts' num_outputs, input_size, input_layer,
 * head_layer and head_width are ignored; opts may be NULL),
 * then loads it. errbuf (may be NULL) receives the cause on failure.
 * Errors: as nn_net_create and nn_net_load; VR_EINVAL without metadata. */
int nn_net_open_file(nn_backend *b, const char *path, const struct nn_net_opts *opts,
	nn_net **out, char *errbuf, size_t errlen);

/* ---- Optimisers -------------------------------------------------------- */

enum nn_optim_kind {
	NN_OPTIM_SGD = 1,          /* torch.optim.SGD, momentum, L2 weight decay */
	NN_OPTIM_ADAM,             /* torch.optim.Adam: weight decay is L2 in the gradient */
	NN_OPTIM_ADAMW,            /* torch.optim.AdamW: decoupled weight decay */
};

struct nn_optim_opts {
	int kind;                  /* enum nn_optim_kind */
	float lr;
	float momentum;            /* SGD */
	float beta1, beta2, eps;   /* Adam; 0: PyTorch's 0.9, 0.999, 1e-8 */
	float weight_decay;
};

/* An optimiser over net's trainable arena, with its state (zeroed) on the
 * net's backend. Formulas: backend.h (struct nn_sgd_params, nn_adam_params).
 * Weight decay applies to every trainable tensor, biases included, as
 * torch.optim does when given model.parameters().
 * Errors: VR_EINVAL (kind, lr), VR_ESTATE (inference-only net), VR_ENOMEM. */
int nn_optim_create(nn_net *net, const struct nn_optim_opts *opts, nn_optim **out);
void nn_optim_destroy(nn_optim *opt);
/* One step with the gradients in the net's arena (it does not zero them). */
int nn_optim_step(nn_optim *opt);
void nn_optim_set_lr(nn_optim *opt, float lr);
/* Steps taken (restored by nn_net_load). */
long nn_optim_steps(const nn_optim *opt);

#endif
