// The TCP transport's connection role (see connection.hpp): handshake checks,
// the listener that verifies incoming connections and stashes them for their
// channel, and the closer that lets closed channels' sockets wind down.
#include "transport/tcp/connection.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "core/log.hpp"

namespace lf::tcp {

const char *AckCheck::check(const uint8_t bytes[kHandshakeSize]) const noexcept {
  Handshake h;
  if (const char *why = decode_handshake(bytes, &h)) return why;
  if (h.kind != HandshakeKind::ack) return "not an ack";
  if (h.from != peer || h.to != me || h.seq != seq) return "an ack for another connection";
  if (!equal_constant_time(h.nonce.data(), acceptor_nonce.data(), kNonceSize)) return "an ack with another nonce";
  auto m = proof_message(HandshakeKind::ack, me, peer, seq, acceptor_nonce, connector_nonce);
  if (!key.verify(m, h.proof)) return "the ack's proof does not verify (another job key)";
  return nullptr;
}

HandshakeBytes make_hello(const JobKey &key, uint32_t me, uint32_t peer, uint32_t seq,
                          const HandshakeNonce &acceptor_nonce, AckCheck *check) {
  Handshake h;
  h.kind = HandshakeKind::hello;
  h.from = me;
  h.to = peer;
  h.seq = seq;
  h.nonce = random_nonce();
  h.proof = key.prove(proof_message(HandshakeKind::hello, me, peer, seq, acceptor_nonce, h.nonce));
  HandshakeBytes out{};
  encode_handshake(h, out.data());
  check->key = key;
  check->me = me;
  check->peer = peer;
  check->seq = seq;
  check->acceptor_nonce = acceptor_nonce;
  check->connector_nonce = h.nonce;
  return out;
}

const char *check_hello(const JobKey &key, uint32_t me, const HandshakeNonce &acceptor_nonce,
                        const uint8_t bytes[kHandshakeSize], Handshake *hello, HandshakeBytes *ack) noexcept {
  Handshake h;
  if (const char *why = decode_handshake(bytes, &h)) return why;
  if (h.kind != HandshakeKind::hello) return "not a hello";
  if (h.to != me || h.from >= me) return "a hello for another rank";
  auto m = proof_message(HandshakeKind::hello, h.from, me, h.seq, acceptor_nonce, h.nonce);
  if (!key.verify(m, h.proof)) return "the hello's proof does not verify (no job key, or another one)";
  Handshake a;
  a.kind = HandshakeKind::ack;
  a.from = me;
  a.to = h.from;
  a.seq = h.seq;
  a.nonce = acceptor_nonce;
  a.proof = key.prove(proof_message(HandshakeKind::ack, h.from, me, h.seq, acceptor_nonce, h.nonce));
  encode_handshake(a, ack->data());
  *hello = h;
  return nullptr;
}

Listener::Listener(std::vector<Fd> sockets, JobKey key, int rank, HandshakeNonce nonce, ListenerLimits limits)
    : sockets_(std::move(sockets)), key_(std::move(key)), rank_(rank), nonce_(nonce), limits_(limits) {
  for (const Fd &s : sockets_) fds_.push_back(s.get());
}

std::optional<Accepted> Listener::try_take(int peer, uint32_t seq) noexcept {
  std::lock_guard g(mu_);
  try {
    serve();
    auto it = stash_.find({peer, seq});
    if (it == stash_.end()) return std::nullopt;
    Accepted a = std::move(it->second.conn);
    stash_.erase(it);
    return a;
  } catch (const std::bad_alloc &) {
    return std::nullopt;  // try again on the next progress
  }
}

void Listener::forget(int peer, uint32_t seq) noexcept {
  std::lock_guard g(mu_);
  try {
    stash_.erase({peer, seq});
    seen_.insert({peer, seq});
  } catch (const std::bad_alloc &) {
  }
}

size_t Listener::pending() noexcept {
  std::lock_guard g(mu_);
  return pending_.size();
}

std::string Listener::last_refusal() noexcept {
  std::lock_guard g(mu_);
  try {
    return last_refusal_;
  } catch (const std::bad_alloc &) {
    return {};
  }
}

size_t Listener::stashed() noexcept {
  std::lock_guard g(mu_);
  return stash_.size();
}

void Listener::serve() {
  Clock::time_point now = Clock::now();
  std::erase_if(pending_, [&](Pending &p) { return !read_hello(p) || now > p.expires; });
  std::erase_if(stash_, [&](const auto &kv) {
    if (now <= kv.second.expires) return false;
    LF_LOG(warn, "tcp: rank %d's channel %u to rank %d was not opened within LF_CONNECT_TIMEOUT; connection dropped",
           rank_, kv.first.second, kv.first.first);
    return true;
  });
  accept_all();
}

void Listener::accept_all() {
  // At the limit the oldest unverified connection makes room: a real
  // connector sends its hello right after connecting, so its connection is
  // verified in the serve() that accepts it, and silent connections (a
  // flood, however long) never hold it up. Bounded per call.
  size_t budget = 4 * limits_.max_pending;
  for (int lfd : fds_) {
    while (budget > 0) {
      int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        break;  // EAGAIN, or out of descriptors: the connection waits in the backlog
      }
      --budget;
      Pending p;
      p.fd.reset(fd);
      p.expires = Clock::now() + limits_.handshake_timeout;
      if (!read_hello(p)) continue;
      if (pending_.size() >= limits_.max_pending) pending_.erase(pending_.begin());
      pending_.push_back(std::move(p));
    }
  }
}

bool Listener::read_hello(Pending &p) {
  // Exactly the hello's bytes: what follows it stays in the socket until the
  // hello is verified.
  ssize_t n = ::recv(p.fd.get(), p.buf.data() + p.got, kHandshakeSize - p.got, MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return false;
  if (n < 0) return true;
  p.got += static_cast<size_t>(n);
  if (p.got < kHandshakeSize) return true;
  Handshake h;
  Accepted a;
  const char *why = check_hello(key_, static_cast<uint32_t>(rank_), nonce_, p.buf.data(), &h, &a.ack);
  Key k{static_cast<int>(h.from), h.seq};
  if (!why && seen_.count(k)) why = "a repeated hello (that channel was connected or closed already)";
  if (!why && stash_.size() >= limits_.max_stash) why = "too many connections waiting for their channel";
  if (why) {
    LF_LOG(warn, "tcp: rank %d refused a connection: %s", rank_, why);
    last_refusal_ = why;
    return false;
  }
  seen_.insert(k);
  a.fd = std::move(p.fd);
  stash_.emplace(k, Stashed{std::move(a), Clock::now() + limits_.stash_timeout});
  return false;
}

namespace {
/// Read and drop what is there: false at end of stream or on an error.
bool drain_now(int fd) noexcept {
  char sink[4096];
  for (;;) {
    ssize_t n = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}
}  // namespace

void Closer::add(Fd fd) noexcept {
  std::lock_guard g(mu_);
  serve();
  if (linger_s_ <= 0 || !drain_now(fd.get())) return;  // closes fd
  try {
    list_.push_back(
        Closing{std::move(fd), Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(linger_s_ * 1000))});
  } catch (const std::bad_alloc &) {
  }
}

size_t Closer::size() noexcept {
  std::lock_guard g(mu_);
  serve();
  return list_.size();
}

void Closer::serve() noexcept {
  Clock::time_point now = Clock::now();
  std::erase_if(list_, [&](Closing &c) { return now > c.until || !drain_now(c.fd.get()); });
}

Closer::~Closer() {
  std::lock_guard g(mu_);
  for (;;) {
    serve();
    if (list_.empty()) return;
    std::vector<pollfd> fds;
    Clock::time_point last = Clock::now();
    for (const Closing &c : list_) {
      fds.push_back({c.fd.get(), POLLIN, 0});
      last = std::max(last, c.until);
    }
    int ms = ms_left(last);
    if (ms <= 0) return;
    (void)::poll(fds.data(), fds.size(), ms);
  }
}

}  // namespace lf::tcp
