/* report: the HTML report of a pipeline run (`visrec report`), and the
 * reader of a data set's interactions it needs to show users.
 *
 * The page is one self-contained file: inline CSS, inline SVG charts, a
 * small inline script that checks the images loaded, and <img> elements
 * with paths relative to the page that point at the data set's images.
 * Nothing is fetched from the network.
 *
 * What it reads from the run folder (every file optional; what is missing
 * is said on the page):
 *   train-<model>.json        `visrec --json train` of bpr, vbpr, dvbpr: the
 *                             per-epoch curve, or an error (e.g. DVBPR
 *                             UNIMPLEMENTED in this build)
 *   eval-<model>-<protocol>.json  `visrec --json eval` (standard, tutorial)
 *   recs-<model>.json         `visrec --json recommend --user U1,U2,...`:
 *                             the showcase users' top-k
 *   info.json                 `visrec --json info`
 *   steps.tsv                 the pipeline's steps: name TAB seconds TAB note */
#ifndef VR_REPORT_H
#define VR_REPORT_H

#include <stddef.h>

/* ---- the data set -------------------------------------------------------- */

typedef struct rp_dataset rp_dataset;

typedef struct rp_user {
	const char *id;        /* owned by the data set */
	const char *test_item; /* the user's latest interaction */
	int test_cold;         /* the test item has no training interaction */
	size_t n_train;        /* interactions before the test item */
} rp_user;

typedef struct rp_stats {
	size_t users, items, interactions, cold_items; /* cold: test-only items */
	size_t activity_min, activity_median, activity_max;
	double activity_mean;
	size_t cold_test_users;
} rp_stats;

/* Reads data_dir/interactions.csv (see icsv.h). Returns 0, or an error
 * (-errno, VR_EINVAL for a malformed file or one without users,
 * VR_ENOMEM) with the reason in err. */
int rp_dataset_load(rp_dataset **out, const char *data_dir, char *err, size_t errlen);
/* Frees the data set. NULL is allowed. */
void rp_dataset_free(rp_dataset *ds);
/* The shape of the data set. */
void rp_dataset_stats(const rp_dataset *ds, rp_stats *out);
/* Looks a user up. Returns 0 or VR_ENOTFOUND. */
int rp_dataset_user(const rp_dataset *ds, const char *id, rp_user *out);
/* Writes up to n of the user's training items, most recent first, into
 * out (pointers owned by the data set). Returns how many. */
size_t rp_dataset_recent(const rp_dataset *ds, const char *id, const char **out, size_t n);
/* Picks up to n users to show, the same ones on every call: about half
 * whose test item is cold, the rest warm, spread evenly over the users
 * (by id) that have at least 4 training items where there are enough.
 * Returns how many were written to out. */
size_t rp_pick_users(const rp_dataset *ds, size_t n, rp_user *out);

/* Internal to report.c and report_data.c: formats the reason into err and
 * returns rc. */
int rp__fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* ---- the page ------------------------------------------------------------ */

typedef struct rp_opts {
	const char *run_dir;  /* the files listed above */
	const char *data_dir; /* interactions.csv and images/<item>.jpg */
	const char *out_file; /* written to a temporary file, then renamed */
	int users;            /* users shown; 0 = 4 */
	int recent;           /* consumed items shown per user; 0 = 10 */
	int k;                /* recommendations shown per model; 0 = 20 */
} rp_opts;

/* Writes the report. Returns 0, or an error (-errno writing, VR_EINVAL
 * for unreadable input, VR_ENOMEM) with the reason in err. */
int rp_write(const rp_opts *o, char *err, size_t errlen);

#endif
