/* visrec-datagen: the data-set generator as a standalone program, until the
 * operator CLI's `visrec datagen` takes the same flags (datagen.h). Prints
 * the statistics on stdout when done. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "datagen.h"
#include "err.h"

static void progress(void *ctx, int64_t done, int64_t total)
{
	int *tty = ctx;
	if (*tty && (done % 200 == 0 || done == total))
		fprintf(stderr, "\rimages %lld/%lld", (long long)done, (long long)total);
	if (*tty && done == total)
		fputc('\n', stderr);
}

int main(int argc, char **argv)
{
	struct dg_opts o;
	struct dg_stats st;
	char err[256];
	int tty = isatty(2);
	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: visrec-datagen --out DIR [flags]\n%s", dg_usage());
		return 0;
	}
	dg_opts_default(&o);
	if (dg_parse_args(argc - 1, argv + 1, &o, err, sizeof(err))) {
		fprintf(stderr, "visrec-datagen: %s\nusage: visrec-datagen --out DIR [flags]\n%s",
			err, dg_usage());
		return 2;
	}
	o.progress = progress;
	o.progress_ctx = &tty;
	int rc = dg_generate(&o, &st);
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
