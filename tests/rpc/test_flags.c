/* Tests of common/flags: types, precedence (default < environment <
 * command line), bool forms, errors, required flags and --help; secrets
 * (tokens) and the files that hold them. */
#include "err.h"
#include "flags.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct cfg {
	const char *listen;
	int threads, verbose;
	uint64_t bytes;
	int64_t count;
	double rate;
};

static void table(struct cfg *c, vr_flag out[7], int require_listen)
{
	const vr_flag t[7] = {
		{ "listen", "VRTEST_LISTEN", VR_FLAG_STRING, &c->listen, NULL, "address", require_listen },
		{ "threads", "VRTEST_THREADS", VR_FLAG_INT, &c->threads, "2", "threads", 0 },
		{ "bytes", "VRTEST_BYTES", VR_FLAG_UINT64, &c->bytes, "1024", "bytes", 0 },
		{ "count", NULL, VR_FLAG_INT64, &c->count, "-1", "count", 0 },
		{ "rate", NULL, VR_FLAG_DOUBLE, &c->rate, "0.5", "rate", 0 },
		{ "verbose", "VRTEST_VERBOSE", VR_FLAG_BOOL, &c->verbose, "false", "verbose", 0 },
		{ 0 },
	};
	memcpy(out, t, sizeof t);
}

static int parse(struct cfg *c, int require, char *err, int argc, char **argv)
{
	vr_flag t[7];
	memset(c, 0, sizeof *c);
	table(c, t, require);
	return vr_flags_parse(t, argc, argv, err, 256);
}

static void clear_env(void)
{
	unsetenv("VRTEST_LISTEN");
	unsetenv("VRTEST_THREADS");
	unsetenv("VRTEST_BYTES");
	unsetenv("VRTEST_VERBOSE");
}

TEST(defaults)
{
	clear_env();
	struct cfg c;
	char err[256];
	char *argv[] = { "prog" };
	ASSERT_OK(parse(&c, 0, err, 1, argv));
	ASSERT(c.listen == NULL);
	ASSERT_EQ_INT(c.threads, 2);
	ASSERT_EQ_INT(c.bytes, 1024);
	ASSERT(c.count == -1);
	ASSERT_NEAR(c.rate, 0.5, 1e-12);
	ASSERT_EQ_INT(c.verbose, 0);
}

TEST(every_type_and_form)
{
	clear_env();
	struct cfg c;
	char err[256];
	char *argv[] = { "prog", "--listen", "127.0.0.1:9", "--threads=-3", "--bytes",
			 "18446744073709551615", "--rate=1e-3", "--verbose" };
	ASSERT_OK(parse(&c, 0, err, 8, argv));
	ASSERT_STR_EQ(c.listen, "127.0.0.1:9");
	ASSERT_EQ_INT(c.threads, -3);
	ASSERT(c.bytes == UINT64_MAX);
	ASSERT_NEAR(c.rate, 1e-3, 1e-12);
	ASSERT_EQ_INT(c.verbose, 1);
	char *argv2[] = { "prog", "--verbose", "--no-verbose" };
	ASSERT_OK(parse(&c, 0, err, 3, argv2));
	ASSERT_EQ_INT(c.verbose, 0);
	char *argv3[] = { "prog", "--verbose=yes" };
	ASSERT_OK(parse(&c, 0, err, 2, argv3));
	ASSERT_EQ_INT(c.verbose, 1);
}

TEST(environment_then_command_line)
{
	clear_env();
	setenv("VRTEST_THREADS", "7", 1);
	setenv("VRTEST_LISTEN", "env:1", 1);
	setenv("VRTEST_VERBOSE", "on", 1);
	struct cfg c;
	char err[256];
	char *argv[] = { "prog", "--threads", "9" };
	int rc = parse(&c, 0, err, 3, argv);
	clear_env();
	ASSERT_OK(rc);
	ASSERT_EQ_INT(c.threads, 9);    /* flag beats environment */
	ASSERT_STR_EQ(c.listen, "env:1"); /* environment beats default */
	ASSERT_EQ_INT(c.verbose, 1);
}

TEST(errors_name_the_flag)
{
	clear_env();
	struct cfg c;
	char err[256];
	char *a1[] = { "prog", "--threads", "many" };
	ASSERT_EQ_INT(parse(&c, 0, err, 3, a1), VR_EINVAL);
	ASSERT_CONTAINS(err, "--threads");
	ASSERT_CONTAINS(err, "many");
	char *a2[] = { "prog", "--nope" };
	ASSERT_EQ_INT(parse(&c, 0, err, 2, a2), VR_EINVAL);
	ASSERT_CONTAINS(err, "unknown flag --nope");
	char *a3[] = { "prog", "--listen" };
	ASSERT_EQ_INT(parse(&c, 0, err, 2, a3), VR_EINVAL);
	ASSERT_CONTAINS(err, "needs a value");
	char *a4[] = { "prog", "stray" };
	ASSERT_EQ_INT(parse(&c, 0, err, 2, a4), VR_EINVAL);
	ASSERT_CONTAINS(err, "stray");
	char *a5[] = { "prog", "--bytes=-1" };
	ASSERT_EQ_INT(parse(&c, 0, err, 2, a5), VR_EINVAL);
	char *a6[] = { "prog", "--threads=99999999999" };
	ASSERT_EQ_INT(parse(&c, 0, err, 2, a6), VR_EINVAL);
	char *a7[] = { "prog", "--no-threads" };
	ASSERT_EQ_INT(parse(&c, 0, err, 2, a7), VR_EINVAL);
	/* An int64 takes what an int cannot, up to INT64_MAX. */
	char *a9[] = { "prog", "--count=99999999999" };
	ASSERT_OK(parse(&c, 0, err, 2, a9));
	ASSERT(c.count == 99999999999LL);
	char *a10[] = { "prog", "--count", "9223372036854775808" };
	ASSERT_EQ_INT(parse(&c, 0, err, 3, a10), VR_EINVAL);
	ASSERT_CONTAINS(err, "not a valid int64");
	setenv("VRTEST_BYTES", "lots", 1);
	char *a8[] = { "prog" };
	int rc = parse(&c, 0, err, 1, a8);
	clear_env();
	ASSERT_EQ_INT(rc, VR_EINVAL);
	ASSERT_CONTAINS(err, "VRTEST_BYTES");
}

TEST(required)
{
	clear_env();
	struct cfg c;
	char err[256];
	char *a1[] = { "prog" };
	ASSERT_EQ_INT(parse(&c, 1, err, 1, a1), VR_EINVAL);
	ASSERT_STR_EQ(err, "--listen is required (or set VRTEST_LISTEN)");
	setenv("VRTEST_LISTEN", "x:1", 1);
	int rc = parse(&c, 1, err, 1, a1);
	clear_env();
	ASSERT_OK(rc);
}

TEST(help)
{
	clear_env();
	struct cfg c;
	char err[256];
	char *a1[] = { "prog", "--threads", "x", "--help" };
	ASSERT_EQ_INT(parse(&c, 1, err, 4, a1), VR_FLAGS_HELP);
	vr_flag t[7];
	table(&c, t, 1);
	char buf[2048] = { 0 };
	FILE *f = fmemopen(buf, sizeof buf - 1, "w");
	vr_flags_usage(f, "prog", "does things", t);
	fclose(f);
	ASSERT_CONTAINS(buf, "usage: prog");
	ASSERT_CONTAINS(buf, "--threads int");
	ASSERT_CONTAINS(buf, "[env VRTEST_THREADS]");
	ASSERT_CONTAINS(buf, "[default 2]");
	ASSERT_CONTAINS(buf, "(required)");
}

TEST(secrets)
{
	char err[256], big[VR_SECRET_MAX + 2];
	ASSERT_OK(vr_flags_check_secret("admin-token", "Ab0-._~+/=", err, sizeof err));
	ASSERT_EQ_INT(vr_flags_check_secret("admin-token", "", err, sizeof err), VR_EINVAL);
	ASSERT_CONTAINS(err, "--admin-token is empty");
	ASSERT_EQ_INT(vr_flags_check_secret("admin-token", "two words", err, sizeof err), VR_EINVAL);
	ASSERT_CONTAINS(err, "character 4 (byte 0x20)");
	ASSERT_EQ_INT(vr_flags_check_secret("admin-token", "caf\xc3\xa9", err, sizeof err), VR_EINVAL);
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = 0;
	ASSERT_EQ_INT(vr_flags_check_secret("admin-token", big, err, sizeof err), VR_EINVAL);
	ASSERT_CONTAINS(err, "at most 256");
	big[VR_SECRET_MAX] = 0;
	ASSERT_OK(vr_flags_check_secret("admin-token", big, err, sizeof err));
}

/* Reads the file with text and mode through vr_flags_read_secret: its rc,
 * the secret in out (or ""), the reason in err. */
static int read_secret(const char *dir, const char *text, size_t len, mode_t mode, char *out,
		       char *err)
{
	char path[128], *got = NULL;
	snprintf(path, sizeof path, "%s/token", dir);
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len || fchmod(fd, mode))
		return -1000;
	close(fd);
	err[0] = 0;
	int rc = vr_flags_read_secret("admin-token-file", path, &got, err, 256);
	snprintf(out, 300, "%s", got ? got : "");
	free(got);
	return rc;
}

TEST(secret_files)
{
	char dir[] = "/tmp/vr_flags_test.XXXXXX", out[300], err[256], path[128];
	ASSERT(mkdtemp(dir));
	ASSERT_OK(read_secret(dir, "tok-1\n", 6, 0600, out, err));
	ASSERT_STR_EQ(out, "tok-1");
	ASSERT_OK(read_secret(dir, "tok-2\r\n", 7, 0400, out, err));
	ASSERT_STR_EQ(out, "tok-2");
	ASSERT_OK(read_secret(dir, "tok-3", 5, 0640, out, err));
	ASSERT_STR_EQ(out, "tok-3");
	ASSERT_EQ_INT(read_secret(dir, "tok-4\n", 6, 0644, out, err), VR_EINVAL);
	ASSERT_CONTAINS(err, "open to every user of this machine (mode 0644); chmod 600");
	ASSERT_STR_EQ(out, "");
	ASSERT_EQ_INT(read_secret(dir, "tok\n", 4, 0602, out, err), VR_EINVAL);
	ASSERT_EQ_INT(read_secret(dir, "", 0, 0600, out, err), VR_EINVAL);
	ASSERT_CONTAINS(err, "is empty");
	ASSERT_EQ_INT(read_secret(dir, "\n", 1, 0600, out, err), VR_EINVAL);
	ASSERT_CONTAINS(err, "is empty");
	ASSERT_EQ_INT(read_secret(dir, "tok\nmore\n", 9, 0600, out, err), VR_EINVAL);
	ASSERT_CONTAINS(err, "more than one line");
	ASSERT_EQ_INT(read_secret(dir, "to k\n", 5, 0600, out, err), VR_EINVAL);
	ASSERT_CONTAINS(err, "cannot travel in a gRPC header");
	ASSERT_EQ_INT(read_secret(dir, "to\0k\n", 5, 0600, out, err), VR_EINVAL);
	ASSERT_CONTAINS(err, "NUL");
	char big[400];
	memset(big, 'y', sizeof big);
	ASSERT_EQ_INT(read_secret(dir, big, sizeof big, 0600, out, err), VR_EINVAL);
	ASSERT_CONTAINS(err, "longer than a token of 256");
	snprintf(path, sizeof path, "%s/absent", dir);
	char *got = NULL;
	ASSERT_EQ_INT(vr_flags_read_secret("admin-token-file", path, &got, err, sizeof err), -ENOENT);
	ASSERT_CONTAINS(err, "cannot open");
	ASSERT_EQ_INT(vr_flags_read_secret("admin-token-file", dir, &got, err, sizeof err), VR_EINVAL);
	ASSERT_CONTAINS(err, "not a regular file");
	ASSERT(!got);
	snprintf(path, sizeof path, "%s/token", dir);
	unlink(path);
	rmdir(dir);
}

static const struct vr_test tests[] = {
	T(defaults), T(every_type_and_form), T(environment_then_command_line),
	T(errors_name_the_flag), T(required), T(help), T(secrets), T(secret_files), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
