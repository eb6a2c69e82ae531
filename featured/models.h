/* models: featured's model versions — the nets that make item vectors.
 *
 * A version is a row in the "models" db (fd_model_info, fstore.h) plus its
 * weights, a safetensors file beside the LMDB environment
 * (DATA/models/v<N>.safetensors). Its vectors are the activations of one
 * layer: the net's output (the K-dim embedding DVBPR learns, purpose
 * "embedding") or an inner layer such as AlexNet's fc7 (the F-dim features
 * VBPR takes, purpose "features"). Exactly one version is active: new
 * images are embedded with it and GetVectors serves it by default.
 *
 * At the first start featured creates version 1 from its flags (a
 * fd_model_spec) and makes it active; later starts reopen the active
 * version's weights and never initialise anew. Adding a version later
 * (--new-model, or DVBPR's trained net) is: fd_model_add (weights file and
 * row, not active), fd_executor_reembed (its vectors for every item, then
 * the switch in one transaction).
 *
 * Nets are made and used on featured's executor thread only (nn.h: one
 * thread at a time per backend). Every function returns 0 or a negative
 * VR_E* code and, where it takes err, a sentence naming the cause. */
#ifndef FD_MODELS_H
#define FD_MODELS_H

#include "fstore.h"
#include "nn.h"

#include <stddef.h>
#include <stdint.h>

/* What the flags ask for. Unset fields (NULL, 0) take the defaults and do
 * not count as asked for when an existing model is compared. */
typedef struct fd_model_spec {
	const char *arch;    /* NULL: "small" */
	int input_size;      /* S; 0: the architecture's default */
	int num_outputs;     /* K; 0: the architecture's default */
	const char *layer;   /* whose activations are stored; NULL: "output" */
	const char *weights; /* safetensors to load; NULL: seeded random init */
	uint64_t init_seed;
} fd_model_spec;

/* Builds an inference net from spec on b with room for max_batch images:
 * loads spec->weights or initialises from spec->init_seed. Errors: those
 * of nn_net_create and nn_net_load (VR_ENOTFOUND for an unknown arch or
 * layer, VR_ESHAPE for weights of other shapes, -errno for a missing
 * file). */
int fd_model_build(nn_backend *b, const fd_model_spec *spec, int max_batch, nn_net **out,
		   char *err, size_t errlen);

/* Adds net as a new model version: saves its weights to
 * data_dir/models/v<N>.safetensors and writes the row (version N = the
 * next free number) with layer (NULL: "output"), its dims, input size,
 * normalisation, purpose and precision (nn_net_precision). activate: make it the active version too
 * (only while no item is stored: the first model). Fills *out. Errors:
 * those of nn_net_save (-errno, VR_EIO), fd_fstore_model_add, and
 * VR_ENOTFOUND when net has no such layer. */
int fd_model_add(fd_fstore *fs, const char *data_dir, nn_net *net, const char *layer,
		 int activate, fd_model_info *out, char *err, size_t errlen);

/* Opens the net of a stored version from its weights file, with room for
 * max_batch images, returning the stored layer. Errors: those of
 * nn_net_open_file; VR_ECORRUPT when the file disagrees with the row
 * (arch or dims); VR_ESTATE when the row records another precision than
 * b's (its vectors would mix two maths). */
int fd_model_open(nn_backend *b, const char *data_dir, const fd_model_info *info, int max_batch,
		  nn_net **out, char *err, size_t errlen);

/* Names, in what (cap bytes), each explicitly asked field of spec that
 * differs from info, e.g. "--arch alexnet (active: small)". Returns 1 if
 * any differs, else 0 (what = ""). */
int fd_model_spec_differs(const fd_model_spec *spec, const fd_model_info *info, char *what,
			  size_t cap);

/* Start-up: opens the active version's net, or, on a data directory with
 * no model yet, builds one from spec and stores it as the active version 1
 * (*created = 1). Fills *active. Errors: as above. */
int fd_models_setup(fd_fstore *fs, nn_backend *b, const char *data_dir, const fd_model_spec *spec,
		    int max_batch, nn_net **net, fd_model_info *active, int *created, char *err,
		    size_t errlen);

#endif
