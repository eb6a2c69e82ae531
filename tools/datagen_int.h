/* datagen_int: what the generator's files share (not an API: datagen.h
 * is). datagen.c draws the data set (the preference model and its
 * sampling) into a struct gen; datagen_files.c writes its CSV files;
 * datagen_images.c renders and writes the item images. */
#ifndef VR_DATAGEN_INT_H
#define VR_DATAGEN_INT_H

#include "datagen.h"
#include "xoshiro.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#define NCELLS (DG_CATEGORIES * DG_HUES * DG_TEXTURES * DG_CLUSTERS)
#define JPEG_QUALITY 90

/* Random streams: one per stage and index (see rng_seed). */
enum stream {
	ST_ITEM = 1, ST_COLD, ST_CLUSTER, ST_USER, ST_ACTIVITY, ST_COLDTEST,
	ST_SAMPLE, ST_COVER, ST_TEST, ST_TIME, ST_IMAGE,
};

struct rng {
	uint64_t s[4];
};

/* The state of stream (seed, stream, index): each key is hashed in turn,
 * so distinct triples give unrelated streams. */
static inline void rng_seed(struct rng *r, uint64_t seed, enum stream stream, uint64_t index)
{
	uint64_t x = seed;
	x = vr_splitmix64_next(&x) ^ (uint64_t)stream;
	x = vr_splitmix64_next(&x) ^ index;
	for (int k = 0; k < 4; k++)
		r->s[k] = vr_splitmix64_next(&x);
}

static inline uint64_t rng_next(struct rng *r)
{
	return vr_xoshiro_next(r->s);
}

/* Uniform in the open interval (0, 1). */
static inline double rng_u01(struct rng *r)
{
	return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Uniform integer in [0, n), n < 2^53. */
static inline int64_t rng_below(struct rng *r, int64_t n)
{
	return (int64_t)(rng_u01(r) * (double)n);
}

static inline double rng_normal(struct rng *r)
{
	double a = rng_u01(r), b = rng_u01(r);
	return sqrt(-2.0 * log(a)) * cos(2.0 * M_PI * b);
}

static inline void shuffle_i32(struct rng *r, int32_t *a, int64_t n)
{
	for (int64_t k = n - 1; k > 0; k--) {
		int64_t j = rng_below(r, k + 1);
		int32_t t = a[k];
		a[k] = a[j];
		a[j] = t;
	}
}

struct gen {
	const struct dg_opts *o;
	int64_t U, I, N, C, W, cap;
	int id_digits_u, id_digits_i;
	/* items */
	uint8_t *cat, *hue, *tex, *clu, *cold;
	uint16_t *width, *height;
	float *pop;
	float mu[DG_CLUSTERS][DG_LATENT_DIMS];
	int32_t *cell_start;   /* NCELLS + 1 offsets into cell_items */
	int32_t *cell_fill;    /* NCELLS: next free slot while grouping */
	int32_t *cell_items;   /* warm items grouped by cell */
	float *alias_p;        /* per cell_items slot: keep probability */
	int32_t *alias_j;      /* per slot: the alias slot */
	double *cell_mass;     /* sum of pop over the cell's items */
	/* users */
	float *vc, *vh, *vt, *lu;
	int64_t *n;            /* activity, test included */
	int64_t *off;          /* U + 1 offsets into items */
	int32_t *cold_item;    /* the user's cold test item, or -1 */
	int32_t *items;        /* per user: n_u items, the test item last */
	/* scratch */
	int32_t *mark;         /* per item: last user that drew it */
	int32_t *count;        /* per item: appearances */
	double *cdf;           /* NCELLS */
	int32_t *iscratch;     /* max(I, U) */
	double *dscratch;      /* max(I, U) */
	int64_t *times;        /* cap */
	struct dg_stats st;
};

static inline int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* ---- datagen_files.c ---- */

/* Closes f; -errno when the final flush fails, VR_EIO when an earlier
 * write did (stdio keeps no errno for it). */
int dg__fclose_checked(FILE *f);
/* dir/name into buf; VR_EINVAL when it does not fit. */
int dg__path_join(char *buf, size_t len, const char *dir, const char *name);
/* Item i's id ("i000042"). */
void dg__item_id(const struct gen *g, int64_t i, char *buf, size_t len);
/* Writes len bytes to a new file at path. */
int dg__write_file(const char *path, const void *data, size_t len);
/* mkdir -p; -ENOTDIR when path is something else. */
int dg__make_dirs(const char *path);
int dg__write_interactions(struct gen *g, const char *path);
int dg__write_truth_items(const struct gen *g, const char *path);
int dg__write_truth_users(const struct gen *g, const char *path);

/* ---- datagen_images.c ---- */

/* Fashion-MNIST's IDX files: (images, labels) for train and test. */
extern const char *const dg__fashion_files[2][2];
/* Renders every item's image and writes it as dir/<item>.jpg. */
int dg__write_images(struct gen *g, const char *dir);

#endif
