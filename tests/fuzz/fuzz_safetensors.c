/* Fuzzes the safetensors reader (gpu/safetensors.c) as featured opens a
 * weights file or a training checkpoint: the whole input is the file
 * (header length, JSON header, tensor table, data); every tensor the
 * reader accepts is looked up by name and read as float32 where its dtype
 * allows. The file lives in a memfd, opened by path as a real one is. */
#include "err.h"
#include "fuzz.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	if (fd < 0) {
		if ((fd = memfd_create("fuzz.safetensors", 0)) < 0)
			abort();
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
		abort();
	nn_st_file *f;
	char err[512];
	int rc = nn_st_open(path, &f, err, sizeof err);
	if (rc) {
		if (rc != VR_ECORRUPT && rc != VR_ETOOBIG)
			abort();
		fz_touch(err, strlen(err));
		return 0;
	}
	for (int i = 0; i < nn_st_count(f); i++) {
		const struct nn_st_tensor *t = nn_st_at(f, i);
		if (!t || nn_st_find(f, t->name) != t || t->end > size || t->begin > t->end)
			abort();
		fz_touch(t->dtype_name, strlen(t->dtype_name));
		if (t->dtype != NN_ST_F32 && t->dtype != NN_ST_F16 && t->dtype != NN_ST_BF16)
			continue;
		float *dst = malloc(t->numel ? t->numel * sizeof(float) : 1);
		if (!dst || nn_st_read_f32(f, t, dst, err, sizeof err))
			abort();
		fz_touch(dst, t->numel * sizeof(float));
		free(dst);
	}
	static const char *const keys[] = { "arch", "format", "input_size", "mean" };
	for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
		const char *v = nn_st_meta(f, keys[k]);
		if (v)
			fz_touch(v, strlen(v));
	}
	nn_st_close(f);
	return 0;
}
