/* rpc: our thin layer over gRPC core 1.51 and protobuf-c.
 *
 * Written by hand because no maintained C gRPC library exists and protoc-c
 * makes no gRPC stubs; core's API changes between versions, so every core
 * call lives in this one module (rpc.c, rpc_server.c, rpc_client.c).
 *
 * Model: blocking, one thread owns a call. A server runs K threads, each
 * with its own completion queue; every call gets a completion queue of its
 * own, so the thread that runs its handler sees all of its events and
 * needs no lock. Unary handlers run inline on a server thread; streaming
 * handlers (and unary ones marked own_thread) run on a thread of their
 * own, drawn from three bounded pools: followers, admin calls and the
 * rest (vr_server_opts), so open feeds never starve writes.
 * Handlers read and write protobuf-c messages; bytes never reach them.
 *
 * Messages handed to the caller (vr_call_read, vr_client_unary,
 * vr_ccall_recv) are the caller's: free them with
 * protobuf_c_message_free_unpacked(msg, NULL). vr_call_request's message
 * belongs to the call.
 *
 * Call vr_rpc_init() once before anything else here (and before threads
 * start; never fork after it: spawn children with posix_spawn) and
 * vr_rpc_shutdown() at the end. */
#ifndef VR_RPC_H
#define VR_RPC_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vr_server vr_server;
typedef struct vr_call vr_call;
typedef struct vr_channel vr_channel;
typedef struct vr_ccall vr_ccall;

/* ---- process ------------------------------------------------------------ */

/* Starts gRPC core and routes its log lines into ours (its errors at warn,
 * the rest at debug). Returns 0. */
int vr_rpc_init(void);
/* Stops gRPC core and waits for its threads. Every server, channel and
 * call must be gone. */
void vr_rpc_shutdown(void);
/* The same, waiting at most limit_ms: returns 0 when core stopped, or
 * VR_ETIMEDOUT when it is still stopping on a helper thread; the process
 * must then end with _exit() (exit handlers would race that thread). */
int vr_rpc_shutdown_within(int limit_ms);

/* Maps an rc (0, VR_E*, -errno) to a gRPC status code: VR_EINVAL ->
 * INVALID_ARGUMENT, VR_ENOTFOUND -> NOT_FOUND, VR_EEXIST -> ALREADY_EXISTS,
 * VR_EFULL/VR_ETOOBIG/VR_ENOSPACE/VR_EMAPFULL (disk or store full) ->
 * RESOURCE_EXHAUSTED, VR_ECANCELLED -> CANCELLED,
 * VR_ETIMEDOUT -> DEADLINE_EXCEEDED, VR_ESHUTDOWN -> UNAVAILABLE,
 * VR_EUNSUPPORTED -> UNIMPLEMENTED, VR_ESTATE -> FAILED_PRECONDITION,
 * VR_ERPC -> UNAVAILABLE, anything else -> INTERNAL. */
int vr_status_from_rc(int rc);
/* The canonical name of a status code ("DEADLINE_EXCEEDED"). */
const char *vr_status_name(int code);

/* ---- server ------------------------------------------------------------- */

enum vr_rpc_kind { VR_UNARY, VR_SERVER_STREAM, VR_CLIENT_STREAM, VR_BIDI };

/* Returns a grpc_status_code (GRPC_STATUS_OK ...), a negative rc that the
 * layer maps with vr_status_from_rc (its message: the last vr_call_error
 * or layer error on this call, else vr_strerror(rc)), or VR_DETACHED. */
typedef int (*vr_handler)(vr_call *call, void *ctx);

/* A handler of a unary method that returns VR_DETACHED hands the call to
 * another thread, which must end it with vr_call_finish. The server thread
 * goes on to the next call. */
#define VR_DETACHED 1000

typedef struct vr_method {
	const char *path;   /* "/visrec.v1.Featured/Info" */
	const ProtobufCMessageDescriptor *request;
	const ProtobufCMessageDescriptor *response;
	enum vr_rpc_kind kind;
	int admin;          /* needs "authorization: Bearer <token>" when a token is set;
			     * on a thread of its own it counts in the admin pool */
	vr_handler handler; /* NULL: answers UNIMPLEMENTED "<path> is not implemented yet" */
	void *ctx;
	int own_thread;     /* unary only: run on a thread of its own, like a stream,
			     * for handlers that block long (a call to another
			     * server, seconds of compute): an inline one holds its
			     * worker, and calls core queued on that worker wait */
	int follower;       /* streams only: a long-lived feed (Watch). Counted in
			     * the followers' pool, whatever admin says, and its
			     * handler may sleep until woken (vr_call_wake_on_stop) */
} vr_method;

typedef struct vr_server_opts {
	const char *listen;       /* "host:port"; port 0 picks a free port */
	int threads;              /* completion-queue threads; 0 = 2 */
	size_t max_message_bytes; /* receive and send limit; 0 = 4 MiB */
	const char *tls_cert_file; /* PEM chain; with tls_key_file, serve TLS */
	const char *tls_key_file;
	const char *admin_token;  /* NULL or "": admin methods are open */
	int max_streams;          /* calls on threads of their own (streams,
				   * own_thread) that are neither admin nor
				   * followers, at once; 0 = 64 */
	int max_admin_streams;    /* admin calls on threads of their own; 0 = 64 */
	int max_followers;        /* follower streams at once; 0 = 256 */
	int max_followers_per_peer; /* of those, from one client address
				   * (IP, or all of a unix socket); 0 = 16 */
} vr_server_opts;

/* Creates a server (nothing is bound yet). Strings in opts are copied.
 * Errors: VR_EINVAL (no listen address, only one of cert/key), VR_ENOMEM. */
int vr_server_create(vr_server **out, const vr_server_opts *opts);
/* Adds n methods (the table is copied). Before vr_server_start only.
 * Errors: VR_EINVAL (bad entry, duplicate path: vr_server_error() names
 * the method), VR_ESTATE, VR_ENOMEM. */
int vr_server_add_service(vr_server *srv, const vr_method *table, size_t n);
/* Binds, starts the threads and serves. Errors: -EADDRINUSE (port
 * taken), -errno reading TLS files, VR_EIO (core refused the address),
 * VR_ESTATE, VR_ENOMEM; vr_server_error() then says what failed in one
 * line. */
int vr_server_start(vr_server *srv);
/* The text of the last start or add_service failure ("" if none). */
const char *vr_server_error(const vr_server *srv);
/* The bound port (after a successful start), else 0. */
int vr_server_port(const vr_server *srv);
/* The message size limit in bytes. */
size_t vr_server_max_message(const vr_server *srv);
/* Stops taking calls, lets calls in flight finish for up to grace_ms,
 * then cancels the rest and waits for their handlers to return, and joins
 * every thread. Returns as soon as no call is left (idle connections are
 * dropped). Idempotent; never from a handler. Handlers see
 * vr_call_stopping() become true at once, so endless streams can end
 * early. */
void vr_server_shutdown(vr_server *srv, int grace_ms);
/* Shuts down (grace 0) if still running, and frees. NULL is allowed. */
void vr_server_destroy(vr_server *srv);

/* ---- inside a handler (only the owning thread may use the call) --------- */

/* The request of a unary or server-streaming call, owned by the call. */
const ProtobufCMessage *vr_call_request(vr_call *call);
/* Reads the next message of a client or bidi stream into *msg (yours).
 * Returns 0, VR_EEOF when the client half-closed, VR_ECANCELLED, or
 * VR_EINVAL for bytes that are no valid request or a string field that
 * holds a NUL byte (the call's status message then says which: return the
 * rc from the handler).
 *
 * NUL bytes: protobuf-c ends an unpacked string at its first NUL, so a
 * value like "i5\0evil" would reach a handler as "i5". The layer refuses
 * such a request (unary and server-streaming ones before the handler runs)
 * with INVALID_ARGUMENT naming the field, e.g. "interactions[3].user_id
 * contains a NUL byte at offset 7". So strlen() of a request string is its
 * length on the wire. */
int vr_call_read(vr_call *call, ProtobufCMessage **msg);
/* vr_call_read for a stream that answers each message on its own (PutItems'
 * per-item statuses): a message with a NUL byte in a string field is
 * returned too (rc 0) with that reason in why (cap bytes; "" otherwise),
 * for the handler to refuse that message alone. */
int vr_call_read_each(vr_call *call, ProtobufCMessage **msg, char *why, size_t cap);
/* Sends a response. Unary: kept and sent with the status (a second call
 * fails with VR_ESTATE). Streams: sent now; returns when the write is
 * done. Returns 0, VR_ETOOBIG (over the message limit; nothing sent),
 * VR_ECANCELLED (the call is gone), VR_ENOMEM. */
int vr_call_send(vr_call *call, const ProtobufCMessage *msg);
/* vr_call_send for a response already packed (len bytes at bytes, copied):
 * a reply a handler keeps packed between calls, as featured's Info does.
 * The bytes must be a valid message of the method's response type. */
int vr_call_send_packed(vr_call *call, const void *bytes, size_t len);
/* Sets the status message; returns code, so: return vr_call_error(...). */
int vr_call_error(vr_call *call, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Whether the client cancelled or the deadline passed (does not block).
 * A handler that waits for work on another thread may lend that thread
 * the call for these two checks (featured's trunk pass does, to stop
 * between batches): only while the handler waits and touches nothing of
 * the call, the wait's own lock or join handing it back. */
int vr_call_cancelled(vr_call *call);
/* vr_call_cancelled, or the server is shutting down. */
int vr_call_stopping(vr_call *call);
/* Whether the server is shutting down (any thread; does not block). Once
 * the shutdown's grace is over the server cancels the calls left, so a
 * handler that must say why it stopped asks this first. */
int vr_call_server_stopping(const vr_call *call);
/* For the handler of a follower method that sleeps on a condition
 * variable of its own (a feed waiting for its next change): from now on
 * the call's cancellation, and the server's shutdown, call wake(arg),
 * which must lock the mutex the handler sleeps with and broadcast its
 * condition variable. The handler checks vr_call_stopping() with that
 * mutex held before each wait, and so never misses the end. wake runs
 * on a server thread, may run more often than needed, and arg must live
 * until the server is shut down. Returns 0, VR_ESTATE (not a follower),
 * or VR_ENOMEM. */
int vr_call_wake_on_stop(vr_call *call, void (*wake)(void *arg), void *arg);
/* Milliseconds left before the call's deadline; INT64_MAX if none. */
int64_t vr_call_deadline_ms(vr_call *call);
/* Copies the value of request metadata key (lower case) into buf.
 * Returns its length, VR_ENOTFOUND, or VR_ETOOBIG when buf is short. */
int vr_call_metadata(vr_call *call, const char *key, char *buf, size_t len);
/* The client's address ("ipv4:127.0.0.1:40112"), owned by the call. */
const char *vr_call_peer(vr_call *call);
/* The method path ("/visrec.v1.Featured/Info"). */
const char *vr_call_method(const vr_call *call);
/* The message size limit, so streaming handlers can chunk under it. */
size_t vr_call_max_message(const vr_call *call);
/* The core call, e.g. to inspect auth context. */
grpc_call *vr_call_grpc(vr_call *call);
/* Ends a detached call (see VR_DETACHED) from the thread that now owns
 * it: sends the kept response (if code is OK) and the status, waits,
 * logs and frees the call. code as a handler's return value. */
void vr_call_finish(vr_call *call, int code);

/* ---- client ------------------------------------------------------------- */

typedef struct vr_channel_opts {
	const char *tls_root_file;   /* PEM roots to verify the server; NULL: insecure */
	const char *tls_server_name; /* name to check in the certificate; NULL: the target's host */
	const char *token;           /* sent as "authorization: Bearer <token>" */
	const char *shard_map;       /* sent as "visrec-shard-map: <it>": the tag of the
				      * featured shard map (shardmap.h); NULL: none */
	size_t max_message_bytes;    /* receive and send limit; 0 = 4 MiB */
} vr_channel_opts;

typedef struct vr_status {
	int code;          /* grpc_status_code */
	char message[256];
} vr_status;

/* Creates a channel to target ("host:port"); it connects lazily. opts may
 * be NULL (insecure, no token). Errors: VR_EINVAL, -errno reading the
 * root file, VR_ENOMEM. */
int vr_channel_create(vr_channel **out, const char *target, const vr_channel_opts *opts);
/* Frees the channel; its calls must be finished. NULL is allowed. */
void vr_channel_destroy(vr_channel *ch);
/* 1 if connected now. try_connect starts connecting when idle. */
int vr_channel_connected(vr_channel *ch, int try_connect);

/* One unary call. deadline_ms 0 = none. parent (a server call or NULL)
 * passes on its deadline and cancellation. On success *resp is yours.
 * Returns 0, VR_ERPC when the status is not OK (st says which and why),
 * VR_EINVAL for a response that does not unpack (st: INTERNAL),
 * VR_ETOOBIG for a request over the limit, VR_ENOMEM. st may be NULL. */
int vr_client_unary(vr_channel *ch, const char *path, const ProtobufCMessage *req,
		    const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
		    int64_t deadline_ms, vr_call *parent, vr_status *st);

/* A streaming client call (any kind), used by one thread at a time.
 * Start, send/recv as the method allows, close_send, then always finish
 * (which frees it). Errors of send/recv: VR_ERPC (the call ended; finish
 * says why), VR_EEOF (recv: end of the server's stream), VR_EINVAL
 * (recv: bad bytes), VR_ETOOBIG, VR_ENOMEM, VR_ESTATE (misuse). */
int vr_ccall_start(vr_ccall **out, vr_channel *ch, const char *path,
		   const ProtobufCMessageDescriptor *resp_desc, int64_t deadline_ms,
		   vr_call *parent);
int vr_ccall_send(vr_ccall *cc, const ProtobufCMessage *msg);
int vr_ccall_close_send(vr_ccall *cc);
int vr_ccall_recv(vr_ccall *cc, ProtobufCMessage **msg);
/* Cancels the call; any thread may call it while another uses cc. A
 * call whose recv already returned VR_EEOF or VR_ERPC has ended: cancelling
 * it then makes vr_ccall_finish report CANCELLED instead of the server's
 * status (a refusal's reason would be lost). */
void vr_ccall_cancel(vr_ccall *cc);
/* Waits for the server's status (cancel first to abandon a call the
 * server is still serving), fills st (may be NULL), frees cc. Returns 0
 * when the status is OK, else VR_ERPC. */
int vr_ccall_finish(vr_ccall *cc, vr_status *st);

#endif
