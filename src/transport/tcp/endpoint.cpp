// Data path. Sockets are non-blocking and driven by progress(). Sends are
// never copied: the queue holds the caller's SendOps (the kernel socket
// buffer is the only buffering) and a send stays LF_IN_PROGRESS until its
// last byte is in the kernel. Receives read into a 64 KiB staging buffer so
// that a single recv() picks up many small frames; once a frame is matched to
// a posted receive, the rest of its payload is read straight into the
// receive's memory. An unexpected message is copied into memory of its own
// while the channel's budget (LF_TCP_UNEXPECTED_BYTES, payload plus
// kUnexpectedOverhead per message) allows; a message that does not fit stays
// in the socket until a matching receive is posted.
//
// Close. The destructor sends `bye` (after our ack if it was never sent),
// shuts the write side down and hands the socket to the transport's Closer,
// which reads and drops what the peer still sends until its end of stream or
// LF_TCP_LINGER: a socket closed while the peer still sends answers with a
// reset, and the reset throws away what is still in our send queue (messages
// our sends already reported complete). Without a Closer (a test's
// socketpair) the destructor lingers itself.
#include "transport/tcp/endpoint.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <deque>

#include "core/config.hpp"
#include "core/log.hpp"
#include "memory/allocator.hpp"
#include "transport/tcp/frame.hpp"
#include "transport/tcp/readiness.hpp"
#include "transport/tcp/tcp.hpp"

namespace lf::tcp {

Settings Settings::from_config() {
  Settings s;
  s.max_message = static_cast<uint64_t>(std::max<int64_t>(0, config::get_int("LF_TCP_MAX_MESSAGE")));
  s.unexpected_budget = static_cast<uint64_t>(std::max<int64_t>(0, config::get_int("LF_TCP_UNEXPECTED_BYTES")));
  s.sockbuf = static_cast<int>(std::clamp<int64_t>(config::get_int("LF_TCP_SOCKBUF"), 0, INT_MAX));
  s.keepalive_s = static_cast<int>(config::get_seconds("LF_TCP_KEEPALIVE"));
  s.linger_s = config::get_seconds("LF_TCP_LINGER");
  s.handshake_s = config::get_seconds("LF_TCP_HANDSHAKE_TIMEOUT");
  return s;
}

void tune_socket(int fd, const Settings &s) noexcept {
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

namespace {

/// Publish a status after the op's other fields: another thread may be
/// waiting on it (Channel::wait reads it with acquire).
inline void complete(SendOp &op, lf_status_t st) noexcept {
  op.buffer.reset();
  __atomic_store_n(&op.status, st, __ATOMIC_RELEASE);
}
inline void complete(RecvOp &op, lf_status_t st) noexcept { __atomic_store_n(&op.status, st, __ATOMIC_RELEASE); }

using Budget = std::shared_ptr<std::atomic<uint64_t>>;

/// An unexpected message copied out of the socket. Gives its share back to
/// the channel's budget when it is delivered or dropped.
class CopiedIncoming final : public Incoming {
 public:
  CopiedIncoming(uint64_t tag, std::unique_ptr<char[]> data, size_t n, Budget budget) noexcept
      : Incoming(tag, n), data_(std::move(data)), budget_(std::move(budget)) {}
  ~CopiedIncoming() override { budget_->fetch_sub(size() + kUnexpectedOverhead, std::memory_order_relaxed); }
  void deliver(RecvOp &op) noexcept override { complete_copy(op, tag(), data_.get(), size()); }

 private:
  std::unique_ptr<char[]> data_;
  Budget budget_;
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

/// The receive side's state: where the payload of the current frame goes.
enum class Sink {
  none,     // between frames
  op,       // a posted receive (data or buffer)
  copy,     // an unexpected message being copied
  discard,  // a receive that already failed (no memory for its buffer)
  waiting,  // an unexpected message left in the socket
};

/// Read and drop what arrives on `fd` until the peer's end of stream (true),
/// an error, or `linger_s` seconds (false).
bool drain_until_end(int fd, double linger_s) noexcept {
  Deadline end = deadline_in(linger_s);
  char sink[4096];
  for (;;) {
    ssize_t n = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n > 0) continue;
    if (n == 0) return true;  // nothing more can arrive
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return true;
    int ms = linger_s > 0 ? ms_left(end) : 0;
    if (ms <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    (void)::poll(&p, 1, ms);
  }
}

/// The send side: the caller's SendOps in order, each with its encoded
/// header, and the acceptor's ack to go out before the first frame. Nothing
/// is copied: sendmsg() gathers headers and payloads straight from the ops.
class SendQueue {
 public:
  bool empty() const noexcept { return out_.empty(); }

  /// Queue `op` as the next frame; false when there is no memory for it.
  bool push(SendOp &op) noexcept {
    try {
      out_.push_back(OutFrame{&op, 0, {}});
    } catch (const std::bad_alloc &) {
      return false;
    }
    FrameHeader h;
    h.seq = seq_++;
    h.tag = op.tag;
    h.length = op.total();
    encode_frame_header(h, out_.back().header);
    return true;
  }

  /// Bytes to write before the first frame (the acceptor's ack).
  void set_preface(const HandshakeBytes &b) noexcept {
    preface_ = b;
    preface_done_ = 0;
  }

  /// Write as much as the socket takes, completing the ops fully written.
  /// 0, or the errno of a failed sendmsg().
  int flush(int fd) noexcept {
    while (!out_.empty()) {
      iovec iov[kMaxIov];
      int n_iov = 0;
      if (preface_done_ < kHandshakeSize)
        iov[n_iov++] = {preface_.data() + preface_done_, kHandshakeSize - preface_done_};
      for (size_t i = 0; i < out_.size() && n_iov + 3 <= kMaxIov; ++i) {
        // A frame is its header, then the op's gather header, then its payload.
        OutFrame &f = out_[i];
        const iovec parts[3] = {{f.header, kFrameHeaderSize},
                                {const_cast<void *>(f.op->header), f.op->header_size},
                                {const_cast<void *>(f.op->data), f.op->size}};
        uint64_t skip = f.done;
        for (const iovec &p : parts) {
          if (skip >= p.iov_len) {
            skip -= p.iov_len;
            continue;
          }
          iov[n_iov++] = {static_cast<char *>(p.iov_base) + skip, p.iov_len - skip};
          skip = 0;
        }
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<size_t>(n_iov);
      ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return errno;
      }
      auto left = static_cast<uint64_t>(n);
      if (preface_done_ < kHandshakeSize) {
        uint64_t k = std::min<uint64_t>(left, kHandshakeSize - preface_done_);
        preface_done_ += k;
        left -= k;
      }
      while (left > 0) {
        OutFrame &f = out_.front();
        uint64_t need = kFrameHeaderSize + f.op->total() - f.done;
        if (left < need) {
          f.done += left;
          break;
        }
        left -= need;
        complete(*f.op, LF_OK);
        out_.pop_front();
      }
    }
    return 0;
  }

  /// At close: the preface still due and a bye, without waiting, when the
  /// stream is at a frame boundary (otherwise the peer sees it cut).
  void send_bye(int fd) noexcept {
    if (!out_.empty() && out_.front().done != 0) return;
    FrameHeader bye;
    bye.type = FrameType::bye;
    bye.seq = seq_ - static_cast<uint32_t>(out_.size());
    uint8_t h[kFrameHeaderSize];
    encode_frame_header(bye, h);
    iovec iov[2];
    int n_iov = 0;
    if (preface_done_ < kHandshakeSize)
      iov[n_iov++] = {preface_.data() + preface_done_, kHandshakeSize - preface_done_};
    iov[n_iov++] = {h, sizeof h};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(n_iov);
    (void)::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  }

  /// Complete every op still queued with `e`.
  void fail_all(const Error &e) noexcept {
    for (OutFrame &f : out_) fail_op(*f.op, e);
    out_.clear();
  }

 private:
  static constexpr int kMaxIov = 64;
  struct OutFrame {
    SendOp *op;
    uint64_t done;  // bytes of header + payload written
    uint8_t header[kFrameHeaderSize];
  };
  std::deque<OutFrame> out_;
  uint32_t seq_ = 0;
  HandshakeBytes preface_{};
  size_t preface_done_ = kHandshakeSize;  // bytes of it written (all: nothing to send)
};

class TcpEndpoint final : public Endpoint {
 public:
  /// Connected: the connector (`ack` checks the acceptor's answer) or a
  /// test's socketpair (no ack).
  TcpEndpoint(Fd fd, const Settings &s, int peer, std::optional<AckCheck> ack)
      : fd_(std::move(fd)),
        s_(s),
        peer_(peer),
        ack_(std::move(ack)),
        reader_(s.max_message),
        stage_(new uint8_t[kStageSize]),
        budget_(std::make_shared<std::atomic<uint64_t>>(0)) {
    publish_wait_state();
  }

  /// Not connected yet: the peer dials; progress() picks the connection up
  /// from the listener. Sends queue meanwhile.
  TcpEndpoint(Listener &l, const Settings &s, int peer, uint32_t seq, Deadline deadline)
      : TcpEndpoint(Fd(), s, peer, std::nullopt) {
    listener_ = &l;
    listen_fds_ = &l.fds();
    chan_seq_ = seq;
    deadline_ = deadline;
    publish_wait_state();
  }

  ~TcpEndpoint() override {
    if (!fd_ && listener_) listener_->forget(peer_, chan_seq_);
    if (fd_ && !broken_) close_gracefully();
    Error closed = make_error(LF_ERR_CLOSED, "channel was closed");
    out_.fail_all(closed);
    if (sink_ == Sink::op) fail_op(*rop_, closed);
  }

  void send(SendOp &op) noexcept override {
    if (broken_) return fail_op(op, *broken_);
    if (op.size > 0 && !op.data)
      return fail_op(op,
                     make_error(LF_ERR_UNSUPPORTED, "tcp moves host memory only; this %s buffer has no host pointer",
                                op.buffer ? memory_kind_name(op.buffer->kind()) : "device"));
    if (op.total() > s_.max_message)
      return fail_op(op, make_error(LF_ERR_INVALID_ARG, "a %zu-byte message exceeds LF_TCP_MAX_MESSAGE (%llu bytes)",
                                    op.total(), static_cast<unsigned long long>(s_.max_message)));
    bool first = out_.empty();
    if (!out_.push(op)) return fail_op(op, make_error(LF_ERR_NO_MEMORY, "tcp: no memory to queue a send"));
    // Start writing now when nothing is ahead of it: a small message then
    // completes inside send(), with no extra progress call.
    if (first && fd_) (void)flush();
  }

  Status progress(Matcher &m) noexcept override {
    if (broken_) return std::unexpected(*broken_);
    if (!fd_) {
      if (auto st = establish(); !st) return st;
      if (!fd_) return {};
    }
    if (!out_.empty())
      if (auto st = flush(); !st) return st;
    Status st = receive(m);
    publish_wait_state();
    return st;
  }

  // Called without the channel's lock, possibly while another thread runs
  // progress(): it reads only what progress() published in an atomic, and
  // the listener's sockets, which never change.
  void wait_for_activity(int timeout_ms) noexcept override {
    uint64_t w = wait_state_.load(std::memory_order_acquire);
    int fd = static_cast<int>(w >> 16) - 1;
    if (fd >= 0) {
      pollfd p{fd, static_cast<short>(w & 0xffff), 0};
      (void)::poll(&p, 1, timeout_ms);
      return;
    }
    pollfd p[8];
    nfds_t n = 0;
    if (listen_fds_)
      for (int l : *listen_fds_)
        if (n < 8) p[n++] = {l, POLLIN, 0};
    (void)::poll(p, n, timeout_ms);
  }

  int event_fd() const noexcept override { return ready_.fd(); }

  void set_closer(std::shared_ptr<Closer> c) noexcept { closer_ = std::move(c); }

  /// A receive matched the WaitingIncoming at the head of the stream.
  void attach(RecvOp &op) noexcept {
    if (broken_) return fail_op(op, *broken_);
    start_receive(op);
  }

 private:
  static constexpr size_t kStageSize = 64 << 10;
  static constexpr size_t kDirectThreshold = 16 << 10;  // payloads worth a header-only read

  /// What wait_for_activity() should poll: the socket for input (unless the
  /// stream must stay in the socket) and for room when sends are queued; the
  /// listeners (fd -1 here) while the connection has not arrived.
  void publish_wait_state() noexcept {
    int fd = fd_ ? fd_.get() : -1;
    short ev = 0;
    if (sink_ != Sink::waiting) ev |= POLLIN;
    if (!out_.empty()) ev |= POLLOUT;
    wait_state_.store(static_cast<uint64_t>(fd + 1) << 16 | static_cast<uint16_t>(ev), std::memory_order_release);
    ready_.watch(fd, broken_ ? 0u : static_cast<uint32_t>(ev), listen_fds_);
  }

  /// Acceptor: pick up the verified connection; our ack goes out before our
  /// first frame.
  Status establish() noexcept {
    if (auto a = listener_->try_take(peer_, chan_seq_)) {
      fd_ = std::move(a->fd);
      tune_socket(fd_.get(), s_);
      out_.set_preface(a->ack);
      listener_ = nullptr;
      publish_wait_state();
      return {};
    }
    if (Clock::now() > deadline_) {
      std::string why;
      try {
        why = listener_->last_refusal();
        if (!why.empty()) why = " (a connection was refused: " + why + ")";
      } catch (const std::bad_alloc &) {
      }
      return broken(make_error(LF_ERR_TIMEOUT,
                               "rank %d did not open its side of the tcp channel within LF_CONNECT_TIMEOUT%s", peer_,
                               why.c_str()));
    }
    return {};
  }

  Status broken(Error e) noexcept {
    if (!broken_) broken_ = e;
    out_.fail_all(e);
    if (sink_ == Sink::op) fail_op(*rop_, e);
    sink_ = Sink::none;
    copy_.reset();
    publish_wait_state();
    return std::unexpected(e);
  }

  Status io_error(int err, const char *what) noexcept {
    if (err == EPIPE || err == ECONNRESET || err == ETIMEDOUT || err == EHOSTUNREACH)
      return broken(make_error(LF_ERR_PEER_GONE, "connection to rank %d broke (%s: %s)", peer_, what, strerror(err)));
    return broken(sys_error(err, "tcp %s (connection to rank %d)", what, peer_));
  }

  Status flush() noexcept {
    if (int err = out_.flush(fd_.get())) return io_error(err, "send");
    publish_wait_state();
    return {};
  }

  /// Orderly close (see the top of the file). Bounded by LF_TCP_LINGER.
  void close_gracefully() noexcept {
    out_.send_bye(fd_.get());
    ::shutdown(fd_.get(), SHUT_WR);
    if (peer_closed_) return;
    if (closer_) return closer_->add(std::move(fd_));
    if (!drain_until_end(fd_.get(), s_.linger_s))
      LF_LOG(debug, "tcp: rank %d did not close its end within LF_TCP_LINGER; closing ours", peer_);
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
  /// With `ahead` > 0 (the staging buffer is empty), up to that many bytes
  /// past `len` go to the staging buffer in the same call: the next frame's
  /// header comes with the payload, one recvmsg() per message.
  Result<bool> read_into(void *dst, size_t len, size_t *count, size_t ahead = 0) noexcept {
    if (len == 0) return false;  // recv() of 0 bytes would read as end of stream
    for (;;) {
      ssize_t n;
      if (ahead == 0) {
        n = ::recv(fd_.get(), dst, len, MSG_DONTWAIT);
      } else {
        iovec iov[2] = {{dst, len}, {stage_.get(), ahead}};
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = 2;
        n = ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT);
      }
      if (n > 0) {
        auto k = static_cast<size_t>(n);
        *count += k < len ? k : len;
        if (k > len) stage_begin_ = 0, stage_end_ = k - len;
        return true;
      }
      if (n == 0) {
        peer_closed_ = true;
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
    uint64_t used = budget_->load(std::memory_order_relaxed), cost = len_ + kUnexpectedOverhead;
    if (cost <= s_.unexpected_budget && used <= s_.unexpected_budget - cost) {
      if (len_ > 0) copy_.reset(new (std::nothrow) char[len_]);
      if (copy_ || len_ == 0) {
        budget_->fetch_add(cost, std::memory_order_relaxed);
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
    took_ = true;
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
        budget_->fetch_sub(len_ + kUnexpectedOverhead, std::memory_order_relaxed);
        return;
      }
      auto *c = new (std::nothrow) CopiedIncoming(tag_, std::move(copy_), len_, budget_);
      if (!c) {
        budget_->fetch_sub(len_ + kUnexpectedOverhead, std::memory_order_relaxed);
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

  /// Connector: the acceptor's ack comes before its first frame.
  Status check_ack() noexcept {
    if (const char *why = ack_->check(stage_.get() + stage_begin_))
      return broken(
          make_error(LF_ERR_PROTOCOL, "rank %d answered the tcp handshake with %s; channel closed", peer_, why));
    stage_begin_ += kHandshakeSize;
    ack_.reset();
    return {};
  }

  Status receive(Matcher &m) noexcept {
    took_ = false;
    // Bounded so that one busy channel cannot starve the others.
    for (int round = 0; round < 256; ++round) {
      if (sink_ == Sink::waiting) return {};
      size_t avail = stage_end_ - stage_begin_;
      if (ack_) {
        if (avail < kHandshakeSize) {
          auto more = fill_stage(kHandshakeSize - avail);
          if (!more) return std::unexpected(more.error());
          if (!*more) return {};
          continue;
        }
        if (auto st = check_ack(); !st) return st;
        continue;
      }
      if (!reader_.in_payload() && sink_ == Sink::none) {
        // A message was taken and nothing more is staged: return rather than
        // pay a recv() that most likely finds nothing (ping-pong). Whatever
        // did arrive is read by the next progress call.
        if (avail == 0 && round > 0 && took_) return {};
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
        if (r.header.type == FrameType::bye) {
          peer_closed_ = true;
          return broken(make_error(LF_ERR_PEER_GONE, "rank %d closed the channel (closed by peer)", peer_));
        }
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
        // The payload ends in this read: take the next header along (more
        // after small messages, which come many at a time).
        size_t ahead = want == reader_.payload_left() ? (last_large_ ? kFrameHeaderSize : kStageSize) : 0;
        size_t got = 0;
        auto more = read_into(dst_ + got_, want, &got, ahead);
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
  std::optional<AckCheck> ack_;                   // connector: the acceptor's answer, still to read
  std::shared_ptr<Closer> closer_;                // takes the socket at close (none: linger here)
  Listener *listener_ = nullptr;                  // acceptor, until connected
  const std::vector<int> *listen_fds_ = nullptr;  // acceptor: set once, read by wait_for_activity
  uint32_t chan_seq_ = 0;
  Deadline deadline_{};       // acceptor: for the connection to arrive
  bool peer_closed_ = false;  // the peer's bye or end of stream was read

  SendQueue out_;
  std::atomic<uint64_t> wait_state_{0};  // (fd + 1) << 16 | poll events, for wait_for_activity
  Readiness ready_;                      // the same for the context's epoll set (event_fd)

  FrameReader reader_;
  std::unique_ptr<uint8_t[]> stage_;
  size_t stage_begin_ = 0, stage_end_ = 0;
  bool last_large_ = false;  // the last frame's payload was >= kDirectThreshold
  bool took_ = false;        // this receive() finished a message
  Sink sink_ = Sink::none;
  uint64_t tag_ = 0, len_ = 0, got_ = 0;  // current frame; got_ counts payload bytes consumed
  RecvOp *rop_ = nullptr;
  char *dst_ = nullptr;   // where payload bytes [0, dst_len_) go
  uint64_t dst_len_ = 0;  // bytes past it are dropped (truncation)
  std::unique_ptr<char[]> copy_;
  Budget budget_;  // bytes charged for this channel's unexpected copies
  std::optional<Error> broken_;
};

void WaitingIncoming::deliver(RecvOp &op) noexcept { ep_->attach(op); }

}  // namespace

Result<std::unique_ptr<Endpoint>> connected_endpoint(Fd fd, const Settings &s, int peer, std::optional<AckCheck> ack,
                                                     std::shared_ptr<Closer> closer) {
  if (auto st = set_nonblocking(fd.get(), true); !st) return std::unexpected(st.error());
  tune_socket(fd.get(), s);
  try {
    auto ep = std::make_unique<TcpEndpoint>(std::move(fd), s, peer, std::move(ack));
    ep->set_closer(std::move(closer));
    return std::unique_ptr<Endpoint>(std::move(ep));
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "tcp: no memory for an endpoint");
  }
}

Result<std::unique_ptr<Endpoint>> accepting_endpoint(Listener &listener, const Settings &s, int peer, uint32_t seq,
                                                     Deadline deadline, std::shared_ptr<Closer> closer) {
  try {
    auto ep = std::make_unique<TcpEndpoint>(listener, s, peer, seq, deadline);
    ep->set_closer(std::move(closer));
    return std::unique_ptr<Endpoint>(std::move(ep));
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "tcp: no memory for an endpoint");
  }
}

Result<std::unique_ptr<Endpoint>> make_endpoint(Fd fd, int peer) {
  return connected_endpoint(std::move(fd), Settings::from_config(), peer, std::nullopt);
}

}  // namespace lf::tcp
