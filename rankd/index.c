/* The serving item matrix (index.h): chunked fp32 + fp16 rows, one writer,
 * many readers.
 *
 * DESIGN
 * Storage. Rows live in chunks of 2^chunk_shift rows (about 4 MiB, 2 MiB
 * aligned and madvise(MADV_HUGEPAGE)d so a 1.2 GB matrix costs a few hundred
 * huge-page faults rather than 300,000 small ones). Each chunk holds the
 * fp32 rows followed by their fp16 copy. Chunks mean the matrix grows
 * without ever copying it, and a replacement copies one chunk, not the
 * matrix.
 *
 * Snapshots. A snapshot is a table of chunk pointers plus a published row
 * count n. Readers take a reference on the current snapshot (a mutex held
 * for a pointer load and an increment: no reader ever waits for a writer's
 * work, only for another reader's increment) and read n with an acquire
 * load. Chunks are reference counted by the snapshots that list them; a
 * snapshot, and then any chunk no other snapshot lists, is freed by
 * whoever drops its last reference, reader or writer.
 *
 * Writers (serialised by wlock) change rows in two ways:
 * - append: the row is written into spare capacity past n (in the last
 *   chunk, or a fresh chunk whose pointer is stored in the table's spare
 *   slot), then n is advanced with a release store. No reader looks past
 *   the n it loaded, so a row is seen complete or not at all. When the
 *   table's slots run out, a copy with twice the slots becomes current.
 * - replace: copy-on-write of the row's chunk; the new chunk goes into a
 *   new snapshot published by swapping the pointer under the mutex. Views
 *   of the old snapshot keep reading the old chunk untouched.
 * A new model (after training) is a new rk_index; the service swaps
 * those the same way.
 *
 * Reduced precision: an int8 and an fp16 copy. The approximate top-k of
 * topk.h needs its first pass only to keep the true top k among k × c
 * candidates, which the exact re-rank then orders. Per-row scaled int8
 * reads a quarter of fp32's bytes (324 MB instead of 1.2 GB at 1 M items
 * and D = 301) and its dot products are exact integers (VNNI: 64 byte
 * products per instruction), so it is the default pass. Its weakness is a
 * row with one large element (VBPR's bias column can dwarf the factors):
 * the row's scale is set by it and the small elements lose resolution.
 * fp16 keeps 11 significant bits of every element whatever the row holds
 * and needs no calibration, so it stays selectable for such models, at
 * 2 bytes per element of memory. bench_serve's VBPR-shaped rows (bias up
 * to 10× a latent factor) measured recall@20 at c = 1 of 0.978 (10 k
 * items) and 0.958 (1 M) for int8, 0.9995 and 1.0 for fp16, and 1.0 for
 * both from c = 2 on.
 *
 * int4 halves int8's bytes again (168 per row at D = 301 with its two
 * floats), for catalogues where the scan is bound by memory (1 M items:
 * 168 MB a query instead of 324): the factors keep 15 levels, so the
 * first pass needs a wider candidate margin, chosen by bench_serve, and
 * column 0 (the bias) is kept exact so that it does not set the scale. */
#include "index.h"

#include "err.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE (2u << 20)
#define CHUNK_TARGET_BYTES (4u << 20)
#define HALF_MAX 65504.0f

struct rk_index__chunk {
	atomic_int refs;
	void *map;
	size_t map_bytes;
	float *f32;
	uint16_t *f16;
	uint8_t *i8;
	float *scale;
	uint8_t *i4;
	float *i4s;
	float *i8b;
};

struct rk_index__snap {
	atomic_long refs;
	atomic_uint n;
	uint32_t n_chunks;   /* slots in use; written by the writer only */
	uint32_t cap_chunks;
	struct rk_index__chunk **chunks;
	const float **f32;
	const uint16_t **f16;
	const uint8_t **i8;
	const float **scale;
	const uint8_t **i4;
	const float **i4s;
	const float **i8b;
};

struct rk_index {
	uint32_t dim, stride, stride8, stride4, chunk_shift;
	pthread_mutex_t lock;  /* guards cur against a reader's acquire */
	pthread_mutex_t wlock; /* one writer at a time */
	struct rk_index__snap *cur;
	int have_f16c;
};

uint16_t rk_half_from_float(float f)
{
	uint32_t x;
	memcpy(&x, &f, sizeof x);
	uint32_t sign = (x >> 16) & 0x8000u;
	uint32_t ax = x & 0x7fffffffu;
	if (ax >= 0x7f800000u) /* inf, NaN (kept quiet) */
		return (uint16_t)(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
	if (ax >= 0x47800000u) /* 2^16 and up overflow */
		return (uint16_t)(sign | 0x7c00u);
	if (ax >= 0x38800000u) { /* normal half; a carry may round up to inf */
		uint32_t h = ((((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13));
		uint32_t rem = ax & 0x1fffu;
		if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
			h++;
		return (uint16_t)(sign | h);
	}
	uint32_t e = ax >> 23;
	if (e < 102u) /* under half the smallest subnormal */
		return (uint16_t)sign;
	uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
	uint32_t shift = 126u - e; /* 14 .. 24 */
	uint32_t h = mant >> shift;
	uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
	if (rem > half || (rem == half && (h & 1u)))
		h++;
	return (uint16_t)(sign | h);
}

float rk_half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
	if (e == 0 && m == 0) {
		x = sign;
	} else if (e == 0) { /* subnormal: normalise */
		e = 113;
		while (!(m & 0x400u)) {
			m <<= 1;
			e--;
		}
		x = sign | (e << 23) | ((m & 0x3ffu) << 13);
	} else if (e == 31) {
		x = sign | 0x7f800000u | (m << 13);
	} else {
		x = sign | ((e + 112u) << 23) | (m << 13);
	}
	float f;
	memcpy(&f, &x, sizeof f);
	return f;
}

int rk_cpu_f16c(void)
{
	unsigned a, b, c, d;
	return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

static inline float clamp_half(float v)
{
	return v > HALF_MAX ? HALF_MAX : v < -HALF_MAX ? -HALF_MAX : v;
}

__attribute__((target("avx,f16c")))
static void to_half_f16c(uint16_t *dst, const float *src, uint32_t n)
{
	const __m256 hi = _mm256_set1_ps(HALF_MAX), lo = _mm256_set1_ps(-HALF_MAX);
	uint32_t j = 0;
	for (; j + 8 <= n; j += 8) {
		__m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(src + j), lo), hi);
		_mm_storeu_si128((__m128i *)(dst + j), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
	}
	for (; j < n; j++)
		dst[j] = rk_half_from_float(clamp_half(src[j]));
}

/* Row src (dim floats) as int8 with one scale per row: dst[j] = 128 +
 * round(src[j] / scale), in 1 .. 255, scale = max |src[j]| / 127 (0 for a
 * zero row, whose bytes are all 128), dst zero-point padded to len bytes.
 * The bytes are offset by 128 (unsigned) so that the VNNI instruction,
 * which multiplies unsigned by signed bytes, takes them as they are; the
 * scan subtracts 128 × Σ user once per query. Returns scale. */
static float to_int8(uint8_t *dst, const float *src, uint32_t dim, uint32_t len)
{
	float m = 0;
	for (uint32_t j = 0; j < dim; j++)
		m = fabsf(src[j]) > m ? fabsf(src[j]) : m;
	float scale = m / 127.0f, inv = m > 0 ? 127.0f / m : 0;
	for (uint32_t j = 0; j < dim; j++) {
		long q = lrintf(src[j] * inv);
		dst[j] = (uint8_t)(128 + (q > 127 ? 127 : q < -127 ? -127 : q));
	}
	memset(dst + dim, 128, len - dim);
	return scale;
}

/* Row src (dim floats) as the int4 copy (index.h): column 0 exactly into
 * hdr[0], columns 1 .. dim - 1 as nibbles 8 + round(src[j] / s), 1 .. 15,
 * s = max_{j >= 1} |src[j]| / 7 into hdr[1] (0 when they are all zero),
 * element e = j - 1 in byte 32 (e / 64) + e % 32, the low nibble for
 * e % 64 < 32, else the high one; padding nibbles 8 (zero). Column 0 is
 * apart because in every model it is the item's bias against a user's 1
 * (model.h), often ten times a factor: with it in the scale the factors
 * would round to a few levels. */
static void to_int4(uint8_t *dst, float *hdr, const float *src, uint32_t dim, uint32_t len)
{
	float m = 0;
	for (uint32_t j = 1; j < dim; j++)
		m = fabsf(src[j]) > m ? fabsf(src[j]) : m;
	float inv = m > 0 ? 7.0f / m : 0;
	hdr[0] = src[0];
	hdr[1] = m / 7.0f;
	memset(dst, 0x88, len);
	for (uint32_t j = 1; j < dim; j++) {
		uint32_t e = j - 1, b = 32 * (e / 64) + e % 32;
		long q = lrintf(src[j] * inv);
		uint8_t nib = (uint8_t)(8 + (q > 7 ? 7 : q < -7 ? -7 : q));
		dst[b] = e % 64 < 32 ? (uint8_t)((dst[b] & 0xf0) | nib) : (uint8_t)((dst[b] & 0x0f) | (nib << 4));
	}
}

static void to_half(const struct rk_index *ix, uint16_t *dst, const float *src, uint32_t n)
{
	if (ix->have_f16c) {
		to_half_f16c(dst, src, n);
		return;
	}
	for (uint32_t j = 0; j < n; j++)
		dst[j] = rk_half_from_float(clamp_half(src[j]));
}

/* Maps zeroed memory; regions of a huge page or more are aligned to one and
 * offered to transparent huge pages. The length is not rounded up to huge
 * pages: a chunk of 2.2 MB (1024 rows at D = 301 with the int8 copy) takes
 * one huge page and small pages for the rest, not 4 MB. */
static void *map_zeroed(size_t bytes, size_t *map_bytes)
{
	bytes = (bytes + 4095) & ~(size_t)4095;
	if (bytes < HUGE_PAGE) {
		void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		*map_bytes = bytes;
		return p == MAP_FAILED ? NULL : p;
	}
	size_t over = bytes + HUGE_PAGE;
	char *p = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	char *a = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + bytes < p + over)
		munmap(a + bytes, (size_t)(p + over - (a + bytes)));
	madvise(a, bytes, MADV_HUGEPAGE);
	*map_bytes = bytes;
	return a;
}

static struct rk_index__chunk *chunk_new(const struct rk_index *ix)
{
	size_t rows = (size_t)1 << ix->chunk_shift;
	size_t f32_bytes = rows * ix->stride * sizeof(float), f16_bytes = rows * ix->stride * sizeof(uint16_t);
	size_t i8_bytes = rows * ix->stride8, i4_bytes = rows * ix->stride4;
	struct rk_index__chunk *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->map = map_zeroed(f32_bytes + f16_bytes + i8_bytes + i4_bytes + rows * 5 * sizeof(float), &c->map_bytes);
	if (!c->map) {
		free(c);
		return NULL;
	}
	/* fp32 rows start 64-byte aligned, fp16, int8 and int4 rows 32-byte
	 * aligned (strides of 16 floats, 16 halves, 64 and 32 bytes), scales 4. */
	c->f32 = c->map;
	c->f16 = (uint16_t *)((char *)c->map + f32_bytes);
	c->i8 = (uint8_t *)c->map + f32_bytes + f16_bytes;
	c->i4 = (uint8_t *)c->map + f32_bytes + f16_bytes + i8_bytes;
	c->scale = (float *)((char *)c->map + f32_bytes + f16_bytes + i8_bytes + i4_bytes);
	c->i4s = c->scale + rows;
	c->i8b = c->i4s + 2 * rows;
	atomic_init(&c->refs, 1);
	return c;
}

static void chunk_unref(struct rk_index__chunk *c)
{
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	munmap(c->map, c->map_bytes);
	free(c);
}

/* A snapshot with cap slots listing the first n_chunks chunks of from (if
 * any), each with a new reference; published count n. */
static struct rk_index__snap *snap_new(uint32_t cap, const struct rk_index__snap *from, uint32_t n)
{
	struct rk_index__snap *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->chunks = calloc(cap, sizeof *s->chunks);
	s->f32 = calloc(cap, sizeof *s->f32);
	s->f16 = calloc(cap, sizeof *s->f16);
	s->i8 = calloc(cap, sizeof *s->i8);
	s->scale = calloc(cap, sizeof *s->scale);
	s->i8b = calloc(cap, sizeof *s->i8b);
	s->i4 = calloc(cap, sizeof *s->i4);
	s->i4s = calloc(cap, sizeof *s->i4s);
	if (!s->chunks || !s->f32 || !s->f16 || !s->i8 || !s->scale || !s->i4 || !s->i4s || !s->i8b) {
		free(s->chunks);
		free(s->f32);
		free(s->f16);
		free(s->i8);
		free(s->scale);
		free(s->i4);
		free(s->i4s);
		free(s->i8b);
		free(s);
		return NULL;
	}
	s->cap_chunks = cap;
	atomic_init(&s->refs, 1);
	atomic_init(&s->n, n);
	if (from) {
		for (uint32_t c = 0; c < from->n_chunks; c++) {
			s->chunks[c] = from->chunks[c];
			s->f32[c] = from->f32[c];
			s->f16[c] = from->f16[c];
			s->i8[c] = from->i8[c];
			s->scale[c] = from->scale[c];
			s->i8b[c] = from->i8b[c];
			s->i4[c] = from->i4[c];
			s->i4s[c] = from->i4s[c];
			atomic_fetch_add_explicit(&s->chunks[c]->refs, 1, memory_order_relaxed);
		}
		s->n_chunks = from->n_chunks;
	}
	return s;
}

static void snap_unref(struct rk_index__snap *s)
{
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (uint32_t c = 0; c < s->n_chunks; c++)
		chunk_unref(s->chunks[c]);
	free(s->chunks);
	free(s->f32);
	free(s->f16);
	free(s->i8);
	free(s->scale);
	free(s->i4);
	free(s->i4s);
	free(s->i8b);
	free(s);
}

/* Makes s current and drops the index's reference on the old one. Called
 * by the writer, holding wlock. */
static void publish(struct rk_index *ix, struct rk_index__snap *s)
{
	pthread_mutex_lock(&ix->lock);
	struct rk_index__snap *old = ix->cur;
	ix->cur = s;
	pthread_mutex_unlock(&ix->lock);
	snap_unref(old);
}

int rk_index_create(uint32_t dim, const struct rk_index_opts *opts, struct rk_index **out)
{
	int rc = 0;
	struct rk_index *ix = NULL;
	uint32_t rows = opts ? opts->rows_per_chunk : 0;

	*out = NULL;
	if (dim == 0 || dim > RK_INDEX_MAX_DIM || (rows & (rows - 1)) != 0) {
		rc = VR_EINVAL;
		goto fail;
	}
	ix = calloc(1, sizeof *ix);
	if (!ix) {
		rc = VR_ENOMEM;
		goto fail;
	}
	ix->dim = dim;
	ix->stride = (dim + 15u) & ~15u;
	ix->stride8 = (dim + 63u) & ~63u;
	ix->stride4 = 32u * ((dim - 1u + 63u) / 64u);
	if (ix->stride4 == 0)
		ix->stride4 = 32; /* D = 1: a row of padding */
	if (rows == 0) {
		size_t row_bytes = (size_t)ix->stride * (sizeof(float) + sizeof(uint16_t)) + ix->stride8 +
				   ix->stride4 + 5 * sizeof(float);
		rows = 1;
		while ((size_t)rows * 2 * row_bytes <= CHUNK_TARGET_BYTES)
			rows *= 2;
	}
	while ((1u << ix->chunk_shift) < rows)
		ix->chunk_shift++;
	ix->have_f16c = rk_cpu_f16c();
	pthread_mutex_init(&ix->lock, NULL);
	pthread_mutex_init(&ix->wlock, NULL);
	ix->cur = snap_new(16, NULL, 0);
	if (!ix->cur) {
		rc = VR_ENOMEM;
		goto fail;
	}
	*out = ix;
	return 0;
fail:
	if (ix) {
		pthread_mutex_destroy(&ix->lock);
		pthread_mutex_destroy(&ix->wlock);
	}
	free(ix);
	return rc;
}

void rk_index_destroy(struct rk_index *ix)
{
	if (!ix)
		return;
	snap_unref(ix->cur);
	pthread_mutex_destroy(&ix->lock);
	pthread_mutex_destroy(&ix->wlock);
	free(ix);
}

uint32_t rk_index_dim(const struct rk_index *ix)
{
	return ix->dim;
}

static int rows_finite(const float *rows, size_t n)
{
	for (size_t j = 0; j < n; j++)
		if (!isfinite(rows[j]))
			return 0;
	return 1;
}

/* The int8 row's error terms for rk_topk_batch's exact bound (index.h):
 * out[0] = scale × ||q||_2, out[1] = ||x - scale × q||_2 + stride × 2^-24
 * × 1.01 × ||x||_2, q the row's int8 values (byte - 128) and x the padded
 * fp32 row (stride floats). Summed in double and rounded up, so the
 * floats are never under the real norms. */
static void int8_norms(float *out, const uint8_t *q8, float scale, const float *x, uint32_t stride)
{
	double qq = 0, ee = 0, xx = 0;
	for (uint32_t j = 0; j < stride; j++) {
		double q = (double)q8[j] - 128, e = (double)x[j] - (double)scale * q;
		qq += q * q;
		ee += e * e;
		xx += (double)x[j] * x[j];
	}
	double up = 1 + 0x1p-20;
	out[0] = (float)((double)scale * sqrt(qq) * up);
	out[1] = (float)((sqrt(ee) + (double)stride * 0x1p-24 * 1.01 * sqrt(xx)) * up);
}

/* Writes row (dim floats) into slot r of chunk c, padding with zeros. */
static void put_row(const struct rk_index *ix, struct rk_index__chunk *c, uint32_t r, const float *row)
{
	float *dst = c->f32 + (size_t)r * ix->stride;
	uint16_t *hdst = c->f16 + (size_t)r * ix->stride;
	memcpy(dst, row, ix->dim * sizeof(float));
	memset(dst + ix->dim, 0, (ix->stride - ix->dim) * sizeof(float));
	to_half(ix, hdst, dst, ix->stride);
	c->scale[r] = to_int8(c->i8 + (size_t)r * ix->stride8, dst, ix->dim, ix->stride8);
	int8_norms(c->i8b + 2 * (size_t)r, c->i8 + (size_t)r * ix->stride8, c->scale[r], dst, ix->stride);
	to_int4(c->i4 + (size_t)r * ix->stride4, c->i4s + 2 * (size_t)r, dst, ix->dim, ix->stride4);
}

int rk_index_append(struct rk_index *ix, const float *rows, uint32_t n_rows, uint32_t *first_id)
{
	int rc = 0;
	pthread_mutex_lock(&ix->wlock);
	struct rk_index__snap *s = ix->cur;
	uint32_t n = atomic_load_explicit(&s->n, memory_order_relaxed);
	uint32_t mask = (1u << ix->chunk_shift) - 1u;

	if (n_rows > UINT32_MAX - n) {
		rc = VR_ETOOBIG;
		goto leave;
	}
	if (!rows_finite(rows, (size_t)n_rows * ix->dim)) {
		rc = VR_EINVAL;
		goto leave;
	}
	/* Capacity first, so that a failure publishes nothing. */
	uint32_t need = n_rows ? (uint32_t)(((uint64_t)n + n_rows - 1) >> ix->chunk_shift) + 1 : 0;
	if (need > s->cap_chunks) {
		uint32_t cap = s->cap_chunks;
		while (cap < need)
			cap *= 2;
		struct rk_index__snap *g = snap_new(cap, s, n);
		if (!g) {
			rc = VR_ENOMEM;
			goto leave;
		}
		publish(ix, g);
		s = g;
	}
	while (s->n_chunks < need) {
		struct rk_index__chunk *c = chunk_new(ix);
		if (!c) {
			rc = VR_ENOMEM;
			goto leave;
		}
		s->chunks[s->n_chunks] = c;
		s->f32[s->n_chunks] = c->f32;
		s->f16[s->n_chunks] = c->f16;
		s->i8[s->n_chunks] = c->i8;
		s->scale[s->n_chunks] = c->scale;
		s->i8b[s->n_chunks] = c->i8b;
		s->i4[s->n_chunks] = c->i4;
		s->i4s[s->n_chunks] = c->i4s;
		s->n_chunks++;
	}
	if (first_id)
		*first_id = n;
	for (uint32_t r = 0; r < n_rows; r++, n++) {
		put_row(ix, s->chunks[n >> ix->chunk_shift], n & mask, rows + (size_t)r * ix->dim);
		atomic_store_explicit(&s->n, n + 1, memory_order_release);
	}
leave:
	pthread_mutex_unlock(&ix->wlock);
	return rc;
}

/* The rows published now. */
static uint32_t published(struct rk_index *ix)
{
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	uint32_t n = v.n;
	rk_index_release(&v);
	return n;
}

#define ZERO_ROWS 256 /* zero rows appended per call when padding */

int rk_index_pad(struct rk_index *ix, uint32_t n)
{
	uint32_t have = published(ix);
	if (have >= n)
		return 0;
	float *zero = calloc((size_t)ZERO_ROWS * ix->dim, sizeof(float));
	if (!zero)
		return VR_ENOMEM;
	int rc = 0;
	while (have < n && !rc) {
		uint32_t take = n - have < ZERO_ROWS ? n - have : ZERO_ROWS;
		rc = rk_index_append(ix, zero, take, NULL);
		have += take;
	}
	free(zero);
	return rc;
}

int rk_index_set_row(struct rk_index *ix, uint32_t id, const float *row)
{
	if (id < published(ix))
		return rk_index_replace(ix, id, row);
	int rc = rk_index_pad(ix, id);
	return rc ? rc : rk_index_append(ix, row, 1, NULL);
}

int rk_index_replace(struct rk_index *ix, uint32_t id, const float *row)
{
	int rc = 0;
	pthread_mutex_lock(&ix->wlock);
	struct rk_index__snap *s = ix->cur, *ns = NULL;
	struct rk_index__chunk *nc = NULL;
	uint32_t n = atomic_load_explicit(&s->n, memory_order_relaxed);
	uint32_t ci = id >> ix->chunk_shift, rows_per = 1u << ix->chunk_shift;

	if (id >= n) {
		rc = VR_ENOTFOUND;
		goto leave;
	}
	if (!rows_finite(row, ix->dim)) {
		rc = VR_EINVAL;
		goto leave;
	}
	nc = chunk_new(ix);
	ns = snap_new(s->cap_chunks, s, n);
	if (!nc || !ns) {
		rc = VR_ENOMEM;
		goto leave;
	}
	const struct rk_index__chunk *oc = s->chunks[ci];
	size_t used = n - ((size_t)ci << ix->chunk_shift);
	if (used > rows_per)
		used = rows_per;
	memcpy(nc->f32, oc->f32, used * ix->stride * sizeof(float));
	memcpy(nc->f16, oc->f16, used * ix->stride * sizeof(uint16_t));
	memcpy(nc->i8, oc->i8, used * ix->stride8);
	memcpy(nc->scale, oc->scale, used * sizeof(float));
	memcpy(nc->i8b, oc->i8b, used * 2 * sizeof(float));
	memcpy(nc->i4, oc->i4, used * ix->stride4);
	memcpy(nc->i4s, oc->i4s, used * 2 * sizeof(float));
	put_row(ix, nc, id & (rows_per - 1u), row);
	chunk_unref(ns->chunks[ci]);
	ns->chunks[ci] = nc;
	ns->f32[ci] = nc->f32;
	ns->f16[ci] = nc->f16;
	ns->i8[ci] = nc->i8;
	ns->scale[ci] = nc->scale;
	ns->i8b[ci] = nc->i8b;
	ns->i4[ci] = nc->i4;
	ns->i4s[ci] = nc->i4s;
	nc = NULL;
	publish(ix, ns);
	ns = NULL;
leave:
	if (nc)
		chunk_unref(nc);
	if (ns)
		snap_unref(ns);
	pthread_mutex_unlock(&ix->wlock);
	return rc;
}

void rk_index_acquire(struct rk_index *ix, struct rk_index_view *view)
{
	pthread_mutex_lock(&ix->lock);
	struct rk_index__snap *s = ix->cur;
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&ix->lock);
	view->n = atomic_load_explicit(&s->n, memory_order_acquire);
	view->dim = ix->dim;
	view->stride = ix->stride;
	view->stride8 = ix->stride8;
	view->stride4 = ix->stride4;
	view->chunk_shift = ix->chunk_shift;
	view->chunk_f32 = s->f32;
	view->chunk_f16 = s->f16;
	view->chunk_i8 = s->i8;
	view->chunk_scale = s->scale;
	view->chunk_i8b = s->i8b;
	view->chunk_i4 = s->i4;
	view->chunk_i4s = s->i4s;
	view->snap_ = s;
}

void rk_index_release(struct rk_index_view *view)
{
	if (!view->snap_)
		return;
	snap_unref(view->snap_);
	memset(view, 0, sizeof *view);
}

const float *rk_index_row(const struct rk_index_view *view, uint32_t id)
{
	if (id >= view->n)
		return NULL;
	uint32_t mask = (1u << view->chunk_shift) - 1u;
	return view->chunk_f32[id >> view->chunk_shift] + (size_t)(id & mask) * view->stride;
}

const uint8_t *rk_index_row_i8(const struct rk_index_view *view, uint32_t id, float *scale)
{
	if (id >= view->n)
		return NULL;
	uint32_t mask = (1u << view->chunk_shift) - 1u;
	*scale = view->chunk_scale[id >> view->chunk_shift][id & mask];
	return view->chunk_i8[id >> view->chunk_shift] + (size_t)(id & mask) * view->stride8;
}

const uint16_t *rk_index_row_f16(const struct rk_index_view *view, uint32_t id)
{
	if (id >= view->n)
		return NULL;
	uint32_t mask = (1u << view->chunk_shift) - 1u;
	return view->chunk_f16[id >> view->chunk_shift] + (size_t)(id & mask) * view->stride;
}

const uint8_t *rk_index_row_i4(const struct rk_index_view *view, uint32_t id, float *col0, float *scale)
{
	if (id >= view->n)
		return NULL;
	uint32_t mask = (1u << view->chunk_shift) - 1u;
	const float *h = view->chunk_i4s[id >> view->chunk_shift] + 2 * (size_t)(id & mask);
	*col0 = h[0];
	*scale = h[1];
	return view->chunk_i4[id >> view->chunk_shift] + (size_t)(id & mask) * view->stride4;
}
