/* rankd's method table: which handler serves each visrec.v1.Rank method,
 * and the handlers written so far. A NULL handler answers UNIMPLEMENTED
 * "visrec.v1.Rank/X is not implemented yet". */
#include "service.h"

#include "visrec/v1/rankd.pb-c.h"

static int info(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	Visrec__V1__RankInfoResponse resp = VISREC__V1__RANK_INFO_RESPONSE__INIT;
	resp.server_version = (char *)VISREC_VERSION;
	resp.featured = (char *)svc->featured_addr;
	resp.featured_connected = svc->featured && vr_channel_connected(svc->featured, 1);
	int rc = vr_call_send(call, &resp.base);
	return rc ? rc : GRPC_STATUS_OK;
}

#define M(name, req, resp, kind_, admin_, fn) \
	{ .path = "/visrec.v1.Rank/" name, .request = &visrec__v1__##req##__descriptor, \
	  .response = &visrec__v1__##resp##__descriptor, .kind = kind_, .admin = admin_, \
	  .handler = fn, .ctx = svc }

int rk_service_register(rk_service *svc, vr_server *srv)
{
	const vr_method table[] = {
		M("AddInteractions", add_interactions_request, add_interactions_response, VR_UNARY, 1, NULL),
		M("Train", train_request, train_progress, VR_SERVER_STREAM, 1, NULL),
		M("Recommend", recommend_request, recommend_response, VR_UNARY, 0, NULL),
		M("RecommendBatch", recommend_batch_request, recommend_batch_response, VR_UNARY, 0, NULL),
		M("Score", score_request, score_response, VR_UNARY, 0, NULL),
		M("Evaluate", evaluate_request, evaluate_response, VR_UNARY, 0, NULL),
		M("Info", rank_info_request, rank_info_response, VR_UNARY, 0, info),
	};
	return vr_server_add_service(srv, table, sizeof table / sizeof table[0]);
}
