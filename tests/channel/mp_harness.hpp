// Multi-process test harness for channel tests.
//
// Ranks are forked children of the test process, started before any thread
// exists (the parent never calls lf_init). Each child gets its own rank
// environment (LF_RANK, LF_SIZE, LF_BOOTSTRAP=unix:/tmp/lf-test-<pid>-<n>),
// runs its body and _exit()s with 0 on success. Failures are written as text
// to a result pipe the parent prints. Parent and children synchronise over
// pipes only (signal()/await()), never by sleeping. TearDown kills and reaps
// whatever is still running.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace lftest {

/// What a rank's body sees.
struct Rank {
  int rank = 0;
  int size = 0;
  int result_fd = -1;  ///< failure text goes here
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
};

/// Record a failure and leave the child at once.
[[noreturn]] inline void child_fail(const Rank &r, const char *file, int line, const char *fmt, ...) {
  char buf[1024];
  int n = std::snprintf(buf, sizeof buf, "rank %d: %s:%d: ", r.rank, file, line);
  va_list ap;
  va_start(ap, fmt);
  n += std::vsnprintf(buf + n, sizeof buf - static_cast<size_t>(n), fmt, ap);
  va_end(ap);
  if (n > static_cast<int>(sizeof buf) - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  (void)!::write(r.result_fd, buf, static_cast<size_t>(n));
  _exit(1);
}

#define REQUIRE(r, cond, ...)                                                                      \
  do {                                                                                             \
    if (!(cond)) ::lftest::child_fail((r), __FILE__, __LINE__, "REQUIRE(" #cond ") " __VA_ARGS__); \
  } while (0)

/// An lf_status_t call that must return `want`; prints lf_last_error() otherwise.
#define REQUIRE_ST(r, want, call)                                                                                 \
  do {                                                                                                            \
    lf_status_t st_ = (call);                                                                                     \
    if (st_ != (want))                                                                                            \
      ::lftest::child_fail((r), __FILE__, __LINE__, "%s returned %s, want %s (%s)", #call, lf_status_string(st_), \
                           lf_status_string(want), lf_last_error());                                              \
  } while (0)
#define REQUIRE_OK(r, call) REQUIRE_ST(r, LF_OK, call)

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

class MultiProcess : public ::testing::Test {
 protected:
  struct Child {
    pid_t pid = -1;
    int result = -1, to_child = -1, from_child = -1;
    std::string text;
    int status = -1;
  };

  /// Environment applied in every child before its body (e.g. tunables).
  std::vector<std::pair<std::string, std::string>> env;

  /// Fork `n` ranks running `body`; `per_rank_env(rank)` may add variables.
  void spawn(int n, const std::function<void(Rank &)> &body, const std::function<void(int)> &per_rank_env = nullptr) {
    static int counter = 0;
    bootstrap_ = "unix:/tmp/lf-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    for (int r = 0; r < n; ++r) {
      int res[2], up[2], down[2];
      ASSERT_EQ(pipe(res), 0);
      ASSERT_EQ(pipe(up), 0);
      ASSERT_EQ(pipe(down), 0);
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

  /// Wait for one byte from rank `r` (fails the test on EOF or timeout).
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
  /// to have succeeded, except those in `killed`.
  void expect_all_ok(int timeout_s = 100, std::vector<int> killed = {}) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
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
      bool is_killed = std::find(killed.begin(), killed.end(), static_cast<int>(i)) != killed.end();
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
      EXPECT_TRUE(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)
          << "rank " << i << " failed (status " << c.status << "): " << c.text;
    }
  }

  void TearDown() override {
    for (Child &c : kids_) {
      if (c.pid > 0) {
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

  std::vector<Child> kids_;
  std::string bootstrap_;
};

}  // namespace lftest
