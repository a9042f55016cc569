/*
 * lavaflow request channels: request/response calls over a channel.
 *
 * A client sends requests (method name, a header, a payload) on a channel
 * and waits for exactly one response or error per request; a server runs a
 * registered handler for each request on a pool of its own threads and sends
 * back what the handler responds. Many requests may be in flight on one
 * channel; responses come back in the order handlers finish.
 *
 *   server rank                            client rank
 *   lf_rpc_server_create(2, &s);           lf_rpc_client_create(ch, &c);
 *   lf_rpc_server_register(s, "echo",      lf_rpc_call(c, "echo", hdr, 8, data, n,
 *                          echo, NULL);                100, &r);   // 100 ms deadline
 *   lf_rpc_server_serve(s, ch);            lf_rpc_wait(r, -1);
 *   ... lf_rpc_server_destroy(s);          lf_rpc_response(r, &h, &hl, &p, &pl);
 *                                          lf_rpc_release(r);
 *
 * Semantics
 *  - Exactly one terminal status per request: the handler's response, the
 *    handler's error, LF_ERR_CANCELLED, LF_ERR_TIMEOUT (its deadline passed),
 *    LF_ERR_BUSY (the server's queue was full), LF_ERR_NOT_FOUND (no such
 *    method) or LF_ERR_PEER_GONE (the channel broke). Error texts from the
 *    server arrive with the status and are returned by lf_last_error() after
 *    lf_rpc_wait.
 *  - Deadlines travel as remaining time, so the two clocks need not agree.
 *    The server flips the call's cancel token when the deadline passes; a
 *    call still queued then is answered LF_ERR_TIMEOUT without running. The
 *    client's wait also ends with LF_ERR_TIMEOUT if no answer came by the
 *    deadline plus LF_RPC_DEADLINE_GRACE_MS (a stopped server is not waited
 *    on forever).
 *  - lf_rpc_cancel reaches the server's handler as its cancel token
 *    (lf_rpc_call_cancelled). A cancel that loses the race with completion
 *    reports completion. A call still queued is answered LF_ERR_CANCELLED
 *    without running.
 *  - Payloads are not copied by the rpc layer: the request's and the
 *    response's payload go as the second piece of a gather send
 *    (lf_isend_gather), and the receiver sees them in place in the message
 *    it received.
 *  - The server answers LF_ERR_BUSY past LF_RPC_QUEUE_MAX calls queued or
 *    running, so nothing grows without bound.
 *  - Malformed messages from a peer end that peer's calls with
 *    LF_ERR_PROTOCOL; a server stops serving that channel and keeps serving
 *    the others.
 *
 * Threads: every call may run concurrently with any other. Servers, clients
 * and requests are typed handles: a destroyed, released or made-up handle is
 * refused with LF_ERR_INVALID_ARG. Handlers run on the server's threads and
 * may block; an lf_rpc_call_t is valid only inside its handler, on the
 * handler's thread (elsewhere the lf_rpc_call_* functions refuse it).
 *
 * Wire format and design: docs/rpc.md.
 */
#ifndef LAVAFLOW_LAVAFLOW_RPC_H
#define LAVAFLOW_LAVAFLOW_RPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lf_rpc_server *lf_rpc_server_t;
typedef struct lf_rpc_client *lf_rpc_client_t;
typedef struct lf_rpc_incoming *lf_rpc_call_t;   /**< One request, inside its handler (server side). */
typedef struct lf_rpc_request *lf_rpc_request_t; /**< One request in flight (client side). */

/**
 * A request handler. It reads the call, may call lf_rpc_call_respond once,
 * and returns LF_OK or an error status. Returning without responding sends
 * an empty response (LF_OK) or the error with lf_last_error()'s text if the
 * handler set one through lf_rpc_call_fail.
 */
typedef lf_status_t (*lf_rpc_handler_fn)(lf_rpc_call_t call, void *user);

/* ---- server ---------------------------------------------------------------------- */

/** Create a server with `threads` handler threads (0: 2). It serves nothing until lf_rpc_server_serve. */
lf_status_t lf_rpc_server_create(int threads, lf_rpc_server_t *out);

/**
 * Register `fn` for `method` (1..255 bytes, no NUL). Registering a name
 * twice replaces the handler for requests that arrive afterwards.
 */
lf_status_t lf_rpc_server_register(lf_rpc_server_t s, const char *method, lf_rpc_handler_fn fn, void *user);

/**
 * Register `fn` for `method` to run on the server's receiving thread the
 * moment a request arrives, outside the queue and its LF_RPC_QUEUE_MAX bound:
 * for short, non-blocking answers (health, statistics) that must come back
 * however busy the handler threads are. The handler must not block; while it
 * runs, the server receives nothing else.
 */
lf_status_t lf_rpc_server_register_inline(lf_rpc_server_t s, const char *method, lf_rpc_handler_fn fn, void *user);

/**
 * Serve the requests that arrive on `ch`. The server takes the channel's
 * rpc tag; the application may still use other tags on it. The channel must
 * stay open until lf_rpc_server_destroy. A channel that breaks (its client
 * died) is dropped: its calls' tokens flip and their responses are dropped.
 */
lf_status_t lf_rpc_server_serve(lf_rpc_server_t s, lf_channel_t ch);

/**
 * Stop: flip every running call's cancel token, answer queued calls
 * LF_ERR_CLOSED, wait for running handlers to return, join the threads.
 */
lf_status_t lf_rpc_server_destroy(lf_rpc_server_t s);

/** Method name of the call. */
const char *lf_rpc_call_method(lf_rpc_call_t c);
/** The request's header and payload, in place in the received message (valid during the handler). */
const void *lf_rpc_call_header(lf_rpc_call_t c, size_t *len);
const void *lf_rpc_call_payload(lf_rpc_call_t c, size_t *len);
/** 1 once the call was cancelled by its client, its deadline passed or the server stops; else 0. */
int lf_rpc_call_cancelled(lf_rpc_call_t c);
/** Milliseconds left to the call's deadline (0 when past), or -1 when it has none. */
int64_t lf_rpc_call_remaining_ms(lf_rpc_call_t c);
/**
 * Send the response: `header_len` bytes then `payload_len` bytes, sent
 * without concatenation (the payload must stay valid until this returns).
 * At most once per call: a second call gives LF_ERR_INVALID_ARG.
 */
lf_status_t lf_rpc_call_respond(lf_rpc_call_t c, const void *header, size_t header_len, const void *payload,
                                size_t payload_len);
/** Answer with an error: `status` (< 0) and a text the client reads through lf_last_error(). At most once. */
lf_status_t lf_rpc_call_fail(lf_rpc_call_t c, lf_status_t status, const char *message);

/* ---- client ---------------------------------------------------------------------- */

/** A client that calls the server at the other end of `ch` (the channel must stay open until destroy). */
lf_status_t lf_rpc_client_create(lf_channel_t ch, lf_rpc_client_t *out);

/** Destroy: requests still in flight complete with LF_ERR_CLOSED (they must still be released). */
lf_status_t lf_rpc_client_destroy(lf_rpc_client_t c);

/**
 * Start a call of `method` with a header and a payload (either may be
 * empty), both borrowed until the request completes. `deadline_ms` > 0
 * bounds the call; 0 means none. Fails at once with LF_ERR_PEER_GONE when
 * the channel is broken.
 */
lf_status_t lf_rpc_call(lf_rpc_client_t c, const char *method, const void *header, size_t header_len,
                        const void *payload, size_t payload_len, int64_t deadline_ms, lf_rpc_request_t *out);

/**
 * Wait up to `timeout_ms` (-1: until the request completes; 0: test). Returns
 * LF_IN_PROGRESS when the timeout passed first (the request stays valid),
 * else the request's terminal status (see Semantics), which every later
 * wait returns again.
 */
lf_status_t lf_rpc_wait(lf_rpc_request_t r, int64_t timeout_ms);

/**
 * The response of a request that completed with LF_OK: pointers into the
 * received message, valid until lf_rpc_release. Any of the out-pointers may
 * be NULL.
 */
lf_status_t lf_rpc_response(lf_rpc_request_t r, const void **header, size_t *header_len, const void **payload,
                            size_t *payload_len);

/** Ask the server to cancel; LF_OK for a valid request (the outcome comes through lf_rpc_wait). */
lf_status_t lf_rpc_cancel(lf_rpc_request_t r);

/**
 * Free the request and its response. A request still in flight is
 * cancelled first; its response, when it comes, is dropped.
 */
lf_status_t lf_rpc_release(lf_rpc_request_t r);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LAVAFLOW_LAVAFLOW_RPC_H */
