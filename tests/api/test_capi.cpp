// The public C API in a world of one rank: bootstrap defaults, channel
// semantics over the self transport, and bad input.
#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>
#include <stdlib.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

class CApi : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char *v : {"LF_RANK", "LF_SIZE", "LF_BOOTSTRAP", "LF_TRANSPORTS", "LF_STRICT"}) unsetenv(v);
    ASSERT_EQ(lf_init(&ctx), LF_OK) << lf_last_error();
  }
  void TearDown() override {
    if (ctx) {
      EXPECT_EQ(lf_finalize(ctx), LF_OK) << lf_last_error();
    }
  }
  lf_channel_t open_self() {
    lf_channel_t ch = nullptr;
    EXPECT_EQ(lf_channel_open(ctx, 0, &ch), LF_OK) << lf_last_error();
    return ch;
  }
  lf_context_t ctx = nullptr;
};

TEST_F(CApi, NoLauncherMeansAWorldOfOne) {
  EXPECT_EQ(lf_rank(ctx), 0);
  EXPECT_EQ(lf_size(ctx), 1);
  EXPECT_EQ(lf_barrier(ctx), LF_OK);
  EXPECT_EQ(lf_scope(ctx, 0), LF_SCOPE_SELF);
  char why[256];
  ASSERT_EQ(lf_scope_explain(ctx, 0, why, sizeof why), LF_OK);
  EXPECT_STREQ(why, "same rank: self");
  size_t needed = 0;
  char loc[4096];
  ASSERT_EQ(lf_location_json(ctx, 0, loc, sizeof loc, &needed), LF_OK);
  EXPECT_NE(std::string(loc).find("\"boot_id\""), std::string::npos);
  EXPECT_EQ(needed, std::strlen(loc) + 1);
}

TEST_F(CApi, SelfChannelMovesDataInOrderPerTag) {
  lf_channel_t ch = open_self();
  ASSERT_NE(ch, nullptr);
  EXPECT_STREQ(lf_channel_transport(ch), "self");
  EXPECT_NE(std::string(lf_channel_reason(ch)).find("self"), std::string::npos);
  // Interleave two tags; each tag's messages must arrive in send order.
  for (int i = 0; i < 100; ++i) {
    int v = i;
    ASSERT_EQ(lf_send(ch, &v, sizeof v, static_cast<uint64_t>(i % 2)), LF_OK);
  }
  for (int tag = 1; tag >= 0; --tag)
    for (int i = tag; i < 100; i += 2) {
      int v = -1;
      size_t n = 0;
      ASSERT_EQ(lf_recv(ch, &v, sizeof v, static_cast<uint64_t>(tag), &n), LF_OK);
      EXPECT_EQ(v, i);
      EXPECT_EQ(n, sizeof v);
    }
  EXPECT_EQ(lf_channel_close(ch), LF_OK);
}

TEST_F(CApi, PostedReceiveCompletesOnLaterSendAndAnyTagReportsTag) {
  lf_channel_t ch = open_self();
  char out[16] = {};
  lf_request_t r;
  ASSERT_EQ(lf_irecv(ch, out, sizeof out, LF_ANY_TAG, &r), LF_OK);
  int done = 1;
  ASSERT_EQ(lf_test(r, &done), LF_OK);
  EXPECT_EQ(done, 0);
  ASSERT_EQ(lf_send(ch, "hello", 6, 42), LF_OK);
  lf_completion_t c = LF_COMPLETION_INIT;
  ASSERT_EQ(lf_wait_completion(r, &c), LF_OK);
  EXPECT_STREQ(out, "hello");
  EXPECT_EQ(c.tag, 42u);
  EXPECT_EQ(c.bytes, 6u);
  lf_channel_close(ch);
}

TEST_F(CApi, TruncationDeliversWhatFits) {
  lf_channel_t ch = open_self();
  ASSERT_EQ(lf_send(ch, "0123456789", 10, 1), LF_OK);
  char out[4];
  size_t n = 0;
  EXPECT_EQ(lf_recv(ch, out, sizeof out, 1, &n), LF_ERR_TRUNCATED);
  EXPECT_EQ(n, 4u);
  EXPECT_EQ(std::memcmp(out, "0123", 4), 0);
  EXPECT_NE(std::string(lf_last_error()).find("truncated"), std::string::npos);
  lf_channel_close(ch);
}

TEST_F(CApi, ZeroByteMessages) {
  lf_channel_t ch = open_self();
  ASSERT_EQ(lf_send(ch, nullptr, 0, 5), LF_OK);
  size_t n = 99;
  ASSERT_EQ(lf_recv(ch, nullptr, 0, 5, &n), LF_OK);
  EXPECT_EQ(n, 0u);
  lf_channel_close(ch);
}

TEST_F(CApi, BufferSendToSelfMovesTheBufferWithoutCopy) {
  lf_channel_t ch = open_self();
  lf_buffer_t b;
  ASSERT_EQ(lf_alloc(ctx, 4096, LF_MEM_HOST, &b), LF_OK) << lf_last_error();
  void *p = lf_buffer_data(b);
  std::memset(p, 0x5a, 4096);
  lf_request_t s, r;
  ASSERT_EQ(lf_isend_buffer(ch, b, 9, &s), LF_OK) << lf_last_error();
  ASSERT_EQ(lf_wait(s, nullptr), LF_OK);
  ASSERT_EQ(lf_irecv_buffer(ch, 9, &r), LF_OK);
  lf_buffer_t got = nullptr;
  lf_completion_t c = LF_COMPLETION_INIT;
  ASSERT_EQ(lf_wait_buffer(r, &got, &c), LF_OK) << lf_last_error();
  EXPECT_EQ(lf_buffer_data(got), p) << "self transport hands the same memory over";
  EXPECT_EQ(lf_buffer_size(got), 4096u);
  EXPECT_EQ(c.tag, 9u);
  EXPECT_EQ(lf_free(got), LF_OK);
  lf_channel_close(ch);
}

TEST_F(CApi, RequestReusedAfterWaitIsRejected) {
  lf_channel_t ch = open_self();
  lf_request_t r;
  ASSERT_EQ(lf_isend(ch, "x", 1, 1, &r), LF_OK);
  ASSERT_EQ(lf_wait(r, nullptr), LF_OK);
  int done;
  EXPECT_EQ(lf_test(r, &done), LF_ERR_CLOSED);
  EXPECT_EQ(lf_wait(r, nullptr), LF_ERR_CLOSED);
  EXPECT_NE(std::string(lf_last_error()).find("request is not valid"), std::string::npos);
  char c;
  ASSERT_EQ(lf_recv(ch, &c, 1, 1, nullptr), LF_OK);
  lf_channel_close(ch);
}

TEST_F(CApi, ClosedChannelFailsPendingAndNewOperations) {
  lf_channel_t ch = open_self();
  char buf[8];
  lf_request_t r;
  ASSERT_EQ(lf_irecv(ch, buf, sizeof buf, 3, &r), LF_OK);
  ASSERT_EQ(lf_channel_close(ch), LF_OK);
  EXPECT_EQ(lf_wait(r, nullptr), LF_ERR_CLOSED);
  EXPECT_EQ(lf_send(ch, "x", 1, 1), LF_ERR_CLOSED);
  EXPECT_EQ(lf_channel_close(ch), LF_ERR_CLOSED);
  EXPECT_EQ(lf_channel_transport(ch), nullptr);
}

TEST_F(CApi, BadArgumentsAreErrorsNotCrashes) {
  lf_channel_t ch = open_self();
  lf_request_t r;
  char buf[8];
  EXPECT_EQ(lf_isend(nullptr, buf, 1, 1, &r), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_isend(ch, nullptr, 8, 1, &r), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_isend(ch, buf, 1, 1, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_isend(ch, buf, SIZE_MAX, 1, &r), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_isend(ch, buf, 1, LF_ANY_TAG, &r), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_irecv(ch, nullptr, 8, 1, &r), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_test(nullptr, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_wait(reinterpret_cast<lf_request_t>(0x1234), nullptr), LF_ERR_CLOSED);
  EXPECT_EQ(lf_isend(reinterpret_cast<lf_channel_t>(0xdeadbeef00000007ull), buf, 1, 1, &r), LF_ERR_CLOSED);
  lf_channel_t bad;
  EXPECT_EQ(lf_channel_open(ctx, 1, &bad), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_channel_open(ctx, -1, &bad), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_channel_open(ctx, 0, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_scope(ctx, 5), LF_SCOPE_INVALID);
  EXPECT_NE(std::string(lf_last_error()).find("out of range"), std::string::npos);
  EXPECT_EQ(lf_scope(nullptr, 0), LF_SCOPE_INVALID);
  EXPECT_EQ(lf_rank(nullptr), -1);
  EXPECT_EQ(lf_init(nullptr), LF_ERR_INVALID_ARG);
  lf_channel_params_t p = LF_CHANNEL_PARAMS_INIT;
  p.transports = "warp-drive";
  EXPECT_EQ(lf_channel_open_ex(ctx, 0, &p, &bad), LF_ERR_NOT_FOUND);
  EXPECT_NE(std::string(lf_last_error()).find("warp-drive"), std::string::npos);
  p.transports = "^self";
  EXPECT_EQ(lf_channel_open_ex(ctx, 0, &p, &bad), LF_ERR_UNAVAILABLE);
  EXPECT_NE(std::string(lf_last_error()).find("excluded by LF_TRANSPORTS"), std::string::npos);
  p.transports = nullptr;
  p.size = 1;
  EXPECT_EQ(lf_channel_open_ex(ctx, 0, &p, &bad), LF_ERR_INVALID_ARG);
  lf_channel_close(ch);
}

TEST_F(CApi, FinalizedContextIsRejected) {
  lf_context_t c2;
  ASSERT_EQ(lf_init(&c2), LF_OK);
  ASSERT_EQ(lf_finalize(c2), LF_OK);
  EXPECT_EQ(lf_finalize(c2), LF_ERR_CLOSED);
  EXPECT_EQ(lf_rank(c2), -1);
  EXPECT_EQ(lf_barrier(c2), LF_ERR_CLOSED);
  EXPECT_NE(std::string(lf_last_error()).find("finalized"), std::string::npos);
  EXPECT_STREQ(lf_status_string(LF_ERR_PEER_GONE), "LF_ERR_PEER_GONE");
}

TEST_F(CApi, ProgressThreadCompletesReceivesWithoutTest) {
  ASSERT_EQ(lf_progress_thread(ctx, 1), LF_OK);
  lf_channel_t ch = open_self();
  std::vector<std::thread> senders;
  // Two application threads send on the same channel while the progress
  // thread matches; every message must arrive exactly once.
  for (int t = 0; t < 2; ++t)
    senders.emplace_back([ch, t] {
      for (int i = 0; i < 500; ++i) {
        int v = t * 1000 + i;
        ASSERT_EQ(lf_send(ch, &v, sizeof v, static_cast<uint64_t>(t)), LF_OK);
      }
    });
  for (auto &s : senders) s.join();
  for (int t = 0; t < 2; ++t)
    for (int i = 0; i < 500; ++i) {
      int v = -1;
      ASSERT_EQ(lf_recv(ch, &v, sizeof v, static_cast<uint64_t>(t), nullptr), LF_OK);
      EXPECT_EQ(v, t * 1000 + i);
    }
  lf_channel_close(ch);
  ASSERT_EQ(lf_progress_thread(ctx, 0), LF_OK);
}

}  // namespace
