/* cli: what the commands of the `visrec` operator CLI share: the global
 * options, the channels to featured and rankd, argument splitting, error
 * reports a person can act on, and JSON output.
 *
 * Each command is one function `int cli_cmd_<name>(cli *c, int argc,
 * char **argv)` (argv[0] is the command's name) that returns the process
 * exit status: CLI_EXIT_OK, CLI_EXIT_FAIL (a remote or local error, already
 * reported), CLI_EXIT_USAGE (bad arguments, already reported) or, for
 * ingest, CLI_EXIT_PARTIAL. */
#ifndef VR_CLI_H
#define VR_CLI_H

#include "deadline.h"
#include "featured_shards.h"
#include "flags.h"
#include "progress.h"
#include "rpc.h"

#include <cjson/cJSON.h>
#include <stdint.h>

enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_FAIL = 1,
	CLI_EXIT_USAGE = 2,
	CLI_EXIT_PARTIAL = 3, /* ingest: some items were rejected */
};

enum cli_service { CLI_FEATURED, CLI_RANKD };

typedef struct cli {
	/* global options (flags or environment) */
	const char *featured_addr, *rankd_addr, *token, *token_file, *tls_ca;
	const char *save;   /* also write the JSON output (or error) to this file */
	int json;
	double timeout_s;   /* per call; 0 = the command's default */
	int progress;       /* 1: progress bar (stderr is a tty), 0: plain lines */
	/* channels, created on first use */
	vr_shards *shards;  /* every featured shard of --featured */
	vr_channel *featured, *rankd; /* featured: the one shard's channel (in shards) */
	char *token_buf;    /* the token read from token_file */
} cli;

/* The global flags, for merging into each command's table: a table of
 * CLI_GLOBAL_FLAGS entries bound to c. */
#define CLI_GLOBAL_FLAGS 8
void cli_global_flags(cli *c, vr_flag out[CLI_GLOBAL_FLAGS]);

/* Parses a command's arguments: argv[0] is the command, the rest are flags
 * of table (the command's own, ended by a zeroed entry; the global flags
 * are added to it) and positional arguments. "-k N" is read as
 * "--k N". Positional arguments are returned in *pos (a malloc'd array of
 * pointers into argv; free it) and *npos; the caller checks their count.
 * pos NULL: the command takes none, and one is a usage error here.
 * Returns CLI_EXIT_OK to go on, or the exit status to return now: after
 * --help (usage printed to stdout, CLI_EXIT_OK with *pos NULL and *npos
 * -1) or a bad flag (reported, CLI_EXIT_USAGE). usage is the synopsis
 * ("visrec ingest DIR [flags]"), summary what the command does. */
int cli_parse(cli *c, const vr_flag *table, int argc, char **argv, const char *usage,
	      const char *summary, char ***pos, int *npos);

/* Takes only the global flags out of argv[1..] (argv[0] is the command)
 * and parses them; every other argument is left, in order, in *rest (a
 * malloc'd array of pointers into argv; free it) and *nrest. For commands
 * whose flags another parser reads. Returns CLI_EXIT_OK or, for a bad
 * global flag, CLI_EXIT_USAGE (reported). */
int cli_take_globals(cli *c, int argc, char **argv, char ***rest, int *nrest);

/* Reports a usage error ("visrec ingest: ...") and returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The channel to a service, created on first use (reading --token-file
 * the first time). Returns 0, or reports the error and returns
 * CLI_EXIT_FAIL. For featured, --featured must name one featured (a list
 * of several shards is refused: commands that handle shards use
 * cli_shards). */
int cli_channel(cli *c, enum cli_service s, vr_channel **out);
/* The featured shards of --featured (a list of one or more addresses),
 * created on first use like cli_channel's channels. Returns 0, or reports
 * the error and returns CLI_EXIT_FAIL (a bad list: CLI_EXIT_USAGE). cmd
 * names the command in the report. */
int cli_shards(cli *c, const char *cmd, vr_shards **out);
/* The options of a channel to a daemon as the global flags give them
 * (reading --token-file the first time; who names the caller in a
 * report), for commands that open channels of their own. Returns
 * CLI_EXIT_OK, or reports and returns CLI_EXIT_FAIL. */
int cli_channel_opts(cli *c, const char *who, vr_channel_opts *o);
/* The address of a service, as configured. */
const char *cli_addr(const cli *c, enum cli_service s);
/* A call's deadline in ms: --timeout, else def_ms (0 = none). */
int64_t cli_deadline_ms(const cli *c, int64_t def_ms);

/* Reports a failed call: the gRPC status name, the server's message and
 * what to do, on stderr, and an {"error": ...} object as the command's
 * JSON output (cli_output). rc is the rc of the call (VR_ERPC: st says why; other codes are
 * local failures). what names the call ("Train"). Returns CLI_EXIT_FAIL. */
int cli_call_error(cli *c, enum cli_service s, const char *what, int rc, const vr_status *st);
/* The stderr half of cli_call_error only, for commands that put the error
 * into JSON output of their own. */
void cli_print_call_error(const cli *c, enum cli_service s, const char *what, int rc,
			  const vr_status *st);
/* Reports a local failure ("visrec ingest: reading X: No such file") in
 * the same two forms. Returns CLI_EXIT_FAIL. */
int cli_fail(cli *c, const char *cmd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The error object of a status: {"status": NAME, "code": N, "message": ...,
 * "hint": ...}. NULL on allocation failure. */
cJSON *cli_status_json(const cli *c, enum cli_service s, const vr_status *st);

/* Whether a command should build its JSON output: --json or --save. */
int cli_wants_json(const cli *c);
/* The JSON output of a command: written to the --save file when set,
 * printed on stdout with --json; freed. Returns CLI_EXIT_OK, or
 * CLI_EXIT_FAIL when obj is NULL or the file cannot be written
 * (reported). */
int cli_output(cli *c, cJSON *obj);

/* A protobuf-c message as JSON: proto field names, enums by name, 64-bit
 * integers as numbers, bytes as their length ("image_bytes": N), proto3
 * defaults included, unset oneof members and sub-messages left out. NULL
 * on allocation failure. */
cJSON *cli_proto_json(const ProtobufCMessage *m);

/* A comma-separated list split into its entries (empty ones dropped). */
typedef struct cli_list {
	char **items; /* point into buf */
	size_t n;
	char *buf;
} cli_list;
/* Splits s (NULL is an empty list) into *l. Returns 0 or VR_ENOMEM. */
int cli_split(const char *s, cli_list *l);
/* Frees what cli_split made; a zeroed list is fine. */
void cli_list_free(cli_list *l);

/* The name of a ModelKind ("VBPR"), "UNSPECIFIED" for 0. */
const char *cli_model_name(int kind);

/* The commands. */
int cli_cmd_datagen(cli *c, int argc, char **argv);
int cli_cmd_ingest(cli *c, int argc, char **argv);
int cli_cmd_import(cli *c, int argc, char **argv);
int cli_cmd_train(cli *c, int argc, char **argv);
int cli_cmd_eval(cli *c, int argc, char **argv);
int cli_cmd_recommend(cli *c, int argc, char **argv);
int cli_cmd_score(cli *c, int argc, char **argv);
int cli_cmd_audience(cli *c, int argc, char **argv);
int cli_cmd_info(cli *c, int argc, char **argv);
int cli_cmd_health(cli *c, int argc, char **argv);
int cli_cmd_top(cli *c, int argc, char **argv);
int cli_cmd_showcase(cli *c, int argc, char **argv);
int cli_cmd_report(cli *c, int argc, char **argv);
int cli_cmd_vectors(cli *c, int argc, char **argv);
int cli_cmd_reshard(cli *c, int argc, char **argv);

#endif
