/* rankd: the ranking service daemon. Parses flags, opens the data
 * directory, connects to featured, serves visrec.v1.Rank and Health until
 * SIGTERM/SIGINT. */
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "service.h"

static const char summary[] =
	"rankd: stores interactions, trains BPR/VBPR/DVBPR and ranks items\n"
	"(visrec.v1.Rank and grpc.health.v1.Health over gRPC).";

int main(int argc, char **argv)
{
	vr_daemon d = { 0 };
	rk_service svc = { 0 };
	const char *featured_ca = NULL, *featured_token = NULL;
	const vr_flag flags[] = {
		VR_DAEMON_FLAGS(&d, "127.0.0.1:50052"),
		{ "featured", "VISREC_FEATURED", VR_FLAG_STRING, &svc.featured_addr, "127.0.0.1:50051",
		  "HOST:PORT of featured", 0 },
		{ "featured-ca", "VISREC_FEATURED_CA", VR_FLAG_STRING, &featured_ca, NULL,
		  "PEM roots to verify featured's TLS certificate; unset: plaintext", 0 },
		{ "featured-token", "VISREC_FEATURED_TOKEN", VR_FLAG_STRING, &featured_token, NULL,
		  "admin token for featured's admin calls", 0 },
		{ 0 },
	};
	static const char *const services[] = { "visrec.v1.Rank", NULL };

	int code = vr_daemon_init(&d, "rankd", summary, flags, argc, argv);
	if (code >= 0)
		return code;
	code = vr_daemon_open(&d);
	if (!code) {
		vr_channel_opts copts = { .tls_root_file = featured_ca, .token = featured_token,
					  .max_message_bytes = (size_t)d.max_message };
		int rc = vr_channel_create(&svc.featured, svc.featured_addr, &copts);
		if (rc) {
			VR_ERROR("cannot set up the channel to featured at %s: %s", svc.featured_addr,
				 vr_strerror(rc));
			code = 1;
		}
	}
	if (!code) {
		svc.store = d.store;
		code = rk_service_register(&svc, d.server) ? 1 : 0;
	}
	if (!code)
		code = vr_daemon_serve(&d, services);
	if (!code)
		vr_daemon_wait(&d);
	vr_daemon_stop(&d);
	vr_channel_destroy(svc.featured);
	vr_daemon_close(&d);
	return code;
}
