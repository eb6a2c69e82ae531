/* flags: a table-driven parser for command lines and VISREC_* environment
 * variables (see flags.h). */
#include "flags.h"

#include "err.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return VR_EINVAL;
}

static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };
	for (int i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = 1;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = 0;
			return 0;
		}
	}
	return VR_EINVAL;
}

static const char *type_word(enum vr_flag_type t)
{
	switch (t) {
	case VR_FLAG_STRING: return "string";
	case VR_FLAG_INT: return "int";
	case VR_FLAG_INT64: return "int64";
	case VR_FLAG_UINT64: return "uint64";
	case VR_FLAG_DOUBLE: return "number";
	case VR_FLAG_BOOL: return "bool";
	}
	return "?";
}

/* Stores text into f's destination. Returns 0 or VR_EINVAL. */
static int store(const vr_flag *f, const char *text)
{
	char *end = NULL;
	errno = 0;
	switch (f->type) {
	case VR_FLAG_STRING:
		*(const char **)f->dest = text;
		return 0;
	case VR_FLAG_INT: {
		long v = strtol(text, &end, 10);
		if (!*text || *end || errno || v < INT_MIN || v > INT_MAX)
			return VR_EINVAL;
		*(int *)f->dest = (int)v;
		return 0;
	}
	case VR_FLAG_INT64: {
		long long v = strtoll(text, &end, 10);
		if (!*text || *end || errno)
			return VR_EINVAL;
		*(int64_t *)f->dest = (int64_t)v;
		return 0;
	}
	case VR_FLAG_UINT64: {
		if (text[0] == '-')
			return VR_EINVAL;
		unsigned long long v = strtoull(text, &end, 10);
		if (!*text || *end || errno)
			return VR_EINVAL;
		*(uint64_t *)f->dest = (uint64_t)v;
		return 0;
	}
	case VR_FLAG_DOUBLE: {
		double v = strtod(text, &end);
		if (!*text || *end || errno || !isfinite(v))
			return VR_EINVAL;
		*(double *)f->dest = v;
		return 0;
	}
	case VR_FLAG_BOOL:
		return parse_bool(text, (int *)f->dest);
	}
	return VR_EINVAL;
}

static const vr_flag *find(const vr_flag *table, const char *name, size_t len)
{
	for (const vr_flag *f = table; f->name; f++)
		if (strlen(f->name) == len && !strncmp(f->name, name, len))
			return f;
	return NULL;
}

int vr_flags_parse(const vr_flag *table, int argc, char **argv, char *err, size_t errlen)
{
	size_t n = 0;
	while (table[n].name)
		n++;
	unsigned char set[n ? n : 1];
	memset(set, 0, sizeof set);

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return VR_FLAGS_HELP;

	for (size_t i = 0; i < n; i++) {
		const vr_flag *f = &table[i];
		if (f->def) {
			if (store(f, f->def))
				return fail(err, errlen, "--%s: bad default \"%s\" (a bug in the flag table)",
					    f->name, f->def);
			set[i] = 1;
		}
		const char *env = f->env ? getenv(f->env) : NULL;
		if (env) {
			if (store(f, env))
				return fail(err, errlen, "%s=\"%s\" is not a valid %s", f->env, env,
					    type_word(f->type));
			set[i] = 1;
		}
	}

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--", 2) || !a[2])
			return fail(err, errlen, "unexpected argument \"%s\" (flags start with --; see --help)", a);
		const char *name = a + 2;
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const char *value = eq ? eq + 1 : NULL;
		const vr_flag *f = find(table, name, len);
		if (!f && len > 3 && !strncmp(name, "no-", 3) && !eq) {
			f = find(table, name + 3, len - 3);
			if (f && f->type == VR_FLAG_BOOL)
				value = "false";
			else
				f = NULL;
		}
		if (!f)
			return fail(err, errlen, "unknown flag --%.*s (see --help)", (int)len, name);
		if (!value) {
			if (f->type == VR_FLAG_BOOL)
				value = "true";
			else if (i + 1 < argc)
				value = argv[++i];
			else
				return fail(err, errlen, "--%s needs a value", f->name);
		}
		if (store(f, value))
			return fail(err, errlen, "--%s: \"%s\" is not a valid %s", f->name, value,
				    type_word(f->type));
		set[f - table] = 1;
	}

	for (size_t i = 0; i < n; i++) {
		const vr_flag *f = &table[i];
		if (f->required && !set[i]) {
			if (f->env)
				return fail(err, errlen, "--%s is required (or set %s)", f->name, f->env);
			return fail(err, errlen, "--%s is required", f->name);
		}
	}
	return 0;
}

void vr_flags_usage(FILE *out, const char *prog, const char *summary, const vr_flag *table)
{
	fprintf(out, "usage: %s [flags]\n", prog);
	if (summary && summary[0])
		fprintf(out, "%s\n", summary);
	fprintf(out, "\nflags (environment variables override defaults; flags override both):\n");
	for (const vr_flag *f = table; f->name; f++) {
		char head[96];
		snprintf(head, sizeof head, "--%s %s", f->name,
			 f->type == VR_FLAG_BOOL ? "" : type_word(f->type));
		fprintf(out, "  %-28s %s", head, f->help ? f->help : "");
		if (f->required)
			fprintf(out, " (required)");
		if (f->def && f->def[0])
			fprintf(out, " [default %s]", f->def);
		if (f->env)
			fprintf(out, " [env %s]", f->env);
		fputc('\n', out);
	}
	fprintf(out, "  %-28s %s\n", "--help", "print this and exit");
}

int vr_flags_check_secret(const char *flag, const char *secret, char *err, size_t errlen)
{
	size_t n = strlen(secret);
	if (!n)
		return fail(err, errlen, "--%s is empty", flag);
	if (n > VR_SECRET_MAX)
		return fail(err, errlen, "--%s is %zu characters; at most %d are accepted", flag, n,
			    VR_SECRET_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)secret[i];
		if (c <= ' ' || c >= 0x7f)
			return fail(err, errlen,
				    "--%s: character %zu (byte 0x%02x) cannot travel in a gRPC header; "
				    "a token is printable ASCII without spaces (e.g. openssl rand -hex 32)",
				    flag, i + 1, c);
	}
	return 0;
}

int vr_flags_read_secret(const char *flag, const char *path, char **out, char *err, size_t errlen)
{
	/* Room for the longest secret, a CR LF, and one byte to see more. */
	char buf[VR_SECRET_MAX + 3];
	struct stat sb;
	ssize_t n = 0;
	int rc = 0;
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		rc = -errno;
		fail(err, errlen, "--%s: cannot open %s: %s", flag, path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		fail(err, errlen, "--%s: cannot stat %s: %s", flag, path, strerror(-rc));
		goto leave;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = fail(err, errlen, "--%s: %s is not a regular file", flag, path);
		goto leave;
	}
	if (sb.st_mode & 007) {
		rc = fail(err, errlen,
			  "--%s: %s is open to every user of this machine (mode %04o); "
			  "chmod 600 it (640 for a group that needs it)", flag, path,
			  (unsigned)(sb.st_mode & 07777));
		goto leave;
	}
	/* A group of the service's own (systemd's Group=, Kubernetes'
	 * runAsGroup with fsGroup) is the usual way to share a secret with a
	 * service; any other group gets a warning. */
	if ((sb.st_mode & 070) && sb.st_gid != getegid())
		VR_WARN("--%s: %s can be read by group %u (mode %04o), not this process's own: every "
			"member can read the secret; chmod 600 it, or give it this service's group",
			flag, path, (unsigned)sb.st_gid, (unsigned)(sb.st_mode & 07777));
	for (ssize_t r; (size_t)n < sizeof buf; n += r) {
		r = read(fd, buf + n, sizeof buf - (size_t)n);
		if (r < 0 && errno == EINTR) {
			r = 0;
			continue;
		}
		if (r < 0) {
			rc = -errno;
			fail(err, errlen, "--%s: cannot read %s: %s", flag, path, strerror(-rc));
			goto leave;
		}
		if (!r)
			break;
	}
	size_t len = 0;
	while (len < (size_t)n && buf[len] != '\n')
		len++;
	size_t line = len;
	if (line && buf[line - 1] == '\r')
		line--;
	if (len < (size_t)n && len + 1 < (size_t)n) {
		rc = fail(err, errlen, "--%s: %s holds more than one line; put the token alone on "
			  "its first line", flag, path);
		goto leave;
	}
	if ((size_t)n == sizeof buf && len == (size_t)n) {
		rc = fail(err, errlen, "--%s: %s is longer than a token of %d characters", flag, path,
			  VR_SECRET_MAX);
		goto leave;
	}
	if (!line) {
		rc = fail(err, errlen, "--%s: %s is empty; put the token on its first line", flag, path);
		goto leave;
	}
	if (memchr(buf, 0, line)) {
		rc = fail(err, errlen, "--%s: %s holds a NUL byte; a token is printable ASCII", flag,
			  path);
		goto leave;
	}
	buf[line] = 0;
	if ((rc = vr_flags_check_secret(flag, buf, err, errlen)))
		goto leave;
	if (!(*out = strdup(buf)))
		rc = VR_ENOMEM;
leave:
	memset(buf, 0, sizeof buf);
	close(fd);
	return rc;
}
