/* featured's method table: which handler serves each visrec.v1.Featured
 * method, and the handlers written so far. A NULL handler answers
 * UNIMPLEMENTED "visrec.v1.Featured/X is not implemented yet". */
#include "service.h"

#include "visrec/v1/featured.pb-c.h"

static int info(vr_call *call, void *ctx)
{
	(void)ctx;
	Visrec__V1__FeaturedInfoResponse resp = VISREC__V1__FEATURED_INFO_RESPONSE__INIT;
	resp.server_version = (char *)VISREC_VERSION;
	resp.backend = (char *)"cpu";
	int rc = vr_call_send(call, &resp.base);
	return rc ? rc : GRPC_STATUS_OK;
}

#define M(name, req, resp, kind_, admin_, fn) \
	{ .path = "/visrec.v1.Featured/" name, .request = &visrec__v1__##req##__descriptor, \
	  .response = &visrec__v1__##resp##__descriptor, .kind = kind_, .admin = admin_, \
	  .handler = fn, .ctx = svc }

int fd_service_register(fd_service *svc, vr_server *srv)
{
	const vr_method table[] = {
		M("PutItems", put_items_request, put_items_response, VR_CLIENT_STREAM, 1, NULL),
		M("Embed", embed_request, embed_response, VR_UNARY, 1, NULL),
		M("GetVectors", get_vectors_request, get_vectors_response, VR_SERVER_STREAM, 0, NULL),
		M("Watch", watch_request, item_change, VR_SERVER_STREAM, 0, NULL),
		M("TrainVisual", train_visual_request, train_visual_response, VR_BIDI, 1, NULL),
		M("Info", featured_info_request, featured_info_response, VR_UNARY, 0, info),
	};
	return vr_server_add_service(srv, table, sizeof table / sizeof table[0]);
}
