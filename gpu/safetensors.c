/* Reading and writing safetensors files (the format: safetensors.h). The
 * JSON header goes through cJSON; the data through pread/write. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "bf16.h"
#include "err.h"
#include "safetensors.h"

struct nn_st_file {
	int fd;
	char *path;
	uint64_t data_start, data_len;
	struct nn_st_tensor *tensors;
	int ntensors;
	char **meta;               /* key, value, key, value, ... */
	int nmeta;
	cJSON *json;               /* owns the strings tensors point at */
};

static void say(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void say(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int dtype_of(const char *name, size_t *elem)
{
	static const struct { const char *name; int dtype; size_t size; } known[] = {
		{ "F32", NN_ST_F32, 4 }, { "F16", NN_ST_F16, 2 }, { "BF16", NN_ST_BF16, 2 },
		{ "F64", NN_ST_OTHER, 8 }, { "I64", NN_ST_OTHER, 8 }, { "U64", NN_ST_OTHER, 8 },
		{ "I32", NN_ST_OTHER, 4 }, { "U32", NN_ST_OTHER, 4 }, { "I16", NN_ST_OTHER, 2 },
		{ "U16", NN_ST_OTHER, 2 }, { "I8", NN_ST_OTHER, 1 }, { "U8", NN_ST_OTHER, 1 },
		{ "BOOL", NN_ST_OTHER, 1 }, { "F8_E4M3", NN_ST_OTHER, 1 }, { "F8_E5M2", NN_ST_OTHER, 1 },
	};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(known[i].name, name)) {
			*elem = known[i].size;
			return known[i].dtype;
		}
	return 0;
}

/* A JSON number that is an integer in [0, 2^53]. */
static int json_u64(const cJSON *v, uint64_t *out)
{
	if (!cJSON_IsNumber(v))
		return 0;
	double d = v->valuedouble;
	if (!(d >= 0.0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d)
		return 0;
	*out = (uint64_t)d;
	return 1;
}

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return VR_EIO;     /* the file ended early */
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static int parse_tensor(nn_st_file *f, const cJSON *item, struct nn_st_tensor *t, char *err,
	size_t errlen)
{
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
	const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
	const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
	size_t elem = 0;
	t->name = item->string;
	if (!cJSON_IsObject(item) || !cJSON_IsString(dt) || !cJSON_IsArray(shape) ||
	    !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2) {
		say(err, errlen, "%s: tensor \"%s\" lacks dtype, shape or data_offsets", f->path,
			t->name);
		return VR_ECORRUPT;
	}
	t->dtype_name = dt->valuestring;
	t->dtype = dtype_of(dt->valuestring, &elem);
	if (!t->dtype) {
		say(err, errlen, "%s: tensor \"%s\" has unknown dtype \"%s\"", f->path, t->name,
			dt->valuestring);
		return VR_ECORRUPT;
	}
	t->ndim = cJSON_GetArraySize(shape);
	if (t->ndim > NN_ST_MAX_DIMS) {
		say(err, errlen, "%s: tensor \"%s\" has %d dimensions (at most %d)", f->path, t->name,
			t->ndim, NN_ST_MAX_DIMS);
		return VR_ECORRUPT;
	}
	t->numel = 1;
	for (int i = 0; i < t->ndim; i++) {
		uint64_t d;
		if (!json_u64(cJSON_GetArrayItem(shape, i), &d) || d > INT64_MAX) {
			say(err, errlen, "%s: tensor \"%s\" has a bad shape", f->path, t->name);
			return VR_ECORRUPT;
		}
		t->shape[i] = (int64_t)d;
		if (d && t->numel > UINT64_MAX / 16 / d) {
			say(err, errlen, "%s: tensor \"%s\" is impossibly large", f->path, t->name);
			return VR_ECORRUPT;
		}
		t->numel *= d;
	}
	if (!json_u64(cJSON_GetArrayItem(offs, 0), &t->begin) ||
	    !json_u64(cJSON_GetArrayItem(offs, 1), &t->end) || t->begin > t->end ||
	    t->end > f->data_len) {
		say(err, errlen, "%s: tensor \"%s\" has data_offsets outside the %llu data bytes",
			f->path, t->name, (unsigned long long)f->data_len);
		return VR_ECORRUPT;
	}
	if (t->end - t->begin != t->numel * elem) {
		say(err, errlen, "%s: tensor \"%s\" spans %llu bytes; %s of its shape needs %llu",
			f->path, t->name, (unsigned long long)(t->end - t->begin), t->dtype_name,
			(unsigned long long)(t->numel * elem));
		return VR_ECORRUPT;
	}
	return 0;
}

static int parse_meta(nn_st_file *f, const cJSON *item, char *err, size_t errlen)
{
	int n = cJSON_GetArraySize(item);
	if (!cJSON_IsObject(item)) {
		say(err, errlen, "%s: __metadata__ is not an object", f->path);
		return VR_ECORRUPT;
	}
	f->meta = calloc((size_t)n * 2 + 1, sizeof(char *));
	if (!f->meta)
		return VR_ENOMEM;
	for (const cJSON *kv = item->child; kv; kv = kv->next) {
		if (!cJSON_IsString(kv)) {
			say(err, errlen, "%s: metadata \"%s\" is not a string", f->path, kv->string);
			return VR_ECORRUPT;
		}
		f->meta[f->nmeta * 2] = kv->string;
		f->meta[f->nmeta * 2 + 1] = kv->valuestring;
		f->nmeta++;
	}
	return 0;
}

int nn_st_open(const char *path, nn_st_file **out, char *err, size_t errlen)
{
	nn_st_file *f = NULL;
	char *header = NULL;
	unsigned char len8[8];
	struct stat st;
	uint64_t hlen = 0;
	int rc;
	*out = NULL;
	f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(path))) {
		free(f);
		return VR_ENOMEM;
	}
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0 || fstat(f->fd, &st)) {
		rc = -errno;
		say(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	rc = VR_ECORRUPT;
	if ((uint64_t)st.st_size < 8) {
		say(err, errlen, "%s: %lld bytes, too short for a safetensors header", path,
			(long long)st.st_size);
		goto fail;
	}
	if ((rc = read_full(f->fd, len8, 8, 0))) {
		say(err, errlen, "%s: reading the header length failed", path);
		goto fail;
	}
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | len8[i];
	if (hlen > NN_ST_MAX_HEADER) {
		rc = hlen > (uint64_t)st.st_size - 8 ? VR_ECORRUPT : VR_ETOOBIG;
		say(err, errlen, "%s: header length %llu is over the %u-byte limit", path,
			(unsigned long long)hlen, NN_ST_MAX_HEADER);
		goto fail;
	}
	if (hlen < 2 || hlen > (uint64_t)st.st_size - 8) {
		rc = VR_ECORRUPT;
		say(err, errlen, "%s: header length %llu does not fit the %lld-byte file", path,
			(unsigned long long)hlen, (long long)st.st_size);
		goto fail;
	}
	f->data_start = 8 + hlen;
	f->data_len = (uint64_t)st.st_size - f->data_start;
	if (!(header = malloc(hlen))) {
		rc = VR_ENOMEM;
		goto fail;
	}
	if ((rc = read_full(f->fd, header, hlen, 8))) {
		say(err, errlen, "%s: reading the header failed", path);
		goto fail;
	}
	rc = VR_ECORRUPT;
	f->json = cJSON_ParseWithLength(header, hlen);
	if (!f->json || !cJSON_IsObject(f->json)) {
		say(err, errlen, "%s: the header is not a JSON object", path);
		goto fail;
	}
	int n = cJSON_GetArraySize(f->json);
	f->tensors = calloc(n ? n : 1, sizeof(*f->tensors));
	if (!f->tensors) {
		rc = VR_ENOMEM;
		goto fail;
	}
	for (const cJSON *item = f->json->child; item; item = item->next) {
		if (!strcmp(item->string, "__metadata__")) {
			if (f->meta) {
				rc = VR_ECORRUPT;
				say(err, errlen, "%s: __metadata__ appears twice", path);
				goto fail;
			}
			if ((rc = parse_meta(f, item, err, errlen)))
				goto fail;
			continue;
		}
		if ((rc = parse_tensor(f, item, &f->tensors[f->ntensors], err, errlen)))
			goto fail;
		if (nn_st_find(f, item->string)) {
			rc = VR_ECORRUPT;
			say(err, errlen, "%s: tensor \"%s\" appears twice", path, item->string);
			goto fail;
		}
		f->ntensors++;
	}
	free(header);
	*out = f;
	return 0;
fail:
	free(header);
	nn_st_close(f);
	return rc;
}

void nn_st_close(nn_st_file *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	cJSON_Delete(f->json);
	free(f->tensors);
	free(f->meta);
	free(f->path);
	free(f);
}

int nn_st_count(const nn_st_file *f)
{
	return f->ntensors;
}

const struct nn_st_tensor *nn_st_at(const nn_st_file *f, int i)
{
	return i >= 0 && i < f->ntensors ? &f->tensors[i] : NULL;
}

const struct nn_st_tensor *nn_st_find(const nn_st_file *f, const char *name)
{
	for (int i = 0; i < f->ntensors; i++)
		if (!strcmp(f->tensors[i].name, name))
			return &f->tensors[i];
	return NULL;
}

const char *nn_st_meta(const nn_st_file *f, const char *key)
{
	for (int i = 0; i < f->nmeta; i++)
		if (!strcmp(f->meta[i * 2], key))
			return f->meta[i * 2 + 1];
	return NULL;
}

static float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
	uint32_t bits;
	if (exp == 0 && mant == 0) {
		bits = sign;
	} else if (exp == 0) {        /* subnormal: normalise */
		exp = 113;
		while (!(mant & 0x400)) {
			mant <<= 1;
			exp--;
		}
		bits = sign | exp << 23 | (mant & 0x3ff) << 13;
	} else if (exp == 31) {
		bits = sign | 0x7f800000u | mant << 13;
	} else {
		bits = sign | (exp + 112) << 23 | mant << 13;
	}
	float v;
	memcpy(&v, &bits, sizeof(v));
	return v;
}

int nn_st_read_f32(nn_st_file *f, const struct nn_st_tensor *t, float *dst, char *err,
	size_t errlen)
{
	uint64_t off = f->data_start + t->begin;
	int rc;
	if (t->dtype == NN_ST_F32) {
		rc = read_full(f->fd, dst, t->end - t->begin, off);
		if (rc)
			say(err, errlen, "%s: reading tensor \"%s\" failed", f->path, t->name);
		return rc;
	}
	if (t->dtype != NN_ST_F16 && t->dtype != NN_ST_BF16) {
		say(err, errlen, "%s: tensor \"%s\" is %s; only F32, F16 and BF16 load as float",
			f->path, t->name, t->dtype_name);
		return VR_EUNSUPPORTED;
	}
	/* Converts through a small buffer, so no allocation scales with the tensor. */
	uint16_t buf[8192];
	for (uint64_t done = 0; done < t->numel;) {
		size_t chunk = t->numel - done < 8192 ? (size_t)(t->numel - done) : 8192;
		if ((rc = read_full(f->fd, buf, chunk * 2, off + done * 2))) {
			say(err, errlen, "%s: reading tensor \"%s\" failed", f->path, t->name);
			return rc;
		}
		for (size_t i = 0; i < chunk; i++)
			dst[done + i] = t->dtype == NN_ST_F16 ? half_to_float(buf[i]) :
				nn_bf16_to_float(buf[i]);
		done += chunk;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes so the data
 * that follows is aligned. */
static char *build_header(const struct nn_st_entry *t, int n, const char *const *meta,
	size_t *len, char *err, size_t errlen)
{
	cJSON *root = cJSON_CreateObject(), *m = NULL;
	char *json = NULL, *padded = NULL;
	uint64_t off = 0;
	if (!root)
		return NULL;
	if (meta && meta[0]) {
		if (!(m = cJSON_AddObjectToObject(root, "__metadata__")))
			goto leave;
		for (int i = 0; meta[i] && meta[i + 1]; i += 2)
			if (!cJSON_AddStringToObject(m, meta[i], meta[i + 1]))
				goto leave;
	}
	for (int i = 0; i < n; i++) {
		uint64_t numel = 1;
		cJSON *e = cJSON_AddObjectToObject(root, t[i].name), *shape, *offs;
		if (!e || !cJSON_AddStringToObject(e, "dtype", "F32") ||
		    !(shape = cJSON_AddArrayToObject(e, "shape")) ||
		    !(offs = cJSON_AddArrayToObject(e, "data_offsets")))
			goto leave;
		for (int d = 0; d < t[i].ndim; d++) {
			numel *= (uint64_t)t[i].shape[d];
			cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
		}
		cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
		off += numel * 4;
		cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
	}
	if (!(json = cJSON_PrintUnformatted(root)))
		goto leave;
	size_t jl = strlen(json), pl = (jl + 7) / 8 * 8;
	if (!(padded = malloc(pl)))
		goto leave;
	memcpy(padded, json, jl);
	memset(padded + jl, ' ', pl - jl);
	*len = pl;
leave:
	if (!padded)
		say(err, errlen, "out of memory building a safetensors header");
	cJSON_free(json);
	cJSON_Delete(root);
	return padded;
}

int nn_st_write(const char *path, const struct nn_st_entry *t, int n, const char *const *meta,
	char *err, size_t errlen)
{
	char *header = NULL, *tmp = NULL;
	size_t hlen = 0;
	int fd = -1, rc = VR_EINVAL;
	for (int i = 0; i < n; i++) {
		if (!t[i].name || !t[i].name[0] || !strcmp(t[i].name, "__metadata__") ||
		    t[i].ndim < 0 || t[i].ndim > NN_ST_MAX_DIMS) {
			say(err, errlen, "tensor %d: bad name or rank", i);
			return VR_EINVAL;
		}
		for (int d = 0; d < t[i].ndim; d++)
			if (t[i].shape[d] < 0) {
				say(err, errlen, "tensor \"%s\": negative dimension", t[i].name);
				return VR_EINVAL;
			}
	}
	rc = VR_ENOMEM;
	if (!(header = build_header(t, n, meta, &hlen, err, errlen)))
		goto leave;
	if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
		tmp = NULL;
		goto leave;
	}
	if ((fd = mkstemp(tmp)) < 0) {
		rc = -errno;
		say(err, errlen, "%s: %s", tmp, strerror(errno));
		free(tmp);
		tmp = NULL;
		goto leave;
	}
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
	if ((rc = write_full(fd, len8, 8)) || (rc = write_full(fd, header, hlen)))
		goto io;
	for (int i = 0; i < n; i++) {
		size_t numel = 1;
		for (int d = 0; d < t[i].ndim; d++)
			numel *= (size_t)t[i].shape[d];
		if ((rc = write_full(fd, t[i].data, numel * sizeof(float))))
			goto io;
	}
	if (fsync(fd)) {
		rc = -errno;
		goto io;
	}
	if (close(fd)) {
		fd = -1;
		rc = -errno;
		goto io;
	}
	fd = -1;
	if (rename(tmp, path)) {
		rc = -errno;
		goto io;
	}
	free(tmp);
	tmp = NULL;
	rc = 0;
	goto leave;
io:
	say(err, errlen, "%s: writing failed: %s", path, strerror(-rc));
leave:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(header);
	return rc;
}
