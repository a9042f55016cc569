// TCP transport: REMOTE scope without an MPI launcher, and the last resort
// for LOCAL scope. One connection per channel; frames as in frame.hpp.
//
// Connection set-up. Every rank listens on 0.0.0.0:LF_TCP_PORT at start()
// and publishes
//     tcp://<ip>/<prefix>,...,127.0.0.1/8:<port>;netns=<boot id>:<net ns inode>
// (every IPv4 address of its network namespace, loopback last, and the
// identity of the namespace itself, read from the kernel, not from
// LF_LOCATION_FILE). For each channel the lower rank dials the higher one:
// 127.0.0.1 when both sit in the same network namespace, else the first peer
// address in a subnet the dialler has an address in, else the peer's other
// addresses in order. It greets with (its rank, the target's rank, the
// channel's number between the pair, a token of the whole job) and returns
// at once: the peer's kernel completed the TCP handshake from its backlog,
// sends queue in the socket, and the answer to the greeting is read before
// the peer's first frame. The accepting side returns at once too, with an
// endpoint that picks its connection up in progress(), checking and
// answering greetings and stashing connections meant for other channels.
// connect() never waits for the peer, so ranks opening channels in any
// order, across transports, never deadlock; a peer that never opens its side
// is LF_ERR_TIMEOUT after LF_CONNECT_TIMEOUT.
//
// Data path. Sockets are non-blocking and driven by progress(). Sends are
// never copied: the queue holds the caller's SendOps (the kernel socket
// buffer is the only buffering) and a send stays LF_IN_PROGRESS until its
// last byte is in the kernel. Receives read into a 64 KiB staging buffer so
// that a single recv() picks up many small frames; once a frame is matched to
// a posted receive, the rest of its payload is read straight into the
// receive's memory. An unexpected message is copied into memory of its own
// while the channel's budget (LF_TCP_UNEXPECTED_BYTES) allows; a message
// that does not fit stays in the socket until a matching receive is posted.
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "core/config.hpp"
#include "core/log.hpp"
#include "memory/allocator.hpp"
#include "transport/tcp/frame.hpp"
#include "transport/tcp/tcp.hpp"
#include "transport/tcp/tcp_address.hpp"
#include "transport/transport.hpp"

namespace lf {

namespace {

using tcp::DecodeStatus;
using tcp::FrameHeader;
using tcp::FrameType;
using tcp::kFrameHeaderSize;

struct Settings {
  uint64_t max_message = 0;
  uint64_t unexpected_budget = 0;
  int sockbuf = 0;
  int keepalive_s = 0;

  static Settings from_config() {
    Settings s;
    s.max_message = static_cast<uint64_t>(std::max<int64_t>(0, config::get_int("LF_TCP_MAX_MESSAGE")));
    s.unexpected_budget = static_cast<uint64_t>(std::max<int64_t>(0, config::get_int("LF_TCP_UNEXPECTED_BYTES")));
    s.sockbuf = static_cast<int>(std::clamp<int64_t>(config::get_int("LF_TCP_SOCKBUF"), 0, INT_MAX));
    s.keepalive_s = static_cast<int>(config::get_seconds("LF_TCP_KEEPALIVE"));
    return s;
  }
};

// ---- connection greeting ------------------------------------------------------

constexpr uint32_t kHelloMagic = 0x4854464c;  // "LFTH"
constexpr uint16_t kHelloVersion = 1;
constexpr size_t kHelloSize = 32;
enum : uint16_t { kHello = 1, kHelloAck = 2 };

struct Hello {
  uint16_t kind = kHello;
  uint32_t from = 0, to = 0, seq = 0;
  uint64_t token = 0;
};

void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

void encode_hello(const Hello &h, uint8_t out[kHelloSize]) {
  std::memset(out, 0, kHelloSize);
  put_le(out, kHelloMagic, 4);
  put_le(out + 4, kHelloVersion, 2);
  put_le(out + 6, h.kind, 2);
  put_le(out + 8, h.from, 4);
  put_le(out + 12, h.to, 4);
  put_le(out + 16, h.seq, 4);
  put_le(out + 24, h.token, 8);
}

std::optional<Hello> decode_hello(const uint8_t in[kHelloSize]) {
  if (get_le(in, 4) != kHelloMagic || get_le(in + 4, 2) != kHelloVersion || get_le(in + 20, 4) != 0)
    return std::nullopt;
  Hello h;
  h.kind = static_cast<uint16_t>(get_le(in + 6, 2));
  h.from = static_cast<uint32_t>(get_le(in + 8, 4));
  h.to = static_cast<uint32_t>(get_le(in + 12, 4));
  h.seq = static_cast<uint32_t>(get_le(in + 16, 4));
  h.token = get_le(in + 24, 8);
  return h;
}

// ---- the endpoint --------------------------------------------------------------

/// Publish a status after the op's other fields: another thread may be
/// waiting on it (Channel::wait reads it with acquire).
inline void complete(SendOp &op, lf_status_t st) noexcept {
  op.buffer.reset();
  __atomic_store_n(&op.status, st, __ATOMIC_RELEASE);
}
inline void complete(RecvOp &op, lf_status_t st) noexcept { __atomic_store_n(&op.status, st, __ATOMIC_RELEASE); }

using Budget = std::shared_ptr<std::atomic<uint64_t>>;

/// An unexpected message copied out of the socket. Gives its bytes back to
/// the channel's budget when it is delivered or dropped.
class CopiedIncoming final : public Incoming {
 public:
  CopiedIncoming(uint64_t tag, std::unique_ptr<char[]> data, size_t n, Budget budget) noexcept
      : Incoming(tag, n), data_(std::move(data)), budget_(std::move(budget)) {}
  ~CopiedIncoming() override { budget_->fetch_sub(size(), std::memory_order_relaxed); }
  void deliver(RecvOp &op) noexcept override { complete_copy(op, tag(), data_.get(), size()); }

 private:
  std::unique_ptr<char[]> data_;
  Budget budget_;
};

void tune_socket(int fd, const Settings &s) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (s.keepalive_s > 0) {
    // Notices a peer whose host vanished without closing the connection.
    int idle = s.keepalive_s, intvl = s.keepalive_s > 3 ? s.keepalive_s / 3 : 1, cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  }
  if (s.sockbuf > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &s.sockbuf, sizeof s.sockbuf);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &s.sockbuf, sizeof s.sockbuf);
  }
}

/// What a dialling endpoint must read back before the peer's first frame.
struct Greeting {
  uint32_t me = 0, peer = 0, seq = 0;
  uint64_t token = 0;
};

/// The transport as seen by an endpoint whose connection has not arrived.
class Acceptor {
 public:
  virtual ~Acceptor() = default;
  /// Serve the listener without waiting; the connection `peer` dialled for
  /// channel `seq` once it arrived (an empty Fd until then).
  virtual Fd try_take(int peer, uint32_t seq) noexcept = 0;
  /// The endpoint is gone: close that connection should it still arrive.
  virtual void forget(int peer, uint32_t seq) noexcept = 0;
  virtual int listen_fd() const noexcept = 0;
};

class TcpEndpoint;

/// An unexpected message too large for the budget: its payload is still in
/// the socket, and the stream waits behind it until a receive matches.
class WaitingIncoming final : public Incoming {
 public:
  WaitingIncoming(uint64_t tag, size_t n, TcpEndpoint *ep) noexcept : Incoming(tag, n), ep_(ep) {}
  void deliver(RecvOp &op) noexcept override;

 private:
  TcpEndpoint *ep_;  // the channel destroys its unexpected messages before its endpoint
};

class TcpEndpoint final : public Endpoint {
 public:
  /// Connected: the dialler (`ack` is the answer it waits for before the
  /// first frame, by `deadline`) or a test's socketpair (no ack).
  TcpEndpoint(Fd fd, const Settings &s, int peer, std::optional<Greeting> ack, Deadline deadline)
      : fd_(std::move(fd)),
        s_(s),
        peer_(peer),
        deadline_(deadline),
        ack_(ack),
        reader_(s.max_message),
        stage_(new uint8_t[kStageSize]),
        budget_(std::make_shared<std::atomic<uint64_t>>(0)) {
    publish_wait_state();
  }

  /// Not connected yet: the peer dials; progress() picks the connection up
  /// from the transport. Sends queue meanwhile.
  TcpEndpoint(Acceptor &acc, const Settings &s, int peer, uint32_t seq, Deadline deadline)
      : TcpEndpoint(Fd(), s, peer, std::nullopt, deadline) {
    acc_ = &acc;
    chan_seq_ = seq;
    publish_wait_state();
  }

  ~TcpEndpoint() override {
    if (!fd_ && acc_) acc_->forget(peer_, chan_seq_);
    // Tell the peer this is an orderly close, if the stream is at a frame
    // boundary; otherwise it sees the connection end mid-frame.
    if (fd_ && !broken_ && (out_.empty() || out_.front().done == 0)) {
      FrameHeader bye;
      bye.type = FrameType::bye;
      bye.seq = out_.empty() ? send_seq_ : out_.front().seq;
      uint8_t h[kFrameHeaderSize];
      tcp::encode_frame_header(bye, h);
      (void)::send(fd_.get(), h, sizeof h, MSG_NOSIGNAL | MSG_DONTWAIT);
      ::shutdown(fd_.get(), SHUT_WR);
    }
    Error closed = make_error(LF_ERR_CLOSED, "channel was closed");
    for (OutFrame &f : out_) fail_op(*f.op, closed);
    if (sink_ == Sink::op) fail_op(*rop_, closed);
  }

  void send(SendOp &op) noexcept override {
    if (broken_) return fail_op(op, *broken_);
    if (op.size > 0 && !op.data)
      return fail_op(op,
                     make_error(LF_ERR_UNSUPPORTED, "tcp moves host memory only; this %s buffer has no host pointer",
                                op.buffer ? memory_kind_name(op.buffer->kind()) : "device"));
    if (op.size > s_.max_message)
      return fail_op(op, make_error(LF_ERR_INVALID_ARG, "a %zu-byte message exceeds LF_TCP_MAX_MESSAGE (%llu bytes)",
                                    op.size, static_cast<unsigned long long>(s_.max_message)));
    try {
      out_.push_back(OutFrame{&op, send_seq_, 0, {}});
    } catch (const std::bad_alloc &) {
      return fail_op(op, make_error(LF_ERR_NO_MEMORY, "tcp: no memory to queue a send"));
    }
    FrameHeader h;
    h.seq = send_seq_++;
    h.tag = op.tag;
    h.length = op.size;
    tcp::encode_frame_header(h, out_.back().header);
    // Start writing now when nothing is ahead of it: a small message then
    // completes inside send(), with no extra progress call.
    if (out_.size() == 1 && fd_) (void)flush();
  }

  Status progress(Matcher &m) noexcept override {
    if (broken_) return std::unexpected(*broken_);
    if (!fd_ || ack_) {
      if (auto st = establish(); !st) return st;
      if (!fd_) {
        publish_wait_state();
        return {};
      }
    }
    if (!out_.empty())
      if (auto st = flush(); !st) return st;
    Status st = receive(m);
    publish_wait_state();
    return st;
  }

  // Called without the channel's lock, possibly while another thread runs
  // progress(): it reads only what progress() published in atomics.
  void wait_for_activity(int timeout_ms) noexcept override {
    uint64_t w = wait_state_.load(std::memory_order_acquire);
    pollfd p{static_cast<int>(w >> 16) - 1, static_cast<short>(w & 0xffff), 0};
    (void)::poll(&p, 1, timeout_ms);
  }

  /// A receive matched the WaitingIncoming at the head of the stream.
  void attach(RecvOp &op) noexcept {
    if (broken_) return fail_op(op, *broken_);
    start_receive(op);
  }

 private:
  static constexpr size_t kStageSize = 64 << 10;
  static constexpr size_t kDirectThreshold = 16 << 10;  // payloads worth a header-only read
  static constexpr int kMaxIov = 64;

  struct OutFrame {
    SendOp *op;
    uint32_t seq;
    uint64_t done;  // bytes of header + payload written
    uint8_t header[kFrameHeaderSize];
  };

  enum class Sink {
    none,     // between frames
    op,       // a posted receive (data or buffer)
    copy,     // an unexpected message being copied
    discard,  // a receive that already failed (no memory for its buffer)
    waiting,  // an unexpected message left in the socket
  };

  /// What wait_for_activity() should poll: the socket for input (unless the
  /// stream must stay in the socket) and for room when sends are queued; the
  /// listener while the connection has not arrived.
  void publish_wait_state() noexcept {
    int fd = fd_ ? fd_.get() : acc_ ? acc_->listen_fd() : -1;
    short ev = 0;
    if (!fd_ || sink_ != Sink::waiting) ev |= POLLIN;
    if (fd_ && !out_.empty()) ev |= POLLOUT;
    wait_state_.store(static_cast<uint64_t>(fd + 1) << 16 | static_cast<uint16_t>(ev), std::memory_order_release);
  }

  /// Connection set-up that runs inside progress(): pick up the accepted
  /// connection, and enforce the deadline until the peer's greeting arrived.
  Status establish() noexcept {
    if (!fd_) {
      fd_ = acc_->try_take(peer_, chan_seq_);
      if (fd_) {
        tune_socket(fd_.get(), s_);
        acc_ = nullptr;
        return {};
      }
    }
    if (Clock::now() > deadline_)
      return broken(make_error(LF_ERR_TIMEOUT,
                               "rank %d did not open its side of the tcp channel within LF_CONNECT_TIMEOUT", peer_));
    return {};
  }

  Status broken(Error e) noexcept {
    if (!broken_) broken_ = e;
    for (OutFrame &f : out_) fail_op(*f.op, e);
    out_.clear();
    if (sink_ == Sink::op) fail_op(*rop_, e);
    sink_ = Sink::none;
    copy_.reset();
    return std::unexpected(e);
  }

  Status io_error(int err, const char *what) noexcept {
    if (err == EPIPE || err == ECONNRESET || err == ETIMEDOUT || err == EHOSTUNREACH)
      return broken(make_error(LF_ERR_PEER_GONE, "connection to rank %d broke (%s: %s)", peer_, what, strerror(err)));
    return broken(sys_error(err, "tcp %s (connection to rank %d)", what, peer_));
  }

  Status flush() noexcept {
    while (!out_.empty()) {
      iovec iov[kMaxIov];
      int n_iov = 0;
      for (size_t i = 0; i < out_.size() && n_iov + 2 <= kMaxIov; ++i) {
        OutFrame &f = out_[i];
        uint64_t done = f.done;
        if (done < kFrameHeaderSize) iov[n_iov++] = {f.header + done, kFrameHeaderSize - done};
        uint64_t pdone = done > kFrameHeaderSize ? done - kFrameHeaderSize : 0;
        if (f.op->size > pdone)
          iov[n_iov++] = {const_cast<char *>(static_cast<const char *>(f.op->data)) + pdone, f.op->size - pdone};
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<size_t>(n_iov);
      ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return io_error(errno, "send");
      }
      for (auto left = static_cast<uint64_t>(n); left > 0;) {
        OutFrame &f = out_.front();
        uint64_t need = kFrameHeaderSize + f.op->size - f.done;
        if (left < need) {
          f.done += left;
          break;
        }
        left -= need;
        complete(*f.op, LF_OK);
        out_.pop_front();
      }
    }
    publish_wait_state();
    return {};
  }

  /// Read into the staging buffer, at most `limit` bytes (0: as much as
  /// fits); false when nothing is available now.
  Result<bool> fill_stage(size_t limit = 0) noexcept {
    if (stage_begin_ == stage_end_) stage_begin_ = stage_end_ = 0;
    if (stage_end_ == kStageSize) {
      std::memmove(stage_.get(), stage_.get() + stage_begin_, stage_end_ - stage_begin_);
      stage_end_ -= stage_begin_;
      stage_begin_ = 0;
    }
    size_t room = kStageSize - stage_end_;
    return read_into(stage_.get() + stage_end_, limit && limit < room ? limit : room, &stage_end_);
  }

  /// One recv() of at most `len` bytes into `dst`; adds what arrived to *count.
  Result<bool> read_into(void *dst, size_t len, size_t *count) noexcept {
    if (len == 0) return false;  // recv() of 0 bytes would read as end of stream
    for (;;) {
      ssize_t n = ::recv(fd_.get(), dst, len, MSG_DONTWAIT);
      if (n > 0) {
        *count += static_cast<size_t>(n);
        return true;
      }
      if (n == 0) {
        if (reader_.in_payload() || stage_end_ != stage_begin_)
          return std::unexpected(
              broken(make_error(LF_ERR_PEER_GONE,
                                "rank %d closed the connection in the middle of a message (truncated stream)", peer_))
                  .error());
        return std::unexpected(
            broken(make_error(LF_ERR_PEER_GONE, "rank %d closed the connection (process exited?)", peer_)).error());
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      return std::unexpected(io_error(errno, "recv").error());
    }
  }

  void start_receive(RecvOp &op) noexcept {
    rop_ = &op;
    sink_ = Sink::op;
    if (op.want_buffer) {
      auto buf = allocate(len_ ? len_ : 1, MemoryKind::host);  // allocate() refuses 0 bytes
      if (!buf) {
        fail_op(op, buf.error());
        rop_ = nullptr;
        sink_ = Sink::discard;
        dst_ = nullptr;
        dst_len_ = 0;
        return;
      }
      (*buf)->set_size(len_);
      op.buffer = std::move(*buf);
      dst_ = static_cast<char *>(op.buffer->data());
      dst_len_ = len_;
    } else {
      dst_ = static_cast<char *>(op.data);
      dst_len_ = len_ <= op.capacity ? len_ : op.capacity;
    }
  }

  void begin_message(Matcher &m, const FrameHeader &h) noexcept {
    tag_ = h.tag;
    len_ = h.length;
    got_ = 0;
    if (RecvOp *op = m.take_posted(tag_)) return start_receive(*op);
    uint64_t used = budget_->load(std::memory_order_relaxed);
    if (len_ <= s_.unexpected_budget && used <= s_.unexpected_budget - len_) {
      copy_.reset(new (std::nothrow) char[len_ ? len_ : 1]);
      if (copy_) {
        budget_->fetch_add(len_, std::memory_order_relaxed);
        sink_ = Sink::copy;
        dst_ = copy_.get();
        dst_len_ = len_;
        return;
      }
    }
    auto *w = new (std::nothrow) WaitingIncoming(tag_, len_, this);
    if (!w) {
      (void)broken(make_error(LF_ERR_NO_MEMORY, "tcp: no memory to note an unexpected message; channel broken"));
      return;
    }
    sink_ = Sink::waiting;
    m.add_unexpected(std::unique_ptr<Incoming>(w));
  }

  void finish_message(Matcher &m) noexcept {
    Sink s = sink_;
    sink_ = Sink::none;
    if (s == Sink::op) {
      RecvOp &op = *rop_;
      rop_ = nullptr;
      op.matched_tag = tag_;
      op.message_bytes = len_;
      op.bytes = dst_len_;
      if (!op.want_buffer && len_ > op.capacity) {
        try {
          op.error = "message of " + std::to_string(len_) + " bytes truncated to the receive capacity of " +
                     std::to_string(op.capacity);
        } catch (...) {
        }
        return complete(op, LF_ERR_TRUNCATED);
      }
      return complete(op, LF_OK);
    }
    if (s == Sink::copy) {
      if (RecvOp *op = m.take_posted(tag_)) {
        complete_copy(*op, tag_, copy_.get(), len_);
        copy_.reset();
        budget_->fetch_sub(len_, std::memory_order_relaxed);
        return;
      }
      auto *c = new (std::nothrow) CopiedIncoming(tag_, std::move(copy_), len_, budget_);
      if (!c) {
        budget_->fetch_sub(len_, std::memory_order_relaxed);
        (void)broken(make_error(LF_ERR_NO_MEMORY, "tcp: no memory to queue an unexpected message; channel broken"));
        return;
      }
      m.add_unexpected(std::unique_ptr<Incoming>(c));
    }
  }

  /// Hand `n` payload bytes at `src` to the current sink.
  void put(const uint8_t *src, uint64_t n) noexcept {
    if (got_ < dst_len_) {
      uint64_t k = dst_len_ - got_ < n ? dst_len_ - got_ : n;
      std::memcpy(dst_ + got_, src, k);
    }
    got_ += n;
    reader_.consume_payload(n);
  }

  Status receive(Matcher &m) noexcept {
    // Bounded so that one busy channel cannot starve the others.
    for (int round = 0; round < 256; ++round) {
      if (sink_ == Sink::waiting) return {};
      size_t avail = stage_end_ - stage_begin_;
      if (ack_) {
        if (avail < kHelloSize) {
          auto more = fill_stage();
          if (!more) return std::unexpected(more.error());
          if (!*more) return {};
          continue;
        }
        auto h = decode_hello(stage_.get() + stage_begin_);
        if (!h || h->kind != kHelloAck || h->from != ack_->peer || h->to != ack_->me || h->seq != ack_->seq ||
            h->token != ack_->token)
          return broken(make_error(LF_ERR_PROTOCOL,
                                   "rank %d answered the tcp greeting with something else (another job on a recycled "
                                   "port?)",
                                   peer_));
        stage_begin_ += kHelloSize;
        ack_.reset();
        continue;
      }
      if (!reader_.in_payload() && sink_ == Sink::none) {
        if (avail < kFrameHeaderSize) {
          // After a large message another is likely: read just its header,
          // so that its payload goes straight to the receive (no staging
          // copy). After small ones, read ahead to get many frames per call.
          auto more = fill_stage(last_large_ ? kFrameHeaderSize - avail : 0);
          if (!more) return std::unexpected(more.error());
          if (!*more) return {};
          continue;
        }
        auto r = reader_.next_header(stage_.get() + stage_begin_, avail);
        if (r.status != DecodeStatus::ok)
          return broken(make_error(LF_ERR_PROTOCOL, "rank %d sent a malformed frame: %s; channel closed", peer_,
                                   r.error ? r.error : "undecodable header"));
        stage_begin_ += kFrameHeaderSize;
        last_large_ = r.header.length >= kDirectThreshold;
        if (r.header.type == FrameType::bye)
          return broken(make_error(LF_ERR_PEER_GONE, "rank %d closed its end of the channel", peer_));
        begin_message(m, r.header);
        if (broken_) return std::unexpected(*broken_);
        if (sink_ == Sink::waiting) return {};
        if (!reader_.in_payload()) finish_message(m);
        if (broken_) return std::unexpected(*broken_);
        continue;
      }
      // Inside a payload.
      if (avail > 0) {
        uint64_t left = reader_.payload_left();
        uint64_t n = avail < left ? avail : left;
        put(stage_.get() + stage_begin_, n);
        stage_begin_ += n;
      } else if (got_ < dst_len_) {
        // Nothing staged: read the rest of the payload straight into place.
        uint64_t want = dst_len_ - got_;
        if (want > reader_.payload_left()) want = reader_.payload_left();
        size_t got = 0;
        auto more = read_into(dst_ + got_, want, &got);
        if (!more) return std::unexpected(more.error());
        if (!*more) return {};
        got_ += got;
        reader_.consume_payload(got);
      } else {
        auto more = fill_stage();  // bytes past the receive's capacity: read and drop
        if (!more) return std::unexpected(more.error());
        if (!*more) return {};
        continue;
      }
      if (!reader_.in_payload()) finish_message(m);
      if (broken_) return std::unexpected(*broken_);
    }
    return {};
  }

  Fd fd_;  // empty until the peer's connection arrived (accepting side)
  Settings s_;
  int peer_;
  Deadline deadline_;            // for the connection set-up
  std::optional<Greeting> ack_;  // dialler: the answer still to read
  Acceptor *acc_ = nullptr;      // accepting side, until connected
  uint32_t chan_seq_ = 0;

  std::deque<OutFrame> out_;
  uint32_t send_seq_ = 0;
  std::atomic<uint64_t> wait_state_{0};  // (fd + 1) << 16 | poll events, for wait_for_activity

  tcp::FrameReader reader_;
  std::unique_ptr<uint8_t[]> stage_;
  size_t stage_begin_ = 0, stage_end_ = 0;
  bool last_large_ = false;  // the last frame's payload was >= kDirectThreshold
  Sink sink_ = Sink::none;
  uint64_t tag_ = 0, len_ = 0, got_ = 0;  // current frame; got_ counts payload bytes consumed
  RecvOp *rop_ = nullptr;
  char *dst_ = nullptr;   // where payload bytes [0, dst_len_) go
  uint64_t dst_len_ = 0;  // bytes past it are dropped (truncation)
  std::unique_ptr<char[]> copy_;
  Budget budget_;  // bytes held by this channel's unexpected copies
  std::optional<Error> broken_;
};

void WaitingIncoming::deliver(RecvOp &op) noexcept { ep_->attach(op); }

// ---- the transport ------------------------------------------------------------

std::string read_first_line(const char *path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

/// The kernel's identity of this process's network namespace.
std::string netns_identity() {
  struct stat st {};
  uint64_t ino = ::stat("/proc/self/ns/net", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
  return read_first_line("/proc/sys/kernel/random/boot_id") + ":" + std::to_string(ino);
}

/// IPv4 addresses of the interfaces that are up, loopback excluded.
std::vector<tcp::Ipv4Net> interface_addresses() {
  std::vector<tcp::Ipv4Net> out;
  ifaddrs *ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return out;
  for (ifaddrs *p = ifa; p; p = p->ifa_next) {
    if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET || !(p->ifa_flags & IFF_UP)) continue;
    if (p->ifa_flags & IFF_LOOPBACK) continue;
    uint32_t a = ntohl(reinterpret_cast<sockaddr_in *>(p->ifa_addr)->sin_addr.s_addr);
    uint32_t mask = p->ifa_netmask ? ntohl(reinterpret_cast<sockaddr_in *>(p->ifa_netmask)->sin_addr.s_addr) : ~0u;
    out.push_back({a, __builtin_popcount(mask)});
  }
  freeifaddrs(ifa);
  return out;
}

Result<std::unique_ptr<Endpoint>> endpoint_on(Fd fd, const Settings &s, int peer, std::optional<Greeting> ack,
                                              Deadline deadline) {
  if (auto st = set_nonblocking(fd.get(), true); !st) return std::unexpected(st.error());
  tune_socket(fd.get(), s);
  try {
    return std::unique_ptr<Endpoint>(std::make_unique<TcpEndpoint>(std::move(fd), s, peer, ack, deadline));
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "tcp: no memory for an endpoint");
  }
}

class TcpTransport final : public Transport, public Acceptor {
 public:
  const char *name() const noexcept override { return "tcp"; }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.local = true;  // last resort within a host: below shm
    c.remote = true;
    c.memory_kinds = kHostKinds;
    c.priority = 20;
    return c;
  }

  Result<std::string> start(World &world) override {
    rank_ = world.rank();
    s_ = Settings::from_config();
    int64_t port = config::get_int("LF_TCP_PORT");
    if (port < 0 || port > 65535) return LF_FAIL(LF_ERR_INVALID_ARG, "LF_TCP_PORT=%lld is not a port", (long long)port);
    SockAddr any{SockAddr::Family::tcp, "0.0.0.0", static_cast<int>(port)};
    auto lfd = listen_on(any, 256);
    if (!lfd) return std::unexpected(lfd.error());
    auto bound = bound_address(lfd->get(), any);
    if (!bound) return std::unexpected(bound.error());
    if (auto st = set_nonblocking(lfd->get(), true); !st) return std::unexpected(st.error());
    listener_ = std::move(*lfd);
    tcp::PublishedAddress me;
    me.nets = interface_addresses();
    me.nets.push_back({0x7f000001u, 8});
    me.port = bound->port;
    me.netns = netns_identity();
    netns_ = me.netns;
    mine_ = me.nets;
    LF_LOG(debug, "tcp: rank %d listens at %s", rank_, tcp::format_address(me).c_str());
    return tcp::format_address(me);
  }

  /// Same answer on both ranks: computed from what both published.
  std::optional<std::string> unusable_for(World &world, int peer) const override {
    int lo = std::min(world.rank(), peer), hi = std::max(world.rank(), peer);
    auto from = tcp::parse_address(world.address(lo, "tcp"));
    auto to = tcp::parse_address(world.address(hi, "tcp"));
    if (!from || !to) return "a tcp address published by rank " + std::to_string(!from ? lo : hi) + " is unreadable";
    if (tcp::choose_addresses(from->nets, from->netns, *to).empty())
      return "rank " + std::to_string(lo) + " has no IPv4 address from which to reach rank " + std::to_string(hi);
    return std::nullopt;
  }

  Result<std::unique_ptr<Endpoint>> connect(World &world, int peer, Deadline deadline) override {
    if (peer == rank_ || peer < 0 || peer >= world.size())
      return LF_FAIL(LF_ERR_INVALID_ARG, "tcp: cannot connect rank %d to rank %d", rank_, peer);
    uint32_t seq;
    {
      std::lock_guard g(mu_);
      if (!token_) token_ = job_token(world);
      seq = next_seq_[peer]++;
    }
    // Neither side waits for the other here: the dialler's connection sits
    // in the peer's backlog and its sends in the socket; the accepting side
    // picks the connection up in progress(). A rank blocked in another
    // transport's connect (shm waits for its peer) therefore never holds up
    // a tcp channel, whatever order ranks open channels in.
    if (peer > rank_) {
      auto fd = dial(world, peer, seq, deadline);
      if (!fd) return std::unexpected(fd.error());
      return endpoint_on(std::move(*fd), s_, peer,
                         Greeting{static_cast<uint32_t>(rank_), static_cast<uint32_t>(peer), seq, token_}, deadline);
    }
    try {
      return std::unique_ptr<Endpoint>(std::make_unique<TcpEndpoint>(*this, s_, peer, seq, deadline));
    } catch (const std::bad_alloc &) {
      return LF_FAIL(LF_ERR_NO_MEMORY, "tcp: no memory for an endpoint");
    }
  }

  Fd try_take(int peer, uint32_t seq) noexcept override {
    std::lock_guard g(mu_);
    try {
      serve();
      auto it = stash_.find({peer, seq});
      if (it == stash_.end()) return Fd();
      Fd fd = std::move(it->second);
      stash_.erase(it);
      return fd;
    } catch (const std::bad_alloc &) {
      return Fd();  // try again on the next progress
    }
  }

  void forget(int peer, uint32_t seq) noexcept override {
    std::lock_guard g(mu_);
    try {
      if (!stash_.erase({peer, seq})) forgotten_.insert({peer, seq});
    } catch (const std::bad_alloc &) {
    }
  }

  int listen_fd() const noexcept override { return listener_.get(); }

 private:
  struct Pending {
    Fd fd;
    uint8_t buf[kHelloSize];
    size_t got = 0;
    Deadline expires;
  };
  static constexpr size_t kMaxPending = 64;

  /// Both ranks of a pair compute the same token from what the exchange
  /// published, so a greeting from another job (a recycled port) is refused.
  static uint64_t job_token(World &w) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (int r = 0; r < w.size(); ++r) {
      for (char c : w.address(r, "tcp")) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
      h = (h ^ 0xff) * 1099511628211ull;
    }
    return h ? h : 1;
  }

  Result<Fd> dial(World &world, int peer, uint32_t seq, Deadline deadline) {
    auto addr = tcp::parse_address(world.address(peer, "tcp"));
    if (!addr)
      return LF_FAIL(LF_ERR_PROTOCOL, "rank %d published an unreadable tcp address: %s", peer,
                     addr.error().message.c_str());
    std::vector<uint32_t> candidates = tcp::choose_addresses(mine_, netns_, *addr);
    if (candidates.empty())
      return LF_FAIL(LF_ERR_UNAVAILABLE, "rank %d published no address reachable from here", peer);
    Fd fd;
    std::string errors;
    for (size_t i = 0; i < candidates.size() && !fd; ++i) {
      char ip[INET_ADDRSTRLEN];
      in_addr ia{htonl(candidates[i])};
      inet_ntop(AF_INET, &ia, ip, sizeof ip);
      SockAddr sa{SockAddr::Family::tcp, ip, addr->port};
      // Leave time for the other candidates when this one does not answer.
      Deadline d = i + 1 < candidates.size() ? std::min(deadline, Clock::now() + std::chrono::seconds(3)) : deadline;
      auto c = connect_to(sa, d);
      if (c) {
        fd = std::move(*c);
        LF_LOG(debug, "tcp: rank %d -> rank %d via %s", rank_, peer, sa.to_string().c_str());
      } else {
        errors += (errors.empty() ? "" : "; ") + c.error().message;
      }
    }
    if (!fd) return LF_FAIL(LF_ERR_TIMEOUT, "cannot reach rank %d over tcp: %s", peer, errors.c_str());
    uint8_t hello[kHelloSize];
    encode_hello(Hello{kHello, static_cast<uint32_t>(rank_), static_cast<uint32_t>(peer), seq, token_}, hello);
    if (auto st = send_all(fd.get(), hello, sizeof hello, deadline); !st) return std::unexpected(st.error());
    return fd;
  }

  /// Accept and check the greetings that arrived, without waiting (mu_ held).
  void serve() {
    std::vector<pollfd> fds;
    fds.push_back({listener_.get(), POLLIN, 0});
    for (Pending &p : pending_) fds.push_back({p.fd.get(), POLLIN, 0});
    int rc = ::poll(fds.data(), fds.size(), 0);
    if (rc <= 0) return;
    for (size_t i = 0; i < pending_.size(); ++i)
      if (fds[i + 1].revents) read_greeting(pending_[i]);
    if (fds[0].revents & POLLIN) accept_all();
    Clock::time_point now = Clock::now();
    std::erase_if(pending_, [&](const Pending &p) { return !p.fd || now > p.expires; });
  }

  void accept_all() {
    for (;;) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // EAGAIN, or out of descriptors: the connection waits in the backlog
      }
      if (pending_.size() >= kMaxPending) pending_.erase(pending_.begin());  // oldest silent one goes
      Pending p;
      p.fd.reset(fd);
      p.expires = Clock::now() + std::chrono::seconds(10);
      pending_.push_back(std::move(p));
      read_greeting(pending_.back());
    }
  }

  void read_greeting(Pending &p) {
    ssize_t n = ::recv(p.fd.get(), p.buf + p.got, kHelloSize - p.got, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return p.fd.reset();
    if (n < 0) return;
    p.got += static_cast<size_t>(n);
    if (p.got < kHelloSize) return;
    auto h = decode_hello(p.buf);
    bool ok = h && h->kind == kHello && h->to == static_cast<uint32_t>(rank_) && h->token == token_ &&
              h->from < static_cast<uint32_t>(rank_) && !stash_.count({static_cast<int>(h->from), h->seq});
    if (!ok) {
      LF_LOG(warn, "tcp: rank %d refused a connection with a foreign or repeated greeting", rank_);
      return p.fd.reset();
    }
    uint8_t ack[kHelloSize];
    encode_hello(Hello{kHelloAck, static_cast<uint32_t>(rank_), h->from, h->seq, token_}, ack);
    if (!send_all(p.fd.get(), ack, sizeof ack, deadline_in(1))) return p.fd.reset();
    if (forgotten_.erase({static_cast<int>(h->from), h->seq})) return p.fd.reset();  // its channel is gone
    try {
      stash_.emplace(std::pair{static_cast<int>(h->from), h->seq}, std::move(p.fd));
    } catch (const std::bad_alloc &) {
      p.fd.reset();
    }
  }

  int rank_ = 0;
  Settings s_;
  Fd listener_;
  std::string netns_;
  std::vector<tcp::Ipv4Net> mine_;

  std::mutex mu_;  // the fields below: connection set-up from any thread
  uint64_t token_ = 0;
  std::map<int, uint32_t> next_seq_;
  std::map<std::pair<int, uint32_t>, Fd> stash_;
  std::set<std::pair<int, uint32_t>> forgotten_;
  std::vector<Pending> pending_;
};

}  // namespace

std::unique_ptr<Transport> make_tcp_transport() { return std::make_unique<TcpTransport>(); }

Result<std::unique_ptr<Endpoint>> tcp::make_endpoint(Fd fd, int peer) {
  return endpoint_on(std::move(fd), Settings::from_config(), peer, std::nullopt, deadline_in(0));
}

}  // namespace lf
