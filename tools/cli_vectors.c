/* visrec vectors OUT.npy: the item vectors of one model version of
 * featured, as a NumPy .npy file (float32, shape (n, dims), C order) and a
 * list of the ids beside it (one a line, row i of the matrix is line i),
 * for notebooks and other libraries.
 *
 * DESIGN. The vectors come from featured's GetVectors stream, whose chunks
 * featured keeps under 4 MiB: each chunk is appended to the files as it
 * arrives and freed, so memory stays at one chunk whatever the catalogue.
 * Every item: one GetVectors(all) stream from every featured shard at once
 * (featured_shards.h: rows in the order they arrive). Listed ids (--id, --ids FILE):
 * read IDS_PER_CALL at a time (never the whole list in memory), one call
 * each, all of the version the first call answered with, so a switch of
 * featured's active version mid-export cannot mix versions. The files are
 * written under temporary names beside OUT and renamed only when the
 * export succeeded: a failed or interrupted (SIGINT, SIGTERM, SIGHUP)
 * export leaves no half file; only a crash or SIGKILL can leave a
 * "OUT.partial-XXXXXX". The .npy header is written
 * first with 0 rows and overwritten with the count at the end (npy.h).
 *
 * One id a line is unambiguous: the id rule (common/ids.h) forbids every
 * control character, newline and carriage return included. */
#include "cli.h"

#include "err.h"
#include "ids.h"
#include "npy.h"
#include "visrec/v1/featured.pb-c.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Ids per GetVectors call of a list: 4096 ids of at most 256 bytes stay
 * near 1 MiB, well under featured's message limit. */
#define IDS_PER_CALL 4096
/* Unknown ids named in the error. */
#define FEW_MISSING 5
/* Deadlines: one call of a list; the whole stream of every item (a
 * stalled featured ends it rather than hang the export). */
#define IDS_CALL_MS 120000
#define ALL_CALL_MS 3600000

struct export {
	cli *c;
	const char *cmd;
	FILE *npy, *ids;
	char *npy_tmp, *ids_tmp;    /* the temporary names, removed unless renamed */
	uint32_t version, dims;     /* 0 until the first chunk */
	uint64_t rows, bytes;
	uint64_t asked, missing;    /* listed ids sent, and unknown to featured */
	char *few[FEW_MISSING];     /* the first unknown ids (copies) */
	int write_errno;            /* set when a write failed */
};

/* The temporary files, for the signal handler to remove: set while they
 * exist. */
static char *volatile pending[2];
static const int caught[] = { SIGINT, SIGTERM, SIGHUP };
static struct sigaction saved[sizeof caught / sizeof caught[0]];

static void on_signal(int sig)
{
	for (int i = 0; i < 2; i++)
		if (pending[i])
			unlink(pending[i]); /* async-signal-safe */
	signal(sig, SIG_DFL);
	raise(sig); /* end as the signal would have: the shell sees it */
}

static void catch_signals(int on)
{
	for (size_t i = 0; i < sizeof caught / sizeof caught[0]; i++) {
		if (on) {
			struct sigaction sa = { .sa_handler = on_signal };
			sigemptyset(&sa.sa_mask);
			sigaction(caught[i], &sa, &saved[i]);
		} else {
			sigaction(caught[i], &saved[i], NULL);
		}
	}
}

/* Where the id list goes by default: OUT without ".npy", plus ".ids.txt". */
static char *default_ids_path(const char *out)
{
	size_t n = strlen(out);
	if (n > 4 && !strcmp(out + n - 4, ".npy"))
		n -= 4;
	char *p = malloc(n + sizeof ".ids.txt");
	if (p) {
		memcpy(p, out, n);
		strcpy(p + n, ".ids.txt");
	}
	return p;
}

/* Opens a temporary file beside path (same folder, so rename is atomic),
 * with the mode a new file gets under the umask (mkstemp's is 0600). */
static int open_tmp(const char *path, char **tmp, FILE **f)
{
	size_t n = strlen(path) + sizeof ".partial-XXXXXX";
	if (!(*tmp = malloc(n)))
		return VR_ENOMEM;
	snprintf(*tmp, n, "%s.partial-XXXXXX", path);
	int fd = mkstemp(*tmp);
	if (fd < 0) {
		int e = errno;
		free(*tmp);
		*tmp = NULL;
		return -e;
	}
	mode_t mask = umask(0);
	umask(mask);
	if (fchmod(fd, 0666 & ~mask) || !(*f = fdopen(fd, "w"))) {
		int e = errno;
		close(fd);
		unlink(*tmp);
		free(*tmp);
		*tmp = NULL;
		return -e;
	}
	return 0;
}

static void note_write(struct export *x, int ok)
{
	if (!ok && !x->write_errno)
		x->write_errno = errno ? errno : EIO;
}

/* Appends one row: the vector to the matrix, its id to the list. */
static void take_row(struct export *x, const char *id, const float *values, uint32_t dims)
{
	note_write(x, fwrite(values, sizeof(float), dims, x->npy) == dims);
	note_write(x, fputs(id, x->ids) >= 0 && fputc('\n', x->ids) != EOF);
	x->rows++;
	x->bytes += sizeof(float) * dims;
}

/* Every item: a row of one shard's GetVectors (the shards' calls are
 * serialised, featured_shards.h), which agree on dims and version. */
static int take_shard_row(void *ctx, size_t shard, const char *id, const float *values,
			  uint32_t dims, uint32_t version)
{
	struct export *x = ctx;
	(void)shard;
	x->dims = dims;
	x->version = version;
	take_row(x, id, values, dims);
	return x->write_errno ? VR_EIO : 0;
}

/* Appends one GetVectors chunk. Returns 0, or VR_ECORRUPT when featured's
 * chunks disagree (sizes, versions), VR_EIO on a write error (errno in
 * x->write_errno), VR_ENOMEM. */
static int take_chunk(struct export *x, const Visrec__V1__GetVectorsResponse *r)
{
	if ((x->dims && r->dims != x->dims) || (x->version && r->model_version != x->version) ||
	    !r->model_version)
		return VR_ECORRUPT;
	x->dims = r->dims;
	x->version = r->model_version;
	for (size_t k = 0; k < r->n_vectors; k++) {
		const Visrec__V1__Vector *v = r->vectors[k];
		if (v->n_values != r->dims)
			return VR_ECORRUPT;
		take_row(x, v->item_id, v->values, r->dims);
	}
	for (size_t k = 0; k < r->n_missing; k++) {
		if (x->missing < FEW_MISSING && !(x->few[x->missing] = strdup(r->missing[k])))
			return VR_ENOMEM;
		x->missing++;
	}
	return x->write_errno ? VR_EIO : 0;
}

/* One GetVectors call, its chunks appended. Returns 0, VR_ERPC (st says
 * why), or take_chunk's and the layer's errors (st filled for them too). */
static int get_vectors(struct export *x, vr_channel *ch, const Visrec__V1__GetVectorsRequest *req,
		       int64_t deadline_ms, vr_status *st)
{
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	int rc = vr_ccall_start(&cc, ch, "/visrec.v1.Featured/GetVectors",
				&visrec__v1__get_vectors_response__descriptor, deadline_ms, NULL);
	if (rc) {
		st->code = GRPC_STATUS_INTERNAL;
		snprintf(st->message, sizeof st->message, "cannot start the call: %s", vr_strerror(rc));
		return rc;
	}
	if (!(rc = vr_ccall_send(cc, &req->base)) && !(rc = vr_ccall_close_send(cc))) {
		while (!(rc = vr_ccall_recv(cc, &m))) {
			rc = take_chunk(x, (const void *)m);
			protobuf_c_message_free_unpacked(m, NULL);
			if (rc)
				break;
		}
		if (rc == VR_EEOF)
			rc = 0;
	}
	if (rc && rc != VR_ERPC)
		vr_ccall_cancel(cc);
	vr_status s;
	int frc = vr_ccall_finish(cc, &s);
	if (!rc || rc == VR_ERPC) {
		*st = s;
		return frc ? VR_ERPC : 0;
	}
	st->code = GRPC_STATUS_INTERNAL;
	if (rc == VR_ECORRUPT)
		snprintf(st->message, sizeof st->message,
			 "featured sent chunks whose dims or model versions disagree");
	else if (rc == VR_EIO)
		snprintf(st->message, sizeof st->message, "writing the files: %s",
			 strerror(x->write_errno));
	else
		snprintf(st->message, sizeof st->message, "%s", vr_strerror(rc));
	return rc;
}

/* The listed ids: the --id values, then the lines of the --ids file, in
 * batches. */
struct id_source {
	char **flag_ids;
	size_t n_flag, next_flag;
	FILE *file;
	const char *path;
	size_t line;
	char *buf;           /* getline's */
	size_t cap;
};

/* Fills ids (IDS_PER_CALL pointers, each malloc'd: the caller frees) with
 * the next batch; *n = 0 at the end. Checks each id against the id rule,
 * so a bad line is named with its number here rather than by featured.
 * Returns 0, VR_EINVAL (why filled), -errno reading, VR_ENOMEM. */
static int next_ids(struct id_source *s, char **ids, size_t *n, char *why, size_t cap)
{
	*n = 0;
	while (*n < IDS_PER_CALL) {
		const char *id;
		size_t len;
		char name[64];
		if (s->next_flag < s->n_flag) {
			id = s->flag_ids[s->next_flag++];
			len = strlen(id);
			snprintf(name, sizeof name, "--id");
		} else if (s->file) {
			errno = 0;
			ssize_t got = getline(&s->buf, &s->cap, s->file);
			if (got < 0) {
				if (ferror(s->file))
					return errno ? -errno : VR_EIO;
				break;
			}
			s->line++;
			len = (size_t)got;
			if (len && s->buf[len - 1] == '\n')
				len--;
			if (len && s->buf[len - 1] == '\r') /* a file written on Windows */
				len--;
			s->buf[len] = 0;
			id = s->buf;
			/* getline counts a NUL byte in the line; vr_id_check refuses it. */
			snprintf(name, sizeof name, "line %zu", s->line);
		} else {
			break;
		}
		char reason[VR_ID_WHY + 320];
		if (vr_id_check_named(name, id, len, reason, sizeof reason)) {
			snprintf(why, cap, "%s%s%s", s->file && s->next_flag >= s->n_flag ? s->path : "",
				 s->file && s->next_flag >= s->n_flag ? ": " : "", reason);
			return VR_EINVAL;
		}
		if (!(ids[*n] = strndup(id, len)))
			return VR_ENOMEM;
		(*n)++;
	}
	return 0;
}

/* Takes every "--id X" and "--id=X" out of argv (the flag parser keeps
 * one value per flag) into *ids; the rest stays in order in argv, *argc
 * shrinks. Returns 0, or CLI_EXIT_USAGE (reported) for --id without a
 * value. */
static int take_id_flags(const char *cmd, int *argc, char **argv, char ***ids, size_t *n)
{
	int out = 1;
	*n = 0;
	for (int i = 1; i < *argc; i++) {
		const char *v = NULL;
		if (!strcmp(argv[i], "--"))  {
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		if (!strcmp(argv[i], "--id")) {
			if (i + 1 >= *argc)
				return cli_usage_error(cmd, "--id needs a value");
			v = argv[++i];
		} else if (!strncmp(argv[i], "--id=", 5)) {
			v = argv[i] + 5;
		}
		if (v)
			(*ids)[(*n)++] = (char *)v;
		else
			argv[out++] = argv[i];
	}
	*argc = out;
	argv[out] = NULL;
	return CLI_EXIT_OK;
}

int cli_cmd_vectors(cli *c, int argc, char **argv)
{
	int version = 0, skip_missing = 0, code, npos = 0;
	const char *ids_file = NULL, *ids_out = NULL, *unused_id = NULL;
	const vr_flag table[] = {
		{ "version", NULL, VR_FLAG_INT, &version, "0",
		  "model version; 0 = featured's active one (live DVBPR versions too)", 0 },
		{ "id", NULL, VR_FLAG_STRING, &unused_id, NULL,
		  "export this item; repeat for more (default: every item)", 0 },
		{ "ids", NULL, VR_FLAG_STRING, &ids_file, NULL,
		  "export the items of this file (- : stdin), one id a line (after any --id)", 0 },
		{ "ids-out", NULL, VR_FLAG_STRING, &ids_out, NULL,
		  "where the id list goes; default OUT without .npy, plus .ids.txt", 0 },
		{ "skip-missing", NULL, VR_FLAG_BOOL, &skip_missing, "false",
		  "leave out listed ids featured does not know, instead of failing", 0 },
		{ 0 },
	};
	struct export x = { .c = c, .cmd = argv[0] };
	struct id_source src = { 0 };
	char **pos = NULL, *ids_path = NULL, **batch = NULL;
	size_t nbatch = 0;
	int signals_on = 0;
	vr_channel *ch = NULL;
	vr_shards *shards = NULL;
	vr_status st = { 0 };
	char err[512];
	double t0 = vr_now_s();

#ifdef __GLIBC__
	/* Each chunk is a few MiB of gRPC slices, a contiguous copy and the
	 * unpacked message. Over glibc's mmap threshold every one of those is
	 * a fresh mapping whose pages fault in and are unmapped again: half
	 * the export's time (perf, 5,000 x 2,048). Kept in the heap they are
	 * reused; peak memory stays the same (one chunk in flight). */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 128 << 20);
#endif
	/* The --id values: argv holds at most argc of them. */
	if (!(src.flag_ids = calloc((size_t)argc + 1, sizeof *src.flag_ids)))
		return cli_fail(c, argv[0], "out of memory");
	if ((code = take_id_flags(argv[0], &argc, argv, &src.flag_ids, &src.n_flag)))
		goto leave;
	code = cli_parse(c, table, argc, argv, "visrec vectors OUT.npy [--version N] [--id X]... [--ids FILE]",
			 "Writes the item vectors of a model version to OUT.npy (float32, shape\n"
			 "(items, dims), C order; numpy.load reads it) and their ids to a text file,\n"
			 "one a line, in the same order. Every item unless --id or --ids name some;\n"
			 "an id featured does not know fails the export unless --skip-missing.\n"
			 "Ids cannot hold a newline (or any control character), so the list is\n"
			 "unambiguous. Nothing is left behind when the export fails.",
			 &pos, &npos);
	if (code || npos < 0)
		goto leave;
	if (npos != 1) {
		code = cli_usage_error(argv[0], "needs one output file (OUT.npy), got %d arguments", npos);
		goto leave;
	}
	if (version < 0) {
		code = cli_usage_error(argv[0], "--version must be 0 (the active one) or a version number");
		goto leave;
	}
	if (ids_file && !strcmp(ids_file, "-"))
		src.file = stdin;
	else if (ids_file && !(src.file = fopen(ids_file, "r"))) {
		code = cli_fail(c, argv[0], "cannot open %s: %s", ids_file, strerror(errno));
		goto leave;
	}
	src.path = ids_file;
	int listed = src.n_flag > 0 || src.file;
	if (!(ids_path = ids_out ? strdup(ids_out) : default_ids_path(pos[0])) ||
	    !(batch = calloc(IDS_PER_CALL, sizeof *batch))) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	if (!strcmp(ids_path, pos[0])) {
		code = cli_usage_error(argv[0], "the id list and the matrix would both be %s", pos[0]);
		goto leave;
	}
	/* Every item comes from every shard; listed ids from one featured. */
	if ((code = listed ? cli_channel(c, CLI_FEATURED, &ch) : cli_shards(c, argv[0], &shards)))
		goto leave;
	int rc;
	catch_signals(1);
	signals_on = 1;
	rc = open_tmp(pos[0], &x.npy_tmp, &x.npy);
	pending[0] = x.npy_tmp;
	if (!rc)
		rc = open_tmp(ids_path, &x.ids_tmp, &x.ids);
	pending[1] = x.ids_tmp;
	if (rc) {
		code = cli_fail(c, argv[0], "cannot create a file beside %s: %s",
				x.npy_tmp ? ids_path : pos[0], vr_strerror(rc));
		goto leave;
	}
	char header[VR_NPY_HEADER];
	note_write(&x, fwrite(header, 1, vr_npy_header(header, 0, 0), x.npy) == VR_NPY_HEADER);

	Visrec__V1__GetVectorsRequest req = VISREC__V1__GET_VECTORS_REQUEST__INIT;
	req.model_version = (uint32_t)version;
	if (!listed) {
		uint32_t dims, v;
		rc = vr_shards_get_vectors(shards, (uint32_t)version, NULL, 0, take_shard_row, &x, &dims,
					   &v, cli_deadline_ms(c, ALL_CALL_MS), &st);
		if (rc == VR_EIO) {
			st.code = GRPC_STATUS_INTERNAL;
			snprintf(st.message, sizeof st.message, "writing the files: %s",
				 strerror(x.write_errno));
		}
	} else {
		rc = 0;
		for (;;) {
			if ((rc = next_ids(&src, batch, &nbatch, err, sizeof err))) {
				code = rc == VR_EINVAL ? cli_fail(c, argv[0], "%s", err)
						       : cli_fail(c, argv[0], "reading %s: %s", ids_file,
								  vr_strerror(rc));
				goto leave;
			}
			if (!nbatch)
				break;
			/* After the first answer, that version: never a mix. */
			req.model_version = x.version ? x.version : (uint32_t)version;
			req.n_item_ids = nbatch;
			req.item_ids = batch;
			x.asked += nbatch;
			rc = get_vectors(&x, ch, &req, cli_deadline_ms(c, IDS_CALL_MS), &st);
			for (size_t i = 0; i < nbatch; i++) {
				free(batch[i]);
				batch[i] = NULL;
			}
			if (rc)
				break;
		}
	}
	if (rc) {
		code = cli_call_error(c, CLI_FEATURED, "GetVectors", rc, &st);
		goto leave;
	}
	if (listed && !x.asked) {
		code = cli_fail(c, argv[0], "%s names no id", ids_file);
		goto leave;
	}
	if (x.missing && !skip_missing) {
		char few[FEW_MISSING * (64 + 8) + 16] = "";
		for (uint64_t i = 0; i < x.missing && i < FEW_MISSING; i++) {
			char esc[72];
			size_t at = strlen(few);
			snprintf(few + at, sizeof few - at, "%s\"%s\"", i ? ", " : "",
				 vr_id_escape(esc, sizeof esc, x.few[i], strlen(x.few[i])));
		}
		code = cli_fail(c, argv[0],
				"%llu of %llu listed ids are unknown to featured (model version %u): %s%s; "
				"nothing was written (--skip-missing exports the others)",
				(unsigned long long)x.missing, (unsigned long long)x.asked, x.version, few,
				x.missing > FEW_MISSING ? ", ..." : "");
		goto leave;
	}
	/* Every chunk said its dims; with none (no item has a vector of the
	 * version yet) the shape is (0, 0), which numpy reads. */
	vr_npy_header(header, x.rows, x.dims);
	note_write(&x, fflush(x.npy) == 0 && fseek(x.npy, 0, SEEK_SET) == 0 &&
			       fwrite(header, 1, VR_NPY_HEADER, x.npy) == VR_NPY_HEADER);
	note_write(&x, fflush(x.npy) == 0 && fsync(fileno(x.npy)) == 0);
	note_write(&x, fflush(x.ids) == 0 && fsync(fileno(x.ids)) == 0);
	int cn = fclose(x.npy), ci = fclose(x.ids);
	note_write(&x, !cn && !ci);
	x.npy = x.ids = NULL;
	if (x.write_errno) {
		code = cli_fail(c, argv[0], "writing %s and %s: %s", pos[0], ids_path,
				strerror(x.write_errno));
		goto leave;
	}
	/* From here on, the handler's unlink of a renamed name would hit
	 * nothing (or a new file of that name): renaming is the last step, and
	 * an interrupt between the two renames leaves both files complete. */
	catch_signals(0);
	signals_on = 0;
	pending[0] = pending[1] = NULL;
	if (rename(x.ids_tmp, ids_path)) {
		code = cli_fail(c, argv[0], "cannot rename the id list to %s: %s", ids_path,
				strerror(errno));
		goto leave;
	}
	free(x.ids_tmp);
	x.ids_tmp = NULL;
	if (rename(x.npy_tmp, pos[0])) {
		code = cli_fail(c, argv[0], "cannot rename the export to %s: %s", pos[0], strerror(errno));
		unlink(ids_path); /* a list without its matrix would mislead */
		goto leave;
	}
	free(x.npy_tmp);
	x.npy_tmp = NULL;
	double secs = vr_now_s() - t0;
	if (cli_wants_json(c)) {
		cJSON *o = cJSON_CreateObject();
		if (o) {
			cJSON_AddStringToObject(o, "npy", pos[0]);
			cJSON_AddStringToObject(o, "ids", ids_path);
			cJSON_AddNumberToObject(o, "model_version", x.version);
			cJSON_AddNumberToObject(o, "items", (double)x.rows);
			cJSON_AddNumberToObject(o, "dims", x.dims);
			cJSON_AddNumberToObject(o, "missing", (double)x.missing);
			cJSON_AddNumberToObject(o, "seconds", secs);
		}
		code = cli_output(c, o);
	}
	if (!c->json)
		printf("%llu vectors of %u dims (model version %u) in %s, ids in %s; "
		       "%.1f MB in %.2f s\n",
		       (unsigned long long)x.rows, x.dims, x.version, pos[0], ids_path,
		       (double)x.bytes / 1e6, secs);
	if (!c->json && x.missing)
		printf("%llu listed ids unknown to featured were left out\n",
		       (unsigned long long)x.missing);
leave:
	if (signals_on) {
		catch_signals(0);
		pending[0] = pending[1] = NULL;
	}
	if (x.npy)
		fclose(x.npy);
	if (x.ids)
		fclose(x.ids);
	if (x.npy_tmp)
		unlink(x.npy_tmp);
	if (x.ids_tmp)
		unlink(x.ids_tmp);
	free(x.npy_tmp);
	free(x.ids_tmp);
	for (size_t i = 0; i < FEW_MISSING; i++)
		free(x.few[i]);
	for (size_t i = 0; batch && i < IDS_PER_CALL; i++)
		free(batch[i]);
	free(batch);
	if (src.file && src.file != stdin)
		fclose(src.file);
	free(src.buf);
	free(src.flag_ids);
	free(ids_path);
	free(pos);
	return code;
}
