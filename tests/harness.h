/* A small test harness in the manner of libuv's: tests are named functions,
 * ASSERT_* macros print both values and the source line, and a test binary
 * runs every test or only those named on its command line.
 *
 *   TEST(put_get) { ASSERT_EQ_INT(1, 1); }
 *   static const struct vr_test tests[] = { T(put_get), {0} };
 *   int main(int argc, char **argv) { return vr_test_main(tests, argc, argv); }
 *
 * A test returns normally to pass; an assertion failure returns from the
 * test function with a message, and the binary exits non-zero. SKIP()
 * marks a test skipped with its reason: exit code 77 when every selected
 * test skipped, which ctest reports as skipped (SKIP_RETURN_CODE), never
 * as passed. A name on the command line that matches no test fails the
 * run, so a misspelt or removed test cannot pass by not running.
 *
 * `binary --list` prints every test's name, one per line: CMake registers
 * each as a ctest test of its own from that list (vr_add_test_binary in
 * tests/CMakeLists.txt), so no test can be left out of a hand-kept list.
 * A main that sets things up before vr_test_main skips that work when
 * vr_test_listing() is true; vr_test_main_in_tmpdir is that main for tests
 * that share a temporary directory (and, say, the gRPC library). */
#ifndef VR_TEST_HARNESS_H
#define VR_TEST_HARNESS_H

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct vr_test {
	const char *name;
	void (*fn)(void);
};

static int vr_test__failed;
static int vr_test__skipped;

#define TEST(name) static void test_##name(void)
#define T(name) { #name, test_##name }

#define FAIL_(...) do { \
	fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); \
	vr_test__failed = 1; return; } while (0)

#define ASSERT(cond) do { if (!(cond)) FAIL_("assertion failed: %s", #cond); } while (0)
#define ASSERT_MSG(cond, ...) do { if (!(cond)) FAIL_(__VA_ARGS__); } while (0)
#define ASSERT_EQ_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
	if (a_ != b_) FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_); } while (0)
#define ASSERT_NE_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
	if (a_ == b_) FAIL_("%s != %s: both %lld", #a, #b, a_); } while (0)
#define ASSERT_OK(rc) do { long long r_ = (long long)(rc); \
	if (r_ != 0) FAIL_("%s returned %lld", #rc, r_); } while (0)
#define ASSERT_STR_EQ(a, b) do { const char *a_ = (a), *b_ = (b); \
	if (!a_ || !b_ || strcmp(a_, b_)) FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, \
		a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)
#define ASSERT_CONTAINS(hay, needle) do { const char *h_ = (hay), *n_ = (needle); \
	if (!h_ || !strstr(h_, n_)) FAIL_("%s contains \"%s\": got \"%s\"", #hay, n_, h_ ? h_ : "(null)"); } while (0)
/* |a - b| <= tol * max(1, |b|) */
#define ASSERT_NEAR(a, b, tol) do { double a_ = (double)(a), b_ = (double)(b); \
	double s_ = fabs(b_) > 1 ? fabs(b_) : 1; \
	if (!(fabs(a_ - b_) <= (tol) * s_)) FAIL_("%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, a_, b_, (double)(tol)); } while (0)
#define SKIP(...) do { fprintf(stderr, "  skipped: "); fprintf(stderr, __VA_ARGS__); \
	fputc('\n', stderr); vr_test__skipped = 1; return; } while (0)

/* The whole file at path, with a NUL after it (malloc'd), or NULL; *len
 * (may be NULL) gets its size without the NUL (0 on failure). */
static inline void *vr_test_read_file(const char *path, size_t *len)
{
	if (len)
		*len = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	if (buf) {
		buf[n] = 0;
		if (len)
			*len = (size_t)n;
	}
	return buf;
}

/* Whether the command line asks for the list of tests (--list). */
static inline int vr_test_listing(int argc, char **argv)
{
	return argc == 2 && !strcmp(argv[1], "--list");
}

/* Whether a run with this command line runs the test called name (every
 * test runs when none is named). */
static inline int vr_test_selected(int argc, char **argv, const char *name)
{
	if (argc < 2)
		return 1;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], name))
			return 1;
	return 0;
}

static inline int vr_test_main(const struct vr_test *tests, int argc, char **argv)
{
	int failed = 0, ran = 0, skipped = 0;
	if (vr_test_listing(argc, argv)) {
		for (const struct vr_test *t = tests; t->name; t++)
			printf("%s\n", t->name);
		return fflush(stdout) ? 1 : 0;
	}
	for (int i = 1; i < argc; i++) {
		const struct vr_test *t = tests;
		while (t->name && strcmp(argv[i], t->name))
			t++;
		if (!t->name) {
			fprintf(stderr, "no test is named \"%s\" (%s --list names them)\n", argv[i], argv[0]);
			return 1;
		}
	}
	for (const struct vr_test *t = tests; t->name; t++) {
		if (!vr_test_selected(argc, argv, t->name))
			continue;
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		vr_test__failed = vr_test__skipped = 0;
		t->fn();
		clock_gettime(CLOCK_MONOTONIC, &b);
		double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
		ran++;
		if (vr_test__failed)
			failed++;
		if (vr_test__skipped)
			skipped++;
		fprintf(stderr, "%s %s (%.1f ms)\n",
			vr_test__failed ? "FAIL" : vr_test__skipped ? "skip" : "ok  ", t->name, ms);
	}
	fprintf(stderr, "%d passed, %d failed, %d skipped\n", ran - failed - skipped, failed, skipped);
	if (failed || !ran)
		return 1;
	return skipped == ran ? 77 : 0;
}

static inline int vr_test__rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes a directory tree (a test's scratch directory, daemons' data
 * included). Returns 0 or -1. */
static inline int vr_test_rmtree(const char *dir)
{
	return nftw(dir, vr_test__rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* The main of a binary whose tests share a temporary directory: makes dir
 * (cap bytes) from the mkdtemp template tmpl ("/tmp/vr-x-XXXXXX"), runs
 * init (e.g. vr_rpc_init; NULL for none), the tests and fini, then removes
 * the directory, or keeps it and says so when a test failed or
 * VISREC_TEST_KEEP is set (daemons' logs are in it). --list does none of
 * that. */
static inline int vr_test_main_in_tmpdir(const struct vr_test *tests, int argc, char **argv,
					 char *dir, size_t cap, const char *tmpl,
					 int (*init)(void), void (*fini)(void))
{
	if (vr_test_listing(argc, argv))
		return vr_test_main(tests, argc, argv);
	snprintf(dir, cap, "%s", tmpl);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "cannot make %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (init && init()) {
		fprintf(stderr, "the tests' set-up failed\n");
		vr_test_rmtree(dir);
		return 1;
	}
	int rc = vr_test_main(tests, argc, argv);
	if (fini)
		fini();
	if (rc == 1 || getenv("VISREC_TEST_KEEP"))
		fprintf(stderr, "kept %s\n", dir);
	else
		vr_test_rmtree(dir);
	return rc;
}

#endif
