/* The `visrec` commands that work on files only: datagen, showcase,
 * report. */
#include "cli.h"

#include "datagen.h"
#include "err.h"
#include "report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_cmd_datagen(cli *c, int argc, char **argv)
{
	struct dg_opts o;
	struct dg_stats st;
	char err[256];
	char **rest = NULL;
	int nrest = 0;
	/* The global flags (--json) are ours; the rest are datagen's. */
	int code = cli_take_globals(c, argc, argv, &rest, &nrest);
	if (code)
		return code;
	dg_opts_default(&o);
	int rc = dg_parse_args(nrest, rest, &o, err, sizeof err);
	if (rc == VR_FLAGS_HELP) {
		printf("usage: visrec datagen --out DIR [flags]\n%s", dg_usage());
		free(rest);
		return CLI_EXIT_OK;
	}
	if (rc) {
		fprintf(stderr, "visrec datagen: %s\nusage: visrec datagen --out DIR [flags]\n%s", err,
			dg_usage());
		free(rest);
		return CLI_EXIT_USAGE;
	}
	struct progress p;
	progress_start(&p, "datagen", "images", c->progress);
	o.progress = progress_show;
	o.progress_ctx = &p;
	rc = dg_generate(&o, &st);
	double seconds = vr_now_s() - p.t0;
	if (rc) {
		code = cli_fail(c, argv[0], "writing %s failed: %s", o.out_dir, vr_strerror(rc));
		free(rest);
		return code;
	}
	if (cli_wants_json(c)) {
		cJSON *j = cJSON_CreateObject();
		if (j) {
			cJSON_AddStringToObject(j, "out", o.out_dir);
			cJSON_AddNumberToObject(j, "seconds", seconds);
			cJSON_AddNumberToObject(j, "users", (double)st.users);
			cJSON_AddNumberToObject(j, "items", (double)st.items);
			cJSON_AddNumberToObject(j, "cold_items", (double)st.cold_items);
			cJSON_AddNumberToObject(j, "interactions", (double)st.interactions);
			cJSON_AddNumberToObject(j, "activity_min", (double)st.activity_min);
			cJSON_AddNumberToObject(j, "activity_median", (double)st.activity_median);
			cJSON_AddNumberToObject(j, "activity_mean", st.activity_mean);
			cJSON_AddNumberToObject(j, "activity_max", (double)st.activity_max);
			cJSON_AddNumberToObject(j, "cold_test_users", (double)st.cold_test_users);
			cJSON_AddNumberToObject(j, "images_written", (double)st.images_written);
			cJSON_AddNumberToObject(j, "image_bytes", (double)st.image_bytes);
		}
		code = cli_output(c, j);
	}
	if (!c->json) {
		printf("wrote %s in %.1f s: %lld users, %lld items (%lld cold), %lld interactions, "
		       "%lld images (%.1f MB); activity per user min %lld, median %lld, mean %.1f, "
		       "max %lld\n", o.out_dir, seconds, (long long)st.users, (long long)st.items,
		       (long long)st.cold_items, (long long)st.interactions,
		       (long long)st.images_written, st.image_bytes / 1e6,
		       (long long)st.activity_min, (long long)st.activity_median, st.activity_mean,
		       (long long)st.activity_max);
	}
	free(rest);
	return code;
}

int cli_cmd_showcase(cli *c, int argc, char **argv)
{
	const char *data = NULL;
	int n, cold_items, code, npos = 0;
	const vr_flag table[] = {
		{ "data", NULL, VR_FLAG_STRING, &data, NULL, "the data set's folder", 1 },
		{ "n", NULL, VR_FLAG_INT, &n, "16", "how many users (also -n)", 0 },
		{ "cold-items", NULL, VR_FLAG_BOOL, &cold_items, "false",
		  "print the cold test items of those users instead (for `visrec audience --item`)", 0 },
		{ 0 },
	};
	char err[512];
	rp_dataset *ds = NULL;
	rp_user *users = NULL;
	code = cli_parse(c, table, argc, argv, "visrec showcase --data DIR [-n N]",
			 "Picks users to show in the report, the same ones every time: about half whose\n"
			 "test item is cold, spread over the users. Prints their ids comma-separated\n"
			 "(for `visrec recommend --user`).", NULL, &npos);
	if (code || npos < 0)
		goto leave;
	if (n < 1 || n > 4096) {
		code = cli_usage_error(argv[0], "-n must be 1..4096");
		goto leave;
	}
	int rc = rp_dataset_load(&ds, data, err, sizeof err);
	if (rc) {
		code = cli_fail(c, argv[0], "%s", err);
		goto leave;
	}
	if (!(users = calloc((size_t)n, sizeof *users))) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	size_t got = rp_pick_users(ds, (size_t)n, users);
	if (cli_wants_json(c)) {
		cJSON *a = cJSON_CreateArray();
		for (size_t i = 0; a && i < got; i++) {
			cJSON *u = cJSON_CreateObject();
			cJSON_AddStringToObject(u, "user_id", users[i].id);
			cJSON_AddStringToObject(u, "test_item", users[i].test_item);
			cJSON_AddBoolToObject(u, "test_cold", users[i].test_cold);
			cJSON_AddNumberToObject(u, "train_items", (double)users[i].n_train);
			cJSON_AddItemToArray(a, u);
		}
		code = cli_output(c, a);
	}
	if (!c->json) {
		for (size_t i = 0, w = 0; i < got; i++)
			if (!cold_items || users[i].test_cold)
				printf("%s%s", w++ ? "," : "", cold_items ? users[i].test_item : users[i].id);
		putchar('\n');
	}
leave:
	free(users);
	rp_dataset_free(ds);
	return code;
}

int cli_cmd_report(cli *c, int argc, char **argv)
{
	rp_opts o = { 0 };
	const char *out = NULL;
	int code, npos = 0;
	const vr_flag table[] = {
		{ "run", NULL, VR_FLAG_STRING, &o.run_dir, NULL,
		  "the pipeline's output folder (train-*.json, eval-*.json, recs-*.json, ...)", 1 },
		{ "data", NULL, VR_FLAG_STRING, &o.data_dir, NULL, "the data set's folder", 1 },
		{ "out", NULL, VR_FLAG_STRING, &out, NULL, "the HTML file; default RUN/report.html", 0 },
		{ "users", NULL, VR_FLAG_INT, &o.users, "4", "users shown", 0 },
		{ "recent", NULL, VR_FLAG_INT, &o.recent, "10", "consumed items shown per user", 0 },
		{ "k", NULL, VR_FLAG_INT, &o.k, "20", "recommendations shown per model", 0 },
		{ 0 },
	};
	char err[1024], *def = NULL;
	code = cli_parse(c, table, argc, argv, "visrec report --run DIR --data DIR [--out FILE]",
			 "Writes a self-contained HTML report of a pipeline run: metrics beside the\n"
			 "tutorial's published table, training curves, and users' consumed items,\n"
			 "recommendations and ground truth as image grids.", NULL, &npos);
	if (code || npos < 0)
		goto leave;
	if (!out) {
		if (!(def = malloc(strlen(o.run_dir) + sizeof "/report.html"))) {
			code = cli_fail(c, argv[0], "out of memory");
			goto leave;
		}
		sprintf(def, "%s/report.html", o.run_dir);
		out = def;
	}
	o.out_file = out;
	int rc = rp_write(&o, err, sizeof err);
	if (rc) {
		code = cli_fail(c, argv[0], "%s", err);
		goto leave;
	}
	if (cli_wants_json(c)) {
		cJSON *j = cJSON_CreateObject();
		if (j)
			cJSON_AddStringToObject(j, "report", out);
		code = cli_output(c, j);
	}
	if (!c->json) {
		printf("report written to %s\n", out);
	}
leave:
	free(def);
	return code;
}
