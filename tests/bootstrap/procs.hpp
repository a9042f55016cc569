// Child processes for multi-process tests: fork (before any thread exists),
// exec, collect stdout+stderr through a pipe, wait for exit through a pidfd.
// Nothing sleeps: every wait is a poll() with a deadline. The destructor
// kills and reaps whatever is still running.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace lftest {

using Env = std::map<std::string, std::string>;

struct Proc {
  pid_t pid = -1;
  int out = -1;    // read end of the child's stdout+stderr
  int pidfd = -1;  // readable when the child exits
  std::string output;
  bool exited = false;
  int status = 0;  // waitpid status once exited

  int exit_code() const { return exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
  /// Lines of output that start with `prefix` (e.g. "stream 0 ").
  std::vector<std::string> lines(const std::string &prefix) const {
    std::vector<std::string> out_lines;
    std::istringstream in(output);
    for (std::string l; std::getline(in, l);)
      if (l.rfind(prefix, 0) == 0) out_lines.push_back(l);
    return out_lines;
  }
};

class Procs {
 public:
  Procs() = default;
  Procs(const Procs &) = delete;
  Procs &operator=(const Procs &) = delete;
  ~Procs() { kill_all(); }

  /// Start argv[0] (looked up in PATH) with `env` added to this process's
  /// environment. Returns the index of the child.
  size_t spawn(const std::vector<std::string> &argv, const Env &env = {}) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) std::abort();
    pid_t pid = fork();
    if (pid < 0) std::abort();
    if (pid == 0) {
      dup2(p[1], 1);
      dup2(p[1], 2);
      // Only what the test says: no LF_* or launcher variables of the caller.
      std::vector<std::string> drop;
      for (char **e = environ; *e; ++e)
        for (const char *prefix : {"LF_", "OMPI_", "PMIX_", "PMI_"})
          if (std::strncmp(*e, prefix, std::strlen(prefix)) == 0)
            drop.emplace_back(*e, std::strchr(*e, '=') ? std::strchr(*e, '=') - *e : std::strlen(*e));
      for (const std::string &k : drop) unsetenv(k.c_str());
      for (const auto &[k, v] : env) setenv(k.c_str(), v.c_str(), 1);
      std::vector<char *> args;
      for (const std::string &a : argv) args.push_back(const_cast<char *>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      dprintf(1, "exec %s failed: %s\n", args[0], strerror(errno));
      _exit(127);
    }
    close(p[1]);
    Proc c;
    c.pid = pid;
    c.out = p[0];
    c.pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    procs_.push_back(c);
    return procs_.size() - 1;
  }

  Proc &operator[](size_t i) { return procs_[i]; }
  size_t size() const { return procs_.size(); }

  /// Collect output until every child exited and closed its output, or the
  /// deadline passed. True when all exited.
  bool wait_all(double seconds) {
    return wait_until(seconds, [&] {
      for (const Proc &c : procs_)
        if (!c.exited || c.out >= 0) return false;
      return true;
    });
  }

  /// Collect output until `done()` holds or the deadline passes.
  template <typename F>
  bool wait_until(double seconds, F done) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      if (done()) return true;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
      if (left <= 0) return false;
      std::vector<pollfd> fds;
      std::vector<std::pair<size_t, bool>> who;  // (child, is the pidfd)
      for (size_t i = 0; i < procs_.size(); ++i) {
        if (procs_[i].out >= 0) fds.push_back({procs_[i].out, POLLIN, 0}), who.push_back({i, false});
        if (!procs_[i].exited && procs_[i].pidfd >= 0)
          fds.push_back({procs_[i].pidfd, POLLIN, 0}), who.push_back({i, true});
      }
      if (fds.empty()) return done();
      int rc = poll(fds.data(), fds.size(), static_cast<int>(left));
      if (rc < 0 && errno != EINTR) return false;
      for (size_t k = 0; rc > 0 && k < fds.size(); ++k) {
        if (!fds[k].revents) continue;
        Proc &c = procs_[who[k].first];
        if (who[k].second) {
          if (waitpid(c.pid, &c.status, WNOHANG) == c.pid) c.exited = true;
          continue;
        }
        char buf[4096];
        ssize_t n = read(c.out, buf, sizeof buf);
        if (n > 0) {
          c.output.append(buf, static_cast<size_t>(n));
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          close(c.out);
          c.out = -1;
        }
      }
    }
  }

  /// Everything the children printed, labelled, for failure messages.
  std::string dump() const {
    std::string s;
    for (size_t i = 0; i < procs_.size(); ++i)
      s += "--- child " + std::to_string(i) + " (exit " + std::to_string(procs_[i].exit_code()) + ")\n" +
           procs_[i].output;
    return s;
  }

  void kill_all() {
    for (Proc &c : procs_) {
      if (!c.exited && c.pid > 0) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &c.status, 0);
        c.exited = true;
      }
      if (c.out >= 0) close(c.out), c.out = -1;
      if (c.pidfd >= 0) close(c.pidfd), c.pidfd = -1;
    }
  }

 private:
  std::vector<Proc> procs_;
};

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then closed).
inline int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0)
    std::abort();
  close(fd);
  return ntohs(a.sin_port);
}

/// Environment of one standalone rank: no launcher variables leak in.
inline Env rank_env(int rank, int size, const std::string &bootstrap, Env extra = {}) {
  extra["LF_RANK"] = std::to_string(rank);
  extra["LF_SIZE"] = std::to_string(size);
  extra["LF_BOOTSTRAP"] = bootstrap;
  extra.emplace("LF_BOOTSTRAP_TIMEOUT", "30");
  extra.emplace("LF_LOG_LEVEL", "warn");
  return extra;
}

/// Whether this process is root (the namespace tests need it).
inline bool is_root() { return geteuid() == 0; }

/// Run a shell command quietly; true on exit status 0.
inline bool sh_ok(const std::string &cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

}  // namespace lftest
