// The shm transport's listener against silent connections (issue 18): every
// rank listens on an abstract Unix socket that any local process can reach.
// Connections that never send a handshake, from another user (refused by
// SO_PEERCRED) or from the same user, must not delay the next
// lf_channel_open of the real ranks: handshakes are served together, so a
// silent connection costs nothing but a slot.
//
// The ranks are lf_rank_worker processes ("gate" scenario): they bootstrap,
// say "ready", and open their channel only when this process writes the go
// byte, after it made the silent connections. The other user is a child
// forked before any thread exists that setuid()s to nobody (65534).
#include <gtest/gtest.h>
#include <sys/un.h>

#include <fstream>
#include <set>

#include "multiprocess.hpp"

using namespace lftest;

namespace {

/// The abstract socket name ("lavaflow-...-<pid>-...") shm listens on in `pid`.
std::string shm_listener_of(pid_t pid) {
  std::ifstream in("/proc/net/unix");
  std::string line, want = "-" + std::to_string(pid) + "-";
  std::set<std::string> names;
  while (std::getline(in, line)) {
    auto at = line.find(" @lavaflow-");
    if (at == std::string::npos) continue;
    std::string name = line.substr(at + 2);
    if (name.find(want) != std::string::npos) names.insert(name);
  }
  return names.size() == 1 ? *names.begin() : std::string();
}

int connect_abstract(const std::string &name) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, name.data(), name.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr *>(&a), len) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

class ShmListener : public ::testing::Test {
 protected:
  void TearDown() override {
    procs.kill_all();
    for (int fd : silent) close(fd);
    if (quit_w >= 0) close(quit_w);  // the other user's child sees EOF and exits
    if (stranger > 0) {
      kill(stranger, SIGKILL);
      waitpid(stranger, nullptr, 0);
    }
    if (go_w >= 0) close(go_w);
  }

  /// Two ranks waiting at the gate; returns their listeners' names.
  std::vector<std::string> start_ranks() {
    int go[2];
    if (pipe(go) != 0) std::abort();
    go_w = go[1];
    fcntl(go_w, F_SETFD, FD_CLOEXEC);  // only the read end is inherited
    std::string addr = "tcp://127.0.0.1:" + std::to_string(free_port());
    for (int r = 0; r < 2; ++r)
      procs.spawn({LF_RANK_WORKER, "gate", std::to_string(go[0])},
                  rank_env(r, 2, addr, {{"LF_TRANSPORTS", "shm"}, {"LF_CONNECT_TIMEOUT", "30"}}));
    close(go[0]);
    bool ready = procs.wait_until(
        60, [&] { return procs[0].lines("ready 0").size() == 1 && procs[1].lines("ready 1").size() == 1; });
    EXPECT_TRUE(ready) << procs.dump();
    std::vector<std::string> names;
    for (size_t i = 0; i < 2; ++i) names.push_back(shm_listener_of(procs[i].pid));
    return names;
  }

  /// Fork a child that becomes `uid`, makes `n` connections to each listener,
  /// reports over a pipe and holds them until the quit pipe closes.
  bool connect_as(uid_t uid, const std::vector<std::string> &names, int n) {
    int ready[2], quit[2];
    if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(quit, O_CLOEXEC) != 0) std::abort();
    stranger = fork();
    if (stranger < 0) std::abort();
    if (stranger == 0) {
      close(ready[0]), close(quit[1]);
      char ok = 'y';
      if (setgid(uid) != 0 || setuid(uid) != 0) ok = 'u';
      for (const std::string &name : names)
        for (int i = 0; i < n && ok == 'y'; ++i)
          if (connect_abstract(name) < 0) ok = 'c';
      if (write(ready[1], &ok, 1) != 1) _exit(1);
      char c;
      while (read(quit[0], &c, 1) != 0) {
      }
      _exit(0);
    }
    close(ready[1]), close(quit[0]);
    quit_w = quit[1];
    char ok = 0;
    pollfd p{ready[0], POLLIN, 0};
    bool got = poll(&p, 1, 30000) == 1 && read(ready[0], &ok, 1) == 1;
    close(ready[0]);
    return got && ok == 'y';
  }

  /// Open the gate; both ranks must open their channel promptly.
  void expect_prompt_open() {
    char go[2] = {'g', 'g'};
    ASSERT_EQ(write(go_w, go, 2), 2);
    ASSERT_TRUE(procs.wait_all(60)) << procs.dump();
    for (int r = 0; r < 2; ++r) {
      const Proc &c = procs[static_cast<size_t>(r)];
      EXPECT_EQ(c.exit_code(), 0) << procs.dump();
      auto opened = c.lines("opened " + std::to_string(r) + " ");
      ASSERT_EQ(opened.size(), 1u) << procs.dump();
      long long ms = -1;
      std::sscanf(opened[0].c_str(), "opened %*d %*d %lld", &ms);
      // One handshake budget is 5 s; silent connections must cost none of it.
      EXPECT_LT(ms, 4000) << opened[0] << "\n" << procs.dump();
      EXPECT_NE(opened[0].find(" shm"), std::string::npos) << opened[0];
    }
  }

  Procs procs;
  std::vector<int> silent;
  pid_t stranger = -1;
  int quit_w = -1, go_w = -1;
};

TEST_F(ShmListener, SilentConnectionsFromAnotherUserDelayNothing) {
  if (!is_root()) GTEST_SKIP() << "needs root to become another user (nobody)";
  auto names = start_ranks();
  ASSERT_FALSE(names[0].empty() || names[1].empty()) << "no shm listener found in /proc/net/unix\n" << procs.dump();
  ASSERT_TRUE(connect_as(65534, names, 8)) << "the child could not become nobody or connect";
  expect_prompt_open();
}

TEST_F(ShmListener, SilentConnectionsFromTheSameUserDelayNothing) {
  auto names = start_ranks();
  ASSERT_FALSE(names[0].empty() || names[1].empty()) << "no shm listener found in /proc/net/unix\n" << procs.dump();
  for (const std::string &name : names)
    for (int i = 0; i < 8; ++i) {
      int fd = connect_abstract(name);
      ASSERT_GE(fd, 0) << name;
      silent.push_back(fd);
    }
  expect_prompt_open();
}

}  // namespace
