/* visrec reshard --from LIST --to LIST: moves the items whose featured
 * shard changes when the shard list changes (featured.proto,
 * "Resharding"; featured/reshard.h has the model).
 *
 * DESIGN. The CLI keeps no state of its own: each source shard journals
 * its progress in its LMDB, so a run killed anywhere is resumed by running
 * the same command again, from any machine. Per source, in turn: claim a
 * batch (the source journals it), import each item on its owner under TO,
 * compare the checksums the targets read back with the source's, and only
 * then ask the source to delete the batch, which checks them once more
 * against its journal. Before anything moves, every shard of both lists
 * must answer Info, every target must run with a shard list, and all must
 * hold the same model versions, rows and weights files alike (GetModel:
 * the vectors move as they are, so a target with other weights would mix
 * two embeddings under one version number; a new shard copies them with
 * featured --models-from).
 * Each shard is called with the map it runs with (its Info says which):
 * sources keep FROM until the switch, targets may already hold TO. */
#include "cli.h"

#include "err.h"
#include "fault.h"
#include "shardmap.h"
#include "visrec/v1/featured.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALL_MS 120000
#define BATCH_DEFAULT 64

struct peer {
	const char *name;
	vr_channel *ch;   /* sends the map the shard runs with */
	Visrec__V1__FeaturedInfoResponse *info;
	uint64_t moved_in;
};

struct run {
	cli *c;
	const char *cmd;
	vr_shardmap *from, *to;
	struct peer *peers;
	size_t n;
	int batch;
};

static struct peer *peer_of(struct run *r, const char *name)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->peers[i].name, name))
			return &r->peers[i];
	return NULL;
}

static int shard_error(struct run *r, const char *shard, const char *what, int rc,
		       const vr_status *st)
{
	if (rc == VR_ERPC)
		return cli_fail(r->c, r->cmd, "featured shard %s failed during %s: %s: %s (run the "
				"same command again once it serves: the move resumes from its journal)",
				shard, what, vr_status_name(st->code), st->message);
	return cli_fail(r->c, r->cmd, "featured shard %s, %s: %s", shard, what, vr_strerror(rc));
}

/* Info of every shard of both lists, then a channel to each with its map. */
static int open_peers(struct run *r)
{
	vr_channel_opts o;
	vr_status st;
	int code = cli_channel_opts(r->c, r->cmd, &o);
	if (code)
		return code;
	if (!(r->peers = calloc(r->from->n + r->to->n, sizeof *r->peers)))
		return cli_fail(r->c, r->cmd, "out of memory");
	for (int l = 0; l < 2; l++) {
		const vr_shardmap *m = l ? r->to : r->from;
		for (size_t k = 0; k < m->n; k++)
			if (!peer_of(r, m->names[k]))
				r->peers[r->n++].name = m->names[k];
	}
	for (size_t i = 0; i < r->n; i++) {
		struct peer *p = &r->peers[i];
		Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
		vr_channel_opts plain = o;
		int rc = vr_channel_create(&p->ch, p->name, &plain);
		if (!rc)
			rc = vr_client_unary(p->ch, "/visrec.v1.Featured/Info", &req.base,
					     &visrec__v1__featured_info_response__descriptor,
					     (ProtobufCMessage **)&p->info, cli_deadline_ms(r->c, CALL_MS),
					     NULL, &st);
		vr_channel_destroy(p->ch);
		p->ch = NULL;
		if (rc)
			return shard_error(r, p->name, "Info", rc, &st);
		o.shard_map = p->info->shard_map[0] ? p->info->shard_map : NULL;
		if ((rc = vr_channel_create(&p->ch, p->name, &o)))
			return shard_error(r, p->name, "opening a channel", rc, NULL);
	}
	return CLI_EXIT_OK;
}

/* The row and weights checksum of one model version of p (GetModel's
 * stream read to its end). */
static int model_digest(struct run *r, struct peer *p, uint32_t version, char **row,
			uint64_t *sum)
{
	Visrec__V1__GetModelRequest req = VISREC__V1__GET_MODEL_REQUEST__INIT;
	vr_ccall *cc = NULL;
	vr_status st = { 0 };
	int rc;
	req.model_version = version;
	*row = NULL;
	*sum = 0;
	if (!(rc = vr_ccall_start(&cc, p->ch, "/visrec.v1.Featured/GetModel",
				  &visrec__v1__model_chunk__descriptor, cli_deadline_ms(r->c, CALL_MS),
				  NULL)) &&
	    !(rc = vr_ccall_send(cc, &req.base)))
		rc = vr_ccall_close_send(cc);
	while (!rc) {
		Visrec__V1__ModelChunk *m = NULL;
		if ((rc = vr_ccall_recv(cc, (ProtobufCMessage **)&m)))
			break;
		if (m->row[0] && !*row && !(*row = strdup(m->row)))
			rc = VR_ENOMEM;
		if (m->last)
			*sum = m->checksum;
		protobuf_c_message_free_unpacked(&m->base, NULL);
	}
	if (rc == VR_EEOF)
		rc = 0;
	if (cc) {
		int frc = vr_ccall_finish(cc, &st);
		if (!rc || rc == VR_ERPC)
			rc = frc;
	}
	if (rc) {
		free(*row);
		*row = NULL;
		return shard_error(r, p->name, "GetModel", rc, &st);
	}
	return CLI_EXIT_OK;
}

/* Whether two model rows (JSON) agree in all but when they were made:
 * shards started apart from the same flags made the same version at
 * different times. */
static int same_row(const char *a, const char *b)
{
	cJSON *x = a ? cJSON_Parse(a) : NULL, *y = b ? cJSON_Parse(b) : NULL;
	cJSON_DeleteItemFromObject(x, "created_unix");
	cJSON_DeleteItemFromObject(y, "created_unix");
	int same = x && y && cJSON_Compare(x, y, 1);
	cJSON_Delete(x);
	cJSON_Delete(y);
	return same;
}

/* Every shard holds the model versions of the first one: the same rows
 * (but for their time) and weights files. */
static int check_models(struct run *r)
{
	const Visrec__V1__FeaturedInfoResponse *a = r->peers[0].info;
	for (size_t v = 0; v < a->n_models; v++) {
		uint32_t version = a->models[v]->version;
		char *row0 = NULL;
		uint64_t sum0 = 0;
		int code = model_digest(r, &r->peers[0], version, &row0, &sum0);
		for (size_t i = 1; !code && i < r->n; i++) {
			char *row = NULL;
			uint64_t sum = 0;
			if (!(code = model_digest(r, &r->peers[i], version, &row, &sum)) &&
			    (!same_row(row, row0) || sum != sum0))
				code = cli_fail(r->c, r->cmd, "model version %u of featured %s is not that of "
						"%s (%s): every shard must hold the same versions before "
						"items move; start a new shard on an empty data directory "
						"with --models-from %s", version, r->peers[i].name,
						r->peers[0].name, same_row(row, row0) ? "other weights" :
						"another row", r->peers[0].name);
			free(row);
		}
		free(row0);
		if (code)
			return code;
	}
	return CLI_EXIT_OK;
}

/* Every new shard runs with a list, and every shard holds the same
 * models. */
static int check_peers(struct run *r)
{
	const Visrec__V1__FeaturedInfoResponse *a = r->peers[0].info;
	/* A shard of both lists may run without one (going from one featured
	 * to several): items only leave it. */
	for (size_t k = 0; k < r->to->n; k++) {
		const struct peer *p = peer_of(r, r->to->names[k]);
		if (!p->info->n_shards && vr_shardmap_find(r->from, p->name) < 0)
			return cli_fail(r->c, r->cmd, "featured %s runs without --shards: start it with "
					"--shards %s --shard-self %s to receive items", p->name,
					r->to->list, p->name);
	}
	for (size_t i = 1; i < r->n; i++) {
		const Visrec__V1__FeaturedInfoResponse *b = r->peers[i].info;
		const char *diff = NULL;
		uint32_t version = 0;
		if (a->n_models != b->n_models)
			diff = "the number of model versions";
		else if (!a->active_model || !b->active_model ||
			 a->active_model->version != b->active_model->version)
			diff = "the active model version";
		for (size_t v = 0; !diff && v < a->n_models; v++) {
			const Visrec__V1__ModelVersionInfo *x = a->models[v], *y = b->models[v];
			version = x->version;
			if (x->version != y->version || strcmp(x->arch, y->arch) ||
			    strcmp(x->output_layer, y->output_layer) || x->dims != y->dims ||
			    x->input_size != y->input_size || strcmp(x->purpose, y->purpose))
				diff = "model version";
		}
		if (diff)
			return cli_fail(r->c, r->cmd, "featured %s and %s differ in %s%s%.0u: every "
					"shard must hold the same model versions before items move "
					"(start a new shard on an empty data directory with "
					"--models-from %s)", r->peers[0].name, r->peers[i].name, diff,
					version ? " " : "", version, r->peers[0].name);
	}
	return check_models(r);
}

/* Imports the claimed items that go to target k, filling their sums. */
static int import_to(struct run *r, size_t k, Visrec__V1__ReshardItem **items, size_t n,
		     uint64_t *sums, const char *source)
{
	Visrec__V1__ReshardImportRequest req = VISREC__V1__RESHARD_IMPORT_REQUEST__INIT;
	Visrec__V1__ReshardImportResponse *resp = NULL;
	Visrec__V1__ReshardItem **mine = calloc(n, sizeof *mine);
	size_t *at = calloc(n, sizeof *at), m = 0;
	struct peer *p = peer_of(r, r->to->names[k]);
	vr_status st;
	int code = CLI_EXIT_OK;
	if (!mine || !at) {
		code = cli_fail(r->c, r->cmd, "out of memory");
		goto leave;
	}
	for (size_t i = 0; i < n; i++)
		if (vr_shardmap_owner(r->to, items[i]->item_id, strlen(items[i]->item_id)) == k) {
			at[m] = i;
			mine[m++] = items[i];
		}
	if (!m)
		goto leave;
	req.to_shards = r->to->list;
	req.items = mine;
	req.n_items = m;
	int rc = vr_client_unary(p->ch, "/visrec.v1.Featured/ReshardImport", &req.base,
				 &visrec__v1__reshard_import_response__descriptor,
				 (ProtobufCMessage **)&resp, cli_deadline_ms(r->c, CALL_MS), NULL, &st);
	if (rc) {
		code = shard_error(r, p->name, "ReshardImport", rc, &st);
		goto leave;
	}
	if (resp->n_checksums != m) {
		code = cli_fail(r->c, r->cmd, "featured %s answered %zu checksums for %zu items",
				p->name, resp->n_checksums, m);
		goto leave;
	}
	for (size_t j = 0; j < m; j++) {
		sums[at[j]] = resp->checksums[j];
		if (resp->checksums[j] != mine[j]->checksum) {
			code = cli_fail(r->c, r->cmd, "item %s: %s stored it with checksum %016llx, its "
					"source %s holds %016llx; nothing deleted (run again to copy it "
					"anew)", mine[j]->item_id, p->name,
					(unsigned long long)resp->checksums[j], source,
					(unsigned long long)mine[j]->checksum);
			goto leave;
		}
	}
	p->moved_in += m;
leave:
	if (resp)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	free(mine);
	free(at);
	return code;
}

/* Moves everything that leaves one source; *moved counts this run's,
 * *total the journal's count at the end. */
static int move_from(struct run *r, struct peer *src, uint64_t *moved, uint64_t *total,
		     uint64_t *scanned)
{
	int code = CLI_EXIT_OK;
	for (;;) {
		Visrec__V1__ReshardClaimRequest creq = VISREC__V1__RESHARD_CLAIM_REQUEST__INIT;
		Visrec__V1__ReshardClaimResponse *claim = NULL;
		Visrec__V1__ReshardDeleteRequest dreq = VISREC__V1__RESHARD_DELETE_REQUEST__INIT;
		Visrec__V1__ReshardDeleteResponse *del = NULL;
		char **ids = NULL;
		uint64_t *sums = NULL;
		vr_status st;
		creq.to_shards = r->to->list;
		creq.source = (char *)src->name;
		creq.max_items = (uint32_t)r->batch;
		int rc = vr_client_unary(src->ch, "/visrec.v1.Featured/ReshardClaim", &creq.base,
					 &visrec__v1__reshard_claim_response__descriptor,
					 (ProtobufCMessage **)&claim, cli_deadline_ms(r->c, CALL_MS),
					 NULL, &st);
		if (rc)
			return shard_error(r, src->name, "ReshardClaim", rc, &st);
		size_t n = claim->n_items;
		*scanned += claim->scanned;
		*total = claim->moved;
		if (!n) {
			int done = claim->done;
			protobuf_c_message_free_unpacked(&claim->base, NULL);
			if (done)
				return CLI_EXIT_OK;
			continue;
		}
		if (!(ids = calloc(n, sizeof *ids)) || !(sums = calloc(n, sizeof *sums))) {
			code = cli_fail(r->c, r->cmd, "out of memory");
			goto next;
		}
		for (size_t k = 0; k < r->to->n && !code; k++)
			code = import_to(r, k, claim->items, n, sums, src->name);
		if (code)
			goto next;
		vr_fault("reshard-verified");
		for (size_t i = 0; i < n; i++)
			ids[i] = claim->items[i]->item_id;
		dreq.to_shards = r->to->list;
		dreq.item_ids = ids;
		dreq.n_item_ids = n;
		dreq.checksums = sums;
		dreq.n_checksums = n;
		rc = vr_client_unary(src->ch, "/visrec.v1.Featured/ReshardDelete", &dreq.base,
				     &visrec__v1__reshard_delete_response__descriptor,
				     (ProtobufCMessage **)&del, cli_deadline_ms(r->c, CALL_MS), NULL, &st);
		if (rc) {
			code = shard_error(r, src->name, "ReshardDelete", rc, &st);
			goto next;
		}
		*moved += n;
		*total = del->moved;
	next:
		if (del)
			protobuf_c_message_free_unpacked(&del->base, NULL);
		protobuf_c_message_free_unpacked(&claim->base, NULL);
		free(ids);
		free(sums);
		if (code)
			return code;
	}
}

static int report(struct run *r, const uint64_t *moved, const uint64_t *total,
		  const uint64_t *scanned)
{
	uint64_t all = 0, earlier = 0;
	for (size_t k = 0; k < r->from->n; k++) {
		all += moved[k];
		earlier += total[k] - moved[k];
	}
	if (cli_wants_json(r->c)) {
		cJSON *o = cJSON_CreateObject(), *src = cJSON_AddArrayToObject(o, "sources");
		cJSON *dst = cJSON_AddArrayToObject(o, "targets");
		cJSON_AddStringToObject(o, "to_map", r->to->tag);
		cJSON_AddNumberToObject(o, "moved", (double)all);
		cJSON_AddNumberToObject(o, "moved_earlier", (double)earlier);
		for (size_t k = 0; k < r->from->n; k++) {
			cJSON *s = cJSON_CreateObject();
			cJSON_AddStringToObject(s, "shard", r->from->names[k]);
			cJSON_AddNumberToObject(s, "moved", (double)moved[k]);
			cJSON_AddNumberToObject(s, "moved_total", (double)total[k]);
			cJSON_AddNumberToObject(s, "scanned", (double)scanned[k]);
			cJSON_AddItemToArray(src, s);
		}
		for (size_t k = 0; k < r->to->n; k++) {
			cJSON *s = cJSON_CreateObject();
			cJSON_AddStringToObject(s, "shard", r->to->names[k]);
			cJSON_AddNumberToObject(s, "received", (double)peer_of(r, r->to->names[k])->moved_in);
			cJSON_AddItemToArray(dst, s);
		}
		return cli_output(r->c, o);
	}
	if (!all)
		printf("nothing to move: every item of %s is on its owner under %s (map %s)", r->from->list,
		       r->to->list, r->to->tag);
	else
		printf("moved %llu items to their owners under %s (map %s)", (unsigned long long)all,
		       r->to->list, r->to->tag);
	if (earlier)
		printf("; %llu moved by an earlier run", (unsigned long long)earlier);
	printf("\n");
	for (size_t k = 0; k < r->from->n; k++)
		printf("  from %s: %llu moved now, %llu in all, %llu items looked at\n",
		       r->from->names[k], (unsigned long long)moved[k], (unsigned long long)total[k],
		       (unsigned long long)scanned[k]);
	for (size_t k = 0; k < r->to->n; k++)
		printf("  to %s: %llu received now\n", r->to->names[k],
		       (unsigned long long)peer_of(r, r->to->names[k])->moved_in);
	printf("now give every party (featured --shards, rankd and clients --featured) the list %s\n",
	       r->to->list);
	return CLI_EXIT_OK;
}

int cli_cmd_reshard(cli *c, int argc, char **argv)
{
	const char *from = NULL, *to = NULL;
	struct run r = { .c = c, .cmd = argv[0] };
	const vr_flag table[] = {
		{ "from", NULL, VR_FLAG_STRING, &from, NULL,
		  "the shard list the items are on now (host:port,...)", 0 },
		{ "to", NULL, VR_FLAG_STRING, &to, NULL, "the shard list they move to", 0 },
		{ "batch", NULL, VR_FLAG_INT, &r.batch, "64", "items per claim, 1 to 1024", 0 },
		{ 0 },
	};
	uint64_t *moved = NULL, *total = NULL, *scanned = NULL;
	char why[512];
	int npos = 0;
	int code = cli_parse(c, table, argc, argv, "visrec reshard --from LIST --to LIST [--batch N]",
			     "Moves the items whose featured shard changes when the shard list changes\n"
			     "from --from to --to: each is copied to its new owner, checked there, then\n"
			     "deleted on its old one. Progress is journalled on the shards: after a\n"
			     "failure or a kill, run the same command again. Running it again after it\n"
			     "finished moves nothing.", NULL, &npos);
	if (code || npos < 0)
		return code;
	if (!from || !to)
		return cli_usage_error(argv[0], "--from and --to are both required");
	if (r.batch < 1 || r.batch > 1024)
		return cli_usage_error(argv[0], "--batch %d: want 1 to 1024", r.batch);
	if (vr_shardmap_parse(&r.from, from, why, sizeof why))
		return cli_usage_error(argv[0], "--from: %s", why);
	if (vr_shardmap_parse(&r.to, to, why, sizeof why)) {
		vr_shardmap_free(r.from);
		return cli_usage_error(argv[0], "--to: %s", why);
	}
	if (!(moved = calloc(r.from->n, sizeof *moved)) || !(total = calloc(r.from->n, sizeof *total)) ||
	    !(scanned = calloc(r.from->n, sizeof *scanned))) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	if ((code = open_peers(&r)) || (code = check_peers(&r)))
		goto leave;
	for (size_t k = 0; k < r.from->n && !code; k++)
		code = move_from(&r, peer_of(&r, r.from->names[k]), &moved[k], &total[k], &scanned[k]);
	if (!code)
		code = report(&r, moved, total, scanned);
leave:
	for (size_t i = 0; i < r.n; i++) {
		vr_channel_destroy(r.peers[i].ch);
		if (r.peers[i].info)
			protobuf_c_message_free_unpacked(&r.peers[i].info->base, NULL);
	}
	free(r.peers);
	free(moved);
	free(total);
	free(scanned);
	vr_shardmap_free(r.from);
	vr_shardmap_free(r.to);
	return code;
}
