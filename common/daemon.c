/* daemon: the start-up and shutdown that featured and rankd share (see
 * daemon.h).
 *
 * Signals: SIGTERM and SIGINT are blocked in main before any thread of
 * ours exists, so our threads inherit the mask and vr_daemon_wait's
 * sigwait takes them. But a library may start threads before main
 * (OpenBLAS does, in its constructor) with neither signal blocked, and
 * the kernel may deliver a process-directed SIGTERM to one of those: its
 * default action would kill the daemon (exit by signal 15, about one stop
 * in a few hundred under test). So a handler is installed too, which only
 * such a thread can ever run: it forwards the signal to the main thread
 * (tgkill, async-signal-safe), where sigwait takes it. */
#include "daemon.h"

#include "err.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pid_t g_main_tid;

static void forward_to_main(int sig)
{
	int saved = errno;
	syscall(SYS_tgkill, getpid(), g_main_tid, sig);
	errno = saved;
}

int vr_daemon_init(vr_daemon *d, const char *name, const char *summary,
		   const vr_flag *table, int argc, char **argv)
{
	/* The flag table points into d, so only the state is cleared. */
	d->name = name;
	d->rpc_up = 0;
	d->store = NULL;
	d->server = NULL;
	d->health = NULL;
	vr_log_set_component(name);
	sigemptyset(&d->signals);
	sigaddset(&d->signals, SIGTERM);
	sigaddset(&d->signals, SIGINT);
	g_main_tid = (pid_t)syscall(SYS_gettid);
	struct sigaction sa = { .sa_handler = forward_to_main, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	pthread_sigmask(SIG_BLOCK, &d->signals, NULL);

	char err[256];
	int rc = vr_flags_parse(table, argc, argv, err, sizeof err);
	if (rc == VR_FLAGS_HELP) {
		vr_flags_usage(stdout, name, summary, table);
		return 0;
	}
	if (rc) {
		VR_ERROR("%s", err);
		return 2;
	}
	if (d->log_level && d->log_level[0]) {
		enum vr_log_level level;
		if (vr_log_parse_level(d->log_level, &level)) {
			VR_ERROR("--log-level: \"%s\" is not one of debug, info, warn, error", d->log_level);
			return 2;
		}
		vr_log_set_level(level);
	}
	if (d->threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		d->threads = n > 2 ? (int)n : 2;
	}
	if (d->max_streams <= 0 || d->max_admin_streams <= 0 || d->max_followers <= 0 ||
	    d->max_followers_per_peer <= 0 || d->grace_ms < 0 || d->max_message < 1024 ||
	    d->max_message > 0x7fffffff) {
		VR_ERROR("--max-streams, --max-admin-streams, --max-followers and "
			 "--max-followers-per-peer must be > 0, --shutdown-grace-ms >= 0 and "
			 "--max-message-bytes between 1 KiB and 2 GiB");
		return 2;
	}
	if (!d->tls_cert != !d->tls_key) {
		VR_ERROR("--tls-cert and --tls-key go together");
		return 2;
	}
	return -1;
}

int vr_daemon_open(vr_daemon *d)
{
	int rc = vr_store_open(&d->store, d->data, NULL);
	if (rc) {
		VR_ERROR("cannot open the data directory %s: %s", d->data, vr_strerror(rc));
		return 1;
	}
	vr_rpc_init();
	d->rpc_up = 1;
	vr_server_opts opts = {
		.listen = d->listen,
		.threads = d->threads,
		.max_message_bytes = (size_t)d->max_message,
		.tls_cert_file = d->tls_cert,
		.tls_key_file = d->tls_key,
		.admin_token = d->admin_token,
		.max_streams = d->max_streams,
		.max_admin_streams = d->max_admin_streams,
		.max_followers = d->max_followers,
		.max_followers_per_peer = d->max_followers_per_peer,
	};
	rc = vr_server_create(&d->server, &opts);
	if (!rc)
		rc = vr_health_create(&d->health);
	if (!rc)
		rc = vr_health_register(d->health, d->server);
	if (rc) {
		VR_ERROR("cannot set up the server: %s", vr_strerror(rc));
		return 1;
	}
	return 0;
}

int vr_daemon_serve(vr_daemon *d, const char *const *services)
{
	int rc = vr_server_start(d->server);
	if (rc) {
		const char *why = vr_server_error(d->server);
		if (why[0])
			VR_ERROR("%s", why);
		else
			VR_ERROR("cannot start serving on %s: %s", d->listen, vr_strerror(rc));
		return 1;
	}
	vr_health_set(d->health, "", VR_HEALTH_SERVING);
	for (const char *const *s = services; s && *s; s++)
		vr_health_set(d->health, *s, VR_HEALTH_SERVING);
	const char *colon = strrchr(d->listen, ':');
	int hostlen = colon ? (int)(colon - d->listen) : (int)strlen(d->listen);
	VR_INFO("serving on %.*s:%d (data %s, %s, admin token %s, %d threads)", hostlen, d->listen,
		vr_server_port(d->server), d->data, d->tls_cert ? "TLS" : "plaintext",
		d->admin_token && d->admin_token[0] ? "required" : "not set", d->threads);
	printf("%s listening on %.*s:%d\n", d->name, hostlen, d->listen, vr_server_port(d->server));
	fflush(stdout);
	return 0;
}

void vr_daemon_wait(vr_daemon *d)
{
	int sig = 0;
	while (sigwait(&d->signals, &sig))
		;
	VR_INFO("%s received; shutting down (grace %d ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
		d->grace_ms);
}

void vr_daemon_stop(vr_daemon *d)
{
	if (d->health)
		vr_health_set_all(d->health, VR_HEALTH_NOT_SERVING);
	if (d->server) {
		vr_server_shutdown(d->server, d->grace_ms);
		vr_server_destroy(d->server);
		d->server = NULL;
	}
	vr_health_destroy(d->health);
	d->health = NULL;
}

int vr_daemon_close(vr_daemon *d)
{
	int rc = 0;
	vr_daemon_stop(d);
	if (d->rpc_up && (rc = vr_rpc_shutdown_within(1500)))
		VR_WARN("gRPC core did not stop within 1.5 s; exiting without waiting for it");
	d->rpc_up = 0;
	if (d->store)
		vr_store_close(d->store);
	d->store = NULL;
	return rc;
}
