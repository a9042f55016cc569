/*
 * lavaflow file ingest: a file, or a byte range of it, read in chunks into
 * buffers of a lavaflow pool, handed to the caller (lf_ingest_next) or sent
 * chunk by chunk to a peer rank (lf_ingest_send). Included by lavaflow.h.
 *
 * How it reads (lf_ingest_path_taken says which, and why):
 *  - io_uring, queue_depth reads in flight, into the chunk buffers registered
 *    once (io_uring_register_buffers, READ_FIXED); a registration the
 *    memory-lock limit (RLIMIT_MEMLOCK) refuses gives unregistered reads;
 *  - without io_uring (an old kernel, seccomp, a build without liburing) one
 *    pread thread reads ahead instead;
 *  - params.direct = 1 asks for O_DIRECT; a filesystem that refuses it
 *    (tmpfs), an offset not aligned to 4 KiB or unaligned chunk memory gives
 *    buffered reads instead.
 * Short reads are read again for the rest; no single read or registered
 * buffer piece exceeds 1 GiB (LF_INGEST_MAX_IO), the kernel's cap.
 *
 * Memory: a ring of ring_chunks chunks. A chunk holds its place from the
 * moment its read is issued until it is freed (lf_free by the caller, or the
 * channel and the peer once sent), so the memory never exceeds ring_chunks ×
 * chunk (rounded up to a power of two), and a caller that keeps its chunks
 * stalls the reads instead of growing.
 *
 * Memory kinds: host, host-numa, host-hugepage, host-pinned, host-shared and
 * Vulkan host-visible chunks are read into directly (a kind that is not
 * available falls back as lf_alloc does; lf_buffer_fallback_reason says why).
 * CUDA and Vulkan device kinds are read into pinned memory and copied into a
 * device chunk; where no such device is present lf_ingest_open fails with
 * LF_ERR_UNAVAILABLE and the reason.
 *
 * Tunables (environment, lf-info -c): LF_INGEST_CHUNK, LF_INGEST_QUEUE_DEPTH,
 * LF_INGEST_RING_CHUNKS (defaults for the 0 fields), LF_INGEST_ENGINE
 * (auto, io_uring, pread), LF_INGEST_REGISTER, LF_INGEST_MAX_IO.
 *
 * Threading: lf_ingest_next and lf_ingest_send run on one thread at a time
 * per ingest (a second one meanwhile gets LF_ERR_INVALID_ARG);
 * lf_ingest_cancel, lf_ingest_path_taken and lf_ingest_stats may come from
 * any thread at any time; different ingests are independent. Chunks may be
 * freed from any thread.
 */
#ifndef LAVAFLOW_LAVAFLOW_INGEST_H
#define LAVAFLOW_LAVAFLOW_INGEST_H

#include "lavaflow/lavaflow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lf_ingest *lf_ingest_t;

/** Options for lf_ingest_open. Initialise with LF_INGEST_PARAMS_INIT. */
typedef struct {
  size_t size;           /**< sizeof(lf_ingest_params_t). */
  lf_memory_kind_t kind; /**< Kind of the chunk buffers. */
  size_t chunk_bytes;    /**< Bytes per chunk (the last may be shorter); 0: LF_INGEST_CHUNK (1 MiB). At most 4 GiB. */
  int queue_depth;       /**< Reads in flight (io_uring); 0: LF_INGEST_QUEUE_DEPTH (8). Capped at ring_chunks. */
  int direct;            /**< 1: O_DIRECT (falls back to buffered reads with a reason). */
  int ring_chunks; /**< Chunks in flight or held by the consumer; 0: LF_INGEST_RING_CHUNKS, else 2 × queue_depth. */
} lf_ingest_params_t;

#define LF_INGEST_PARAMS_INIT \
  { sizeof(lf_ingest_params_t), LF_MEM_HOST, 0, 0, 0, 0 }

/**
 * Open `path` for reading [offset, offset + length) in chunks; length 0: to
 * the end of the file (as it is now). `ctx` may be NULL (no context needed);
 * `params` may be NULL for the defaults. Nothing is read until the first
 * lf_ingest_next or lf_ingest_send.
 * Errors: LF_ERR_NOT_FOUND (no such file), LF_ERR_INVALID_ARG (a directory,
 * not a regular file or block device, a range past the end, bad params),
 * LF_ERR_IO (no permission, other system errors), LF_ERR_UNAVAILABLE (a
 * device kind without the device; LF_INGEST_ENGINE=io_uring without
 * io_uring).
 */
lf_status_t lf_ingest_open(lf_context_t ctx, const char *path, uint64_t offset, uint64_t length,
                           const lf_ingest_params_t *params, lf_ingest_t *out);

/**
 * lf_ingest_open on a file descriptor the caller already has (and keeps:
 * the ingest reads through a description of its own, so the descriptor's
 * offset and flags are left alone and it may be closed at once).
 * A bad descriptor gives LF_ERR_INVALID_ARG.
 */
lf_status_t lf_ingest_open_fd(lf_context_t ctx, int fd, uint64_t offset, uint64_t length,
                              const lf_ingest_params_t *params, lf_ingest_t *out);

/**
 * The next chunk, in file order: *chunk is a buffer of the chunk's bytes
 * (lf_buffer_size) and *file_offset (if not NULL) where they start in the
 * file. lf_free returns the chunk to the ring. At the end of the range
 * *chunk = NULL and LF_OK. timeout_ms: 0 only looks, negative waits without
 * a deadline.
 * Errors: LF_ERR_TIMEOUT (nothing ready yet; call again: also when every
 * ring chunk is held by the caller), LF_ERR_CANCELLED, LF_ERR_IO (a read
 * failed, or the file shrank while being read: the chunks delivered before
 * are whole and correct; the error stays).
 */
lf_status_t lf_ingest_next(lf_ingest_t in, lf_buffer_t *chunk, uint64_t *file_offset, int64_t timeout_ms);

/**
 * Send the whole range (what lf_ingest_next has not yet delivered) on `ch`,
 * chunk by chunk as each lands, with `tag`, reads overlapping the sends; a
 * zero-byte message with `tag` follows the last chunk. The peer receives
 * the chunks in file order, e.g. with lf_irecv_buffer, until that zero-byte
 * message. With kind LF_MEM_HOST_SHARED on a shared-memory channel each
 * chunk travels as a descriptor of its memory, not a copy, and its ring
 * place frees when the peer frees its view. Returns when every chunk was
 * handed to the channel, every send completed and the peer freed every
 * zero-copy view (so the caller may close the channel or exit at once), or
 * no view was freed for a second (a peer that closed its channel may never
 * send its last releases). On a failure (a read,
 * a broken channel) the zero-byte message is still sent where the channel
 * allows, so the peer does not wait forever; the peer learns the outcome by
 * the bytes it received or from the application.
 */
lf_status_t lf_ingest_send(lf_ingest_t in, lf_channel_t ch, uint64_t tag);

/**
 * How this ingest reads and why, e.g. "io_uring, registered buffers,
 * O_DIRECT" or "pread thread (io_uring unavailable: ...), buffered (O_DIRECT
 * not used: the filesystem refuses O_DIRECT ...)". NULL for a bad handle.
 * Valid until the process exits.
 */
const char *lf_ingest_path_taken(lf_ingest_t in);

/** Counters of an ingest, a snapshot. */
typedef struct {
  size_t size;              /**< sizeof(lf_ingest_stats_t); set by the caller. */
  uint64_t chunks;          /**< Chunks delivered (by lf_ingest_next or lf_ingest_send). */
  uint64_t bytes;           /**< Bytes delivered. */
  uint64_t reads;           /**< Reads submitted, re-reads included. */
  uint64_t fixed_reads;     /**< Of them, into registered buffers (READ_FIXED). */
  uint64_t rereads;         /**< Reads for the rest of a chunk: short reads, EINTR, pieces past 1 GiB. */
  uint64_t ring_chunks;     /**< The ring's size. */
  uint64_t ring_high_water; /**< Most chunks ever in flight or held at once (<= ring_chunks). */
  uint64_t chunk_memory;    /**< Bytes of memory per chunk (chunk_bytes rounded up to a power of two). */
  uint64_t ring_held;       /**< Chunks in flight or held now (by the caller, a channel or a peer). */
} lf_ingest_stats_t;

#define LF_INGEST_STATS_INIT \
  { sizeof(lf_ingest_stats_t), 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/** Snapshot of the ingest's counters. */
lf_status_t lf_ingest_stats(lf_ingest_t in, lf_ingest_stats_t *out);

/**
 * Stop reading. Reads in flight complete (none is abandoned while the
 * kernel may still write into its buffer) and their chunks return to the
 * pool; chunks the caller holds stay valid until freed. lf_ingest_next and
 * lf_ingest_send then fail with LF_ERR_CANCELLED. Any thread.
 */
lf_status_t lf_ingest_cancel(lf_ingest_t in);

/**
 * Cancel (as lf_ingest_cancel), wait for a concurrent lf_ingest_next or
 * lf_ingest_send to return, and free the ingest. Chunks the caller still
 * holds stay valid until freed. A closed handle gives LF_ERR_CLOSED.
 */
lf_status_t lf_ingest_close(lf_ingest_t in);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LAVAFLOW_LAVAFLOW_INGEST_H */
