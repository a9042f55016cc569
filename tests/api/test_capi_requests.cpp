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
  // The first handle of every table used to be the same number, so these
  // freed, closed or drove the wrong object and returned LF_OK.
  lf_buffer_t buf;
  ASSERT_EQ(lf_alloc(nullptr, 64, LF_MEM_HOST, &buf), LF_OK);
  int got = 0;
  lf_request_t req;
  ASSERT_EQ(lf_irecv(ch, &got, sizeof got, 5, &req), LF_OK);
  EXPECT_NE(lf_free(reinterpret_cast<lf_buffer_t>(ctx)), LF_OK);
  EXPECT_NE(lf_free(reinterpret_cast<lf_buffer_t>(ch)), LF_OK);
  EXPECT_NE(lf_free(reinterpret_cast<lf_buffer_t>(req)), LF_OK);
  EXPECT_NE(lf_channel_close(reinterpret_cast<lf_channel_t>(req)), LF_OK);
  EXPECT_NE(lf_channel_close(reinterpret_cast<lf_channel_t>(buf)), LF_OK);
  int done = 0;
  EXPECT_NE(lf_test(reinterpret_cast<lf_request_t>(ch), &done), LF_OK);
  EXPECT_NE(lf_wait(reinterpret_cast<lf_request_t>(buf), nullptr), LF_OK);
  EXPECT_EQ(lf_rank(reinterpret_cast<lf_context_t>(ch)), -1);
  EXPECT_NE(lf_finalize(reinterpret_cast<lf_context_t>(buf)), LF_OK);
  // Every object is still intact.
  EXPECT_EQ(lf_buffer_size(buf), 64u);
  EXPECT_EQ(lf_channel_status(ch), LF_OK);
  int v = 3;
  ASSERT_EQ(lf_send(ch, &v, sizeof v, 5), LF_OK);
  EXPECT_EQ(lf_wait(req, nullptr), LF_OK);
  EXPECT_EQ(got, 3);
  EXPECT_EQ(lf_rank(ctx), 0);
  EXPECT_EQ(lf_free(buf), LF_OK);
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

}  // namespace
