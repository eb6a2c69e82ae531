/* daemon: what featured and rankd share around their services: the common
 * flags, the data directory, a server with Health, the ready line on
 * stdout, and a graceful end on SIGTERM or SIGINT.
 *
 * Safe by default: a daemon asked to listen beyond loopback (anything but
 * 127.0.0.0/8, ::1, localhost or a unix socket) without an admin token
 * refuses to start and says how to set one, unless --insecure is given
 * (then it warns). The metrics endpoint (--metrics-listen, plain HTTP
 * with no token) beyond loopback needs its own opt-in, --metrics-public,
 * or --insecure: a token for gRPC does not cover it. The token is best given as a file
 * (--admin-token-file, read by vr_flags_read_secret), so that it never
 * sits in a command line.
 *
 *   vr_daemon d = { 0 };
 *   const vr_flag flags[] = { VR_DAEMON_FLAGS(&d, "127.0.0.1:50051"), { 0 } };
 *   int code = vr_daemon_init(&d, "featured", summary, flags, argc, argv);
 *   if (code >= 0) return code;               // --help or bad flags
 *   if (!(code = vr_daemon_open(&d)))         // store, server, Health
 *     code = <register the service on d.server>;
 *   if (!code && !(code = vr_daemon_serve(&d, NULL))) // bind, "featured listening on ..."
 *     vr_daemon_wait(&d);                     // until SIGTERM/SIGINT
 *   vr_daemon_stop(&d);                       // drains calls, frees the server
 *   <free the service's state: channels before vr_daemon_close>
 *   vr_daemon_close(&d);                      // stops gRPC, closes the store
 *   return code;
 *
 * Errors are reported as one log line naming the cause; the functions
 * return the process exit code to use (1). */
#ifndef VR_DAEMON_H
#define VR_DAEMON_H

#include "flags.h"
#include "health.h"
#include "prom.h"
#include "rpc.h"
#include "store.h"

#include <signal.h>
#include <stdint.h>

typedef struct vr_daemon {
	const char *name;
	/* flags */
	const char *listen, *data, *tls_cert, *tls_key, *admin_token, *admin_token_file, *log_level;
	const char *log_format, *metrics_listen;
	int threads, max_streams, max_admin_streams, max_followers, max_followers_per_peer, grace_ms;
	int insecure, metrics_public;
	uint64_t max_message;
	/* state */
	char *token_buf; /* the token read from admin_token_file */
	sigset_t signals;
	/* Called on the waiting thread for each SIGHUP (set after
	 * vr_daemon_init; NULL: the signal is logged and ignored). */
	void (*on_hup)(void *ctx);
	void *hup_ctx;
	int rpc_up;
	vr_store *store;
	vr_server *server;
	vr_health *health;
	vr_prom_http *metrics;
} vr_daemon;

#define VR_DAEMON_FLAGS(d, listen_default) \
	{ "listen", "VISREC_LISTEN", VR_FLAG_STRING, &(d)->listen, listen_default, \
	  "HOST:PORT to serve on; port 0 picks a free one", 0 }, \
	{ "data", "VISREC_DATA", VR_FLAG_STRING, &(d)->data, NULL, \
	  "directory of the LMDB environment (created if missing)", 1 }, \
	{ "threads", "VISREC_THREADS", VR_FLAG_INT, &(d)->threads, "0", \
	  "server threads, each runs unary calls inline; 0 = one per CPU, at least 2", 0 }, \
	{ "max-streams", "VISREC_MAX_STREAMS", VR_FLAG_INT, &(d)->max_streams, "64", \
	  "read-only streaming calls served at once (followers and admin calls have pools of their own)", 0 }, \
	{ "max-admin-streams", "VISREC_MAX_ADMIN_STREAMS", VR_FLAG_INT, &(d)->max_admin_streams, "64", \
	  "admin calls (writes, training) on threads of their own at once", 0 }, \
	{ "max-followers", "VISREC_MAX_FOLLOWERS", VR_FLAG_INT, &(d)->max_followers, "256", \
	  "long-lived feeds (Watch streams) served at once", 0 }, \
	{ "max-followers-per-peer", "VISREC_MAX_FOLLOWERS_PER_PEER", VR_FLAG_INT, \
	  &(d)->max_followers_per_peer, "16", "of those, from one client address", 0 }, \
	{ "max-message-bytes", "VISREC_MAX_MESSAGE_BYTES", VR_FLAG_UINT64, &(d)->max_message, \
	  "16777216", "largest message received or sent", 0 }, \
	{ "tls-cert", "VISREC_TLS_CERT", VR_FLAG_STRING, &(d)->tls_cert, NULL, \
	  "PEM certificate chain; with --tls-key serves TLS", 0 }, \
	{ "tls-key", "VISREC_TLS_KEY", VR_FLAG_STRING, &(d)->tls_key, NULL, \
	  "PEM private key", 0 }, \
	{ "admin-token-file", "VISREC_ADMIN_TOKEN_FILE", VR_FLAG_STRING, &(d)->admin_token_file, NULL, \
	  "file holding the bearer token that admin calls (writes, training, the change feed) need, " \
	  "on one line, not readable by other users; unset: those calls are open", 0 }, \
	{ "admin-token", "VISREC_ADMIN_TOKEN", VR_FLAG_STRING, &(d)->admin_token, NULL, \
	  "the token itself (visible to ps: prefer --admin-token-file)", 0 }, \
	{ "insecure", "VISREC_INSECURE", VR_FLAG_BOOL, &(d)->insecure, "false", \
	  "serve beyond loopback without an admin token: anyone who reaches the port may write and train", 0 }, \
	{ "shutdown-grace-ms", "VISREC_SHUTDOWN_GRACE_MS", VR_FLAG_INT, &(d)->grace_ms, "2000", \
	  "on SIGTERM, how long calls in flight may finish before they are cancelled", 0 }, \
	{ "log-level", "VISREC_LOG_LEVEL", VR_FLAG_STRING, &(d)->log_level, NULL, \
	  "debug, info, warn or error (debug logs every call)", 0 }, \
	{ "log-format", "VISREC_LOG_FORMAT", VR_FLAG_STRING, &(d)->log_format, "text", \
	  "text (one line an event) or json (one object a line: ts, level, component, msg, " \
	  "and method and peer for a call)", 0 }, \
	{ "metrics-listen", "VISREC_METRICS_LISTEN", VR_FLAG_STRING, &(d)->metrics_listen, NULL, \
	  "HOST:PORT to serve Prometheus metrics on (GET /metrics over HTTP); unset: off; " \
	  "beyond loopback it needs --metrics-public or --insecure", 0 }, \
	{ "metrics-public", "VISREC_METRICS_PUBLIC", VR_FLAG_BOOL, &(d)->metrics_public, "false", \
	  "serve --metrics-listen beyond loopback: the metrics hold no data, but anyone who " \
	  "reaches the port sees method names, call rates and catalogue sizes", 0 }

/* Parses the flags of table into d (which starts zeroed: flags without a
 * default stay NULL), reads the admin token file, sets up logging and
 * blocks SIGTERM and SIGINT (call it first in main, before any thread
 * starts). Returns -1 to go on, or the exit code: 0 after --help, 2 for
 * bad flags, an unusable token file, or a listen address beyond loopback
 * without a token or --insecure. */
int vr_daemon_init(vr_daemon *d, const char *name, const char *summary,
		   const vr_flag *table, int argc, char **argv);
/* Opens the store in --data, starts gRPC and creates the server with
 * Health registered. Returns 0 or 1. */
int vr_daemon_open(vr_daemon *d);
/* Binds and serves, sets Health SERVING for "" and each name in services
 * (NULL-terminated, may be NULL), and prints "<name> listening on
 * HOST:PORT" to stdout; with --metrics-listen, then serves the metrics and
 * prints "<name> metrics on HOST:PORT". Returns 0 or 1. */
int vr_daemon_serve(vr_daemon *d, const char *const *services);
/* Waits for SIGTERM or SIGINT; each SIGHUP meanwhile calls on_hup. */
void vr_daemon_wait(vr_daemon *d);
/* Stops the metrics endpoint (the services' collectors may go after
 * this), Health NOT_SERVING, drains the server within the grace and frees
 * it. Idempotent. */
void vr_daemon_stop(vr_daemon *d);
/* vr_daemon_stop, then stops gRPC (waiting at most 1.5 s for core's own
 * threads), closes the store and forgets the token. Returns 0, or VR_ETIMEDOUT when core is
 * still stopping: the caller then ends with fflush(NULL) and _exit(code),
 * as exit handlers would race core's threads. */
int vr_daemon_close(vr_daemon *d);

#endif
