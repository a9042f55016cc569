// The threading contract of lavaflow.h across processes, over each transport
// that serves two ranks on one host (shm, tcp): one thread per peer, a send
// thread and a receive thread on one channel, and close racing a wait and a
// send. Each checks every byte it receives. No progress thread: these are
// the patterns that must work without one.
#include <lavaflow/lavaflow.h>

#include <atomic>
#include <cstring>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "multiprocess.hpp"

namespace {

using lftest::Rank;

// Iterations of each pattern; the bar is 1,000 under ASan and TSan.
constexpr int kIters = 1000;

class Threads : public lftest::MultiProcess, public ::testing::WithParamInterface<const char *> {
 protected:
  void SetUp() override { env.push_back({"LF_TRANSPORTS", GetParam()}); }
};

// A message whose every byte names sender, receiver and sequence number, and
// whose size depends on all three: a message delivered on the wrong channel
// or in the wrong order fails the check.
size_t message_size(int from, int to, int i) { return 16 + static_cast<size_t>((from * 3 + to) * 8 + i % 5); }
void fill(std::vector<unsigned char> &b, int from, int to, int i) {
  b.resize(message_size(from, to, i));
  for (size_t k = 0; k < b.size(); ++k) b[k] = static_cast<unsigned char>(from * 31 + to * 7 + i + k);
}

TEST_P(Threads, OneThreadPerPeerEachOnItsOwnChannel) {
  spawn(3, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    std::vector<lf_channel_t> ch(3, nullptr);
    // Open in an order both ends of each pair agree on.
    for (int p = 0; p < 3; ++p)
      if (p != r.rank) REQUIRE_OK(r, lf_channel_open(ctx, p, &ch[static_cast<size_t>(p)]));
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    std::string first_failure;
    std::mutex fm;
    auto fail = [&](const std::string &what) {
      std::lock_guard g(fm);
      if (failures++ == 0) first_failure = what;
    };
    for (int p = 0; p < 3; ++p) {
      if (p == r.rank) continue;
      threads.emplace_back([&, p] {
        lf_channel_t c = ch[static_cast<size_t>(p)];
        std::vector<unsigned char> out, want, in(256);
        for (int i = 0; i < kIters && failures == 0; ++i) {
          fill(out, r.rank, p, i);
          fill(want, p, r.rank, i);
          lf_request_t s;
          if (lf_isend(c, out.data(), out.size(), 1, &s) != LF_OK)
            return fail("isend: " + std::string(lf_last_error()));
          size_t n = 0;
          if (lf_status_t st = lf_recv(c, in.data(), in.size(), 1, &n); st != LF_OK)
            return fail("recv from " + std::to_string(p) + ": " + lf_status_string(st) + " " + lf_last_error());
          if (n != want.size() || std::memcmp(in.data(), want.data(), n) != 0)
            return fail("iteration " + std::to_string(i) + ": wrong message from rank " + std::to_string(p) + " (" +
                        std::to_string(n) + " bytes, want " + std::to_string(want.size()) + ")");
          if (lf_status_t st = lf_wait(s, nullptr); st != LF_OK)
            return fail("send wait: " + std::string(lf_status_string(st)));
        }
      });
    }
    for (auto &t : threads) t.join();
    REQUIRE(r, failures == 0, "%s", first_failure.c_str());
    REQUIRE_OK(r, lf_barrier(ctx));
    for (lf_channel_t c : ch)
      if (c) REQUIRE_OK(r, lf_channel_close(c));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  expect_all_ok();
}

TEST_P(Threads, SendThreadAndReceiveThreadOnOneChannel) {
  spawn(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch;
    REQUIRE_OK(r, lf_channel_open(ctx, 1 - r.rank, &ch));
    std::atomic<int> send_error{0};
    std::thread sender([&] {
      std::vector<unsigned char> out;
      for (int i = 0; i < kIters; ++i) {
        fill(out, r.rank, 1 - r.rank, i);
        if (lf_status_t st = lf_send(ch, out.data(), out.size(), 2); st != LF_OK) {
          send_error = st;
          return;
        }
      }
    });
    std::vector<unsigned char> want, in(256);
    for (int i = 0; i < kIters; ++i) {
      fill(want, 1 - r.rank, r.rank, i);
      size_t n = 0;
      REQUIRE_OK(r, lf_recv(ch, in.data(), in.size(), 2, &n));
      REQUIRE(r, n == want.size() && std::memcmp(in.data(), want.data(), n) == 0, "message %d wrong or out of order",
              i);
    }
    sender.join();
    REQUIRE(r, send_error == 0, "send failed: %s", lf_status_string(send_error));
    REQUIRE_OK(r, lf_barrier(ctx));
    REQUIRE_OK(r, lf_channel_close(ch));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  expect_all_ok();
}

// Rank 0 opens a channel, starts a thread blocked in lf_recv and a thread
// sending, and closes the channel under them. Both threads must return (with
// LF_ERR_CLOSED, or LF_OK for sends that got out), never touch freed memory.
// Rank 1 drains each channel until the close reaches it.
TEST_P(Threads, CloseRacingWaitAndSend) {
  constexpr int kRounds = kIters;  // each round opens a channel of its own
  spawn(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    for (int round = 0; round < kRounds; ++round) {
      lf_channel_t ch;
      REQUIRE_OK(r, lf_channel_open(ctx, 1 - r.rank, &ch));
      if (r.rank == 1) {
        char buf[64];
        lf_status_t st;
        while ((st = lf_recv(ch, buf, sizeof buf, LF_ANY_TAG, nullptr)) == LF_OK) {
        }
        REQUIRE(r, st == LF_ERR_PEER_GONE || st == LF_ERR_CLOSED, "drain ended with %s: %s", lf_status_string(st),
                lf_last_error());
        REQUIRE_OK(r, lf_channel_close(ch));
        continue;
      }
      std::atomic<lf_status_t> recv_st{LF_IN_PROGRESS}, send_st{LF_IN_PROGRESS};
      std::latch go(3);
      std::thread waiter([&] {
        char buf[64];
        go.arrive_and_wait();
        recv_st = lf_recv(ch, buf, sizeof buf, 7, nullptr);  // rank 1 never sends
      });
      std::thread sender([&] {
        char msg[32] = {};
        go.arrive_and_wait();
        lf_status_t st;
        for (int i = 0; i < 16 && (st = lf_send(ch, msg, sizeof msg, 1)) == LF_OK; ++i) {
        }
        send_st = st;
      });
      go.arrive_and_wait();
      REQUIRE_OK(r, lf_channel_close(ch));
      waiter.join();
      sender.join();
      REQUIRE(r, recv_st == LF_ERR_CLOSED, "the blocked receive ended with %s", lf_status_string(recv_st));
      REQUIRE(r, send_st == LF_OK || send_st == LF_ERR_CLOSED, "the sender ended with %s", lf_status_string(send_st));
    }
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  expect_all_ok(300);
}

INSTANTIATE_TEST_SUITE_P(Transports, Threads, ::testing::Values("shm", "tcp"),
                         [](const auto &p) { return std::string(p.param); });

}  // namespace
