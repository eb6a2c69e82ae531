/* Top-k over the serving item matrix (topk.h): dot-product kernels per
 * instruction set, a bounded heap, the single-user scans (exact, fp16 +
 * exact re-rank, candidate lists) and the many-user path (int8 rows for
 * many users at once, exact by an error bound or approximate).
 *
 * Selection keeps the best k seen so far in a min-heap whose root is the
 * worst kept hit; a new score costs one compare against the root unless it
 * beats it. Exclusion lists are merged lazily: only items that would enter
 * the heap are looked up, and they arrive in ascending id order (scans go
 * up the matrix, candidate lists are sorted first), so one cursor walks
 * each list once.
 *
 * Why one file at ~1,600 lines: it is one concept, top-k over the index.
 * Every path (single, split, batched, marked) shares the kernel table, the
 * selection structures and scan(), and must give the single scan's bits;
 * parting them would make those internals an interface. */
#include "topk.h"

#include "err.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define BLK 128           /* rows scored per kernel call */
#define BATCH_USERS 1024  /* users set up at once by rk_topk_batch */

typedef void (*dot32_fn)(const float *u, uint32_t len, const float *const *rows, uint32_t n, float *out);
typedef void (*dot16_fn)(const float *u, uint32_t len, const uint16_t *const *rows, uint32_t n, float *out);
typedef void (*dot8_fn)(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, int32_t *out);
typedef void (*dot4_fn)(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, int32_t *out);
typedef void (*dot8x_fn)(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, const int32_t *corr,
			 const float *sc, float *out);
typedef void (*dot32x4_fn)(const float *u, uint32_t len, const float *rows, uint32_t n, float *out,
			   size_t ostride);
typedef uint32_t (*above_fn)(const float *s, uint32_t r, uint32_t n, float t);

/* Kernels. Each computes out[r] = u · rows[r] over len floats (a multiple of
 * 16, zero padded), one row after the other. Interleaving rows (to load the
 * user vector once for several) measured twice as slow over a 1 M-row
 * matrix here: it breaks the single sequential stream the hardware
 * prefetcher follows, and the scan is bound by memory, not by loads from
 * L1. Two accumulator chains per row, and independent rows overlapping in
 * the out-of-order window, hide the FMA latency. */

#define T512 __attribute__((target("avx512f,fma")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#define TVNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

T512 static inline __m512 ld16_512(const uint16_t *h)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
}

#define DOT512(TYPE, LOAD, NAME) \
T512 static void NAME(const float *u, uint32_t len, const TYPE *const *rows, uint32_t n, float *out) \
{ \
	for (uint32_t r = 0; r < n; r++) { \
		const TYPE *p = rows[r]; \
		__m512 a = _mm512_setzero_ps(), b = a; \
		uint32_t j = 0; \
		for (; j + 32 <= len; j += 32) { \
			a = _mm512_fmadd_ps(LOAD(p + j), _mm512_loadu_ps(u + j), a); \
			b = _mm512_fmadd_ps(LOAD(p + j + 16), _mm512_loadu_ps(u + j + 16), b); \
		} \
		if (j < len) \
			a = _mm512_fmadd_ps(LOAD(p + j), _mm512_loadu_ps(u + j), a); \
		out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a, b)); \
	} \
}

DOT512(float, _mm512_loadu_ps, dot32_avx512)
DOT512(uint16_t, ld16_512, dot16_avx512)

/* Four users against n contiguous rows (Evaluate's full score vectors):
 * out[x * ostride + r] = u_x · rows[r], u_x = u + x * len. Each score takes
 * exactly dot32_avx512's steps (the same accumulator chains, the same
 * order, the same reduction), so a score is the same bits as a scan's and
 * equal rows get equal scores wherever they sit; the user vectors come
 * from L1 and each row is loaded once for the four. */
T512 static void dot32x4_avx512(const float *u, uint32_t len, const float *rows, uint32_t n, float *out,
				size_t ostride)
{
	uint32_t r = 0;
	/* Two rows at a time: each user load then feeds two FMAs. */
	for (; r + 2 <= n; r += 2) {
		const float *p = rows + (size_t)r * len, *q = p + len;
		__m512 a[4], b[4], c[4], d[4];
		for (int x = 0; x < 4; x++)
			a[x] = b[x] = c[x] = d[x] = _mm512_setzero_ps();
		uint32_t j = 0;
		for (; j + 32 <= len; j += 32) {
			__m512 plo = _mm512_loadu_ps(p + j), phi = _mm512_loadu_ps(p + j + 16);
			__m512 qlo = _mm512_loadu_ps(q + j), qhi = _mm512_loadu_ps(q + j + 16);
			for (int x = 0; x < 4; x++) {
				__m512 ulo = _mm512_loadu_ps(u + (size_t)x * len + j);
				__m512 uhi = _mm512_loadu_ps(u + (size_t)x * len + j + 16);
				a[x] = _mm512_fmadd_ps(plo, ulo, a[x]);
				b[x] = _mm512_fmadd_ps(phi, uhi, b[x]);
				c[x] = _mm512_fmadd_ps(qlo, ulo, c[x]);
				d[x] = _mm512_fmadd_ps(qhi, uhi, d[x]);
			}
		}
		if (j < len) {
			__m512 plo = _mm512_loadu_ps(p + j), qlo = _mm512_loadu_ps(q + j);
			for (int x = 0; x < 4; x++) {
				__m512 ulo = _mm512_loadu_ps(u + (size_t)x * len + j);
				a[x] = _mm512_fmadd_ps(plo, ulo, a[x]);
				c[x] = _mm512_fmadd_ps(qlo, ulo, c[x]);
			}
		}
		for (int x = 0; x < 4; x++) {
			out[(size_t)x * ostride + r] = _mm512_reduce_add_ps(_mm512_add_ps(a[x], b[x]));
			out[(size_t)x * ostride + r + 1] = _mm512_reduce_add_ps(_mm512_add_ps(c[x], d[x]));
		}
	}
	for (; r < n; r++) {
		const float *p = rows + (size_t)r * len;
		__m512 a[4], b[4];
		for (int x = 0; x < 4; x++)
			a[x] = b[x] = _mm512_setzero_ps();
		uint32_t j = 0;
		for (; j + 32 <= len; j += 32) {
			__m512 lo = _mm512_loadu_ps(p + j), hi = _mm512_loadu_ps(p + j + 16);
			for (int x = 0; x < 4; x++) {
				a[x] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(u + (size_t)x * len + j), a[x]);
				b[x] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(u + (size_t)x * len + j + 16), b[x]);
			}
		}
		if (j < len) {
			__m512 lo = _mm512_loadu_ps(p + j);
			for (int x = 0; x < 4; x++)
				a[x] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(u + (size_t)x * len + j), a[x]);
		}
		for (int x = 0; x < 4; x++)
			out[(size_t)x * ostride + r] = _mm512_reduce_add_ps(_mm512_add_ps(a[x], b[x]));
	}
}

T256 static inline __m256 ld16_256(const uint16_t *h)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

T256 static inline float hsum256(__m256 a, __m256 b)
{
	__m256 s = _mm256_add_ps(a, b);
	__m128 x = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
	x = _mm_add_ps(x, _mm_movehl_ps(x, x));
	x = _mm_add_ss(x, _mm_movehdup_ps(x));
	return _mm_cvtss_f32(x);
}

#define DOT256(TYPE, LOAD, NAME) \
T256 static void NAME(const float *u, uint32_t len, const TYPE *const *rows, uint32_t n, float *out) \
{ \
	for (uint32_t r = 0; r < n; r++) { \
		const TYPE *p = rows[r]; \
		__m256 a = _mm256_setzero_ps(), b = a; \
		for (uint32_t j = 0; j < len; j += 16) { \
			a = _mm256_fmadd_ps(LOAD(p + j), _mm256_loadu_ps(u + j), a); \
			b = _mm256_fmadd_ps(LOAD(p + j + 8), _mm256_loadu_ps(u + j + 8), b); \
		} \
		out[r] = hsum256(a, b); \
	} \
}

DOT256(float, _mm256_loadu_ps, dot32_avx2)
DOT256(uint16_t, ld16_256, dot16_avx2)

/* dot32x4_avx512's AVX2 form: dot32_avx2's steps for four users. */
T256 static void dot32x4_avx2(const float *u, uint32_t len, const float *rows, uint32_t n, float *out,
			      size_t ostride)
{
	for (uint32_t r = 0; r < n; r++) {
		const float *p = rows + (size_t)r * len;
		__m256 a[4], b[4];
		for (int x = 0; x < 4; x++)
			a[x] = b[x] = _mm256_setzero_ps();
		for (uint32_t j = 0; j < len; j += 16) {
			__m256 lo = _mm256_loadu_ps(p + j), hi = _mm256_loadu_ps(p + j + 8);
			for (int x = 0; x < 4; x++) {
				a[x] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(u + (size_t)x * len + j), a[x]);
				b[x] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(u + (size_t)x * len + j + 8), b[x]);
			}
		}
		for (int x = 0; x < 4; x++)
			out[(size_t)x * ostride + r] = hsum256(a[x], b[x]);
	}
}

/* int8 kernels: out[r] = Σ_j rows[r][j] × u[j] in exact int32 arithmetic
 * (unsigned row bytes, signed user bytes, len a multiple of 64), so every
 * kernel gives the same integers. |sum| <= 255 × 127 × 2^16 < 2^31. VNNI
 * multiplies 64 byte pairs and adds them into 16 int32 lanes in one
 * instruction; AVX2 widens both to int16 and uses madd (the byte
 * instruction maddubs would saturate at 255 × 127 × 2). */
TVNNI static void dot8_vnni(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, int32_t *out)
{
	for (uint32_t r = 0; r < n; r++) {
		const uint8_t *p = rows[r];
		__m512i a = _mm512_setzero_si512(), b = a;
		uint32_t j = 0;
		for (; j + 128 <= len; j += 128) {
			a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(p + j), _mm512_loadu_si512(u + j));
			b = _mm512_dpbusd_epi32(b, _mm512_loadu_si512(p + j + 64), _mm512_loadu_si512(u + j + 64));
		}
		if (j < len)
			a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(p + j), _mm512_loadu_si512(u + j));
		out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(a, b));
	}
}

T256 static void dot8_avx2(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, int32_t *out)
{
	for (uint32_t r = 0; r < n; r++) {
		const uint8_t *p = rows[r];
		__m256i a = _mm256_setzero_si256(), b = a;
		for (uint32_t j = 0; j < len; j += 32) {
			__m256i x0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + j)));
			__m256i x1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + j + 16)));
			__m256i u0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(u + j)));
			__m256i u1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(u + j + 16)));
			a = _mm256_add_epi32(a, _mm256_madd_epi16(x0, u0));
			b = _mm256_add_epi32(b, _mm256_madd_epi16(x1, u1));
		}
		__m256i s = _mm256_add_epi32(a, b);
		__m128i x = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
		x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
		x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1)));
		out[r] = _mm_cvtsi128_si32(x);
	}
}

/* The reference. */
static void dot8_generic(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, int32_t *out)
{
	for (uint32_t r = 0; r < n; r++) {
		int32_t acc = 0;
		for (uint32_t j = 0; j < len; j++)
			acc += (int32_t)rows[r][j] * u[j];
		out[r] = acc;
	}
}

/* Batched int8 kernels for rk_topk_batch's first pass: out[g × n + r] =
 * sc[r] × (Σ_j rows[r][j] × u[g × len + j] - corr[g]) for the G8 users g of
 * u (len bytes each): the integers dot8 gives for each user alone, scaled
 * as scan() scales them (the same float operations, so the same bits). VNNI scores a tile of 4
 * users × 4 rows at once: each 64-byte load of a row or a user feeds four
 * dpbusd instead of one, so a batch is bound by arithmetic rather than by
 * loads (a single query's scan is bound by memory: dot8 above), and the
 * 16 sums are reduced together, a transpose of adds, not one by one. */
#define G8 4

/* Lane i of the result: the sum of the 16 lanes of the i-th argument. */
#define ADD_LO_HI(LO, HI, X, Y) _mm512_add_epi32(LO(X, Y), HI(X, Y))
#define PAIR32(X, Y) ADD_LO_HI(_mm512_unpacklo_epi32, _mm512_unpackhi_epi32, X, Y)
#define PAIR64(X, Y) ADD_LO_HI(_mm512_unpacklo_epi64, _mm512_unpackhi_epi64, X, Y)
#define EVEN128(X, Y) _mm512_shuffle_i32x4(X, Y, _MM_SHUFFLE(2, 0, 2, 0))
#define ODD128(X, Y) _mm512_shuffle_i32x4(X, Y, _MM_SHUFFLE(3, 1, 3, 1))
#define PAIR128(X, Y) ADD_LO_HI(EVEN128, ODD128, X, Y)

TVNNI static inline __m512i sum16(__m512i a0, __m512i a1, __m512i a2, __m512i a3, __m512i a4, __m512i a5,
				  __m512i a6, __m512i a7, __m512i a8, __m512i a9, __m512i a10, __m512i a11,
				  __m512i a12, __m512i a13, __m512i a14, __m512i a15)
{
	__m512i b0 = PAIR64(PAIR32(a0, a1), PAIR32(a2, a3)), b1 = PAIR64(PAIR32(a4, a5), PAIR32(a6, a7));
	__m512i b2 = PAIR64(PAIR32(a8, a9), PAIR32(a10, a11)), b3 = PAIR64(PAIR32(a12, a13), PAIR32(a14, a15));
	return PAIR128(PAIR128(b0, b1), PAIR128(b2, b3));
}

/* The 16 accumulators are named, not an array: an array indexed in a loop
 * measured living on the stack (a load and a store around every dpbusd). */
#define DP4(A0, A1, A2, A3, Y) do { \
	__m512i y_ = (Y); \
	A0 = _mm512_dpbusd_epi32(A0, x0, y_); \
	A1 = _mm512_dpbusd_epi32(A1, x1, y_); \
	A2 = _mm512_dpbusd_epi32(A2, x2, y_); \
	A3 = _mm512_dpbusd_epi32(A3, x3, y_); \
} while (0)

TVNNI static void dot8x_vnni(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n,
			     const int32_t *corr, const float *sc, float *out)
{
	float t[16];
	const __m512i cv = _mm512_set_epi32(corr[3], corr[3], corr[3], corr[3], corr[2], corr[2], corr[2], corr[2],
					    corr[1], corr[1], corr[1], corr[1], corr[0], corr[0], corr[0], corr[0]);
	const int8_t *u0 = u, *u1 = u + len, *u2 = u + 2 * (size_t)len, *u3 = u + 3 * (size_t)len;
	for (uint32_t r0 = 0; r0 < n; r0 += 4) {
		/* A short last tile repeats its last row; those sums are dropped. */
		uint32_t nr = n - r0 < 4 ? n - r0 : 4;
		const uint8_t *p0 = rows[r0], *p1 = rows[r0 + (nr > 1)], *p2 = rows[r0 + (nr > 2 ? 2 : nr - 1)];
		const uint8_t *p3 = rows[r0 + nr - 1];
		__m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
		__m512i a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
		for (uint32_t j = 0; j < len; j += 64) {
			__m512i x0 = _mm512_loadu_si512(p0 + j), x1 = _mm512_loadu_si512(p1 + j);
			__m512i x2 = _mm512_loadu_si512(p2 + j), x3 = _mm512_loadu_si512(p3 + j);
			DP4(a0, a1, a2, a3, _mm512_loadu_si512(u0 + j));
			DP4(a4, a5, a6, a7, _mm512_loadu_si512(u1 + j));
			DP4(a8, a9, a10, a11, _mm512_loadu_si512(u2 + j));
			DP4(a12, a13, a14, a15, _mm512_loadu_si512(u3 + j));
		}
		__m512i d = _mm512_sub_epi32(sum16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15),
					     cv);
		__m128 s4 = nr == 4 ? _mm_loadu_ps(sc + r0) : _mm_setr_ps(sc[r0], sc[r0 + (nr > 1)],
									 sc[r0 + (nr > 2 ? 2 : nr - 1)], sc[r0 + nr - 1]);
		__m512 f = _mm512_mul_ps(_mm512_broadcast_f32x4(s4), _mm512_cvtepi32_ps(d));
		if (nr == 4) {
			_mm_storeu_ps(out + r0, _mm512_castps512_ps128(f));
			_mm_storeu_ps(out + n + r0, _mm512_extractf32x4_ps(f, 1));
			_mm_storeu_ps(out + 2 * (size_t)n + r0, _mm512_extractf32x4_ps(f, 2));
			_mm_storeu_ps(out + 3 * (size_t)n + r0, _mm512_extractf32x4_ps(f, 3));
			continue;
		}
		_mm512_storeu_ps(t, f);
		for (int g = 0; g < G8; g++)
			for (uint32_t r = 0; r < nr; r++)
				out[(size_t)g * n + r0 + r] = t[4 * g + r];
	}
}

/* The other kernels: dot8 once per user (n <= BLK). */
#define DOT8X(DOT8, NAME) \
static void NAME(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, const int32_t *corr, \
		 const float *sc, float *out) \
{ \
	int32_t raw[BLK]; \
	for (int g = 0; g < G8; g++) { \
		DOT8(u + (size_t)g * len, len, rows, n, raw); \
		for (uint32_t r = 0; r < n; r++) \
			out[(size_t)g * n + r] = sc[r] * (float)(raw[r] - corr[g]); \
	} \
}

DOT8X(dot8_avx2, dot8x_avx2)
DOT8X(dot8_generic, dot8x_generic)

/* int4 kernels: out[r] = Σ_b lo(rows[r][b]) × u[b] + hi(rows[r][b]) ×
 * u[len4 + b] over the len bytes of a row (a multiple of 32), lo and hi
 * its two nibbles (0 .. 15) and u the user laid out to match them
 * (quantize_user4: u[b] for the low nibbles, u[len4 + b] for the high
 * ones, len4 = len rounded up to 64, zero beyond len). Exact int32, the
 * same from every kernel: |sum| <= 15 × 127 × 2^17 < 2^31. A nibble times
 * a signed byte fits int16 even in pairs (maddubs cannot saturate), so
 * AVX2 needs no widening; VNNI takes 64 bytes, 128 nibbles, per pair of
 * instructions, the last 32 of an odd row length by a masked load. */
TVNNI static void dot4_vnni(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, int32_t *out)
{
	const __m512i m4 = _mm512_set1_epi8(0x0f);
	uint32_t len4 = (len + 63) & ~63u;
	for (uint32_t r = 0; r < n; r++) {
		const uint8_t *p = rows[r];
		__m512i a = _mm512_setzero_si512(), b = a;
		for (uint32_t j = 0; j < len; j += 64) {
			__m512i x = len - j >= 64 ? _mm512_loadu_si512(p + j) : _mm512_maskz_loadu_epi8(0xffffffffu, p + j);
			a = _mm512_dpbusd_epi32(a, _mm512_and_si512(x, m4), _mm512_loadu_si512(u + j));
			b = _mm512_dpbusd_epi32(b, _mm512_and_si512(_mm512_srli_epi16(x, 4), m4),
						_mm512_loadu_si512(u + len4 + j));
		}
		out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(a, b));
	}
}

T256 static void dot4_avx2(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, int32_t *out)
{
	const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
	uint32_t len4 = (len + 63) & ~63u;
	for (uint32_t r = 0; r < n; r++) {
		const uint8_t *p = rows[r];
		__m256i a = _mm256_setzero_si256();
		for (uint32_t j = 0; j < len; j += 32) {
			__m256i x = _mm256_loadu_si256((const __m256i *)(p + j));
			__m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(x, m4),
							  _mm256_loadu_si256((const __m256i *)(u + j)));
			__m256i hi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x, 4), m4),
							  _mm256_loadu_si256((const __m256i *)(u + len4 + j)));
			a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_add_epi16(lo, hi), ones));
		}
		__m128i x = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
		x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
		x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1)));
		out[r] = _mm_cvtsi128_si32(x);
	}
}

/* The reference. */
static void dot4_generic(const int8_t *u, uint32_t len, const uint8_t *const *rows, uint32_t n, int32_t *out)
{
	uint32_t len4 = (len + 63) & ~63u;
	for (uint32_t r = 0; r < n; r++) {
		int32_t acc = 0;
		for (uint32_t j = 0; j < len; j++)
			acc += (int32_t)(rows[r][j] & 15) * u[j] + (int32_t)(rows[r][j] >> 4) * u[len4 + j];
		out[r] = acc;
	}
}

/* Threshold scans for selection: the first r' >= r with s[r'] > t, or n. */
T512 static uint32_t above_avx512(const float *s, uint32_t r, uint32_t n, float t)
{
	__m512 tv = _mm512_set1_ps(t);
	for (; r + 16 <= n; r += 16) {
		__mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + r), tv, _CMP_GT_OQ);
		if (m)
			return r + (uint32_t)__builtin_ctz(m);
	}
	for (; r < n; r++)
		if (s[r] > t)
			return r;
	return n;
}

T256 static uint32_t above_avx2(const float *s, uint32_t r, uint32_t n, float t)
{
	__m256 tv = _mm256_set1_ps(t);
	for (; r + 8 <= n; r += 8) {
		int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + r), tv, _CMP_GT_OQ));
		if (m)
			return r + (uint32_t)__builtin_ctz((unsigned)m);
	}
	for (; r < n; r++)
		if (s[r] > t)
			return r;
	return n;
}

static uint32_t above_generic(const float *s, uint32_t r, uint32_t n, float t)
{
	for (; r < n; r++)
		if (s[r] > t)
			return r;
	return n;
}

/* Portable kernels: eight partial sums, fixed order. */
static void dot32_generic(const float *u, uint32_t len, const float *const *rows, uint32_t n, float *out)
{
	for (uint32_t r = 0; r < n; r++) {
		float acc[8] = {0};
		for (uint32_t j = 0; j < len; j += 8)
			for (int t = 0; t < 8; t++)
				acc[t] += rows[r][j + t] * u[j + t];
		out[r] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
	}
}

/* dot32x4's portable form: dot32_generic for each of the four users. */
static void dot32x4_generic(const float *u, uint32_t len, const float *rows, uint32_t n, float *out,
			    size_t ostride)
{
	const float *ptr[BLK];
	for (uint32_t at = 0; at < n; at += BLK) {
		uint32_t nb = n - at < BLK ? n - at : BLK;
		for (uint32_t r = 0; r < nb; r++)
			ptr[r] = rows + (size_t)(at + r) * len;
		for (int x = 0; x < 4; x++)
			dot32_generic(u + (size_t)x * len, len, ptr, nb, out + (size_t)x * ostride + at);
	}
}

static void dot16_generic(const float *u, uint32_t len, const uint16_t *const *rows, uint32_t n, float *out)
{
	for (uint32_t r = 0; r < n; r++) {
		float acc[8] = {0};
		for (uint32_t j = 0; j < len; j += 8)
			for (int t = 0; t < 8; t++)
				acc[t] += rk_half_to_float(rows[r][j + t]) * u[j + t];
		out[r] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
	}
}

/* AVX-512 without VNNI (Skylake-X) scans int8 with the AVX2 kernel. */
static const struct {
	dot32_fn dot32;
	dot16_fn dot16;
	dot8_fn dot8;
	dot4_fn dot4;
	above_fn above;
	dot8x_fn dot8x;
	dot32x4_fn dot32x4;
} kernels[] = {
	[RK_ISA_GENERIC] = { dot32_generic, dot16_generic, dot8_generic, dot4_generic, above_generic,
			     dot8x_generic, dot32x4_generic },
	[RK_ISA_AVX2] = { dot32_avx2, dot16_avx2, dot8_avx2, dot4_avx2, above_avx2, dot8x_avx2,
			  dot32x4_avx2 },
	[RK_ISA_AVX512] = { dot32_avx512, dot16_avx512, dot8_avx2, dot4_avx2, above_avx512,
			    dot8x_avx2, dot32x4_avx512 },
	[RK_ISA_AVX512_VNNI] = { dot32_avx512, dot16_avx512, dot8_vnni, dot4_vnni, above_avx512,
				 dot8x_vnni, dot32x4_avx512 },
};

static atomic_int isa_cur = -1;

static int isa_supported(enum rk_isa isa)
{
	switch (isa) {
	case RK_ISA_GENERIC:
		return 1;
	case RK_ISA_AVX2:
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && rk_cpu_f16c();
	case RK_ISA_AVX512:
		return isa_supported(RK_ISA_AVX2) && __builtin_cpu_supports("avx512f");
	case RK_ISA_AVX512_VNNI:
		return isa_supported(RK_ISA_AVX512) && __builtin_cpu_supports("avx512bw") &&
		       __builtin_cpu_supports("avx512vnni");
	}
	return 0;
}

enum rk_isa rk_isa_active(void)
{
	int isa = atomic_load_explicit(&isa_cur, memory_order_relaxed);
	if (isa >= 0)
		return (enum rk_isa)isa;
	isa = RK_ISA_AVX512_VNNI;
	while (!isa_supported((enum rk_isa)isa))
		isa--;
	atomic_store_explicit(&isa_cur, isa, memory_order_relaxed);
	return (enum rk_isa)isa;
}

int rk_isa_set(enum rk_isa isa)
{
	if ((int)isa < RK_ISA_GENERIC || isa > RK_ISA_AVX512_VNNI)
		return VR_EINVAL;
	if (!isa_supported(isa))
		return VR_EUNSUPPORTED;
	atomic_store_explicit(&isa_cur, (int)isa, memory_order_relaxed);
	return 0;
}

const char *rk_isa_name(enum rk_isa isa)
{
	switch (isa) {
	case RK_ISA_GENERIC: return "generic";
	case RK_ISA_AVX2: return "avx2";
	case RK_ISA_AVX512: return "avx512";
	case RK_ISA_AVX512_VNNI: return "avx512-vnni";
	}
	return "unknown";
}

/* Scratch. */

/* The best cap hits offered so far, kept one of two ways. room 0: a
 * min-heap in h (the worst at the root), for small cap (the k of a
 * query). room > cap: a candidate set for the first pass's k × c, where a
 * heap's log(cap) sifts per entry cost a fifth of a 10 k-item query at c =
 * 32: entries are appended to h (room of them) while they beat t, the
 * worst kept score; a full buffer is cut back to the best cap (a
 * selection in tmp, room more hits) and t raised. Appends come in
 * ascending id order and a cut keeps that order, so the re-rank needs no
 * sort. Scores below t never enter, like those below a heap's root; NaN
 * never enters (first-pass scores are finite). */
struct heap {
	struct rk_hit *h;
	size_t n, cap;
	size_t room;
	float t;
	struct rk_hit *tmp;
};

struct excl {
	const uint32_t *p, *end;
};

struct rk_topk_ws {
	float *user;           /* padded user rows */
	size_t user_cap;
	int8_t *user8;         /* the user row quantised (int8 pass) */
	size_t user8_cap;
	int8_t *user4;         /* the same for the int4 pass (quantize_user4) */
	size_t user4_cap;
	uint32_t *ids;         /* sorted candidates, or re-rank ids */
	size_t ids_cap;
	struct rk_hit *pool;   /* approximate-pass heap */
	size_t pool_cap;
	float *scores;         /* exact batch users' heaps of a - b (batch_i8) */
	size_t scores_cap;
	struct heap *heaps;    /* per batch user */
	size_t heaps_cap;
	struct excl *excls;
	size_t excls_cap;
	struct rk_hit *parts;  /* the helpers' heaps of a split scan */
	size_t parts_cap;
	struct bnd *bnds;      /* per exact batch user (batch_i8) */
	size_t bnds_cap;
};

/* Makes *p hold at least need elements of elem bytes, 64-byte aligned. The
 * old contents are dropped: these are scratch buffers. */
static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	if (need < *cap * 2)
		need = *cap * 2;
	free(*p);
	*cap = 0;
	*p = aligned_alloc(64, (need * elem + 63) & ~(size_t)63);
	if (!*p)
		return VR_ENOMEM;
	*cap = need;
	return 0;
}

int rk_topk_ws_create(struct rk_topk_ws **out)
{
	*out = calloc(1, sizeof **out);
	return *out ? 0 : VR_ENOMEM;
}

void rk_topk_ws_destroy(struct rk_topk_ws *ws)
{
	if (!ws)
		return;
	free(ws->user);
	free(ws->user8);
	free(ws->user4);
	free(ws->ids);
	free(ws->pool);
	free(ws->scores);
	free(ws->heaps);
	free(ws->excls);
	free(ws->parts);
	free(ws->bnds);
	free(ws);
}

/* Selection. */

static inline int worse(struct rk_hit a, struct rk_hit b)
{
	return a.score < b.score || (a.score == b.score && a.item > b.item);
}

static void sift_down(struct rk_hit *h, size_t n, size_t i)
{
	struct rk_hit x = h[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && worse(h[c + 1], h[c]))
			c++;
		if (!worse(h[c], x))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = x;
}

static void heap_push(struct heap *hp, uint32_t item, float s)
{
	struct rk_hit x = { item, s != s ? -INFINITY : s };
	size_t i = hp->n++;
	while (i) {
		size_t p = (i - 1) / 2;
		if (!worse(x, hp->h[p]))
			break;
		hp->h[i] = hp->h[p];
		i = p;
	}
	hp->h[i] = x;
}

/* Best first. */
static void heap_sort(struct heap *hp)
{
	for (size_t e = hp->n; e > 1; e--) {
		struct rk_hit t = hp->h[0];
		hp->h[0] = hp->h[e - 1];
		hp->h[e - 1] = t;
		sift_down(hp->h, e - 1, 0);
	}
}

static inline int excluded(struct excl *e, uint32_t id)
{
	while (e->p < e->end && *e->p < id)
		e->p++;
	return e->p < e->end && *e->p == id;
}

/* Reorders a[0..n) so that a[k] is the (k+1)-th best (ids are distinct:
 * a strict order), and returns it. Hoare's selection, pivot a[k]. */
static struct rk_hit nth_best(struct rk_hit *a, size_t n, size_t k)
{
	ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, kk = (ptrdiff_t)k;
	while (lo < hi) {
		struct rk_hit x = a[kk];
		ptrdiff_t i = lo, j = hi;
		do {
			while (worse(x, a[i]))
				i++;
			while (worse(a[j], x))
				j--;
			if (i <= j) {
				struct rk_hit t = a[i];
				a[i++] = a[j];
				a[j--] = t;
			}
		} while (i <= j);
		if (j < kk)
			lo = i;
		if (kk < i)
			hi = j;
	}
	return a[k];
}

/* A score's key: unsigned, in the scores' order (-0 taken as +0, so equal
 * scores have equal keys). Sets hold no NaN: a NaN passes no compare. */
static inline uint32_t score_key(float f)
{
	uint32_t u;
	f += 0.0f;
	memcpy(&u, &f, sizeof u);
	return u & 0x80000000u ? ~u : u | 0x80000000u;
}

/* A candidate set's cut (struct heap): keeps its best cap hits in their
 * order and raises t to the worst of them.
 *
 * The cap-th best score is found by a radix select over the scores' keys,
 * a byte a round from the top (at most four rounds, each a histogram of
 * the keys still in play); then one pass keeps the hits above it and, of
 * those equal to it, the ones with the lowest ids. perf had the earlier
 * quickselect over (score, id) pairs at 20% of a 10 k-item int8 query
 * (about 38 cycles a hit: a mispredicted branch per compare). A tie that
 * straddles the cut (equal scores, some kept) falls back to it. */
static void set_cut(struct heap *hp)
{
	if (hp->n <= hp->cap)
		return;
	uint32_t *key = (uint32_t *)hp->tmp; /* tmp holds n hits: room for 2n keys */
	size_t n = hp->n, in_play = n, need = hp->cap;
	for (size_t i = 0; i < n; i++)
		key[i] = score_key(hp->h[i].score);
	uint32_t prefix = 0, pmask = 0;
	for (int shift = 24; shift >= 0; shift -= 8) {
		uint32_t cnt[256] = { 0 };
		for (size_t i = 0; i < in_play; i++)
			cnt[(key[i] >> shift) & 255u]++;
		uint32_t b = 255;
		while (cnt[b] < need)
			need -= cnt[b--];
		prefix |= b << shift;
		pmask |= 255u << shift;
		size_t w = 0;
		for (size_t i = 0; i < in_play; i++)
			if ((key[i] & pmask) == prefix)
				key[w++] = key[i];
		in_play = w;
	}
	/* prefix is the cap-th best key; in_play hits have it, need of them stay. */
	if (need < in_play) {
		memcpy(hp->tmp, hp->h, n * sizeof *hp->h);
		struct rk_hit x = nth_best(hp->tmp, n, hp->cap - 1);
		size_t w = 0;
		for (size_t i = 0; i < n; i++)
			if (!worse(hp->h[i], x))
				hp->h[w++] = hp->h[i];
		hp->n = w;
		hp->t = x.score;
		return;
	}
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t k = score_key(hp->h[i].score);
		if (k >= prefix) {
			if (k == prefix)
				hp->t = hp->h[i].score;
			hp->h[w++] = hp->h[i];
		}
	}
	hp->n = w;
}

/* Offers one hit whose id is above every id offered to hp before. */
static void offer(struct heap *hp, struct rk_hit x)
{
	if (hp->room) {
		if (x.score > hp->t) {
			hp->h[hp->n++] = x;
			if (hp->n == hp->room)
				set_cut(hp);
		}
	} else if (hp->n < hp->cap) {
		heap_push(hp, x.item, x.score);
	} else if (worse(hp->h[0], x)) {
		hp->h[0] = x;
		sift_down(hp->h, hp->n, 0);
	}
}

/* Offers n scores, of items ids[r] (or base + r when ids is NULL), to hp.
 * Ids rise across calls for the same heap (scans go up the matrix, id lists
 * are sorted first), so a score equal to the root's never enters: its id
 * is the higher. Once the heap is full, only scores above the root are
 * looked at, found by a vector compare. */
static void select_scores(struct heap *hp, const float *s, uint32_t n, uint32_t base, const uint32_t *ids,
			  struct excl *ex, above_fn above)
{
	uint32_t r = 0;
	if (hp->room) {
		for (; (r = above(s, r, n, hp->t)) < n; r++) {
			uint32_t id = ids ? ids[r] : base + r;
			if (excluded(ex, id))
				continue;
			hp->h[hp->n++] = (struct rk_hit){ id, s[r] };
			if (hp->n == hp->room)
				set_cut(hp);
		}
		return;
	}
	for (; r < n && hp->n < hp->cap; r++) {
		uint32_t id = ids ? ids[r] : base + r;
		if (!excluded(ex, id))
			heap_push(hp, id, s[r]);
	}
	if (hp->n < hp->cap)
		return;
	for (; (r = above(s, r, n, hp->h[0].score)) < n; r++) {
		uint32_t id = ids ? ids[r] : base + r;
		if (excluded(ex, id))
			continue;
		hp->h[0] = (struct rk_hit){ id, s[r] };
		sift_down(hp->h, hp->n, 0);
	}
}

/* Scans. */

static int sorted(const uint32_t *a, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (a[i] < a[i - 1])
			return 0;
	return 1;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* Copies user (dim floats) into dst (stride floats, zero padded); 0 or
 * VR_EINVAL when a value is not finite. */
static int pad_user(float *dst, const float *user, uint32_t dim, uint32_t stride)
{
	for (uint32_t j = 0; j < dim; j++) {
		if (!isfinite(user[j]))
			return VR_EINVAL;
		dst[j] = user[j];
	}
	memset(dst + dim, 0, (stride - dim) * sizeof(float));
	return 0;
}

/* The padded user row u (stride floats) as int8 into dst (stride8 bytes,
 * zero padded) with the scale max |u_j| / 127, for the int8 pass. Returns
 * 128 × Σ dst: what the rows' offset of 128 adds to every integer dot
 * product, so (dot - correction) is Σ_j q_j × dst_j. The user's scale is
 * left out of the scores (the same positive factor for every item). */
static int32_t quantize_user(int8_t *dst, const float *u, uint32_t stride, uint32_t stride8)
{
	float m = 0;
	int32_t sum = 0;
	for (uint32_t j = 0; j < stride; j++)
		m = fabsf(u[j]) > m ? fabsf(u[j]) : m;
	float inv = m > 0 ? 127.0f / m : 0;
	for (uint32_t j = 0; j < stride; j++) {
		long q = lrintf(u[j] * inv);
		dst[j] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
		sum += dst[j];
	}
	memset(dst + stride, 0, stride8 - stride);
	return 128 * sum;
}

/* The padded user row u (dim floats used) for the int4 pass: columns 1 ..
 * dim - 1 as int8, q_e = round(u_{e+1} × 127 / m), m = max_{j >= 1} |u_j|,
 * laid out as the dot4 kernels read them (2 × len4 bytes, len4 = stride4
 * rounded up to 64: element e of the row's nibble order at byte 32 (e /
 * 64) + e % 32, in the first half for e % 64 < 32, else the second; zero
 * elsewhere). Returns the correction 8 × Σ q (the nibbles' offset) in
 * *corr and the user's scale m / 127. */
static float quantize_user4(int8_t *dst, const float *u, uint32_t dim, uint32_t stride4, int32_t *corr)
{
	uint32_t len4 = (stride4 + 63) & ~63u;
	float m = 0;
	int32_t sum = 0;
	for (uint32_t j = 1; j < dim; j++)
		m = fabsf(u[j]) > m ? fabsf(u[j]) : m;
	float inv = m > 0 ? 127.0f / m : 0;
	memset(dst, 0, 2 * (size_t)len4);
	for (uint32_t j = 1; j < dim; j++) {
		uint32_t e = j - 1, b = 32 * (e / 64) + e % 32;
		long q = lrintf(u[j] * inv);
		int8_t x = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
		dst[e % 64 < 32 ? b : len4 + b] = x;
		sum += x;
	}
	*corr = 8 * sum;
	return m / 127.0f;
}

/* The second selection of a scan (rk_topk_marked): the marked items. */
struct marked {
	struct heap hp;
	struct excl ex;
	const uint8_t *mark;
	uint32_t n_mark;
	const uint32_t *list; /* ascending marked ids below n_mark, or NULL */
	uint32_t n_list, pos; /* pos: the first not yet offered */
};

/* Offers one marked item's score to m->hp (ids rising across calls). */
static inline void offer_marked(struct marked *m, uint32_t id, float score)
{
	struct heap *hp = &m->hp;
	if (hp->n < hp->cap) {
		if (!excluded(&m->ex, id))
			heap_push(hp, id, score);
	} else if (score > hp->h[0].score && !excluded(&m->ex, id)) {
		hp->h[0] = (struct rk_hit){ id, score };
		sift_down(hp->h, hp->n, 0);
	}
}

/* select_marked over a block of the whole catalogue (ids base .. base + n)
 * by the list: its ids in the block, then every id >= n_mark. */
static void select_listed(struct marked *m, const float *s, uint32_t n, uint32_t base)
{
	uint32_t end = base + n;
	for (; m->pos < m->n_list && m->list[m->pos] < end; m->pos++)
		offer_marked(m, m->list[m->pos], s[m->list[m->pos] - base]);
	for (uint32_t id = base > m->n_mark ? base : m->n_mark; id < end; id++)
		offer_marked(m, id, s[id - base]);
}

/* Offers the marked ones of n scores (ids as select_scores) to m->hp; once
 * it is full, only scores above its root are looked at (the vector
 * compare), so a scan pays little for it. */
static void select_marked(struct marked *m, const float *s, uint32_t n, uint32_t base, const uint32_t *ids,
			  above_fn above)
{
	struct heap *hp = &m->hp;
	uint32_t r = 0;
	for (; r < n && hp->n < hp->cap; r++) {
		uint32_t id = ids ? ids[r] : base + r;
		if ((id >= m->n_mark || m->mark[id]) && !excluded(&m->ex, id))
			heap_push(hp, id, s[r]);
	}
	if (hp->n < hp->cap)
		return;
	for (; (r = above(s, r, n, hp->h[0].score)) < n; r++) {
		uint32_t id = ids ? ids[r] : base + r;
		if ((id < m->n_mark && !m->mark[id]) || excluded(&m->ex, id))
			continue;
		hp->h[0] = (struct rk_hit){ id, s[r] };
		sift_down(hp->h, hp->n, 0);
	}
}

/* Which copy of the rows a scan reads. */
enum pass { PASS_F32, PASS_F16, PASS_I8, PASS_I4 };

/* The user as the kernels take it: the padded fp32 row, and for the int8
 * and int4 passes its quantised copies and corrections (quantize_user,
 * quantize_user4). */
struct quser {
	const float *f;
	const int8_t *i8;
	int32_t corr;
	const int8_t *i4;      /* quantize_user4's layout */
	int32_t corr4;
	float scale4;          /* the int4 user's scale */
};

/* One pass over ids lo .. hi - 1 of the view (ids NULL) or over ascending
 * ids[lo .. hi), scoring from the pass's copy of the rows into hp (and the
 * marked items into mk, when not NULL). int8 scores are scale × (dot -
 * correction): the exact integer dot of the quantised row and user, in
 * the row's units. int4 scores are x_0 u_0 + s4 × s_u × (dot - correction):
 * the exact bias term plus the factors' integer dot in real units (the
 * user's scale cannot be left out beside the exact term). */
static void scan(const struct rk_index_view *v, const struct quser *u, enum pass pass, const uint32_t *ids,
		 size_t lo, size_t hi, struct heap *hp, struct excl *ex, struct marked *mk)
{
	const float *p32[BLK];
	const uint16_t *p16[BLK];
	const uint8_t *p8[BLK];
	float s[BLK], sc[BLK], c0[BLK];
	int32_t raw[BLK];
	enum rk_isa isa = rk_isa_active();
	uint32_t mask = (1u << v->chunk_shift) - 1u;

	for (size_t at = lo; at < hi; at += BLK) {
		uint32_t nb = (uint32_t)(hi - at < BLK ? hi - at : BLK);
		const float *scp = sc;
		if (!ids && pass != PASS_I4 && at >> v->chunk_shift == (at + nb - 1) >> v->chunk_shift) {
			/* A run of one chunk's rows (a whole-catalogue scan): the
			 * rows a stride apart, the int8 scales in place. */
			uint32_t c = (uint32_t)(at >> v->chunk_shift), off = (uint32_t)at & mask;
			for (uint32_t r = 0; r < nb; r++) {
				size_t o = (size_t)off + r;
				if (pass == PASS_I8)
					p8[r] = v->chunk_i8[c] + o * v->stride8;
				else if (pass == PASS_F16)
					p16[r] = v->chunk_f16[c] + o * v->stride;
				else
					p32[r] = v->chunk_f32[c] + o * v->stride;
			}
			if (pass == PASS_I8)
				scp = v->chunk_scale[c] + off;
		} else for (uint32_t r = 0; r < nb; r++) {
			uint32_t id = ids ? ids[at + r] : (uint32_t)(at + r), c = id >> v->chunk_shift;
			if (pass == PASS_I8) {
				p8[r] = v->chunk_i8[c] + (size_t)(id & mask) * v->stride8;
				sc[r] = v->chunk_scale[c][id & mask];
			} else if (pass == PASS_I4) {
				p8[r] = v->chunk_i4[c] + (size_t)(id & mask) * v->stride4;
				c0[r] = v->chunk_i4s[c][2 * (id & mask)];
				sc[r] = v->chunk_i4s[c][2 * (id & mask) + 1];
			} else if (pass == PASS_F16) {
				p16[r] = v->chunk_f16[c] + (size_t)(id & mask) * v->stride;
			} else {
				p32[r] = v->chunk_f32[c] + (size_t)(id & mask) * v->stride;
			}
		}
		if (pass == PASS_I8) {
			kernels[isa].dot8(u->i8, v->stride8, p8, nb, raw);
			for (uint32_t r = 0; r < nb; r++)
				s[r] = scp[r] * (float)(raw[r] - u->corr);
		} else if (pass == PASS_I4) {
			kernels[isa].dot4(u->i4, v->stride4, p8, nb, raw);
			for (uint32_t r = 0; r < nb; r++)
				s[r] = c0[r] * u->f[0] + sc[r] * u->scale4 * (float)(raw[r] - u->corr4);
		} else if (pass == PASS_F16) {
			kernels[isa].dot16(u->f, v->stride, p16, nb, s);
		} else {
			kernels[isa].dot32(u->f, v->stride, p32, nb, s);
		}
		select_scores(hp, s, nb, (uint32_t)at, ids ? ids + at : NULL, ex, kernels[isa].above);
		if (mk && mk->list && !ids)
			select_listed(mk, s, nb, (uint32_t)at);
		else if (mk)
			select_marked(mk, s, nb, (uint32_t)at, ids ? ids + at : NULL, kernels[isa].above);
	}
}

/* ---- split scans ----------------------------------------------------------
 *
 * DESIGN
 * A scan of the whole catalogue may be split into up to 1 + helpers
 * contiguous ranges of ids (rk_topk_req.threads): the calling thread scans
 * the first, the pool's helper threads the others, each into a heap of its
 * own, and the caller merges those into its heap. The pool is one mutex,
 * one condition variable the idle helpers wait on, and a bounded queue of
 * parts. A caller never waits for a helper to start: after its own range it
 * takes back every part of its still queued (clearing its queue slot, which
 * a helper then skips), and then waits only for the parts a helper is
 * running. So a split costs at most one range's time plus a wake-up even
 * when every helper is busy with other queries, and the pool needs no more
 * threads than cores. The parts live on the caller's stack and in its ws;
 * a helper touches a part only between taking it and marking it done, both
 * under the mutex. rk_scan_pool_destroy sets stop and joins the helpers;
 * no scan may be in flight then. */

#define POOL_QUEUE 64
#define MAX_PARTS 16
/* The least rows worth a part: at 10 k items (two parts of 5 k) a split
 * measured slower than one thread here (int8 c = 2: 0.123 vs 0.106 ms,
 * exact 0.284 vs 0.272 ms, medians of 61), the wake-up not repaid. */
#define SPLIT_MIN_ROWS 16384

struct part;

struct rk_scan_pool {
	pthread_mutex_t mu;
	pthread_cond_t work;       /* helpers wait here for a part */
	struct part *queue[POOL_QUEUE];
	unsigned head, count;      /* ring of queued parts */
	int stop;
	int n_helpers;
	pthread_t *helpers;
};

/* One range of a split scan. */
struct part {
	const struct rk_index_view *v;
	const struct quser *u;
	enum pass pass;
	size_t lo, hi;
	struct heap hp;
	struct excl ex;
	int state;                 /* 0 queued, 1 taken, 2 done (under mu); 3 never
				    * queued (the caller's) */
	int *pending;              /* the caller's count of parts not done */
	pthread_cond_t *done;      /* signalled when *pending reaches 0 */
};

static void *helper_main(void *arg)
{
	struct rk_scan_pool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && !p->count)
			pthread_cond_wait(&p->work, &p->mu);
		if (p->stop)
			break;
		struct part *pt = p->queue[p->head];
		p->head = (p->head + 1) % POOL_QUEUE;
		p->count--;
		if (!pt)
			continue; /* its caller took it back */
		pt->state = 1;
		pthread_mutex_unlock(&p->mu);
		scan(pt->v, pt->u, pt->pass, NULL, pt->lo, pt->hi, &pt->hp, &pt->ex, NULL);
		pthread_mutex_lock(&p->mu);
		pt->state = 2;
		if (--*pt->pending == 0)
			pthread_cond_signal(pt->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int rk_scan_pool_create(int helpers, struct rk_scan_pool **out)
{
	*out = NULL;
	if (helpers < 0 || helpers > MAX_PARTS - 1)
		return VR_EINVAL;
	struct rk_scan_pool *p = calloc(1, sizeof *p);
	if (!p || !(p->helpers = calloc((size_t)helpers + 1, sizeof *p->helpers))) {
		free(p);
		return VR_ENOMEM;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	for (; p->n_helpers < helpers; p->n_helpers++)
		if (pthread_create(&p->helpers[p->n_helpers], NULL, helper_main, p)) {
			rk_scan_pool_destroy(p);
			return VR_ENOMEM;
		}
	*out = p;
	return 0;
}

void rk_scan_pool_destroy(struct rk_scan_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->n_helpers; i++)
		pthread_join(p->helpers[i], NULL);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->mu);
	free(p->helpers);
	free(p);
}

int rk_scan_pool_helpers(const struct rk_scan_pool *p)
{
	return p ? p->n_helpers : 0;
}

/* Scans the whole view (no candidate list, no marked items) into hp, split
 * into n_parts ranges (the pool's DESIGN). Returns 0 or VR_ENOMEM. */
static int scan_split(struct rk_scan_pool *p, int n_parts, const struct rk_index_view *v, const struct quser *u,
		      enum pass pass, struct heap *hp, const struct excl *ex, struct rk_topk_ws *ws)
{
	struct part parts[MAX_PARTS];
	pthread_cond_t done;
	int pending = 0, rc;
	/* Ranges of whole blocks, so a split scan's scores are a plain scan's. */
	size_t blocks = (v->n + BLK - 1) / BLK, per = (blocks + (size_t)n_parts - 1) / (size_t)n_parts;

	/* Each helper's heap, or candidate set and its cut's scratch. */
	size_t each = hp->room ? 2 * hp->room : hp->cap;
	if ((rc = grow((void **)&ws->parts, &ws->parts_cap, (size_t)(n_parts - 1) * each, sizeof(struct rk_hit))))
		return rc;
	pthread_cond_init(&done, NULL);
	pthread_mutex_lock(&p->mu);
	for (int i = 1; i < n_parts; i++) {
		size_t lo = (size_t)i * per * BLK, hi = lo + per * BLK;
		parts[i] = (struct part){ v, u, pass, lo < v->n ? lo : v->n, hi < v->n ? hi : v->n,
					  { ws->parts + (size_t)(i - 1) * each, 0, hp->cap, hp->room, -INFINITY,
					    ws->parts + (size_t)(i - 1) * each + hp->room },
					  *ex, 0, &pending, &done };
		if (p->count < POOL_QUEUE) {
			p->queue[(p->head + p->count) % POOL_QUEUE] = &parts[i];
			p->count++;
			pending++;
		} else {
			parts[i].state = 3; /* the queue is full: the caller scans it */
		}
	}
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->mu);

	struct excl own = *ex;
	scan(v, u, pass, NULL, 0, per * BLK < v->n ? per * BLK : v->n, hp, &own, NULL);
	for (int i = 1; i < n_parts; i++) {
		int mine = parts[i].state == 3; /* never queued: only the caller sees it */
		pthread_mutex_lock(&p->mu);
		if (parts[i].state == 0) { /* no helper took it: take it back */
			for (unsigned q = 0; q < p->count; q++)
				if (p->queue[(p->head + q) % POOL_QUEUE] == &parts[i])
					p->queue[(p->head + q) % POOL_QUEUE] = NULL;
			parts[i].state = 1;
			pending--;
			mine = 1;
		}
		pthread_mutex_unlock(&p->mu);
		if (mine)
			scan(v, u, pass, NULL, parts[i].lo, parts[i].hi, &parts[i].hp, &parts[i].ex, NULL);
	}
	pthread_mutex_lock(&p->mu);
	while (pending)
		pthread_cond_wait(&done, &p->mu);
	pthread_mutex_unlock(&p->mu);
	pthread_cond_destroy(&done);
	/* Merge, in the parts' order: a candidate set's parts hold ascending
	 * ids above the caller's range (offer's rule); a heap takes any order,
	 * ties going by id (worse). */
	for (int i = 1; i < n_parts; i++) {
		set_cut(&parts[i].hp);
		for (size_t j = 0; j < parts[i].hp.n; j++)
			offer(hp, parts[i].hp.h[j]);
	}
	return 0;
}

int rk_topk(const struct rk_index_view *v, const struct rk_topk_req *req, struct rk_topk_ws *ws,
	    struct rk_hit *out, size_t out_cap, size_t *n_out)
{
	return rk_topk_marked(v, req, NULL, ws, out, out_cap, n_out);
}

int rk_topk_marked(const struct rk_index_view *v, const struct rk_topk_req *req, struct rk_topk_mark *mark,
		   struct rk_topk_ws *ws, struct rk_hit *out, size_t out_cap, size_t *n_out)
{
	int rc = 0;
	const uint32_t *ids = NULL;
	size_t n_ids = 0, bound = req->cand && req->n_cand < v->n ? req->n_cand : v->n;
	struct heap hp = { out, 0, 0, 0, 0, NULL };
	struct excl ex = { req->exclude, req->exclude ? req->exclude + req->n_exclude : NULL };

	struct marked mk = { { mark ? mark->out : NULL, 0, 0, 0, 0, NULL }, ex, mark ? mark->mark : NULL,
			     mark ? mark->n_mark : 0, mark ? mark->list : NULL, mark ? mark->n_list : 0, 0 };

	*n_out = 0;
	if (mark)
		mark->n_out = 0;
	if (req->k <= 0 || req->approx < 0 || (req->n_exclude && !req->exclude) ||
	    !sorted(req->exclude, req->n_exclude) || out_cap < ((size_t)req->k < bound ? (size_t)req->k : bound) ||
	    (mark && (mark->k <= 0 || req->approx || !mark->out || (mark->n_mark && !mark->mark) ||
		      (mark->n_list && !mark->list)))) {
		rc = VR_EINVAL;
		goto leave;
	}
	if ((rc = grow((void **)&ws->user, &ws->user_cap, v->stride, sizeof(float))))
		goto leave;
	if ((rc = pad_user(ws->user, req->user, v->dim, v->stride)))
		goto leave;
	struct quser qu = { ws->user, NULL, 0, NULL, 0, 0 };
	enum pass first = req->half ? PASS_F16 : req->nibble ? PASS_I4 : PASS_I8;
	if (req->approx && first == PASS_I4) {
		if ((rc = grow((void **)&ws->user4, &ws->user4_cap, 2 * (size_t)((v->stride4 + 63) & ~63u), 1)))
			goto leave;
		qu.scale4 = quantize_user4(ws->user4, ws->user, v->dim, v->stride4, &qu.corr4);
		qu.i4 = ws->user4;
	} else if (req->approx && first == PASS_I8) {
		if ((rc = grow((void **)&ws->user8, &ws->user8_cap, v->stride8, 1)))
			goto leave;
		qu.corr = quantize_user(ws->user8, ws->user, v->stride, v->stride8);
		qu.i8 = ws->user8;
	}
	if (req->cand) {
		if ((rc = grow((void **)&ws->ids, &ws->ids_cap, req->n_cand ? req->n_cand : 1, sizeof(uint32_t))))
			goto leave;
		for (size_t i = 0; i < req->n_cand; i++) {
			if (req->cand[i] >= v->n) {
				rc = VR_EINVAL;
				goto leave;
			}
			ws->ids[i] = req->cand[i];
		}
		/* A list built in order (cold slots' cold items) skips the sort. */
		if (!sorted(ws->ids, req->n_cand))
			qsort(ws->ids, req->n_cand, sizeof(uint32_t), cmp_u32);
		for (size_t i = 0; i < req->n_cand; i++)
			if (n_ids == 0 || ws->ids[i] != ws->ids[n_ids - 1])
				ws->ids[n_ids++] = ws->ids[i];
		ids = ws->ids;
		bound = n_ids;
	}
	hp.cap = (size_t)req->k < bound ? (size_t)req->k : bound;
	mk.hp.cap = mark ? ((size_t)mark->k < bound ? (size_t)mark->k : bound) : 0;
	if (hp.cap == 0)
		goto leave;

	/* Parts of a split scan: whole-catalogue scans without marked items. */
	int n_parts = req->pool && !ids && !mk.hp.cap ? req->threads : 1;
	if (n_parts > 1 + rk_scan_pool_helpers(req->pool))
		n_parts = 1 + rk_scan_pool_helpers(req->pool);
	if (n_parts > (int)(v->n / SPLIT_MIN_ROWS))
		n_parts = (int)(v->n / SPLIT_MIN_ROWS);
	if (req->approx == 0 || (size_t)req->approx * hp.cap >= bound) {
		if (n_parts > 1)
			rc = scan_split(req->pool, n_parts, v, &qu, PASS_F32, &hp, &ex, ws);
		else
			scan(v, &qu, PASS_F32, ids, 0, ids ? n_ids : v->n, &hp, &ex, mk.hp.cap ? &mk : NULL);
		if (rc)
			goto leave;
		if (mk.hp.cap) {
			heap_sort(&mk.hp);
			mark->n_out = mk.hp.n;
		}
	} else {
		/* The candidates: a set (struct heap) with room for twice them. */
		size_t m = (size_t)req->approx * hp.cap;
		struct heap pool = { NULL, 0, m, 2 * m, -INFINITY, NULL };
		if ((rc = grow((void **)&ws->pool, &ws->pool_cap, 2 * pool.room, sizeof(struct rk_hit))))
			goto leave;
		pool.h = ws->pool;
		pool.tmp = ws->pool + pool.room;
		if (n_parts > 1)
			rc = scan_split(req->pool, n_parts, v, &qu, first, &pool, &ex, ws);
		else
			scan(v, &qu, first, ids, 0, ids ? n_ids : v->n, &pool, &ex, NULL);
		if (rc)
			goto leave;
		set_cut(&pool);
		/* Re-rank: exact scores of the candidates, in the ascending ids
		 * select_scores wants (the set keeps them so). */
		if ((rc = grow((void **)&ws->ids, &ws->ids_cap, pool.n ? pool.n : 1, sizeof(uint32_t))))
			goto leave;
		for (size_t i = 0; i < pool.n; i++)
			ws->ids[i] = pool.h[i].item;
		struct excl none = { NULL, NULL };
		scan(v, &qu, PASS_F32, ws->ids, 0, pool.n, &hp, &none, NULL);
	}
	heap_sort(&hp);
	*n_out = hp.n;
leave:
	return rc;
}

/* ---- batched top-k by the int8 rows ----------------------------------------
 *
 * rk_topk_batch scores blocks of BLK items for many users at once from the
 * int8 rows (dot8x: G8 users a call while the block's rows stay in cache),
 * each user's int8 scores a[r] in units of the user's scale s_u (as scan()
 * gives them), then re-ranks each user's candidates with the exact scan
 * kernel: the same bits as rk_topk.
 *
 * With approx = c the candidates are rk_topk's: the best kk × c by a.
 *
 * Exact (approx 0) the candidates are every item whose exact score may
 * reach the k-th best, by a bound on the int8 error. A row x is s_i q_i + e
 * (index.h), the user u = s_u q + d (s_u = max |u_j| / 127, q its int8
 * values), so x·u - s_u a = s_i q_i·d + e·u, within s_i ||q_i|| ||d|| +
 * ||e|| ||u|| (Cauchy-Schwarz, 2-norms) of the real product; the scan
 * kernel's fp32 sum is within stride × 2^-24 × Σ |x_j u_j| <= stride ×
 * 2^-24 ||x|| ||u|| of that. The index keeps per row p_i = s_i ||q_i|| and
 * r_i = ||e|| + 1.01 × stride × 2^-24 ||x|| (chunk_i8b, rounded up); per
 * user du = ||d|| / s_u and uu = ||u|| / s_u (in double, rounded up), so
 * b = p_i du + r_i uu + 1e-6 |a| (the last for the rounding of a) bounds
 * the gap and the exact score lies in [a - b, a + b] (units of s_u). On
 * bench_serve's rows this bound is half the earlier one by absolute
 * values (|q_i|_1 / 2 + |q|_1 / 2 + D / 4 in units of s_u s_i), and so are
 * the candidates (110 against 207 a user at 10 k items, a simulation). The k-th best exact score is at least
 * LB, the k-th largest a - b; an item with a + b < LB cannot be among the
 * k best, every other one is a candidate. LB rises during the pass (a heap
 * of the k largest a - b), so few items enter. A user whose candidates
 * outgrow their room even after dropping those under LB (scores too close
 * to separate: ties, a near-zero user) is ranked by rk_topk's scan. */

/* A batch user's state: the heap (min at 0) of the k largest a - b
 * (exact) or of the c × k largest a (approx). */
struct bnd {
	float *lb;
	uint32_t n_lb;
	int over;       /* candidates overflowed: ranked by a scan */
};

static void lb_sift(float *h, uint32_t n, uint32_t i)
{
	float x = h[i];
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && h[c + 1] < h[c])
			c++;
		if (!(h[c] < x))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = x;
}

static void lb_offer(struct bnd *b, uint32_t kk, float lo)
{
	if (b->n_lb < kk) {
		uint32_t i = b->n_lb++;
		while (i && b->lb[(i - 1) / 2] > lo) {
			b->lb[i] = b->lb[(i - 1) / 2];
			i = (i - 1) / 2;
		}
		b->lb[i] = lo;
	} else if (lo > b->lb[0]) {
		b->lb[0] = lo;
		lb_sift(b->lb, b->n_lb, 0);
	}
}

/* b[r] of a block for a user: p[r] × du + e[r] × uu (the error bound,
 * see above) + 1e-6 |a[r]| (the rounding of a); ub[r] = a[r] + b[r], lo[r]
 * = a[r] - b[r]. */
static inline float bound_of(float a, float p, float e, float du, float uu)
{
	return p * du + e * uu + 1e-6f * fabsf(a);
}

static void upper_generic(const float *a, const float *p, const float *e, float du, float uu, uint32_t n,
			  float *ub, float *lo)
{
	for (uint32_t r = 0; r < n; r++) {
		float b = bound_of(a[r], p[r], e[r], du, uu);
		ub[r] = a[r] + b;
		lo[r] = a[r] - b;
	}
}

T512 static void upper_avx512(const float *a, const float *p, const float *e, float du, float uu, uint32_t n,
			      float *ub, float *lo)
{
	const __m512 dv = _mm512_set1_ps(du), uv = _mm512_set1_ps(uu), eps = _mm512_set1_ps(1e-6f);
	uint32_t r = 0;
	for (; r + 16 <= n; r += 16) {
		__m512 av = _mm512_loadu_ps(a + r);
		__m512 b = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(p + r), dv),
						       _mm512_mul_ps(_mm512_loadu_ps(e + r), uv)),
					 _mm512_mul_ps(eps, _mm512_abs_ps(av)));
		_mm512_storeu_ps(ub + r, _mm512_add_ps(av, b));
		_mm512_storeu_ps(lo + r, _mm512_sub_ps(av, b));
	}
	upper_generic(a + r, p + r, e + r, du, uu, n - r, ub + r, lo + r);
}

/* Drops the hits of c under c->t (ids keep their order); their count. */
static size_t keep_above(struct heap *c)
{
	size_t kept = 0;
	for (size_t i = 0; i < c->n; i++)
		if (c->h[i].score >= c->t)
			c->h[kept++] = c->h[i];
	return c->n = kept;
}

/* select_bounded's fast passes. offer_lows: lo[r0 .. n) that beat the
 * heap's root go to it. enter: every ub[r] >= c->t enters c, 1 when c
 * overflows (select_bounded). The AVX-512 forms walk the bits of one
 * compare per 16 scores rather than calling above per hit (perf: above
 * was 14% of a batch called that way); a root raised within 16 lanes
 * leaves extra offers that lb_offer turns away. */
static void offer_lows(struct bnd *bd, uint32_t kk, const float *lo, uint32_t r, uint32_t n, above_fn above)
{
	for (; (r = above(lo, r, n, bd->lb[0])) < n; r++)
		lb_offer(bd, kk, lo[r]);
}

static int enter(struct heap *c, const float *ub, uint32_t n, uint32_t base, above_fn above)
{
	float t = nextafterf(c->t, -INFINITY);
	for (uint32_t r = 0; (r = above(ub, r, n, t)) < n; r++) {
		c->h[c->n++] = (struct rk_hit){ base + r, ub[r] };
		if (c->n == c->room && keep_above(c) > c->room / 2)
			return 1;
	}
	return 0;
}

T512 static void offer_lows_avx512(struct bnd *bd, uint32_t kk, const float *lo, uint32_t r, uint32_t n,
				   above_fn above)
{
	for (; r + 16 <= n; r += 16) {
		__mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(lo + r), _mm512_set1_ps(bd->lb[0]), _CMP_GT_OQ);
		for (; m; m &= (__mmask16)(m - 1))
			lb_offer(bd, kk, lo[r + (uint32_t)__builtin_ctz(m)]);
	}
	offer_lows(bd, kk, lo, r, n, above);
}

T512 static int enter_avx512(struct heap *c, const float *ub, uint32_t n, uint32_t base, above_fn above)
{
	const __m512 tv = _mm512_set1_ps(c->t);
	uint32_t r = 0;
	for (; r + 16 <= n; r += 16) {
		__mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(ub + r), tv, _CMP_GE_OQ);
		for (; m; m &= (__mmask16)(m - 1)) {
			uint32_t i = r + (uint32_t)__builtin_ctz(m);
			c->h[c->n++] = (struct rk_hit){ base + i, ub[i] };
			if (c->n == c->room && keep_above(c) > c->room / 2)
				return 1;
		}
	}
	return enter(c, ub + r, n - r, base + r, above);
}

/* Offers a block's bounded scores of one user (exact mode): candidates
 * (score: a + b) into c, whose t is LB; a + b >= LB passes (ties kept).
 *
 * Without exclusions (the common case) in two vector-filtered passes: the
 * block's lows a - b that beat the heap's root (all while it fills, then
 * few: perf had the heap taking every candidate, 13% of a batch) raise
 * LB first, then the uppers at or over that LB enter c. LB is the k-th
 * largest low of a set of items either way, so the candidates are a
 * superset of the true top k, as before; only fewer enter. A block
 * holding an excluded id goes item by item: its low must not count. */
static void select_bounded(struct heap *c, struct bnd *bd, uint32_t kk, const float *a, const float *p,
			   const float *e, const float *dud, uint32_t n, uint32_t base, struct excl *ex,
			   above_fn above, int wide)
{
	float ub[BLK], lo[BLK];
	if (bd->over)
		return;
	(wide ? upper_avx512 : upper_generic)(a, p, e, dud[0], dud[1], n, ub, lo);
	uint32_t r = 0;
	while (ex->p < ex->end && *ex->p < base)
		ex->p++;
	if (ex->p >= ex->end || *ex->p >= base + n) {
		for (; r < n && bd->n_lb < kk; r++)
			lb_offer(bd, kk, lo[r]);
		if (bd->n_lb == kk)
			(wide ? offer_lows_avx512 : offer_lows)(bd, kk, lo, r, n, above);
		if (bd->n_lb == kk)
			c->t = bd->lb[0];
		if ((wide ? enter_avx512 : enter)(c, ub, n, base, above))
			bd->over = 1;
		return;
	}
	float t = nextafterf(c->t, -INFINITY);
	for (; (r = above(ub, r, n, t)) < n; r++) {
		uint32_t id = base + r;
		if (excluded(ex, id))
			continue;
		lb_offer(bd, kk, lo[r]);
		if (bd->n_lb == kk && c->t != bd->lb[0]) {
			c->t = bd->lb[0];
			t = nextafterf(c->t, -INFINITY);
		}
		c->h[c->n++] = (struct rk_hit){ id, ub[r] };
		if (c->n == c->room && keep_above(c) > c->room / 2) {
			bd->over = 1;
			return;
		}
	}
}

/* Offers a block's int8 scores a of one user (approx): every item whose a
 * reaches the c × k-th best so far (the heap of bd) enters c, whose t is
 * that score; a full set drops those under it, and cuts to its best
 * (set_cut) when ties keep it over half full. What remains at the end,
 * cut to its best m, is rk_topk's candidate set; a heap of the m largest
 * a keeps the bar exact where a set's cuts would move it in steps, each a
 * selection over the set (perf: as long as dot8x's share). */
static void select_top(struct heap *c, struct bnd *bd, uint32_t m, const float *a, uint32_t n, uint32_t base,
		       struct excl *ex, above_fn above)
{
	float t = nextafterf(c->t, -INFINITY);
	for (uint32_t r = 0; (r = above(a, r, n, t)) < n; r++) {
		uint32_t id = base + r;
		if (excluded(ex, id))
			continue;
		lb_offer(bd, m, a[r]);
		if (bd->n_lb == m && c->t != bd->lb[0]) {
			c->t = bd->lb[0];
			t = nextafterf(c->t, -INFINITY);
		}
		c->h[c->n++] = (struct rk_hit){ id, a[r] };
		if (c->n == c->room && keep_above(c) > c->room / 2)
			set_cut(c);
	}
}

/* The user's terms of the exact bound (see above): out[0] = ||d|| / s_u,
 * out[1] = ||u|| / s_u for the padded row u (stride floats) and its int8
 * values q, in double and rounded up. 0 for a zero user. */
static int user_bound(const float *u, const int8_t *q, uint32_t stride, float *out)
{
	float m = 0;
	for (uint32_t j = 0; j < stride; j++)
		m = fabsf(u[j]) > m ? fabsf(u[j]) : m;
	if (m == 0)
		return 0;
	double su = (double)m / 127, dd = 0, uu = 0;
	for (uint32_t j = 0; j < stride; j++) {
		double d = (double)u[j] - su * q[j];
		dd += d * d;
		uu += (double)u[j] * u[j];
	}
	double up = 1 + 0x1p-20;
	out[0] = (float)(sqrt(dd) / su * up);
	out[1] = (float)(sqrt(uu) / su * up);
	return 1;
}

/* rk_topk_batch's work with c = approx (0: exact), arguments checked. */
static int batch_i8(const struct rk_index_view *v, const struct rk_topk_batch_req *req, int c, size_t kk,
		    struct rk_topk_ws *ws, struct rk_hit *out, size_t *n_out)
{
	const uint8_t *p8[BLK];
	float sc[BLK], s[G8 * BLK], pq[BLK], re[BLK], dud[2 * BATCH_USERS];
	int32_t corr[BATCH_USERS + G8];
	enum rk_isa isa = rk_isa_active();
	above_fn above = kernels[isa].above;
	uint32_t mask = (1u << v->chunk_shift) - 1u;
	int exact = c == 0;
	/* Candidates a user may hold: approx, k × c and as many again before a
	 * cut; exact, the most of 4 × k, 1024 and n / 256 (bench_serve's rows
	 * at 1 M items left 1,089 a user at k = 20, after 2,974 entered, with
	 * the earlier, wider bound; at 10 k items 512 overflowed for 2% of
	 * users, each then scanned whole). */
	size_t m = (size_t)c * kk, room = 2 * m;
	if (exact)
		room = kk * 4 > 1024 ? kk * 4 : 1024;
	if (exact && room < v->n / 256)
		room = v->n / 256;
	uint32_t mb = req->n_users < BATCH_USERS ? req->n_users : BATCH_USERS;
	uint32_t mg = (mb + G8 - 1) / G8 * G8;
	size_t per = exact ? room : 2 * room; /* hits per user: approx cuts need a copy */
	size_t n_lb = exact ? kk : m;          /* each user's heap of a - b (exact) or a */
	int rc;

	if ((rc = grow((void **)&ws->user, &ws->user_cap, (size_t)mb * v->stride, sizeof(float))) ||
	    (rc = grow((void **)&ws->user8, &ws->user8_cap, (size_t)mg * v->stride8, 1)) ||
	    (rc = grow((void **)&ws->pool, &ws->pool_cap, (size_t)mb * per, sizeof(struct rk_hit))) ||
	    (rc = grow((void **)&ws->ids, &ws->ids_cap, room, sizeof(uint32_t))) ||
	    (rc = grow((void **)&ws->heaps, &ws->heaps_cap, mb, sizeof(struct heap))) ||
	    (rc = grow((void **)&ws->excls, &ws->excls_cap, mb, sizeof(struct excl))) ||
	    (rc = grow((void **)&ws->bnds, &ws->bnds_cap, mb, sizeof(struct bnd))) ||
	    (rc = grow((void **)&ws->scores, &ws->scores_cap, (size_t)mb * n_lb, sizeof(float))))
		return rc;
	for (uint32_t g0 = 0; g0 < req->n_users; g0 += mb) {
		uint32_t mu = req->n_users - g0 < mb ? req->n_users - g0 : mb;
		for (uint32_t u = 0; u < mu; u++) {
			uint32_t gu = g0 + u;
			float *f = ws->user + (size_t)u * v->stride;
			int8_t *q = ws->user8 + (size_t)u * v->stride8;
			if ((rc = pad_user(f, req->users + (size_t)gu * v->dim, v->dim, v->stride)))
				return rc;
			corr[u] = quantize_user(q, f, v->stride, v->stride8);
			struct rk_hit *h = ws->pool + (size_t)u * per;
			ws->heaps[u] = (struct heap){ h, 0, m, room, -INFINITY, exact ? NULL : h + room };
			ws->excls[u].p = req->exclude ? req->exclude[gu] : NULL;
			ws->excls[u].end = req->exclude && req->exclude[gu] ? req->exclude[gu] + req->n_exclude[gu] : NULL;
			ws->bnds[u] = (struct bnd){ ws->scores + (size_t)u * n_lb, 0, 0 };
			/* A zero user (no scale to measure the bound in) is scanned. */
			if (exact && !user_bound(f, q, v->stride, dud + 2 * u))
				ws->bnds[u].over = 1;
		}
		/* The last group's missing users score zero rows: dropped. */
		memset(ws->user8 + (size_t)mu * v->stride8, 0, (size_t)((mu + G8 - 1) / G8 * G8 - mu) * v->stride8);
		memset(corr + mu, 0, G8 * sizeof *corr);
		/* One pass over the items for all the users: a user's set is
		 * touched only by the few items that enter it. */
		for (uint32_t at = 0, nb; at < v->n; at += nb) {
			nb = v->n - at < BLK ? v->n - at : BLK;
			for (uint32_t r = 0; r < nb; r++) {
				uint32_t id = at + r, ch = id >> v->chunk_shift;
				p8[r] = v->chunk_i8[ch] + (size_t)(id & mask) * v->stride8;
				sc[r] = v->chunk_scale[ch][id & mask];
				if (exact) {
					pq[r] = v->chunk_i8b[ch][2 * (id & mask)];
					re[r] = v->chunk_i8b[ch][2 * (id & mask) + 1];
				}
			}
			for (uint32_t g = 0; g < mu; g += G8) {
				kernels[isa].dot8x(ws->user8 + (size_t)g * v->stride8, v->stride8, p8, nb, corr + g, sc, s);
				for (uint32_t x = 0; x < G8 && g + x < mu; x++) {
					uint32_t u = g + x;
					if (exact)
						select_bounded(&ws->heaps[u], &ws->bnds[u], (uint32_t)kk, s + x * nb, pq, re,
							       dud + 2 * u, nb, at, &ws->excls[u], above, isa >= RK_ISA_AVX512);
					else
						select_top(&ws->heaps[u], &ws->bnds[u], (uint32_t)m, s + x * nb, nb, at,
							   &ws->excls[u], above);
				}
			}
		}
		for (uint32_t u = 0; u < mu; u++) {
			struct heap *cand = &ws->heaps[u];
			struct quser qu = { ws->user + (size_t)u * v->stride, NULL, 0, NULL, 0, 0 };
			struct heap hp = { out + (size_t)(g0 + u) * kk, 0, kk, 0, 0, NULL };
			struct excl none = { NULL, NULL };
			size_t n_ids = 0;
			if (exact && ws->bnds[u].over) {
				uint32_t gu = g0 + u;
				struct excl ex = { req->exclude ? req->exclude[gu] : NULL,
						   req->exclude && req->exclude[gu] ? req->exclude[gu] + req->n_exclude[gu]
										    : NULL };
				scan(v, &qu, PASS_F32, NULL, 0, v->n, &hp, &ex, NULL);
			} else {
				keep_above(cand);
				if (!exact)
					set_cut(cand);
				for (size_t i = 0; i < cand->n; i++)
					ws->ids[n_ids++] = cand->h[i].item;
				scan(v, &qu, PASS_F32, ws->ids, 0, n_ids, &hp, &none, NULL);
			}
			heap_sort(&hp);
			n_out[g0 + u] = hp.n;
		}
	}
	return 0;
}

int rk_topk_batch(const struct rk_index_view *v, const struct rk_topk_batch_req *req, struct rk_topk_ws *ws,
		  struct rk_hit *out, size_t *n_out)
{
	size_t kk = req->k > 0 && (size_t)req->k < v->n ? (size_t)req->k : v->n;

	if (req->k <= 0 || req->approx < 0 || (!req->exclude) != (!req->n_exclude))
		return VR_EINVAL;
	for (uint32_t u = 0; u < req->n_users; u++) {
		n_out[u] = 0;
		if (req->exclude && ((req->n_exclude[u] && !req->exclude[u]) ||
				     !sorted(req->exclude[u], req->n_exclude[u])))
			return VR_EINVAL;
	}
	if (kk == 0 || req->n_users == 0)
		return 0;
	/* As rk_topk: a first pass that would keep the whole catalogue is the
	 * exact ranking. */
	return batch_i8(v, req, req->approx && (size_t)req->approx * kk < v->n ? req->approx : 0, kk, ws, out,
			n_out);
}

int rk_score_i8(const struct rk_index_view *v, const float *user, const uint32_t *items, size_t n,
		struct rk_topk_ws *ws, int32_t *dots)
{
	int rc = 0;
	const uint8_t *ptr[BLK];
	float scale;
	enum rk_isa isa = rk_isa_active();

	for (size_t i = 0; i < n; i++)
		if (items[i] >= v->n)
			return VR_EINVAL;
	if ((rc = grow((void **)&ws->user, &ws->user_cap, v->stride, sizeof(float))) ||
	    (rc = grow((void **)&ws->user8, &ws->user8_cap, v->stride8, 1)))
		return rc;
	if ((rc = pad_user(ws->user, user, v->dim, v->stride)))
		return rc;
	int32_t corr = quantize_user(ws->user8, ws->user, v->stride, v->stride8);
	for (size_t at = 0; at < n; at += BLK) {
		uint32_t nb = (uint32_t)(n - at < BLK ? n - at : BLK);
		for (uint32_t r = 0; r < nb; r++)
			ptr[r] = rk_index_row_i8(v, items[at + r], &scale);
		kernels[isa].dot8(ws->user8, v->stride8, ptr, nb, dots + at);
		for (uint32_t r = 0; r < nb; r++)
			dots[at + r] -= corr;
	}
	return 0;
}

int rk_score_i4(const struct rk_index_view *v, const float *user, const uint32_t *items, size_t n,
		struct rk_topk_ws *ws, int32_t *dots)
{
	int rc = 0;
	const uint8_t *ptr[BLK];
	float col0, scale;
	int32_t corr;
	enum rk_isa isa = rk_isa_active();

	for (size_t i = 0; i < n; i++)
		if (items[i] >= v->n)
			return VR_EINVAL;
	if ((rc = grow((void **)&ws->user, &ws->user_cap, v->stride, sizeof(float))) ||
	    (rc = grow((void **)&ws->user4, &ws->user4_cap, 2 * (size_t)((v->stride4 + 63) & ~63u), 1)))
		return rc;
	if ((rc = pad_user(ws->user, user, v->dim, v->stride)))
		return rc;
	quantize_user4(ws->user4, ws->user, v->dim, v->stride4, &corr);
	for (size_t at = 0; at < n; at += BLK) {
		uint32_t nb = (uint32_t)(n - at < BLK ? n - at : BLK);
		for (uint32_t r = 0; r < nb; r++)
			ptr[r] = rk_index_row_i4(v, items[at + r], &col0, &scale);
		kernels[isa].dot4(ws->user4, v->stride4, ptr, nb, dots + at);
		for (uint32_t r = 0; r < nb; r++)
			dots[at + r] -= corr;
	}
	return 0;
}

int rk_score(const struct rk_index_view *v, const float *user, const uint32_t *items, size_t n,
	     struct rk_topk_ws *ws, float *scores)
{
	int rc = 0;
	const float *ptr[BLK];
	enum rk_isa isa = rk_isa_active();

	for (size_t i = 0; i < n; i++)
		if (items[i] >= v->n)
			return VR_EINVAL;
	if ((rc = grow((void **)&ws->user, &ws->user_cap, v->stride, sizeof(float))))
		return rc;
	if ((rc = pad_user(ws->user, user, v->dim, v->stride)))
		return rc;
	for (size_t at = 0; at < n; at += BLK) {
		uint32_t nb = (uint32_t)(n - at < BLK ? n - at : BLK);
		for (uint32_t r = 0; r < nb; r++)
			ptr[r] = rk_index_row(v, items[at + r]);
		kernels[isa].dot32(ws->user, v->stride, ptr, nb, scores + at);
	}
	return 0;
}

int rk_score_all(const struct rk_index_view *v, const float *users, uint32_t n_users,
		 float *scores)
{
	enum rk_isa isa = rk_isa_active();
	uint32_t per = 1u << v->chunk_shift;
	const float *ptr[BLK];

	/* blk rows at a time (a few dozen KB: they stay in L2 while every
	 * user passes over them), four users a kernel call. blk and per are
	 * powers of two, blk <= per: a block never straddles two chunks. */
	uint32_t blk = per < BLK ? per : BLK;
	for (uint32_t first = 0; first < v->n; first += blk) {
		uint32_t nb = v->n - first < blk ? v->n - first : blk;
		const float *rows = rk_index_row(v, first);
		uint32_t x = 0;
		for (; x + 4 <= n_users; x += 4)
			kernels[isa].dot32x4(users + (size_t)x * v->stride, v->stride, rows, nb,
					     scores + (size_t)x * v->n + first, v->n);
		for (uint32_t r = 0; x < n_users && r < nb; r++)
			ptr[r] = rows + (size_t)r * v->stride;
		for (; x < n_users; x++)
			kernels[isa].dot32(users + (size_t)x * v->stride, v->stride, ptr, nb,
					   scores + (size_t)x * v->n + first);
	}
	return 0;
}

int rk_ids_has(const uint32_t *ids, size_t n, uint32_t id)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && ids[lo] == id;
}
