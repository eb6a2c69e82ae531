/* visrec: the operator's command-line client of featured and rankd.
 *
 *   visrec [global flags] COMMAND [flags and arguments]
 *
 * This file finds the command and hands it its arguments (the global flags
 * given before the command travel with them); the commands live in
 * cli_*.c and share cli.c. */
#include "cli.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct command {
	const char *name;
	int (*run)(cli *c, int argc, char **argv);
	int rpc; /* talks to a daemon: gRPC is started for it */
	const char *summary;
};

static const struct command commands[] = {
	{ "datagen", cli_cmd_datagen, 0, "generate a Wikimedia-shaped data set (images + interactions)" },
	{ "ingest", cli_cmd_ingest, 1, "send a folder of JPEGs to featured (PutItems)" },
	{ "import", cli_cmd_import, 1, "send a user,item,timestamp CSV to rankd (AddInteractions)" },
	{ "train", cli_cmd_train, 1, "train BPR, VBPR or DVBPR in rankd, with live progress" },
	{ "eval", cli_cmd_eval, 1, "evaluate the served model (standard or tutorial protocol, a given split)" },
	{ "recommend", cli_cmd_recommend, 1, "top-k items for one or more users" },
	{ "score", cli_cmd_score, 1, "scores of given items for a user" },
	{ "audience", cli_cmd_audience, 1, "the users most likely to want an item (reverse top-k)" },
	{ "info", cli_cmd_info, 1, "what both daemons run and hold" },
	{ "health", cli_cmd_health, 1, "grpc.health.v1 status of both daemons" },
	{ "vectors", cli_cmd_vectors, 1, "export item vectors of a model version to .npy + an id list" },
	{ "reshard", cli_cmd_reshard, 1, "move the items whose featured shard changes with the shard list" },
	{ "top", cli_cmd_top, 0, "a live view of both daemons from their metrics endpoints" },
	{ "showcase", cli_cmd_showcase, 0, "pick users of a data set to show in the report" },
	{ "report", cli_cmd_report, 0, "write the HTML report of a pipeline run" },
	{ NULL, NULL, 0, NULL },
};

static void usage(FILE *f)
{
	cli c = { 0 };
	vr_flag g[CLI_GLOBAL_FLAGS + 1] = { { 0 } };
	cli_global_flags(&c, g);
	fprintf(f, "usage: visrec [global flags] COMMAND [flags and arguments]\n\ncommands:\n");
	for (const struct command *k = commands; k->name; k++)
		fprintf(f, "  %-10s %s\n", k->name, k->summary);
	fprintf(f, "\n");
	vr_flags_usage(f, "visrec COMMAND", "global flags (before or after COMMAND):", g);
	fprintf(f, "\n`visrec COMMAND --help` lists a command's flags. Exit status: 0 done, 1 failed\n"
		   "(the gRPC status, the server's message and a hint are printed), 2 bad usage,\n"
		   "3 ingest stored some items but not all.\n");
}

int main(int argc, char **argv)
{
	cli c = { 0 };
	vr_flag g[CLI_GLOBAL_FLAGS + 1] = { { 0 } };
	cli_global_flags(&c, g);
	c.progress = isatty(STDERR_FILENO);

	/* Skip the global flags before the command. */
	int i = 1;
	while (i < argc && argv[i][0] == '-') {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return CLI_EXIT_OK;
		}
		const char *name = argv[i] + (argv[i][1] == '-' ? 2 : 1);
		int takes_value = 0;
		for (const vr_flag *f = g; f->name; f++)
			if (!strcmp(f->name, name) && f->type != VR_FLAG_BOOL)
				takes_value = 1;
		i += 1 + takes_value;
	}
	if (i >= argc) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	const struct command *cmd = NULL;
	for (const struct command *k = commands; k->name; k++)
		if (!strcmp(k->name, argv[i]))
			cmd = k;
	if (!cmd) {
		fprintf(stderr, "visrec: unknown command \"%s\"\n\n", argv[i]);
		usage(stderr);
		return CLI_EXIT_USAGE;
	}

	/* The command sees: its name, the global flags given before it, then
	 * its own arguments. */
	char **cargv = malloc(sizeof *cargv * ((size_t)argc + 1));
	if (!cargv) {
		fprintf(stderr, "visrec: out of memory\n");
		return CLI_EXIT_FAIL;
	}
	int n = 0;
	cargv[n++] = argv[i];
	for (int j = 1; j < i; j++)
		cargv[n++] = argv[j];
	for (int j = i + 1; j < argc; j++)
		cargv[n++] = argv[j];
	cargv[n] = NULL;

	/* Core's own complaints (a refused connection) would repeat what the
	 * command reports with a hint; show them only when asked for. */
	vr_log_set_component("visrec");
	if (!getenv("VISREC_LOG_LEVEL"))
		vr_log_set_level(VR_LOG_ERROR);
	if (cmd->rpc)
		vr_rpc_init();
	int code = cmd->run(&c, n, cargv);
	vr_shards_close(c.shards);
	vr_channel_destroy(c.rankd);
	free(c.token_buf);
	if (cmd->rpc)
		vr_rpc_shutdown();
	free(cargv);
	return code;
}
