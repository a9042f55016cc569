// The tcp transport end to end between real processes on one host (no root
// needed): ranks started with the standalone bootstrap and LF_TRANSPORTS=tcp
// exchange checksummed, ordered streams of many sizes; four ranks open their
// channels in four different orders; a peer that dies is reported promptly.
//
// The TcpRanks tests fork the ranks from this process (before any thread
// exists) and run the C API in them directly, synchronised over pipes: a
// sender that finalizes before its receiver reads anything; a process
// without the job key (and one running as `nobody`) that connects first and
// tries to inject a message; where the transport listens.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <lavaflow/lavaflow.h>
#include <net/if.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "multiprocess.hpp"
#include "payload.hpp"

using namespace lftest;

namespace {

class TcpLoopback : public ::testing::Test {
 protected:
  void TearDown() override { procs.kill_all(); }
  void start(int size, const std::vector<std::string> &args) {
    std::string addr = "tcp://127.0.0.1:" + std::to_string(free_port());
    for (int r = 0; r < size; ++r) {
      std::vector<std::string> argv = {LF_RANK_WORKER};
      argv.insert(argv.end(), args.begin(), args.end());
      procs.spawn(argv, rank_env(r, size, addr, {{"LF_TRANSPORTS", "tcp"}}));
    }
  }
  std::string word(size_t child, const std::string &prefix, int k) {
    auto l = procs[child].lines(prefix);
    if (l.size() != 1) return "<" + std::to_string(l.size()) + " lines '" + prefix + "'>";
    std::istringstream in(l[0]);
    std::string w;
    for (int j = 0; j <= k; ++j) in >> w;
    return w;
  }
  void expect_streams(int size) {
    for (int r = 0; r < size; ++r) {
      EXPECT_EQ(procs[static_cast<size_t>(r)].exit_code(), 0) << procs.dump();
      for (int p = 0; p < size; ++p) {
        if (p == r) continue;
        std::string got = "stream " + std::to_string(r) + " " + std::to_string(p) + " ";
        std::string sent = "sent " + std::to_string(p) + " " + std::to_string(r) + " ";
        EXPECT_EQ(word(static_cast<size_t>(r), "channel " + std::to_string(r) + " " + std::to_string(p) + " ", 3),
                  "tcp");
        EXPECT_EQ(word(static_cast<size_t>(r), got, 5), word(static_cast<size_t>(p), sent, 5)) << got;
        EXPECT_EQ(word(static_cast<size_t>(r), got, 4), word(static_cast<size_t>(p), sent, 4)) << got;
      }
    }
  }
  Procs procs;
};

TEST_F(TcpLoopback, TwoRanksStream) {
  start(2, {"stream", "66"});
  ASSERT_TRUE(procs.wait_all(120)) << procs.dump();
  expect_streams(2);
}

TEST_F(TcpLoopback, FourRanksOpeningChannelsInDifferentOrders) {
  start(4, {"stream", "22"});
  ASSERT_TRUE(procs.wait_all(180)) << procs.dump();
  expect_streams(4);
}

TEST_F(TcpLoopback, PeerDeathIsReportedPromptly) {
  start(2, {"die"});
  ASSERT_TRUE(procs.wait_all(60)) << procs.dump();
  EXPECT_EQ(word(0, "gone 0 1 ", 3), "LF_ERR_PEER_GONE") << procs.dump();
  std::string ms = word(0, "gone 0 1 ", 4);
  EXPECT_LT(std::atol(ms.c_str()), 2000) << ms;
  EXPECT_EQ(procs[0].exit_code(), 0) << procs.dump();
}

// ---- ranks forked from this process ------------------------------------------------

/// A child running `body` with `env` (LF_* variables of this process
/// dropped); its exit status is the body's result.
struct Child {
  pid_t pid = -1;
  int pidfd = -1;
};

Child fork_child(const Env &env, const std::function<int()> &body) {
  Child c;
  c.pid = fork();
  if (c.pid < 0) std::abort();
  if (c.pid == 0) {
    std::vector<std::string> drop;
    for (char **e = environ; *e; ++e)
      if (std::strncmp(*e, "LF_", 3) == 0) drop.emplace_back(*e, std::strchr(*e, '=') - *e);
    for (const std::string &k : drop) unsetenv(k.c_str());
    for (const auto &[k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    _exit(body());
  }
  c.pidfd = static_cast<int>(syscall(SYS_pidfd_open, c.pid, 0));
  return c;
}

/// Exit code of the child, or -1 (and the child killed) after `seconds`.
int wait_child(Child &c, double seconds) {
  pollfd p{c.pidfd, POLLIN, 0};
  int rc = poll(&p, 1, static_cast<int>(seconds * 1000));
  if (rc <= 0) kill(c.pid, SIGKILL);
  int status = 0;
  waitpid(c.pid, &status, 0);
  close(c.pidfd);
  return rc > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) std::abort();
    r = p[0], w = p[1];
  }
  ~Pipe() {
    close(r);
    close(w);
  }
  void signal(char c = 'x') const {
    if (write(w, &c, 1) != 1) std::abort();
  }
  /// The next byte, or 0 after `seconds`.
  char await(double seconds) const {
    pollfd p{r, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(seconds * 1000)) <= 0) return 0;
    char c = 0;
    return read(r, &c, 1) == 1 ? c : 0;
  }
};

Env rank_of(int rank, int bootstrap_port, Env extra = {}) {
  extra.emplace("LF_TRANSPORTS", "tcp");
  extra.emplace("LF_JOB_KEY", "the job's secret: ranks only");
  return rank_env(rank, 2, "tcp://127.0.0.1:" + std::to_string(bootstrap_port), extra);
}

#define CHILD_CHECK(cond)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "%s:%d: %s failed (%s)\n", __FILE__, __LINE__, #cond, lf_last_error()); \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

std::vector<char> message(size_t n, int i) {
  std::vector<char> v(n);
  for (size_t k = 0; k < n; ++k) v[k] = static_cast<char>((k * 131 + static_cast<size_t>(i) * 7 + 1) & 0xff);
  return v;
}

// Issue 18 §3: the sender's blocking lf_send (5 x 64 KiB) and lf_isend
// (10 x 64 KiB: together less than loopback's socket buffers hold, so the
// sends complete without the receiver) all report LF_OK and it finalizes;
// only then does the
// receiver start to read. Every message must arrive: before the fix, the
// acceptor's answer to the greeting reached a socket the sender had closed,
// and the reset discarded what the receiver had not read yet. Both ways
// round: the sender dials (rank 0) or accepts (rank 1).
TEST(TcpRanks, ReceiverThatStartsAfterTheSenderFinalizedGetsEveryMessage) {
  constexpr size_t kSize = 64 << 10;
  constexpr int kBlocking = 5, kNonBlocking = 10;
  for (int sender : {0, 1}) {
    SCOPED_TRACE("sender is rank " + std::to_string(sender));
    int port = free_port();
    Pipe finalized;
    Child s = fork_child(rank_of(sender, port), [&] {
      lf_context_t ctx;
      CHILD_CHECK(lf_init(&ctx) == LF_OK);
      lf_channel_t ch;
      CHILD_CHECK(lf_channel_open(ctx, 1 - sender, &ch) == LF_OK);
      for (int i = 0; i < kBlocking; ++i) {
        auto m = message(kSize, i);
        CHILD_CHECK(lf_send(ch, m.data(), m.size(), static_cast<uint64_t>(i)) == LF_OK);
      }
      std::vector<std::vector<char>> bufs;
      std::vector<lf_request_t> reqs(kNonBlocking);
      for (int i = 0; i < kNonBlocking; ++i) {
        bufs.push_back(message(kSize, kBlocking + i));
        CHILD_CHECK(lf_isend(ch, bufs.back().data(), kSize, static_cast<uint64_t>(kBlocking + i),
                             &reqs[static_cast<size_t>(i)]) == LF_OK);
      }
      for (lf_request_t r : reqs) CHILD_CHECK(lf_wait(r, nullptr) == LF_OK);
      CHILD_CHECK(lf_channel_close(ch) == LF_OK);
      CHILD_CHECK(lf_finalize(ctx) == LF_OK);
      finalized.signal();
      return 0;
    });
    Child r = fork_child(rank_of(1 - sender, port), [&] {
      lf_context_t ctx;
      CHILD_CHECK(lf_init(&ctx) == LF_OK);
      lf_channel_t ch;
      CHILD_CHECK(lf_channel_open(ctx, sender, &ch) == LF_OK);
      CHILD_CHECK(finalized.await(60) == 'x');
      std::vector<char> got(kSize);
      for (int i = 0; i < kBlocking + kNonBlocking; ++i) {
        size_t n = 0;
        lf_status_t st = lf_recv(ch, got.data(), got.size(), static_cast<uint64_t>(i), &n);
        if (st != LF_OK) std::fprintf(stderr, "message %d of %d: %s\n", i, kBlocking + kNonBlocking, lf_last_error());
        CHILD_CHECK(st == LF_OK);
        CHILD_CHECK(n == kSize && got == message(kSize, i));
      }
      (void)lf_channel_close(ch);
      CHILD_CHECK(lf_finalize(ctx) == LF_OK);
      return 0;
    });
    EXPECT_EQ(wait_child(s, 120), 0);
    EXPECT_EQ(wait_child(r, 120), 0);
  }
}

// A progress thread over tcp channels sleeps on the context's epoll set
// (each tcp endpoint has an event fd) while nothing arrives, instead of
// polling the channels in turn: its rank uses a small share of a core while
// the peer computes for 300 ms. The peer's work is real work, not a sleep.
TEST(TcpRanks, AnIdleProgressThreadSleeps) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "a sanitizer's own cost per wake-up is what this would measure";
#endif
  const int port = free_port();
  Child idle = fork_child(rank_of(0, port), [&] {
    lf_context_t ctx;
    CHILD_CHECK(lf_init(&ctx) == LF_OK);
    lf_channel_t ch;
    CHILD_CHECK(lf_channel_open(ctx, 1, &ch) == LF_OK);
    CHILD_CHECK(lf_progress_thread(ctx, 1) == LF_OK);
    CHILD_CHECK(lf_send(ch, "s", 1, 1) == LF_OK);
    rusage a{}, b{};
    getrusage(RUSAGE_SELF, &a);
    const int64_t t0 = monotonic_ns();
    char x;
    CHILD_CHECK(lf_recv(ch, &x, 1, 2, nullptr) == LF_OK);
    const double wall = static_cast<double>(monotonic_ns() - t0) / 1e9;
    getrusage(RUSAGE_SELF, &b);
    auto secs = [](const timeval &t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
    const double cpu = secs(b.ru_utime) - secs(a.ru_utime) + secs(b.ru_stime) - secs(a.ru_stime);
    if (cpu >= 0.3 * wall)
      std::fprintf(stderr, "the idle rank used %.0f ms of CPU in %.0f ms\n", cpu * 1e3, wall * 1e3);
    CHILD_CHECK(wall > 0.25 && cpu < 0.3 * wall);
    CHILD_CHECK(lf_progress_thread(ctx, 0) == LF_OK);
    CHILD_CHECK(lf_channel_close(ch) == LF_OK);
    CHILD_CHECK(lf_finalize(ctx) == LF_OK);
    return 0;
  });
  Child busy = fork_child(rank_of(1, port), [&] {
    lf_context_t ctx;
    CHILD_CHECK(lf_init(&ctx) == LF_OK);
    lf_channel_t ch;
    CHILD_CHECK(lf_channel_open(ctx, 0, &ch) == LF_OK);
    char x;
    CHILD_CHECK(lf_recv(ch, &x, 1, 1, nullptr) == LF_OK);
    volatile uint64_t acc = 0;
    const int64_t until = monotonic_ns() + 300'000'000;
    while (monotonic_ns() < until)
      for (int i = 0; i < 1000; ++i) acc = acc + mix(static_cast<uint64_t>(i));
    CHILD_CHECK(lf_send(ch, "w", 1, 2) == LF_OK);
    CHILD_CHECK(lf_channel_close(ch) == LF_OK);
    CHILD_CHECK(lf_finalize(ctx) == LF_OK);
    return 0;
  });
  EXPECT_EQ(wait_child(idle, 120), 0);
  EXPECT_EQ(wait_child(busy, 120), 0);
}

// ---- injection ------------------------------------------------------------------

/// What the tcp transport of a rank on this host publishes before its
/// nonce: the address list, the port and the network namespace. A local
/// attacker can compute it (this is how the job token of old was derived).
std::string published_prefix(int port) {
  std::string s = "tcp://";
  ifaddrs *ifa = nullptr;
  if (getifaddrs(&ifa) == 0) {
    for (ifaddrs *p = ifa; p; p = p->ifa_next) {
      if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET || !(p->ifa_flags & IFF_UP)) continue;
      if (p->ifa_flags & IFF_LOOPBACK) continue;
      char ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in *>(p->ifa_addr)->sin_addr, ip, sizeof ip);
      uint32_t mask = p->ifa_netmask ? ntohl(reinterpret_cast<sockaddr_in *>(p->ifa_netmask)->sin_addr.s_addr) : ~0u;
      s += std::string(ip) + "/" + std::to_string(__builtin_popcount(mask)) + ",";
    }
    freeifaddrs(ifa);
  }
  struct stat st {};
  stat("/proc/self/ns/net", &st);
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  std::getline(boot, boot_id);
  return s + "127.0.0.1/8:" + std::to_string(port) + ";netns=" + boot_id + ":" + std::to_string(st.st_ino);
}

void put_le(std::vector<uint8_t> &b, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
}

/// A data frame (tests/remote/test_tcp_unit.cpp has the format) carrying `text`.
std::vector<uint8_t> data_frame(uint64_t tag, const std::string &text) {
  std::vector<uint8_t> b(32);
  put_le(b, 0, 0x4654464c, 4);
  b[4] = 1;
  b[5] = 1;
  put_le(b, 16, tag, 8);
  put_le(b, 24, text.size(), 8);
  b.insert(b.end(), text.begin(), text.end());
  return b;
}

/// The attacks of issue 18 §1, from a process without the key: every
/// greeting it can forge (the old public-hash token, the new hello with a
/// guessed proof, garbage, half a hello that then stalls), each followed by
/// a data frame. Returns the number of connections that were closed by the
/// rank (the stalled one stays open: the caller closes it at exit).
int attack(int port0, int port1) {
  uint64_t token = 1469598103934665603ull;  // the old job token: FNV-1a of what every rank published
  for (int p : {port0, port1}) {
    for (char c : published_prefix(p)) token = (token ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    token = (token ^ 0xff) * 1099511628211ull;
  }
  std::vector<std::vector<uint8_t>> greetings;
  std::vector<uint8_t> old(32, 0);  // the greeting of old: magic LFTH, version 1, hello, 0 -> 1, channel 0, token
  put_le(old, 0, 0x4854464c, 4);
  put_le(old, 4, 1, 2);
  put_le(old, 6, 1, 2);
  put_le(old, 8, 0, 4);
  put_le(old, 12, 1, 4);
  put_le(old, 24, token, 8);
  greetings.push_back(old);
  std::vector<uint8_t> hello(72, 0x5a);  // today's hello with a proof the attacker cannot compute
  put_le(hello, 0, 0x4854464c, 4);
  put_le(hello, 4, 2, 2);
  put_le(hello, 6, 1, 2);
  put_le(hello, 8, 0, 4);
  put_le(hello, 12, 1, 4);
  put_le(hello, 16, 0, 4);
  put_le(hello, 20, 0, 4);
  greetings.push_back(hello);
  greetings.push_back(std::vector<uint8_t>(72, 0xee));
  int closed = 0;
  std::vector<int> open_fds;
  for (auto &g : greetings) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port1));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) return -1;
    auto frame = data_frame(7, "INJECTED");
    g.insert(g.end(), frame.begin(), frame.end());
    if (write(fd, g.data(), g.size()) != static_cast<ssize_t>(g.size())) return -1;
    open_fds.push_back(fd);
  }
  int stalled = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port1));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(stalled, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) return -1;
  if (write(stalled, hello.data(), 20) != 20) return -1;
  // Each forged connection must be refused (closed) by the rank; wait for it.
  for (int fd : open_fds) {
    pollfd p{fd, POLLIN, 0};
    char buf[256];
    for (;;) {
      if (poll(&p, 1, 30000) <= 0) break;
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) {
        ++closed;
        break;
      }
    }
    close(fd);
  }
  return closed;
}

// Issue 18 §1: a process that does not hold the job key connects to rank 1's
// port before rank 0 opens the channel and plants greetings and data frames.
// Rank 1 must receive exactly rank 0's messages, promptly (no handshake
// deadline spent), and rank 0's sends must all be delivered. Where the test
// runs as root the attacker also drops to uid 65534 (`nobody`) first.
TEST(TcpRanks, ConnectionsWithoutTheJobKeyCannotInject) {
  int port = free_port(), port0 = free_port(), port1 = free_port();
  Pipe ready, go, done, got;
  Child r0 = fork_child(rank_of(0, port, {{"LF_TCP_PORT", std::to_string(port0)}}), [&] {
    lf_context_t ctx;
    CHILD_CHECK(lf_init(&ctx) == LF_OK);
    CHILD_CHECK(go.await(60) == 'x');
    lf_channel_t ch;
    CHILD_CHECK(lf_channel_open(ctx, 1, &ch) == LF_OK);
    for (int i = 0; i < 3; ++i) {
      std::string m = "REAL " + std::to_string(i);
      CHILD_CHECK(lf_send(ch, m.data(), m.size(), 7) == LF_OK);
    }
    CHILD_CHECK(done.await(60) == 'x');  // rank 1 has everything
    CHILD_CHECK(lf_channel_close(ch) == LF_OK);
    CHILD_CHECK(lf_finalize(ctx) == LF_OK);
    return 0;
  });
  Child r1 = fork_child(rank_of(1, port, {{"LF_TCP_PORT", std::to_string(port1)}}), [&] {
    lf_context_t ctx;
    CHILD_CHECK(lf_init(&ctx) == LF_OK);
    lf_channel_t ch;
    CHILD_CHECK(lf_channel_open(ctx, 0, &ch) == LF_OK);
    ready.signal();
    for (int i = 0; i < 3; ++i) {
      char buf[64] = {};
      size_t n = 0;
      CHILD_CHECK(lf_recv(ch, buf, sizeof buf, 7, &n) == LF_OK);
      std::string m(buf, n), want = "REAL " + std::to_string(i);
      if (m != want) std::fprintf(stderr, "rank 1 received '%s' instead of '%s'\n", m.c_str(), want.c_str());
      CHILD_CHECK(m == want);
      if (i == 0) got.signal();
    }
    done.signal();
    // Nothing more is pending on the channel: a receive that only injected
    // data could match times out (or fails as rank 0 closes).
    lf_request_t req;
    char buf[64];
    CHILD_CHECK(lf_irecv(ch, buf, sizeof buf, LF_ANY_TAG, &req) == LF_OK);
    CHILD_CHECK(lf_wait_timeout(req, 200, nullptr) != LF_OK);
    (void)lf_channel_close(ch);
    (void)lf_finalize(ctx);
    return 0;
  });
  ASSERT_EQ(ready.await(60), 'x');
  Child attacker = fork_child({}, [&] {
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) return 2;
    return attack(port0, port1) == 3 ? 0 : 3;
  });
  EXPECT_EQ(wait_child(attacker, 60), 0) << "every forged connection must be closed by rank 1";
  auto start = std::chrono::steady_clock::now();
  go.signal();
  EXPECT_EQ(got.await(60), 'x');
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(s, 5.0) << "the real connection waited for a handshake deadline";
  EXPECT_EQ(wait_child(r0, 60), 0);
  EXPECT_EQ(wait_child(r1, 60), 0);
}

// ---- where it listens ------------------------------------------------------------

/// Local addresses (hex ip:port as in /proc/net/tcp) of the listening TCP
/// sockets this process holds.
std::vector<std::string> my_listeners() {
  std::set<std::string> inodes;
  for (int fd = 0; fd < 1024; ++fd) {
    char link[256];
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
    if (n <= 0) continue;
    link[n] = 0;
    if (std::strncmp(link, "socket:[", 8) == 0) inodes.insert(std::string(link + 8, std::strchr(link, ']')));
  }
  std::vector<std::string> out;
  std::ifstream f("/proc/self/net/tcp");
  std::string line;
  std::getline(f, line);
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string sl, local, remote, state, queues, tr, retr, uid, timeout, inode;
    in >> sl >> local >> remote >> state >> queues >> tr >> retr >> uid >> timeout >> inode;
    if (state == "0A" && inodes.count(inode)) out.push_back(local);
  }
  return out;
}

// Issue 18 §2: with LF_TRANSPORTS excluding tcp nothing listens; with tcp
// allowed, it listens on the addresses it publishes, never on 0.0.0.0.
TEST(TcpRanks, ListensOnlyWhereAllowedAndNeverOnTheWildcard) {
  for (const char *transports : {"shm", "^tcp", "tcp", ""}) {
    SCOPED_TRACE(std::string("LF_TRANSPORTS=") + transports);
    Child c = fork_child({{"LF_TRANSPORTS", transports}}, [&] {
      lf_context_t ctx;
      CHILD_CHECK(lf_init(&ctx) == LF_OK);
      auto l = my_listeners();
      bool tcp = std::string(transports) == "tcp" || std::string(transports).empty();
      for (const std::string &a : l) std::fprintf(stderr, "listening on %s\n", a.c_str());
      CHILD_CHECK(tcp ? !l.empty() : l.empty());
      for (const std::string &a : l) CHILD_CHECK(a.rfind("00000000:", 0) != 0);
      CHILD_CHECK(lf_finalize(ctx) == LF_OK);
      return 0;
    });
    EXPECT_EQ(wait_child(c, 60), 0);
  }
}

}  // namespace
