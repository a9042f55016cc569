/*
 * lavaflow collectives: barrier, broadcast, reduce, allreduce, allgather and
 * alltoall over the whole world of a context, or over a group of its ranks
 * (lf_group_t, the `_g` forms; included by lavaflow.h).
 *
 * Semantics (as MPI's, over every rank of the context):
 *  - Every rank calls the same collectives in the same order, with matching
 *    arguments (count, dtype, op, root, sizes). A collective carries a
 *    sequence number and a signature of its arguments in every message, so
 *    ranks that disagree get LF_ERR_INVALID_ARG ("collective mismatch ...")
 *    on the rank that notices, and the others an error (LF_ERR_PEER_GONE or
 *    LF_ERR_CLOSED) instead of a hang.
 *  - Collectives use channels of their own, opened on the first collective
 *    call (which every rank therefore makes collectively): they never match
 *    the application's point-to-point messages, and the application's
 *    messages never match theirs. Channels the application opens to the same
 *    peers must be opened in the same order relative to that first call on
 *    both sides, as for any two channels to one peer.
 *  - A rank that exits or is killed makes every pending and later collective
 *    on the surviving ranks fail with LF_ERR_PEER_GONE.
 *  - After a collective failed on a context (mismatch, dead peer), every
 *    later collective on it returns the same error: the collective channels
 *    are closed so that no rank waits on a peer that gave up.
 *  - Counts are 64-bit (size_t); a count of 0 is valid and still
 *    synchronises as the collective would.
 *  - LF_IN_PLACE as the send pointer: the input is taken from (and the
 *    result written to) the receive buffer (lf_reduce: at the root; other
 *    ranks then read their input from `recv` and leave it unchanged).
 *  - Reductions are exact for the integer types (wrapping on overflow) and
 *    follow IEEE 754 for the float types; a NaN anywhere in an element's
 *    inputs makes that element NaN for every op (LF_MIN and LF_MAX too).
 *    Every rank receives the same bits.
 *
 * Algorithms: recursive doubling (small allreduce) and ring reduce-scatter +
 * allgather (large allreduce) over channels, single copy for large
 * allreduce on one host, hierarchical allreduce (within each host, across
 * host leaders, within each host) for ranks on several hosts, binomial trees
 * for bcast and reduce, dissemination barrier, ring allgather, pairwise
 * alltoall. The choice is logged (LF_LOG_LEVEL=debug) and
 * LF_COLL_ALGO=ring|rd|cma|hier|auto forces the allreduce algorithm; it must
 * be the same on every rank. See docs/collectives.md.
 *
 * Threading: collectives of one group (the world is one) are not reentrant
 * across threads: a program calls them from one thread at a time, in the
 * same order on every member (as MPI requires). Collectives of different
 * groups may run concurrently from different threads. A non-blocking collective runs on a helper thread
 * of the context (started on the first one) and completes its request, which
 * lf_wait, lf_test, lf_wait_timeout, lf_waitall and lf_waitany complete and
 * free like any other; lf_cancel has no effect on it. A blocking collective
 * called while non-blocking ones are pending runs after them, in call order.
 * The buffers of a non-blocking collective must stay valid and untouched
 * until its request completes.
 */
#ifndef LAVAFLOW_LAVAFLOW_COLL_H
#define LAVAFLOW_LAVAFLOW_COLL_H

#ifdef __cplusplus
extern "C" {
#endif

/** Element types of reductions. */
typedef enum { LF_INT8, LF_UINT8, LF_INT32, LF_UINT32, LF_INT64, LF_UINT64, LF_FLOAT32, LF_FLOAT64 } lf_dtype_t;

/** Reduction operators. */
typedef enum { LF_SUM, LF_PROD, LF_MIN, LF_MAX } lf_op_t;

/** Send pointer meaning "the input is already in the receive buffer". */
#define LF_IN_PLACE ((const void *)1)

/** Size in bytes of one element of `dt`; 0 for an unknown type. */
size_t lf_dtype_size(lf_dtype_t dt);

/**
 * Copy `bytes` from `buf` at rank `root` into `buf` at every other rank.
 * Errors: LF_ERR_INVALID_ARG (bad root, NULL buf with bytes > 0, a
 * mismatch), LF_ERR_PEER_GONE, LF_ERR_CLOSED.
 */
lf_status_t lf_bcast(lf_context_t ctx, void *buf, size_t bytes, int root);

/**
 * Combine `count` elements of every rank's `send` with `op` into `recv` at
 * `root` (`recv` is ignored elsewhere and may be NULL).
 */
lf_status_t lf_reduce(lf_context_t ctx, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op,
                      int root);

/** Combine `count` elements of every rank's `send` with `op` into every rank's `recv`. */
lf_status_t lf_allreduce(lf_context_t ctx, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op);

/**
 * Gather `bytes_per_rank` bytes from every rank: rank i's `send` lands at
 * recv + i * bytes_per_rank on every rank (`recv` holds size * bytes_per_rank).
 * With LF_IN_PLACE the caller's block is already at its place in `recv`.
 */
lf_status_t lf_allgather(lf_context_t ctx, const void *send, size_t bytes_per_rank, void *recv);

/**
 * Exchange blocks: block j of rank i's `send` (send + j * bytes_per_rank)
 * lands as block i of rank j's `recv`. With LF_IN_PLACE the blocks are taken
 * from `recv` and replaced there.
 */
lf_status_t lf_alltoall(lf_context_t ctx, const void *send, size_t bytes_per_rank, void *recv);

/** Start a barrier; *req completes once every rank has entered it. */
lf_status_t lf_ibarrier(lf_context_t ctx, lf_request_t *req);

/** Start lf_bcast; *req completes when `buf` holds the root's bytes. */
lf_status_t lf_ibcast(lf_context_t ctx, void *buf, size_t bytes, int root, lf_request_t *req);

/** Start lf_allreduce; *req completes when `recv` holds the result. */
lf_status_t lf_iallreduce(lf_context_t ctx, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op,
                          lf_request_t *req);

/* ------------------------------------------------------------------------ */
/* Groups: collectives over a subset of the ranks                            */
/* ------------------------------------------------------------------------ */

/**
 * A group of ranks of one context. Group rank i is the world rank ranks[i]
 * given to lf_group_create. Every collective above has a `_g` form that runs
 * over a group's members only, with the same semantics as over the world
 * (roots are group ranks; allgather and alltoall blocks are in group rank
 * order). The whole-world calls are the world group's.
 *
 * Isolation: each group has channels of its own between its members, so
 * collectives of different groups, overlapping ones included, never take
 * each other's messages (nor the application's, nor the world's), and may
 * run at the same time from different threads. Within one group the rules
 * above hold: one thread at a time, the same order on every member.
 *
 * Mismatches: every message of a group's collective also carries the
 * group's identity (a hash of its member list). Members that pass different
 * lists to lf_group_create, or that create the groups they share in
 * different orders, get LF_ERR_INVALID_ARG ("group mismatch ...") from
 * lf_group_create, or, where a listed rank never creates the group, an
 * error once LF_CONNECT_TIMEOUT passes; never a hang.
 */
typedef struct lf_group *lf_group_t;

/**
 * Make a group of the `n` distinct world ranks in `ranks` (in group rank
 * order). For a member this is a collective call over the members: each
 * opens channels to the others and they check that they agree on the list,
 * so every member calls it with the same list, and members create the
 * groups they share in the same order (calls on one context are serialised
 * inside the library; from several threads, the order between them is the
 * caller's to keep). A rank not in `ranks` may call it too, without
 * communicating: it gets a handle whose collectives fail with
 * LF_ERR_INVALID_ARG and whose lf_group_rank is -1.
 * Errors: LF_ERR_INVALID_ARG (NULL ranks or out, n outside 1..world size, a
 * rank out of range or listed twice, a group mismatch), LF_ERR_PEER_GONE,
 * LF_ERR_TIMEOUT (a member never came), LF_ERR_CLOSED (finalized context).
 */
lf_status_t lf_group_create(lf_context_t ctx, const int *ranks, int n, lf_group_t *out);

/**
 * Free a group. For a member this is collective over the members (a barrier
 * first, so that no member closes channels a peer still reads), unless the
 * group already failed; non-blocking collectives still queued fail with
 * LF_ERR_CLOSED. The handle is freed even when the barrier fails (the
 * error is then returned). NULL is a no-op. lf_finalize shuts down the
 * context's groups (their collectives then fail with LF_ERR_CLOSED); their
 * handles still need lf_group_free.
 */
lf_status_t lf_group_free(lf_group_t g);

/** The caller's rank in the group; -1 when it is not a member, or for a bad handle (see lf_last_error()). */
int lf_group_rank(lf_group_t g);

/** The number of ranks in the group; -1 for a bad handle. */
int lf_group_size(lf_group_t g);

/**
 * Group forms of the collectives above. A bad or freed handle, or a caller
 * that is not a member, gives LF_ERR_INVALID_ARG with a reason; other errors
 * are those of the world forms.
 */
lf_status_t lf_barrier_g(lf_group_t g);
lf_status_t lf_bcast_g(lf_group_t g, void *buf, size_t bytes, int root);
lf_status_t lf_reduce_g(lf_group_t g, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op, int root);
lf_status_t lf_allreduce_g(lf_group_t g, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op);
lf_status_t lf_allgather_g(lf_group_t g, const void *send, size_t bytes_per_rank, void *recv);
lf_status_t lf_alltoall_g(lf_group_t g, const void *send, size_t bytes_per_rank, void *recv);
lf_status_t lf_ibarrier_g(lf_group_t g, lf_request_t *req);
lf_status_t lf_ibcast_g(lf_group_t g, void *buf, size_t bytes, int root, lf_request_t *req);
lf_status_t lf_iallreduce_g(lf_group_t g, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op,
                            lf_request_t *req);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LAVAFLOW_LAVAFLOW_COLL_H */
