/* visrec ingest DIR: sends a folder of JPEGs to featured with PutItems,
 * each image to the featured shard that owns its id (--featured LIST).
 *
 * DESIGN. The main thread lists the .jpg files of DIR/images (or of DIR),
 * sorts the names, gives each file to its owner shard's queue (a file
 * whose name is no valid id is listed, not sent), starts --streams worker
 * threads per shard and then only draws progress until they end. A
 * worker takes the next --batch files of its shard's queue from a shared
 * counter and sends them as one PutItems client stream, reading each file
 * into a buffer of its own just before sending it (memory stays at one
 * image per worker plus what gRPC holds in flight), then reads the reply
 * with the per-item statuses. So every shard gets its streams at once,
 * and two streams per shard keep its executor busy while the other waits
 * for its reply. Counters are atomics; the lists of rejected items and
 * of items a failed shard did not confirm are under a mutex. A failed call
 * (not a rejected item) stops that shard's workers only: each finishes
 * its stream and exits, the shard's first such status is reported with
 * every item of it not confirmed stored; the other shards go on. */
#include "cli.h"

#include "err.h"
#include "ids.h"
#include "visrec/v1/featured.pb-c.h"

#include <dirent.h>
#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Worker threads at most, whatever --streams and the shard count ask. */
#define MAX_THREADS 64

struct item_error {
	char *item, *message;
	int code;     /* gRPC status code; -1: could not be read here */
	size_t shard; /* the shard it went to (any when code is -1) */
};

/* One shard's part: its files and what became of them. */
struct shard {
	vr_channel *ch;
	size_t *files;           /* indexes into ingest.names, sorted */
	size_t n;
	atomic_size_t next;      /* first file of the next batch */
	atomic_size_t accepted, rejected;
	atomic_int failed;       /* a call failed: stop taking batches */
	int fatal_rc;            /* the first failure (under ingest.mu) */
	vr_status fatal_st;
	char **unconfirmed;      /* items sent or due that it did not confirm (under mu) */
	size_t n_unconfirmed, cap_unconfirmed;
};

struct ingest {
	cli *c;
	vr_shards *shards;
	struct shard *sh;        /* one per shard */
	size_t nsh;
	char *dir;               /* the folder holding the JPEGs */
	char **names;            /* file names, sorted */
	size_t n, batch;
	atomic_size_t done, local_rejected;
	atomic_size_t running;   /* workers not yet ended */
	pthread_mutex_t mu;      /* guards errors, nerrors, the shards' failure fields */
	struct item_error *errors;
	size_t nerrors, cap_errors;
};

struct worker_arg {
	struct ingest *in;
	size_t shard;
};

static int is_jpeg_name(const char *name)
{
	const char *dot = strrchr(name, '.');
	return dot && dot != name && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the JPEGs of dir into in->names. Returns 0 or -errno/VR_ENOMEM. */
static int list_jpegs(struct ingest *in, const char *dir)
{
	size_t cap = 0;
	int rc = 0;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || !is_jpeg_name(e->d_name))
			continue;
		if (in->n == cap) {
			cap = cap ? 2 * cap : 1024;
			char **names = realloc(in->names, cap * sizeof *names);
			if (!names) {
				rc = VR_ENOMEM;
				break;
			}
			in->names = names;
		}
		if (!(in->names[in->n] = strdup(e->d_name))) {
			rc = VR_ENOMEM;
			break;
		}
		in->n++;
	}
	closedir(d);
	if (!rc && in->n)
		qsort(in->names, in->n, sizeof *in->names, cmp_names);
	return rc;
}

static void add_error(struct ingest *in, size_t shard, const char *item, int code,
		      const char *message)
{
	pthread_mutex_lock(&in->mu);
	if (in->nerrors == in->cap_errors) {
		size_t cap = in->cap_errors ? 2 * in->cap_errors : 64;
		struct item_error *e = realloc(in->errors, cap * sizeof *e);
		if (!e)
			goto leave;
		in->errors = e;
		in->cap_errors = cap;
	}
	struct item_error *e = &in->errors[in->nerrors];
	e->item = strdup(item);
	e->message = strdup(message);
	e->code = code;
	e->shard = shard;
	if (e->item && e->message) {
		in->nerrors++;
	} else {
		free(e->item);
		free(e->message);
	}
leave:
	pthread_mutex_unlock(&in->mu);
}

/* The id of file name (the name without .jpg) into id (cap bytes), or
 * the reason it is no valid id into why. Returns 0 or VR_EINVAL. */
static int file_id(const char *name, char *id, size_t cap, char *why, size_t wcap)
{
	size_t idlen = (size_t)(strrchr(name, '.') - name);
	if (vr_id_check_named("the item id (the file name without .jpg)", name, idlen, why, wcap)) {
		vr_id_escape(id, 80 < cap ? 80 : cap, name, idlen);
		return VR_EINVAL;
	}
	snprintf(id, cap, "%.*s", (int)idlen, name);
	return 0;
}

/* Adds the items of files [first, end) of shard k to its unconfirmed
 * list. Under in->mu. */
static void add_unconfirmed(struct ingest *in, size_t k, size_t first, size_t end)
{
	struct shard *sh = &in->sh[k];
	char id[1024], why[512];
	for (size_t i = first; i < end; i++) {
		if (sh->n_unconfirmed == sh->cap_unconfirmed) {
			size_t cap = sh->cap_unconfirmed ? 2 * sh->cap_unconfirmed : 64;
			char **u = realloc(sh->unconfirmed, cap * sizeof *u);
			if (!u)
				return;
			sh->unconfirmed = u;
			sh->cap_unconfirmed = cap;
		}
		file_id(in->names[sh->files[i]], id, sizeof id, why, sizeof why);
		if ((sh->unconfirmed[sh->n_unconfirmed] = strdup(id)))
			sh->n_unconfirmed++;
	}
}

/* Shard k's call over files [first, end) failed: records the first
 * failure, the batch as unconfirmed, and stops the shard. */
static void set_fatal(struct ingest *in, size_t k, size_t first, size_t end, int rc,
		      const vr_status *st)
{
	struct shard *sh = &in->sh[k];
	pthread_mutex_lock(&in->mu);
	if (!atomic_load(&sh->failed)) {
		sh->fatal_rc = rc;
		sh->fatal_st = *st;
	}
	atomic_store(&sh->failed, 1);
	add_unconfirmed(in, k, first, end);
	pthread_mutex_unlock(&in->mu);
}

/* Reads path into *buf (grown as needed). Returns 0 or -errno. */
static int read_file(const char *path, uint8_t **buf, size_t *cap, size_t *len)
{
	int rc = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	struct stat sb;
	if (fstat(fileno(f), &sb)) {
		rc = -errno;
		goto leave;
	}
	size_t need = (size_t)sb.st_size;
	if (need > *cap) {
		uint8_t *b = realloc(*buf, need);
		if (!b) {
			rc = -ENOMEM;
			goto leave;
		}
		*buf = b;
		*cap = need;
	}
	*len = fread(*buf, 1, need, f);
	if (*len != need)
		rc = ferror(f) ? -EIO : -ENODATA;
leave:
	fclose(f);
	return rc;
}

/* Sends shard k's files [first, end) as one PutItems stream and records
 * the reply. */
static void send_batch(struct ingest *in, size_t k, size_t first, size_t end, uint8_t **buf,
		       size_t *cap)
{
	struct shard *sh = &in->sh[k];
	vr_ccall *cc = NULL;
	vr_status st = { 0 };
	ProtobufCMessage *reply = NULL;
	size_t sent = 0, unread = 0;
	char path[4096], id[1024], why[4400];
	int rc = vr_ccall_start(&cc, sh->ch, "/visrec.v1.Featured/PutItems",
			       &visrec__v1__put_items_response__descriptor,
			       cli_deadline_ms(in->c, 0), NULL);
	if (rc) {
		st.code = GRPC_STATUS_INTERNAL;
		set_fatal(in, k, first, end, rc, &st);
		atomic_fetch_add(&in->done, end - first);
		return;
	}
	for (size_t i = first; i < end && !rc; i++) {
		const char *name = in->names[sh->files[i]];
		file_id(name, id, sizeof id, why, sizeof why);
		snprintf(path, sizeof path, "%s/%s", in->dir, name);
		size_t len = 0;
		int frc = read_file(path, buf, cap, &len);
		if (frc) {
			snprintf(why, sizeof why, "cannot read %s: %s", path, vr_strerror(frc));
			add_error(in, k, id, -1, why);
			atomic_fetch_add(&in->local_rejected, 1);
			atomic_fetch_add(&in->done, 1);
			unread++;
			continue;
		}
		Visrec__V1__PutItemsRequest req = VISREC__V1__PUT_ITEMS_REQUEST__INIT;
		req.item_id = id;
		req.image.data = *buf;
		req.image.len = len;
		rc = vr_ccall_send(cc, &req.base);
		sent++;
	}
	if (!rc)
		rc = vr_ccall_close_send(cc);
	if (!rc)
		rc = vr_ccall_recv(cc, &reply);
	int frc = vr_ccall_finish(cc, &st);
	if (rc == VR_ERPC || rc == VR_EEOF || (!rc && frc)) {
		set_fatal(in, k, first, end, VR_ERPC, &st);
	} else if (rc) {
		st.code = rc == VR_ETOOBIG ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INTERNAL;
		set_fatal(in, k, first, end, rc, &st);
	} else {
		const Visrec__V1__PutItemsResponse *r = (const void *)reply;
		for (size_t i = 0; i < r->n_items; i++)
			if (r->items[i]->code)
				add_error(in, k, r->items[i]->item_id, r->items[i]->code,
					  r->items[i]->message);
		atomic_fetch_add(&sh->accepted, r->accepted);
		atomic_fetch_add(&sh->rejected, r->rejected);
	}
	atomic_fetch_add(&in->done, rc || frc ? end - first - unread : sent);
	if (reply)
		protobuf_c_message_free_unpacked(reply, NULL);
}

static void *worker(void *arg)
{
	struct worker_arg *w = arg;
	struct ingest *in = w->in;
	struct shard *sh = &in->sh[w->shard];
	uint8_t *buf = NULL;
	size_t cap = 0;
	while (!atomic_load(&sh->failed)) {
		size_t first = atomic_fetch_add(&sh->next, in->batch);
		if (first >= sh->n)
			break;
		size_t end = first + in->batch < sh->n ? first + in->batch : sh->n;
		send_batch(in, w->shard, first, end, &buf, &cap);
	}
	free(buf);
	atomic_fetch_sub(&in->running, 1);
	return NULL;
}

static void draw_progress(const struct ingest *in, double elapsed, int final)
{
	size_t done = atomic_load(&in->done);
	double rate = elapsed > 0 ? done / elapsed : 0;
	char eta[32];
	progress_duration(rate > 0 ? (in->n - done) / rate : -1, eta, sizeof eta);
	double frac = in->n ? (double)done / in->n : 1;
	if (in->c->progress) {
		char bar[31];
		int fill = (int)(frac * 30);
		for (int i = 0; i < 30; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[30] = 0;
		fprintf(stderr, "\r\033[Kingest [%s] %zu/%zu %5.1f%%  %.1f images/s  ETA %s", bar, done,
			in->n, 100 * frac, rate, eta);
		if (final)
			fputc('\n', stderr);
	} else {
		fprintf(stderr, "ingest: %zu/%zu images (%.1f%%), %.1f images/s, ETA %s\n", done, in->n,
			100 * frac, rate, eta);
	}
}

/* The shard's part as JSON. */
static cJSON *shard_json(struct ingest *in, size_t k)
{
	struct shard *sh = &in->sh[k];
	cJSON *o = cJSON_CreateObject(), *u;
	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "shard", vr_shards_name(in->shards, k));
	cJSON_AddNumberToObject(o, "files", (double)sh->n);
	cJSON_AddNumberToObject(o, "accepted", (double)atomic_load(&sh->accepted));
	cJSON_AddNumberToObject(o, "rejected", (double)atomic_load(&sh->rejected));
	if (atomic_load(&sh->failed)) {
		vr_status local = sh->fatal_st;
		if (sh->fatal_rc != VR_ERPC)
			snprintf(local.message, sizeof local.message, "%s (in this client)",
				 vr_strerror(sh->fatal_rc));
		cJSON_AddItemToObject(o, "failed", cli_status_json(in->c, CLI_FEATURED, &local));
	} else {
		cJSON_AddNullToObject(o, "failed");
	}
	u = cJSON_AddArrayToObject(o, "unconfirmed");
	for (size_t i = 0; u && i < sh->n_unconfirmed; i++)
		cJSON_AddItemToArray(u, cJSON_CreateString(sh->unconfirmed[i]));
	return o;
}

static int report(struct ingest *in, double seconds)
{
	cli *c = in->c;
	size_t accepted = 0, rejected = atomic_load(&in->local_rejected), failed = 0;
	size_t done = atomic_load(&in->done);
	double rate = seconds > 0 ? done / seconds : 0;
	for (size_t k = 0; k < in->nsh; k++) {
		accepted += atomic_load(&in->sh[k].accepted);
		rejected += atomic_load(&in->sh[k].rejected);
		failed += atomic_load(&in->sh[k].failed) != 0;
	}
	if (cli_wants_json(c)) {
		cJSON *o = cJSON_CreateObject(), *errs, *shards;
		if (!o)
			return cli_fail(c, "ingest", "out of memory");
		cJSON_AddStringToObject(o, "dir", in->dir);
		cJSON_AddNumberToObject(o, "files", (double)in->n);
		cJSON_AddNumberToObject(o, "accepted", (double)accepted);
		cJSON_AddNumberToObject(o, "rejected", (double)rejected);
		cJSON_AddNumberToObject(o, "seconds", seconds);
		cJSON_AddNumberToObject(o, "images_per_second", rate);
		errs = cJSON_AddArrayToObject(o, "errors");
		for (size_t i = 0; errs && i < in->nerrors; i++) {
			cJSON *e = cJSON_CreateObject();
			cJSON_AddStringToObject(e, "item", in->errors[i].item);
			cJSON_AddStringToObject(e, "status", in->errors[i].code < 0
				? "LOCAL" : vr_status_name(in->errors[i].code));
			cJSON_AddStringToObject(e, "message", in->errors[i].message);
			if (in->errors[i].code >= 0)
				cJSON_AddStringToObject(e, "shard",
							vr_shards_name(in->shards, in->errors[i].shard));
			cJSON_AddItemToArray(errs, e);
		}
		shards = cJSON_AddArrayToObject(o, "shards");
		for (size_t k = 0; shards && k < in->nsh; k++)
			cJSON_AddItemToArray(shards, shard_json(in, k));
		if (cli_output(c, o))
			return CLI_EXIT_FAIL;
	}
	if (!c->json) {
		char d[32];
		if (in->nsh == 1)
			printf("ingested %zu images from %s into featured at %s: %zu stored, %zu rejected, "
			       "in %s (%.1f images/s)\n", done, in->dir, c->featured_addr, accepted,
			       rejected, progress_duration(seconds, d, sizeof d), rate);
		else
			printf("ingested %zu images from %s into %zu featured shards: %zu stored, %zu "
			       "rejected, %zu shard(s) failed, in %s (%.1f images/s)\n", done, in->dir,
			       in->nsh, accepted, rejected, failed,
			       progress_duration(seconds, d, sizeof d), rate);
		for (size_t k = 0; in->nsh > 1 && k < in->nsh; k++)
			printf("  shard %s: %zu files, %zu stored, %zu rejected%s\n",
			       vr_shards_name(in->shards, k), in->sh[k].n,
			       atomic_load(&in->sh[k].accepted), atomic_load(&in->sh[k].rejected),
			       atomic_load(&in->sh[k].failed) ? ", FAILED (below)" : "");
	}
	if (in->nerrors) {
		fprintf(stderr, "%zu item(s) not stored:\n", in->nerrors);
		for (size_t i = 0; i < in->nerrors && i < 100; i++)
			fprintf(stderr, "  %s: %s%s%s: %s\n", in->errors[i].item,
				in->errors[i].code < 0 ? "not sent" : vr_status_name(in->errors[i].code),
				in->nsh > 1 && in->errors[i].code >= 0 ? " from shard " : "",
				in->nsh > 1 && in->errors[i].code >= 0
					? vr_shards_name(in->shards, in->errors[i].shard) : "",
				in->errors[i].message);
		if (in->nerrors > 100)
			fprintf(stderr, "  ... and %zu more (--json lists all)\n", in->nerrors - 100);
	}
	for (size_t k = 0; k < in->nsh; k++) {
		struct shard *sh = &in->sh[k];
		if (!atomic_load(&sh->failed))
			continue;
		fprintf(stderr, "visrec: featured shard %s failed during PutItems: %s: %s\n",
			vr_shards_name(in->shards, k),
			vr_status_name(sh->fatal_rc == VR_ERPC ? sh->fatal_st.code : GRPC_STATUS_INTERNAL),
			sh->fatal_rc == VR_ERPC ? sh->fatal_st.message : vr_strerror(sh->fatal_rc));
		fprintf(stderr, "  shard %s did not confirm %zu item(s), which may not be stored; "
			"when it serves again, send them again:", vr_shards_name(in->shards, k),
			sh->n_unconfirmed);
		for (size_t i = 0; i < sh->n_unconfirmed && i < 100; i++)
			fprintf(stderr, " %s", sh->unconfirmed[i]);
		fprintf(stderr, "%s\n", sh->n_unconfirmed > 100 ? " ... (--json lists all)" : "");
	}
	return failed ? CLI_EXIT_FAIL : rejected ? CLI_EXIT_PARTIAL : CLI_EXIT_OK;
}

/* Gives every file to its owner shard's queue; files whose name is no
 * valid id are listed as not sent. Returns CLI_EXIT_OK, or reported. */
static int route(struct ingest *in)
{
	char id[1024], why[512];
	in->nsh = vr_shards_count(in->shards);
	if (!(in->sh = calloc(in->nsh, sizeof *in->sh)))
		return cli_fail(in->c, "ingest", "out of memory");
	size_t *owner = malloc(in->n * sizeof *owner);
	if (!owner)
		return cli_fail(in->c, "ingest", "out of memory");
	for (size_t i = 0; i < in->n; i++) {
		if (file_id(in->names[i], id, sizeof id, why, sizeof why)) {
			/* featured would refuse it: say so here, by the file's name. */
			add_error(in, 0, id, -1, why);
			atomic_fetch_add(&in->local_rejected, 1);
			atomic_fetch_add(&in->done, 1);
			owner[i] = SIZE_MAX;
			continue;
		}
		in->sh[owner[i] = vr_shards_owner(in->shards, id)].n++;
	}
	for (size_t k = 0; k < in->nsh; k++) {
		in->sh[k].ch = vr_shards_channel(in->shards, k);
		if (!(in->sh[k].files = malloc((in->sh[k].n ? in->sh[k].n : 1) * sizeof(size_t)))) {
			free(owner);
			return cli_fail(in->c, "ingest", "out of memory");
		}
		in->sh[k].n = 0;
	}
	for (size_t i = 0; i < in->n; i++)
		if (owner[i] != SIZE_MAX)
			in->sh[owner[i]].files[in->sh[owner[i]].n++] = i;
	free(owner);
	return CLI_EXIT_OK;
}

static int cmp_errors(const void *a, const void *b)
{
	return strcmp(((const struct item_error *)a)->item, ((const struct item_error *)b)->item);
}

int cli_cmd_ingest(cli *c, int argc, char **argv)
{
	int batch = 64, streams = 2, code;
	const vr_flag table[] = {
		{ "batch", NULL, VR_FLAG_INT, &batch, "64", "images per PutItems call", 0 },
		{ "streams", NULL, VR_FLAG_INT, &streams, "2",
		  "PutItems calls in flight at once, per shard", 0 },
		{ 0 },
	};
	struct ingest in = { .c = c };
	pthread_t *threads = NULL;
	struct worker_arg *args = NULL;
	size_t started = 0;
	char **pos = NULL;
	int npos = 0;
	pthread_mutex_init(&in.mu, NULL);
	code = cli_parse(c, table, argc, argv, "visrec ingest DIR",
			 "Sends every DIR/images/*.jpg (or DIR/*.jpg) to featured; the item id is the file\n"
			 "name without .jpg (a name that is no valid id is listed, not sent). Re-sending\n"
			 "an id replaces its image. With a shard list in --featured each image goes to\n"
			 "the shard that owns its id, every shard at once, and the report is per shard.",
			 &pos, &npos);
	if (code || npos < 0)
		goto leave;
	if (npos != 1) {
		code = cli_usage_error(argv[0], "needs one folder (got %d arguments)", npos);
		goto leave;
	}
	if (batch < 1 || streams < 1 || streams > 16) {
		code = cli_usage_error(argv[0], "--batch must be >= 1 and --streams 1..16");
		goto leave;
	}
	in.batch = (size_t)batch;
	struct stat sb;
	size_t dlen = strlen(pos[0]);
	if (!(in.dir = malloc(dlen + sizeof "/images"))) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	sprintf(in.dir, "%s/images", pos[0]);
	if (stat(in.dir, &sb) || !S_ISDIR(sb.st_mode))
		in.dir[dlen] = 0;
	int rc = list_jpegs(&in, in.dir);
	if (rc) {
		code = cli_fail(c, argv[0], "cannot list %s: %s", in.dir, vr_strerror(rc));
		goto leave;
	}
	if (!in.n) {
		code = cli_fail(c, argv[0], "no .jpg files in %s/images or %s", pos[0], pos[0]);
		goto leave;
	}
	if ((code = cli_shards(c, argv[0], &in.shards)) || (code = route(&in)))
		goto leave;

	size_t nthreads = (size_t)streams * in.nsh;
	if (nthreads > MAX_THREADS) /* many shards: fewer streams each, at least one */
		nthreads = in.nsh > MAX_THREADS ? in.nsh : MAX_THREADS / in.nsh * in.nsh;
	if (!(threads = calloc(nthreads, sizeof *threads)) ||
	    !(args = calloc(nthreads, sizeof *args))) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	double t0 = vr_now_s(), last = t0;
	atomic_store(&in.running, nthreads);
	for (; started < nthreads; started++) {
		args[started].in = &in;
		args[started].shard = started % in.nsh;
		if (pthread_create(&threads[started], NULL, worker, &args[started]))
			break;
	}
	atomic_fetch_sub(&in.running, nthreads - started);
	while (atomic_load(&in.running)) {
		usleep(200 * 1000);
		double now = vr_now_s();
		if (c->progress || now - last >= 5) {
			draw_progress(&in, now - t0, 0);
			last = now;
		}
	}
	for (size_t i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	double seconds = vr_now_s() - t0;
	if (!started) {
		code = cli_fail(c, argv[0], "cannot start a thread");
		goto leave;
	}
	/* Items due to a failed shard that no worker took are unconfirmed too. */
	for (size_t k = 0; k < in.nsh; k++) {
		struct shard *sh = &in.sh[k];
		size_t next = atomic_load(&sh->next);
		if (atomic_load(&sh->failed) && next < sh->n)
			add_unconfirmed(&in, k, next, sh->n);
	}
	if (c->progress || !atomic_load(&in.sh[0].failed) || in.nsh > 1)
		draw_progress(&in, seconds, 1);
	/* Sorted by item, so the list reads the same on every run. */
	if (in.nerrors)
		qsort(in.errors, in.nerrors, sizeof *in.errors, cmp_errors);
	if (in.nsh == 1 && atomic_load(&in.sh[0].failed)) {
		code = cli_call_error(c, CLI_FEATURED, "PutItems", in.sh[0].fatal_rc, &in.sh[0].fatal_st);
		fprintf(stderr, "  %zu of %zu images were stored before the failure\n",
			atomic_load(&in.sh[0].accepted), in.n);
		goto leave;
	}
	code = report(&in, seconds);
leave:
	for (size_t i = 0; i < in.nerrors; i++) {
		free(in.errors[i].item);
		free(in.errors[i].message);
	}
	free(in.errors);
	for (size_t k = 0; in.sh && k < in.nsh; k++) {
		for (size_t i = 0; i < in.sh[k].n_unconfirmed; i++)
			free(in.sh[k].unconfirmed[i]);
		free(in.sh[k].unconfirmed);
		free(in.sh[k].files);
	}
	free(in.sh);
	free(threads);
	free(args);
	for (size_t i = 0; i < in.n; i++)
		free(in.names[i]);
	free(in.names);
	free(in.dir);
	free(pos);
	pthread_mutex_destroy(&in.mu);
	return code;
}
