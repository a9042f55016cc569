// The rendezvous bootstrap against processes that are not part of the job
// (issue 18): a stranger at rank 0's LF_BOOTSTRAP address, without the job
// key, can neither take a rank's place, nor stall or fail the job, nor learn
// the ranks' location records; an impostor rank 0 learns nothing either; a
// rank with another key is refused with an error that says so; a socket file
// left behind by a killed rank 0 does not block the next job.
//
// This process plays the stranger with plain sockets (no threads); the ranks
// are lf_rank_worker processes. Every wait is bounded; nothing sleeps.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <chrono>
#include <fstream>

#include "core/bootstrap_wire.hpp"
#include "core/net.hpp"
#include "multiprocess.hpp"

using namespace lftest;
namespace wire = lf::bootstrap_wire;

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Connect to `address` as a stranger, retrying until rank 0 listens.
lf::Fd stranger_connect(const std::string &address) {
  auto a = lf::SockAddr::parse(address);
  if (!a) return lf::Fd();
  auto fd = lf::connect_to(*a, lf::deadline_in(20));
  return fd ? std::move(*fd) : lf::Fd();
}

/// Everything readable on `fd` now, without waiting.
std::string drain(int fd) {
  std::string got;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

/// The greeting of the unauthenticated protocol: {magic "LFBS", rank, size}.
std::string old_hello(int32_t rank, int32_t size) {
  struct {
    uint32_t magic;
    int32_t rank, size;
  } h{0x4c464253, rank, size};
  return std::string(reinterpret_cast<const char *>(&h), sizeof h);
}

std::string u64(uint64_t v) { return std::string(reinterpret_cast<const char *>(&v), sizeof v); }

class BootstrapSecurity : public ::testing::Test {
 protected:
  void TearDown() override { procs.kill_all(); }

  std::string tcp_address() { return "tcp://127.0.0.1:" + std::to_string(free_port()); }
  std::string unix_address(const char *what) {
    path_ = "/tmp/lf-bootsec-" + std::string(what) + "-" + std::to_string(getpid()) + ".sock";
    ::unlink(path_.c_str());
    return "unix:" + path_;
  }

  /// A rank of a world of `size` running the init scenario.
  size_t rank(int r, int size, const std::string &address, Env extra = {}) {
    return procs.spawn({LF_RANK_WORKER, "init"}, rank_env(r, size, address, std::move(extra)));
  }

  /// Every started rank exited 0 and printed done within `seconds`.
  void expect_success(double seconds) {
    ASSERT_TRUE(procs.wait_all(seconds)) << "the job did not finish within " << seconds << " s\n" << procs.dump();
    for (size_t i = 0; i < procs.size(); ++i) {
      EXPECT_EQ(procs[i].exit_code(), 0) << procs.dump();
      EXPECT_EQ(procs[i].lines("done ").size(), 1u) << procs.dump();
    }
  }

  /// Rank 0 and rank 1 of a world of two with a stranger that connected
  /// (and sent `attack`) before rank 1 started. The job must finish as if the
  /// stranger were not there: within a few seconds, far below the 30 s
  /// bootstrap timeout that the unauthenticated protocol waited out.
  std::string run_with_stranger(const std::string &address, const std::string &attack) {
    auto t0 = std::chrono::steady_clock::now();
    rank(0, 2, address);
    lf::Fd s = stranger_connect(address);
    EXPECT_TRUE(s) << "could not reach rank 0";
    if (!attack.empty()) {
      EXPECT_TRUE(lf::send_all(s.get(), attack.data(), attack.size(), lf::deadline_in(5)));
    }
    rank(1, 2, address);
    expect_success(20);
    // At most one handshake deadline (5 s) beyond a normal start.
    EXPECT_LT(since(t0), 10.0);
    return drain(s.get());  // the stranger still holds its connection
  }

  void TearDownPath() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  ~BootstrapSecurity() override { TearDownPath(); }

  Procs procs;
  std::string path_;
};

// ---- the job key ----------------------------------------------------------

TEST_F(BootstrapSecurity, RanksWithTheSameKeyJoin) {
  std::string addr = tcp_address();
  for (int r = 0; r < 3; ++r) rank(r, 3, addr, {{"LF_JOB_KEY", "correct horse battery staple"}});
  expect_success(60);
  for (size_t i = 0; i < procs.size(); ++i)
    EXPECT_EQ(procs[i].output.find("job key: none"), std::string::npos) << "a keyed job warned\n" << procs.dump();
}

TEST_F(BootstrapSecurity, RanksWithTheSameKeyFileJoinOverUnix) {
  std::string key = "/tmp/lf-bootsec-key-" + std::to_string(getpid());
  { std::ofstream(key) << "0123456789abcdef0123456789abcdef\n"; }
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  std::string addr = unix_address("keyfile");
  for (int r = 0; r < 2; ++r) rank(r, 2, addr, {{"LF_JOB_KEY_FILE", key}});
  expect_success(60);
  // A key file other users can read is refused before anything connects.
  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  Procs loose;
  loose.spawn({LF_RANK_WORKER, "init"},
              rank_env(0, 2, unix_address("loose"), {{"LF_JOB_KEY_FILE", key}, {"LF_BOOTSTRAP_TIMEOUT", "2"}}));
  ASSERT_TRUE(loose.wait_all(30)) << loose.dump();
  EXPECT_EQ(loose[0].lines("error -1 lf_init: LF_ERR_INVALID_ARG").size(), 1u) << loose.dump();
  EXPECT_NE(loose[0].output.find("chmod 600"), std::string::npos) << loose.dump();
  ::unlink(key.c_str());
}

TEST_F(BootstrapSecurity, UnauthenticatedJobWarnsOnce) {
  std::string addr = tcp_address();
  for (int r = 0; r < 2; ++r) rank(r, 2, addr);
  expect_success(60);
  for (size_t i = 0; i < procs.size(); ++i) {
    size_t first = procs[i].output.find("job key: none");
    EXPECT_NE(first, std::string::npos) << "no warning about the missing job key\n" << procs.dump();
    if (first != std::string::npos) {
      EXPECT_EQ(procs[i].output.find("job key: none", first + 1), std::string::npos) << "warned twice\n"
                                                                                     << procs.dump();
      EXPECT_NE(procs[i].output.find("unauthenticated", first), std::string::npos) << procs.dump();
    }
  }
}

TEST_F(BootstrapSecurity, WrongKeyIsRefusedWithAClearError) {
  std::string addr = tcp_address();
  auto t0 = std::chrono::steady_clock::now();
  rank(0, 2, addr, {{"LF_JOB_KEY", "the key of rank 0"}, {"LF_BOOTSTRAP_TIMEOUT", "3"}});
  rank(1, 2, addr, {{"LF_JOB_KEY", "another key"}, {"LF_BOOTSTRAP_TIMEOUT", "3"}});
  ASSERT_TRUE(procs.wait_all(30)) << procs.dump();
  EXPECT_LT(since(t0), 20.0);
  EXPECT_EQ(procs[1].exit_code(), 2) << procs.dump();
  auto err = procs[1].lines("error -1 lf_init:");
  ASSERT_EQ(err.size(), 1u) << procs.dump();
  EXPECT_NE(err[0].find("job key"), std::string::npos) << err[0];
  EXPECT_NE(err[0].find("LF_JOB_KEY"), std::string::npos) << "the error should say what to check: " << err[0];
  // Rank 0 never accepted it: rank 1 is still missing when its time is up.
  EXPECT_EQ(procs[0].exit_code(), 2) << procs.dump();
  auto root = procs[0].lines("error -1 lf_init: LF_ERR_TIMEOUT");
  ASSERT_EQ(root.size(), 1u) << procs.dump();
  EXPECT_NE(root[0].find("missing rank(s) 1"), std::string::npos) << root[0];
}

TEST_F(BootstrapSecurity, KeyOnOneSideOnlyIsRefused) {
  std::string addr = tcp_address();
  rank(0, 2, addr, {{"LF_BOOTSTRAP_TIMEOUT", "3"}});
  rank(1, 2, addr, {{"LF_JOB_KEY", "only rank 1 has one"}, {"LF_BOOTSTRAP_TIMEOUT", "3"}});
  ASSERT_TRUE(procs.wait_all(30)) << procs.dump();
  EXPECT_EQ(procs[1].exit_code(), 2) << procs.dump();
  auto err = procs[1].lines("error -1 lf_init:");
  ASSERT_EQ(err.size(), 1u) << procs.dump();
  EXPECT_NE(err[0].find("job key"), std::string::npos) << err[0];
}

// ---- strangers at rank 0's address -----------------------------------------

TEST_F(BootstrapSecurity, StrangerStallingAHugeRecordDelaysNothing) {
  // Claims rank 1, announces a 60 MB record, sends a little of it and stalls.
  std::string got = run_with_stranger(tcp_address(), old_hello(1, 2) + u64(60u << 20) + std::string(1000, 'x'));
  EXPECT_EQ(got.find("hostname"), std::string::npos) << "the stranger received location records";
}

TEST_F(BootstrapSecurity, StrangerAnnouncingAHugeLengthFailsNobody) {
  run_with_stranger(tcp_address(), old_hello(1, 2) + u64(uint64_t{1} << 40));
}

TEST_F(BootstrapSecurity, StrangerForgingARecordLearnsNothing) {
  std::string record = R"({"location":{"hostname":"forged"},"transports":{}})";
  std::string got = run_with_stranger(tcp_address(), old_hello(1, 2) + u64(record.size()) + record);
  EXPECT_EQ(got.find("hostname"), std::string::npos) << "the stranger received every rank's location record";
}

TEST_F(BootstrapSecurity, StrangerGuessingAProofIsRefused) {
  // Speaks the current protocol but cannot compute the proof.
  wire::Join j{};
  j.magic = wire::kJoinMagic;
  j.version = wire::kVersion;
  j.rank = 1;
  j.size = 2;
  std::string got = run_with_stranger(
      tcp_address(), std::string(reinterpret_cast<const char *>(&j), sizeof j) + u64(10) + "0123456789");
  EXPECT_EQ(got.find("hostname"), std::string::npos);
}

TEST_F(BootstrapSecurity, SilentStrangersDelayNothing) {
  // Twenty connections that never say anything, made before rank 1 starts.
  std::string addr = unix_address("silent");
  auto t0 = std::chrono::steady_clock::now();
  rank(0, 2, addr, {{"LF_JOB_KEY", "k"}});
  std::vector<lf::Fd> silent;
  for (int i = 0; i < 20; ++i) silent.push_back(stranger_connect(addr));
  rank(1, 2, addr, {{"LF_JOB_KEY", "k"}});
  expect_success(20);
  EXPECT_LT(since(t0), 10.0);
}

TEST_F(BootstrapSecurity, ImpostorRootLearnsNothing) {
  // This process listens where rank 0 should, challenges rank 1, and
  // welcomes it without the key. Rank 1 must refuse it and send no record.
  std::string addr = tcp_address();
  auto a = lf::SockAddr::parse(addr);
  ASSERT_TRUE(a);
  auto lfd = lf::listen_on(*a);
  ASSERT_TRUE(lfd) << lfd.error().message;
  rank(1, 2, addr, {{"LF_JOB_KEY", "k"}, {"LF_BOOTSTRAP_TIMEOUT", "10"}});
  auto c = lf::accept_one(lfd->get(), lf::deadline_in(20));
  ASSERT_TRUE(c) << c.error().message;
  wire::Challenge ch{};
  ch.magic = wire::kChallengeMagic;
  ch.version = wire::kVersion;
  ch.size = 2;
  ch.keyed = 1;
  (void)lf::send_all(c->get(), &ch, sizeof ch, lf::deadline_in(5));
  std::string got;
  char buf[sizeof(wire::Join)];
  if (lf::recv_all(c->get(), buf, sizeof buf, lf::deadline_in(10))) got.append(buf, sizeof buf);
  wire::Welcome w{};
  w.magic = wire::kWelcomeMagic;
  w.status = wire::kOk;
  (void)lf::send_all(c->get(), &w, sizeof w, lf::deadline_in(5));
  ASSERT_TRUE(procs.wait_all(20)) << procs.dump();
  got += drain(c->get());
  EXPECT_EQ(got.find("hostname"), std::string::npos) << "rank 1 sent its location record to an impostor";
  EXPECT_EQ(procs[0].exit_code(), 2) << procs.dump();
  auto err = procs[0].lines("error -1 lf_init:");
  ASSERT_EQ(err.size(), 1u) << procs.dump();
  EXPECT_NE(err[0].find("could not prove"), std::string::npos) << err[0];
}

// ---- the unix: socket file ------------------------------------------------

TEST_F(BootstrapSecurity, StaleUnixSocketOfAKilledRootIsReplaced) {
  std::string addr = unix_address("stale");
  rank(0, 2, addr, {{"LF_JOB_KEY", "k"}});
  // Once rank 0 listens, kill it: its socket file stays behind.
  ASSERT_TRUE(stranger_connect(addr)) << procs.dump();
  procs.kill_all();
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0) << "the killed rank 0 left no socket file; nothing to test";
  Procs next;
  for (int r = 0; r < 2; ++r) next.spawn({LF_RANK_WORKER, "init"}, rank_env(r, 2, addr, {{"LF_JOB_KEY", "k"}}));
  ASSERT_TRUE(next.wait_all(30)) << next.dump();
  for (size_t i = 0; i < next.size(); ++i) EXPECT_EQ(next[i].exit_code(), 0) << next.dump();
}

TEST_F(BootstrapSecurity, LiveUnixSocketStaysAnError) {
  // Another live listener owns the path: rank 0 must not steal it.
  std::string addr = unix_address("live");
  auto a = lf::SockAddr::parse(addr);
  ASSERT_TRUE(a);
  auto lfd = lf::listen_on(*a);
  ASSERT_TRUE(lfd) << lfd.error().message;
  rank(0, 2, addr, {{"LF_BOOTSTRAP_TIMEOUT", "5"}});
  ASSERT_TRUE(procs.wait_all(20)) << procs.dump();
  EXPECT_EQ(procs[0].exit_code(), 2) << procs.dump();
  EXPECT_NE(procs[0].output.find("in use"), std::string::npos) << procs.dump();
  struct stat st {};
  EXPECT_EQ(::stat(path_.c_str(), &st), 0) << "rank 0 removed a live listener's socket";
}

}  // namespace
