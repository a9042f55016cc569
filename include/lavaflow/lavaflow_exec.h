/*
 * lavaflow remote execution: ask an execution service to run a plan of
 * tensor operations, then fetch the results.
 *
 *   service (a GPU node)                      client
 *   lf_exec_server_start(ctx, "tcp://0.0.0.0:7000", &s);
 *                                             lf_exec_connect_addr(ctx, "tcp://node:7000", &c);
 *                                             lf_plan_create(&p);
 *                                             lf_plan_input(p, "a", a, shape, 2);
 *                                             lf_plan_input(p, "b", b, shape, 2);
 *                                             lf_plan_op(p, "add", (const char*[]){"a","b"}, 2, "c", "");
 *                                             lf_plan_op(p, "sum", (const char*[]){"c"}, 1, "s", "");
 *                                             lf_plan_output(p, "s");
 *                                             lf_exec_run(c, p, 1000, &j);     // 1 s deadline
 *                                             lf_exec_wait(j, -1);
 *                                             lf_exec_fetch(j, "s", &view);    // read-only
 *                                             lf_free(view); lf_exec_release(j);
 *
 * Model
 *  - A plan is a small graph: named inputs (client buffers sent with the
 *    plan, or results an earlier job left resident on the service), ops with
 *    attributes ("key=value,key=value"), and the names of the outputs to keep.
 *    Tensors are float32, row-major, 0 to 8 dimensions.
 *  - The service validates a plan before anything runs: an unknown op, a
 *    shape mismatch, a cycle, a name defined twice or a missing input fails
 *    the job with LF_ERR_INVALID_ARG and a text naming the op.
 *  - Built-in ops: add, mul (same shapes), scale (attribute factor), sum (to
 *    a scalar, shape []), matmul (2-D, [m,k] x [k,n]). They run as Vulkan
 *    compute shaders on the service's Vulkan device, or on the CPU where
 *    there is none; lf_exec_job_info says where each op ran. A service may
 *    register its own ops (lf_exec_server_register); no code travels from a
 *    client.
 *  - Results stay resident on the service until the job is released. A fetch
 *    gives a read-only view: on the service's host (a same-host connection,
 *    which runs over shared memory) the service's memory itself, mapped
 *    read-only, with no copy; from another host, a copy pulled into a buffer.
 *  - Exactly one terminal status per job, from lf_exec_wait: LF_OK, the
 *    failing op's error, LF_ERR_CANCELLED (lf_exec_cancel), LF_ERR_TIMEOUT
 *    (its deadline passed; the deadline travels as remaining time and the
 *    service's ops stop at their next chunk), LF_ERR_BUSY (the service's
 *    queue or this client's memory cap is full), LF_ERR_PEER_GONE (the
 *    service died or the connection broke), LF_ERR_PROTOCOL. A cancel that
 *    loses the race with completion reports completion.
 *  - Whatever a failed, cancelled or timed-out job left resident is freed; a
 *    client that disconnects or dies has its jobs cancelled and its tensors
 *    freed.
 *
 * Security: a service on tcp accepts only clients that present its secret
 * (LF_EXEC_TOKEN, or the file LF_EXEC_TOKEN_FILE); on a Unix socket the
 * client's uid (SO_PEERCRED) must match. See lf_listen in lavaflow.h.
 *
 * Threads: every function may be called from any thread. Handles are typed:
 * a released or made-up handle is refused with LF_ERR_INVALID_ARG. A plan
 * may be run many times and destroyed once lf_exec_run returned.
 *
 * Tunables: LF_EXEC_WORKERS (worker threads), LF_EXEC_QUEUE_MAX (jobs queued
 * or running per service), LF_EXEC_CLIENT_MEM_MAX (bytes of tensors per
 * client), LF_EXEC_CHUNK (upload batch size, at least 1 MiB).
 * Design, wire format and failure semantics: docs/exec.md.
 */
#ifndef LAVAFLOW_LAVAFLOW_EXEC_H
#define LAVAFLOW_LAVAFLOW_EXEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lf_exec_server *lf_exec_server_t;
typedef struct lf_exec_client *lf_exec_client_t;
typedef struct lf_plan *lf_plan_t;
typedef struct lf_job *lf_job_t;
typedef struct lf_exec_op *lf_exec_op_t; /**< One op invocation, inside a user callback. */

/**
 * A user op. It reads its inputs (lf_exec_op_input), allocates its one output
 * (lf_exec_op_output), writes it, and returns LF_OK or an error status (with
 * a text set through the error it returns, e.g. LF_ERR_INVALID_ARG for bad
 * shapes). Long ops poll lf_exec_op_cancelled and return LF_ERR_CANCELLED.
 * It runs on a service worker thread; `op` is valid only during the call.
 */
typedef lf_status_t (*lf_exec_op_fn)(lf_exec_op_t op, void *user);

/* ---- service ------------------------------------------------------------------------ */

/**
 * Start a service. `listen_addr` ("tcp://HOST:PORT", "unix:/path",
 * "unix:@name"; port 0 picks one) serves clients that connect by address;
 * NULL serves the other ranks of this world (each calls lf_exec_connect with
 * this rank). Over tcp a token is required (LF_EXEC_TOKEN or
 * LF_EXEC_TOKEN_FILE). The built-in ops are registered.
 */
lf_status_t lf_exec_server_start(lf_context_t ctx, const char *listen_addr, lf_exec_server_t *out);

/** The address clients connect to (port resolved), NUL-terminated in `buf`. */
lf_status_t lf_exec_server_address(lf_exec_server_t s, char *buf, size_t len);

/** Register (or replace) op `op_name` (1..63 bytes of [A-Za-z0-9_.-]). */
lf_status_t lf_exec_server_register(lf_exec_server_t s, const char *op_name, lf_exec_op_fn fn, void *user);

/** "cpu" or "vulkan:<device>": where the built-in ops run. Valid until stop. */
const char *lf_exec_server_device(lf_exec_server_t s);

/**
 * Stop: cancel running jobs, close every client (their pending calls fail
 * with LF_ERR_PEER_GONE), free every tensor, join the threads.
 */
lf_status_t lf_exec_server_stop(lf_exec_server_t s);

/** Number of inputs of the op. */
int lf_exec_op_ninputs(lf_exec_op_t op);
/**
 * Input `i` as a buffer owned by the service (do not free it), with its
 * shape; NULL for a bad index.
 */
lf_buffer_t lf_exec_op_input(lf_exec_op_t op, int i, const int64_t **shape, int *ndim);
/** The op's attributes: "" or "key=value,key=value". */
const char *lf_exec_op_attrs(lf_exec_op_t op);
/**
 * Allocate the op's output: float32 of `shape`, owned by the service. Once
 * only. LF_ERR_BUSY when the client's memory cap would be passed.
 */
lf_status_t lf_exec_op_output(lf_exec_op_t op, const int64_t *shape, int ndim, lf_buffer_t *out);
/** 1 once the job is cancelled or past its deadline (or the service stops), else 0. */
int lf_exec_op_cancelled(lf_exec_op_t op);

/* ---- client ------------------------------------------------------------------------- */

/** Connect to the service that rank `server_rank` of this world started with a NULL address. */
lf_status_t lf_exec_connect(lf_context_t ctx, int server_rank, lf_exec_client_t *out);
/** Connect to a service by address (see lf_connect for addresses and authentication). */
lf_status_t lf_exec_connect_addr(lf_context_t ctx, const char *addr, lf_exec_client_t *out);
/**
 * Disconnect: jobs still running are cancelled on the service and their
 * tensors freed; jobs not yet released stay valid handles whose calls fail
 * with LF_ERR_CLOSED (release them). Views already fetched stay readable
 * until lf_free.
 */
lf_status_t lf_exec_disconnect(lf_exec_client_t c);
/**
 * How the client reaches the service: "shm" (same host; results by
 * descriptor), "tcp", ... Valid until the process exits; "" for a bad handle.
 */
const char *lf_exec_client_transport(lf_exec_client_t c);
/**
 * The service's health as JSON: device, ops, jobs queued and running,
 * tensor bytes in use, clients, uptime. Answered by the service's receiving
 * thread, not by a worker, so a busy service still answers at once.
 */
lf_status_t lf_exec_health(lf_exec_client_t c, char *json, size_t len);

/** An empty plan. */
lf_status_t lf_plan_create(lf_plan_t *out);
/**
 * Input `name` from a client buffer of `ndim` dims (float32; the buffer must
 * hold exactly the shape's bytes, and stay valid and unchanged until the job
 * that runs the plan completes).
 */
lf_status_t lf_plan_input(lf_plan_t p, const char *name, lf_buffer_t data, const int64_t *shape, int ndim);
/**
 * Input `name` from output `output` of an earlier job of the same client,
 * still resident on the service (not released). Nothing is sent.
 */
lf_status_t lf_plan_input_resident(lf_plan_t p, const char *name, lf_job_t job, const char *output);
/** Op `op_name` over named inputs, defining tensor `output`; `attrs` may be NULL. */
lf_status_t lf_plan_op(lf_plan_t p, const char *op_name, const char *const *inputs, int ninputs, const char *output,
                       const char *attrs);
/** Keep tensor `name` resident as a result (others are freed when the job ends). */
lf_status_t lf_plan_output(lf_plan_t p, const char *name);
lf_status_t lf_plan_destroy(lf_plan_t p);

/**
 * Send the plan's inputs and the plan, and start the job. `deadline_ms` > 0
 * bounds the whole job (0: none). Problems the client can see (a bad plan
 * shape, a disconnected client) fail here; everything else comes from
 * lf_exec_wait.
 */
lf_status_t lf_exec_run(lf_exec_client_t c, lf_plan_t p, int64_t deadline_ms, lf_job_t *out);
/**
 * Wait up to `timeout_ms` (-1: until the job ends; 0: test). LF_IN_PROGRESS
 * if the timeout passes first; else the job's terminal status (see Model),
 * which every later wait returns again. LF_ERR_TIMEOUT means the job's
 * deadline passed.
 */
lf_status_t lf_exec_wait(lf_job_t j, int64_t timeout_ms);
/**
 * Output `output` of a completed job as a read-only buffer (lf_free releases
 * the view; the result stays resident until lf_exec_release). Writing to the
 * view faults. LF_ERR_NOT_FOUND for a name that is not an output,
 * LF_ERR_CLOSED after release or cancel.
 */
lf_status_t lf_exec_fetch(lf_job_t j, const char *output, lf_buffer_t *view);
/** Shape of output `output` of a completed job (`shape` holds up to 8 entries). */
lf_status_t lf_exec_output_shape(lf_job_t j, const char *output, int64_t *shape, int *ndim);
/**
 * JSON about the job: its status, and for each op where it ran and how long
 * it took, e.g. {"status":0,"ops":[{"op":"add","output":"c","device":"vulkan:llvmpipe","us":12}]}.
 */
lf_status_t lf_exec_job_info(lf_job_t j, char *json, size_t len);
/** Ask the service to cancel; LF_OK for a valid job (the outcome comes through lf_exec_wait). */
lf_status_t lf_exec_cancel(lf_job_t j);
/** Free the job and its resident results (cancelling it first if it still runs). */
lf_status_t lf_exec_release(lf_job_t j);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LAVAFLOW_LAVAFLOW_EXEC_H */
