/* visrec-datagen: the data-set generator as a standalone program with the
 * flags of `visrec datagen` (datagen.h), for scripts and tests that need
 * no CLI. Prints the statistics on stdout when done. */
#include <stdio.h>
#include <unistd.h>

#include "datagen.h"
#include "err.h"
#include "flags.h"
#include "progress.h"

int main(int argc, char **argv)
{
	struct dg_opts o;
	struct dg_stats st;
	char err[256];
	struct progress p;
	dg_opts_default(&o);
	int rc = dg_parse_args(argc - 1, argv + 1, &o, err, sizeof(err));
	if (rc == VR_FLAGS_HELP) {
		printf("usage: visrec-datagen --out DIR [flags]\n%s", dg_usage());
		return 0;
	}
	if (rc) {
		fprintf(stderr, "visrec-datagen: %s\nusage: visrec-datagen --out DIR [flags]\n%s",
			err, dg_usage());
		return 2;
	}
	progress_start(&p, "visrec-datagen", "images", isatty(STDERR_FILENO));
	o.progress = progress_show;
	o.progress_ctx = &p;
	rc = dg_generate(&o, &st);
	if (rc) {
		fprintf(stderr, "visrec-datagen: writing %s failed: %s\n", o.out_dir, vr_strerror(rc));
		return 1;
	}
	printf("wrote %s: %lld users, %lld items (%lld cold), %lld interactions, %lld images "
	       "(%.1f MB)\n"
	       "activity per user: min %lld, median %lld, mean %.1f, max %lld\n"
	       "items: most popular %lld interactions, top 10%% of items hold %.1f%%\n"
	       "test items: %lld cold, %lld warm; coverage moves %lld, warm test-only %lld, "
	       "warm unseen %lld\n",
	       o.out_dir, (long long)st.users, (long long)st.items, (long long)st.cold_items,
	       (long long)st.interactions, (long long)st.images_written, st.image_bytes / 1e6,
	       (long long)st.activity_min, (long long)st.activity_median, st.activity_mean,
	       (long long)st.activity_max, (long long)st.item_count_max, 100 * st.top10_share,
	       (long long)st.cold_test_users, (long long)(st.users - st.cold_test_users),
	       (long long)st.coverage_moves, (long long)st.warm_test_only,
	       (long long)st.warm_unseen);
	return 0;
}
