/* safetensors files: an 8-byte little-endian header length N, N bytes of
 * JSON ({name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * optional "__metadata__": {string: string}}), then the raw little-endian
 * tensor data, offsets relative to its start. The format PyTorch users
 * save state_dicts in (safetensors.torch.save_file), so weights move
 * between visrec and PyTorch by name.
 *
 * Reading validates everything against the file before trusting it:
 * header length within the file, JSON well formed, every shape and offset
 * a non-negative integer, each tensor's byte range inside the data section
 * and of the size its dtype and shape imply, no duplicate names. A
 * malformed file is refused with VR_ECORRUPT and a message; it never
 * crashes the reader. Tensor data is read on demand with pread, so a file
 * is never mapped or held whole in memory. */
#ifndef NN_SAFETENSORS_H
#define NN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define NN_ST_MAX_DIMS 8
#define NN_ST_MAX_HEADER (100u << 20)

enum nn_st_dtype { NN_ST_F32 = 1, NN_ST_F16, NN_ST_BF16, NN_ST_OTHER };

struct nn_st_tensor {
	const char *name;
	int dtype;                 /* enum nn_st_dtype */
	const char *dtype_name;    /* as in the file: "F32", "I64", ... */
	int ndim;
	int64_t shape[NN_ST_MAX_DIMS];
	uint64_t numel;
	uint64_t begin, end;       /* byte range within the data section */
};

typedef struct nn_st_file nn_st_file;

/* Opens and validates path. err (may be NULL) receives the cause on
 * failure. Errors: -errno (cannot open or read), VR_ECORRUPT (malformed),
 * VR_ETOOBIG (header over NN_ST_MAX_HEADER), VR_ENOMEM. */
int nn_st_open(const char *path, nn_st_file **out, char *err, size_t errlen);
void nn_st_close(nn_st_file *f);

int nn_st_count(const nn_st_file *f);
/* The i-th tensor in file order; NULL if out of range. */
const struct nn_st_tensor *nn_st_at(const nn_st_file *f, int i);
/* The tensor named name; NULL if absent. */
const struct nn_st_tensor *nn_st_find(const nn_st_file *f, const char *name);
/* The metadata value for key; NULL if absent. */
const char *nn_st_meta(const nn_st_file *f, const char *key);

/* Reads tensor t as float32 into dst (t->numel floats), converting F16 and
 * BF16. Errors: VR_EUNSUPPORTED (another dtype), -errno / VR_EIO (read
 * failed, e.g. the file shrank). */
int nn_st_read_f32(nn_st_file *f, const struct nn_st_tensor *t, float *dst, char *err,
	size_t errlen);

struct nn_st_entry {
	const char *name;
	int ndim;
	const int64_t *shape;
	const float *data;         /* host memory, product of shape floats */
};

/* Writes n F32 tensors and metadata (key, value, ..., NULL; may be NULL)
 * to path: to a temporary file in the same directory, fsync'd, then
 * renamed over path, so a reader sees the old file or the new, never part.
 * Errors: -errno, VR_EINVAL (bad name or shape), VR_ENOMEM. */
int nn_st_write(const char *path, const struct nn_st_entry *t, int n, const char *const *meta,
	char *err, size_t errlen);

#endif
