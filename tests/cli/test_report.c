/* Tests of the CLI's file side: the interaction CSV reader (icsv.h), the
 * report (report.h) and the .npy header of `visrec vectors` (npy.h), on
 * real files in a temporary folder. */
#include "harness.h"

#include "err.h"
#include "icsv.h"
#include "npy.h"
#include "report.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[256];

static void make_tmp(void)
{
	snprintf(tmp, sizeof tmp, "/tmp/vr-test-report-XXXXXX");
	if (!mkdtemp(tmp))
		abort();
}

static void rm_tmp(void)
{
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", tmp);
}

static void write_file(const char *rel, const char *text)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", tmp, rel);
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	fputs(text, f);
	fclose(f);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* ---- icsv ---------------------------------------------------------------- */

TEST(icsv_header_quotes_crlf_blank_lines)
{
	icsv *r = NULL;
	icsv_row row;
	char path[300];
	make_tmp();
	write_file("a.csv", "user,item,timestamp\r\n\r\nu1,i1,100\r\n\"u,2\",\"i \"\"2\"\"\",-5\n  \n u3 , i3 ,7");
	snprintf(path, sizeof path, "%s/a.csv", tmp);
	ASSERT_OK(icsv_open(&r, path));
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u1");
	ASSERT_STR_EQ(row.item, "i1");
	ASSERT_EQ_INT(row.timestamp, 100);
	ASSERT_EQ_INT(row.line, 3);
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u,2");
	ASSERT_STR_EQ(row.item, "i \"2\"");
	ASSERT_EQ_INT(row.timestamp, -5);
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u3");
	ASSERT_STR_EQ(row.item, "i3");
	ASSERT_EQ_INT(row.line, 6);
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EEOF);
	icsv_close(r);
	rm_tmp();
}

TEST(icsv_columns_by_header_name_or_position)
{
	icsv *r = NULL;
	icsv_row row;
	char path[300];
	make_tmp();
	write_file("b.csv", "ts,extra,item_id,USER\n9,x,i9,u9\n");
	write_file("c.csv", "u1,i1,1\n");
	snprintf(path, sizeof path, "%s/b.csv", tmp);
	ASSERT_OK(icsv_open(&r, path));
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u9");
	ASSERT_STR_EQ(row.item, "i9");
	ASSERT_EQ_INT(row.timestamp, 9);
	icsv_close(r);
	snprintf(path, sizeof path, "%s/c.csv", tmp);
	ASSERT_OK(icsv_open(&r, path));
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u1");
	ASSERT_EQ_INT(row.line, 1);
	icsv_close(r);
	rm_tmp();
}

/* A line may be ICSV_MAX_LINE bytes long, not one more; a longer one is a
 * bad row naming its line, read past without being held. */
TEST(icsv_refuses_a_line_over_the_limit)
{
	icsv *r = NULL;
	icsv_row row;
	char path[300];
	size_t cap = 5 * ICSV_MAX_LINE;
	char *text = malloc(cap);
	ASSERT(text);
	/* u1,i1,1,xxx… (an ignored fourth column) exactly at the limit, then one
	 * byte over it, then much longer, then a good row. */
	int n = snprintf(text, cap, "u0,i0,0\n");
	for (int extra = 0; extra <= 1; extra++) {
		int start = n;
		n += snprintf(text + n, cap - (size_t)n, "u1,i1,1,");
		while (n - start < ICSV_MAX_LINE + extra)
			text[n++] = 'x';
		text[n++] = '\n';
	}
	for (int k = 0; k < 2 * ICSV_MAX_LINE; k++)
		text[n++] = 'y';
	snprintf(text + n, cap - (size_t)n, "\nu9,i9,9\n");
	make_tmp();
	write_file("long.csv", text);
	free(text);
	snprintf(path, sizeof path, "%s/long.csv", tmp);
	ASSERT_OK(icsv_open(&r, path));
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u1");
	ASSERT_EQ_INT(row.line, 2);
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "long.csv:3: the line is longer than 4096 bytes");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "long.csv:4: the line is longer than 4096 bytes");
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u9");
	ASSERT_EQ_INT(row.line, 5);
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EEOF);
	icsv_close(r);
	rm_tmp();
}

TEST(icsv_errors_name_the_line_and_reading_goes_on)
{
	icsv *r = NULL;
	icsv_row row;
	char path[300];
	make_tmp();
	write_file("bad.csv", "user,item,timestamp\nu1,i1,1\nu2,i2,soon\nu3,i3\n\"u4,i4,4\n,i5,5\nu6,i6,6\n");
	snprintf(path, sizeof path, "%s/bad.csv", tmp);
	ASSERT_OK(icsv_open(&r, path));
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "bad.csv:3: timestamp \"soon\" is not integer seconds or ISO 8601");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "bad.csv:4: 2 field(s)");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "bad.csv:5: a quoted field does not end");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "bad.csv:6: the user id is empty");
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u6");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EEOF);
	icsv_close(r);

	write_file("nohead.csv", "who,what,when\nu1,i1,1\n");
	snprintf(path, sizeof path, "%s/nohead.csv", tmp);
	ASSERT_OK(icsv_open(&r, path));
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "nohead.csv:1: expected a header");
	icsv_close(r);
	snprintf(path, sizeof path, "%s/missing.csv", tmp);
	ASSERT(icsv_open(&r, path) < 0);
	rm_tmp();
}

/* The timestamps a user would expect to work (rankd's own CSV parser took
 * these and this reader refused them; the two are one reader now): ISO 8601
 * UTC dates and times, fractional seconds, and a byte order mark before the
 * header. */
TEST(icsv_iso_timestamps_fractions_and_bom)
{
	icsv *r = NULL;
	icsv_row row;
	char path[300];
	make_tmp();
	write_file("iso.csv", "\xef\xbb\xbfuser,item,timestamp\r\n"
			      "u1,i1,100\r\n"
			      " u2 , \"i,2\" ,2021-04-13T13:30:00Z\n"
			      "\"u \"\"3\"\"\",i1,1970-01-02\n"
			      "u4,i4,2000-02-29 23:59:60.5\n"
			      "u1,i1,50.9\n"
			      "u5,i5,-1.5\n"
			      "u6,i6,2021-02-29\n"
			      "u7,i7,2021-04-13T13:30+02:00\n"
			      "u8,i8,2021-4-13\n"
			      "u9,i9,.5\n");
	snprintf(path, sizeof path, "%s/iso.csv", tmp);
	ASSERT_OK(icsv_open(&r, path));
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u1");
	ASSERT_EQ_INT(row.timestamp, 100);
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.item, "i,2");
	ASSERT_EQ_INT(row.timestamp, 1618320600);
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "u \"3\"");
	ASSERT_EQ_INT(row.timestamp, 86400);
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_EQ_INT(row.timestamp, 951868800); /* a leap second reads as the next one */
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_EQ_INT(row.timestamp, 50);
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_EQ_INT(row.timestamp, -1);
	/* Not a date, an offset (only UTC is taken, not guessed), a short
	 * field, no digit before the point. */
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "iso.csv:8: timestamp \"2021-02-29\" is not integer seconds "
				       "or ISO 8601");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "iso.csv:9:");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "iso.csv:10:");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "iso.csv:11:");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EEOF);
	icsv_close(r);

	/* Without a header an ISO timestamp in the first row marks it as data. */
	write_file("noheader.csv", "u1,i1,2021-04-13\n");
	snprintf(path, sizeof path, "%s/noheader.csv", tmp);
	ASSERT_OK(icsv_open(&r, path));
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_EQ_INT(row.line, 1);
	ASSERT_EQ_INT(row.timestamp, 1618272000);
	icsv_close(r);
	rm_tmp();
}

/* ---- the data set -------------------------------------------------------- */

TEST(dataset_test_item_recent_items_and_cold)
{
	rp_dataset *ds = NULL;
	rp_user u;
	rp_stats st;
	const char *recent[8];
	char err[256];
	make_tmp();
	/* Out of order on purpose: the reader sorts by time. d is only ever
	 * u2's test item (cold); c is u1's test item and u3's training item. */
	write_file("interactions.csv", "user,item,timestamp\n"
				       "u1,c,30\nu1,a,10\nu1,b,20\nu2,a,5\nu2,d,50\nu3,c,1\nu3,b,2\n");
	ASSERT_OK(rp_dataset_load(&ds, tmp, err, sizeof err));
	ASSERT_OK(rp_dataset_user(ds, "u1", &u));
	ASSERT_STR_EQ(u.test_item, "c");
	ASSERT_EQ_INT(u.test_cold, 0);
	ASSERT_EQ_INT(u.n_train, 2);
	ASSERT_EQ_INT(rp_dataset_recent(ds, "u1", recent, 8), 2);
	ASSERT_STR_EQ(recent[0], "b");
	ASSERT_STR_EQ(recent[1], "a");
	ASSERT_EQ_INT(rp_dataset_recent(ds, "u1", recent, 1), 1);
	ASSERT_STR_EQ(recent[0], "b");
	ASSERT_OK(rp_dataset_user(ds, "u2", &u));
	ASSERT_STR_EQ(u.test_item, "d");
	ASSERT_EQ_INT(u.test_cold, 1);
	ASSERT_EQ_INT(rp_dataset_user(ds, "nobody", &u), VR_ENOTFOUND);
	rp_dataset_stats(ds, &st);
	ASSERT_EQ_INT(st.users, 3);
	ASSERT_EQ_INT(st.items, 4);
	ASSERT_EQ_INT(st.interactions, 7);
	ASSERT_EQ_INT(st.cold_items, 1);
	ASSERT_EQ_INT(st.cold_test_users, 1);
	ASSERT_EQ_INT(st.activity_min, 2);
	ASSERT_EQ_INT(st.activity_max, 3);
	rp_dataset_free(ds);

	write_file("interactions.csv", "user,item,timestamp\nu1,a,x\n");
	ASSERT_EQ_INT(rp_dataset_load(&ds, tmp, err, sizeof err), VR_EINVAL);
	ASSERT_CONTAINS(err, "interactions.csv:2");
	rm_tmp();
}

/* A random data set: 60 users with 3..12 interactions over 40 warm items,
 * every third user's last item a cold one of its own. */
static void write_random_dataset(uint32_t seed)
{
	char path[512];
	snprintf(path, sizeof path, "%s/interactions.csv", tmp);
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	fprintf(f, "user,item,timestamp\n");
	for (int u = 0; u < 60; u++) {
		seed = seed * 1103515245u + 12345u;
		int n = 3 + (int)(seed >> 16) % 10;
		for (int k = 0; k < n; k++) {
			seed = seed * 1103515245u + 12345u;
			fprintf(f, "u%02d,w%02u,%d\n", u, (seed >> 16) % 40, 100 * u + k);
		}
		if (u % 3 == 0)
			fprintf(f, "u%02d,cold%02d,%d\n", u, u, 100 * u + 99);
		else
			fprintf(f, "u%02d,w%02d,%d\n", u, (u * 7) % 40, 100 * u + 99);
	}
	fclose(f);
}

TEST(pick_users_half_cold_spread_and_stable)
{
	rp_dataset *ds = NULL;
	rp_user a[6], b[6];
	char err[256];
	make_tmp();
	write_random_dataset(42);
	ASSERT_OK(rp_dataset_load(&ds, tmp, err, sizeof err));
	ASSERT_EQ_INT(rp_pick_users(ds, 6, a), 6);
	ASSERT_EQ_INT(rp_pick_users(ds, 6, b), 6);
	int cold = 0;
	for (int i = 0; i < 6; i++) {
		ASSERT_STR_EQ(a[i].id, b[i].id);
		cold += a[i].test_cold;
		ASSERT(a[i].n_train >= 4);
		for (int j = 0; j < i; j++)
			ASSERT(strcmp(a[i].id, a[j].id));
	}
	ASSERT_EQ_INT(cold, 3);
	/* Spread: not simply the first users by id. */
	ASSERT(strcmp(a[2].id, "u10") > 0);
	rp_dataset_free(ds);
	rm_tmp();
}

/* ---- the page ------------------------------------------------------------ */

TEST(report_escapes_text_encodes_paths_and_says_what_is_missing)
{
	char err[512], path[512], dir[512];
	make_tmp();
	snprintf(dir, sizeof dir, "%s/data", tmp);
	mkdir(dir, 0755);
	snprintf(dir, sizeof dir, "%s/run", tmp);
	mkdir(dir, 0755);
	snprintf(dir, sizeof dir, "%s/run/html", tmp);
	mkdir(dir, 0755);
	write_file("data/interactions.csv", "user,item,timestamp\n"
					    "u1,a&b<c>,1\nu1,x y,2\nu1,t1,3\n"
					    "u2,x y,1\nu2,t1,2\nu2,cold1,3\n");
	write_file("run/train-bpr.json",
		   "{\"model\":\"BPR\",\"epochs\":[{\"epoch\":1,\"loss\":0.6,\"val_auc\":0.7},"
		   "{\"epoch\":2,\"loss\":0.5,\"val_auc\":0.75}],\"request\":{\"epochs\":2,"
		   "\"optimizer\":\"<b>\"},\"seconds\":1.5,\"final\":{\"state\":\"finished\"}}\n");
	write_file("run/train-dvbpr.json",
		   "{\"model\":\"DVBPR\",\"epochs\":[],\"error\":{\"status\":\"UNIMPLEMENTED\","
		   "\"message\":\"<script>alert('x')</script> & more\"}}\n");
	write_file("run/train-vbpr.json", "");
	write_file("run/eval-bpr-standard.json",
		   "{\"model\":\"BPR\",\"protocol\":\"standard\",\"results\":[{\"subset\":\"all\","
		   "\"users\":2,\"auc\":0.8125,\"rr\":0.5,\"at_k\":[{\"k\":20,\"recall\":1,"
		   "\"precision\":0.05,\"ndcg\":0.63093},{\"k\":100,\"recall\":1,\"ndcg\":0.63093}]}]}\n");
	write_file("run/recs-bpr.json",
		   "[{\"user_id\":\"u1\",\"items\":[{\"item_id\":\"x y\",\"score\":1,\"cold\":false},"
		   "{\"item_id\":\"t1\",\"score\":0.5,\"cold\":false}]},"
		   "{\"user_id\":\"u2\",\"items\":[{\"item_id\":\"cold1\",\"score\":2,\"cold\":true}]},"
		   "{\"user_id\":\"not-in-data\",\"items\":[]}]\n");
	snprintf(path, sizeof path, "%s/run/html/report.html", tmp);
	char run[512], data[512];
	snprintf(run, sizeof run, "%s/run", tmp);
	snprintf(data, sizeof data, "%s/data", tmp);
	rp_opts o = { .run_dir = run, .data_dir = data, .out_file = path };
	ASSERT_OK(rp_write(&o, err, sizeof err));
	char *html = vr_test_read_file(path, NULL);
	ASSERT(html != NULL);
	/* Text from files is escaped, never markup. */
	ASSERT(!strstr(html, "<script>alert"));
	ASSERT_CONTAINS(html, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more");
	ASSERT_CONTAINS(html, "<b>DVBPR</b>: not available in this build (UNIMPLEMENTED: ");
	ASSERT_CONTAINS(html, "optimizer=&lt;b&gt;");
	/* Image paths: relative from run/html to data, ids percent-encoded. */
	ASSERT_CONTAINS(html, "src=\"../../data/images/a%26b%3Cc%3E.jpg\"");
	ASSERT_CONTAINS(html, "src=\"../../data/images/x%20y.jpg\"");
	ASSERT_CONTAINS(html, "alt=\"a&amp;b&lt;c&gt;\"");
	/* Both users shown; u2's hit (cold1 at rank 1) marked. */
	ASSERT_EQ_INT(count(html, "class=\"user\""), 2);
	ASSERT_CONTAINS(html, "ground truth at rank 1");
	ASSERT_CONTAINS(html, "<span class=\"badge\">hit</span>");
	ASSERT_CONTAINS(html, "<td>0.81250</td>");
	ASSERT_CONTAINS(html, "id=\"published-table\"");
	ASSERT_CONTAINS(html, "<b>VBPR</b>: not run.");
	ASSERT_CONTAINS(html, "<polyline");
	ASSERT(!strstr(html, "http://") || count(html, "http://") == count(html, "http://www.w3.org/2000/svg"));
	free(html);
	snprintf(path, sizeof path, "%s/run/html/report.html.tmp", tmp);
	ASSERT(access(path, F_OK) != 0);

	/* A run folder with nothing in it still gives a page that says so. */
	snprintf(dir, sizeof dir, "%s/empty", tmp);
	mkdir(dir, 0755);
	snprintf(path, sizeof path, "%s/empty/report.html", tmp);
	o.run_dir = dir;
	o.out_file = path;
	ASSERT_OK(rp_write(&o, err, sizeof err));
	html = vr_test_read_file(path, NULL);
	ASSERT(html != NULL);
	ASSERT_CONTAINS(html, "No evaluation results in this run.");
	ASSERT_CONTAINS(html, "No recommendations were collected in this run");
	ASSERT_CONTAINS(html, "src=\"../data/images/t1.jpg\"");
	free(html);

	/* Broken JSON is an error naming the file. */
	write_file("empty/eval-bpr-tutorial.json", "{not json");
	ASSERT_EQ_INT(rp_write(&o, err, sizeof err), VR_EINVAL);
	ASSERT_CONTAINS(err, "eval-bpr-tutorial.json is not valid JSON");
	rm_tmp();
}

/* An evaluation file of model m (bpr, vbpr, dvbpr), standard protocol,
 * with AUCs for all, cold, new and warm, and popularity's 0.5 among new
 * items (its warm AUC 0.6; warm_auc < 0 leaves "warm" out, as an
 * evaluation from before that subset). */
static void write_eval4(const char *m, double all, double cold, double new_auc, double warm_auc)
{
	char name[64], body[1024], warm[128] = "";
	snprintf(name, sizeof name, "run/eval-%s-standard.json", m);
	if (warm_auc >= 0)
		snprintf(warm, sizeof warm,
			 ",{\"subset\":\"warm\",\"users\":5,\"auc\":%g,\"rr\":0.1,\"at_k\":[]}", warm_auc);
	snprintf(body, sizeof body,
		 "{\"model\":\"%s\",\"protocol\":\"standard\",\"results\":["
		 "{\"subset\":\"all\",\"users\":9,\"auc\":%g,\"rr\":0.1,\"at_k\":[]},"
		 "{\"subset\":\"cold\",\"users\":4,\"auc\":%g,\"rr\":0.1,\"at_k\":[]},"
		 "{\"subset\":\"new\",\"users\":4,\"auc\":%g,\"rr\":0.1,\"at_k\":[]}%s],"
		 "\"popularity\":["
		 "{\"subset\":\"all\",\"users\":9,\"auc\":0.5,\"rr\":0.1,\"at_k\":[]},"
		 "{\"subset\":\"cold\",\"users\":4,\"auc\":0.02,\"rr\":0.1,\"at_k\":[]},"
		 "{\"subset\":\"new\",\"users\":4,\"auc\":0.5,\"rr\":0.1,\"at_k\":[]}%s]}\n",
		 m, all, cold, new_auc, warm, warm_auc < 0 ? "" :
		 ",{\"subset\":\"warm\",\"users\":5,\"auc\":0.6,\"rr\":0.1,\"at_k\":[]}");
	write_file(name, body);
}

static void write_eval(const char *m, double all, double cold, double new_auc)
{
	write_eval4(m, all, cold, new_auc, -1);
}

/* The order line: each subset's verdict; among new items BPR must equal
 * popularity (both 0.5) rather than beat it. */
TEST(report_order_line_per_subset)
{
	char err[512], path[600], dir[512], run[512];
	make_tmp();
	snprintf(dir, sizeof dir, "%s/data", tmp);
	mkdir(dir, 0755);
	snprintf(run, sizeof run, "%s/run", tmp);
	mkdir(run, 0755);
	write_file("data/interactions.csv", "user,item,timestamp\nu1,a,1\nu1,b,2\n");
	write_eval("bpr", 0.80, 0.70, 0.5);
	write_eval("vbpr", 0.82, 0.75, 0.6);
	write_eval("dvbpr", 0.81, 0.80, 0.7);
	snprintf(path, sizeof path, "%s/report.html", run);
	rp_opts o = { .run_dir = run, .data_dir = dir, .out_file = path };
	ASSERT_OK(rp_write(&o, err, sizeof err));
	char *html = vr_test_read_file(path, NULL);
	ASSERT(html != NULL);
	ASSERT_CONTAINS(html, "<b>all users: does not hold</b>");
	ASSERT_CONTAINS(html, "<b>cold users: holds</b>");
	ASSERT_CONTAINS(html, "<b>new items (BPR = popularity): holds</b>");
	free(html);
	/* BPR telling new items apart would be a bug the line shows. */
	write_eval("bpr", 0.80, 0.70, 0.55);
	ASSERT_OK(rp_write(&o, err, sizeof err));
	html = vr_test_read_file(path, NULL);
	ASSERT_CONTAINS(html, "<b>new items (BPR = popularity): does not hold</b>");
	/* Evaluations from before the warm subset: the line cannot tell. */
	ASSERT_CONTAINS(html, "<b>warm users among warm items: cannot tell, a model is missing</b>");
	free(html);
	write_eval4("bpr", 0.80, 0.70, 0.5, 0.7);
	write_eval4("vbpr", 0.82, 0.75, 0.6, 0.72);
	write_eval4("dvbpr", 0.81, 0.80, 0.7, 0.74);
	ASSERT_OK(rp_write(&o, err, sizeof err));
	html = vr_test_read_file(path, NULL);
	ASSERT_CONTAINS(html, "<b>warm users among warm items: holds</b>");
	free(html);
	write_eval4("dvbpr", 0.81, 0.80, 0.7, 0.71);
	ASSERT_OK(rp_write(&o, err, sizeof err));
	html = vr_test_read_file(path, NULL);
	ASSERT_CONTAINS(html, "<b>warm users among warm items: does not hold</b>");
	free(html);
	rm_tmp();
}

/* Ids keep the rule of common/ids.h: a row with a bad one is refused by
 * its line, with the reason; a NUL byte anywhere in a line is refused
 * (the rest of the line would vanish unseen), and reading goes on. */
TEST(icsv_refuses_bad_ids)
{
	static const char text[] = "u1,i1,1\n"
				   "u2,caf\xc3,2\n"
				   "u\x01,i3,3\n"
				   "NEWUSER\0tail,i4,4\n"
				   "u5,i\xc2\x85,5\n"
				   "\xe5\xb1\xb1,caf\xc3\xa9,6\n";
	icsv *r = NULL;
	icsv_row row;
	char path[300];
	make_tmp();
	snprintf(path, sizeof path, "%s/ids.csv", tmp);
	FILE *f = fopen(path, "wb");
	ASSERT(f);
	ASSERT_EQ_INT(fwrite(text, 1, sizeof text - 1, f), sizeof text - 1);
	fclose(f);
	ASSERT_OK(icsv_open(&r, path));
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "ids.csv:2: the item id \"caf\\xc3\" is not valid UTF-8 at byte 3");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "ids.csv:3: the user id \"u\\x01\" contains a control character (U+0001)");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "ids.csv:4: a NUL byte at offset 7 of the line");
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EINVAL);
	ASSERT_CONTAINS(icsv_error(r), "ids.csv:5: the item id \"i\\xc2\\x85\" contains a control character (U+0085)");
	ASSERT_OK(icsv_next(r, &row));
	ASSERT_STR_EQ(row.user, "\xe5\xb1\xb1");
	ASSERT_STR_EQ(row.item, "caf\xc3\xa9");
	ASSERT_EQ_INT(row.line, 6);
	ASSERT_EQ_INT(icsv_next(r, &row), VR_EEOF);
	icsv_close(r);
	rm_tmp();
}

/* The header's bytes: magic, version 1.0, little-endian length, the dict
 * NumPy writes, spaces, "\n", 64-byte alignment, for shapes up to the
 * biggest a header must hold. */
TEST(npy_header_shape_dtype_padding)
{
	static const struct {
		uint64_t rows;
		uint32_t cols;
		const char *shape;
	} cases[] = {
		{ 0, 0, "(0, 0)" },
		{ 1, 1, "(1, 1)" },
		{ 3000, 1280, "(3000, 1280)" },
		{ UINT64_MAX, UINT32_MAX, "(18446744073709551615, 4294967295)" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char h[VR_NPY_HEADER + 1];
		ASSERT_EQ_INT(vr_npy_header(h, cases[i].rows, cases[i].cols), VR_NPY_HEADER);
		ASSERT_EQ_INT(VR_NPY_HEADER % 64, 0);
		ASSERT(!memcmp(h, "\x93NUMPY\x01\x00", 8));
		size_t len = (unsigned char)h[8] | (size_t)(unsigned char)h[9] << 8;
		ASSERT_EQ_INT(10 + len, VR_NPY_HEADER);
		ASSERT_EQ_INT(h[VR_NPY_HEADER - 1], '\n');
		h[VR_NPY_HEADER - 1] = 0;
		char want[128];
		snprintf(want, sizeof want, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }",
			 cases[i].shape);
		ASSERT(!strncmp(h + 10, want, strlen(want)));
		for (const char *p = h + 10 + strlen(want); *p; p++)
			ASSERT_MSG(*p == ' ', "padding byte %d at %zu", *p, (size_t)(p - h));
	}
}

/* numpy.load reads what a writer makes the way `visrec vectors` does: a
 * header of 0 rows first, the rows, then the header overwritten. */
TEST(npy_numpy_load_round_trip)
{
	/* The first python3 with numpy: PATH's (a virtual environment), else
	 * Debian's, which python3-numpy fills. */
	const char *py = NULL;
	static const char *const pys[] = { "python3", "/usr/bin/python3" };
	for (size_t i = 0; i < 2 && !py; i++) {
		char probe[128];
		snprintf(probe, sizeof probe, "%s -c 'import numpy' 2>/dev/null", pys[i]);
		if (!system(probe))
			py = pys[i];
	}
	if (!py)
		SKIP("no python3 with numpy (Debian: python3-numpy)");
	make_tmp();
	char path[300], cmd[1200], h[VR_NPY_HEADER];
	snprintf(path, sizeof path, "%s/m.npy", tmp);
	FILE *f = fopen(path, "wb");
	ASSERT(f);
	ASSERT_EQ_INT(fwrite(h, 1, vr_npy_header(h, 0, 0), f), VR_NPY_HEADER);
	float v[5 * 3];
	for (int i = 0; i < 15; i++)
		v[i] = (float)i * 0.25f - 1.0f;
	v[14] = -0.0f;
	ASSERT_EQ_INT(fwrite(v, sizeof(float), 15, f), 15);
	ASSERT_OK(fseek(f, 0, SEEK_SET));
	ASSERT_EQ_INT(fwrite(h, 1, vr_npy_header(h, 5, 3), f), VR_NPY_HEADER);
	ASSERT_OK(fclose(f));
	snprintf(cmd, sizeof cmd,
		 "%s -c 'import numpy as np, sys\n"
		 "a = np.load(sys.argv[1])\n"
		 "w = (np.arange(15, dtype=np.float32) * 0.25 - 1).astype(np.float32).reshape(5, 3)\n"
		 "w[4, 2] = -0.0\n"
		 "assert a.dtype == np.float32 and a.shape == (5, 3), (a.dtype, a.shape)\n"
		 "assert a.flags.c_contiguous\n"
		 "assert a.tobytes() == w.tobytes(), a\n"
		 "e = np.load(sys.argv[2])\n"
		 "assert e.shape == (0, 0) and e.dtype == np.float32, e.shape\n' %s %s/e.npy",
		 py, path, tmp);
	snprintf(path, sizeof path, "%s/e.npy", tmp);
	f = fopen(path, "wb");
	ASSERT(f);
	ASSERT_EQ_INT(fwrite(h, 1, vr_npy_header(h, 0, 0), f), VR_NPY_HEADER);
	ASSERT_OK(fclose(f));
	ASSERT_MSG(system(cmd) == 0, "numpy refused or misread the file (above)");
	rm_tmp();
}

static const struct vr_test tests[] = {
	T(npy_header_shape_dtype_padding),
	T(npy_numpy_load_round_trip),
	T(icsv_header_quotes_crlf_blank_lines),
	T(icsv_columns_by_header_name_or_position),
	T(icsv_errors_name_the_line_and_reading_goes_on), T(icsv_refuses_a_line_over_the_limit),
	T(icsv_refuses_bad_ids),
	T(icsv_iso_timestamps_fractions_and_bom),
	T(dataset_test_item_recent_items_and_cold),
	T(pick_users_half_cold_spread_and_stable),
	T(report_order_line_per_subset),
	T(report_escapes_text_encodes_paths_and_says_what_is_missing),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
