/* Tests of the data-set generator (tools/datagen.h): it runs the real
 * generator into temporary folders and checks the files it wrote, reading
 * them back independently (CSV parsing, TurboJPEG decoding), never its
 * internals: determinism, the shape statistics, the test split, cold items,
 * that both the visual and the latent signal are present, and the images. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "datagen.h"
#include "err.h"
#include "harness.h"

/* The small size the brief asks for, with images. */
#define SMALL_USERS 120
#define SMALL_ITEMS 600
#define SMALL_INTERACTIONS 6000

static void rm_tree(const char *dir)
{
	vr_test_rmtree(dir);
}

static char *make_tmpdir(void)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char *d = malloc(strlen(base) + 32);
	sprintf(d, "%s/dgtest.XXXXXX", base);
	if (!mkdtemp(d)) {
		free(d);
		return NULL;
	}
	return d;
}

static int generate(const char *dir, int64_t users, int64_t items, int64_t inter,
		    uint64_t seed, int images)
{
	struct dg_opts o;
	dg_opts_default(&o);
	o.out_dir = dir;
	o.users = users;
	o.items = items;
	o.interactions = inter;
	o.seed = seed;
	o.images = images ? DG_IMAGES_PROCEDURAL : DG_IMAGES_NONE;
	return dg_generate(&o, NULL);
}

/* ---- reading a generated data set back ---- */

struct dataset {
	int64_t users, items, rows;
	int32_t *row_user, *row_item;
	int64_t *row_ts;
	int32_t *test;       /* per user: its latest item */
	int *test_unique;    /* per user: the latest timestamp is strictly latest */
	int32_t *activity;   /* per user: rows */
	int32_t *train_count; /* per item: rows that are not a test row */
	/* truth */
	int *cold, *cat, *hue, *tex, *width, *height;
	float *item_latent;  /* items x 8 */
	float *vc, *vh, *vt, *user_latent;
	int *test_cold;
};

static void dataset_free(struct dataset *d)
{
	void *p[] = { d->row_user, d->row_item, d->row_ts, d->test, d->test_unique, d->activity,
		      d->train_count, d->cold, d->cat, d->hue, d->tex, d->width, d->height,
		      d->item_latent, d->vc, d->vh, d->vt, d->user_latent, d->test_cold };
	for (size_t k = 0; k < sizeof(p) / sizeof(p[0]); k++)
		free(p[k]);
	memset(d, 0, sizeof(*d));
}

/* Splits a line in place at commas; returns the field count. */
static int split(char *line, char **f, int max)
{
	int n = 0;
	f[n++] = line;
	for (char *c = line; *c && n < max; c++)
		if (*c == ',') {
			*c = 0;
			f[n++] = c + 1;
		}
	return n;
}

static char *next_line(char **cur)
{
	char *s = *cur, *e;
	if (!*s)
		return NULL;
	e = strchr(s, '\n');
	if (e) {
		*e = 0;
		*cur = e + 1;
	} else {
		*cur = s + strlen(s);
	}
	return s;
}

/* Loads interactions.csv and both truth files of dir; returns 0 or -1. */
static int dataset_load(const char *dir, int64_t users, int64_t items, struct dataset *d)
{
	char path[4096], *f[64], *line, *cur;
	size_t len;
	memset(d, 0, sizeof(*d));
	d->users = users;
	d->items = items;

	snprintf(path, sizeof(path), "%s/truth_items.csv", dir);
	char *text = (char *)vr_test_read_file(path, &len);
	if (!text)
		return -1;
	d->cold = calloc(items, sizeof(int));
	d->cat = calloc(items, sizeof(int));
	d->hue = calloc(items, sizeof(int));
	d->tex = calloc(items, sizeof(int));
	d->width = calloc(items, sizeof(int));
	d->height = calloc(items, sizeof(int));
	d->item_latent = calloc(items * 8, sizeof(float));
	cur = text;
	next_line(&cur);
	int64_t n = 0;
	while ((line = next_line(&cur))) {
		if (split(line, f, 64) != 17 || n >= items || atoll(f[0] + 1) != n) {
			free(text);
			return -1;
		}
		d->cold[n] = atoi(f[1]);
		d->cat[n] = atoi(f[2]);
		d->hue[n] = atoi(f[3]);
		d->tex[n] = atoi(f[4]);
		d->width[n] = atoi(f[7]);
		d->height[n] = atoi(f[8]);
		for (int k = 0; k < 8; k++)
			d->item_latent[n * 8 + k] = strtof(f[9 + k], NULL);
		n++;
	}
	free(text);
	if (n != items)
		return -1;

	snprintf(path, sizeof(path), "%s/truth_users.csv", dir);
	text = (char *)vr_test_read_file(path, &len);
	if (!text)
		return -1;
	d->vc = calloc(users * 10, sizeof(float));
	d->vh = calloc(users * 8, sizeof(float));
	d->vt = calloc(users * 3, sizeof(float));
	d->user_latent = calloc(users * 8, sizeof(float));
	d->test_cold = calloc(users, sizeof(int));
	cur = text;
	next_line(&cur);
	n = 0;
	while ((line = next_line(&cur))) {
		if (split(line, f, 64) != 31 || n >= users || atoll(f[0] + 1) != n) {
			free(text);
			return -1;
		}
		d->test_cold[n] = atoi(f[1]);
		for (int k = 0; k < 10; k++)
			d->vc[n * 10 + k] = strtof(f[2 + k], NULL);
		for (int k = 0; k < 8; k++)
			d->vh[n * 8 + k] = strtof(f[12 + k], NULL);
		for (int k = 0; k < 3; k++)
			d->vt[n * 3 + k] = strtof(f[20 + k], NULL);
		for (int k = 0; k < 8; k++)
			d->user_latent[n * 8 + k] = strtof(f[23 + k], NULL);
		n++;
	}
	free(text);
	if (n != users)
		return -1;

	snprintf(path, sizeof(path), "%s/interactions.csv", dir);
	text = (char *)vr_test_read_file(path, &len);
	if (!text)
		return -1;
	int64_t cap = (int64_t)len / 20 + 1;
	d->row_user = malloc(cap * sizeof(int32_t));
	d->row_item = malloc(cap * sizeof(int32_t));
	d->row_ts = malloc(cap * sizeof(int64_t));
	cur = text;
	line = next_line(&cur);
	if (!line || strcmp(line, "user,item,timestamp")) {
		free(text);
		return -1;
	}
	n = 0;
	while ((line = next_line(&cur))) {
		if (split(line, f, 4) != 3 || f[0][0] != 'u' || f[1][0] != 'i' || n >= cap) {
			free(text);
			return -1;
		}
		d->row_user[n] = (int32_t)atoll(f[0] + 1);
		d->row_item[n] = (int32_t)atoll(f[1] + 1);
		d->row_ts[n] = atoll(f[2]);
		if (d->row_user[n] < 0 || d->row_user[n] >= users || d->row_item[n] < 0 ||
		    d->row_item[n] >= items) {
			free(text);
			return -1;
		}
		n++;
	}
	free(text);
	d->rows = n;

	d->test = malloc(users * sizeof(int32_t));
	d->test_unique = calloc(users, sizeof(int));
	d->activity = calloc(users, sizeof(int32_t));
	d->train_count = calloc(items, sizeof(int32_t));
	int64_t *latest = malloc(users * sizeof(int64_t));
	for (int64_t u = 0; u < users; u++) {
		latest[u] = INT64_MIN;
		d->test[u] = -1;
	}
	for (int64_t r = 0; r < n; r++) {
		int32_t u = d->row_user[r];
		d->activity[u]++;
		if (d->row_ts[r] > latest[u]) {
			latest[u] = d->row_ts[r];
			d->test[u] = d->row_item[r];
			d->test_unique[u] = 1;
		} else if (d->row_ts[r] == latest[u]) {
			d->test_unique[u] = 0;
		}
	}
	for (int64_t r = 0; r < n; r++)
		if (d->row_item[r] != d->test[d->row_user[r]])
			d->train_count[d->row_item[r]]++;
	free(latest);
	return 0;
}

/* The invariants every generated set keeps, checked from its files: at
 * least 4 interactions per user, a unique latest interaction per user (the
 * test item), cold items (truth_items.csv) only ever as a test item and
 * each exactly once, every warm item in some user's training part, and
 * truth_users.csv's test_cold flag right. Returns the number of cold items,
 * or -1 after a failed assertion. */
static int64_t check_structure(const struct dataset *d)
{
	int64_t cold_items = 0, cold_tests = 0, cold_train_rows = 0, warm_untrained = 0;
	int64_t bad_users = 0, bad_cold = 0;
	int32_t *seen = calloc(d->items, sizeof(int32_t));
	for (int64_t r = 0; r < d->rows; r++) {
		seen[d->row_item[r]]++;
		if (d->cold[d->row_item[r]] && d->test[d->row_user[r]] != d->row_item[r])
			cold_train_rows++;
	}
	for (int64_t u = 0; u < d->users; u++) {
		if (d->activity[u] < 4 || !d->test_unique[u] ||
		    d->test_cold[u] != d->cold[d->test[u]]) {
			if (!bad_users++)
				fprintf(stderr, "  user %lld: %d rows, unique latest %d, cold flag %d "
					"vs %d\n", (long long)u, d->activity[u], d->test_unique[u],
					d->test_cold[u], d->cold[d->test[u]]);
		}
		cold_tests += d->cold[d->test[u]];
	}
	for (int64_t i = 0; i < d->items; i++) {
		cold_items += d->cold[i];
		bad_cold += d->cold[i] && seen[i] != 1;
		warm_untrained += !d->cold[i] && d->train_count[i] == 0;
	}
	free(seen);
	if (bad_users || bad_cold || cold_train_rows || warm_untrained || cold_tests != cold_items) {
		fprintf(stderr, "  bad users %lld, cold items not seen once %lld, cold rows in "
			"training %lld, warm items without training %lld, cold tests %lld of %lld "
			"cold items\n", (long long)bad_users, (long long)bad_cold,
			(long long)cold_train_rows, (long long)warm_untrained, (long long)cold_tests,
			(long long)cold_items);
		return -1;
	}
	return cold_items;
}

/* ---- rankers ---- */

enum ranker { BY_POPULARITY, BY_VISUAL, BY_LATENT };

static double score(const struct dataset *d, enum ranker k, int64_t u, int64_t i)
{
	double s = 0;
	switch (k) {
	case BY_POPULARITY:
		return d->train_count[i];
	case BY_VISUAL:
		return d->vc[u * 10 + d->cat[i]] + d->vh[u * 8 + d->hue[i]] + d->vt[u * 3 + d->tex[i]];
	case BY_LATENT:
		for (int c = 0; c < 8; c++)
			s += (double)d->user_latent[u * 8 + c] * d->item_latent[i * 8 + c];
		return s;
	}
	return s;
}

/* Mean AUC of ranker k for the test item over the user's candidates (all
 * items it has no training interaction with), ties counting half; over
 * users whose test item is cold (which = 1), warm (0) or all (-1). */
static double mean_auc(const struct dataset *d, enum ranker k, int which)
{
	char *seen = calloc(d->items, 1);
	int32_t *rows_of = malloc(d->rows * sizeof(int32_t));
	int64_t *start = calloc(d->users + 1, sizeof(int64_t));
	for (int64_t r = 0; r < d->rows; r++)
		start[d->row_user[r] + 1]++;
	for (int64_t u = 0; u < d->users; u++)
		start[u + 1] += start[u];
	int64_t *fill = malloc(d->users * sizeof(int64_t));
	memcpy(fill, start, d->users * sizeof(int64_t));
	for (int64_t r = 0; r < d->rows; r++)
		rows_of[fill[d->row_user[r]]++] = d->row_item[r];
	double sum = 0;
	int64_t counted = 0;
	for (int64_t u = 0; u < d->users; u++) {
		int32_t t = d->test[u];
		if (which >= 0 && d->cold[t] != which)
			continue;
		for (int64_t r = start[u]; r < start[u + 1]; r++)
			seen[rows_of[r]] = 1;
		double sp = score(d, k, u, t), below = 0;
		int64_t neg = 0;
		for (int64_t i = 0; i < d->items; i++) {
			if (seen[i])
				continue;
			double s = score(d, k, u, i);
			below += s < sp ? 1 : s == sp ? 0.5 : 0;
			neg++;
		}
		for (int64_t r = start[u]; r < start[u + 1]; r++)
			seen[rows_of[r]] = 0;
		sum += below / (double)neg;
		counted++;
	}
	free(seen);
	free(rows_of);
	free(start);
	free(fill);
	return counted ? sum / (double)counted : 0.5;
}

/* ---- tests ---- */

/* Compares every file of a with the same file of b; returns the number of
 * files that differ (or are missing in b), and the number of files seen. */
static int compare_trees(const char *a, const char *b, int *files)
{
	static const char *const top[] = { "interactions.csv", "truth_items.csv",
					   "truth_users.csv", "meta.json" };
	char pa[4096], pb[4096];
	int differ = 0;
	*files = 0;
	for (int k = 0; k < 4 + SMALL_ITEMS; k++) {
		if (k < 4) {
			snprintf(pa, sizeof(pa), "%s/%s", a, top[k]);
			snprintf(pb, sizeof(pb), "%s/%s", b, top[k]);
		} else {
			snprintf(pa, sizeof(pa), "%s/images/i%06d.jpg", a, k - 4);
			snprintf(pb, sizeof(pb), "%s/images/i%06d.jpg", b, k - 4);
		}
		size_t la, lb;
		unsigned char *x = vr_test_read_file(pa, &la), *y = vr_test_read_file(pb, &lb);
		if (x)
			(*files)++;
		if (!x || !y || la != lb || memcmp(x, y, la))
			differ++;
		free(x);
		free(y);
	}
	return differ;
}

TEST(same_seed_same_bytes)
{
	char *a = make_tmpdir(), *b = make_tmpdir(), *c = make_tmpdir();
	int files = 0, same = -1, other = -1;
	ASSERT(a && b && c);
	ASSERT_OK(generate(a, SMALL_USERS, SMALL_ITEMS, SMALL_INTERACTIONS, 7, 1));
	ASSERT_OK(generate(b, SMALL_USERS, SMALL_ITEMS, SMALL_INTERACTIONS, 7, 1));
	ASSERT_OK(generate(c, SMALL_USERS, SMALL_ITEMS, SMALL_INTERACTIONS, 8, 1));
	same = compare_trees(a, b, &files);
	ASSERT_EQ_INT(files, 4 + SMALL_ITEMS);
	ASSERT_EQ_INT(same, 0);
	other = compare_trees(a, c, &files);
	/* a different seed changes every file (images: all but a rare few) */
	ASSERT_MSG(other >= 4 + SMALL_ITEMS * 95 / 100, "only %d of %d files differ", other, files);
	DIR *dir;
	char path[4096];
	snprintf(path, sizeof(path), "%s/images", a);
	ASSERT((dir = opendir(path)) != NULL);
	int entries = 0;
	for (struct dirent *e; (e = readdir(dir));)
		entries += e->d_name[0] != '.';
	closedir(dir);
	ASSERT_EQ_INT(entries, SMALL_ITEMS);
	rm_tree(a);
	rm_tree(b);
	rm_tree(c);
	free(a);
	free(b);
	free(c);
}

static int cmp_int(const void *a, const void *b)
{
	return (*(const int32_t *)a > *(const int32_t *)b) - (*(const int32_t *)a < *(const int32_t *)b);
}

/* The invariants at the small size, over several seeds. */
TEST(structure_small_sizes)
{
	for (uint64_t seed = 1; seed <= 6; seed++) {
		char *dir = make_tmpdir();
		struct dataset d;
		ASSERT(dir);
		int64_t users = SMALL_USERS + 7 * (int64_t)seed;
		ASSERT_OK(generate(dir, users, SMALL_ITEMS, SMALL_INTERACTIONS, seed, 0));
		ASSERT_OK(dataset_load(dir, users, SMALL_ITEMS, &d));
		ASSERT_EQ_INT(d.rows, SMALL_INTERACTIONS);
		int64_t cold = check_structure(&d);
		ASSERT_MSG(cold == 30, "seed %llu: %lld cold items, want round(0.05 * 600)",
			   (unsigned long long)seed, (long long)cold);
		dataset_free(&d);
		rm_tree(dir);
		free(dir);
	}
}

/* The tutorial-sized set (without images) read back: its shape. */
TEST(statistics_default_size)
{
	char *dir = make_tmpdir();
	struct dataset d;
	ASSERT(dir);
	ASSERT_OK(generate(dir, 1079, 9633, 97000, 1, 0));
	ASSERT_OK(dataset_load(dir, 1079, 9633, &d));
	ASSERT_EQ_INT(d.rows, 97000);
	int64_t cold_items = check_structure(&d);
	ASSERT(cold_items >= 0);

	int32_t *act = malloc(d.users * sizeof(int32_t));
	memcpy(act, d.activity, d.users * sizeof(int32_t));
	qsort(act, d.users, sizeof(int32_t), cmp_int);
	int32_t amin = act[0], amed = act[d.users / 2], amax = act[d.users - 1];
	free(act);
	fprintf(stderr, "  activity min %d median %d mean %.1f max %d\n", amin, amed,
		97000.0 / 1079, amax);
	ASSERT(amin >= 4);
	ASSERT_MSG(amed >= 12 && amed <= 22, "median %d not near 16", amed);
	ASSERT_MSG(amax >= 2500 && amax <= 3600, "max %d not near 3,544", amax);

	/* popularity: all appearances, top 10% of items */
	int32_t *cnt = calloc(d.items, sizeof(int32_t));
	for (int64_t r = 0; r < d.rows; r++)
		cnt[d.row_item[r]]++;
	int64_t unseen = 0, top = 0;
	for (int64_t i = 0; i < d.items; i++)
		unseen += cnt[i] == 0;
	qsort(cnt, d.items, sizeof(int32_t), cmp_int);
	for (int64_t k = d.items - (d.items + 9) / 10; k < d.items; k++)
		top += cnt[k];
	free(cnt);
	double share = (double)top / (double)d.rows;
	fprintf(stderr, "  top 10%% of items: %.1f%% of interactions\n", 100 * share);
	ASSERT_MSG(share > 0.35, "top-10%% share %.3f: popularity not long-tailed", share);
	ASSERT_EQ_INT(unseen, 0);

	ASSERT_EQ_INT(cold_items, 482); /* round(0.05 * 9633) */
	fprintf(stderr, "  cold items %lld (%.1f%%) = users with a cold test item\n",
		(long long)cold_items, 100.0 * cold_items / d.items);

	/* meta.json agrees with what we counted */
	char path[4096];
	size_t len;
	snprintf(path, sizeof(path), "%s/meta.json", dir);
	char *text = (char *)vr_test_read_file(path, &len);
	cJSON *m = cJSON_Parse(text);
	free(text);
	ASSERT(m);
	cJSON *st = cJSON_GetObjectItem(m, "stats");
	ASSERT_EQ_INT(cJSON_GetObjectItem(st, "activity_median")->valuedouble, amed);
	ASSERT_EQ_INT(cJSON_GetObjectItem(st, "activity_max")->valuedouble, amax);
	ASSERT_NEAR(cJSON_GetObjectItem(st, "top10_share")->valuedouble, share, 1e-9);
	cJSON_Delete(m);
	dataset_free(&d);
	rm_tree(dir);
	free(dir);
}

/* The data carries popularity, visual and latent signal: rankers that each
 * know only one of them beat chance on the test split, none is perfect. */
TEST(both_signals_present)
{
	char *dir = make_tmpdir();
	struct dataset d;
	ASSERT(dir);
	ASSERT_OK(generate(dir, 1079, 9633, 97000, 3, 0));
	ASSERT_OK(dataset_load(dir, 1079, 9633, &d));
	static const char *const names[] = { "popularity", "visual", "latent" };
	double auc[3][3]; /* ranker x (all, warm, cold) */
	for (int k = 0; k < 3; k++) {
		for (int w = 0; w < 3; w++)
			auc[k][w] = mean_auc(&d, (enum ranker)k, w == 0 ? -1 : w == 1 ? 0 : 1);
		fprintf(stderr, "  AUC %-10s all %.4f  warm-test users %.4f  cold-test users %.4f\n",
			names[k], auc[k][0], auc[k][1], auc[k][2]);
	}
	/* popularity can't rank cold items (no history): judge it on warm tests */
	ASSERT_MSG(auc[BY_POPULARITY][1] > 0.55 && auc[BY_POPULARITY][1] < 0.98,
		   "popularity AUC %.4f", auc[BY_POPULARITY][1]);
	ASSERT_MSG(auc[BY_VISUAL][0] > 0.55 && auc[BY_VISUAL][0] < 0.98, "visual AUC %.4f",
		   auc[BY_VISUAL][0]);
	ASSERT_MSG(auc[BY_VISUAL][2] > 0.55, "visual AUC on cold %.4f", auc[BY_VISUAL][2]);
	ASSERT_MSG(auc[BY_LATENT][0] > 0.55 && auc[BY_LATENT][0] < 0.98, "latent AUC %.4f",
		   auc[BY_LATENT][0]);
	ASSERT_MSG(auc[BY_LATENT][1] > 0.55, "latent AUC on warm %.4f", auc[BY_LATENT][1]);
	dataset_free(&d);
	rm_tree(dir);
	free(dir);
}

/* Whether the circular mean hue of the strongly saturated pixels (the
 * shape: backgrounds are drawn with saturation <= 0.3) lies within 25
 * degrees of hue class `hue` (45 degrees apart). */
static int dominant_hue_matches(const unsigned char *rgb, int pixels, int hue)
{
	double sx = 0, sy = 0;
	for (int p = 0; p < pixels; p++) {
		double r = rgb[3 * p] / 255.0, g = rgb[3 * p + 1] / 255.0, b = rgb[3 * p + 2] / 255.0;
		double mx = fmax(r, fmax(g, b)), mn = fmin(r, fmin(g, b)), c = mx - mn;
		if (mx < 0.2 || c / mx < 0.45)
			continue;
		double h = mx == r ? fmod((g - b) / c + 6, 6) : mx == g ? (b - r) / c + 2 : (r - g) / c + 4;
		sx += c * cos(h * M_PI / 3);
		sy += c * sin(h * M_PI / 3);
	}
	double deg = atan2(sy, sx) * 180 / M_PI, want = hue * 45.0;
	double diff = fabs(fmod(deg - want + 540, 360) - 180);
	return diff <= 25;
}

/* Generates the small set with the given images and checks every image:
 * a JPEG a normal decoder opens, of the size recorded in truth_items.csv,
 * at varied sizes and aspect ratios, showing its colour class (see
 * dominant_hue_matches) in at least min_hue_share of the images. */
static void check_images(enum dg_images kind, double min_hue_share)
{
	char *dir = make_tmpdir();
	struct dataset d;
	struct dg_opts o;
	ASSERT(dir);
	dg_opts_default(&o);
	o.out_dir = dir;
	o.users = SMALL_USERS;
	o.items = SMALL_ITEMS;
	o.interactions = SMALL_INTERACTIONS;
	o.seed = 5;
	o.images = kind;
	ASSERT_OK(dg_generate(&o, NULL));
	ASSERT_OK(dataset_load(dir, SMALL_USERS, SMALL_ITEMS, &d));
	tjhandle tj = tjInitDecompress();
	ASSERT(tj);
	unsigned char *rgb = malloc(500 * 500 * 3);
	int sizes_seen[2] = { 1000, 0 }, wide = 0, tall = 0, hue_hits = 0;
	for (int64_t i = 0; i < d.items; i++) {
		char path[4096];
		size_t len;
		snprintf(path, sizeof(path), "%s/images/i%06lld.jpg", dir, (long long)i);
		unsigned char *jpg = vr_test_read_file(path, &len);
		ASSERT_MSG(jpg, "%s missing", path);
		int w, h, sub, cs;
		int bad = tjDecompressHeader3(tj, jpg, len, &w, &h, &sub, &cs) ||
			  w != d.width[i] || h != d.height[i] ||
			  tjDecompress2(tj, jpg, len, rgb, w, 0, h, TJPF_RGB, 0);
		free(jpg);
		ASSERT_MSG(!bad, "%s: %dx%d, recorded %dx%d: %s", path, w, h, d.width[i],
			   d.height[i], tjGetErrorStr2(tj));
		ASSERT(w >= 96 && w <= 500 && h >= 96 && h <= 500);
		hue_hits += dominant_hue_matches(rgb, w * h, d.hue[i]);
		sizes_seen[0] = w < sizes_seen[0] ? w : sizes_seen[0];
		sizes_seen[1] = w > sizes_seen[1] ? w : sizes_seen[1];
		wide += w * 4 > h * 5;
		tall += h * 4 > w * 5;
	}
	fprintf(stderr, "  widths %d..%d, %d wide and %d tall of %d\n", sizes_seen[0],
		sizes_seen[1], wide, tall, SMALL_ITEMS);
	fprintf(stderr, "  dominant saturated hue within 25 degrees of the item's class: %d of %d\n",
		hue_hits, SMALL_ITEMS);
	ASSERT(sizes_seen[0] < 150 && sizes_seen[1] > 400 && wide > 20 && tall > 20);
	ASSERT(hue_hits >= min_hue_share * SMALL_ITEMS);
	free(rgb);
	tjDestroy(tj);
	dataset_free(&d);
	rm_tree(dir);
	free(dir);
}

TEST(images_decode_at_recorded_size)
{
	check_images(DG_IMAGES_PROCEDURAL, 0.9);
}

/* The same with garment photos, where Debian's dataset-fashion-mnist is
 * installed. */
TEST(fashion_mnist_images)
{
	if (access(DG_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK))
		SKIP("%s not installed (Debian package dataset-fashion-mnist)", DG_FASHION_MNIST_DIR);
	check_images(DG_IMAGES_FASHION_MNIST, 0.8);
}

TEST(bad_options_say_why)
{
	struct dg_opts o;
	char err[256] = "";
	char *argv1[] = { "--out", "/tmp/x", "--users", "10", "--interactions", "39" };
	dg_opts_default(&o);
	ASSERT_EQ_INT(dg_parse_args(6, argv1, &o, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "--interactions 39");
	char *argv2[] = { "--out", "/tmp/x", "--seed", "abc" };
	dg_opts_default(&o);
	ASSERT_EQ_INT(dg_parse_args(4, argv2, &o, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "--seed: \"abc\" is not a valid");
	char *argv3[] = { "--users", "50" };
	dg_opts_default(&o);
	ASSERT_EQ_INT(dg_parse_args(2, argv3, &o, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "--out");
	char *argv4[] = { "--out", "/tmp/x", "--items", "100", "--users", "10",
			  "--interactions", "2000", "--no-images", "--cold-frac", "0.1" };
	dg_opts_default(&o);
	ASSERT_EQ_INT(dg_parse_args(11, argv4, &o, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "at most");
	argv4[7] = "400";
	dg_opts_default(&o);
	ASSERT_OK(dg_parse_args(11, argv4, &o, err, sizeof(err)));
	ASSERT_EQ_INT(o.images, DG_IMAGES_NONE);
	ASSERT_EQ_INT(o.items, 100);
	ASSERT_NEAR(o.cold_frac, 0.1, 1e-12);
	o.out_dir = "/dev/null/cannot";
	ASSERT(dg_generate(&o, NULL) < 0);
	char *argv5[] = { "--out", "/tmp/x", "--images", "fashion-mnist" };
	dg_opts_default(&o);
	o.fashion_dir = "/nonexistent";
	ASSERT_EQ_INT(dg_parse_args(4, argv5, &o, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "dataset-fashion-mnist");
	argv5[3] = "photos";
	ASSERT_EQ_INT(dg_parse_args(4, argv5, &o, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "--images photos");
}

static const struct vr_test tests[] = {
	T(same_seed_same_bytes),
	T(structure_small_sizes),
	T(statistics_default_size),
	T(both_signals_present),
	T(images_decode_at_recorded_size),
	T(fashion_mnist_images),
	T(bad_options_say_why),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
