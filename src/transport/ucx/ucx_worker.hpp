// The ucx transport's per-context state: one ucp context and one ucp worker,
// shared by every channel of a lavaflow context, and the connections (one per
// channel) whose active messages the worker's handler sorts.
//
// Threads: several channels drive the one worker, each under its own mutex,
// while the context's sweep calls Transport::progress() and waiters arm the
// worker's event fd. UCX's worker runs single-threaded and `mu` serialises
// every call into it; the UCX callbacks (active messages, completions, peer
// errors) run inside ucp_worker_progress and therefore under `mu` too. The
// mutex is recursive because a completion may release the last reference to
// a buffer whose registration's deleter unmaps it (ucp_mem_unmap, which
// takes `mu`). Lock order: a channel's mutex, then `mu`.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "transport/transport.hpp"
#include "transport/ucx/ucx_lanes.hpp"
#include "transport/ucx/ucx_wire.hpp"

namespace lf::ucx {

/// Intrusive doubly-linked lists of slots: linking never allocates.
template <class S>
void link(S *&head, S *s) noexcept {
  s->prev = nullptr;
  s->next = head;
  if (head) head->prev = s;
  head = s;
}
template <class S>
void unlink(S *&head, S *s) noexcept {
  if (s->prev)
    s->prev->next = s->next;
  else if (head == s)
    head = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = nullptr;
}

struct Settings {
  size_t rndv_thresh = 16 << 10;
  bool peer_errors = true;
  double keepalive_s = 0.25;
  double linger_s = 1;
  static Settings from_config();
};

/// A message that arrived and was not handed to the channel yet.
struct Arrival {
  enum class Hold : uint8_t { copy, rndv };
  MsgType type = MsgType::data;
  Hold hold = Hold::copy;
  uint64_t seq = 0;
  uint64_t tag = 0;
  size_t size = 0;
  std::unique_ptr<char[]> copy;  ///< eager data, copied out of UCX
  void *desc = nullptr;          ///< rendezvous descriptor, for ucp_am_recv_data_nbx
};

class Worker;
struct Conn;

/// A send UCX still holds (its completion callback's user data).
struct SendSlot {
  SendSlot *prev = nullptr, *next = nullptr;  ///< Conn::sends
  std::shared_ptr<Conn> conn;
  SendOp *op = nullptr;  ///< null once the endpoint gave the op up (closed)
  void *req = nullptr;
  unsigned char header[kHeaderSize] = {};
  ucp_dt_iov_t iov[2] = {};
  RegistrationHandle reg;  ///< the payload's memory registration, for the send's life
};

/// A rendezvous fetch in flight (ucp_am_recv_data_nbx).
struct RecvSlot {
  RecvSlot *prev = nullptr, *next = nullptr;  ///< Conn::recvs
  std::shared_ptr<Conn> conn;
  RecvOp *op = nullptr;  ///< null once the endpoint gave the op up (closed)
  void *req = nullptr;
  uint64_t tag = 0;
  size_t size = 0;
  BufferPtr buffer;               ///< a buffer receive's destination
  std::unique_ptr<char[]> spill;  ///< a truncated receive's whole message
};

/// One channel's connection: the ucp endpoint towards the peer and what
/// arrived from it. Shared by the Endpoint, the unexpected messages it handed
/// to the channel, and UCX callbacks in flight. Guarded by Worker::mu.
struct Conn {
  Conn(std::shared_ptr<Worker> w, int to, uint32_t index) : worker(std::move(w)), peer(to), channel(index) {}
  ~Conn();
  Conn(const Conn &) = delete;
  Conn &operator=(const Conn &) = delete;

  std::shared_ptr<Worker> worker;
  const int peer;
  const uint32_t channel;
  ucp_ep_h ep = nullptr;
  uint64_t send_seq = 0;
  uint64_t recv_next = 0;
  std::deque<Arrival> ready;          ///< in order, for the channel's matcher
  std::map<uint64_t, Arrival> ahead;  ///< arrived before an earlier one
  SendSlot *sends = nullptr;          ///< sends UCX still holds (a list)
  RecvSlot *recvs = nullptr;          ///< rendezvous fetches in flight (a list)
  Error error{LF_OK, {}};             ///< code != LF_OK once broken
  bool broken() const noexcept { return error.code != LF_OK; }
  /// Break the connection (first error wins). Safe inside UCX callbacks.
  /// `fmt` is printf-style; the text is built without throwing.
  void fail(lf_status_t code, const char *fmt, ...) noexcept __attribute__((format(printf, 3, 4)));
  /// Cancel the rendezvous fetches of a broken connection (not from inside
  /// a UCX callback): their ops fail with the connection's error.
  void cancel_fetches() noexcept;
  /// Take an arrival (from the worker's handler), in sequence order.
  void arrive(Arrival &&a) noexcept;
};

class Worker : public std::enable_shared_from_this<Worker> {
 public:
  /// ucp_init + ucp_worker_create with the AM handler installed.
  static Result<std::shared_ptr<Worker>> create(const Settings &s);
  /// The lanes a ucp context would open here (ucp_init and ucp_cleanup, no
  /// worker: no thread, no listening socket), or why UCX cannot run.
  static Result<Lanes> probe(const Settings &s);
  ~Worker();
  Worker(const Worker &) = delete;
  Worker &operator=(const Worker &) = delete;

  std::recursive_mutex mu;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  int efd = -1;
  const Settings settings;
  const Lanes &lanes() const noexcept { return lanes_; }
  const std::string &address() const noexcept { return address_; }  ///< the worker address, binary

  /// Where this worker sits: set once by Transport::start.
  void set_world(int rank, int size) noexcept { rank_ = rank, size_ = size; }
  /// The job token every message carries (ucx_wire.hpp); messages without it are dropped.
  void set_token(uint64_t t) noexcept { token_ = t; }
  uint64_t token() const noexcept { return token_; }
  int rank() const noexcept { return rank_; }

  /// Drive UCX until it has nothing more to do right now (bounded). Under mu.
  void progress_locked() noexcept;
  /// Arrivals queued for channels and not yet taken. Under mu.
  size_t undelivered() const noexcept { return undelivered_; }
  void queued(size_t n) noexcept { undelivered_ += n; }
  void took(size_t n) noexcept { undelivered_ -= n; }

  /// The next channel index towards `peer` (both ranks count alike).
  uint32_t next_channel(int peer);
  /// Route the active messages of (peer, channel) to `c`, handing it any that
  /// came early. Under mu.
  void attach(Conn &c);
  /// Stop routing to `c`; later messages for it are dropped. Under mu.
  void detach(Conn &c) noexcept;
  /// A connection whose endpoint is closing in the background (its flush
  /// outlived the linger time): kept alive until UCX finishes. Under mu.
  void keep_closing(std::shared_ptr<Conn> c, void *close_req);

  /// The transport is going: drop the connections still closing in the
  /// background (they hold the worker). Later calls only release memory.
  void shutdown() noexcept;

  /// Give an arrival's UCX resources back (rendezvous descriptor). Under mu.
  void release(Arrival &a) noexcept;
  /// The first protocol error seen on a message no channel could own.
  Error take_stray_error() noexcept;

 private:
  explicit Worker(const Settings &s) : settings(s) {}
  static ucs_status_t on_am(void *arg, const void *header, size_t header_length, void *data, size_t length,
                            const ucp_am_recv_param_t *param);
  void route(const Header &h, Arrival &&a) noexcept;
  void reap_closing() noexcept;

  Lanes lanes_;
  std::string address_;
  int rank_ = 0;
  int size_ = 1;
  uint64_t token_ = 0;
  size_t undelivered_ = 0;
  std::map<std::pair<int, uint32_t>, Conn *> conns_;
  std::map<std::pair<int, uint32_t>, std::vector<std::pair<Header, Arrival>>> early_;
  std::map<int, uint32_t> counted_;  ///< next_channel() per peer
  std::vector<std::pair<std::shared_ptr<Conn>, void *>> closing_;
  Error stray_{LF_OK, {}};
};

/// What Transport::register_memory hands out: a ucp_mem_map of one unit of
/// memory, unmapped by the handle's deleter (the worker, and with it the ucp
/// context, stays alive until then).
struct MemReg {
  std::shared_ptr<Worker> worker;
  ucp_mem_h memh = nullptr;
};

/// The error of a UCX status, as LF_ERR_PEER_GONE for a broken connection.
Error ucs_error(ucs_status_t st, const char *what, int peer);

}  // namespace lf::ucx
