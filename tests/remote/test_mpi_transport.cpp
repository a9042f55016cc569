// The mpi transport's semantics, run by ctest under `mpiexec -n 2`. The two
// ranks declare different locations (LF_LOCATION_FILE, written here before
// lf_init) so their scope is remote and the channel rides the mpi transport.
// Both ranks run every test; rank 0 mostly sends, rank 1 checks.
#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

lf_context_t g_ctx = nullptr;
int g_rank = -1;

std::vector<char> pattern(size_t n, int seed) {
  std::vector<char> v(n);
  uint32_t x = static_cast<uint32_t>(seed) * 2654435761u + 1;
  for (char &c : v) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 16);
  }
  return v;
}

class MpiTransport : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(g_ctx, nullptr);
    ASSERT_EQ(lf_size(g_ctx), 2);
    ASSERT_EQ(lf_channel_open(g_ctx, 1 - g_rank, &ch), LF_OK) << lf_last_error();
  }
  void TearDown() override {
    // Both ranks leave the test together, so neither closes while the other
    // still uses the channel.
    EXPECT_EQ(lf_barrier(g_ctx), LF_OK);
    if (ch) {
      EXPECT_EQ(lf_channel_close(ch), LF_OK);
    }
  }
  lf_channel_t ch = nullptr;
};

TEST_F(MpiTransport, RemoteScopeSelectsMpi) {
  EXPECT_EQ(lf_scope(g_ctx, 1 - g_rank), LF_SCOPE_REMOTE);
  EXPECT_STREQ(lf_channel_transport(ch), "mpi");
  EXPECT_NE(std::string(lf_channel_reason(ch)).find("remote scope"), std::string::npos) << lf_channel_reason(ch);
}

TEST_F(MpiTransport, SizesAcrossProtocolsArriveIntact) {
  // Around the eager limit (1 KiB), the chunk size (8 MiB) and beyond.
  const size_t sizes[] = {0, 1, 8, 1024, 1025, 8192, 65536, (8u << 20) - 1, 8u << 20, (8u << 20) + 3, 20u << 20};
  for (size_t n : sizes) {
    SCOPED_TRACE(n);
    auto want = pattern(n, static_cast<int>(n % 1000));
    if (g_rank == 0) {
      ASSERT_EQ(lf_send(ch, want.data(), n, 42), LF_OK) << lf_last_error();
    } else {
      std::vector<char> got(n + 16, 0);
      size_t bytes = 0;
      ASSERT_EQ(lf_recv(ch, got.data(), got.size(), 42, &bytes), LF_OK) << lf_last_error();
      EXPECT_EQ(bytes, n);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), n), 0);
    }
  }
}

TEST_F(MpiTransport, TruncationKeepsThePrefixAndTheStreamGoesOn) {
  for (size_t n : {size_t{1000}, size_t{100000}, size_t{(8u << 20) + 5000}}) {
    SCOPED_TRACE(n);
    auto msg = pattern(n, 1), next = pattern(64, 2);
    if (g_rank == 0) {
      ASSERT_EQ(lf_send(ch, msg.data(), n, 1), LF_OK);
      ASSERT_EQ(lf_send(ch, next.data(), next.size(), 1), LF_OK);
    } else {
      // Capacity inside a chunk, so both the direct and the bounce path run.
      std::vector<char> small(n / 3), after(64);
      lf_request_t r;
      ASSERT_EQ(lf_irecv(ch, small.data(), small.size(), 1, &r), LF_OK);
      lf_completion_t c = LF_COMPLETION_INIT;
      EXPECT_EQ(lf_wait_completion(r, &c), LF_ERR_TRUNCATED);
      EXPECT_EQ(c.bytes, small.size());
      EXPECT_EQ(c.message_bytes, n);
      EXPECT_EQ(std::memcmp(small.data(), msg.data(), small.size()), 0);
      size_t bytes = 0;
      ASSERT_EQ(lf_recv(ch, after.data(), after.size(), 1, &bytes), LF_OK) << lf_last_error();
      EXPECT_EQ(after, next);
    }
  }
}

TEST_F(MpiTransport, BufferReceives) {
  for (size_t n : {size_t{0}, size_t{77}, size_t{3} << 20}) {
    SCOPED_TRACE(n);
    auto msg = pattern(n, 5);
    if (g_rank == 0) {
      ASSERT_EQ(lf_send(ch, msg.data(), n, 9), LF_OK);
    } else {
      lf_request_t r;
      ASSERT_EQ(lf_irecv_buffer(ch, 9, &r), LF_OK);
      lf_buffer_t b = nullptr;
      lf_completion_t c = LF_COMPLETION_INIT;
      ASSERT_EQ(lf_wait_buffer(r, &b, &c), LF_OK) << lf_last_error();
      EXPECT_EQ(lf_buffer_size(b), n);
      if (n) {
        EXPECT_EQ(std::memcmp(lf_buffer_data(b), msg.data(), n), 0);
      }
      EXPECT_EQ(lf_free(b), LF_OK);
    }
  }
}

TEST_F(MpiTransport, TagsMatchInOrderAndAnyTagTakesTheEarliest) {
  // Rank 0 sends A(tag 1, large), B(tag 2, small), C(tag 1, small).
  // Rank 1 first receives tag 2 (B must not wait for the large A), then
  // tag 1 twice (A before C), nothing overtakes within a tag.
  auto a = pattern(1 << 20, 11), b = pattern(10, 12), c = pattern(20, 13);
  if (g_rank == 0) {
    lf_request_t r[3];
    ASSERT_EQ(lf_isend(ch, a.data(), a.size(), 1, &r[0]), LF_OK);
    ASSERT_EQ(lf_isend(ch, b.data(), b.size(), 2, &r[1]), LF_OK);
    ASSERT_EQ(lf_isend(ch, c.data(), c.size(), 1, &r[2]), LF_OK);
    for (auto &q : r) ASSERT_EQ(lf_wait(q, nullptr), LF_OK);
  } else {
    std::vector<char> gb(10), ga(1 << 20), gc(20);
    ASSERT_EQ(lf_recv(ch, gb.data(), gb.size(), 2, nullptr), LF_OK);
    EXPECT_EQ(gb, b);
    ASSERT_EQ(lf_recv(ch, ga.data(), ga.size(), 1, nullptr), LF_OK);
    EXPECT_EQ(ga, a);
    ASSERT_EQ(lf_recv(ch, gc.data(), gc.size(), 1, nullptr), LF_OK);
    EXPECT_EQ(gc, c);
  }
  EXPECT_EQ(lf_barrier(g_ctx), LF_OK);
  // LF_ANY_TAG: the earliest message, whatever its tag (64-bit tags too).
  const uint64_t tags[] = {0xffffffff00000001ull, 5, 0x8000000000000000ull};
  if (g_rank == 0) {
    for (int i = 0; i < 3; ++i) ASSERT_EQ(lf_send(ch, &i, sizeof i, tags[i]), LF_OK);
  } else {
    for (int i = 0; i < 3; ++i) {
      int v = -1;
      lf_request_t r;
      ASSERT_EQ(lf_irecv(ch, &v, sizeof v, LF_ANY_TAG, &r), LF_OK);
      lf_completion_t comp = LF_COMPLETION_INIT;
      ASSERT_EQ(lf_wait_completion(r, &comp), LF_OK);
      EXPECT_EQ(v, i);
      EXPECT_EQ(comp.tag, tags[i]);
    }
  }
}

// The sender moves between the ring and the direct stream as sizes and tags
// change (a large message goes direct, a run of small ones returns to the
// ring, a tag beyond MPI_TAG_UB always takes the ring). Whatever the stream,
// messages must come out in the order they were sent, both when the
// receives are waiting and when the messages arrive first.
TEST_F(MpiTransport, MessagesKeepTheirOrderAcrossStreamSwitches) {
  struct Msg {
    size_t n;
    uint64_t tag;
  };
  std::vector<Msg> seq = {{8, 1}, {65536, 2}, {8, 3}, {100000, 4}, {0, 5}, {3 << 20, 6}};
  for (int i = 0; i < 12; ++i) seq.push_back({16, 7});  // back to the ring
  seq.push_back({200000, 8});
  seq.push_back({70000, 0x8000000000000001ull});  // no MPI tag for it: ring
  seq.push_back({70000, 9});
  seq.push_back({5, 0xffffffffffffff00ull});
  seq.push_back({65536, 10});
  std::vector<std::vector<char>> data;
  for (size_t i = 0; i < seq.size(); ++i) data.push_back(pattern(seq[i].n, static_cast<int>(i) + 100));
  for (bool receives_first : {true, false}) {
    SCOPED_TRACE(receives_first ? "receives posted first" : "messages arrive first");
    if (g_rank == 0) {
      std::vector<lf_request_t> r(seq.size());
      for (size_t i = 0; i < seq.size(); ++i)
        ASSERT_EQ(lf_isend(ch, data[i].data(), seq[i].n, seq[i].tag, &r[i]), LF_OK) << lf_last_error();
      if (!receives_first) {
        ASSERT_EQ(lf_barrier(g_ctx), LF_OK);
      }
      for (auto &q : r) ASSERT_EQ(lf_wait(q, nullptr), LF_OK) << lf_last_error();
    } else {
      if (!receives_first) {
        ASSERT_EQ(lf_barrier(g_ctx), LF_OK);
      }
      std::vector<std::vector<char>> got(seq.size());
      std::vector<lf_request_t> r(seq.size());
      for (size_t i = 0; i < seq.size(); ++i) {
        got[i].assign(seq[i].n + 8, 0);
        ASSERT_EQ(lf_irecv(ch, got[i].data(), got[i].size(), LF_ANY_TAG, &r[i]), LF_OK);
      }
      for (size_t i = 0; i < seq.size(); ++i) {
        SCOPED_TRACE(i);
        lf_completion_t c = LF_COMPLETION_INIT;
        ASSERT_EQ(lf_wait_completion(r[i], &c), LF_OK) << lf_last_error();
        EXPECT_EQ(c.tag, seq[i].tag);
        ASSERT_EQ(c.bytes, seq[i].n);
        EXPECT_EQ(std::memcmp(got[i].data(), data[i].data(), seq[i].n), 0);
      }
    }
    EXPECT_EQ(lf_barrier(g_ctx), LF_OK);
  }
}

// Many switches: sizes on both sides of the eager limit, and tags with and
// without an MPI tag of their own, in a seeded random order, sent in
// windows; every message must arrive whole and in order.
TEST_F(MpiTransport, RandomMixOfSizesAndTagsArrivesInOrder) {
  const size_t sizes[] = {0, 8, 1000, 1024, 1025, 4096, 65536, 300000};
  const uint64_t tags[] = {1, 2, uint64_t{1} << 40};
  constexpr int kCount = 600, kWindow = 8;
  std::vector<size_t> n(kCount);
  std::vector<uint64_t> tag(kCount);
  uint32_t x = 12345;
  for (int i = 0; i < kCount; ++i) {
    x = x * 1103515245u + 12345u;
    n[static_cast<size_t>(i)] = sizes[(x >> 16) % std::size(sizes)];
    tag[static_cast<size_t>(i)] = tags[(x >> 8) % std::size(tags)];
  }
  std::vector<std::vector<char>> data(kWindow), got(kWindow);
  for (int base = 0; base < kCount; base += kWindow) {
    lf_request_t r[kWindow];
    for (int k = 0; k < kWindow; ++k) {
      size_t i = static_cast<size_t>(base + k);
      data[static_cast<size_t>(k)] = pattern(n[i], static_cast<int>(i));
      if (g_rank == 0) {
        ASSERT_EQ(lf_isend(ch, data[static_cast<size_t>(k)].data(), n[i], tag[i], &r[k]), LF_OK) << lf_last_error();
      } else {
        got[static_cast<size_t>(k)].assign(n[i] + 1, 0);
        ASSERT_EQ(lf_irecv(ch, got[static_cast<size_t>(k)].data(), n[i] + 1, LF_ANY_TAG, &r[k]), LF_OK);
      }
    }
    for (int k = 0; k < kWindow; ++k) {
      size_t i = static_cast<size_t>(base + k);
      SCOPED_TRACE(i);
      lf_completion_t c = LF_COMPLETION_INIT;
      ASSERT_EQ(lf_wait_completion(r[k], &c), LF_OK) << lf_last_error();
      if (g_rank == 1) {
        ASSERT_EQ(c.tag, tag[i]);
        ASSERT_EQ(c.bytes, n[i]);
        ASSERT_EQ(std::memcmp(got[static_cast<size_t>(k)].data(), data[static_cast<size_t>(k)].data(), n[i]), 0);
      }
    }
  }
}

// A tag-specific receive posted before the others must not hold back
// messages of other tags that wait on the direct stream.
TEST_F(MpiTransport, DirectMessagesOfOtherTagsAreNotHeldBack) {
  auto a = pattern(100000, 31), b = pattern(100000, 32);
  if (g_rank == 0) {
    lf_request_t r[2];
    ASSERT_EQ(lf_isend(ch, a.data(), a.size(), 1, &r[0]), LF_OK);
    ASSERT_EQ(lf_isend(ch, b.data(), b.size(), 2, &r[1]), LF_OK);
    for (auto &q : r) ASSERT_EQ(lf_wait(q, nullptr), LF_OK);
  } else {
    std::vector<char> ga(a.size()), gb(b.size());
    ASSERT_EQ(lf_recv(ch, gb.data(), gb.size(), 2, nullptr), LF_OK) << lf_last_error();
    ASSERT_EQ(lf_recv(ch, ga.data(), ga.size(), 1, nullptr), LF_OK) << lf_last_error();
    EXPECT_EQ(ga, a);
    EXPECT_EQ(gb, b);
  }
}

// A direct message that arrived before its receive (so the channel holds it
// as unexpected) and is never received: the receiver closes, and the
// sender's send ends with LF_ERR_PEER_GONE, not as delivered and not never.
TEST_F(MpiTransport, UnreceivedDirectMessageFailsItsSendWhenThePeerCloses) {
  lf_channel_t extra = nullptr;
  ASSERT_EQ(lf_channel_open(g_ctx, 1 - g_rank, &extra), LF_OK) << lf_last_error();
  auto a = pattern(100000, 41), b = pattern(100000, 42);
  if (g_rank == 0) {
    lf_request_t r[2];
    ASSERT_EQ(lf_isend(extra, a.data(), a.size(), 1, &r[0]), LF_OK);
    ASSERT_EQ(lf_isend(extra, b.data(), b.size(), 2, &r[1]), LF_OK);
    EXPECT_EQ(lf_wait(r[1], nullptr), LF_OK) << lf_last_error();
    EXPECT_EQ(lf_wait(r[0], nullptr), LF_ERR_PEER_GONE) << lf_last_error();
  } else {
    std::vector<char> gb(b.size());
    ASSERT_EQ(lf_recv(extra, gb.data(), gb.size(), 2, nullptr), LF_OK) << lf_last_error();  // a: unexpected
    EXPECT_EQ(gb, b);
  }
  EXPECT_EQ(lf_channel_close(extra), LF_OK);
}

// The peer closes while this rank only waits on a send: the bye arrives on
// the stream the peer was sending on (here the direct one, after a large
// message), and must still end the send, though no receive is posted.
TEST_F(MpiTransport, PeerClosingEndsASendWaitedOnWithoutReceives) {
  lf_channel_t extra = nullptr;
  ASSERT_EQ(lf_channel_open(g_ctx, 1 - g_rank, &extra), LF_OK) << lf_last_error();
  auto a = pattern(100000, 51), b = pattern(100000, 52);
  if (g_rank == 1) {
    ASSERT_EQ(lf_send(extra, a.data(), a.size(), 1), LF_OK) << lf_last_error();  // 1 -> 0 goes direct
    ASSERT_EQ(lf_channel_close(extra), LF_OK);                                   // b is never received
  } else {
    std::vector<char> ga(a.size());
    ASSERT_EQ(lf_recv(extra, ga.data(), ga.size(), 1, nullptr), LF_OK) << lf_last_error();
    lf_request_t r;
    ASSERT_EQ(lf_isend(extra, b.data(), b.size(), 2, &r), LF_OK);
    // Bounded, so a regression fails here instead of hanging the suite.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    int done = 0;
    lf_status_t st = LF_OK;
    while (!done && st == LF_OK && std::chrono::steady_clock::now() < deadline) st = lf_test(r, &done);
    ASSERT_TRUE(done || st != LF_OK) << "the send to a closed peer never ended";
    EXPECT_EQ(lf_wait(r, nullptr), LF_ERR_PEER_GONE) << lf_last_error();
    EXPECT_EQ(lf_channel_close(extra), LF_OK);
  }
}

TEST_F(MpiTransport, TwoChannelsToOnePeerDoNotMix) {
  lf_channel_t second = nullptr;
  ASSERT_EQ(lf_channel_open(g_ctx, 1 - g_rank, &second), LF_OK) << lf_last_error();
  auto x = pattern(100000, 21), y = pattern(100000, 22);
  if (g_rank == 0) {
    // Non-blocking: like MPI_Send, a blocking send of a large message may
    // wait for its receive, which rank 1 posts on the other channel first.
    lf_request_t r[2];
    ASSERT_EQ(lf_isend(second, y.data(), y.size(), 3, &r[0]), LF_OK);
    ASSERT_EQ(lf_isend(ch, x.data(), x.size(), 3, &r[1]), LF_OK);
    for (auto &q : r) ASSERT_EQ(lf_wait(q, nullptr), LF_OK);
  } else {
    std::vector<char> gx(x.size()), gy(y.size());
    ASSERT_EQ(lf_recv(ch, gx.data(), gx.size(), 3, nullptr), LF_OK);
    ASSERT_EQ(lf_recv(second, gy.data(), gy.size(), 3, nullptr), LF_OK);
    EXPECT_EQ(gx, x);
    EXPECT_EQ(gy, y);
  }
  EXPECT_EQ(lf_barrier(g_ctx), LF_OK);
  EXPECT_EQ(lf_channel_close(second), LF_OK);
}

TEST_F(MpiTransport, PeerClosingItsEndFailsPendingReceives) {
  // The close is announced on the stream the receiver reads: the ring, or
  // the direct stream after a large message.
  for (size_t first : {size_t{0}, size_t{100000}}) {
    SCOPED_TRACE(first);
    lf_channel_t extra = nullptr;
    ASSERT_EQ(lf_channel_open(g_ctx, 1 - g_rank, &extra), LF_OK) << lf_last_error();
    auto msg = pattern(first, 3);
    if (g_rank == 0) {
      if (first) {
        ASSERT_EQ(lf_send(extra, msg.data(), first, 1), LF_OK) << lf_last_error();
      }
      ASSERT_EQ(lf_channel_close(extra), LF_OK);
    } else {
      if (first) {
        std::vector<char> got(first);
        ASSERT_EQ(lf_recv(extra, got.data(), got.size(), 1, nullptr), LF_OK) << lf_last_error();
        EXPECT_EQ(got, msg);
      }
      char buf[8];
      EXPECT_EQ(lf_recv(extra, buf, sizeof buf, 1, nullptr), LF_ERR_PEER_GONE);
      EXPECT_NE(std::string(lf_last_error()).find("closed its end"), std::string::npos) << lf_last_error();
      EXPECT_EQ(lf_channel_close(extra), LF_OK);
    }
  }
}

}  // namespace

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char *r = std::getenv("OMPI_COMM_WORLD_RANK");
  if (!r) {
    std::fprintf(stderr, "run me under mpiexec -n 2\n");
    return 2;
  }
  // A host of its own for each rank: remote scope, mpi transport.
  std::string path = "/tmp/lf-test-mpi-" + std::to_string(getppid()) + "-" + r + ".json";
  if (FILE *f = std::fopen(path.c_str(), "w")) {
    std::fprintf(f, "{\"hostname\": \"mpi-test-node-%s\", \"boot_id\": \"mpi-test-boot-%s\"}\n", r, r);
    std::fclose(f);
  }
  setenv("LF_LOCATION_FILE", path.c_str(), 1);
  // --app-funneled: the application owns MPI at MPI_THREAD_FUNNELED, so the
  // transport serialises its MPI calls under its own lock.
  bool app_owns_mpi = argc > 1 && std::strcmp(argv[1], "--app-funneled") == 0;
  if (app_owns_mpi) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  }
  if (lf_init(&g_ctx) != LF_OK) {
    std::fprintf(stderr, "lf_init: %s\n", lf_last_error());
    return 1;
  }
  std::remove(path.c_str());
  g_rank = lf_rank(g_ctx);
  int rc = RUN_ALL_TESTS();
  lf_finalize(g_ctx);
  if (app_owns_mpi) MPI_Finalize();
  return rc;
}
