/* The `visrec` commands that look at both daemons: info and health. */
#include "cli.h"

#include "err.h"

#include "grpc/health/v1/health.pb-c.h"
#include "visrec/v1/featured.pb-c.h"
#include "visrec/v1/rankd.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define INFO_DEADLINE_MS 10000

static void print_featured(const char *addr, const Visrec__V1__FeaturedInfoResponse *r)
{
	printf("featured at %s: version %s, backend %s (%s)\n", addr, r->server_version,
	       r->backend, r->device);
	if (r->n_shards)
		printf("  shard %s of %zu (map %s)\n", r->shard_self, r->n_shards, r->shard_map);
	printf("  items %llu, last change seq %llu, images up to %llu bytes / %llu pixels\n",
	       (unsigned long long)r->items, (unsigned long long)r->last_seq,
	       (unsigned long long)r->max_image_bytes, (unsigned long long)r->max_image_pixels);
	for (size_t i = 0; i < r->n_models; i++) {
		const Visrec__V1__ModelVersionInfo *m = r->models[i];
		int active = r->active_model && r->active_model->version == m->version;
		printf("  %s model v%u: %s, layer %s, %u dims, %u px input, %s%s%s%s\n",
		       active ? "*" : " ", m->version, m->arch, m->output_layer, m->dims, m->input_size,
		       m->purpose, m->live ? ", live" : "", m->weights_file[0] ? ", weights " : "",
		       m->weights_file);
	}
}

static void print_rankd(const cli *c, const Visrec__V1__RankInfoResponse *r)
{
	printf("rankd at %s: version %s, serving %s (model version %llu)%s\n", c->rankd_addr,
	       r->server_version, cli_model_name(r->model), (unsigned long long)r->model_version,
	       r->training ? ", training now" : "");
	printf("  users %llu, items %llu, interactions %llu, max k %d\n",
	       (unsigned long long)r->users, (unsigned long long)r->items,
	       (unsigned long long)r->interactions, r->max_k);
	printf("  featured %s (%s), change feed applied up to seq %llu, feature dims %u "
	       "(featured model version %u)\n",
	       r->featured, r->featured_connected ? "connected" : "not connected",
	       (unsigned long long)r->featured_seq, r->feature_dims, r->feature_version);
	for (size_t k = 0; r->n_featured_shards > 1 && k < r->n_featured_shards; k++) {
		const Visrec__V1__FeaturedShardState *f = r->featured_shards[k];
		time_t since = (time_t)(f->since_unix_ms / 1000);
		char when[32] = "?";
		struct tm tm;
		if (gmtime_r(&since, &tm))
			strftime(when, sizeof when, "%Y-%m-%d %H:%M:%SZ", &tm);
		printf("  shard %s: %s since %s, feed applied up to seq %llu (of %llu)%s%s\n",
		       f->address, f->connected ? "connected" : "NOT connected", when,
		       (unsigned long long)f->seq, (unsigned long long)f->head_seq,
		       f->last_error[0] ? "; last error: " : "", f->last_error);
		if (f->removed_owned)
			printf("    %llu item(s) it owns under rankd's list left it: the shards were "
			       "resharded; run rankd with their new list\n",
			       (unsigned long long)f->removed_owned);
	}
}

int cli_cmd_info(cli *c, int argc, char **argv)
{
	static const vr_flag table[] = { { 0 } };
	int npos = 0, code, failed = 0;
	ProtobufCMessage *rr = NULL;
	Visrec__V1__FeaturedInfoResponse **fr = NULL;
	vr_shards *shards;
	vr_channel *rch;
	vr_status *fst = NULL, rst;
	size_t nsh = 0;
	cJSON *out = NULL;
	code = cli_parse(c, table, argc, argv, "visrec info",
			 "What featured and rankd run (backend, models) and hold (items, users,\n"
			 "interactions).", NULL, &npos);
	if (code || npos < 0)
		goto leave;
	if ((code = cli_shards(c, argv[0], &shards)) || (code = cli_channel(c, CLI_RANKD, &rch)))
		goto leave;
	nsh = vr_shards_count(shards);
	if (!(fr = calloc(nsh, sizeof *fr)) || !(fst = calloc(nsh, sizeof *fst))) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	Visrec__V1__RankInfoRequest rreq = VISREC__V1__RANK_INFO_REQUEST__INIT;
	int ffailed = vr_shards_info(shards, fr, fst, cli_deadline_ms(c, INFO_DEADLINE_MS));
	if (ffailed < 0) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	int rrc = vr_client_unary(rch, "/visrec.v1.Rank/Info", &rreq.base,
				  &visrec__v1__rank_info_response__descriptor, &rr,
				  cli_deadline_ms(c, INFO_DEADLINE_MS), NULL, &rst);
	/* All are shown even when one fails: the others may say why. */
	for (size_t k = 0; k < nsh; k++) {
		char what[80];
		snprintf(what, sizeof what, nsh > 1 ? "Info of shard %.60s" : "Info",
			 vr_shards_name(shards, k));
		if (!fr[k])
			cli_print_call_error(c, CLI_FEATURED, what, VR_ERPC, &fst[k]);
	}
	if (rrc)
		cli_print_call_error(c, CLI_RANKD, "Info", rrc, &rst);
	failed = ffailed || rrc;
	if (cli_wants_json(c)) {
		if (!(out = cJSON_CreateObject())) {
			code = cli_fail(c, argv[0], "out of memory");
			goto leave;
		}
		/* One featured: its Info; shards: {"shards": [{"shard", "info" or "error"}]}. */
		if (nsh == 1) {
			cJSON_AddItemToObject(out, "featured", !fr[0]
					      ? cli_status_json(c, CLI_FEATURED, &fst[0])
					      : cli_proto_json(&fr[0]->base));
		} else {
			cJSON *f = cJSON_AddObjectToObject(out, "featured");
			cJSON *arr = f ? cJSON_AddArrayToObject(f, "shards") : NULL;
			for (size_t k = 0; arr && k < nsh; k++) {
				cJSON *e = cJSON_CreateObject();
				cJSON_AddStringToObject(e, "shard", vr_shards_name(shards, k));
				cJSON_AddItemToObject(e, fr[k] ? "info" : "error", fr[k]
						      ? cli_proto_json(&fr[k]->base)
						      : cli_status_json(c, CLI_FEATURED, &fst[k]));
				cJSON_AddItemToArray(arr, e);
			}
		}
		cJSON_AddItemToObject(out, "rankd", rrc ? cli_status_json(c, CLI_RANKD, &rst)
							: cli_proto_json(rr));
		code = cli_output(c, out);
	}
	if (!c->json) {
		for (size_t k = 0; k < nsh; k++)
			if (fr[k])
				print_featured(vr_shards_name(shards, k), fr[k]);
		if (!rrc)
			print_rankd(c, (const void *)rr);
	}
	if (failed)
		code = CLI_EXIT_FAIL;
leave:
	for (size_t k = 0; fr && k < nsh; k++)
		if (fr[k])
			protobuf_c_message_free_unpacked(&fr[k]->base, NULL);
	free(fr);
	free(fst);
	if (rr)
		protobuf_c_message_free_unpacked(rr, NULL);
	return code;
}

/* Asks one daemon's grpc.health.v1.Health/Check for the whole server.
 * Returns the serving status (1 = SERVING) or -1 with st filled. */
static int check(cli *c, enum cli_service s, const char *service, int64_t deadline_ms,
		 vr_status *st)
{
	vr_channel *ch;
	ProtobufCMessage *resp = NULL;
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	if (cli_channel(c, s, &ch)) {
		st->code = GRPC_STATUS_INTERNAL;
		snprintf(st->message, sizeof st->message, "no channel");
		return -1;
	}
	int rc = vr_client_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
				 &grpc__health__v1__health_check_response__descriptor, &resp,
				 deadline_ms, NULL, st);
	if (rc)
		return -1;
	int status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
	protobuf_c_message_free_unpacked(resp, NULL);
	return status;
}

static const char *serving_name(int status)
{
	const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
		&grpc__health__v1__health_check_response__serving_status__descriptor, status);
	return v ? v->name : "UNKNOWN";
}

int cli_cmd_health(cli *c, int argc, char **argv)
{
	double wait_s;
	const char *rankd_service = NULL;
	const vr_flag table[] = {
		{ "wait", NULL, VR_FLAG_DOUBLE, &wait_s, "0",
		  "keep asking for up to this many seconds until both are SERVING", 0 },
		{ "rankd-service", NULL, VR_FLAG_STRING, &rankd_service, "",
		  "ask rankd about this health service instead of the whole server, e.g. "
		  "visrec.v1.Rank/Train or visrec.v1.Rank/featured/HOST:PORT (a featured shard's feed)",
		  0 },
		{ 0 },
	};
	int npos = 0, code, status[2] = { -1, -1 };
	vr_status st[2];
	code = cli_parse(c, table, argc, argv, "visrec health",
			 "The grpc.health.v1 status of featured and rankd; exit status 0 when both are\n"
			 "SERVING.", NULL, &npos);
	if (code || npos < 0)
		goto leave;
	double end = vr_now_s() + wait_s;
	for (;;) {
		for (int s = 0; s < 2; s++)
			if (status[s] != 1)
				status[s] = check(c, (enum cli_service)s,
						  s == CLI_RANKD && rankd_service ? rankd_service : "",
						  cli_deadline_ms(c, 5000), &st[s]);
		if ((status[0] == 1 && status[1] == 1) || vr_now_s() >= end)
			break;
		/* A fresh channel each round: a refused connection puts a
		 * channel into back-off for seconds. */
		for (int s = 0; s < 2; s++) {
			if (status[s] == 1)
				continue;
			if (s == CLI_FEATURED) {
				vr_shards_close(c->shards);
				c->shards = NULL;
			} else {
				vr_channel_destroy(c->rankd);
			}
			*(s == CLI_FEATURED ? &c->featured : &c->rankd) = NULL;
		}
		usleep(200 * 1000);
	}
	for (int s = 0; s < 2; s++) {
		if (status[s] < 0)
			cli_print_call_error(c, (enum cli_service)s, "Health/Check", VR_ERPC, &st[s]);
		else if (!c->json)
			printf("%s at %s: %s\n", s ? "rankd" : "featured", cli_addr(c, (enum cli_service)s),
			       serving_name(status[s]));
	}
	if (cli_wants_json(c)) {
		cJSON *o = cJSON_CreateObject();
		for (int s = 0; o && s < 2; s++)
			cJSON_AddItemToObject(o, s ? "rankd" : "featured",
					      status[s] < 0 ? cli_status_json(c, (enum cli_service)s, &st[s])
							    : cJSON_CreateString(serving_name(status[s])));
		cli_output(c, o);
	}
	code = status[0] == 1 && status[1] == 1 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
leave:
	return code;
}
