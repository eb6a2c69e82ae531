/* The serving item matrix of rankd: one row of D floats per item, so that
 * every model scores by one inner product, score(u, i) = user_row(u) ·
 * item_row(i) (DESIGN.md 1; for VBPR the item row is
 * [β_i + β'·f_i, γ_i, E f_i] and the user row [1, γ_u, θ_u]).
 *
 * Rows are kept four times: exact fp32 (padded to a multiple of 16 floats,
 * each row 64-byte aligned, pad zero), and an fp16, a per-row scaled int8
 * and a per-row scaled int4 copy for the approximate first passes of
 * topk.h. Item ids are dense:
 * the i-th appended row is item i.
 *
 * One writer (appends for items that arrive from featured's change feed,
 * replacements for re-embedded items) and any number of readers, who never
 * wait for the writer and never see a partial row. A reader takes a view
 * (rk_index_acquire), scans the rows it covers, and gives it back
 * (rk_index_release); a view is immutable: later appends and replacements
 * are seen by later views only. */
#ifndef RK_INDEX_H
#define RK_INDEX_H

#include <stddef.h>
#include <stdint.h>

/* Largest D accepted by rk_index_create. */
#define RK_INDEX_MAX_DIM (1u << 16)

struct rk_index;
struct rk_index__snap;

struct rk_index_opts {
	/* Rows per storage chunk: 0 picks the largest power of two whose fp32,
	 * fp16 and int8 rows fit in 4 MiB (2048 rows at D = 301); otherwise a
	 * power of two. Small values exist for tests of chunk boundaries. */
	uint32_t rows_per_chunk;
};

/* A reader's immutable view. The layout is public for the scanners of
 * topk.c; everyone else uses rk_index_row(). Rows are stored in chunks of
 * 1 << chunk_shift rows: item i lives in chunk i >> chunk_shift at row
 * i & ((1 << chunk_shift) - 1) of chunk_f32[...] (stride floats per row),
 * chunk_f16[...] (stride halves per row, 32-byte aligned), chunk_i8[...]
 * (stride8 bytes per row, 32-byte aligned) and chunk_scale[...] (one float
 * per row). An int8 row holds 128 + round(x_j / scale), 1 .. 255, scale =
 * max_j |x_j| / 127 (0 for a zero row), and 128 in the padding: the row is
 * scale × (byte - 128) to within scale / 2 per element. An int4 row
 * (chunk_i4[...], stride4 bytes, 32-byte aligned) holds columns 1 .. D - 1
 * as nibbles 8 + round(x_j / s4), 1 .. 15, s4 = max_{j >= 1} |x_j| / 7;
 * element e = j - 1 is in byte 32 (e / 64) + e % 32, in its low nibble
 * when e % 64 < 32, else its high one, padding nibbles 8; chunk_i4s[...]
 * holds two floats per row: x_0 exactly, then s4. chunk_i8b[...] holds
 * two floats per row for the exact batch's error bound (topk.c): scale ×
 * ||q||_2 of the int8 values q, and ||x - scale × q||_2 plus stride ×
 * 2^-24 × 1.01 × ||x||_2 (the fp32 kernels' rounding), both rounded up. */
struct rk_index_view {
	uint32_t n;           /* items 0 .. n-1 are visible */
	uint32_t dim;         /* D */
	uint32_t stride;      /* D rounded up to 16 */
	uint32_t stride8;     /* D rounded up to 64 */
	uint32_t stride4;     /* bytes of an int4 row: 32 per 64 of D - 1 */
	uint32_t chunk_shift;
	const float *const *chunk_f32;
	const uint16_t *const *chunk_f16;
	const uint8_t *const *chunk_i8;
	const float *const *chunk_scale;
	const uint8_t *const *chunk_i4;
	const float *const *chunk_i4s;
	const float *const *chunk_i8b;
	struct rk_index__snap *snap_; /* the reference this view holds */
};

/* Creates an empty index of rows of dim floats. opts may be NULL.
 * Returns 0, VR_EINVAL (dim 0 or over RK_INDEX_MAX_DIM, rows_per_chunk not
 * a power of two) or VR_ENOMEM. */
int rk_index_create(uint32_t dim, const struct rk_index_opts *opts, struct rk_index **out);

/* Drops the index. Views still held stay valid until released; their
 * memory goes with the last release. NULL is a no-op. */
void rk_index_destroy(struct rk_index *ix);

uint32_t rk_index_dim(const struct rk_index *ix);

/* Appends n_rows rows (n_rows × dim floats, row-major) as items
 * first_id .. first_id + n_rows - 1 (first_id may be NULL). Each row is
 * published as soon as it is complete. All or nothing: on error no row is
 * added. Returns 0, VR_EINVAL (a non-finite value), VR_ETOOBIG (over
 * 2^32 - 1 items) or VR_ENOMEM. Writers are serialised internally. */
int rk_index_append(struct rk_index *ix, const float *rows, uint32_t n_rows, uint32_t *first_id);

/* Replaces the row of item id (dim floats). Views taken before see the old
 * row, views taken after the new one; none sees a mixture. Costs a copy of
 * the row's chunk (up to 4 MiB): meant for occasional re-embeddings; a new
 * model is a new index. Returns 0, VR_ENOTFOUND (id not appended yet),
 * VR_EINVAL (a non-finite value) or VR_ENOMEM. */
int rk_index_replace(struct rk_index *ix, uint32_t id, const float *row);

/* Appends zero rows until the index holds n items; a no-op when it holds
 * as many already. rk_index_set_row: replaces item id's row when present,
 * else appends zero rows up to id and then row. Each is one writer's
 * sequence of appends: callers that pad or set rows must not race each
 * other. Return 0 or rk_index_append's and rk_index_replace's errors. */
int rk_index_pad(struct rk_index *ix, uint32_t n);
int rk_index_set_row(struct rk_index *ix, uint32_t id, const float *row);

/* Takes a view of the rows published now. Never fails, never waits for a
 * writer (a short mutex guards the snapshot pointer only). */
void rk_index_acquire(struct rk_index *ix, struct rk_index_view *view);

/* Gives a view back; it must not be used afterwards. */
void rk_index_release(struct rk_index_view *view);

/* The fp32 row of item id in view (stride floats, the last stride - dim
 * zero), or NULL when id >= view->n. */
const float *rk_index_row(const struct rk_index_view *view, uint32_t id);

/* The int8 copy of item id's row (stride8 bytes) with its scale into
 * *scale, or NULL when id >= view->n. */
const uint8_t *rk_index_row_i8(const struct rk_index_view *view, uint32_t id, float *scale);

/* The int4 copy of item id's row (stride4 bytes), with its exact column 0
 * into *col0 and its scale into *scale, or NULL when id >= view->n. */
const uint8_t *rk_index_row_i4(const struct rk_index_view *view, uint32_t id, float *col0, float *scale);

/* The fp16 copy of item id's row, or NULL when id >= view->n. */
const uint16_t *rk_index_row_f16(const struct rk_index_view *view, uint32_t id);

/* IEEE binary16 conversions, round to nearest even; portable C, bit-exact
 * with the F16C instructions the index uses where the CPU has them. The
 * index clamps values to ±65504 before converting, so no stored half is
 * infinite. */
uint16_t rk_half_from_float(float f);
float rk_half_to_float(uint16_t h);
/* 1 when this CPU runs the F16C conversions (and the OS saves AVX state),
 * else 0. Asked through CPUID, since clang's __builtin_cpu_supports does
 * not know "f16c". */
int rk_cpu_f16c(void);

#endif
