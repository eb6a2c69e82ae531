/* Unit tests of common/log: line format, levels, and that concurrent lines
 * never interleave. stderr is redirected to a temporary file per test. */
#include "harness.h"

#include "err.h"
#include "log.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

static char captured[1 << 16];

/* Runs fn with stderr going to a file, then reads what it wrote. */
static int capture(void (*fn)(void))
{
	char path[] = "/tmp/vr_log_test.XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	unlink(path);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	ssize_t n = pread(fd, captured, sizeof captured - 1, 0);
	close(fd);
	captured[n > 0 ? n : 0] = '\0';
	return n < 0 ? -1 : 0;
}

static void log_two(void)
{
	vr_log_set_component("featured");
	vr_log_set_level(VR_LOG_INFO);
	VR_DEBUG("hidden %d", 1);
	VR_WARN("disk at %d%%\n", 93);
}

TEST(format_and_level)
{
	ASSERT_OK(capture(log_two));
	/* 2026-11-27T07:18:12.123Z WARN featured: disk at 93% */
	int y, mo, d, h, mi, s, ms;
	char level[8], rest[64];
	ASSERT_EQ_INT(sscanf(captured, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ %7s %63[^\n]",
			     &y, &mo, &d, &h, &mi, &s, &ms, level, rest), 9);
	ASSERT_STR_EQ(level, "WARN");
	ASSERT_STR_EQ(rest, "featured: disk at 93%");
	ASSERT(y >= 2024 && ms >= 0 && ms < 1000);
	ASSERT_EQ_INT(strlen(captured), 24 + strlen(" WARN featured: disk at 93%\n"));
	ASSERT(!strstr(captured, "hidden"));
}

TEST(parse_level)
{
	enum vr_log_level l;
	ASSERT_OK(vr_log_parse_level("debug", &l));
	ASSERT_EQ_INT(l, VR_LOG_DEBUG);
	ASSERT_OK(vr_log_parse_level("ERROR", &l));
	ASSERT_EQ_INT(l, VR_LOG_ERROR);
	ASSERT_EQ_INT(vr_log_parse_level("loud", &l), VR_EINVAL);
	vr_log_set_level(VR_LOG_ERROR);
	ASSERT(!vr_log_enabled(VR_LOG_WARN));
	ASSERT(vr_log_enabled(VR_LOG_ERROR));
}

static void *spam(void *arg)
{
	for (int i = 0; i < 200; i++)
		VR_INFO("thread %c line %03d %s", *(char *)arg, i,
			"padding padding padding padding padding padding padding padding");
	return NULL;
}

static void log_threads(void)
{
	static char ids[2] = { 'a', 'b' };
	pthread_t th[2];
	vr_log_set_component("featured");
	vr_log_set_level(VR_LOG_INFO);
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, spam, &ids[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
}

TEST(lines_do_not_interleave)
{
	ASSERT_OK(capture(log_threads));
	int lines = 0;
	size_t first_len = 0;
	/* Every line has the same length; a torn line would not. */
	for (char *p = captured, *nl; (nl = strchr(p, '\n')); p = nl + 1, lines++) {
		*nl = '\0';
		if (lines == 0)
			first_len = strlen(p);
		ASSERT_CONTAINS(p, " INFO featured: thread ");
		ASSERT_MSG(strlen(p) == first_len, "line %d is %zu bytes: %s", lines, strlen(p), p);
	}
	ASSERT_EQ_INT(lines, 400);
}

TEST(long_message_is_cut)
{
	static char big[10000];
	memset(big, 'x', sizeof big - 1);
	vr_log_set_component("featured");
	char path[] = "/tmp/vr_log_test.XXXXXX";
	int fd = mkstemp(path);
	ASSERT(fd >= 0);
	unlink(path);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	VR_ERROR("%s", big);
	dup2(saved, STDERR_FILENO);
	close(saved);
	ssize_t n = pread(fd, captured, sizeof captured - 1, 0);
	close(fd);
	ASSERT(n > 0 && n <= 4096);
	captured[n] = '\0';
	ASSERT_EQ_INT(captured[n - 1], '\n');
	ASSERT_CONTAINS(captured, "xxx...\n");
}

static const struct vr_test tests[] = {
	T(format_and_level),
	T(parse_level),
	T(lines_do_not_interleave),
	T(long_message_is_cut),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
