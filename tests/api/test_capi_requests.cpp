// The C API's request calls added for request channels and many requests in
// flight (cancel, wait with a deadline, waitany, waitall, channel status),
// typed handles, the lifetime of returned strings, and one thread at a time
// per request. World of one rank (self transport); the multi-process
// threading tests are in tests/channel/test_threads.cpp.
#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>
#include <stdlib.h>

#include <atomic>
#include <cstring>
#include <latch>
#include <string>
#include <thread>
#include <vector>

namespace {

class CRequests : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char *v : {"LF_RANK", "LF_SIZE", "LF_BOOTSTRAP", "LF_TRANSPORTS", "LF_STRICT"}) unsetenv(v);
    ASSERT_EQ(lf_init(&ctx), LF_OK) << lf_last_error();
    ASSERT_EQ(lf_channel_open(ctx, 0, &ch), LF_OK) << lf_last_error();
  }
  void TearDown() override {
    if (ch) (void)lf_channel_close(ch);
    if (ctx) {
      EXPECT_EQ(lf_finalize(ctx), LF_OK) << lf_last_error();
    }
  }
  lf_context_t ctx = nullptr;
  lf_channel_t ch = nullptr;
};

TEST_F(CRequests, CancelledReceiveNeverSwallowsAMessage) {
  int a = -1, b = -1;
  lf_request_t ra, rb;
  ASSERT_EQ(lf_irecv(ch, &a, sizeof a, 3, &ra), LF_OK);
  ASSERT_EQ(lf_irecv(ch, &b, sizeof b, 3, &rb), LF_OK);
  ASSERT_EQ(lf_cancel(ra), LF_OK);
  EXPECT_EQ(lf_wait(ra, nullptr), LF_ERR_CANCELLED);
  EXPECT_NE(std::string(lf_last_error()).find("cancel"), std::string::npos) << lf_last_error();
  EXPECT_EQ(lf_cancel(ra), LF_ERR_CLOSED) << "a waited request is gone";
  int v = 42;
  ASSERT_EQ(lf_send(ch, &v, sizeof v, 3), LF_OK);
  size_t n = 0;
  EXPECT_EQ(lf_wait(rb, &n), LF_OK) << "the message goes to the next matching receive";
  EXPECT_EQ(b, 42);
  EXPECT_EQ(a, -1) << "the cancelled receive's memory is untouched";
}

TEST_F(CRequests, CancelAfterCompletionKeepsTheResult) {
  int v = 7, got = 0;
  ASSERT_EQ(lf_send(ch, &v, sizeof v, 1), LF_OK);
  lf_request_t r;
  ASSERT_EQ(lf_irecv(ch, &got, sizeof got, 1, &r), LF_OK);
  for (int done = 0; !done;) ASSERT_EQ(lf_test(r, &done), LF_OK);
  EXPECT_EQ(lf_cancel(r), LF_OK) << "completed but not yet waited: still a live request";
  size_t n = 0;
  EXPECT_EQ(lf_wait(r, &n), LF_OK);
  EXPECT_EQ(got, 7);
  EXPECT_EQ(n, sizeof v);
}

TEST_F(CRequests, SendsCompleteNormallyWhenCancelled) {
  int v = 5, got = 0;
  lf_request_t s;
  ASSERT_EQ(lf_isend(ch, &v, sizeof v, 2, &s), LF_OK);
  EXPECT_EQ(lf_cancel(s), LF_OK);
  EXPECT_EQ(lf_wait(s, nullptr), LF_OK) << "the transport had started it";
  EXPECT_EQ(lf_recv(ch, &got, sizeof got, 2, nullptr), LF_OK);
  EXPECT_EQ(got, 5);
}

TEST_F(CRequests, WaitTimeoutLeavesTheRequestValid) {
  int got = 0;
  lf_request_t r;
  ASSERT_EQ(lf_irecv(ch, &got, sizeof got, 9, &r), LF_OK);
  EXPECT_EQ(lf_wait_timeout(r, 0, nullptr), LF_ERR_TIMEOUT);
  EXPECT_EQ(lf_wait_timeout(r, 20, nullptr), LF_ERR_TIMEOUT);
  int done = 1;
  EXPECT_EQ(lf_test(r, &done), LF_OK);
  EXPECT_EQ(done, 0);
  int v = 11;
  ASSERT_EQ(lf_send(ch, &v, sizeof v, 9), LF_OK);
  size_t n = 0;
  EXPECT_EQ(lf_wait_timeout(r, -1, &n), LF_OK);
  EXPECT_EQ(n, sizeof v);
  EXPECT_EQ(got, 11);
  EXPECT_EQ(lf_wait_timeout(r, 0, nullptr), LF_ERR_CLOSED) << "freed by the wait that completed it";
}

TEST_F(CRequests, WaitTimeoutThenCancel) {
  int got = 0;
  lf_request_t r;
  ASSERT_EQ(lf_irecv(ch, &got, sizeof got, 9, &r), LF_OK);
  EXPECT_EQ(lf_wait_timeout(r, 1, nullptr), LF_ERR_TIMEOUT);
  EXPECT_EQ(lf_cancel(r), LF_OK);
  EXPECT_EQ(lf_wait_timeout(r, -1, nullptr), LF_ERR_CANCELLED);
}

TEST_F(CRequests, WaitAnyReturnsTheOneThatCompleted) {
  int slots[3] = {0, 0, 0};
  lf_request_t reqs[4] = {nullptr, nullptr, nullptr, nullptr};
  for (int i = 0; i < 3; ++i) ASSERT_EQ(lf_irecv(ch, &slots[i], sizeof(int), 100 + i, &reqs[i + 1]), LF_OK);
  int v = 77;
  ASSERT_EQ(lf_send(ch, &v, sizeof v, 101), LF_OK);
  size_t index = 99, n = 0;
  EXPECT_EQ(lf_waitany(reqs, 4, &index, &n), LF_OK) << lf_last_error();
  EXPECT_EQ(index, 2u) << "entry 0 is NULL and skipped; tag 101 is entry 2";
  EXPECT_EQ(n, sizeof v);
  EXPECT_EQ(slots[1], 77);
  reqs[2] = nullptr;
  for (int t : {100, 102}) ASSERT_EQ(lf_send(ch, &t, sizeof t, static_cast<uint64_t>(t)), LF_OK);
  EXPECT_EQ(lf_waitall(reqs, 4), LF_OK) << lf_last_error();
  for (lf_request_t r : reqs) EXPECT_EQ(r, nullptr) << "waitall clears what it freed";
  EXPECT_EQ(slots[0], 100);
  EXPECT_EQ(slots[2], 102);
  lf_request_t none[2] = {nullptr, nullptr};
  EXPECT_EQ(lf_waitany(none, 2, &index, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_waitany(nullptr, 1, &index, nullptr), LF_ERR_INVALID_ARG);
}

TEST_F(CRequests, WaitAllReportsTheFirstFailureAndFreesEverything) {
  int got[2] = {0, 0};
  lf_request_t reqs[2];
  ASSERT_EQ(lf_irecv(ch, &got[0], 1, 1, &reqs[0]), LF_OK);  // will be truncated
  ASSERT_EQ(lf_irecv(ch, &got[1], sizeof(int), 2, &reqs[1]), LF_OK);
  int v = 0x01020304;
  ASSERT_EQ(lf_send(ch, &v, sizeof v, 1), LF_OK);
  ASSERT_EQ(lf_send(ch, &v, sizeof v, 2), LF_OK);
  EXPECT_EQ(lf_waitall(reqs, 2), LF_ERR_TRUNCATED);
  EXPECT_EQ(reqs[0], nullptr);
  EXPECT_EQ(reqs[1], nullptr);
  EXPECT_EQ(got[1], v);
}

TEST_F(CRequests, ChannelStatusSaysClosed) {
  EXPECT_EQ(lf_channel_status(ch), LF_OK);
  lf_channel_t other;
  ASSERT_EQ(lf_channel_open(ctx, 0, &other), LF_OK);
  ASSERT_EQ(lf_channel_close(other), LF_OK);
  EXPECT_EQ(lf_channel_status(other), LF_ERR_CLOSED);
  EXPECT_EQ(lf_channel_status(nullptr), LF_ERR_INVALID_ARG);
}

TEST_F(CRequests, HandlesOfAnotherTypeAreRefused) {
  // Handles used to be (generation << 32 | index + 1) in every table, so the
  // nth buffer, channel and request were the same number, and a call given
  // one of them as another type freed, closed or drove the wrong object and
  // returned LF_OK. Make several of each, then pass each as the other types.
  constexpr int kN = 8;
  lf_buffer_t bufs[kN];
  lf_channel_t chans[kN];
  lf_request_t reqs[kN];
  int got[kN];
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(lf_alloc(nullptr, 64 + i, LF_MEM_HOST, &bufs[i]), LF_OK);
    ASSERT_EQ(lf_channel_open(ctx, 0, &chans[i]), LF_OK);
    ASSERT_EQ(lf_irecv(ch, &got[i], sizeof(int), 100 + i, &reqs[i]), LF_OK);
  }
  int done = 0;
  for (int i = 0; i < kN; ++i) {
    EXPECT_NE(lf_free(reinterpret_cast<lf_buffer_t>(reqs[i])), LF_OK) << i;
    EXPECT_NE(lf_free(reinterpret_cast<lf_buffer_t>(chans[i])), LF_OK) << i;
    EXPECT_NE(lf_channel_close(reinterpret_cast<lf_channel_t>(reqs[i])), LF_OK) << i;
    EXPECT_NE(lf_channel_close(reinterpret_cast<lf_channel_t>(bufs[i])), LF_OK) << i;
    EXPECT_NE(lf_test(reinterpret_cast<lf_request_t>(chans[i]), &done), LF_OK) << i;
    EXPECT_NE(lf_wait_timeout(reinterpret_cast<lf_request_t>(bufs[i]), 0, nullptr), LF_OK) << i;
    EXPECT_EQ(lf_rank(reinterpret_cast<lf_context_t>(chans[i])), -1) << i;
  }
  EXPECT_NE(lf_free(reinterpret_cast<lf_buffer_t>(ctx)), LF_OK);
  EXPECT_NE(lf_finalize(reinterpret_cast<lf_context_t>(bufs[0])), LF_OK);
  // Every object is still intact.
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(lf_buffer_size(bufs[i]), 64u + i);
    EXPECT_EQ(lf_free(bufs[i]), LF_OK);
    EXPECT_EQ(lf_send(chans[i], &i, sizeof i, 1), LF_OK) << lf_last_error();
    EXPECT_EQ(lf_channel_close(chans[i]), LF_OK);
    int v = 1000 + i;
    ASSERT_EQ(lf_send(ch, &v, sizeof v, 100 + i), LF_OK);
    EXPECT_EQ(lf_wait(reqs[i], nullptr), LF_OK) << lf_last_error();
    EXPECT_EQ(got[i], 1000 + i);
  }
  EXPECT_EQ(lf_rank(ctx), 0);
}

TEST_F(CRequests, ReturnedStringsOutliveTheirHandles) {
  lf_channel_t other;
  ASSERT_EQ(lf_channel_open(ctx, 0, &other), LF_OK);
  const char *transport = lf_channel_transport(other);
  const char *reason = lf_channel_reason(other);
  std::string t = transport, r = reason;
  ASSERT_EQ(lf_channel_close(other), LF_OK);
  // Allocate and free a little so that freed memory is likely reused.
  std::vector<std::string> churn(64, std::string(200, 'x'));
  EXPECT_EQ(t, transport);
  EXPECT_EQ(r, reason);

  lf_alloc_params_t p = LF_ALLOC_PARAMS_INIT;
  p.numa_node = 4095;  // no such node: falls back and says why
  lf_buffer_t b;
  ASSERT_EQ(lf_alloc_ex(nullptr, 4096, LF_MEM_HOST_NUMA, &p, &b), LF_OK) << lf_last_error();
  const char *why = lf_buffer_fallback_reason(b);
  std::string w = why;
  ASSERT_EQ(lf_free(b), LF_OK);
  churn.assign(64, std::string(300, 'y'));
  EXPECT_EQ(w, why);
}

TEST_F(CRequests, WaitBufferChecksItsArgumentsBeforeWaiting) {
  int v = 21;
  ASSERT_EQ(lf_send(ch, &v, sizeof v, 4), LF_OK);
  lf_request_t r;
  ASSERT_EQ(lf_irecv_buffer(ch, 4, &r), LF_OK);
  lf_completion_t bad = LF_COMPLETION_INIT;
  bad.size = 1;  // not initialised with the macro
  lf_buffer_t out = nullptr;
  EXPECT_EQ(lf_wait_buffer(r, &out, &bad), LF_ERR_INVALID_ARG);
  EXPECT_EQ(out, nullptr);
  // The request is intact: a correct retry gets the message.
  lf_completion_t info = LF_COMPLETION_INIT;
  ASSERT_EQ(lf_wait_buffer(r, &out, &info), LF_OK) << lf_last_error();
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(info.bytes, sizeof v);
  EXPECT_EQ(*static_cast<int *>(lf_buffer_data(out)), 21);
  EXPECT_EQ(lf_free(out), LF_OK);
}

// Two threads wait on one request: exactly one completion, the other an
// error; and lf_test racing lf_wait. Run many times so that every
// interleaving of claim, completion and free is met.
TEST_F(CRequests, OneRequestIsWaitedByOneThreadAtATime) {
  constexpr int kIters = 1000;
  for (int i = 0; i < kIters; ++i) {
    int got = -1;
    lf_request_t r;
    ASSERT_EQ(lf_irecv(ch, &got, sizeof got, 8, &r), LF_OK);
    std::atomic<int> ok{0}, refused{0}, other{0};
    std::latch go(3);
    auto waiter = [&](bool test_instead) {
      go.arrive_and_wait();
      lf_status_t st;
      if (test_instead) {
        int done = 0;
        st = lf_test(r, &done);
        if (st == LF_OK) st = LF_ERR_INVALID_ARG;  // a test is never the completion here: count it as refused
      } else {
        st = lf_wait(r, nullptr);
      }
      if (st == LF_OK)
        ++ok;
      else if (st == LF_ERR_INVALID_ARG || st == LF_ERR_CLOSED)
        ++refused;
      else
        ++other;
    };
    std::thread a(waiter, false), b(waiter, i % 2 == 1);
    go.arrive_and_wait();
    int v = i;
    ASSERT_EQ(lf_send(ch, &v, sizeof v, 8), LF_OK);
    a.join();
    b.join();
    if (i % 2 == 0) {
      ASSERT_EQ(ok.load(), 1) << "iteration " << i << ": exactly one waiter completes the request";
      ASSERT_EQ(refused.load(), 1);
    } else {
      // The test thread never frees: if it held the claim while the waiter
      // arrived, the waiter was refused and the request is still live.
      if (ok.load() == 0) {
        ASSERT_EQ(lf_wait(r, nullptr), LF_OK);
      }
      ASSERT_EQ(refused.load() + ok.load(), 2);
    }
    ASSERT_EQ(other.load(), 0);
    ASSERT_EQ(got, i);
  }
}

TEST_F(CRequests, CancelRacingArrivalEndsEachRequestOnce) {
  // A receive is posted, a message sent, and a cancel issued from another
  // thread: the receive ends with the message or LF_ERR_CANCELLED, and in the
  // latter case the message goes to the next receive. Nothing is lost or
  // delivered twice.
  constexpr int kIters = 10000;
  int cancelled = 0;
  for (int i = 0; i < kIters; ++i) {
    int got = -1;
    lf_request_t r;
    ASSERT_EQ(lf_irecv(ch, &got, sizeof got, 6, &r), LF_OK);
    std::latch go(2);
    std::thread c([&] {
      go.arrive_and_wait();
      EXPECT_EQ(lf_cancel(r), LF_OK);
    });
    go.arrive_and_wait();
    int v = i;
    ASSERT_EQ(lf_send(ch, &v, sizeof v, 6), LF_OK);
    c.join();
    lf_status_t st = lf_wait(r, nullptr);
    if (st == LF_ERR_CANCELLED) {
      ++cancelled;
      ASSERT_EQ(got, -1);
      ASSERT_EQ(lf_recv(ch, &got, sizeof got, 6, nullptr), LF_OK);
    } else {
      ASSERT_EQ(st, LF_OK);
    }
    ASSERT_EQ(got, i);
  }
  int leftover = 0;
  lf_request_t probe;
  ASSERT_EQ(lf_irecv(ch, &leftover, sizeof leftover, 6, &probe), LF_OK);
  EXPECT_EQ(lf_wait_timeout(probe, 0, nullptr), LF_ERR_TIMEOUT) << "no message left over";
  EXPECT_EQ(lf_cancel(probe), LF_OK);
  EXPECT_EQ(lf_wait(probe, nullptr), LF_ERR_CANCELLED);
  RecordProperty("cancelled", cancelled);
}

TEST_F(CRequests, BufferReceivesCompleteOnlyThroughWaitBuffer) {
  // Any other wait would free the request and the buffer received with it.
  int v = 9;
  ASSERT_EQ(lf_send(ch, &v, sizeof v, 12), LF_OK);
  lf_request_t r;
  ASSERT_EQ(lf_irecv_buffer(ch, 12, &r), LF_OK);
  size_t index = 0;
  EXPECT_EQ(lf_wait(r, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_wait_timeout(r, 10, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_waitany(&r, 1, &index, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(index, SIZE_MAX);
  EXPECT_EQ(lf_waitall(&r, 1), LF_ERR_INVALID_ARG);
  ASSERT_NE(r, nullptr) << "left for lf_wait_buffer";
  lf_buffer_t b = nullptr;
  ASSERT_EQ(lf_wait_buffer(r, &b, nullptr), LF_OK) << lf_last_error();
  EXPECT_EQ(*static_cast<int *>(lf_buffer_data(b)), 9);
  EXPECT_EQ(lf_free(b), LF_OK);
}

TEST_F(CRequests, FarDeadlinesDoNotOverflow) {
  int got = 0;
  lf_request_t r;
  ASSERT_EQ(lf_irecv(ch, &got, sizeof got, 13, &r), LF_OK);
  std::latch go(2);
  std::thread sender([&] {
    go.arrive_and_wait();
    int v = 13;
    EXPECT_EQ(lf_send(ch, &v, sizeof v, 13), LF_OK);
  });
  go.arrive_and_wait();
  EXPECT_EQ(lf_wait_timeout(r, INT64_MAX, nullptr), LF_OK) << "INT64_MAX ms used to wrap into the past";
  sender.join();
  EXPECT_EQ(got, 13);
}

}  // namespace

// Calls racing the end of their context, pool or progress thread: an error,
// never freed memory (ThreadSanitizer and AddressSanitizer check the rest).
TEST(CLifetimes, FinalizeRacingCallsOnItsContext) {
  for (const char *v : {"LF_RANK", "LF_SIZE", "LF_BOOTSTRAP", "LF_TRANSPORTS", "LF_STRICT"}) unsetenv(v);
  for (int i = 0; i < 100; ++i) {
    lf_context_t ctx;
    ASSERT_EQ(lf_init(&ctx), LF_OK) << lf_last_error();
    std::latch go(3);
    std::atomic<bool> bad{false};
    auto user = [&](bool opens) {
      go.arrive_and_wait();
      for (;;) {
        if (opens) {
          lf_channel_t c;
          lf_status_t st = lf_channel_open(ctx, 0, &c);
          if (st != LF_OK) {
            if (st != LF_ERR_CLOSED) bad = true;
            return;
          }
          int v = 1, w = 0;
          lf_status_t s1 = lf_send(c, &v, sizeof v, 1);
          lf_status_t s2 = lf_recv(c, &w, sizeof w, 1, nullptr);
          if ((s1 != LF_OK && s1 != LF_ERR_CLOSED) || (s2 != LF_OK && s2 != LF_ERR_CLOSED)) bad = true;
          lf_status_t s3 = lf_channel_close(c);
          if (s3 != LF_OK && s3 != LF_ERR_CLOSED) bad = true;
        } else {
          char buf[128];
          if (lf_rank(ctx) != 0) return;
          if (lf_scope_explain(ctx, 0, buf, sizeof buf) != LF_OK) return;
        }
      }
    };
    std::thread a(user, true), b(user, false);
    go.arrive_and_wait();
    EXPECT_EQ(lf_finalize(ctx), LF_OK);
    a.join();
    b.join();
    ASSERT_FALSE(bad.load()) << "iteration " << i;
    EXPECT_EQ(lf_rank(ctx), -1);
  }
}

TEST(CLifetimes, PoolDestroyRacingAcquireAndStats) {
  for (int i = 0; i < 200; ++i) {
    lf_pool_t pool;
    ASSERT_EQ(lf_pool_create(nullptr, nullptr, &pool), LF_OK);
    std::latch go(2);
    std::thread t([&] {
      go.arrive_and_wait();
      for (;;) {
        lf_buffer_t b;
        if (lf_pool_acquire(pool, 256, &b) != LF_OK) return;
        lf_pool_stats_t st = LF_POOL_STATS_INIT;
        (void)lf_pool_stats(pool, &st);
        EXPECT_EQ(lf_free(b), LF_OK);
      }
    });
    go.arrive_and_wait();
    EXPECT_EQ(lf_pool_destroy(pool), LF_OK);
    t.join();
  }
}

TEST(CLifetimes, ProgressThreadToggledFromTwoThreads) {
  for (const char *v : {"LF_RANK", "LF_SIZE", "LF_BOOTSTRAP", "LF_TRANSPORTS", "LF_STRICT"}) unsetenv(v);
  lf_context_t ctx;
  ASSERT_EQ(lf_init(&ctx), LF_OK) << lf_last_error();
  std::latch go(2);
  auto toggle = [&] {
    go.arrive_and_wait();
    for (int i = 0; i < 200; ++i) EXPECT_EQ(lf_progress_thread(ctx, i % 2 == 0), LF_OK);
  };
  std::thread a(toggle), b(toggle);
  a.join();
  b.join();
  EXPECT_EQ(lf_finalize(ctx), LF_OK);
}
