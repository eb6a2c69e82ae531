/* The `visrec` commands that talk to rankd: import, train, eval,
 * recommend, score.
 *
 * Why one file at ~920 lines: these are the CLI's commands for one
 * service, sharing its request building and progress output. */
#include "cli.h"

#include "err.h"
#include "icsv.h"
#include "visrec/v1/rankd.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Unary calls default to this deadline; training and evaluation to none. */
#define UNARY_DEADLINE_MS 30000

/* ---- import ------------------------------------------------------------- */

struct batch {
	Visrec__V1__Interaction *rows;
	Visrec__V1__Interaction **ptrs;
	size_t n, cap;
};

static void batch_clear(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free(b->rows[i].user_id);
		free(b->rows[i].item_id);
	}
	b->n = 0;
}

static int batch_add(struct batch *b, const icsv_row *r)
{
	Visrec__V1__Interaction *x = &b->rows[b->n];
	visrec__v1__interaction__init(x);
	x->user_id = strdup(r->user);
	x->item_id = strdup(r->item);
	x->timestamp = r->timestamp;
	b->ptrs[b->n++] = x;
	return x->user_id && x->item_id ? 0 : VR_ENOMEM;
}

/* First pass: every row must parse, so a bad file sends nothing. Lists
 * up to 20 errors. Returns the exit status; *rows gets the row count. */
static int import_check(cli *c, const char *path, size_t *rows)
{
	icsv *r = NULL;
	icsv_row row;
	size_t errors = 0;
	int rc = icsv_open(&r, path);
	if (rc)
		return cli_fail(c, "import", "cannot open %s: %s", path, vr_strerror(rc));
	*rows = 0;
	while ((rc = icsv_next(r, &row)) != VR_EEOF) {
		if (rc == VR_EINVAL) {
			if (errors++ < 20)
				fprintf(stderr, "%s\n", icsv_error(r));
			continue;
		}
		if (rc) {
			icsv_close(r);
			return cli_fail(c, "import", "reading %s: %s", path, vr_strerror(rc));
		}
		(*rows)++;
	}
	icsv_close(r);
	if (errors)
		return cli_fail(c, "import", "%zu malformed row(s) in %s%s; nothing was sent", errors,
				path, errors > 20 ? " (the first 20 above)" : " (above)");
	if (!*rows)
		return cli_fail(c, "import", "%s holds no interactions", path);
	return CLI_EXIT_OK;
}

int cli_cmd_import(cli *c, int argc, char **argv)
{
	int batch_size = 5000, code;
	const vr_flag table[] = {
		{ "batch", NULL, VR_FLAG_INT, &batch_size, "5000", "interactions per AddInteractions call", 0 },
		{ 0 },
	};
	struct batch b = { 0 };
	icsv *r = NULL;
	icsv_row row;
	char **pos = NULL;
	int npos = 0;
	size_t rows = 0, sent = 0;
	uint64_t added = 0, updated = 0;
	Visrec__V1__AddInteractionsResponse *last = NULL;
	vr_channel *ch;
	code = cli_parse(c, table, argc, argv, "visrec import FILE.csv",
			 "Sends interactions (user,item,timestamp; a header line is optional) to rankd.\n"
			 "The file is checked first: a malformed row sends nothing. A (user, item) pair\n"
			 "seen before keeps its latest timestamp.", &pos, &npos);
	if (code || npos < 0)
		goto leave;
	if (npos != 1) {
		code = cli_usage_error(argv[0], "needs one CSV file (got %d arguments)", npos);
		goto leave;
	}
	if (batch_size < 1) {
		code = cli_usage_error(argv[0], "--batch must be >= 1");
		goto leave;
	}
	if ((code = import_check(c, pos[0], &rows)) || (code = cli_channel(c, CLI_RANKD, &ch)))
		goto leave;
	b.cap = (size_t)batch_size;
	b.rows = calloc(b.cap, sizeof *b.rows);
	b.ptrs = calloc(b.cap, sizeof *b.ptrs);
	int rc = b.rows && b.ptrs ? icsv_open(&r, pos[0]) : VR_ENOMEM;
	if (rc) {
		code = cli_fail(c, argv[0], "cannot open %s: %s", pos[0], vr_strerror(rc));
		goto leave;
	}
	double t0 = vr_now_s(), shown = t0;
	for (;;) {
		rc = icsv_next(r, &row);
		if (rc && rc != VR_EEOF) {
			code = cli_fail(c, argv[0], "%s changed while importing: %s", pos[0],
					rc == VR_EINVAL ? icsv_error(r) : vr_strerror(rc));
			goto leave;
		}
		if (!rc && (rc = batch_add(&b, &row))) {
			code = cli_fail(c, argv[0], "out of memory");
			goto leave;
		}
		if (b.n < b.cap && rc != VR_EEOF)
			continue;
		if (b.n) {
			Visrec__V1__AddInteractionsRequest req = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
			vr_status st;
			req.n_interactions = b.n;
			req.interactions = b.ptrs;
			if (last)
				protobuf_c_message_free_unpacked(&last->base, NULL);
			last = NULL;
			int crc = vr_client_unary(ch, "/visrec.v1.Rank/AddInteractions", &req.base,
						  &visrec__v1__add_interactions_response__descriptor,
						  (ProtobufCMessage **)&last,
						  cli_deadline_ms(c, UNARY_DEADLINE_MS), NULL, &st);
			if (crc) {
				code = cli_call_error(c, CLI_RANKD, "AddInteractions", crc, &st);
				fprintf(stderr, "  %zu of %zu interactions were sent before the failure "
					"(re-running the import is safe)\n", sent, rows);
				goto leave;
			}
			sent += b.n;
			added += last->added;
			updated += last->updated;
			batch_clear(&b);
			double now = vr_now_s();
			if (c->progress)
				fprintf(stderr, "\r\033[Kimport %zu/%zu interactions", sent, rows);
			else if (now - shown >= 5)
				fprintf(stderr, "import: %zu/%zu interactions\n", sent, rows);
			if (now - shown >= 5)
				shown = now;
		}
		if (rc == VR_EEOF)
			break;
	}
	if (c->progress)
		fputc('\n', stderr);
	double seconds = vr_now_s() - t0;
	if (cli_wants_json(c)) {
		cJSON *o = cJSON_CreateObject();
		if (o) {
			cJSON_AddStringToObject(o, "file", pos[0]);
			cJSON_AddNumberToObject(o, "sent", (double)sent);
			cJSON_AddNumberToObject(o, "added", (double)added);
			cJSON_AddNumberToObject(o, "updated", (double)updated);
			cJSON_AddNumberToObject(o, "seconds", seconds);
			if (last)
				cJSON_AddItemToObject(o, "rankd", cli_proto_json(&last->base));
		}
		code = cli_output(c, o);
	}
	if (!c->json) {
		printf("imported %zu interactions from %s in %.1f s: %llu new, %llu updated; rankd "
		       "holds %llu users, %llu items, %llu interactions\n", sent, pos[0], seconds,
		       (unsigned long long)added, (unsigned long long)updated,
		       (unsigned long long)(last ? last->users : 0),
		       (unsigned long long)(last ? last->items : 0),
		       (unsigned long long)(last ? last->interactions : 0));
	}
leave:
	if (last)
		protobuf_c_message_free_unpacked(&last->base, NULL);
	batch_clear(&b);
	free(b.rows);
	free(b.ptrs);
	icsv_close(r);
	free(pos);
	return code;
}

/* ---- train -------------------------------------------------------------- */

static int parse_model(const char *s)
{
	if (!strcasecmp(s, "bpr"))
		return VISREC__V1__MODEL_KIND__BPR;
	if (!strcasecmp(s, "vbpr"))
		return VISREC__V1__MODEL_KIND__VBPR;
	if (!strcasecmp(s, "dvbpr"))
		return VISREC__V1__MODEL_KIND__DVBPR;
	return -1;
}

static void format_progress(const Visrec__V1__TrainProgress *p, const char *model, char *buf,
			    size_t len)
{
	char eta[32], el[32];
	if (!p->epoch) {
		snprintf(buf, len, "%s: %s (%s)", model, p->state[0] ? p->state : "starting",
			 progress_duration(p->elapsed_seconds, el, sizeof el));
		return;
	}
	snprintf(buf, len,
		 "%s epoch %u/%u  loss %.5f  val AUC %.5f  %.1fk triples/s  lr %.2g  %s  ETA %s%s%s",
		 model, p->epoch, p->epochs, p->loss, p->val_auc, p->triples_per_second / 1e3,
		 p->learning_rate, progress_duration(p->elapsed_seconds, el, sizeof el),
		 progress_duration(p->done ? 0 : p->eta_seconds, eta, sizeof eta),
		 p->state[0] ? "  " : "", p->state);
}

int cli_cmd_train(cli *c, int argc, char **argv)
{
	const char *model = NULL, *optimizer = NULL, *negatives = NULL, *arch = NULL;
	const char *trunk_layer = NULL, *head_norm = NULL;
	int epochs, dims, visual_dims, batch, threads, tpe, patience, input_size, head_width;
	int feature_version;
	int use_all, no_latent, resume, code;
	double lr, lambda, lambda_e, cnn_lr, cnn_wd;
	uint64_t seed;
	const vr_flag table[] = {
		{ "model", NULL, VR_FLAG_STRING, &model, NULL, "bpr, vbpr or dvbpr", 1 },
		{ "epochs", NULL, VR_FLAG_INT, &epochs, "0", "epochs; 0 = the model's default", 0 },
		{ "dims", NULL, VR_FLAG_INT, &dims, "0", "K, latent factors (gamma); 0 = default", 0 },
		{ "visual-dims", NULL, VR_FLAG_INT, &visual_dims, "0", "K', visual factors (theta); 0 = default", 0 },
		{ "lr", NULL, VR_FLAG_DOUBLE, &lr, "0", "learning rate; 0 = default", 0 },
		{ "lambda", NULL, VR_FLAG_DOUBLE, &lambda, "0", "L2 on gamma, beta, theta; 0 = default", 0 },
		{ "lambda-e", NULL, VR_FLAG_DOUBLE, &lambda_e, "0", "L2 on E and beta'; 0 = default", 0 },
		{ "optimizer", NULL, VR_FLAG_STRING, &optimizer, "", "adam or sgd; empty = default", 0 },
		{ "batch-size", NULL, VR_FLAG_INT, &batch, "0", "triples per step; 0 = default", 0 },
		{ "threads", NULL, VR_FLAG_INT, &threads, "0", "training threads; 0 = all cores", 0 },
		{ "seed", NULL, VR_FLAG_UINT64, &seed, "1", "sampling and init seed", 0 },
		{ "negatives", NULL, VR_FLAG_STRING, &negatives, "", "uniform or popularity; empty = default", 0 },
		{ "use-all", NULL, VR_FLAG_BOOL, &use_all, "false",
		  "train on every interaction (no held-out test item)", 0 },
		{ "triples-per-epoch", NULL, VR_FLAG_INT, &tpe, "0", "0 = training interactions", 0 },
		{ "patience", NULL, VR_FLAG_INT, &patience, "0",
		  "epochs without gain before stopping; 0 = default", 0 },
		{ "feature-version", NULL, VR_FLAG_INT, &feature_version, "0",
		  "VBPR: featured's model version to train on; 0 = its active one", 0 },
		{ "arch", NULL, VR_FLAG_STRING, &arch, "",
		  "DVBPR: alexnet, cnnf or small; with --trunk-layer featured's active model's (empty)", 0 },
		{ "trunk-layer", NULL, VR_FLAG_STRING, &trunk_layer, "",
		  "DVBPR: freeze featured's active (pretrained) model up to this layer, e.g. block_10, "
		  "and train only what is above it", 0 },
		{ "head-width", NULL, VR_FLAG_INT, &head_width, "0",
		  "DVBPR with --trunk-layer: a conv1x1 head of this width; 0 = fine-tune the layers above", 0 },
		{ "head-norm", NULL, VR_FLAG_STRING, &head_norm, "",
		  "DVBPR with --head-width: l2 (unit-length item vectors) or none; empty = l2", 0 },
		{ "input-size", NULL, VR_FLAG_INT, &input_size, "0", "DVBPR: input pixels per side", 0 },
		{ "cnn-lr", NULL, VR_FLAG_DOUBLE, &cnn_lr, "0", "DVBPR: the CNN's learning rate", 0 },
		{ "cnn-weight-decay", NULL, VR_FLAG_DOUBLE, &cnn_wd, "0", "DVBPR: the CNN's weight decay", 0 },
		{ "no-latent", NULL, VR_FLAG_BOOL, &no_latent, "false", "DVBPR: drop the gamma terms", 0 },
		{ "resume", NULL, VR_FLAG_BOOL, &resume, "false",
		  "DVBPR: continue the last session from its checkpoint", 0 },
		{ 0 },
	};
	char line[256], what[64];
	int npos = 0, kind, printed_epoch = -1, open_line = 0;
	vr_ccall *cc = NULL;
	vr_status st = { 0 };
	vr_channel *ch;
	Visrec__V1__TrainProgress *last = NULL;
	cJSON *out = NULL, *curve = NULL;
	code = cli_parse(c, table, argc, argv, "visrec train --model bpr|vbpr|dvbpr",
			 "Trains a model in rankd and shows its progress (epoch, loss, validation AUC,\n"
			 "triples/s, ETA). rankd serves the new model when training finishes.",
			 NULL, &npos);
	if (code || npos < 0)
		goto leave;
	if ((kind = parse_model(model)) < 0) {
		code = cli_usage_error(argv[0], "--model must be bpr, vbpr or dvbpr (got \"%s\")", model);
		goto leave;
	}
	if (epochs < 0 || dims < 0 || visual_dims < 0 || batch < 0 || threads < 0 || tpe < 0 ||
	    patience < 0 || input_size < 0 || head_width < 0 || feature_version < 0 || lr < 0 ||
	    lambda < 0 || lambda_e < 0 || cnn_lr < 0 ||
	    cnn_wd < 0) {
		code = cli_usage_error(argv[0], "numbers must not be negative");
		goto leave;
	}
	if ((code = cli_channel(c, CLI_RANKD, &ch)))
		goto leave;
	const char *name = cli_model_name(kind);
	Visrec__V1__TrainRequest req = VISREC__V1__TRAIN_REQUEST__INIT;
	req.model = kind;
	req.epochs = (uint32_t)epochs;
	req.dims = (uint32_t)dims;
	req.visual_dims = (uint32_t)visual_dims;
	req.learning_rate = (float)lr;
	req.lambda = (float)lambda;
	req.lambda_e = (float)lambda_e;
	req.optimizer = (char *)optimizer;
	req.batch_size = (uint32_t)batch;
	req.threads = (uint32_t)threads;
	req.seed = seed;
	req.feature_version = (uint32_t)feature_version;
	req.negatives = (char *)negatives;
	req.use_all_interactions = use_all;
	req.triples_per_epoch = (uint32_t)tpe;
	req.patience = (uint32_t)patience;
	req.arch = (char *)arch;
	req.input_size = (uint32_t)input_size;
	req.cnn_learning_rate = (float)cnn_lr;
	req.cnn_weight_decay = (float)cnn_wd;
	req.no_latent = no_latent;
	req.resume = resume;
	req.trunk_layer = (char *)trunk_layer;
	req.head_width = (uint32_t)head_width;
	req.head_norm = (char *)head_norm;

	if (!(out = cJSON_CreateObject()) || !(curve = cJSON_AddArrayToObject(out, "epochs"))) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	cJSON_AddStringToObject(out, "model", name);
	cJSON_AddItemToObject(out, "request", cli_proto_json(&req.base));
	double t0 = vr_now_s(), shown = 0;
	int rc = vr_ccall_start(&cc, ch, "/visrec.v1.Rank/Train",
				&visrec__v1__train_progress__descriptor, cli_deadline_ms(c, 0), NULL);
	if (!rc)
		rc = vr_ccall_send(cc, &req.base);
	if (!rc)
		rc = vr_ccall_close_send(cc);
	while (!rc) {
		Visrec__V1__TrainProgress *p = NULL;
		rc = vr_ccall_recv(cc, (ProtobufCMessage **)&p);
		if (rc)
			break;
		if (last)
			protobuf_c_message_free_unpacked(&last->base, NULL);
		last = p;
		/* The last message of each epoch is its point on the curve; the
		 * one with done set sums the run up (the best epoch's figures). */
		if (p->epoch && !p->done) {
			cJSON *pt = cli_proto_json(&p->base);
			int n = cJSON_GetArraySize(curve);
			cJSON *prev = n ? cJSON_GetArrayItem(curve, n - 1) : NULL;
			cJSON *pe = prev ? cJSON_GetObjectItem(prev, "epoch") : NULL;
			if (pe && (uint32_t)pe->valuedouble == p->epoch)
				cJSON_ReplaceItemInArray(curve, n - 1, pt);
			else
				cJSON_AddItemToArray(curve, pt);
		}
		format_progress(p, name, line, sizeof line);
		double now = vr_now_s();
		if (c->progress) {
			if (open_line && (int)p->epoch != printed_epoch)
				fputc('\n', stderr);
			fprintf(stderr, "\r\033[K%s", line);
			open_line = 1;
			printed_epoch = (int)p->epoch;
		} else if ((int)p->epoch != printed_epoch || p->done || now - shown >= 10) {
			fprintf(stderr, "%s\n", line);
			printed_epoch = (int)p->epoch;
			shown = now;
		}
	}
	if (open_line)
		fputc('\n', stderr);
	int frc = vr_ccall_finish(cc, &st);
	cc = NULL;
	double seconds = vr_now_s() - t0;
	cJSON_AddNumberToObject(out, "seconds", seconds);
	snprintf(what, sizeof what, "Train(%s)", name);
	if (rc != VR_EEOF || frc || !last || !last->done) {
		if (rc == VR_EEOF && !frc) {
			st.code = GRPC_STATUS_INTERNAL;
			snprintf(st.message, sizeof st.message,
				 "the progress stream ended before a message with done set");
			rc = VR_ERPC;
		} else if (rc == VR_EEOF || rc == VR_ERPC) {
			rc = VR_ERPC;
		}
		cli_print_call_error(c, CLI_RANKD, what, rc, &st);
		code = CLI_EXIT_FAIL;
		if (cli_wants_json(c)) {
			cJSON_AddItemToObject(out, "error", cli_status_json(c, CLI_RANKD, &st));
			cli_output(c, out);
			out = NULL;
		}
		goto leave;
	}
	if (!c->json) {
		double best = 0;
		int best_epoch = 0;
		cJSON *pt;
		cJSON_ArrayForEach(pt, curve) {
			double auc = cJSON_GetNumberValue(cJSON_GetObjectItem(pt, "val_auc"));
			if (auc > best) {
				best = auc;
				best_epoch = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(pt, "epoch"));
			}
		}
		char d[32];
		printf("%s %s after %d epoch(s) in %s; best val AUC %.5f (epoch %d); rankd serves "
		       "model version %llu\n", name, last->state[0] ? last->state : "finished",
		       cJSON_GetArraySize(curve), progress_duration(seconds, d, sizeof d), best, best_epoch,
		       (unsigned long long)last->model_version);
	}
	if (cli_wants_json(c)) {
		cJSON_AddItemToObject(out, "final", cli_proto_json(&last->base));
		code = cli_output(c, out);
		out = NULL;
	}
leave:
	if (cc)
		vr_ccall_finish(cc, NULL);
	if (last)
		protobuf_c_message_free_unpacked(&last->base, NULL);
	cJSON_Delete(out);
	return code;
}

/* ---- eval --------------------------------------------------------------- */

static const Visrec__V1__MetricsAtK *at_k(const Visrec__V1__EvalResult *r, uint32_t k)
{
	for (size_t i = 0; i < r->n_at_k; i++)
		if (r->at_k[i]->k == k)
			return r->at_k[i];
	return NULL;
}

/* One row of the table; a subset with no users says so instead of a row
 * of zeros that would read as AUC 0. */
static void print_eval_row(const char *who, const Visrec__V1__EvalResult *r, const uint32_t *ks,
			   size_t nks)
{
	printf("%-11s %-7s %6u", who, r->subset, r->users);
	if (!r->users) {
		printf(" %8s\n", "no users");
		return;
	}
	printf(" %8.5f %8.5f", r->auc, r->rr);
	for (size_t j = 0; j < nks; j++) {
		const Visrec__V1__MetricsAtK *m = at_k(r, ks[j]);
		if (m)
			printf(" %8.5f %8.5f %9.5f", m->recall, m->precision, m->ndcg);
		else
			printf(" %8s %8s %9s", "-", "-", "-");
	}
	putchar('\n');
}

static void print_eval(const Visrec__V1__EvaluateResponse *e, const uint32_t *ks, size_t nks)
{
	printf("%s (model version %llu), protocol %s, split %s\n", cli_model_name(e->model),
	       (unsigned long long)e->model_version, e->protocol,
	       e->split && e->split[0] ? e->split : "leave_last_out");
	printf("%-11s %-7s %6s %8s %8s", "model", "subset", "users", "AUC", "RR");
	for (size_t j = 0; j < nks; j++) {
		char h[3][24];
		snprintf(h[0], sizeof h[0], "R@%u", ks[j]);
		snprintf(h[1], sizeof h[1], "P@%u", ks[j]);
		snprintf(h[2], sizeof h[2], "nDCG@%u", ks[j]);
		printf(" %8s %8s %9s", h[0], h[1], h[2]);
	}
	putchar('\n');
	for (size_t i = 0; i < e->n_results; i++)
		print_eval_row(cli_model_name(e->model), e->results[i], ks, nks);
	for (size_t i = 0; i < e->n_popularity; i++)
		print_eval_row("popularity", e->popularity[i], ks, nks);
}

/* The JSON of an Evaluate answer: a subset with no users carries
 * "note": "no users" in place of metrics (zeros would read as AUC 0). */
static cJSON *eval_json(const Visrec__V1__EvaluateResponse *e)
{
	cJSON *o = cli_proto_json(&e->base);
	if (!o)
		return NULL;
	if (!cJSON_GetObjectItem(o, "split"))
		cJSON_AddStringToObject(o, "split", e->split && e->split[0] ? e->split : "leave_last_out");
	const char *lists[] = { "results", "popularity" };
	for (int l = 0; l < 2; l++) {
		cJSON *r;
		cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, lists[l])) {
			if (cJSON_GetNumberValue(cJSON_GetObjectItem(r, "users")) > 0)
				continue;
			cJSON_DeleteItemFromObject(r, "auc");
			cJSON_DeleteItemFromObject(r, "rr");
			cJSON_DeleteItemFromObject(r, "at_k");
			cJSON_AddStringToObject(r, "note", "no users");
		}
	}
	return o;
}

/* Reads a split's pairs (user,item[,timestamp]) from path into *out (n
 * messages, their ids in the rows' own strings). Returns a CLI exit code
 * with the line named on a bad row. */
static int read_pairs(cli *c, const char *cmd, const char *path, Visrec__V1__Interaction ***out,
		      size_t *n)
{
	icsv *r = NULL;
	icsv_row row;
	size_t cap = 0;
	int rc = icsv_open(&r, path);
	*out = NULL;
	*n = 0;
	if (rc)
		return cli_fail(c, cmd, "cannot read %s: %s", path, vr_strerror(rc));
	icsv_timestamp_optional(r);
	while (!(rc = icsv_next(r, &row))) {
		if (*n == cap) {
			cap = cap ? 2 * cap : 1024;
			Visrec__V1__Interaction **g = realloc(*out, cap * sizeof *g);
			if (!g) {
				rc = VR_ENOMEM;
				break;
			}
			*out = g;
		}
		Visrec__V1__Interaction *in = malloc(sizeof *in);
		if (!in || !(in->user_id = strdup(row.user)) || !(in->item_id = strdup(row.item))) {
			if (in)
				free(in->user_id);
			free(in);
			rc = VR_ENOMEM;
			break;
		}
		Visrec__V1__Interaction init = VISREC__V1__INTERACTION__INIT;
		char *u = in->user_id, *i = in->item_id;
		*in = init;
		in->user_id = u;
		in->item_id = i;
		in->timestamp = row.timestamp;
		(*out)[(*n)++] = in;
	}
	int code = 0;
	if (rc == VR_EINVAL)
		code = cli_usage_error(cmd, "%s", icsv_error(r));
	else if (rc != VR_EEOF)
		code = cli_fail(c, cmd, "cannot read %s: %s", path, vr_strerror(rc));
	else if (!*n)
		code = cli_usage_error(cmd, "%s holds no pairs", path);
	icsv_close(r);
	return code;
}

static void free_pairs(Visrec__V1__Interaction **p, size_t n)
{
	for (size_t x = 0; x < n; x++) {
		free(p[x]->user_id);
		free(p[x]->item_id);
		free(p[x]);
	}
	free(p);
}

int cli_cmd_eval(cli *c, int argc, char **argv)
{
	const char *protocol = NULL, *kstr = NULL, *test = NULL, *cold_test = NULL;
	int max_users, code, npos = 0;
	Visrec__V1__Interaction **tp = NULL, **cp = NULL;
	size_t ntp = 0, ncp = 0;
	uint64_t seed;
	const vr_flag table[] = {
		{ "protocol", NULL, VR_FLAG_STRING, &protocol, "standard",
		  "standard (all training items excluded) or tutorial (the last 10 excluded)", 0 },
		{ "k", NULL, VR_FLAG_STRING, &kstr, "20,100", "cut-offs for recall, precision, nDCG", 0 },
		{ "max-users", NULL, VR_FLAG_INT, &max_users, "0", "evaluate a sample; 0 = every user", 0 },
		{ "seed", NULL, VR_FLAG_UINT64, &seed, "1", "which users when --max-users is set", 0 },
		{ "test", NULL, VR_FLAG_STRING, &test, NULL,
		  "a given split's test pairs, CSV user,item[,timestamp] (default: rankd's leave-last-out)", 0 },
		{ "cold-test", NULL, VR_FLAG_STRING, &cold_test, NULL,
		  "with --test: test pairs of cold items, the \"cold\" subset", 0 },
		{ 0 },
	};
	cli_list kl = { 0 };
	uint32_t ks[16];
	size_t nks = 0;
	vr_channel *ch;
	vr_status st;
	Visrec__V1__EvaluateResponse *resp = NULL;
	code = cli_parse(c, table, argc, argv, "visrec eval",
			 "Evaluates the model rankd serves on each user's held-out last item (or the\n"
			 "pairs of --test): AUC, RR, Recall/Precision/nDCG@k, over all users and over\n"
			 "those whose test item is cold, beside the popularity baseline.",
			 NULL, &npos);
	if (code || npos < 0)
		goto leave;
	if (strcmp(protocol, "standard") && strcmp(protocol, "tutorial")) {
		code = cli_usage_error(argv[0], "--protocol must be standard or tutorial");
		goto leave;
	}
	if (cli_split(kstr, &kl)) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	for (size_t i = 0; i < kl.n; i++) {
		char *end;
		long k = strtol(kl.items[i], &end, 10);
		if (*end || k < 1 || k > 100000 || nks == 16) {
			code = cli_usage_error(argv[0], "--k takes up to 16 integers 1..100000, "
					       "comma-separated (got \"%s\")", kstr);
			goto leave;
		}
		ks[nks++] = (uint32_t)k;
	}
	if (max_users < 0) {
		code = cli_usage_error(argv[0], "--max-users must be >= 0");
		goto leave;
	}
	if (cold_test && !test) {
		code = cli_usage_error(argv[0], "--cold-test goes with --test (the split's test pairs)");
		goto leave;
	}
	if ((test && (code = read_pairs(c, argv[0], test, &tp, &ntp))) ||
	    (cold_test && (code = read_pairs(c, argv[0], cold_test, &cp, &ncp))))
		goto leave;
	if ((code = cli_channel(c, CLI_RANKD, &ch)))
		goto leave;
	Visrec__V1__EvaluateRequest req = VISREC__V1__EVALUATE_REQUEST__INIT;
	req.protocol = (char *)protocol;
	req.n_ks = nks;
	req.ks = ks;
	req.max_users = (uint32_t)max_users;
	req.seed = seed;
	req.test = tp;
	req.n_test = ntp;
	req.cold_test = cp;
	req.n_cold_test = ncp;
	int rc = vr_client_unary(ch, "/visrec.v1.Rank/Evaluate", &req.base,
				 &visrec__v1__evaluate_response__descriptor, (ProtobufCMessage **)&resp,
				 cli_deadline_ms(c, 0), NULL, &st);
	if (rc) {
		code = cli_call_error(c, CLI_RANKD, "Evaluate", rc, &st);
		goto leave;
	}
	if (cli_wants_json(c))
		code = cli_output(c, eval_json(resp));
	if (!c->json)
		print_eval(resp, ks, nks);
leave:
	if (resp)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	cli_list_free(&kl);
	free_pairs(tp, ntp);
	free_pairs(cp, ncp);
	return code;
}

/* ---- recommend, score --------------------------------------------------- */

static void print_items(Visrec__V1__ScoredItem **items, size_t n, int ranks)
{
	for (size_t i = 0; i < n; i++) {
		if (ranks)
			printf("%4zu  ", i + 1);
		printf("%-24s %10.5f%s\n", items[i]->item_id, items[i]->score,
		       items[i]->cold ? "  cold" : "");
	}
}

/* The JSON of one user's recommendations: the response with user_id. */
static cJSON *recs_json(const char *user, const Visrec__V1__RecommendResponse *r)
{
	cJSON *o = cli_proto_json(&r->base);
	if (o)
		cJSON_AddStringToObject(o, "user_id", user);
	return o;
}

int cli_cmd_recommend(cli *c, int argc, char **argv)
{
	const char *users = NULL, *cands = NULL, *context = NULL;
	int k, include_seen, cold_slots, code, npos = 0;
	const vr_flag table[] = {
		{ "user", NULL, VR_FLAG_STRING, &users, NULL,
		  "user id; several, comma-separated, go in one RecommendBatch", 1 },
		{ "cold-slots", NULL, VR_FLAG_INT, &cold_slots, "0",
		  "places of the k kept for the user's best cold items (0..k)", 0 },
		{ "k", NULL, VR_FLAG_INT, &k, "10", "how many items (also -k)", 0 },
		{ "include-seen", NULL, VR_FLAG_BOOL, &include_seen, "false",
		  "also rank the user's own items", 0 },
		{ "candidates", NULL, VR_FLAG_STRING, &cands, NULL,
		  "rank only these items (comma-separated)", 0 },
		{ "context", NULL, VR_FLAG_STRING, &context, NULL,
		  "for an unknown user: items that profile them (comma-separated)", 0 },
		{ 0 },
	};
	cli_list ul = { 0 }, cl = { 0 }, xl = { 0 };
	Visrec__V1__RecommendRequest *reqs = NULL, **rptrs = NULL;
	ProtobufCMessage *resp = NULL;
	vr_channel *ch;
	vr_status st;
	code = cli_parse(c, table, argc, argv, "visrec recommend --user U[,U2...] [-k N]",
			 "The top-k items rankd's served model ranks for each user (seen items excluded\n"
			 "unless --include-seen); \"cold\" marks items without interactions.", NULL, &npos);
	if (code || npos < 0)
		goto leave;
	if (cli_split(users, &ul) || cli_split(cands, &cl) || cli_split(context, &xl)) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	if (!ul.n) {
		code = cli_usage_error(argv[0], "--user names no user");
		goto leave;
	}
	if ((code = cli_channel(c, CLI_RANKD, &ch)))
		goto leave;
	reqs = calloc(ul.n, sizeof *reqs);
	rptrs = calloc(ul.n, sizeof *rptrs);
	if (!reqs || !rptrs) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	for (size_t i = 0; i < ul.n; i++) {
		visrec__v1__recommend_request__init(&reqs[i]);
		reqs[i].user_id = ul.items[i];
		reqs[i].k = k;
		reqs[i].include_seen = include_seen;
		reqs[i].cold_slots = cold_slots;
		reqs[i].n_candidates = cl.n;
		reqs[i].candidates = cl.items;
		reqs[i].n_context_items = xl.n;
		reqs[i].context_items = xl.items;
		rptrs[i] = &reqs[i];
	}
	int rc;
	size_t nresp = 1;
	Visrec__V1__RecommendResponse **rs;
	Visrec__V1__RecommendResponse *one;
	if (ul.n == 1) {
		rc = vr_client_unary(ch, "/visrec.v1.Rank/Recommend", &reqs[0].base,
				     &visrec__v1__recommend_response__descriptor, &resp,
				     cli_deadline_ms(c, UNARY_DEADLINE_MS), NULL, &st);
		one = (Visrec__V1__RecommendResponse *)resp;
		rs = &one;
	} else {
		Visrec__V1__RecommendBatchRequest breq = VISREC__V1__RECOMMEND_BATCH_REQUEST__INIT;
		breq.n_requests = ul.n;
		breq.requests = rptrs;
		rc = vr_client_unary(ch, "/visrec.v1.Rank/RecommendBatch", &breq.base,
				     &visrec__v1__recommend_batch_response__descriptor, &resp,
				     cli_deadline_ms(c, UNARY_DEADLINE_MS), NULL, &st);
		if (!rc) {
			Visrec__V1__RecommendBatchResponse *b = (void *)resp;
			rs = b->responses;
			nresp = b->n_responses;
			if (nresp != ul.n) {
				code = cli_fail(c, argv[0], "rankd answered %zu of %zu users", nresp, ul.n);
				goto leave;
			}
		}
	}
	if (rc) {
		code = cli_call_error(c, CLI_RANKD, ul.n == 1 ? "Recommend" : "RecommendBatch", rc, &st);
		goto leave;
	}
	if (cli_wants_json(c)) {
		cJSON *o = ul.n == 1 ? recs_json(ul.items[0], rs[0]) : cJSON_CreateArray();
		for (size_t i = 0; ul.n > 1 && o && i < nresp; i++)
			cJSON_AddItemToArray(o, recs_json(ul.items[i], rs[i]));
		code = cli_output(c, o);
	}
	if (c->json)
		goto leave;
	for (size_t i = 0; i < nresp; i++) {
		printf("%suser %s: %s, model version %llu%s%s%s\n", i ? "\n" : "", ul.items[i],
		       cli_model_name(rs[i]->model), (unsigned long long)rs[i]->model_version,
		       rs[i]->fallback[0] ? " (fallback: " : "", rs[i]->fallback,
		       rs[i]->fallback[0] ? ")" : "");
		print_items(rs[i]->items, rs[i]->n_items, 1);
	}
leave:
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	free(reqs);
	free(rptrs);
	cli_list_free(&ul);
	cli_list_free(&cl);
	cli_list_free(&xl);
	return code;
}

int cli_cmd_score(cli *c, int argc, char **argv)
{
	const char *user = NULL;
	int code, npos = 0;
	const vr_flag table[] = {
		{ "user", NULL, VR_FLAG_STRING, &user, NULL, "user id", 1 },
		{ 0 },
	};
	char **pos = NULL;
	Visrec__V1__ScoreResponse *resp = NULL;
	vr_channel *ch;
	vr_status st;
	code = cli_parse(c, table, argc, argv, "visrec score --user U ITEM...",
			 "The served model's score of each item for the user, in the order given.",
			 &pos, &npos);
	if (code || npos < 0)
		goto leave;
	if (!npos) {
		code = cli_usage_error(argv[0], "name at least one item");
		goto leave;
	}
	if ((code = cli_channel(c, CLI_RANKD, &ch)))
		goto leave;
	Visrec__V1__ScoreRequest req = VISREC__V1__SCORE_REQUEST__INIT;
	req.user_id = (char *)user;
	req.n_item_ids = (size_t)npos;
	req.item_ids = pos;
	int rc = vr_client_unary(ch, "/visrec.v1.Rank/Score", &req.base,
				 &visrec__v1__score_response__descriptor, (ProtobufCMessage **)&resp,
				 cli_deadline_ms(c, UNARY_DEADLINE_MS), NULL, &st);
	if (rc) {
		code = cli_call_error(c, CLI_RANKD, "Score", rc, &st);
		goto leave;
	}
	if (cli_wants_json(c)) {
		cJSON *o = cli_proto_json(&resp->base);
		if (o)
			cJSON_AddStringToObject(o, "user_id", user);
		code = cli_output(c, o);
	}
	if (c->json)
		goto leave;
	printf("user %s: %s, model version %llu\n", user, cli_model_name(resp->model),
	       (unsigned long long)resp->model_version);
	print_items(resp->items, resp->n_items, 0);
leave:
	if (resp)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	free(pos);
	return code;
}

/* ---- audience ---------------------------------------------------------- */

int cli_cmd_audience(cli *c, int argc, char **argv)
{
	const char *items = NULL;
	int k, include_seen, code, npos = 0;
	const vr_flag table[] = {
		{ "item", NULL, VR_FLAG_STRING, &items, NULL,
		  "item id (a cold one too); several, comma-separated, one call each", 1 },
		{ "k", NULL, VR_FLAG_INT, &k, "10", "how many users (also -k)", 0 },
		{ "include-seen", NULL, VR_FLAG_BOOL, &include_seen, "false",
		  "also list users who interacted with the item", 0 },
		{ 0 },
	};
	cli_list il = { 0 };
	cJSON *all = NULL;
	vr_channel *ch;
	vr_status st;
	code = cli_parse(c, table, argc, argv, "visrec audience --item I[,I2...] [-k N]",
			 "The k users the served model ranks the item highest for (reverse top-k):\n"
			 "who to show a new item to. JSON: one object per item, an array for several.",
			 NULL, &npos);
	if (code || npos < 0)
		goto leave;
	if (cli_split(items, &il) || !(all = cJSON_CreateArray())) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	if (!il.n) {
		code = cli_usage_error(argv[0], "--item names no item");
		goto leave;
	}
	if ((code = cli_channel(c, CLI_RANKD, &ch)))
		goto leave;
	for (size_t x = 0; x < il.n; x++) {
		Visrec__V1__AudienceResponse *resp = NULL;
		Visrec__V1__AudienceRequest req = VISREC__V1__AUDIENCE_REQUEST__INIT;
		req.item_id = il.items[x];
		req.k = k;
		req.include_seen = include_seen;
		int rc = vr_client_unary(ch, "/visrec.v1.Rank/Audience", &req.base,
					 &visrec__v1__audience_response__descriptor, (ProtobufCMessage **)&resp,
					 cli_deadline_ms(c, UNARY_DEADLINE_MS), NULL, &st);
		if (rc) {
			code = cli_call_error(c, CLI_RANKD, "Audience", rc, &st);
			goto leave;
		}
		cJSON *o = cli_proto_json(&resp->base);
		if (o) {
			cJSON_AddStringToObject(o, "item_id", il.items[x]);
			cJSON_AddItemToArray(all, o);
		}
		if (!c->json) {
			printf("%sitem %s%s: %s, model version %llu\n", x ? "\n" : "", il.items[x],
			       resp->cold ? " (cold)" : "", cli_model_name(resp->model),
			       (unsigned long long)resp->model_version);
			for (size_t i = 0; i < resp->n_users; i++)
				printf("%4zu  %-24s %10.5f\n", i + 1, resp->users[i]->user_id,
				       resp->users[i]->score);
		}
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	if (cli_wants_json(c)) {
		cJSON *out = all;
		if (il.n == 1)
			out = cJSON_DetachItemFromArray(all, 0);
		else
			all = NULL;
		code = cli_output(c, out);
	}
leave:
	cJSON_Delete(all);
	cli_list_free(&il);
	return code;
}
