#include "core/net.hpp"

#include <sys/socket.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include "core/log.hpp"

namespace lf {

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Deadline deadline_in(double seconds) noexcept {
  if (seconds <= 0) return Clock::now() + std::chrono::hours(24 * 365);
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int ms_left(Deadline d) noexcept {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now()).count();
  if (left < 0) return 0;
  return left > INT_MAX ? INT_MAX : static_cast<int>(left);
}

Result<SockAddr> SockAddr::parse(const std::string &text) {
  SockAddr a;
  if (text.rfind("tcp://", 0) == 0) {
    std::string rest = text.substr(6);
    auto colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0)
      return LF_FAIL(LF_ERR_INVALID_ARG, "address '%s' needs tcp://host:port", text.c_str());
    a.family = Family::tcp;
    a.host = rest.substr(0, colon);
    char *end = nullptr;
    long port = std::strtol(rest.c_str() + colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
      return LF_FAIL(LF_ERR_INVALID_ARG, "address '%s' has a bad port", text.c_str());
    a.port = static_cast<int>(port);
    return a;
  }
  if (text.rfind("unix:", 0) == 0) {
    std::string rest = text.substr(5);
    if (rest.empty()) return LF_FAIL(LF_ERR_INVALID_ARG, "address '%s' has no path", text.c_str());
    a.family = rest[0] == '@' ? Family::unix_abstract : Family::unix_path;
    a.host = rest[0] == '@' ? rest.substr(1) : rest;
    if (a.host.size() >= sizeof(sockaddr_un::sun_path) - 1)
      return LF_FAIL(LF_ERR_INVALID_ARG, "unix socket path '%s' is too long", text.c_str());
    return a;
  }
  return LF_FAIL(LF_ERR_INVALID_ARG, "address '%s' is neither tcp://host:port nor unix:/path", text.c_str());
}

std::string SockAddr::to_string() const {
  switch (family) {
    case Family::tcp: return "tcp://" + host + ":" + std::to_string(port);
    case Family::unix_path: return "unix:" + host;
    case Family::unix_abstract: return "unix:@" + host;
  }
  return "";
}

namespace {
struct RawAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int domain = AF_INET;
};

Result<RawAddr> resolve(const SockAddr &a) {
  RawAddr r;
  if (a.family == SockAddr::Family::tcp) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(a.host.c_str(), nullptr, &hints, &res);
    if (rc != 0 || !res)
      return LF_FAIL(LF_ERR_INVALID_ARG, "cannot resolve host '%s': %s", a.host.c_str(), gai_strerror(rc));
    std::memcpy(&r.ss, res->ai_addr, res->ai_addrlen);
    r.len = res->ai_addrlen;
    freeaddrinfo(res);
    reinterpret_cast<sockaddr_in *>(&r.ss)->sin_port = htons(static_cast<uint16_t>(a.port));
    r.domain = AF_INET;
    return r;
  }
  auto *un = reinterpret_cast<sockaddr_un *>(&r.ss);
  un->sun_family = AF_UNIX;
  r.domain = AF_UNIX;
  if (a.family == SockAddr::Family::unix_abstract) {
    // Abstract names start with a NUL byte and are not NUL-terminated.
    std::memcpy(un->sun_path + 1, a.host.data(), a.host.size());
    r.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + a.host.size());
  } else {
    std::memcpy(un->sun_path, a.host.c_str(), a.host.size() + 1);
    r.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + a.host.size() + 1);
  }
  return r;
}
}  // namespace

namespace {
/// True when `path` is a socket file of ours that nobody listens on: a
/// connect to it is refused. A live listener (connect succeeds, or anything
/// but ECONNREFUSED), another user's file or a non-socket is not stale.
bool stale_unix_socket(const RawAddr &raw, const std::string &path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid()) return false;
  Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe) return false;
  int rc;
  do {
    rc = ::connect(probe.get(), reinterpret_cast<const sockaddr *>(&raw.ss), raw.len);
  } while (rc != 0 && errno == EINTR);
  return rc != 0 && errno == ECONNREFUSED;
}
}  // namespace

Result<Fd> listen_on(const SockAddr &addr, int backlog) {
  auto raw = resolve(addr);
  if (!raw) return std::unexpected(raw.error());
  Fd fd(::socket(raw->domain, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return std::unexpected(sys_error(errno, "socket"));
  if (raw->domain == AF_INET) {
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr *>(&raw->ss), raw->len) != 0) {
    int err = errno;
    if (err != EADDRINUSE || addr.family != SockAddr::Family::unix_path || !stale_unix_socket(*raw, addr.host))
      return std::unexpected(
          err == EADDRINUSE && addr.family == SockAddr::Family::unix_path
              ? make_error(LF_ERR_IO, "bind %s: address in use by a live listener", addr.to_string().c_str())
              : sys_error(err, "bind %s", addr.to_string().c_str()));
    // A socket file nobody listens on (its owner was killed): replace it.
    if (::unlink(addr.host.c_str()) != 0 && errno != ENOENT)
      return std::unexpected(sys_error(errno, "unlink stale socket %s", addr.to_string().c_str()));
    if (::bind(fd.get(), reinterpret_cast<sockaddr *>(&raw->ss), raw->len) != 0)
      return std::unexpected(sys_error(errno, "bind %s", addr.to_string().c_str()));
  }
  // Only our own user may connect to a socket file (SO_PEERCRED checks again).
  if (addr.family == SockAddr::Family::unix_path && ::chmod(addr.host.c_str(), 0600) != 0)
    return std::unexpected(sys_error(errno, "chmod %s", addr.to_string().c_str()));
  if (::listen(fd.get(), backlog) != 0) return std::unexpected(sys_error(errno, "listen %s", addr.to_string().c_str()));
  return fd;
}

Result<SockAddr> bound_address(int fd, const SockAddr &requested) {
  SockAddr out = requested;
  if (requested.family != SockAddr::Family::tcp) return out;
  sockaddr_in sin{};
  socklen_t len = sizeof sin;
  if (getsockname(fd, reinterpret_cast<sockaddr *>(&sin), &len) != 0)
    return std::unexpected(sys_error(errno, "getsockname"));
  out.port = ntohs(sin.sin_port);
  return out;
}

Result<Fd> connect_to(const SockAddr &addr, Deadline deadline) {
  auto raw = resolve(addr);
  if (!raw) return std::unexpected(raw.error());
  int last_errno = 0;
  for (int attempt = 0;; ++attempt) {
    Fd fd(::socket(raw->domain, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return std::unexpected(sys_error(errno, "socket"));
    int rc;
    do {
      rc = ::connect(fd.get(), reinterpret_cast<sockaddr *>(&raw->ss), raw->len);
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) {
      if (raw->domain == AF_INET) {
        int one = 1;
        setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      }
      return fd;
    }
    last_errno = errno;
    // The peer may simply not be listening yet: retry until the deadline.
    bool retry = last_errno == ECONNREFUSED || last_errno == ENOENT || last_errno == EAGAIN ||
                 last_errno == ETIMEDOUT || last_errno == ENETUNREACH || last_errno == EHOSTUNREACH;
    if (!retry) return std::unexpected(sys_error(last_errno, "connect %s", addr.to_string().c_str()));
    if (Clock::now() >= deadline) break;
    // Back off from 1 ms to 50 ms: a retry loop, not ordering by sleep.
    int ms = attempt < 6 ? (1 << attempt) : 50;
    ::poll(nullptr, 0, std::min(ms, std::max(ms_left(deadline), 1)));
  }
  return LF_FAIL(LF_ERR_TIMEOUT, "nobody accepted a connection at %s before the deadline (last error: %s)",
                 addr.to_string().c_str(), strerror(last_errno));
}

Fd accept_waiting(int listen_fd, const char *who) noexcept {
  for (;;) {
    int raw = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (raw >= 0) return Fd(raw);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) LF_LOG(warn, "%s: accept: %s", who, std::strerror(errno));
    return Fd();
  }
}

Result<Fd> accept_one(int listen_fd, Deadline deadline) {
  for (;;) {
    pollfd p{listen_fd, POLLIN, 0};
    int rc = ::poll(&p, 1, ms_left(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return std::unexpected(sys_error(errno, "poll on listening socket"));
    if (rc == 0) return LF_FAIL(LF_ERR_TIMEOUT, "no connection arrived before the deadline");
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // harmless failure on Unix sockets
      return Fd(fd);
    }
    if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
    return std::unexpected(sys_error(errno, "accept"));
  }
}

namespace {
Status wait_fd(int fd, short events, Deadline deadline, const char *what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, ms_left(deadline));
    if (rc > 0) return {};
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return std::unexpected(sys_error(errno, "poll"));
    return LF_FAIL(LF_ERR_TIMEOUT, "timed out waiting to %s", what);
  }
}
}  // namespace

Status send_all(int fd, const void *buf, size_t len, Deadline deadline) {
  auto *p = static_cast<const char *>(buf);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (auto st = wait_fd(fd, POLLOUT, deadline, "send"); !st) return st;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
      return LF_FAIL(LF_ERR_PEER_GONE, "peer closed the connection (%s)", strerror(errno));
    return std::unexpected(sys_error(errno, "send"));
  }
  return {};
}

Status recv_all(int fd, void *buf, size_t len, Deadline deadline) {
  auto *p = static_cast<char *>(buf);
  while (len > 0) {
    ssize_t n = ::recv(fd, p, len, MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return LF_FAIL(LF_ERR_PEER_GONE, "peer closed the connection");
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (auto st = wait_fd(fd, POLLIN, deadline, "receive"); !st) return st;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return LF_FAIL(LF_ERR_PEER_GONE, "peer reset the connection");
    return std::unexpected(sys_error(errno, "recv"));
  }
  return {};
}

Status send_msg(int fd, const std::string &msg, Deadline deadline) {
  uint64_t len = msg.size();
  if (auto st = send_all(fd, &len, sizeof len, deadline); !st) return st;
  return send_all(fd, msg.data(), msg.size(), deadline);
}

Result<std::string> recv_msg(int fd, Deadline deadline, size_t max_len) {
  uint64_t len = 0;
  if (auto st = recv_all(fd, &len, sizeof len, deadline); !st) return std::unexpected(st.error());
  if (len > max_len)
    return LF_FAIL(LF_ERR_PROTOCOL, "peer announced a %llu-byte message; the limit is %zu",
                   static_cast<unsigned long long>(len), max_len);
  std::string out(len, '\0');
  if (auto st = recv_all(fd, out.data(), len, deadline); !st) return std::unexpected(st.error());
  return out;
}

Status send_fd(int sock, int fd, const void *payload, size_t len) {
  iovec iov{const_cast<void *>(payload), len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return LF_FAIL(LF_ERR_PEER_GONE, "peer closed the socket");
  if (n < 0) return std::unexpected(sys_error(errno, "sendmsg(SCM_RIGHTS)"));
  if (static_cast<size_t>(n) != len) return LF_FAIL(LF_ERR_IO, "sendmsg(SCM_RIGHTS) sent %zd of %zu bytes", n, len);
  return {};
}

Result<Fd> recv_fd(int sock, void *payload, size_t len, Deadline deadline, bool require_fd) {
  if (auto st = wait_fd(sock, POLLIN, deadline, "receive a file descriptor"); !st) return std::unexpected(st.error());
  iovec iov{payload, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return LF_FAIL(LF_ERR_PEER_GONE, "peer closed the socket");
  if (n < 0) return std::unexpected(sys_error(errno, "recvmsg(SCM_RIGHTS)"));
  Fd received;
  for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
      received.reset(fd);
    }
  if (static_cast<size_t>(n) != len) return LF_FAIL(LF_ERR_PROTOCOL, "fd message of %zd bytes, expected %zu", n, len);
  if (!received && require_fd) return LF_FAIL(LF_ERR_PROTOCOL, "message carried no file descriptor");
  return received;
}

Result<PeerCred> peer_credentials(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return std::unexpected(sys_error(errno, "getsockopt(SO_PEERCRED)"));
  return PeerCred{cred.pid, cred.uid, cred.gid};
}

Status set_nonblocking(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return std::unexpected(sys_error(errno, "fcntl(F_GETFL)"));
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (fcntl(fd, F_SETFL, flags) != 0) return std::unexpected(sys_error(errno, "fcntl(F_SETFL)"));
  return {};
}

}  // namespace lf
