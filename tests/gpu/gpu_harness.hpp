// Two-rank harness for the GPU IPC tests.
//
// Ranks are children forked by the test before any thread or Vulkan
// instance exists in it (the parent never touches Vulkan, CUDA or lf_init).
// Each child gets LF_RANK, LF_SIZE=2 and LF_BOOTSTRAP=unix:/tmp/lf-gpu-<pid>-<n>
// plus the test's extra variables, runs its body and _exit()s: 0 success,
// 77 skip (with the reason written to the result pipe), anything else a
// failure (with the text). The two ranks talk only through lavaflow; the
// parent only collects results. TearDown kills and reaps what is left.
#pragma once

#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace gputest {

inline constexpr int kSkip = 77;

struct Rank {
  int rank = 0;
  int result_fd = -1;
};

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

#define GREQUIRE(r, cond, ...)                                                                    \
  do {                                                                                            \
    if (!(cond)) ::gputest::leave((r), 1, __FILE__, __LINE__, "REQUIRE(" #cond ") " __VA_ARGS__); \
  } while (0)

#define GREQUIRE_ST(r, want, call)                                                                               \
  do {                                                                                                           \
    lf_status_t st_ = (call);                                                                                    \
    if (st_ != (want))                                                                                           \
      ::gputest::leave((r), 1, __FILE__, __LINE__, "%s returned %s, want %s (%s)", #call, lf_status_string(st_), \
                       lf_status_string(want), lf_last_error());                                                 \
  } while (0)
#define GREQUIRE_OK(r, call) GREQUIRE_ST(r, LF_OK, call)

/// Leave the child as skipped, with the reason.
#define GSKIP(r, ...) ::gputest::leave((r), ::gputest::kSkip, __FILE__, __LINE__, __VA_ARGS__)

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

class TwoRanks : public ::testing::Test {
 protected:
  /// Environment for both ranks (applied after the bootstrap variables).
  std::vector<std::pair<std::string, std::string>> env;
  /// Environment for one rank only.
  std::vector<std::pair<std::string, std::string>> env_rank[2];

  /// Fork both ranks running `body`, wait for them, and report: failures
  /// fail the test, a skip by either rank skips it.
  void run(const std::function<void(Rank &)> &body, int timeout_s = 100) {
    static int counter = 0;
    const std::string boot = "unix:/tmp/lf-gpu-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    for (int r = 0; r < 2; ++r) {
      int res[2];
      ASSERT_EQ(pipe(res), 0);
      pid_t pid = fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        ::close(res[0]);
        for (const Child &c : kids_) ::close(c.result);
        setenv("LF_RANK", std::to_string(r).c_str(), 1);
        setenv("LF_SIZE", "2", 1);
        setenv("LF_BOOTSTRAP", boot.c_str(), 1);
        setenv("LF_BOOTSTRAP_MODE", "env", 1);
        setenv("LF_BOOTSTRAP_TIMEOUT", "30", 1);
        for (auto &[k, v] : env) setenv(k.c_str(), v.c_str(), 1);
        for (auto &[k, v] : env_rank[r]) setenv(k.c_str(), v.c_str(), 1);
        Rank rk{r, res[1]};
        body(rk);
        _exit(0);
      }
      ::close(res[1]);
      kids_.push_back(Child{pid, res[0], {}, -1});
    }
    collect(timeout_s);
  }

  void TearDown() override {
    for (Child &c : kids_) {
      if (c.pid > 0) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, nullptr, 0);
      }
      ::close(c.result);
    }
    kids_.clear();
  }

 private:
  struct Child {
    pid_t pid = -1;
    int result = -1;
    std::string text;
    int status = -1;
  };

  void collect(int timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    std::string skipped;
    for (size_t i = 0; i < kids_.size(); ++i) {
      Child &c = kids_[i];
      bool eof = false;
      char buf[4096];
      for (;;) {
        const int left = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
        pollfd p{c.result, POLLIN, 0};
        if (left <= 0 || ::poll(&p, 1, left) != 1) break;
        const ssize_t n = ::read(c.result, buf, sizeof buf);
        if (n <= 0) {
          eof = true;
          break;
        }
        c.text.append(buf, static_cast<size_t>(n));
      }
      int st = 0;
      const pid_t got = waitpid(c.pid, &st, eof ? 0 : WNOHANG);
      if (got != c.pid) {
        ADD_FAILURE() << "rank " << i << " did not finish within " << timeout_s << " s: " << c.text;
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &st, 0);
      }
      c.pid = -1;
      c.status = st;
      if (WIFEXITED(st) && WEXITSTATUS(st) == kSkip)
        skipped += c.text;
      else
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
            << "rank " << i << " failed (status " << st << "): " << c.text;
    }
    if (!skipped.empty() && !HasFailure()) GTEST_SKIP() << skipped;
  }

  std::vector<Child> kids_;
};

}  // namespace gputest
