/* Fuzzes what rankd does with a message before a model is involved: our
 * rpc layer's unpack (vr__unpack, one slice or several) into each
 * visrec.v1.Rank request type, then the checks its handler runs first:
 * Recommend's and each of a RecommendBatch's (rk_check_recommend, with
 * rankd's default limits, cold_slots included), Train's settings
 * (rk_train_check), Audience's (rk_check_audience), Evaluate's protocol
 * name and its given split's ids (EvaluateRequest.test, cold_test), and AddInteractions' rows stored as the handler stores
 * them (into a fresh in-memory interaction set, whose add refuses bad
 * ids). Also the featured messages rankd reads (a Watch change, a
 * GetVectors chunk, Info). Every message that unpacks must pack back
 * consistently (fz_repack).
 *
 * Still inline in their handlers and so not reached here: AddInteractions'
 * own id and count checks before the add, Score's (empty user, 1..10,000
 * items) and Evaluate's ks checks; they are a few comparisons each, and
 * the rankd_service tests cover them through a real daemon.
 *
 * Input: a selector byte (bits 0-6: the message type, modulo 11; bit 7:
 * hand the bytes over in two slices), then the message bytes. */
#include "fuzz_proto.h"
#include "ids.h"
#include "interactions.h"
#include "metrics.h"
#include "service.h"
#include "visrec/v1/featured.pb-c.h"
#include "visrec/v1/rankd.pb-c.h"

static const ProtobufCMessageDescriptor *const types[] = {
	&visrec__v1__add_interactions_request__descriptor,
	&visrec__v1__train_request__descriptor,
	&visrec__v1__recommend_request__descriptor,
	&visrec__v1__recommend_batch_request__descriptor,
	&visrec__v1__score_request__descriptor,
	&visrec__v1__evaluate_request__descriptor,
	&visrec__v1__rank_info_request__descriptor,
	&visrec__v1__item_change__descriptor,            /* featured's Watch stream */
	&visrec__v1__get_vectors_response__descriptor,
	&visrec__v1__featured_info_response__descriptor,
	&visrec__v1__audience_request__descriptor,
};
#define N_TYPES (sizeof types / sizeof types[0])

/* rankd's defaults (rk_service_open sets them). */
static const rk_service svc = { .max_k = RK_MAX_K_DEFAULT, .max_batch = RK_MAX_BATCH_DEFAULT };

/* AddInteractions' rows, as the handler builds them, into a fresh set. */
static void add(const Visrec__V1__AddInteractionsRequest *r)
{
	size_t n = r->n_interactions;
	if (n > RK_MAX_ADD)
		return;
	rk_interaction_in *rows = malloc((n ? n : 1) * sizeof *rows);
	rk_interactions *ix;
	rk_add_stats st = { 0 };
	if (!rows || rk_interactions_open(&ix, NULL))
		abort();
	for (size_t x = 0; x < n; x++) {
		const Visrec__V1__Interaction *in = r->interactions[x];
		rows[x] = (rk_interaction_in){ in->user_id, strlen(in->user_id), in->item_id,
					       strlen(in->item_id), in->timestamp };
	}
	int rc = n ? rk_interactions_add_batch(ix, rows, n, &st) : 0;
	if (rc == 0 && st.added + st.updated != n)
		abort();
	if (rc && rc != VR_EINVAL)
		abort();
	rk_interactions_close(ix);
	free(rows);
}

static void check(int type, const ProtobufCMessage *m)
{
	char why[512];
	switch (type) {
	case 0:
		add((const void *)m);
		break;
	case 1:
		rk_train_check((const void *)m, why, sizeof why);
		break;
	case 2:
		rk_check_recommend(&svc, (const void *)m, "", why);
		break;
	case 3: {
		const Visrec__V1__RecommendBatchRequest *b = (const void *)m;
		for (size_t q = 0; q < b->n_requests && q < (size_t)svc.max_batch; q++)
			if (rk_check_recommend(&svc, b->requests[q], "requests[].", why))
				break;
		break;
	}
	case 5: {
		const Visrec__V1__EvaluateRequest *r = (const void *)m;
		enum vr_eval_protocol p;
		if (r->protocol[0])
			vr_metrics_parse_protocol(r->protocol, &p);
		/* The split's ids, by the rule the handler applies to them. */
		for (size_t x = 0; x < r->n_test + r->n_cold_test; x++) {
			const Visrec__V1__Interaction *in =
				x < r->n_test ? r->test[x] : r->cold_test[x - r->n_test];
			vr_id_check_named("test[].user_id", in->user_id, strlen(in->user_id), why, sizeof why);
			vr_id_check_named("test[].item_id", in->item_id, strlen(in->item_id), why, sizeof why);
		}
		break;
	}
	case 10:
		rk_check_audience(&svc, (const void *)m, why);
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fz_messages(data, size, types, N_TYPES, check);
}
