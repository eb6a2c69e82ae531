/* featured: the feature service daemon. Parses flags, opens the data
 * directory, serves visrec.v1.Featured and Health until SIGTERM/SIGINT. */
#include "daemon.h"
#include "service.h"

static const char summary[] =
	"featured: stores item images, embeds them with a CNN and serves the vectors\n"
	"(visrec.v1.Featured and grpc.health.v1.Health over gRPC).";

int main(int argc, char **argv)
{
	vr_daemon d = { 0 };
	fd_service svc = { 0 };
	const vr_flag flags[] = { VR_DAEMON_FLAGS(&d, "127.0.0.1:50051"), { 0 } };
	static const char *const services[] = { "visrec.v1.Featured", NULL };

	int code = vr_daemon_init(&d, "featured", summary, flags, argc, argv);
	if (code >= 0)
		return code;
	code = vr_daemon_open(&d);
	if (!code) {
		svc.store = d.store;
		code = fd_service_register(&svc, d.server) ? 1 : 0;
	}
	if (!code)
		code = vr_daemon_serve(&d, services);
	if (!code)
		vr_daemon_wait(&d);
	vr_daemon_close(&d);
	return code;
}
