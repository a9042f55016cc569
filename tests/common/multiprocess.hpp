// The one multi-process harness of the test suites.
//
// Two ways to run ranks, both started before any thread, Vulkan instance or
// CUDA context exists in the test process (the parent never calls lf_init):
//
//  - MultiProcess (a gtest fixture): forked children that run a C++ body.
//    Each child gets LF_RANK, LF_SIZE, LF_BOOTSTRAP=unix:/tmp/lf-test-<pid>-<n>
//    and the test's extra variables, runs its body and _exit()s: 0 success,
//    kSkip (77) skipped with the reason written to its result pipe, anything
//    else a failure with the text. Parent and children synchronise over pipes
//    (Rank::signal/await, MultiProcess::signal/await), never by sleeping.
//  - Procs: exec'd programs (a rank worker, mpiexec) with their stdout and
//    stderr collected through a pipe and their exit seen through a pidfd.
//
// Every wait has a deadline. TearDown (and ~Procs) kills and reaps whatever is
// still running, and prints the failure text of children that the test never
// read because it stopped early.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace lftest {

/// Exit status of a child that skipped (the reason is its result text).
inline constexpr int kSkip = 77;

inline int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Resident set size of the calling process in bytes (VmRSS).
inline size_t rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  return 0;
}

/// Whether this process is root (the namespace tests need it).
inline bool is_root() { return geteuid() == 0; }

/// Run a shell command quietly; true on exit status 0.
inline bool sh_ok(const std::string &cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

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

/// Run `probe` in a forked child, so that the test process itself never
/// initialises Vulkan or CUDA (which do not survive a fork). Returns "" when
/// the probe returned "" (available), else its reason.
inline std::string probe_in_child(const std::function<std::string()> &probe) {
  int p[2];
  if (pipe(p) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    ::close(p[0]);
    const std::string why = probe();
    (void)!::write(p[1], why.data(), why.size());
    _exit(0);
  }
  ::close(p[1]);
  std::string why;
  char buf[512];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) why.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return "the probe process crashed";
  return why;
}

// ---- exec'd programs ------------------------------------------------------------------

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
  /// environment, minus its LF_* and launcher variables. Returns the index.
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

/// Environment of one standalone rank: no launcher variables leak in.
inline Env rank_env(int rank, int size, const std::string &bootstrap, Env extra = {}) {
  extra["LF_RANK"] = std::to_string(rank);
  extra["LF_SIZE"] = std::to_string(size);
  extra["LF_BOOTSTRAP"] = bootstrap;
  extra.emplace("LF_BOOTSTRAP_TIMEOUT", "30");
  extra.emplace("LF_LOG_LEVEL", "warn");
  return extra;
}

// ---- forked ranks ---------------------------------------------------------------------

/// What a rank's body sees.
struct Rank {
  int rank = 0;
  int size = 0;
  int result_fd = -1;  ///< failure (or skip) text goes here
  int to_parent = -1;
  int from_parent = -1;

  /// Tell the parent something (one byte).
  void signal(char c) const {
    if (::write(to_parent, &c, 1) != 1) _exit(3);
  }
  /// Wait for one byte from the parent.
  char await() const {
    char c = 0;
    if (::read(from_parent, &c, 1) != 1) _exit(4);
    return c;
  }
  /// Non-blocking check for a byte from the parent.
  bool poll_parent(char &c) const {
    pollfd p{from_parent, POLLIN, 0};
    if (::poll(&p, 1, 0) != 1) return false;
    return ::read(from_parent, &c, 1) == 1;
  }
  /// Send raw bytes to the parent (e.g. a timestamp).
  void report(const void *data, size_t n) const {
    if (::write(to_parent, data, n) != static_cast<ssize_t>(n)) _exit(3);
  }
  /// Read exactly n raw bytes from the parent.
  void receive(void *data, size_t n) const {
    auto *p = static_cast<char *>(data);
    while (n) {
      ssize_t got = ::read(from_parent, p, n);
      if (got <= 0) _exit(4);
      p += got;
      n -= static_cast<size_t>(got);
    }
  }
};

/// Write "rank R: file:line: text" to the result pipe and leave with `code`.
[[noreturn]] inline void leave(const Rank &r, int code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
[[noreturn]] inline void leave(const Rank &r, int code, const char *file, int line, const char *fmt, ...) {
  char buf[2048];
  int n = std::snprintf(buf, sizeof buf, "rank %d: %s:%d: ", r.rank, file, line);
  va_list ap;
  va_start(ap, fmt);
  n += std::vsnprintf(buf + n, sizeof buf - static_cast<size_t>(n), fmt, ap);
  va_end(ap);
  if (n > static_cast<int>(sizeof buf) - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  (void)!::write(r.result_fd, buf, static_cast<size_t>(n));
  _exit(code);
}

#define REQUIRE(r, cond, ...)                                                                    \
  do {                                                                                           \
    if (!(cond)) ::lftest::leave((r), 1, __FILE__, __LINE__, "REQUIRE(" #cond ") " __VA_ARGS__); \
  } while (0)

/// An lf_status_t call that must return `want`; prints lf_last_error() otherwise.
#define REQUIRE_ST(r, want, call)                                                                               \
  do {                                                                                                          \
    lf_status_t st_ = (call);                                                                                   \
    if (st_ != (want))                                                                                          \
      ::lftest::leave((r), 1, __FILE__, __LINE__, "%s returned %s, want %s (%s)", #call, lf_status_string(st_), \
                      lf_status_string(want), lf_last_error());                                                 \
  } while (0)
#define REQUIRE_OK(r, call) REQUIRE_ST(r, LF_OK, call)

/// Leave the child as skipped, with the reason (printf format).
#define SKIP_RANK(r, ...) ::lftest::leave((r), ::lftest::kSkip, __FILE__, __LINE__, __VA_ARGS__)

class MultiProcess : public ::testing::Test {
 protected:
  /// Environment applied in every child after the bootstrap variables.
  std::vector<std::pair<std::string, std::string>> env;
  /// Environment for one rank only (applied after `env`).
  std::map<int, std::vector<std::pair<std::string, std::string>>> env_rank;

  /// Fork `n` ranks running `body`; `per_rank_env(rank)` may add variables.
  void spawn(int n, const std::function<void(Rank &)> &body, const std::function<void(int)> &per_rank_env = nullptr) {
    static int counter = 0;
    bootstrap_ = "unix:/tmp/lf-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    for (int r = 0; r < n; ++r) {
      int res[2], up[2], down[2];
      ASSERT_EQ(pipe(res), 0);
      ASSERT_EQ(pipe(up), 0);
      ASSERT_EQ(pipe(down), 0);
      // Output the child writes must reach the terminal in order with ours.
      std::fflush(nullptr);
      pid_t pid = fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        ::close(res[0]);
        ::close(up[0]);
        ::close(down[1]);
        for (auto &c : kids_) {
          ::close(c.result);
          ::close(c.to_child);
          ::close(c.from_child);
        }
        setenv("LF_RANK", std::to_string(r).c_str(), 1);
        setenv("LF_SIZE", std::to_string(n).c_str(), 1);
        setenv("LF_BOOTSTRAP", bootstrap_.c_str(), 1);
        setenv("LF_BOOTSTRAP_MODE", "env", 1);
        setenv("LF_BOOTSTRAP_TIMEOUT", "30", 1);
        for (auto &[k, v] : env) setenv(k.c_str(), v.c_str(), 1);
        if (auto it = env_rank.find(r); it != env_rank.end())
          for (auto &[k, v] : it->second) setenv(k.c_str(), v.c_str(), 1);
        if (per_rank_env) per_rank_env(r);
        Rank rk{r, n, res[1], up[1], down[0]};
        body(rk);
        _exit(0);
      }
      ::close(res[1]);
      ::close(up[1]);
      ::close(down[0]);
      kids_.push_back(Child{pid, res[0], down[1], up[0], {}, -1});
    }
  }

  /// spawn() then expect_all_ok(): the whole test for bodies that need no
  /// parent. A skip by any rank (and no failure) skips the test.
  void run(int n, const std::function<void(Rank &)> &body, int timeout_s = 100) {
    spawn(n, body);
    if (HasFatalFailure()) return;
    expect_all_ok(timeout_s);
  }

  /// Wait for one byte from rank `r`; 0 on EOF or timeout.
  char await(int r, int timeout_ms = 60000) {
    pollfd p{kids_[static_cast<size_t>(r)].from_child, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return 0;
    char c = 0;
    return ::read(p.fd, &c, 1) == 1 ? c : 0;
  }
  /// Read exactly n bytes reported by rank r.
  bool read_report(int r, void *out, size_t n, int timeout_ms = 60000) {
    auto *p = static_cast<char *>(out);
    while (n) {
      pollfd pf{kids_[static_cast<size_t>(r)].from_child, POLLIN, 0};
      if (::poll(&pf, 1, timeout_ms) != 1) return false;
      ssize_t got = ::read(pf.fd, p, n);
      if (got <= 0) return false;
      p += got;
      n -= static_cast<size_t>(got);
    }
    return true;
  }
  void signal(int r, char c) { (void)!::write(kids_[static_cast<size_t>(r)].to_child, &c, 1); }
  /// Send raw bytes to rank r (Rank::receive reads them).
  void send_to(int r, const void *data, size_t n) { (void)!::write(kids_[static_cast<size_t>(r)].to_child, data, n); }
  pid_t pid_of(int r) const { return kids_[static_cast<size_t>(r)].pid; }

  /// Reap rank r (after the test killed it); returns the wait status.
  int reap(int r) {
    Child &c = kids_[static_cast<size_t>(r)];
    int st = 0;
    if (c.pid > 0 && waitpid(c.pid, &st, 0) == c.pid) c.pid = -1;
    c.status = st;
    return st;
  }

  /// Wait until every child exited (or the deadline passed) and expect each
  /// to have succeeded, except those in `killed`. When a rank skipped and
  /// none failed, the test is skipped with the ranks' reasons.
  void expect_all_ok(int timeout_s = 100, std::vector<int> killed = {}) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    std::string skipped;
    for (size_t i = 0; i < kids_.size(); ++i) {
      Child &c = kids_[i];
      // Read the failure text until EOF (the child exited) or the deadline.
      char buf[4096];
      bool eof = false;
      for (;;) {
        int left = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
        pollfd p{c.result, POLLIN, 0};
        if (left <= 0 || ::poll(&p, 1, left) != 1) break;
        ssize_t n = ::read(c.result, buf, sizeof buf);
        if (n <= 0) {
          eof = true;
          break;
        }
        c.text.append(buf, static_cast<size_t>(n));
      }
      const bool is_killed = std::find(killed.begin(), killed.end(), static_cast<int>(i)) != killed.end();
      if (c.pid > 0) {
        int st = 0;
        // EOF on the result pipe means the child is exiting: wait for it.
        pid_t got = waitpid(c.pid, &st, eof ? 0 : WNOHANG);
        if (got == 0) {
          ADD_FAILURE() << "rank " << i << " did not finish within " << timeout_s << " s" << c.text;
          kill(c.pid, SIGKILL);
          waitpid(c.pid, &st, 0);
        }
        c.pid = -1;
        c.status = st;
      }
      if (is_killed) continue;
      if (WIFEXITED(c.status) && WEXITSTATUS(c.status) == kSkip)
        skipped += c.text;
      else
        EXPECT_TRUE(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)
            << "rank " << i << " failed (status " << c.status << "): " << c.text;
    }
    if (!skipped.empty() && !HasFailure()) GTEST_SKIP() << skipped;
  }

  void TearDown() override {
    for (Child &c : kids_) {
      if (c.pid > 0) {
        kill(c.pid, SIGCONT);  // a test that stopped a child and then failed
        kill(c.pid, SIGKILL);
        waitpid(c.pid, nullptr, 0);
      }
    }
    // A test that stopped early (an ASSERT on a pipe) left children whose
    // failure text was never read: print it, or CI shows only the symptom.
    // Every child is reaped, so each result pipe ends in EOF.
    for (size_t i = 0; i < kids_.size(); ++i) {
      Child &c = kids_[i];
      char buf[4096];
      ssize_t n;
      while ((n = ::read(c.result, buf, sizeof buf)) > 0) c.text.append(buf, static_cast<size_t>(n));
      if (!c.text.empty() && c.status == -1) ADD_FAILURE() << "rank " << i << " reported: " << c.text;
    }
    for (Child &c : kids_) {
      ::close(c.result);
      ::close(c.to_child);
      ::close(c.from_child);
    }
    kids_.clear();
  }

 private:
  struct Child {
    pid_t pid = -1;
    int result = -1, to_child = -1, from_child = -1;
    std::string text;
    int status = -1;
  };
  std::vector<Child> kids_;
  std::string bootstrap_;
};

}  // namespace lftest
