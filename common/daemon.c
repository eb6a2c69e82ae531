/* daemon: the start-up and shutdown that featured and rankd share (see
 * daemon.h).
 *
 * Signals: SIGTERM, SIGINT and SIGHUP are blocked in main before any thread of
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

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

static pid_t g_main_tid;

static void forward_to_main(int sig)
{
	int saved = errno;
	syscall(SYS_tgkill, getpid(), g_main_tid, sig);
	errno = saved;
}

/* Whether addr ("host:port", "[v6]:port", "unix:path") can be reached
 * only from this machine. Names other than localhost count as beyond
 * loopback: what they resolve to may change. */
static int listen_is_local(const char *addr)
{
	if (!strncmp(addr, "unix:", 5) || !strncmp(addr, "unix-abstract:", 14))
		return 1;
	if (!strncmp(addr, "ipv4:", 5) || !strncmp(addr, "ipv6:", 5))
		addr += 5;
	const char *colon = strrchr(addr, ':');
	size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		addr++;
		n -= 2;
	}
	char host[64];
	if (n >= sizeof host)
		return 0;
	memcpy(host, addr, n);
	host[n] = 0;
	if (!strcasecmp(host, "localhost"))
		return 1;
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) ||
		       (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return 0;
}

/* The admin token from its flags, and whether it may be served without. */
static int token_policy(vr_daemon *d)
{
	char err[512];
	int rc;
	if (d->admin_token && !d->admin_token[0])
		d->admin_token = NULL;
	if (d->admin_token && d->admin_token_file) {
		VR_ERROR("--admin-token and --admin-token-file are both set (flags or VISREC_ADMIN_TOKEN*); "
			 "keep one, the file");
		return 2;
	}
	if (d->admin_token_file) {
		if ((rc = vr_flags_read_secret("admin-token-file", d->admin_token_file, &d->token_buf,
					       err, sizeof err))) {
			VR_ERROR("%s", err);
			return 2;
		}
		d->admin_token = d->token_buf;
	} else if (d->admin_token &&
		   vr_flags_check_secret("admin-token", d->admin_token, err, sizeof err)) {
		VR_ERROR("%s", err);
		return 2;
	}
	if (d->metrics_listen && !d->metrics_listen[0])
		d->metrics_listen = NULL;
	if (d->metrics_listen && !listen_is_local(d->metrics_listen) && !d->metrics_public &&
	    !d->insecure) {
		VR_ERROR("refusing to serve metrics on %s: the endpoint has no token, and anyone who "
			 "reaches it sees method names, call rates and catalogue sizes. Serve them on "
			 "127.0.0.1, or pass --metrics-public (or --insecure) to serve them there",
			 d->metrics_listen);
		return 2;
	}
	if (listen_is_local(d->listen))
		return -1;
	if (!d->admin_token && !d->insecure) {
		VR_ERROR("refusing to listen on %s without an admin token: anyone who reaches it could "
			 "write, delete and train. Put a token in a file only this user can read "
			 "(openssl rand -hex 32 > F; chmod 600 F) and pass --admin-token-file F "
			 "(or VISREC_ADMIN_TOKEN_FILE=F), listen on 127.0.0.1, or pass --insecure "
			 "to serve without one", d->listen);
		return 2;
	}
	if (!d->admin_token)
		VR_WARN("--insecure: serving %s with no admin token; anyone who reaches it may write, "
			"delete and train", d->listen);
	else if (!d->tls_cert)
		VR_WARN("the admin token crosses the network in plaintext on %s: serve TLS "
			"(--tls-cert, --tls-key)", d->listen);
	return -1;
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
	d->metrics = NULL;
	d->token_buf = NULL;
	vr_log_set_component(name);
	sigemptyset(&d->signals);
	sigaddset(&d->signals, SIGTERM);
	sigaddset(&d->signals, SIGINT);
	sigaddset(&d->signals, SIGHUP);
	d->on_hup = NULL;
	g_main_tid = (pid_t)syscall(SYS_gettid);
	struct sigaction sa = { .sa_handler = forward_to_main, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
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
	if (d->log_format && d->log_format[0]) {
		enum vr_log_format format;
		if (vr_log_parse_format(d->log_format, &format)) {
			VR_ERROR("--log-format: \"%s\" is not text or json", d->log_format);
			return 2;
		}
		vr_log_set_format(format);
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
	int code = token_policy(d);
	if (code >= 0) {
		free(d->token_buf);
		d->token_buf = NULL;
	}
	return code;
}

/* The store's size, read at each scrape. */
static vr_prom_series *store_map, *store_used;

static void store_families(void)
{
	store_map = vr_prom_get(vr_prom_register("visrec_store_map_bytes",
						 "The LMDB map's size (it doubles when full).",
						 VR_PROM_GAUGE, NULL, NULL, 0));
	store_used = vr_prom_get(vr_prom_register("visrec_store_used_bytes",
						  "The LMDB map's pages in use.", VR_PROM_GAUGE,
						  NULL, NULL, 0));
}

static void store_collect(void *arg)
{
	vr_daemon *d = arg;
	vr_prom_set(store_map, (double)vr_store_map_bytes(d->store));
	vr_prom_set(store_used, (double)vr_store_used_bytes(d->store));
}

int vr_daemon_open(vr_daemon *d)
{
	int rc = vr_store_open(&d->store, d->data, NULL);
	if (rc) {
		VR_ERROR("cannot open the data directory %s: %s", d->data, vr_strerror(rc));
		return 1;
	}
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, store_families);
	vr_prom_collector(store_collect, d);
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
	if (d->metrics_listen) {
		char err[512];
		if (vr_prom_http_start(&d->metrics, d->metrics_listen, err, sizeof err)) {
			VR_ERROR("%s", err);
			return 1;
		}
		colon = strrchr(d->metrics_listen, ':');
		hostlen = (int)(colon - d->metrics_listen);
		VR_INFO("metrics on http://%.*s:%d/metrics", hostlen, d->metrics_listen,
			vr_prom_http_port(d->metrics));
		printf("%s metrics on %.*s:%d\n", d->name, hostlen, d->metrics_listen,
		       vr_prom_http_port(d->metrics));
		fflush(stdout);
	}
	return 0;
}

void vr_daemon_wait(vr_daemon *d)
{
	int sig = 0;
	for (;;) {
		if (sigwait(&d->signals, &sig))
			continue;
		if (sig != SIGHUP)
			break;
		if (d->on_hup)
			d->on_hup(d->hup_ctx);
		else
			VR_INFO("SIGHUP received; %s has nothing to re-read", d->name);
	}
	VR_INFO("%s received; shutting down (grace %d ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
		d->grace_ms);
}

void vr_daemon_stop(vr_daemon *d)
{
	vr_prom_http_stop(d->metrics);
	d->metrics = NULL;
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
	vr_prom_collector_remove(store_collect, d);
	if (d->store)
		vr_store_close(d->store);
	d->store = NULL;
	if (d->token_buf) {
		memset(d->token_buf, 0, strlen(d->token_buf));
		free(d->token_buf);
	}
	d->token_buf = NULL;
	d->admin_token = NULL;
	return rc;
}
