/* flags: command-line flags with environment overrides, from a table.
 *
 * Each flag has a type, a destination, an optional default (as text) and
 * an optional environment variable. Precedence, lowest first: default,
 * environment, command line. Forms: --name value, --name=value; a bool
 * also as --name (true) or --no-name (false). Strings point into argv,
 * the environment or the table's default: nothing to free.
 *
 *   const char *listen; int threads;
 *   const vr_flag flags[] = {
 *     { "listen", "VISREC_LISTEN", VR_FLAG_STRING, &listen, "127.0.0.1:0", "address to serve on" },
 *     { "threads", "VISREC_THREADS", VR_FLAG_INT, &threads, "2", "server threads" },
 *     { 0 } };
 *   rc = vr_flags_parse(flags, argc, argv, err, sizeof err);
 *   if (rc == VR_FLAGS_HELP) { vr_flags_usage(stdout, "featured", "summary", flags); return 0; } */
#ifndef VR_FLAGS_H
#define VR_FLAGS_H

#include <stddef.h>
#include <stdio.h>

enum vr_flag_type {
	VR_FLAG_STRING, /* const char ** */
	VR_FLAG_INT,    /* int * */
	VR_FLAG_UINT64, /* uint64_t * */
	VR_FLAG_DOUBLE, /* double * */
	VR_FLAG_BOOL,   /* int *: 1/0, true/false, yes/no, on/off */
};

typedef struct vr_flag {
	const char *name;  /* "listen" for --listen; NULL ends the table */
	const char *env;   /* "VISREC_LISTEN", or NULL */
	enum vr_flag_type type;
	void *dest;
	const char *def;   /* default as text; NULL leaves dest as it is */
	const char *help;
	int required;      /* must end up set by default, environment or flag */
} vr_flag;

/* Returned by vr_flags_parse when --help or -h was given. */
#define VR_FLAGS_HELP 1

/* Parses argv[1..] (every argument must be a flag) and the environment
 * into the destinations. Returns 0, VR_FLAGS_HELP, or VR_EINVAL with a
 * one-line reason in err ("--threads: \"x\" is not an integer"). */
int vr_flags_parse(const vr_flag *table, int argc, char **argv, char *err, size_t errlen);

/* Prints "usage: prog [flags]", summary, and one line per flag with its
 * type, environment variable, default and help. */
void vr_flags_usage(FILE *f, const char *prog, const char *summary, const vr_flag *table);

#endif
