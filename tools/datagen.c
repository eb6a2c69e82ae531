/* datagen: the data-set generator behind `visrec datagen` (see datagen.h
 * for the files it writes and the preference model).
 *
 * DESIGN. One thread, stages in order; each buffer is allocated once per run:
 *   1. items: attributes, popularity and image size per item, each from its
 *      own random stream (seed, stage, index), so one item's draws never
 *      shift another's; cold_frac of the items are marked cold.
 *   2. users: tastes, latent vectors and activity n_u (log-normal quantiles
 *      in random order, rescaled to sum exactly to the interaction total).
 *   3. cold tests: each cold item goes to one user drawn from those without
 *      one yet, about proportional to exp(beta_v * visual affinity)
 *      (sampling-importance-resampling over 64 uniform proposals).
 *   4. warm sampling without replacement. A warm item's weight factors into
 *      a per-user part that depends only on its cell (category, hue,
 *      texture, latent cluster: 3,840 cells) times its popularity. Per user
 *      we build the CDF over cells (weight = product of four per-factor
 *      exponentials times the cell's popularity mass), draw a cell by binary
 *      search and an item inside it from a global per-cell alias table, and
 *      reject items the user already has (a per-item stamp of the last user
 *      that took it). That is exact sequential sampling without replacement
 *      at O(cells) per user plus O(log cells) per draw, independent of the
 *      catalogue size, so 1 M items stay cheap. If a heavy user's rejections
 *      pile up (most of its mass already taken), the rest of its draws come
 *      from an exact Gumbel top-k over the items it lacks, O(items) once.
 *   5. coverage: each warm item that nobody drew replaces a training item
 *      of count >= 2 of a user chosen like the cold tests' (proposals
 *      proportional to activity, weighted by affinity), so every warm item
 *      has a training interaction and the totals stay exact.
 *   6. test items: a warm-test user's test item is one of its items that
 *      someone else also has in training (so only cold items are test-only).
 *   7. output: interactions.csv (per user: training items shuffled onto
 *      sorted timestamps, then the test item strictly later) and the truth
 *      files (datagen_files.c), images (datagen_images.c: one reusable
 *      pixel buffer and JPEG encoder), meta.json (here: it describes the
 *      model).
 * At about 950 lines this file is one concept, the preference model: its
 * parameters, the stages that draw from it, the checks of the options that
 * size it and meta.json, its description; writing files and rendering
 * images live beside it. */
#include "datagen_int.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "flags.h"

#define ACTIVITY_MIN 4
/* The tutorial's Wikimedia data: median 16, mean 90, max 3,544 per user. */
#define ACTIVITY_MEDIAN_OVER_MEAN (16.0 / 90.0)
#define ACTIVITY_MAX_OVER_MEAN (3544.0 / 90.0)
#define ASPECT_MIN 0.75
#define ASPECT_MAX 1.3333333

/* Strength of each factor in the preference model (see datagen.h). */
static const double beta_visual = 1.0;
static const double beta_latent = 1.3;
static const double popularity_sigma = 1.5; /* log-normal spread of pop_i */
static const double taste_sd_texture = 0.5; /* category and hue weights: 1 */

static const char *const category_names[DG_CATEGORIES] = {
	"disc", "square", "triangle", "ring", "cross",
	"star", "hexagon", "crescent", "stripes", "checks",
};
static const char *const garment_names[DG_CATEGORIES] = {
	"t-shirt", "trouser", "pullover", "dress", "coat",
	"sandal", "shirt", "sneaker", "bag", "ankle-boot",
};
static const char *const hue_names[DG_HUES] = {
	"red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta",
};
static const char *const texture_names[DG_TEXTURES] = { "flat", "coarse", "fine" };
static const char *const image_kind_names[] = { "none", "procedural", "fashion-mnist" };

static int cell_of(const struct gen *g, int64_t i)
{
	return ((g->cat[i] * DG_HUES + g->hue[i]) * DG_TEXTURES + g->tex[i]) * DG_CLUSTERS + g->clu[i];
}

static double visual_affinity(const struct gen *g, int64_t u, int64_t i)
{
	return g->vc[u * DG_CATEGORIES + g->cat[i]] + g->vh[u * DG_HUES + g->hue[i]] +
	       g->vt[u * DG_TEXTURES + g->tex[i]];
}

static double latent_affinity(const struct gen *g, int64_t u, int64_t i)
{
	const float *l = g->lu + u * DG_LATENT_DIMS, *m = g->mu[g->clu[i]];
	double s = 0;
	for (int k = 0; k < DG_LATENT_DIMS; k++)
		s += (double)l[k] * m[k];
	return s;
}

static int digits(int64_t n)
{
	int d = 1;
	while (n >= 10) {
		n /= 10;
		d++;
	}
	return d;
}

#define ALLOC(field, count) (g->field = malloc((size_t)(count) * sizeof(*g->field)))

static int alloc_all(struct gen *g)
{
	int64_t U = g->U, I = g->I, big = I > U ? I : U;
	if (!ALLOC(cat, I) || !ALLOC(hue, I) || !ALLOC(tex, I) || !ALLOC(clu, I) ||
	    !ALLOC(cold, I) || !ALLOC(width, I) || !ALLOC(height, I) || !ALLOC(pop, I) ||
	    !ALLOC(cell_start, NCELLS + 1) || !ALLOC(cell_fill, NCELLS) ||
	    !ALLOC(cell_items, I) || !ALLOC(alias_p, I) || !ALLOC(alias_j, I) ||
	    !ALLOC(cell_mass, NCELLS) || !ALLOC(vc, U * DG_CATEGORIES) ||
	    !ALLOC(vh, U * DG_HUES) || !ALLOC(vt, U * DG_TEXTURES) ||
	    !ALLOC(lu, U * DG_LATENT_DIMS) || !ALLOC(n, U) || !ALLOC(off, U + 1) ||
	    !ALLOC(cold_item, U) || !ALLOC(items, g->N) || !ALLOC(mark, I) ||
	    !ALLOC(count, I) || !ALLOC(cdf, NCELLS) || !ALLOC(iscratch, big) ||
	    !ALLOC(dscratch, big) || !ALLOC(times, g->cap))
		return VR_ENOMEM;
	return 0;
}

static void free_all(struct gen *g)
{
	void *p[] = {
		g->cat, g->hue, g->tex, g->clu, g->cold, g->width, g->height, g->pop,
		g->cell_start, g->cell_fill, g->cell_items, g->alias_p, g->alias_j,
		g->cell_mass, g->vc, g->vh, g->vt, g->lu, g->n, g->off, g->cold_item,
		g->items, g->mark, g->count, g->cdf, g->iscratch, g->dscratch, g->times,
	};
	for (size_t k = 0; k < sizeof(p) / sizeof(p[0]); k++)
		free(p[k]);
}

/* Vose's alias method over w[0..n): afterwards slot k keeps itself with
 * probability p[k], else goes to slot j[k]. small/large: scratch of n. */
static void alias_build(const double *w, int64_t n, float *p, int32_t *j,
			int32_t *small, int32_t *large, double *scaled)
{
	double sum = 0;
	for (int64_t k = 0; k < n; k++)
		sum += w[k];
	int64_t ns = 0, nl = 0;
	for (int64_t k = 0; k < n; k++) {
		scaled[k] = w[k] * (double)n / sum;
		if (scaled[k] < 1.0)
			small[ns++] = (int32_t)k;
		else
			large[nl++] = (int32_t)k;
	}
	while (ns && nl) {
		int32_t s = small[--ns], l = large[nl - 1];
		p[s] = (float)scaled[s];
		j[s] = l;
		scaled[l] -= 1.0 - scaled[s];
		if (scaled[l] < 1.0) {
			nl--;
			small[ns++] = l;
		}
	}
	while (nl) {
		int32_t l = large[--nl];
		p[l] = 1.0f;
		j[l] = l;
	}
	while (ns) {
		int32_t s = small[--ns];
		p[s] = 1.0f;
		j[s] = s;
	}
}

static void make_items(struct gen *g)
{
	const struct dg_opts *o = g->o;
	struct rng r;
	double la = log(ASPECT_MIN), lb = log(ASPECT_MAX);
	for (int64_t i = 0; i < g->I; i++) {
		rng_seed(&r, o->seed, ST_ITEM, (uint64_t)i);
		g->cat[i] = (uint8_t)rng_below(&r, DG_CATEGORIES);
		g->hue[i] = (uint8_t)rng_below(&r, DG_HUES);
		g->tex[i] = (uint8_t)rng_below(&r, DG_TEXTURES);
		g->clu[i] = (uint8_t)rng_below(&r, DG_CLUSTERS);
		g->pop[i] = (float)exp(popularity_sigma * rng_normal(&r));
		double side = o->image_min + rng_u01(&r) * (o->image_max - o->image_min);
		double ar = exp(la + rng_u01(&r) * (lb - la));
		double w = fmin(fmax(side * sqrt(ar), o->image_min), o->image_max);
		double h = fmin(fmax(side / sqrt(ar), o->image_min), o->image_max);
		g->width[i] = (uint16_t)lround(w);
		g->height[i] = (uint16_t)lround(h);
		g->cold[i] = 0;
	}
	rng_seed(&r, o->seed, ST_CLUSTER, 0);
	for (int z = 0; z < DG_CLUSTERS; z++)
		for (int k = 0; k < DG_LATENT_DIMS; k++)
			g->mu[z][k] = (float)(rng_normal(&r) / sqrt(DG_LATENT_DIMS));

	int32_t *perm = g->iscratch;
	for (int64_t i = 0; i < g->I; i++)
		perm[i] = (int32_t)i;
	rng_seed(&r, o->seed, ST_COLD, 0);
	for (int64_t k = 0; k < g->C; k++) { /* partial Fisher-Yates */
		int64_t j = k + rng_below(&r, g->I - k);
		int32_t t = perm[k];
		perm[k] = perm[j];
		perm[j] = t;
		g->cold[perm[k]] = 1;
	}
}

/* Groups warm items by cell and builds each cell's alias table over pop. */
static void make_cells(struct gen *g)
{
	int32_t *start = g->cell_start;
	memset(start, 0, (NCELLS + 1) * sizeof(*start));
	memset(g->cell_mass, 0, NCELLS * sizeof(*g->cell_mass));
	for (int64_t i = 0; i < g->I; i++)
		if (!g->cold[i]) {
			start[cell_of(g, i) + 1]++;
			g->cell_mass[cell_of(g, i)] += g->pop[i];
		}
	for (int c = 0; c < NCELLS; c++)
		start[c + 1] += start[c];
	int32_t *fill = g->cell_fill;
	memcpy(fill, start, NCELLS * sizeof(*fill));
	for (int64_t i = 0; i < g->I; i++)
		if (!g->cold[i])
			g->cell_items[fill[cell_of(g, i)]++] = (int32_t)i;
	double *w = g->dscratch;
	int32_t *small = g->iscratch, *large = g->mark; /* free until sampling */
	for (int c = 0; c < NCELLS; c++) {
		int32_t a = start[c], n = start[c + 1] - a;
		if (!n)
			continue;
		for (int32_t k = 0; k < n; k++)
			w[a + k] = g->pop[g->cell_items[a + k]];
		/* scaled weights overwrite w in place: alias_build reads w[k] once
		 * per k before writing scaled[k]. */
		alias_build(w + a, n, g->alias_p + a, g->alias_j + a, small, large, w + a);
		for (int32_t k = 0; k < n; k++)
			g->alias_j[a + k] += a;
	}
}

/* The standard normal quantile by bisection on erfc: exact to double
 * precision and cheap enough at one call per user. */
static double normal_quantile(double p)
{
	double lo = -12, hi = 12;
	for (int k = 0; k < 64; k++) {
		double mid = 0.5 * (lo + hi);
		if (0.5 * erfc(-mid / M_SQRT2) < p)
			lo = mid;
		else
			hi = mid;
	}
	return 0.5 * (lo + hi);
}

static int64_t activity_fill(const struct gen *g, const double *x, double f, int64_t *n)
{
	int64_t sum = 0;
	for (int64_t u = 0; u < g->U; u++) {
		double v = fmin(fmax(round(f * x[u]), ACTIVITY_MIN), (double)g->cap);
		if (n)
			n[u] = (int64_t)v;
		sum += (int64_t)v;
	}
	return sum;
}

/* Tastes, latent vectors and activity. Activity follows the tutorial's
 * shape: log-normal with median/mean = 16/90, taken at evenly spaced
 * quantiles (so every run has the same shape) in random user order, scaled
 * so that after clamping to [4, cap] the total is exactly N. */
static void make_users(struct gen *g)
{
	struct rng r;
	for (int64_t u = 0; u < g->U; u++) {
		rng_seed(&r, g->o->seed, ST_USER, (uint64_t)u);
		for (int k = 0; k < DG_CATEGORIES; k++)
			g->vc[u * DG_CATEGORIES + k] = (float)rng_normal(&r);
		for (int k = 0; k < DG_HUES; k++)
			g->vh[u * DG_HUES + k] = (float)rng_normal(&r);
		for (int k = 0; k < DG_TEXTURES; k++)
			g->vt[u * DG_TEXTURES + k] = (float)(taste_sd_texture * rng_normal(&r));
		for (int k = 0; k < DG_LATENT_DIMS; k++)
			g->lu[u * DG_LATENT_DIMS + k] = (float)rng_normal(&r);
	}

	double sigma = sqrt(2.0 * log(1.0 / ACTIVITY_MEDIAN_OVER_MEAN));
	int32_t *rank = g->iscratch;
	double *x = g->dscratch;
	for (int64_t u = 0; u < g->U; u++)
		rank[u] = (int32_t)u;
	rng_seed(&r, g->o->seed, ST_ACTIVITY, 0);
	shuffle_i32(&r, rank, g->U);
	for (int64_t u = 0; u < g->U; u++)
		x[u] = exp(sigma * normal_quantile((rank[u] + 0.5) / (double)g->U));
	/* activity_fill is monotone in f and is 4U <= N at f = 0, U * cap >= N
	 * for f large: bisect to the largest f whose total stays <= N. */
	double lo = 0, hi = 1;
	while (activity_fill(g, x, hi, NULL) < g->N)
		hi *= 2;
	for (int k = 0; k < 100; k++) {
		double mid = 0.5 * (lo + hi);
		if (activity_fill(g, x, mid, NULL) <= g->N)
			lo = mid;
		else
			hi = mid;
	}
	int64_t left = g->N - activity_fill(g, x, lo, g->n);
	while (left > 0)
		for (int64_t k = 0; k < g->U && left > 0; k++)
			if (g->n[rank[k]] < g->cap) {
				g->n[rank[k]]++;
				left--;
			}
	g->off[0] = 0;
	for (int64_t u = 0; u < g->U; u++)
		g->off[u + 1] = g->off[u] + g->n[u];
}

/* Gumbel noise: argmax(score + gumbel) over candidates picks each with
 * probability proportional to exp(score). */
static double gumbel(struct rng *r)
{
	return -log(-log(rng_u01(r)));
}

/* Each cold item becomes the test item of one user without a cold test
 * yet, chosen by sampling-importance-resampling: SIR_PROPOSALS uniform
 * proposals, one kept with probability proportional to exp(beta_v *
 * visual affinity). Close to exact for this many proposals, at a cost
 * independent of the number of users (an exact rejection sampler's bound
 * is set by the most extreme user, which at 100k users rejects nearly
 * everything). */
#define SIR_PROPOSALS 64

static void assign_cold_tests(struct gen *g)
{
	for (int64_t u = 0; u < g->U; u++)
		g->cold_item[u] = -1;
	if (!g->C)
		return;
	int32_t *pool = g->iscratch, *cold = g->mark;
	int64_t pn = g->U, nc = 0;
	for (int64_t u = 0; u < g->U; u++)
		pool[u] = (int32_t)u;
	for (int64_t i = 0; i < g->I; i++)
		if (g->cold[i])
			cold[nc++] = (int32_t)i;
	struct rng r;
	rng_seed(&r, g->o->seed, ST_COLDTEST, 0);
	shuffle_i32(&r, cold, nc);
	for (int64_t k = 0; k < nc; k++) {
		int64_t i = cold[k], pick = 0;
		double best = -DBL_MAX;
		for (int t = 0; t < SIR_PROPOSALS; t++) {
			int64_t j = rng_below(&r, pn);
			double s = beta_visual * visual_affinity(g, pool[j], i) + gumbel(&r);
			if (s > best) {
				best = s;
				pick = j;
			}
		}
		g->cold_item[pool[pick]] = (int32_t)i;
		pool[pick] = pool[--pn];
	}
}

/* cdf[c] = sum over cells <= c of user u's weight for the cell. */
static void user_cell_cdf(const struct gen *g, int64_t u, double *cdf)
{
	double ec[DG_CATEGORIES], eh[DG_HUES], et[DG_TEXTURES], ez[DG_CLUSTERS];
	for (int k = 0; k < DG_CATEGORIES; k++)
		ec[k] = exp(beta_visual * g->vc[u * DG_CATEGORIES + k]);
	for (int k = 0; k < DG_HUES; k++)
		eh[k] = exp(beta_visual * g->vh[u * DG_HUES + k]);
	for (int k = 0; k < DG_TEXTURES; k++)
		et[k] = exp(beta_visual * g->vt[u * DG_TEXTURES + k]);
	for (int z = 0; z < DG_CLUSTERS; z++) {
		double s = 0;
		for (int k = 0; k < DG_LATENT_DIMS; k++)
			s += (double)g->lu[u * DG_LATENT_DIMS + k] * g->mu[z][k];
		ez[z] = exp(beta_latent * s);
	}
	double acc = 0;
	int c = 0;
	for (int a = 0; a < DG_CATEGORIES; a++)
		for (int b = 0; b < DG_HUES; b++)
			for (int t = 0; t < DG_TEXTURES; t++) {
				double f = ec[a] * eh[b] * et[t];
				for (int z = 0; z < DG_CLUSTERS; z++, c++) {
					acc += f * ez[z] * g->cell_mass[c];
					cdf[c] = acc;
				}
			}
}

/* The first cell whose cumulative weight exceeds x (cells of zero weight
 * are never returned). */
static int cdf_find(const double *cdf, double x)
{
	int lo = 0, hi = NCELLS - 1;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (cdf[mid] > x)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static double item_log_weight(const struct gen *g, int64_t u, int64_t i)
{
	return log(g->pop[i]) + beta_visual * visual_affinity(g, u, i) +
	       beta_latent * latent_affinity(g, u, i);
}

/* The remaining `need` draws of user u without replacement, exactly: the
 * top `need` warm items it lacks by log weight + Gumbel noise. A min-heap
 * of keys in dscratch, items in iscratch. */
static void sample_rest_exact(struct gen *g, int64_t u, int32_t *out, int64_t need, struct rng *r)
{
	double *key = g->dscratch;
	int32_t *item = g->iscratch;
	int64_t size = 0;
	for (int64_t i = 0; i < g->I; i++) {
		if (g->cold[i] || g->mark[i] == u)
			continue;
		double k = item_log_weight(g, u, i) - log(-log(rng_u01(r)));
		if (size == need && k <= key[0])
			continue;
		int64_t pos;
		if (size < need) { /* sift up */
			pos = size++;
			while (pos > 0 && key[(pos - 1) / 2] > k) {
				key[pos] = key[(pos - 1) / 2];
				item[pos] = item[(pos - 1) / 2];
				pos = (pos - 1) / 2;
			}
		} else { /* replace the root, sift down */
			pos = 0;
			for (;;) {
				int64_t c = 2 * pos + 1;
				if (c >= size)
					break;
				if (c + 1 < size && key[c + 1] < key[c])
					c++;
				if (key[c] >= k)
					break;
				key[pos] = key[c];
				item[pos] = item[c];
				pos = c;
			}
		}
		key[pos] = k;
		item[pos] = (int32_t)i;
	}
	for (int64_t k = 0; k < size; k++) {
		out[k] = item[k];
		g->mark[item[k]] = (int32_t)u;
	}
}

static void sample_user(struct gen *g, int64_t u)
{
	int has_cold = g->cold_item[u] >= 0;
	int64_t k = g->n[u] - has_cold, got = 0;
	int32_t *out = g->items + g->off[u];
	struct rng r;
	rng_seed(&r, g->o->seed, ST_SAMPLE, (uint64_t)u);
	user_cell_cdf(g, u, g->cdf);
	double total = g->cdf[NCELLS - 1];
	for (int64_t tries = 0, limit = 32 * k + 1024; got < k && tries < limit; tries++) {
		int c = cdf_find(g->cdf, rng_u01(&r) * total);
		int32_t a = g->cell_start[c];
		int64_t s = a + rng_below(&r, g->cell_start[c + 1] - a);
		if (rng_u01(&r) >= g->alias_p[s])
			s = g->alias_j[s];
		int32_t i = g->cell_items[s];
		if (g->mark[i] == u)
			continue;
		g->mark[i] = (int32_t)u;
		out[got++] = i;
	}
	if (got < k)
		sample_rest_exact(g, u, out + got, k - got, &r);
	if (has_cold)
		out[k] = g->cold_item[u];
}

/* Training slots of user u: all n_u slots before the test is chosen for a
 * warm-test user, the first n_u - 1 for a cold-test user. */
static int64_t warm_slots(const struct gen *g, int64_t u)
{
	return g->n[u] - (g->cold_item[u] >= 0);
}

/* Gives every warm item nobody drew one training interaction, replacing
 * an item of count >= 2 in the history of a user chosen as in
 * assign_cold_tests, from proposals drawn proportional to history length,
 * weighted by the full affinity. Totals stay exact. */
static int cover_items(struct gen *g)
{
	int rc = 0;
	int64_t U = g->U, nu = 0;
	float *ap = NULL;
	int32_t *aj = NULL, *small = NULL, *large = NULL;
	double *w = NULL;
	memset(g->count, 0, g->I * sizeof(*g->count));
	for (int64_t u = 0; u < U; u++)
		for (int64_t j = 0; j < warm_slots(g, u); j++)
			g->count[g->items[g->off[u] + j]]++;
	int32_t *todo = g->iscratch;
	for (int64_t i = 0; i < g->I; i++)
		if (!g->cold[i] && !g->count[i])
			todo[nu++] = (int32_t)i;
	if (!nu)
		goto leave;
	ap = malloc(U * sizeof(*ap));
	aj = malloc(U * sizeof(*aj));
	small = malloc(U * sizeof(*small));
	large = malloc(U * sizeof(*large));
	w = malloc(U * sizeof(*w));
	if (!ap || !aj || !small || !large || !w) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (int64_t u = 0; u < U; u++)
		w[u] = (double)warm_slots(g, u);
	alias_build(w, U, ap, aj, small, large, w);
	struct rng r;
	rng_seed(&r, g->o->seed, ST_COVER, 0);
	shuffle_i32(&r, todo, nu);
	for (int64_t k = 0; k < nu; k++) {
		int32_t i = todo[k];
		for (int round = 0; round < 16 && !g->count[i]; round++) {
			int64_t u = 0;
			double best = -DBL_MAX;
			for (int t = 0; t < SIR_PROPOSALS; t++) {
				int64_t v = rng_below(&r, U);
				if (rng_u01(&r) >= ap[v])
					v = aj[v];
				double s = beta_visual * visual_affinity(g, v, i) +
					   beta_latent * latent_affinity(g, v, i) + gumbel(&r);
				if (s > best) {
					best = s;
					u = v;
				}
			}
			int32_t *hist = g->items + g->off[u];
			for (int t = 0; t < 32; t++) {
				int64_t j = rng_below(&r, warm_slots(g, u));
				if (g->count[hist[j]] >= 2) {
					g->count[hist[j]]--;
					hist[j] = i;
					g->count[i] = 1;
					g->st.coverage_moves++;
					break;
				}
			}
		}
	}
leave:
	free(ap);
	free(aj);
	free(small);
	free(large);
	free(w);
	return rc;
}

/* Moves each warm-test user's test item to its last slot: one of its items
 * that keeps a training interaction elsewhere (count >= 2 before taking
 * it), so that among warm items none is seen only in test. Counts warm
 * items that end up test-only or unseen anyway (expected 0). */
static void choose_tests(struct gen *g)
{
	struct rng r;
	for (int64_t u = 0; u < g->U; u++) {
		if (g->cold_item[u] >= 0)
			continue;
		int64_t n = g->n[u], pick = -1;
		int32_t *hist = g->items + g->off[u];
		rng_seed(&r, g->o->seed, ST_TEST, (uint64_t)u);
		for (int t = 0; t < 64 && pick < 0; t++) {
			int64_t j = rng_below(&r, n);
			if (g->count[hist[j]] >= 2)
				pick = j;
		}
		for (int64_t j = 0; j < n && pick < 0; j++)
			if (g->count[hist[j]] >= 2)
				pick = j;
		if (pick < 0)
			pick = rng_below(&r, n);
		g->count[hist[pick]]--;
		int32_t t = hist[pick];
		hist[pick] = hist[n - 1];
		hist[n - 1] = t;
	}
	/* count now holds training appearances of warm items */
	for (int64_t i = 0; i < g->I; i++)
		g->mark[i] = 0;
	for (int64_t u = 0; u < g->U; u++)
		if (g->cold_item[u] < 0)
			g->mark[g->items[g->off[u] + g->n[u] - 1]] = 1;
	for (int64_t i = 0; i < g->I; i++)
		if (!g->cold[i] && !g->count[i]) {
			if (g->mark[i])
				g->st.warm_test_only++;
			else
				g->st.warm_unseen++;
		}
}

static int cmp_i32_desc(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x < y) - (x > y);
}

static void compute_stats(struct gen *g)
{
	struct dg_stats *st = &g->st;
	st->users = g->U;
	st->items = g->I;
	st->cold_items = g->C;
	st->warm_items = g->W;
	st->interactions = g->N;
	st->cold_test_users = g->C;
	int64_t mn = INT64_MAX, mx = 0;
	for (int64_t u = 0; u < g->U; u++) {
		mn = g->n[u] < mn ? g->n[u] : mn;
		mx = g->n[u] > mx ? g->n[u] : mx;
	}
	st->activity_min = mn;
	st->activity_max = mx;
	st->activity_mean = (double)g->N / (double)g->U;
	int64_t *cp = (int64_t *)g->dscratch;
	memcpy(cp, g->n, g->U * sizeof(*cp));
	qsort(cp, g->U, sizeof(*cp), cmp_i64);
	st->activity_median = cp[g->U / 2];

	int32_t *cnt = g->iscratch;
	memset(cnt, 0, g->I * sizeof(*cnt));
	for (int64_t s = 0; s < g->N; s++)
		cnt[g->items[s]]++;
	qsort(cnt, g->I, sizeof(*cnt), cmp_i32_desc);
	int64_t top = (g->I + 9) / 10, sum = 0;
	for (int64_t k = 0; k < top; k++)
		sum += cnt[k];
	st->item_count_max = cnt[0];
	st->top10_share = (double)sum / (double)g->N;
}

/* ---- meta.json ---- */

static cJSON *stats_json(const struct dg_stats *st)
{
	cJSON *s = cJSON_CreateObject();
	cJSON_AddNumberToObject(s, "users", (double)st->users);
	cJSON_AddNumberToObject(s, "items", (double)st->items);
	cJSON_AddNumberToObject(s, "warm_items", (double)st->warm_items);
	cJSON_AddNumberToObject(s, "cold_items", (double)st->cold_items);
	cJSON_AddNumberToObject(s, "interactions", (double)st->interactions);
	cJSON_AddNumberToObject(s, "activity_min", (double)st->activity_min);
	cJSON_AddNumberToObject(s, "activity_median", (double)st->activity_median);
	cJSON_AddNumberToObject(s, "activity_mean", st->activity_mean);
	cJSON_AddNumberToObject(s, "activity_max", (double)st->activity_max);
	cJSON_AddNumberToObject(s, "item_count_max", (double)st->item_count_max);
	cJSON_AddNumberToObject(s, "top10_share", st->top10_share);
	cJSON_AddNumberToObject(s, "cold_test_users", (double)st->cold_test_users);
	cJSON_AddNumberToObject(s, "coverage_moves", (double)st->coverage_moves);
	cJSON_AddNumberToObject(s, "warm_test_only", (double)st->warm_test_only);
	cJSON_AddNumberToObject(s, "warm_unseen", (double)st->warm_unseen);
	cJSON_AddNumberToObject(s, "images_written", (double)st->images_written);
	cJSON_AddNumberToObject(s, "image_bytes", (double)st->image_bytes);
	return s;
}

static int write_meta(const struct gen *g, const char *path)
{
	const struct dg_opts *o = g->o;
	int rc = VR_ENOMEM;
	char seed[24], *text = NULL;
	cJSON *m = cJSON_CreateObject(), *x;
	if (!m)
		goto leave;
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)o->seed);
	cJSON_AddStringToObject(m, "generator", "visrec-datagen");
	cJSON_AddNumberToObject(m, "format", 1);
	cJSON_AddRawToObject(m, "seed", seed);
	cJSON_AddNumberToObject(m, "users", (double)g->U);
	cJSON_AddNumberToObject(m, "items", (double)g->I);
	cJSON_AddNumberToObject(m, "interactions", (double)g->N);
	cJSON_AddNumberToObject(m, "cold_frac", o->cold_frac);
	cJSON_AddNumberToObject(m, "cold_items", (double)g->C);
	cJSON_AddStringToObject(m, "test_split",
				"each user's latest interaction (a strictly later timestamp) is its test item");
	x = cJSON_AddObjectToObject(m, "files");
	cJSON_AddStringToObject(x, "interactions", "interactions.csv");
	cJSON_AddStringToObject(x, "images", o->images ? "images/<item>.jpg" : "");
	cJSON_AddStringToObject(x, "truth_items", "truth_items.csv");
	cJSON_AddStringToObject(x, "truth_users", "truth_users.csv");
	x = cJSON_AddObjectToObject(m, "images");
	cJSON_AddStringToObject(x, "kind", image_kind_names[o->images]);
	cJSON_AddNumberToObject(x, "side_min", o->image_min);
	cJSON_AddNumberToObject(x, "side_max", o->image_max);
	cJSON_AddNumberToObject(x, "aspect_min", ASPECT_MIN);
	cJSON_AddNumberToObject(x, "aspect_max", ASPECT_MAX);
	cJSON_AddNumberToObject(x, "jpeg_quality", JPEG_QUALITY);
	x = cJSON_AddObjectToObject(m, "model");
	cJSON_AddStringToObject(x, "warm_choice",
				"p(u picks i) ~ popularity_i * exp(beta_visual * (vc_u[category_i] + "
				"vh_u[hue_i] + vt_u[texture_i]) + beta_latent * l_u . l_i), "
				"without replacement");
	cJSON_AddStringToObject(x, "cold_choice",
				"each cold item is the test item of one user, p(u) about ~ "
				"exp(beta_visual * visual affinity) (resampling 64 uniform proposals)");
	cJSON_AddNumberToObject(x, "beta_visual", beta_visual);
	cJSON_AddNumberToObject(x, "beta_latent", beta_latent);
	cJSON_AddStringToObject(x, "popularity", "lognormal(0, popularity_sigma)");
	cJSON_AddNumberToObject(x, "popularity_sigma", popularity_sigma);
	cJSON_AddStringToObject(x, "tastes",
				"vc, vh ~ N(0, 1); vt ~ N(0, texture_sd^2); l_u ~ N(0, I); "
				"l_i = centroid of the item's cluster, ~ N(0, I / latent_dims)");
	cJSON_AddNumberToObject(x, "texture_sd", taste_sd_texture);
	cJSON_AddNumberToObject(x, "latent_dims", DG_LATENT_DIMS);
	cJSON_AddNumberToObject(x, "latent_clusters", DG_CLUSTERS);
	cJSON_AddItemToObject(x, "categories",
			      cJSON_CreateStringArray(o->images == DG_IMAGES_FASHION_MNIST ? garment_names :
					   category_names, DG_CATEGORIES));
	cJSON_AddItemToObject(x, "hues", cJSON_CreateStringArray(hue_names, DG_HUES));
	cJSON_AddItemToObject(x, "textures", cJSON_CreateStringArray(texture_names, DG_TEXTURES));
	cJSON_AddStringToObject(x, "activity",
				"lognormal quantiles with median/mean = 16/90, clamped to "
				"[4, activity_cap], scaled to the interaction total");
	cJSON_AddNumberToObject(x, "activity_cap", (double)g->cap);
	cJSON_AddItemToObject(m, "stats", stats_json(&g->st));
	text = cJSON_Print(m);
	if (!text)
		goto leave;
	size_t len = strlen(text);
	text[len] = '\n'; /* replaces the terminator; written with its length */
	rc = dg__write_file(path, text, len + 1);
leave:
	free(text);
	cJSON_Delete(m);
	return rc;
}

void dg_opts_default(struct dg_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->users = 1079;
	opts->items = 9633;
	opts->interactions = 97000;
	opts->seed = 1;
	opts->cold_frac = 0.05;
	opts->image_min = 96;
	opts->image_max = 500;
	opts->images = DG_IMAGES_PROCEDURAL;
}

#define CHECK(cond, ...) do { \
		if (!(cond)) { \
			if (err) \
				snprintf(err, errlen, __VA_ARGS__); \
			return VR_EINVAL; \
		} \
	} while (0)

/* Validates o and derives the sizes into g (when not NULL). */
static int setup(const struct dg_opts *o, struct gen *g, char *err, int errlen)
{
	CHECK(o->out_dir && *o->out_dir, "--out DIR is required");
	CHECK(o->users >= 2, "--users %lld: need at least 2", (long long)o->users);
	CHECK(o->users <= INT32_MAX, "--users %lld: at most %d", (long long)o->users, INT32_MAX);
	CHECK(o->items >= 20 && o->items <= 100000000, "--items %lld: need 20 to 100000000",
	      (long long)o->items);
	CHECK(o->interactions >= ACTIVITY_MIN * o->users,
	      "--interactions %lld: need at least %d per user (%lld)", (long long)o->interactions,
	      ACTIVITY_MIN, (long long)(ACTIVITY_MIN * o->users));
	CHECK(o->cold_frac >= 0 && o->cold_frac <= 0.5, "--cold-frac %g: need 0 to 0.5", o->cold_frac);
	CHECK(o->image_min >= 16 && o->image_max <= 4096 && o->image_min <= o->image_max,
	      "--image-min %d --image-max %d: need 16 <= min <= max <= 4096", o->image_min,
	      o->image_max);
	CHECK(o->images >= DG_IMAGES_NONE && o->images <= DG_IMAGES_FASHION_MNIST,
	      "unknown image kind %d", (int)o->images);
	if (o->images == DG_IMAGES_FASHION_MNIST) {
		char probe[PATH_MAX];
		const char *dir = o->fashion_dir ? o->fashion_dir : DG_FASHION_MNIST_DIR;
		snprintf(probe, sizeof(probe), "%s/%s", dir, dg__fashion_files[0][0]);
		CHECK(!access(probe, R_OK), "--images fashion-mnist: %s is missing; install "
		      "Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)", probe);
	}
	int64_t C = llround(o->cold_frac * (double)o->items);
	if (C > o->users / 2)
		C = o->users / 2;
	int64_t W = o->items - C;
	int64_t cap = llround(ACTIVITY_MAX_OVER_MEAN * (double)o->interactions / (double)o->users);
	if (cap > W / 2)
		cap = W / 2;
	CHECK(o->interactions <= o->users * cap,
	      "--interactions %lld: at most %lld for %lld users (each user has at most %lld, "
	      "half the warm items or %.1f x the mean)", (long long)o->interactions,
	      (long long)(o->users * cap), (long long)o->users, (long long)cap,
	      ACTIVITY_MAX_OVER_MEAN);
	if (!g)
		return 0;
	g->o = o;
	g->U = o->users;
	g->I = o->items;
	g->N = o->interactions;
	g->C = C;
	g->W = W;
	g->cap = cap;
	g->id_digits_u = digits(g->U - 1) > 5 ? digits(g->U - 1) : 5;
	g->id_digits_i = digits(g->I - 1) > 6 ? digits(g->I - 1) : 6;
	return 0;
}

int dg_check_opts(const struct dg_opts *opts, char *err, int errlen)
{
	return setup(opts, NULL, err, errlen);
}

int dg_generate(const struct dg_opts *opts, struct dg_stats *stats)
{
	struct gen g;
	char path[PATH_MAX];
	memset(&g, 0, sizeof(g));
	int rc = setup(opts, &g, NULL, 0);
	if (rc || (rc = alloc_all(&g)))
		goto leave;
	make_items(&g);
	make_cells(&g);
	make_users(&g);
	assign_cold_tests(&g);
	for (int64_t i = 0; i < g.I; i++)
		g.mark[i] = -1;
	for (int64_t u = 0; u < g.U; u++)
		sample_user(&g, u);
	if ((rc = cover_items(&g)))
		goto leave;
	choose_tests(&g);
	compute_stats(&g);

	if ((rc = dg__make_dirs(opts->out_dir)) ||
	    (rc = dg__path_join(path, sizeof(path), opts->out_dir, "interactions.csv")) ||
	    (rc = dg__write_interactions(&g, path)) ||
	    (rc = dg__path_join(path, sizeof(path), opts->out_dir, "truth_items.csv")) ||
	    (rc = dg__write_truth_items(&g, path)) ||
	    (rc = dg__path_join(path, sizeof(path), opts->out_dir, "truth_users.csv")) ||
	    (rc = dg__write_truth_users(&g, path)))
		goto leave;
	if (opts->images != DG_IMAGES_NONE) {
		if ((rc = dg__path_join(path, sizeof(path), opts->out_dir, "images")) ||
		    (rc = dg__make_dirs(path)) || (rc = dg__write_images(&g, path)))
			goto leave;
	}
	if ((rc = dg__path_join(path, sizeof(path), opts->out_dir, "meta.json")) ||
	    (rc = write_meta(&g, path)))
		goto leave;
	if (stats)
		*stats = g.st;
leave:
	free_all(&g);
	return rc;
}

/* ---- flags ---- */

const char *dg_usage(void)
{
	return "--out DIR            where to write (created if missing; required)\n"
	       "--users N            users (default 1079)\n"
	       "--items N            items (default 9633, at most 100000000)\n"
	       "--interactions N     interactions in total (default 97000, >= 4 per user)\n"
	       "--seed S             random seed; the same flags give identical files (default 1)\n"
	       "--cold-frac F        share of items seen only as test items (default 0.05,\n"
	       "                     at most users/2 items)\n"
	       "--image-min PX       smallest image side (default 96)\n"
	       "--image-max PX       largest image side (default 500)\n"
	       "--images KIND        procedural (default), fashion-mnist (garment photos of\n"
	       "                     the item's class; needs Debian's dataset-fashion-mnist),\n"
	       "                     or none\n"
	       "--no-images          the same as --images none (for large benchmark sets)\n";
}

int dg_parse_args(int argc, char **argv, struct dg_opts *opts, char *err, int errlen)
{
	/* No defaults in the table: opts holds them (dg_opts_default), and
	 * dg_usage documents the flags. */
	const char *images = NULL;
	int no_images = 0;
	const vr_flag table[] = {
		{ "out", NULL, VR_FLAG_STRING, &opts->out_dir, NULL, NULL, 0 },
		{ "users", NULL, VR_FLAG_INT64, &opts->users, NULL, NULL, 0 },
		{ "items", NULL, VR_FLAG_INT64, &opts->items, NULL, NULL, 0 },
		{ "interactions", NULL, VR_FLAG_INT64, &opts->interactions, NULL, NULL, 0 },
		{ "seed", NULL, VR_FLAG_UINT64, &opts->seed, NULL, NULL, 0 },
		{ "cold-frac", NULL, VR_FLAG_DOUBLE, &opts->cold_frac, NULL, NULL, 0 },
		{ "image-min", NULL, VR_FLAG_INT, &opts->image_min, NULL, NULL, 0 },
		{ "image-max", NULL, VR_FLAG_INT, &opts->image_max, NULL, NULL, 0 },
		{ "images", NULL, VR_FLAG_STRING, &images, NULL, NULL, 0 },
		{ "no-images", NULL, VR_FLAG_BOOL, &no_images, NULL, NULL, 0 },
		{ 0 },
	};
	/* vr_flags_parse skips argv[0], a program name, which ours lack. */
	char **args = malloc(((size_t)argc + 1) * sizeof *args);
	if (!args)
		return VR_ENOMEM;
	args[0] = "datagen";
	if (argc > 0)
		memcpy(args + 1, argv, (size_t)argc * sizeof *args);
	int rc = vr_flags_parse(table, argc + 1, args, err, (size_t)errlen);
	free(args);
	if (rc)
		return rc;
	if (images) {
		int kind = -1;
		for (int k = 0; k < 3; k++)
			if (!strcmp(images, image_kind_names[k]))
				kind = k;
		if (kind < 0) {
			snprintf(err, (size_t)errlen, "--images %s: not procedural, fashion-mnist or none",
				 images);
			return VR_EINVAL;
		}
		opts->images = (enum dg_images)kind;
	}
	if (no_images)
		opts->images = DG_IMAGES_NONE;
	return dg_check_opts(opts, err, errlen);
}
