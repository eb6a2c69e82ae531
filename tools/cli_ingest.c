/* visrec ingest DIR: sends a folder of JPEGs to featured with PutItems.
 *
 * DESIGN. The main thread lists the .jpg files of DIR/images (or of DIR),
 * sorts the names, starts --streams worker threads and then only draws progress
 * until they end. Workers take the next --batch files from a shared
 * counter and send them as one PutItems client stream, reading each file
 * into a buffer of their own just before sending it (memory stays at one
 * image per worker plus what gRPC holds in flight), then read the reply
 * with the per-item statuses. Two streams keep featured's executor busy
 * while the other stream waits for its reply. Counters are atomics; the
 * list of rejected items is under a mutex. A failed call (not a rejected
 * item) stops every worker: each finishes its stream and exits, the first
 * such status is reported. */
#include "cli.h"

#include "err.h"
#include "ids.h"
#include "visrec/v1/featured.pb-c.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct item_error {
	char *item, *message;
	int code; /* gRPC status code; -1: could not be read here */
};

struct ingest {
	cli *c;
	vr_channel *ch;
	char *dir;               /* the folder holding the JPEGs */
	char **names;            /* file names, sorted */
	size_t n, batch;
	atomic_size_t next;      /* first file of the next batch */
	atomic_size_t done, accepted, rejected;
	atomic_int stop;
	pthread_mutex_t mu;      /* guards errors, nerrors, fatal */
	struct item_error *errors;
	size_t nerrors, cap_errors;
	int fatal;               /* a call failed: fatal_rc/fatal_st say why */
	int fatal_rc;
	vr_status fatal_st;
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

static void add_error(struct ingest *in, const char *item, int code, const char *message)
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
	if (e->item && e->message) {
		in->nerrors++;
	} else {
		free(e->item);
		free(e->message);
	}
leave:
	pthread_mutex_unlock(&in->mu);
}

static void set_fatal(struct ingest *in, int rc, const vr_status *st)
{
	pthread_mutex_lock(&in->mu);
	if (!in->fatal) {
		in->fatal = 1;
		in->fatal_rc = rc;
		in->fatal_st = *st;
	}
	pthread_mutex_unlock(&in->mu);
	atomic_store(&in->stop, 1);
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

/* Sends files [first, end) as one PutItems stream and records the reply. */
static void send_batch(struct ingest *in, size_t first, size_t end, uint8_t **buf, size_t *cap)
{
	vr_ccall *cc = NULL;
	vr_status st = { 0 };
	ProtobufCMessage *reply = NULL;
	size_t sent = 0;
	char path[4096], id[1024], why[4400];
	int rc = vr_ccall_start(&cc, in->ch, "/visrec.v1.Featured/PutItems",
			       &visrec__v1__put_items_response__descriptor,
			       cli_deadline_ms(in->c, 0), NULL);
	if (rc) {
		st.code = GRPC_STATUS_INTERNAL;
		set_fatal(in, rc, &st);
		return;
	}
	for (size_t i = first; i < end && !rc; i++) {
		const char *name = in->names[i];
		size_t idlen = (size_t)(strrchr(name, '.') - name);
		/* featured would refuse it: say so here, by the file's name. */
		if (vr_id_check_named("the item id (the file name without .jpg)", name, idlen, why,
				      sizeof why)) {
			add_error(in, vr_id_escape(id, 80, name, idlen), -1, why);
			atomic_fetch_add(&in->rejected, 1);
			atomic_fetch_add(&in->done, 1);
			continue;
		}
		snprintf(id, sizeof id, "%.*s", (int)idlen, name);
		snprintf(path, sizeof path, "%s/%s", in->dir, name);
		size_t len = 0;
		int frc = read_file(path, buf, cap, &len);
		if (frc) {
			snprintf(why, sizeof why, "cannot read %s: %s", path, vr_strerror(frc));
			add_error(in, id, -1, why);
			atomic_fetch_add(&in->rejected, 1);
			atomic_fetch_add(&in->done, 1);
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
		set_fatal(in, VR_ERPC, &st);
	} else if (rc) {
		st.code = rc == VR_ETOOBIG ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INTERNAL;
		set_fatal(in, rc, &st);
	} else {
		const Visrec__V1__PutItemsResponse *r = (const void *)reply;
		for (size_t i = 0; i < r->n_items; i++)
			if (r->items[i]->code)
				add_error(in, r->items[i]->item_id, r->items[i]->code, r->items[i]->message);
		atomic_fetch_add(&in->accepted, r->accepted);
		atomic_fetch_add(&in->rejected, r->rejected);
		atomic_fetch_add(&in->done, sent);
	}
	if (reply)
		protobuf_c_message_free_unpacked(reply, NULL);
}

static void *worker(void *arg)
{
	struct ingest *in = arg;
	uint8_t *buf = NULL;
	size_t cap = 0;
	while (!atomic_load(&in->stop)) {
		size_t first = atomic_fetch_add(&in->next, in->batch);
		if (first >= in->n)
			break;
		size_t end = first + in->batch < in->n ? first + in->batch : in->n;
		send_batch(in, first, end, &buf, &cap);
	}
	free(buf);
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

static int report(struct ingest *in, double seconds)
{
	cli *c = in->c;
	size_t accepted = atomic_load(&in->accepted), rejected = atomic_load(&in->rejected);
	size_t done = atomic_load(&in->done);
	double rate = seconds > 0 ? done / seconds : 0;
	if (cli_wants_json(c)) {
		cJSON *o = cJSON_CreateObject(), *errs;
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
			cJSON_AddItemToArray(errs, e);
		}
		if (cli_output(c, o))
			return CLI_EXIT_FAIL;
	}
	if (!c->json) {
		char d[32];
		printf("ingested %zu images from %s into featured at %s: %zu stored, %zu rejected, "
		       "in %s (%.1f images/s)\n", done, in->dir, c->featured_addr, accepted, rejected,
		       progress_duration(seconds, d, sizeof d), rate);
	}
	if (in->nerrors) {
		fprintf(stderr, "%zu item(s) not stored:\n", in->nerrors);
		for (size_t i = 0; i < in->nerrors && i < 100; i++)
			fprintf(stderr, "  %s: %s: %s\n", in->errors[i].item,
				in->errors[i].code < 0 ? "not sent" : vr_status_name(in->errors[i].code),
				in->errors[i].message);
		if (in->nerrors > 100)
			fprintf(stderr, "  ... and %zu more (--json lists all)\n", in->nerrors - 100);
	}
	return rejected ? CLI_EXIT_PARTIAL : CLI_EXIT_OK;
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
		{ "streams", NULL, VR_FLAG_INT, &streams, "2", "PutItems calls in flight at once", 0 },
		{ 0 },
	};
	struct ingest in = { .c = c };
	pthread_t threads[16];
	int started = 0;
	char **pos = NULL;
	int npos = 0;
	pthread_mutex_init(&in.mu, NULL);
	code = cli_parse(c, table, argc, argv, "visrec ingest DIR",
			 "Sends every DIR/images/*.jpg (or DIR/*.jpg) to featured; the item id is the file\n"
			 "name without .jpg (a name that is no valid id is listed, not sent). Re-sending\n"
			 "an id replaces its image.",
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
	if ((code = cli_channel(c, CLI_FEATURED, &in.ch)))
		goto leave;

	double t0 = vr_now_s(), last = t0;
	for (; started < streams; started++)
		if (pthread_create(&threads[started], NULL, worker, &in)) {
			atomic_store(&in.stop, 1);
			break;
		}
	while (atomic_load(&in.done) < in.n && !atomic_load(&in.stop) && started) {
		usleep(200 * 1000);
		double now = vr_now_s();
		if (c->progress || now - last >= 5) {
			draw_progress(&in, now - t0, 0);
			last = now;
		}
	}
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	double seconds = vr_now_s() - t0;
	if (c->progress || !in.fatal)
		draw_progress(&in, seconds, 1);
	if (!started) {
		code = cli_fail(c, argv[0], "cannot start a thread");
		goto leave;
	}
	/* Sorted by item, so the list reads the same on every run. */
	if (in.nerrors)
		qsort(in.errors, in.nerrors, sizeof *in.errors, cmp_errors);
	if (in.fatal) {
		code = cli_call_error(c, CLI_FEATURED, "PutItems", in.fatal_rc, &in.fatal_st);
		fprintf(stderr, "  %zu of %zu images were stored before the failure\n",
			atomic_load(&in.accepted), in.n);
		goto leave;
	}
	code = report(&in, seconds);
leave:
	for (size_t i = 0; i < in.nerrors; i++) {
		free(in.errors[i].item);
		free(in.errors[i].message);
	}
	free(in.errors);
	for (size_t i = 0; i < in.n; i++)
		free(in.names[i]);
	free(in.names);
	free(in.dir);
	free(pos);
	pthread_mutex_destroy(&in.mu);
	return code;
}
