/* flags: a table-driven parser for command lines and VISREC_* environment
 * variables (see flags.h). */
#include "flags.h"

#include "err.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
