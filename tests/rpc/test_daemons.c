/* Integration tests of the featured and rankd daemons as real processes:
 * started with posix_spawn (never fork after grpc_init) on 127.0.0.1:0,
 * their printed address parsed, then called with our C client: Health,
 * Info, every other method registered, the admin token, SIGTERM with a
 * stream open, and the one-line failures (bad data dir, port taken). */
#include "err.h"
#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"
#include "health.h"
#include "procs.h"
#include "rpc.h"
#include "visrec/v1/featured.pb-c.h"
#include "visrec/v1/rankd.pb-c.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];

/* Starts argv with its stderr in a fresh TMPDIR/<tag>.stderr. */
static int spawn(struct proc *d, const char *tag, char *const argv[])
{
	char err[512];
	snprintf(err, sizeof err, "%s/%s.stderr", tmpdir, tag);
	unlink(err);
	return proc_spawn(d, err, argv);
}

/* Waits up to ms for the process to exit; its wait status, or -1. */
static int wait_exit(struct proc *d, int ms)
{
	int64_t end = procs_now_ms() + ms;
	for (;;) {
		int status;
		pid_t r = waitpid(d->pid, &status, WNOHANG);
		if (r == d->pid) {
			d->pid = -1;
			return status;
		}
		if (procs_now_ms() > end)
			return -1;
		usleep(10000);
	}
}

static void reap(struct proc *d)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		waitpid(d->pid, NULL, 0);
		d->pid = -1;
	}
	if (d->out > 0)
		close(d->out);
	d->out = -1;
}

/* The daemon's stderr; *lines counts its lines. */
static const char *stderr_of(struct proc *d, int *lines)
{
	static char buf[4096];
	buf[0] = 0;
	*lines = 0;
	int fd = open(d->err_path, O_RDONLY);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = 0;
		close(fd);
	}
	for (char *p = buf; *p; p++)
		*lines += *p == '\n';
	return buf;
}

static int start_featured(struct proc *d, const char *tag, const char *token)
{
	char data[128];
	snprintf(data, sizeof data, "%s/%s-data", tmpdir, tag);
	char *argv[] = { FEATURED_BIN, "--listen", "127.0.0.1:0", "--data", data,
			 token ? "--admin-token" : NULL, (char *)token, NULL };
	if (spawn(d, tag, argv))
		return -1;
	return proc_wait_ready(d, "featured", 10000);
}

static int health_check(vr_channel *ch, const char *service, int *status, vr_status *st)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	ProtobufCMessage *m = NULL;
	int rc = vr_client_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
				 &grpc__health__v1__health_check_response__descriptor, &m, 5000, NULL, st);
	if (!rc) {
		*status = ((Grpc__Health__V1__HealthCheckResponse *)m)->status;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	return rc;
}

/* Calls one method of a service with an empty request, whatever its kind,
 * and returns the status. */
static void call_empty(vr_channel *ch, const ProtobufCServiceDescriptor *svc, unsigned i,
		       vr_status *st)
{
	const ProtobufCMethodDescriptor *m = &svc->methods[i];
	char path[128];
	snprintf(path, sizeof path, "/%s/%s", svc->name, m->name);
	ProtobufCMessage *req = calloc(1, m->input->sizeof_message);
	protobuf_c_message_init(m->input, req);
	vr_ccall *cc = NULL;
	st->code = -1;
	if (vr_ccall_start(&cc, ch, path, m->output, 5000, NULL) == 0) {
		ProtobufCMessage *resp = NULL;
		vr_ccall_send(cc, req);
		vr_ccall_close_send(cc);
		if (vr_ccall_recv(cc, &resp) == 0)
			protobuf_c_message_free_unpacked(resp, NULL);
		vr_ccall_finish(cc, st);
	}
	free(req);
}

/* Every method of the service is registered: an empty request gets an
 * answer from the service itself (OK, a validation error, or "not
 * implemented yet" for work still to land), never core's "not implemented
 * by this server" for an unknown method, and Info answers OK. Returns the
 * count of methods that pass. */
static unsigned check_registered(vr_channel *ch, const ProtobufCServiceDescriptor *svc)
{
	unsigned ok = 0;
	for (unsigned i = 0; i < svc->n_methods; i++) {
		vr_status st;
		call_empty(ch, svc, i, &st);
		int pass;
		if (!strcmp(svc->methods[i].name, "Info"))
			pass = st.code == GRPC_STATUS_OK;
		else
			pass = !strstr(st.message, "not implemented by this server") &&
			       st.code != GRPC_STATUS_UNKNOWN && st.code != GRPC_STATUS_INTERNAL;
		if (pass)
			ok++;
		else
			fprintf(stderr, "  %s/%s: %s \"%s\"\n", svc->name, svc->methods[i].name,
				vr_status_name(st.code), st.message);
	}
	return ok;
}

TEST(featured_serves_health_and_info)
{
	struct proc d;
	ASSERT_OK(start_featured(&d, "f1", NULL));
	vr_channel *ch = NULL;
	ASSERT_OK(vr_channel_create(&ch, d.addr, NULL));
	int all = -1, svc = -1;
	vr_status st;
	int rc1 = health_check(ch, "", &all, &st);
	int rc2 = health_check(ch, "visrec.v1.Featured", &svc, &st);
	Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	int rc3 = vr_client_unary(ch, "/visrec.v1.Featured/Info", &req.base,
				  &visrec__v1__featured_info_response__descriptor, &m, 5000, NULL, &st);
	unsigned ok = check_registered(ch, &visrec__v1__featured__descriptor);
	vr_channel_destroy(ch);
	kill(d.pid, SIGTERM);
	int64_t t0 = procs_now_ms();
	int status = wait_exit(&d, 5000);
	int64_t took = procs_now_ms() - t0;
	reap(&d);
	ASSERT_OK(rc1);
	ASSERT_OK(rc2);
	ASSERT_EQ_INT(all, VR_HEALTH_SERVING);
	ASSERT_EQ_INT(svc, VR_HEALTH_SERVING);
	ASSERT_OK(rc3);
	Visrec__V1__FeaturedInfoResponse *info = (void *)m;
	ASSERT_STR_EQ(info->server_version, "0.1.0");
	/* featured's default, auto, on a machine without a GPU */
	ASSERT(!strcmp(info->backend, "onednn") || !strcmp(info->backend, "cpu"));
	ASSERT_EQ_INT(info->items, 0);
	protobuf_c_message_free_unpacked(m, NULL);
	ASSERT_EQ_INT(ok, visrec__v1__featured__descriptor.n_methods);
	ASSERT_MSG(status == 0, "exit status %d after %lld ms", status, (long long)took);
}

TEST(rankd_serves_and_reaches_featured)
{
	struct proc f, r;
	ASSERT_OK(start_featured(&f, "f2", NULL));
	char data[128];
	snprintf(data, sizeof data, "%s/r2-data", tmpdir);
	char *argv[] = { RANKD_BIN, "--listen", "127.0.0.1:0", "--data", data, "--featured", f.addr, NULL };
	if (spawn(&r, "r2", argv) || proc_wait_ready(&r, "rankd", 10000)) {
		reap(&r);
		reap(&f);
		FAIL_("rankd did not start");
	}
	vr_channel *ch = NULL;
	vr_channel_create(&ch, r.addr, NULL);
	int all = -1;
	vr_status st;
	int rc1 = health_check(ch, "visrec.v1.Rank", &all, &st);
	/* featured_connected turns true once the channel has connected. */
	int connected = 0, rc2 = -1;
	char featured[64] = "";
	for (int i = 0; i < 60 && !connected; i++) {
		Visrec__V1__RankInfoRequest req = VISREC__V1__RANK_INFO_REQUEST__INIT;
		ProtobufCMessage *m = NULL;
		rc2 = vr_client_unary(ch, "/visrec.v1.Rank/Info", &req.base,
				      &visrec__v1__rank_info_response__descriptor, &m, 5000, NULL, &st);
		if (rc2)
			break;
		Visrec__V1__RankInfoResponse *info = (void *)m;
		connected = info->featured_connected;
		snprintf(featured, sizeof featured, "%s", info->featured);
		protobuf_c_message_free_unpacked(m, NULL);
		if (!connected)
			usleep(50000);
	}
	unsigned ok = check_registered(ch, &visrec__v1__rank__descriptor);
	vr_channel_destroy(ch);
	kill(r.pid, SIGINT);
	kill(f.pid, SIGTERM);
	int rs = wait_exit(&r, 5000), fs = wait_exit(&f, 5000);
	reap(&r);
	reap(&f);
	ASSERT_OK(rc1);
	ASSERT_EQ_INT(all, VR_HEALTH_SERVING);
	ASSERT_OK(rc2);
	ASSERT_STR_EQ(featured, f.addr);
	ASSERT_MSG(connected, "rankd never reported featured_connected");
	ASSERT_EQ_INT(ok, visrec__v1__rank__descriptor.n_methods);
	ASSERT_EQ_INT(rs, 0);
	ASSERT_EQ_INT(fs, 0);
}

TEST(sigterm_with_stream_open)
{
	struct proc d;
	ASSERT_OK(start_featured(&d, "f3", NULL));
	vr_channel *ch = NULL;
	vr_channel_create(&ch, d.addr, NULL);
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)"";
	vr_ccall *cc = NULL;
	int first = -1, last = -1;
	ProtobufCMessage *m = NULL;
	if (vr_ccall_start(&cc, ch, "/grpc.health.v1.Health/Watch",
			   &grpc__health__v1__health_check_response__descriptor, 20000, NULL) == 0) {
		vr_ccall_send(cc, &req.base);
		vr_ccall_close_send(cc);
		if (vr_ccall_recv(cc, &m) == 0) {
			first = ((Grpc__Health__V1__HealthCheckResponse *)m)->status;
			protobuf_c_message_free_unpacked(m, NULL);
		}
	}
	kill(d.pid, SIGTERM);
	int64_t t0 = procs_now_ms();
	while (cc && vr_ccall_recv(cc, &m) == 0) {
		last = ((Grpc__Health__V1__HealthCheckResponse *)m)->status;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	vr_status st = { .code = -1 };
	if (cc)
		vr_ccall_finish(cc, &st);
	int status = wait_exit(&d, 5000);
	int64_t took = procs_now_ms() - t0;
	vr_channel_destroy(ch);
	reap(&d);
	ASSERT_EQ_INT(first, VR_HEALTH_SERVING);
	ASSERT_EQ_INT(last, VR_HEALTH_NOT_SERVING);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_UNAVAILABLE);
	ASSERT_MSG(status == 0, "exit status %d", status);
	ASSERT_MSG(took < 5000, "took %lld ms", (long long)took);
}

TEST(admin_token)
{
	struct proc d;
	ASSERT_OK(start_featured(&d, "f4", "t0ken"));
	vr_channel *anon = NULL, *adm = NULL;
	vr_channel_opts o = { .token = "t0ken" };
	vr_channel_create(&anon, d.addr, NULL);
	vr_channel_create(&adm, d.addr, &o);
	const ProtobufCServiceDescriptor *svc = &visrec__v1__featured__descriptor;
	unsigned put = 0, info = 0;
	for (unsigned i = 0; i < svc->n_methods; i++) {
		if (!strcmp(svc->methods[i].name, "PutItems"))
			put = i;
		if (!strcmp(svc->methods[i].name, "Info"))
			info = i;
	}
	vr_status s1, s2, s3;
	call_empty(anon, svc, put, &s1);
	call_empty(adm, svc, put, &s2);
	call_empty(anon, svc, info, &s3);
	vr_channel_destroy(anon);
	vr_channel_destroy(adm);
	kill(d.pid, SIGTERM);
	int status = wait_exit(&d, 5000);
	reap(&d);
	ASSERT_EQ_INT(s1.code, GRPC_STATUS_UNAUTHENTICATED);
	ASSERT_NE_INT(s2.code, GRPC_STATUS_UNAUTHENTICATED);
	ASSERT_EQ_INT(s3.code, GRPC_STATUS_OK);
	ASSERT_EQ_INT(status, 0);
}

TEST(unwritable_data_dir)
{
	/* A path below a regular file cannot be created, even by root. */
	char file[128], data[160];
	snprintf(file, sizeof file, "%s/plainfile", tmpdir);
	close(open(file, O_WRONLY | O_CREAT, 0644));
	snprintf(data, sizeof data, "%s/sub", file);
	struct proc d;
	char *argv[] = { FEATURED_BIN, "--listen", "127.0.0.1:0", "--data", data, NULL };
	ASSERT_OK(spawn(&d, "f5", argv));
	int status = wait_exit(&d, 5000);
	reap(&d);
	int lines;
	const char *err = stderr_of(&d, &lines);
	ASSERT_MSG(status > 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0, "status %d", status);
	ASSERT_EQ_INT(lines, 1);
	ASSERT_CONTAINS(err, data);
	ASSERT_CONTAINS(err, "Not a directory");
}

TEST(port_taken)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof a;
	ASSERT_OK(bind(fd, (struct sockaddr *)&a, sizeof a));
	ASSERT_OK(listen(fd, 1));
	getsockname(fd, (struct sockaddr *)&a, &len);
	char listen_addr[64], data[128];
	snprintf(listen_addr, sizeof listen_addr, "127.0.0.1:%d", ntohs(a.sin_port));
	snprintf(data, sizeof data, "%s/f6-data", tmpdir);
	struct proc d;
	char *argv[] = { FEATURED_BIN, "--listen", listen_addr, "--data", data, NULL };
	int rc = spawn(&d, "f6", argv);
	int status = rc ? -1 : wait_exit(&d, 5000);
	reap(&d);
	close(fd);
	int lines;
	const char *err = stderr_of(&d, &lines);
	ASSERT_OK(rc);
	ASSERT_MSG(status > 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0, "status %d", status);
	ASSERT_EQ_INT(lines, 1);
	ASSERT_CONTAINS(err, listen_addr);
	ASSERT_CONTAINS(err, "in use");
}

TEST(bad_flag)
{
	struct proc d;
	char *argv[] = { RANKD_BIN, "--data", tmpdir, "--threads", "lots", NULL };
	ASSERT_OK(spawn(&d, "r7", argv));
	int status = wait_exit(&d, 5000);
	reap(&d);
	int lines;
	const char *err = stderr_of(&d, &lines);
	ASSERT_MSG(status > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 2, "status %d", status);
	ASSERT_EQ_INT(lines, 1);
	ASSERT_CONTAINS(err, "--threads");
}

static const struct vr_test tests[] = {
	T(featured_serves_health_and_info), T(rankd_serves_and_reaches_featured),
	T(sigterm_with_stream_open), T(admin_token), T(unwritable_data_dir), T(port_taken),
	T(bad_flag), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main_in_tmpdir(tests, argc, argv, tmpdir, sizeof tmpdir, "/tmp/vr_daemon_test.XXXXXX",
				      vr_rpc_init, vr_rpc_shutdown);
}
