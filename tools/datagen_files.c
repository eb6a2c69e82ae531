/* datagen_files: the data set's CSV files (interactions, truth) and the
 * file helpers the generator's other parts share (datagen_int.h). */
#include "datagen_int.h"

#include "err.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define T0 1500000000LL          /* 2017-07-14: first possible timestamp */
#define HORIZON (3LL * 365 * 86400)

/* Closes f; -errno when the final flush fails, VR_EIO when an earlier
 * write did (stdio keeps no errno for it). */
int dg__fclose_checked(FILE *f)
{
	int bad = ferror(f);
	errno = 0;
	if (fclose(f))
		return errno ? -errno : VR_EIO;
	return bad ? VR_EIO : 0;
}

int dg__path_join(char *buf, size_t len, const char *dir, const char *name)
{
	int k = snprintf(buf, len, "%s/%s", dir, name);
	return k < 0 || (size_t)k >= len ? VR_EINVAL : 0;
}

void dg__item_id(const struct gen *g, int64_t i, char *buf, size_t len)
{
	snprintf(buf, len, "i%0*lld", g->id_digits_i, (long long)i);
}

/* Per user: the training items shuffled onto sorted random times inside
 * the user's active span, then the test item strictly later. */
int dg__write_interactions(struct gen *g, const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	char id[32];
	fputs("user,item,timestamp\n", f);
	for (int64_t u = 0; u < g->U; u++) {
		struct rng r;
		int64_t n = g->n[u], ntrain = n - 1;
		int32_t *hist = g->items + g->off[u];
		rng_seed(&r, g->o->seed, ST_TIME, (uint64_t)u);
		shuffle_i32(&r, hist, ntrain);
		int64_t start = T0 + (int64_t)(rng_u01(&r) * 0.7 * HORIZON);
		int64_t span = (int64_t)(rng_u01(&r) * 0.25 * HORIZON) + 3600 * n;
		for (int64_t j = 0; j < ntrain; j++)
			g->times[j] = start + rng_below(&r, span);
		qsort(g->times, ntrain, sizeof(*g->times), cmp_i64);
		g->times[ntrain] = (ntrain ? g->times[ntrain - 1] : start) + 1 +
				   rng_below(&r, 30 * 86400);
		for (int64_t j = 0; j < n; j++) {
			dg__item_id(g, hist[j], id, sizeof(id));
			fprintf(f, "u%0*lld,%s,%lld\n", g->id_digits_u, (long long)u, id,
				(long long)g->times[j]);
		}
	}
	return dg__fclose_checked(f);
}

int dg__write_truth_items(const struct gen *g, const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	char id[32];
	fputs("item,cold,category,hue,texture,cluster,popularity,width,height", f);
	for (int k = 0; k < DG_LATENT_DIMS; k++)
		fprintf(f, ",l%d", k);
	fputc('\n', f);
	for (int64_t i = 0; i < g->I; i++) {
		dg__item_id(g, i, id, sizeof(id));
		fprintf(f, "%s,%d,%d,%d,%d,%d,%.9g,%d,%d", id, g->cold[i], g->cat[i], g->hue[i],
			g->tex[i], g->clu[i], g->pop[i], g->width[i], g->height[i]);
		for (int k = 0; k < DG_LATENT_DIMS; k++)
			fprintf(f, ",%.9g", g->mu[g->clu[i]][k]);
		fputc('\n', f);
	}
	return dg__fclose_checked(f);
}

int dg__write_truth_users(const struct gen *g, const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	fputs("user,test_cold", f);
	for (int k = 0; k < DG_CATEGORIES; k++)
		fprintf(f, ",vc%d", k);
	for (int k = 0; k < DG_HUES; k++)
		fprintf(f, ",vh%d", k);
	for (int k = 0; k < DG_TEXTURES; k++)
		fprintf(f, ",vt%d", k);
	for (int k = 0; k < DG_LATENT_DIMS; k++)
		fprintf(f, ",l%d", k);
	fputc('\n', f);
	for (int64_t u = 0; u < g->U; u++) {
		fprintf(f, "u%0*lld,%d", g->id_digits_u, (long long)u, g->cold_item[u] >= 0);
		for (int k = 0; k < DG_CATEGORIES; k++)
			fprintf(f, ",%.9g", g->vc[u * DG_CATEGORIES + k]);
		for (int k = 0; k < DG_HUES; k++)
			fprintf(f, ",%.9g", g->vh[u * DG_HUES + k]);
		for (int k = 0; k < DG_TEXTURES; k++)
			fprintf(f, ",%.9g", g->vt[u * DG_TEXTURES + k]);
		for (int k = 0; k < DG_LATENT_DIMS; k++)
			fprintf(f, ",%.9g", g->lu[u * DG_LATENT_DIMS + k]);
		fputc('\n', f);
	}
	return dg__fclose_checked(f);
}

int dg__write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -errno;
	fwrite(data, 1, len, f);
	return dg__fclose_checked(f);
}

/* mkdir -p */
int dg__make_dirs(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);
	if (!len || len >= sizeof(buf))
		return VR_EINVAL;
	memcpy(buf, path, len + 1);
	for (size_t k = 1; k <= len; k++) {
		if (buf[k] != '/' && buf[k] != '\0')
			continue;
		char keep = buf[k];
		buf[k] = '\0';
		if (mkdir(buf, 0777) && errno != EEXIST)
			return -errno;
		buf[k] = keep;
	}
	struct stat sb;
	if (stat(path, &sb))
		return -errno;
	return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
}
