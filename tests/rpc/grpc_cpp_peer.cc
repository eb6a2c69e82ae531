// grpc_cpp_peer: the peer bench_rpc measures our server against, a gRPC C++
// callback server (Debian's libgrpc++, the same core 1.51 underneath)
// answering /visrec.v1.Featured/Info the way a competent C++ user would
// write it: generated stubs, the callback API, the default reactor, no
// thread of our own. Not product code, and no test: a benchmark's peer.
//
//   grpc_cpp_peer [--response FILE]
// FILE holds a packed FeaturedInfoResponse (bench_rpc takes it from a real
// featured), so both servers send the same bytes. Listens on 127.0.0.1:0,
// prints "peer listening on 127.0.0.1:PORT", and stops on SIGTERM/SIGINT.
#include "visrec/v1/featured.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

namespace {

class InfoService final : public visrec::v1::Featured::CallbackService {
public:
	explicit InfoService(visrec::v1::FeaturedInfoResponse canned) : canned_(std::move(canned)) {}

	grpc::ServerUnaryReactor *Info(grpc::CallbackServerContext *ctx,
				       const visrec::v1::FeaturedInfoRequest *,
				       visrec::v1::FeaturedInfoResponse *resp) override
	{
		*resp = canned_;
		grpc::ServerUnaryReactor *r = ctx->DefaultReactor();
		r->Finish(grpc::Status::OK);
		return r;
	}

private:
	visrec::v1::FeaturedInfoResponse canned_;
};

} // namespace

int main(int argc, char **argv)
{
	visrec::v1::FeaturedInfoResponse canned;
	for (int i = 1; i < argc; i++) {
		if (!std::strcmp(argv[i], "--response") && i + 1 < argc) {
			std::ifstream in(argv[++i], std::ios::binary);
			std::stringstream ss;
			ss << in.rdbuf();
			if (!in || !canned.ParseFromString(ss.str())) {
				std::fprintf(stderr, "grpc_cpp_peer: %s holds no FeaturedInfoResponse\n", argv[i]);
				return 2;
			}
		} else {
			std::fprintf(stderr, "usage: grpc_cpp_peer [--response FILE]\n");
			return 2;
		}
	}
	// Wait for the stop signal on this thread, blocked everywhere else.
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, nullptr);

	InfoService service(canned);
	grpc::ServerBuilder b;
	int port = 0;
	b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
	b.RegisterService(&service);
	std::unique_ptr<grpc::Server> server = b.BuildAndStart();
	if (!server || port <= 0) {
		std::fprintf(stderr, "grpc_cpp_peer: cannot listen on 127.0.0.1:0\n");
		return 1;
	}
	std::printf("peer listening on 127.0.0.1:%d\n", port);
	std::fflush(stdout);
	int sig = 0;
	sigwait(&stop, &sig);
	server->Shutdown();
	return 0;
}
