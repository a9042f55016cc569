/*
 * lavaflow: zero-copy communication for multi-process HPC and AI jobs.
 *
 * This header is the library's one stable ABI. Conventions:
 *  - Every call that can fail returns an lf_status_t: LF_OK (0), LF_IN_PROGRESS
 *    (1) or a negative LF_ERR_* code. On failure lf_last_error() returns a
 *    readable description of what went wrong on the calling thread.
 *  - Handles are opaque pointers. Out-parameters come last and are written
 *    only when the call succeeds.
 *  - Parameter structs begin with a `size` member and have an _INIT macro so
 *    that they can grow without breaking callers compiled against older
 *    headers. Always initialise them with the macro.
 *  - No call crashes on bad input: NULL handles, out-of-range ranks, closed
 *    or finalized handles, a handle of the wrong type (a request passed as a
 *    channel) and absurd sizes are reported as errors.
 *
 * Threading (like MPI_THREAD_MULTIPLE): any call may come from any thread.
 *  - Calls on different channels are independent and do not serialise on
 *    each other; one thread per peer, each on its own channel, is the
 *    intended pattern and needs no progress thread.
 *  - Calls on one channel are safe from several threads (one sending while
 *    another receives, say). Messages keep their per-tag order as posted;
 *    the order between two threads' posts is whatever order they reached
 *    the channel in.
 *  - A request is waited or tested by one thread at a time: a second thread
 *    calling lf_wait/lf_test/lf_wait_timeout on it meanwhile gets
 *    LF_ERR_INVALID_ARG, never a second completion. lf_cancel may come from
 *    any thread at any time.
 *  - Closing a channel or finalizing a context while other threads use it
 *    makes their calls fail with LF_ERR_CLOSED; it never frees memory they
 *    still use.
 */
#ifndef LAVAFLOW_LAVAFLOW_H
#define LAVAFLOW_LAVAFLOW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status                                                                   */
/* ------------------------------------------------------------------------ */

/** Result of a call: 0 ok, 1 in progress, negative errors. */
typedef int32_t lf_status_t;

#define LF_OK 0                 /**< Success. */
#define LF_IN_PROGRESS 1        /**< Operation started, not yet complete. */
#define LF_ERR_INVALID_ARG (-1) /**< A NULL pointer, bad handle or out-of-range value. */
#define LF_ERR_NO_MEMORY (-2)   /**< Allocation failed or a pool cap was reached. */
#define LF_ERR_UNSUPPORTED (-3) /**< Not supported by this build or transport. */
#define LF_ERR_UNAVAILABLE (-4) /**< Supported, but not available on this machine now. */
#define LF_ERR_PEER_GONE (-5)   /**< The peer process exited or its connection broke. */
#define LF_ERR_TIMEOUT (-6)     /**< A deadline passed (bootstrap, connect). */
#define LF_ERR_TRUNCATED (-7)   /**< Receive buffer smaller than the message. */
#define LF_ERR_CLOSED (-8)      /**< Handle already closed, finalized or consumed. */
#define LF_ERR_IO (-9)          /**< A system call failed. */
#define LF_ERR_PROTOCOL (-10)   /**< Malformed data arrived from a peer. */
#define LF_ERR_INTERNAL (-11)   /**< A bug in lavaflow; please report it. */
#define LF_ERR_NOT_FOUND (-12)  /**< A named item (transport, tunable, file) does not exist. */
#define LF_ERR_CANCELLED (-13)  /**< The request was cancelled (lf_cancel) before it completed. */
#define LF_ERR_BUSY (-14)       /**< A bounded queue or memory cap is full; try again later. */

/** Static name of a status code, e.g. "LF_ERR_PEER_GONE". Never NULL. */
const char *lf_status_string(lf_status_t status);

/**
 * Detail of the last failure on the calling thread ("" if none). The string
 * stays valid until the next failing lavaflow call on this thread.
 */
const char *lf_last_error(void);

/** Library version, e.g. "0.1.0". */
const char *lf_version(void);

/* ------------------------------------------------------------------------ */
/* Context: bootstrap, ranks, scope                                         */
/* ------------------------------------------------------------------------ */

typedef struct lf_context *lf_context_t;

/** Where a peer runs relative to the caller. */
typedef enum {
  LF_SCOPE_INVALID = -1, /**< Bad context or rank; see lf_last_error(). */
  LF_SCOPE_SELF = 0,     /**< The same process. */
  LF_SCOPE_LOCAL = 1,    /**< Same host, and memory can be shared. */
  LF_SCOPE_REMOTE = 2    /**< Memory cannot be shared: another host, kernel or namespace. */
} lf_scope_t;

/**
 * Join the world of ranks described by the launcher's environment:
 *  - under mpirun/mpiexec (Open MPI) rank and size come from MPI;
 *  - otherwise LF_RANK, LF_SIZE and LF_BOOTSTRAP (tcp://host:port served by
 *    rank 0, or unix:/path) describe it; bootstrap fails with LF_ERR_TIMEOUT
 *    after LF_BOOTSTRAP_TIMEOUT seconds when a rank never arrives;
 *  - with neither, the process is a world of one rank.
 */
lf_status_t lf_init(lf_context_t *ctx);

/** Leave the world and free the context. Channels still open are closed. */
lf_status_t lf_finalize(lf_context_t ctx);

/** This process's rank, or -1 for a bad context. */
int lf_rank(lf_context_t ctx);

/** Number of ranks in the world, or -1 for a bad context. */
int lf_size(lf_context_t ctx);

/** Block until every rank has entered the barrier. */
lf_status_t lf_barrier(lf_context_t ctx);

/** Scope between the caller and `peer`; LF_SCOPE_INVALID on bad input. */
lf_scope_t lf_scope(lf_context_t ctx, int peer);

/** Static name of a scope: "self", "local", "remote" or "invalid". */
const char *lf_scope_string(lf_scope_t scope);

/**
 * One line that explains lf_scope(ctx, peer), e.g. "same host, same IPC
 * namespace: local". Written NUL-terminated into buf (truncated to len).
 */
lf_status_t lf_scope_explain(lf_context_t ctx, int peer, char *buf, size_t len);

/**
 * Location of `rank` as a JSON object (hostname, boot id, namespaces, NUMA
 * node, CPU set, GPUs). Written NUL-terminated into buf (truncated to len);
 * *needed (if not NULL) receives the full length including the NUL.
 */
lf_status_t lf_location_json(lf_context_t ctx, int rank, char *buf, size_t len, size_t *needed);

/* ------------------------------------------------------------------------ */
/* Layer 1: memory                                                          */
/* ------------------------------------------------------------------------ */

typedef struct lf_buffer *lf_buffer_t;

/** Kinds of memory the allocator can provide. */
typedef enum {
  LF_MEM_HOST = 0,                /**< Aligned host memory. */
  LF_MEM_HOST_NUMA = 1,           /**< Host memory bound to a NUMA node. */
  LF_MEM_HOST_HUGEPAGE = 2,       /**< hugetlbfs pages (or THP when none are reserved). */
  LF_MEM_HOST_PINNED = 3,         /**< Page-locked host memory (CUDA-registered or mlock). */
  LF_MEM_HOST_SHARED = 4,         /**< memfd-backed host memory another process can map. */
  LF_MEM_CUDA_DEVICE = 5,         /**< CUDA device memory. */
  LF_MEM_VULKAN_DEVICE = 6,       /**< Vulkan DEVICE_LOCAL memory, exportable as an fd. */
  LF_MEM_VULKAN_HOST_VISIBLE = 7, /**< Vulkan HOST_VISIBLE memory, exportable as an fd. */
  LF_MEM_KIND_COUNT_ = 8
} lf_memory_kind_t;

/** Static name of a memory kind, e.g. "host-shared"; "invalid" for bad values. */
const char *lf_memory_kind_string(lf_memory_kind_t kind);

/** Options for lf_alloc_ex. Initialise with LF_ALLOC_PARAMS_INIT. */
typedef struct {
  size_t size;      /**< sizeof(lf_alloc_params_t). */
  int numa_node;    /**< NUMA node for LF_MEM_HOST_NUMA; -1 = the caller's node. */
  int device;       /**< GPU index for CUDA/Vulkan kinds. */
  size_t alignment; /**< Power of two; 0 = the kind's default. */
  int strict;       /**< Non-zero: fail with LF_ERR_UNAVAILABLE instead of falling back. */
} lf_alloc_params_t;

#define LF_ALLOC_PARAMS_INIT \
  { sizeof(lf_alloc_params_t), -1, 0, 0, 0 }

/**
 * Allocate `bytes` of memory of `kind`. When the kind is unavailable the
 * allocator falls back along the documented chain (docs/memory.md) and the
 * buffer reports the kind it really is and why (lf_buffer_fallback_reason).
 * `ctx` may be NULL (no context needed for allocation).
 */
lf_status_t lf_alloc(lf_context_t ctx, size_t bytes, lf_memory_kind_t kind, lf_buffer_t *out);

/** lf_alloc with options; `params` may be NULL for the defaults. */
lf_status_t lf_alloc_ex(lf_context_t ctx, size_t bytes, lf_memory_kind_t kind, const lf_alloc_params_t *params,
                        lf_buffer_t *out);

/**
 * Release a buffer: memory from a pool returns to its pool, a received
 * zero-copy view returns to the sender's pool, anything else is freed.
 * Freeing the same buffer twice is undefined in C generally; lavaflow detects
 * it where it can and returns LF_ERR_CLOSED.
 */
lf_status_t lf_free(lf_buffer_t buf);

/** Host pointer to the buffer's memory; NULL for device-only memory or a bad handle. */
void *lf_buffer_data(lf_buffer_t buf);

/** Size in bytes (0 for a bad handle). */
size_t lf_buffer_size(lf_buffer_t buf);

/** The kind actually obtained (after any fallback); -1 cast for a bad handle. */
lf_memory_kind_t lf_buffer_kind(lf_buffer_t buf);

/** The kind that was asked for. */
lf_memory_kind_t lf_buffer_requested_kind(lf_buffer_t buf);

/** Why the buffer is not of the kind asked for; "" when it is. Valid until the process exits. */
const char *lf_buffer_fallback_reason(lf_buffer_t buf);

/** NUMA node the memory really lives on (-1 if unknown or device memory). */
int lf_buffer_numa_node(lf_buffer_t buf);

/** Alignment of lf_buffer_data in bytes. */
size_t lf_buffer_alignment(lf_buffer_t buf);

/** Pool presets: sizing policies for lf_pool_create. */
typedef enum {
  LF_POOL_DEFAULT = 0,         /**< 256 B..64 MiB classes, 1 GiB cap, nothing preallocated. */
  LF_POOL_HIGH_THROUGHPUT = 1, /**< 4 KiB..256 MiB classes, 4 GiB cap, preallocated. */
  LF_POOL_LOW_MEMORY = 2       /**< 64 B..4 MiB classes, 64 MiB cap, small free lists. */
} lf_pool_preset_t;

typedef struct lf_pool *lf_pool_t;

/** Options for lf_pool_create. Initialise with LF_POOL_PARAMS_INIT. */
typedef struct {
  size_t size;             /**< sizeof(lf_pool_params_t). */
  lf_memory_kind_t kind;   /**< Kind of every buffer in the pool. */
  lf_pool_preset_t preset; /**< Defaults for the fields left 0 below. */
  size_t min_class;        /**< Smallest size class (power of two), 0 = preset. */
  size_t max_class;        /**< Largest size class (power of two), 0 = preset. */
  size_t cap_bytes;        /**< Never hold more than this (in use + cached), 0 = preset. */
  int strict;              /**< As lf_alloc_params_t.strict. */
} lf_pool_params_t;

#define LF_POOL_PARAMS_INIT \
  { sizeof(lf_pool_params_t), LF_MEM_HOST, LF_POOL_DEFAULT, 0, 0, 0, 0 }

/** Pool statistics, a snapshot. */
typedef struct {
  size_t size;      /**< sizeof(lf_pool_stats_t); set by the caller. */
  uint64_t hits;    /**< Acquires served from a free list. */
  uint64_t misses;  /**< Acquires that had to allocate. */
  uint64_t returns; /**< Buffers given back and kept. */
  uint64_t drops;   /**< Buffers given back and freed (list full or over cap). */
  uint64_t in_use_buffers;
  uint64_t in_use_bytes;
  uint64_t pooled_bytes; /**< Bytes cached in free lists. */
  double hit_rate;       /**< hits / (hits + misses), 0 when none. */
} lf_pool_stats_t;

#define LF_POOL_STATS_INIT \
  { sizeof(lf_pool_stats_t), 0, 0, 0, 0, 0, 0, 0, 0.0 }

/** Create a thread-safe size-class pool. */
lf_status_t lf_pool_create(lf_context_t ctx, const lf_pool_params_t *params, lf_pool_t *out);

/** Take a buffer of at least `bytes` (lf_buffer_size reports `bytes`). lf_free returns it. */
lf_status_t lf_pool_acquire(lf_pool_t pool, size_t bytes, lf_buffer_t *out);

/** Snapshot of the pool's counters. */
lf_status_t lf_pool_stats(lf_pool_t pool, lf_pool_stats_t *out);

/** Destroy a pool. Buffers still in use stay valid and are freed when released. */
lf_status_t lf_pool_destroy(lf_pool_t pool);

/**
 * The context's shared pool (LF_MEM_HOST_SHARED): buffers taken from it are
 * sent without a copy over shared-memory channels (lf_isend_buffer).
 */
lf_status_t lf_shared_pool(lf_context_t ctx, lf_pool_t *out);

struct DLManagedTensor;

/**
 * Export `buf` as a 1-D DLPack tensor of `bytes / (bits/8)` elements of the
 * given DLPack type code and bit width (e.g. kDLFloat=2, 32). Ownership of
 * the buffer moves to the tensor: its deleter releases the buffer (do not
 * lf_free it afterwards). On failure the buffer stays the caller's.
 */
lf_status_t lf_buffer_to_dlpack(lf_buffer_t buf, uint8_t dtype_code, uint8_t dtype_bits, struct DLManagedTensor **out);

/* ------------------------------------------------------------------------ */
/* Layer 2: channels                                                        */
/* ------------------------------------------------------------------------ */

typedef struct lf_channel *lf_channel_t;
typedef struct lf_request *lf_request_t;

/** Receive tag that matches any message. */
#define LF_ANY_TAG UINT64_MAX

/** Options for lf_channel_open_ex. Initialise with LF_CHANNEL_PARAMS_INIT. */
typedef struct {
  size_t size;                  /**< sizeof(lf_channel_params_t). */
  const char *transports;       /**< As LF_TRANSPORTS ("shm,tcp", "^mpi"); NULL = environment. */
  int strict;                   /**< Non-zero: fail rather than fall back to a lesser transport. */
  lf_memory_kind_t memory_kind; /**< Kind of memory most payloads live in (picks GPU IPC). */
  size_t message_bytes;         /**< Typical message size the transports' costs are compared at; 0 = 64 KiB. */
} lf_channel_params_t;

#define LF_CHANNEL_PARAMS_INIT \
  { sizeof(lf_channel_params_t), NULL, 0, LF_MEM_HOST, 0 }

/**
 * Connect to `peer`. Both ranks must call it (in any order with respect to
 * other channels). The transport is chosen by cost: each transport estimates
 * a message of the channel's typical size and memory kind at the scope
 * between the two ranks, and the cheapest that LF_TRANSPORTS allows and both
 * ranks started wins (lf_channel_reason shows the estimate). Both ranks must
 * pass the same parameters.
 */
lf_status_t lf_channel_open(lf_context_t ctx, int peer, lf_channel_t *out);

/** lf_channel_open with options; `params` may be NULL. */
lf_status_t lf_channel_open_ex(lf_context_t ctx, int peer, const lf_channel_params_t *params, lf_channel_t *out);

/** Close a channel; pending requests complete with LF_ERR_CLOSED. */
lf_status_t lf_channel_close(lf_channel_t ch);

/**
 * Name of the transport this channel uses ("self", "shm", "tcp", "mpi", ...).
 * This string and lf_channel_reason's stay valid after the channel is closed,
 * until the process exits.
 */
const char *lf_channel_transport(lf_channel_t ch);

/**
 * Channels by address, outside the bootstrap world: a long-lived process
 * listens, and processes not launched with it (clients of a service)
 * connect. Addresses: "tcp://HOST:PORT" (port 0: any free port),
 * "unix:/path", "unix:@name" (abstract). Every connection is authenticated
 * before it becomes a channel: a mutual challenge over the secret in
 * LF_EXEC_TOKEN or LF_EXEC_TOKEN_FILE (never sent; required to listen on
 * tcp), and on a unix socket the peer must be the same user or root. Over a
 * unix socket between processes that can share memory the channel is shm
 * (buffers cross by descriptor); otherwise it is lavaflow's tcp framing on
 * the socket. The reason says which and why; lf_channel_peer gives -1.
 * It is closed with lf_channel_close and by lf_finalize like any channel.
 */
typedef struct lf_listener *lf_listener_t;
/** Listen on `address` for `ctx`. */
lf_status_t lf_listen(lf_context_t ctx, const char *address, lf_listener_t *out);
/** The address clients connect to (port filled in), into buf[len]. */
lf_status_t lf_listener_address(lf_listener_t l, char *buf, size_t len);
/**
 * The next client, authenticated, as a channel; LF_ERR_TIMEOUT when none
 * arrived within `timeout_ms` (-1: no limit). A client that arrived gets up
 * to 5 s to finish its handshake, whatever the timeout. A client that fails the handshake
 * gives LF_ERR_PROTOCOL (not lavaflow) or LF_ERR_INVALID_ARG (wrong token,
 * another user) and the listener stays usable. Thread-safe.
 */
lf_status_t lf_accept(lf_listener_t l, int64_t timeout_ms, lf_channel_t *out);
/** Stop listening; channels already accepted stay open. */
lf_status_t lf_listener_close(lf_listener_t l);
/** Connect to the listener at `address` within `timeout_ms` (-1: LF_CONNECT_TIMEOUT). */
lf_status_t lf_connect(lf_context_t ctx, const char *address, int64_t timeout_ms, lf_channel_t *out);

/** One line explaining the choice, e.g. "local scope, same IPC namespace: shm". */
const char *lf_channel_reason(lf_channel_t ch);

/** Peer rank of the channel, -1 for a bad handle. */
int lf_channel_peer(lf_channel_t ch);

/**
 * Start sending `bytes` from `data` with `tag`. The caller must not modify
 * `data` until the request completes. Messages with the same tag on one
 * channel arrive in the order they were sent. A send may complete only once
 * the peer posts a matching receive (mpi does so above its eager limit; shm
 * and tcp buffer up to their unexpected-message caps), so a program must not
 * block on sends in an order its peer does not receive them in.
 */
lf_status_t lf_isend(lf_channel_t ch, const void *data, size_t bytes, uint64_t tag, lf_request_t *req);

/**
 * Gather send: one message of `header_bytes` from `header` followed by
 * `bytes` from `data`, as lf_isend would send the two concatenated, without
 * lavaflow copying them together first (tcp writes both with one sendmsg,
 * shm copies each straight into its ring, mpi sends an hindexed datatype).
 * The receiver sees one message of header_bytes + bytes. Both pieces must be
 * host memory and stay unmodified until the request completes.
 */
lf_status_t lf_isend_gather(lf_channel_t ch, const void *header, size_t header_bytes, const void *data, size_t bytes,
                            uint64_t tag, lf_request_t *req);

/**
 * Start receiving the next message with `tag` (or LF_ANY_TAG) into `data`.
 * A message larger than `capacity` completes with LF_ERR_TRUNCATED and the
 * first `capacity` bytes.
 */
lf_status_t lf_irecv(lf_channel_t ch, void *data, size_t capacity, uint64_t tag, lf_request_t *req);

/**
 * Drive progress; *done = 1 when the request is complete. Does not free it.
 * Returns LF_OK while it is in progress or when it completed successfully,
 * and the request's own failure status (LF_ERR_CANCELLED, LF_ERR_PEER_GONE,
 * ...) once it completed with one.
 */
lf_status_t lf_test(lf_request_t req, int *done);

/**
 * Wait for completion, then free the request. Returns the request's final
 * status; *bytes (if not NULL) receives the bytes sent or received.
 */
lf_status_t lf_wait(lf_request_t req, size_t *bytes);

/** Completion details of a request. */
typedef struct {
  size_t size;          /**< sizeof(lf_completion_t). */
  size_t bytes;         /**< Bytes transferred (received bytes for truncated receives). */
  size_t message_bytes; /**< Full size of the message as sent. */
  uint64_t tag;         /**< Tag of the message (useful with LF_ANY_TAG). */
} lf_completion_t;

#define LF_COMPLETION_INIT \
  { sizeof(lf_completion_t), 0, 0, 0 }

/** lf_wait that also reports the tag and full message size. */
lf_status_t lf_wait_completion(lf_request_t req, lf_completion_t *out);

/** Blocking send. */
lf_status_t lf_send(lf_channel_t ch, const void *data, size_t bytes, uint64_t tag);

/** Blocking receive; *bytes (if not NULL) receives the bytes received. */
lf_status_t lf_recv(lf_channel_t ch, void *data, size_t capacity, uint64_t tag, size_t *bytes);

/**
 * Zero-copy send: hand `buf` over to the channel. Once this call returns
 * LF_OK the buffer belongs to lavaflow; do not touch or free it (if the call
 * fails, e.g. for a closed channel or LF_ANY_TAG, it stays the caller's). When `buf` comes from
 * the shared pool and the channel uses shared memory, only a descriptor is
 * sent; the receiver's view refers to the same physical memory, and when the
 * receiver frees its view the memory returns to this process's pool. A view
 * may outlive the channel on either side: memory still lent when the
 * channel closes stays out of the pool (counted in use by lf_pool_stats)
 * until the receiving process exits, since its view can no longer say when
 * it is done. Other buffers and transports copy, then release `buf` when the
 * send completes.
 */
lf_status_t lf_isend_buffer(lf_channel_t ch, lf_buffer_t buf, uint64_t tag, lf_request_t *req);

/**
 * Start receiving the next message with `tag` as a buffer. Complete it with
 * lf_wait_buffer. The buffer is a view of the sender's memory where the
 * transport allows (zero copy) and a newly allocated buffer otherwise; in
 * both cases lf_free releases it.
 */
lf_status_t lf_irecv_buffer(lf_channel_t ch, uint64_t tag, lf_request_t *req);

/** Wait for an lf_irecv_buffer request, free it, and return the buffer. */
lf_status_t lf_wait_buffer(lf_request_t req, lf_buffer_t *out, lf_completion_t *info);

/**
 * lf_wait_buffer for at most `timeout_ms` (-1: no limit). LF_ERR_TIMEOUT when
 * it passes first: the request stays valid (wait again, or lf_cancel it).
 */
lf_status_t lf_wait_buffer_timeout(lf_request_t req, int64_t timeout_ms, lf_buffer_t *out, lf_completion_t *info);

/**
 * Ask to cancel a request. Returns LF_OK for a live request (and an error for
 * a bad handle); the request's wait then tells the outcome: LF_ERR_CANCELLED
 * if it was cancelled, its normal result if it completed first. A posted
 * receive that has not matched a message is always cancelled, and never
 * swallows a message: a message that arrives later goes to the next matching
 * receive. A send is cancelled only if the transport has not started it
 * (today's transports start every send when it is posted, so a send
 * completes normally). Each request ends with exactly one status.
 */
lf_status_t lf_cancel(lf_request_t req);

/**
 * lf_wait with a deadline: returns LF_ERR_TIMEOUT after `timeout_ms`
 * milliseconds (0: just test; negative: no deadline) and leaves the request
 * valid, to be waited again, tested or cancelled. On completion it frees the
 * request and returns its status, as lf_wait does.
 */
lf_status_t lf_wait_timeout(lf_request_t req, int64_t timeout_ms, size_t *bytes);

/**
 * Wait until one of `n` requests completes; frees that one, sets *index to
 * its position and returns its status (*bytes as lf_wait). NULL entries are
 * skipped; with no non-NULL entry it returns LF_ERR_INVALID_ARG. The others
 * stay valid. On a call error (a bad or busy entry) *index is SIZE_MAX.
 * Requests started by lf_irecv_buffer complete only through lf_wait_buffer;
 * lf_wait, lf_wait_timeout, lf_waitany and lf_waitall refuse them.
 */
lf_status_t lf_waitany(lf_request_t *reqs, size_t n, size_t *index, size_t *bytes);

/**
 * Wait for all `n` requests and free them; NULL entries are skipped, and each
 * entry is set to NULL once freed. Returns LF_OK, or the first failure's
 * status: every request is still waited and freed, except entries that are
 * not waitable here (stale, being waited by another thread, or started by
 * lf_irecv_buffer), which are left as they are.
 */
lf_status_t lf_waitall(lf_request_t *reqs, size_t n);

/**
 * LF_OK while the channel is healthy, else the error that broke it
 * (LF_ERR_PEER_GONE, LF_ERR_PROTOCOL, ...; LF_ERR_CLOSED once closed), with
 * lf_last_error() saying why. Never blocks.
 */
lf_status_t lf_channel_status(lf_channel_t ch);

/** Start (1) or stop (0) a background progress thread for this context. */
lf_status_t lf_progress_thread(lf_context_t ctx, int enable);

#ifdef __cplusplus
} /* extern "C" */
#endif

#include "lavaflow/lavaflow_coll.h"   /* collectives (lf_bcast, lf_allreduce, ...) */
#include "lavaflow/lavaflow_exec.h"   /* remote execution (lf_exec_*, lf_plan_*) */
#include "lavaflow/lavaflow_ingest.h" /* file ingest (lf_ingest_open, lf_ingest_next, lf_ingest_send, ...) */
#include "lavaflow/lavaflow_rpc.h"    /* request channels (lf_rpc_*) */

#endif /* LAVAFLOW_LAVAFLOW_H */
