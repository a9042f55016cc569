// Sockets and file descriptors shared by the bootstrap and the transports.
// Every call retries EINTR and reports failures as lf::Error.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>

#include "core/status.hpp"

namespace lf {

/// Owning file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd &operator=(Fd &&o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  ~Fd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

/// Deadline `seconds` from now (a very distant one for seconds <= 0).
Deadline deadline_in(double seconds) noexcept;
/// Milliseconds left until `d`, clamped to [0, INT_MAX]; for poll().
int ms_left(Deadline d) noexcept;

/// A parsed endpoint address.
///   tcp://host:port    IPv4 host name or address
///   unix:/path         filesystem socket
///   unix:@name         abstract socket (Linux; scoped by network namespace)
struct SockAddr {
  enum class Family { tcp, unix_path, unix_abstract } family = Family::tcp;
  std::string host;  ///< tcp host, or the path/name for unix
  int port = 0;
  static Result<SockAddr> parse(const std::string &text);
  std::string to_string() const;
};

/// Listening socket bound to `addr` (port 0 picks a free port; see bound_address).
/// A unix:/path socket gets mode 0600; a socket file left at the path by a
/// killed process of ours (connect is refused) is replaced, a live one is an
/// error ("address in use by a live listener").
Result<Fd> listen_on(const SockAddr &addr, int backlog = 128);
/// Address a listening socket is bound to (fills in the port chosen for port 0).
Result<SockAddr> bound_address(int fd, const SockAddr &requested);
/// Connect, retrying refused/absent endpoints until `deadline` (the peer may
/// not be listening yet). TCP sockets get TCP_NODELAY.
Result<Fd> connect_to(const SockAddr &addr, Deadline deadline);
/// Accept one connection, waiting until `deadline`.
Result<Fd> accept_one(int listen_fd, Deadline deadline);
/// Accept one connection already waiting on a non-blocking listener
/// (close-on-exec, non-blocking); an empty Fd when none waits. A failure
/// other than "none waiting" is logged with `who` and also gives an empty Fd.
Fd accept_waiting(int listen_fd, const char *who) noexcept;

/// Send/receive exactly `len` bytes, waiting until `deadline`. EOF before the
/// end is LF_ERR_PEER_GONE; the deadline passing is LF_ERR_TIMEOUT.
Status send_all(int fd, const void *buf, size_t len, Deadline deadline);
Status recv_all(int fd, void *buf, size_t len, Deadline deadline);

/// Length-prefixed (u64) string message, with a limit on accepted length.
Status send_msg(int fd, const std::string &msg, Deadline deadline);
Result<std::string> recv_msg(int fd, Deadline deadline, size_t max_len = 64u << 20);

/// Pass an fd with SCM_RIGHTS along with `len` bytes of payload (len >= 1).
Status send_fd(int sock, int fd, const void *payload, size_t len);
/// Receive an fd sent by send_fd; payload must be the same length. With
/// require_fd = false a message that carried no fd (sent with send_all)
/// is accepted too and yields an empty Fd.
Result<Fd> recv_fd(int sock, void *payload, size_t len, Deadline deadline, bool require_fd = true);

/// Credentials of the process at the other end of a Unix socket.
struct PeerCred {
  pid_t pid;
  uid_t uid;
  gid_t gid;
};
Result<PeerCred> peer_credentials(int sock);

Status set_nonblocking(int fd, bool on);

}  // namespace lf
