/* Units of issue 20: the JSON escaper of common/log.c on hostile strings
 * (every output checked byte for byte; test_prom.py parses whole daemon
 * logs with python3's json), and the Prometheus registry's text (common/prom.c):
 * escaping of label values and HELP, histogram buckets cumulative with
 * +Inf equal to _count, values that read back exactly, and concurrent
 * increments that lose nothing. */
#include "harness.h"
#include "log.h"
#include "prom.h"

#include <pthread.h>
#include <stdint.h>

static void escapes_to(const char *in, const char *want)
{
	char out[256];
	int cut = -1;
	size_t n = vr_log_json_escape(out, sizeof out, in, &cut);
	ASSERT_STR_EQ(out, want);
	ASSERT_EQ_INT(n, strlen(want));
	ASSERT_EQ_INT(cut, 0);
}

TEST(json_escape_specials)
{
	escapes_to("plain", "plain");
	escapes_to("a\"b\\c", "a\\\"b\\\\c");
	escapes_to("\b\f\n\r\t", "\\b\\f\\n\\r\\t");
	escapes_to("\x01\x1f\x7f", "\\u0001\\u001f\x7f");
	escapes_to("</script>", "</script>");
	escapes_to("", "");
}

TEST(json_escape_utf8)
{
	/* Valid: 2, 3 and 4 byte sequences pass unchanged. */
	escapes_to("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	/* A lone continuation byte, a cut sequence, an overlong '/', a
	 * surrogate, past U+10FFFF, 0xff: each bad byte becomes U+FFFD. */
	escapes_to("\x80", "\\ufffd");
	escapes_to("a\xc3", "a\\ufffd");
	escapes_to("\xe2\x82", "\\ufffd\\ufffd");
	escapes_to("\xc0\xaf", "\\ufffd\\ufffd");
	escapes_to("\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd");
	escapes_to("\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd");
	escapes_to("\xff\"", "\\ufffd\\\"");
}

TEST(json_escape_cuts_whole_pieces)
{
	char out[8];
	int cut = 0;
	/* 7 bytes of room: "ab" then \u0001 (6) does not fit whole. */
	size_t n = vr_log_json_escape(out, sizeof out, "ab\x01z", &cut);
	ASSERT_STR_EQ(out, "ab");
	ASSERT_EQ_INT(n, 2);
	ASSERT_EQ_INT(cut, 1);
	n = vr_log_json_escape(out, 4, "a\xe2\x82\xac", &cut);
	ASSERT_STR_EQ(out, "a");
	ASSERT_EQ_INT(cut, 1);
	n = vr_log_json_escape(out, 1, "abc", &cut);
	ASSERT_STR_EQ(out, "");
	ASSERT_EQ_INT(n, 0);
}

static char *render(void)
{
	char *text = NULL;
	size_t len = 0;
	if (vr_prom_render(&text, &len))
		return NULL;
	if (strlen(text) != len) {
		free(text);
		return NULL;
	}
	return text;
}

TEST(prom_text)
{
	vr_prom_family *c = vr_prom_register("t_calls_total", "Calls \\ made\nhere.", VR_PROM_COUNTER,
					     "method,code", NULL, 0);
	ASSERT(c);
	ASSERT(vr_prom_register("t_calls_total", "again", VR_PROM_COUNTER, "method,code", NULL, 0) == c);
	ASSERT(vr_prom_register("t_calls_total", "again", VR_PROM_GAUGE, NULL, NULL, 0) == NULL);
	ASSERT(vr_prom_register("t bad", "x", VR_PROM_GAUGE, NULL, NULL, 0) == NULL);
	ASSERT(vr_prom_register("t_le", "x", VR_PROM_GAUGE, "le", NULL, 0) == NULL);
	vr_prom_series *s = vr_prom_get(c, "a\"b\\c\nd", "OK");
	ASSERT(s);
	ASSERT(vr_prom_get(c, "a\"b\\c\nd", "OK") == s);
	vr_prom_add(s, 2);
	vr_prom_add(s, 1);
	vr_prom_family *g = vr_prom_register("t_ratio", "A gauge.", VR_PROM_GAUGE, NULL, NULL, 0);
	vr_prom_set(vr_prom_get(g), 0.1);
	static const double b[] = { 0.5, 1, 2.5 };
	vr_prom_family *h = vr_prom_register("t_seconds", "A histogram.", VR_PROM_HISTOGRAM, "k", b, 3);
	vr_prom_series *hs = vr_prom_get(h, "x");
	vr_prom_observe(hs, 0.25);
	vr_prom_observe(hs, 0.5); /* le is inclusive */
	vr_prom_observe(hs, 2);
	vr_prom_observe(hs, 100);
	char *text = render();
	ASSERT(text);
	ASSERT_CONTAINS(text, "# HELP t_calls_total Calls \\\\ made\\nhere.\n# TYPE t_calls_total counter\n");
	ASSERT_CONTAINS(text, "t_calls_total{method=\"a\\\"b\\\\c\\nd\",code=\"OK\"} 3\n");
	ASSERT_CONTAINS(text, "# TYPE t_ratio gauge\nt_ratio 0.1\n");
	ASSERT_CONTAINS(text, "t_seconds_bucket{k=\"x\",le=\"0.5\"} 2\n"
			      "t_seconds_bucket{k=\"x\",le=\"1\"} 2\n"
			      "t_seconds_bucket{k=\"x\",le=\"2.5\"} 3\n"
			      "t_seconds_bucket{k=\"x\",le=\"+Inf\"} 4\n"
			      "t_seconds_sum{k=\"x\"} 102.75\n"
			      "t_seconds_count{k=\"x\"} 4\n");
	free(text);
}

static int collected;
static void collect(void *arg)
{
	collected++;
	vr_prom_set(arg, collected);
}

TEST(prom_collector)
{
	vr_prom_series *s = vr_prom_get(vr_prom_register("t_scrapes", "Scrapes.", VR_PROM_GAUGE,
							 NULL, NULL, 0));
	ASSERT_OK(vr_prom_collector(collect, s));
	char *text = render();
	ASSERT(text);
	ASSERT_CONTAINS(text, "\nt_scrapes 1\n");
	free(text);
	vr_prom_collector_remove(collect, s);
	text = render();
	ASSERT(text);
	ASSERT_CONTAINS(text, "\nt_scrapes 1\n");
	ASSERT_EQ_INT(collected, 1);
	free(text);
}

#define THREADS 4
#define ADDS 100000

static void *adder(void *arg)
{
	for (int i = 0; i < ADDS; i++) {
		vr_prom_add(arg, 1);
	}
	return NULL;
}

TEST(prom_concurrent_adds)
{
	vr_prom_series *s = vr_prom_get(vr_prom_register("t_adds_total", "Adds.", VR_PROM_COUNTER,
							 NULL, NULL, 0));
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, adder, s);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	ASSERT_EQ_INT((long long)vr_prom_value(s), THREADS * ADDS);
}

static const struct vr_test tests[] = {
	T(json_escape_specials), T(json_escape_utf8), T(json_escape_cuts_whole_pieces),
	T(prom_text), T(prom_collector), T(prom_concurrent_adds), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
