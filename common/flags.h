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
#include <stdint.h>
#include <stdio.h>

enum vr_flag_type {
	VR_FLAG_STRING, /* const char ** */
	VR_FLAG_INT,    /* int * */
	VR_FLAG_INT64,  /* int64_t * */
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

/* Longest secret (bearer token) accepted, in characters. */
#define VR_SECRET_MAX 256

/* Checks a secret given for flag (e.g. "admin-token"): 1..VR_SECRET_MAX
 * printable ASCII characters without spaces, as HTTP metadata carries
 * them. Returns 0 or VR_EINVAL with the reason in err. */
int vr_flags_check_secret(const char *flag, const char *secret, char *err, size_t errlen);

/* Reads the secret of flag (e.g. "admin-token-file") from the file at
 * path, so it never sits in a command line or the environment: the
 * file's first line without its line ending (a file written by echo or
 * an editor works as is). Refuses, with VR_EINVAL and the reason in err,
 * an empty file, more than one line, a secret vr_flags_check_secret
 * refuses, and a file that other users may read or write (mode o+rwx:
 * chmod 600, or 640 for a group that needs it). A group-readable file is
 * accepted (Kubernetes mounts a Secret for a non-root user so, with
 * fsGroup), silently when the group is the process's own, else with a
 * warning in the log. -errno when it cannot be read (err says so).
 * On success *out is the secret, yours to free. */
int vr_flags_read_secret(const char *flag, const char *path, char **out, char *err, size_t errlen);

#endif
