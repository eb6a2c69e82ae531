/* datagen: a deterministic generator of a visual-recommendation data set
 * shaped like the IUI 2021 tutorial's Wikimedia data (DESIGN.md section 8),
 * the library behind `visrec datagen --out DIR` and `visrec-datagen`.
 *
 * What it writes under opts->out_dir:
 *   interactions.csv   "user,item,timestamp"; ids u00042 / i000123; rows
 *                      grouped by user in time order; each user's last
 *                      interaction (strictly the latest timestamp) is the
 *                      test item.
 *   images/<item>.jpg  one JPEG (quality 90) per item, unless images are off:
 *                      procedural shapes, or Fashion-MNIST garments (Debian
 *                      package dataset-fashion-mnist) of the item's class,
 *                      both tinted with the item's hue and texture.
 *   truth_items.csv    every item's hidden attributes: cold flag, category,
 *                      hue class, texture level, latent cluster, popularity,
 *                      image width/height, latent vector l0..l7.
 *   truth_users.csv    every user's tastes: test_cold flag, category weights
 *                      vc0..vc9, hue weights vh0..vh7, texture weights
 *                      vt0..vt2, latent vector l0..l7.
 *   meta.json          parameters, the preference model and its constants,
 *                      and the statistics of struct dg_stats.
 *
 * The preference model: a user u picks warm item i with probability
 * proportional to
 *   pop_i * exp(beta_v * (vc_u[cat_i] + vh_u[hue_i] + vt_u[tex_i])
 *               + beta_l * (l_u . l_i))
 * without replacement. Cold items (cold_frac of the catalogue) appear only
 * as a test item, once each, given to a user drawn with probability about
 * proportional to exp(beta_v * visual affinity): users whose taste matches
 * the item's appearance. Every warm item has at least one training
 * interaction (where the interactions suffice; struct dg_stats counts any
 * that have none). Output depends only on the options: the same options
 * give byte-identical files. */
#ifndef DG_DATAGEN_H
#define DG_DATAGEN_H

#include <stdint.h>

enum dg_images {
	DG_IMAGES_NONE = 0,       /* no images/ folder (benchmarks at 1 M items) */
	DG_IMAGES_PROCEDURAL = 1, /* shapes drawn from each item's attributes */
	DG_IMAGES_FASHION_MNIST = 2, /* a garment photo of the item's class */
};

/* Where Debian's dataset-fashion-mnist installs its IDX files. */
#define DG_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

#define DG_CATEGORIES 10 /* shape classes (disc, square, ...) or garment classes */
#define DG_HUES 8        /* hue classes, 45 degrees apart */
#define DG_TEXTURES 3    /* fill: flat, coarse waves, fine waves */
#define DG_CLUSTERS 16   /* latent (collaborative) item clusters */
#define DG_LATENT_DIMS 8 /* length of the latent vectors l_u, l_i */

/* Called after each image with the count written so far and the total;
 * for progress display only. */
typedef void (*dg_progress_fn)(void *ctx, int64_t done, int64_t total);

struct dg_opts {
	const char *out_dir;   /* created if missing (with parents) */
	int64_t users;         /* >= 2 */
	int64_t items;         /* >= 20, <= 100,000,000 */
	int64_t interactions;  /* total rows, >= 4 * users */
	uint64_t seed;
	double cold_frac;      /* [0, 0.5]; cold items are capped at users / 2 */
	int image_min;         /* side length bounds in pixels, 16..4096 */
	int image_max;
	enum dg_images images;
	const char *fashion_dir; /* NULL: DG_FASHION_MNIST_DIR */
	dg_progress_fn progress; /* may be NULL */
	void *progress_ctx;
};

struct dg_stats {
	int64_t users, items, warm_items, cold_items, interactions;
	int64_t activity_min, activity_median, activity_max;
	double activity_mean;
	int64_t item_count_max;   /* interactions of the most popular item */
	double top10_share;       /* share of interactions on the top 10% items */
	int64_t cold_test_users;  /* users whose test item is cold */
	int64_t coverage_moves;   /* interactions moved so every warm item has one */
	int64_t warm_test_only;   /* warm items seen only as a test item (ideally 0) */
	int64_t warm_unseen;      /* warm items in no interaction (ideally 0) */
	int64_t images_written;
	int64_t image_bytes;
};

/* Fills *opts with the defaults: 1,079 users, 9,633 items, 97,000
 * interactions, seed 1, cold_frac 0.05, images 96..500 px, procedural;
 * out_dir and fashion_dir NULL. */
void dg_opts_default(struct dg_opts *opts);

/* Generates the data set described above into opts->out_dir and fills
 * *stats (may be NULL). Returns 0, VR_EINVAL when an option is out of range
 * or the options are inconsistent (e.g. interactions < 4 * users, or more
 * than users * the per-user cap, or Fashion-MNIST asked for and not
 * installed), VR_ECORRUPT when a Fashion-MNIST file is malformed,
 * VR_ENOMEM, VR_EIO when a JPEG cannot be encoded, or -errno when a folder
 * or file cannot be created, read or written. */
int dg_generate(const struct dg_opts *opts, struct dg_stats *stats);

/* Checks opts the way dg_generate does. Returns 0, or VR_EINVAL with a
 * message a person can act on written to err (size errlen; err may be NULL). */
int dg_check_opts(const struct dg_opts *opts, char *err, int errlen);

/* Parses the standalone/CLI flags (--out, --users, --items, --interactions,
 * --seed, --cold-frac, --image-min, --image-max, --images KIND, --no-images) from
 * argv[0..argc) into *opts, which should hold the defaults first, then
 * checks the result with dg_check_opts. The forms are common/flags.h's
 * (--flag value, --flag=value). argv[0] is a flag, not a program name;
 * opts->out_dir points into argv. Returns 0, VR_FLAGS_HELP when --help or
 * -h is among them, VR_ENOMEM, or VR_EINVAL with a message naming the
 * flag written to err (size errlen). */
int dg_parse_args(int argc, char **argv, struct dg_opts *opts, char *err, int errlen);

/* The usage text for the flags above. */
const char *dg_usage(void);

#endif
