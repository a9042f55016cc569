// Request channels (lavaflow_rpc.h) between forked ranks, on shm and tcp:
// many calls in flight with payloads across the protocol boundaries, errors
// with their text, cancel and deadlines reaching a running handler, cancel
// racing completion, admission past the queue, a killed server, a killed or
// hostile client while another is served, and bad arguments.
//
// Rank 0 serves; the other ranks are clients. Ranks synchronise over their
// channel (the rpc calls themselves) or the harness's pipes, never by sleeping.
#include <lavaflow/lavaflow.h>
#include <sched.h>
#include <signal.h>

#include <atomic>
#include <cinttypes>
#include <cstring>
#include <string>
#include <vector>

#include "multiprocess.hpp"
#include "payload.hpp"

using namespace lftest;

namespace {

constexpr uint64_t kCtl = 7;  // a plain tag beside the rpc traffic

/// Handlers. Each rank is a fresh process, so these globals are per test.
lf_status_t echo(lf_rpc_call_t c, void *) {
  size_t hl, pl;
  const void *h = lf_rpc_call_header(c, &hl);
  const void *p = lf_rpc_call_payload(c, &pl);
  return lf_rpc_call_respond(c, h, hl, p, pl);
}
lf_status_t broken_disk(lf_rpc_call_t c, void *) { return lf_rpc_call_fail(c, LF_ERR_IO, "the disk is on fire"); }
lf_status_t plain_error(lf_rpc_call_t, void *) { return LF_ERR_UNAVAILABLE; }
lf_status_t nothing(lf_rpc_call_t, void *) { return LF_OK; }
/// Runs until its token flips (bounded, so a broken token fails the test
/// instead of hanging it); answers LF_ERR_CANCELLED then.
lf_status_t until_cancelled(lf_rpc_call_t c, void *) {
  const int64_t end = monotonic_ns() + int64_t{20} * 1000000000;
  while (!lf_rpc_call_cancelled(c)) {
    if (monotonic_ns() > end) return lf_rpc_call_fail(c, LF_ERR_INTERNAL, "the cancel token never flipped");
    sched_yield();
  }
  return LF_ERR_CANCELLED;
}

struct World {
  lf_context_t ctx = nullptr;
  std::vector<lf_channel_t> ch;  // by peer rank (rank 0: to every client; clients: [0] to the server)
};

World open_world(Rank &r) {
  World w;
  REQUIRE_OK(r, lf_init(&w.ctx));
  if (r.rank == 0) {
    w.ch.resize(static_cast<size_t>(r.size));
    for (int p = 1; p < r.size; ++p) REQUIRE_OK(r, lf_channel_open(w.ctx, p, &w.ch[static_cast<size_t>(p)]));
  } else {
    w.ch.resize(1);
    REQUIRE_OK(r, lf_channel_open(w.ctx, 0, &w.ch[0]));
  }
  return w;
}

lf_rpc_server_t start_server(Rank &r, World &w, int threads = 2) {
  lf_rpc_server_t s;
  REQUIRE_OK(r, lf_rpc_server_create(threads, &s));
  REQUIRE_OK(r, lf_rpc_server_register(s, "echo", echo, nullptr));
  REQUIRE_OK(r, lf_rpc_server_register(s, "broken_disk", broken_disk, nullptr));
  REQUIRE_OK(r, lf_rpc_server_register(s, "plain_error", plain_error, nullptr));
  REQUIRE_OK(r, lf_rpc_server_register(s, "nothing", nothing, nullptr));
  REQUIRE_OK(r, lf_rpc_server_register(s, "until_cancelled", until_cancelled, nullptr));
  for (size_t p = 1; p < w.ch.size(); ++p) REQUIRE_OK(r, lf_rpc_server_serve(s, w.ch[p]));
  return s;
}

/// The server's side of most tests: serve until each client says it is done
/// (one byte on kCtl), then stop.
void serve_until_done(Rank &r, int threads = 2) {
  World w = open_world(r);
  lf_rpc_server_t s = start_server(r, w, threads);
  for (size_t p = 1; p < w.ch.size(); ++p) {
    char c = 0;
    REQUIRE_OK(r, lf_recv(w.ch[p], &c, 1, kCtl, nullptr));
  }
  REQUIRE_OK(r, lf_rpc_server_destroy(s));
  REQUIRE_OK(r, lf_finalize(w.ctx));
}

void client_done(Rank &r, World &w, lf_rpc_client_t c) {
  REQUIRE_OK(r, lf_rpc_client_destroy(c));
  char d = 'd';
  REQUIRE_OK(r, lf_send(w.ch[0], &d, 1, kCtl));
  REQUIRE_OK(r, lf_finalize(w.ctx));
}

class Rpc : public MultiProcess, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    env.push_back({"LF_TRANSPORTS", GetParam()});
    env.push_back({"LF_STRICT", "1"});
    env.push_back({"LF_LOG_LEVEL", "error"});
  }
};

TEST_P(Rpc, ManyCallsInFlightEchoHeaderAndPayload) {
  run(2, [](Rank &r) {
    if (r.rank == 0) return serve_until_done(r);
    World w = open_world(r);
    lf_rpc_client_t c;
    REQUIRE_OK(r, lf_rpc_client_create(w.ch[0], &c));
    const size_t sizes[] = {0, 1, 24, 100, 5000, 20000, 70000, size_t{1} << 20, (size_t{9} << 20) + 1};
    constexpr int kCalls = 48;
    std::vector<std::vector<char>> out(kCalls);
    std::vector<lf_rpc_request_t> req(kCalls);
    for (int i = 0; i < kCalls; ++i) {
      const size_t n = sizes[static_cast<size_t>(i) % std::size(sizes)];
      out[static_cast<size_t>(i)].resize(n + 16);
      fill(out[static_cast<size_t>(i)].data(), n + 16, static_cast<uint64_t>(i));
      // header: 16 bytes, payload: n bytes, one pattern across both
      REQUIRE_OK(
          r, lf_rpc_call(c, "echo", out[static_cast<size_t>(i)].data(), 16,
                         n ? out[static_cast<size_t>(i)].data() + 16 : nullptr, n, 0, &req[static_cast<size_t>(i)]));
    }
    // Waited in reverse: responses come in any order.
    for (int i = kCalls - 1; i >= 0; --i) {
      lf_rpc_request_t q = req[static_cast<size_t>(i)];
      REQUIRE_OK(r, lf_rpc_wait(q, 30000));
      const void *h, *p;
      size_t hl, pl;
      REQUIRE_OK(r, lf_rpc_response(q, &h, &hl, &p, &pl));
      const size_t n = out[static_cast<size_t>(i)].size() - 16;
      REQUIRE(r, hl == 16 && pl == n, "call %d: %zu + %zu bytes", i, hl, pl);
      REQUIRE(r, std::memcmp(h, out[static_cast<size_t>(i)].data(), 16) == 0, "call %d: header differs", i);
      REQUIRE(r, n == 0 || std::memcmp(p, out[static_cast<size_t>(i)].data() + 16, n) == 0, "call %d: payload", i);
      REQUIRE_OK(r, lf_rpc_release(q));
    }
    client_done(r, w, c);
  });
}

TEST_P(Rpc, ErrorsCarryTheirStatusAndText) {
  run(2, [](Rank &r) {
    if (r.rank == 0) return serve_until_done(r);
    World w = open_world(r);
    lf_rpc_client_t c;
    REQUIRE_OK(r, lf_rpc_client_create(w.ch[0], &c));
    auto expect = [&](const char *method, lf_status_t want, const char *text) {
      lf_rpc_request_t q;
      REQUIRE_OK(r, lf_rpc_call(c, method, nullptr, 0, nullptr, 0, 0, &q));
      REQUIRE_ST(r, want, lf_rpc_wait(q, 30000));
      REQUIRE(r, std::strstr(lf_last_error(), text) != nullptr, "%s: error text '%s' lacks '%s'", method,
              lf_last_error(), text);
      REQUIRE_ST(r, want, lf_rpc_wait(q, 0));  // the terminal status stays
      REQUIRE_ST(r, want, lf_rpc_response(q, nullptr, nullptr, nullptr, nullptr));
      REQUIRE_OK(r, lf_rpc_release(q));
    };
    expect("broken_disk", LF_ERR_IO, "the disk is on fire");
    expect("plain_error", LF_ERR_UNAVAILABLE, "plain_error");
    expect("no_such_method", LF_ERR_NOT_FOUND, "no_such_method");
    lf_rpc_request_t q;
    REQUIRE_OK(r, lf_rpc_call(c, "nothing", nullptr, 0, nullptr, 0, 0, &q));
    REQUIRE_OK(r, lf_rpc_wait(q, -1));
    size_t hl = 1, pl = 1;
    REQUIRE_OK(r, lf_rpc_response(q, nullptr, &hl, nullptr, &pl));
    REQUIRE(r, hl == 0 && pl == 0, "empty response: %zu + %zu", hl, pl);
    REQUIRE_OK(r, lf_rpc_release(q));
    client_done(r, w, c);
  });
}

TEST_P(Rpc, CancelAndDeadlineReachARunningHandler) {
  run(2, [](Rank &r) {
    if (r.rank == 0) return serve_until_done(r);
    World w = open_world(r);
    lf_rpc_client_t c;
    REQUIRE_OK(r, lf_rpc_client_create(w.ch[0], &c));
    lf_rpc_request_t q;
    REQUIRE_OK(r, lf_rpc_call(c, "until_cancelled", nullptr, 0, nullptr, 0, 0, &q));
    REQUIRE_ST(r, LF_IN_PROGRESS, lf_rpc_wait(q, 0));   // a test returns at once
    REQUIRE_ST(r, LF_IN_PROGRESS, lf_rpc_wait(q, 20));  // not done by itself
    REQUIRE_OK(r, lf_rpc_cancel(q));
    REQUIRE_ST(r, LF_ERR_CANCELLED, lf_rpc_wait(q, 30000));
    REQUIRE_OK(r, lf_rpc_release(q));
    // A deadline: the server flips the token; the handler's LF_ERR_CANCELLED
    // is reported as the deadline it was.
    REQUIRE_OK(r, lf_rpc_call(c, "until_cancelled", nullptr, 0, nullptr, 0, 50, &q));
    REQUIRE_ST(r, LF_ERR_TIMEOUT, lf_rpc_wait(q, 30000));
    REQUIRE_OK(r, lf_rpc_release(q));
    // Releasing a call in flight cancels it; the server keeps serving.
    REQUIRE_OK(r, lf_rpc_call(c, "until_cancelled", nullptr, 0, nullptr, 0, 0, &q));
    REQUIRE_OK(r, lf_rpc_release(q));
    REQUIRE_OK(r, lf_rpc_call(c, "nothing", nullptr, 0, nullptr, 0, 0, &q));
    REQUIRE_OK(r, lf_rpc_wait(q, 30000));
    REQUIRE_OK(r, lf_rpc_release(q));
    client_done(r, w, c);
  });
}

// Sanitizers slow every call tenfold: fewer rounds keep the test's time.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kRaces = 300;
#else
constexpr int kRaces = 3000;
#endif

TEST_P(Rpc, CancelRacingCompletionHasOneOutcome) {
  run(2, [](Rank &r) {
    if (r.rank == 0) return serve_until_done(r);
    World w = open_world(r);
    lf_rpc_client_t c;
    REQUIRE_OK(r, lf_rpc_client_create(w.ch[0], &c));
    int ok = 0, cancelled = 0;
    char payload[64];
    fill(payload, sizeof payload, 5);
    for (int i = 0; i < kRaces; ++i) {
      lf_rpc_request_t q;
      REQUIRE_OK(r, lf_rpc_call(c, "echo", nullptr, 0, payload, sizeof payload, 0, &q));
      if (i % 3) REQUIRE_OK(r, lf_rpc_cancel(q));
      lf_status_t st = lf_rpc_wait(q, 30000);
      if (st == LF_OK) {
        const void *p;
        size_t pl;
        REQUIRE_OK(r, lf_rpc_response(q, nullptr, nullptr, &p, &pl));
        REQUIRE(r, pl == sizeof payload && std::memcmp(p, payload, pl) == 0, "call %d: wrong echo", i);
        ++ok;
      } else {
        REQUIRE(r, st == LF_ERR_CANCELLED, "call %d ended %s (%s)", i, lf_status_string(st), lf_last_error());
        ++cancelled;
      }
      REQUIRE_ST(r, st, lf_rpc_wait(q, 0));  // one terminal status, every time it is asked
      REQUIRE_OK(r, lf_rpc_release(q));
    }
    REQUIRE(r, ok + cancelled == kRaces && ok >= kRaces / 3, "%d completed, %d cancelled", ok, cancelled);
    client_done(r, w, c);
  });
}

TEST_P(Rpc, CallsPastTheQueueAreBusy) {
  env.push_back({"LF_RPC_QUEUE_MAX", "4"});
  run(2, [](Rank &r) {
    if (r.rank == 0) return serve_until_done(r, 1);
    World w = open_world(r);
    lf_rpc_client_t c;
    REQUIRE_OK(r, lf_rpc_client_create(w.ch[0], &c));
    lf_rpc_request_t q[5];
    for (auto &x : q) REQUIRE_OK(r, lf_rpc_call(c, "until_cancelled", nullptr, 0, nullptr, 0, 0, &x));
    // One runs, three wait: the fifth is past the cap of four.
    REQUIRE_ST(r, LF_ERR_BUSY, lf_rpc_wait(q[4], 30000));
    for (int i = 0; i < 4; ++i) REQUIRE_OK(r, lf_rpc_cancel(q[i]));
    for (int i = 0; i < 4; ++i) REQUIRE_ST(r, LF_ERR_CANCELLED, lf_rpc_wait(q[i], 30000));
    for (auto &x : q) REQUIRE_OK(r, lf_rpc_release(x));
    client_done(r, w, c);
  });
}

TEST_P(Rpc, AKilledServerFailsEveryPendingCall) {
  spawn(2, [](Rank &r) {
    if (r.rank == 0) {
      World w = open_world(r);
      (void)start_server(r, w);
      r.signal('s');
      for (;;) pause();  // killed by the parent
    }
    World w = open_world(r);
    lf_rpc_client_t c;
    REQUIRE_OK(r, lf_rpc_client_create(w.ch[0], &c));
    lf_rpc_request_t q[3];
    for (auto &x : q) REQUIRE_OK(r, lf_rpc_call(c, "until_cancelled", nullptr, 0, nullptr, 0, 0, &x));
    REQUIRE_ST(r, LF_IN_PROGRESS, lf_rpc_wait(q[0], 10));
    r.signal('c');  // calls are out: the parent kills the server
    const int64_t t0 = monotonic_ns();
    for (auto &x : q) REQUIRE_ST(r, LF_ERR_PEER_GONE, lf_rpc_wait(x, 30000));
    const int64_t ms = (monotonic_ns() - t0) / 1000000;
    REQUIRE(r, ms < 5000, "noticed the dead server after %" PRId64 " ms", ms);
    lf_rpc_request_t late;
    REQUIRE_ST(r, LF_ERR_PEER_GONE, lf_rpc_call(c, "nothing", nullptr, 0, nullptr, 0, 0, &late));
    for (auto &x : q) REQUIRE_OK(r, lf_rpc_release(x));
    REQUIRE_OK(r, lf_rpc_client_destroy(c));
    _exit(0);  // the world lost a rank: no finalize barrier
  });
  ASSERT_EQ(await(0), 's');
  ASSERT_EQ(await(1), 'c');
  kill(pid_of(0), SIGKILL);
  expect_all_ok(60, {0});
}

TEST_P(Rpc, OneBadClientDoesNotStopTheOthers) {
  // Rank 1 sends garbage and is then killed mid-call; rank 2 is served throughout.
  spawn(3, [](Rank &r) {
    if (r.rank == 0) {
      World w = open_world(r);
      lf_rpc_server_t s = start_server(r, w);
      char c = 0;
      REQUIRE_OK(r, lf_recv(w.ch[2], &c, 1, kCtl, nullptr));
      REQUIRE_OK(r, lf_rpc_server_destroy(s));
      r.signal('x');
      for (;;) pause();  // the parent kills every rank left: rank 1 broke the world's finalize
    }
    World w = open_world(r);
    lf_rpc_client_t c;
    REQUIRE_OK(r, lf_rpc_client_create(w.ch[0], &c));
    lf_rpc_request_t q;
    if (r.rank == 1) {
      REQUIRE_OK(r, lf_rpc_call(c, "until_cancelled", nullptr, 0, nullptr, 0, 0, &q));
      REQUIRE_ST(r, LF_IN_PROGRESS, lf_rpc_wait(q, 10));
      const char garbage[48] = "this is not an rpc message, not even close";
      REQUIRE_OK(r, lf_send(w.ch[0], garbage, sizeof garbage, 0x4c46525043000001ull));
      REQUIRE_ST(r, LF_ERR_PROTOCOL, lf_rpc_wait(q, 30000));  // the server dropped this client, saying why
      REQUIRE(r, std::strstr(lf_last_error(), "dropped") != nullptr, "error text: %s", lf_last_error());
      r.signal('g');
      for (;;) pause();
    }
    REQUIRE(r, r.await() == 'k', "go");  // rank 1 is dead
    for (int i = 0; i < 100; ++i) {
      REQUIRE_OK(r, lf_rpc_call(c, "echo", nullptr, 0, &i, sizeof i, 0, &q));
      REQUIRE_OK(r, lf_rpc_wait(q, 30000));
      REQUIRE_OK(r, lf_rpc_release(q));
    }
    REQUIRE_OK(r, lf_rpc_client_destroy(c));
    char d = 'd';
    REQUIRE_OK(r, lf_send(w.ch[0], &d, 1, kCtl));
    r.signal('y');
    for (;;) pause();
  });
  ASSERT_EQ(await(1), 'g');
  kill(pid_of(1), SIGKILL);
  signal(2, 'k');
  ASSERT_EQ(await(2), 'y');
  ASSERT_EQ(await(0), 'x');
  kill(pid_of(0), SIGKILL);
  kill(pid_of(2), SIGKILL);
  expect_all_ok(60, {0, 1, 2});
}

INSTANTIATE_TEST_SUITE_P(Transports, Rpc, ::testing::Values("shm", "tcp"), [](const auto &i) { return i.param; });

TEST(RpcArgs, BadArgumentsAreRefused) {
  lf_rpc_server_t s = nullptr;
  EXPECT_EQ(lf_rpc_server_create(2, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_rpc_server_create(-1, &s), LF_ERR_INVALID_ARG);
  ASSERT_EQ(lf_rpc_server_create(1, &s), LF_OK);
  EXPECT_EQ(lf_rpc_server_register(s, "", echo, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_rpc_server_register(s, nullptr, echo, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_rpc_server_register(s, "x", nullptr, nullptr), LF_ERR_INVALID_ARG);
  std::string long_name(300, 'a');
  EXPECT_EQ(lf_rpc_server_register(s, long_name.c_str(), echo, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_GT(std::strlen(lf_last_error()), 0u);
  EXPECT_LT(lf_rpc_server_serve(s, nullptr), 0);
  EXPECT_EQ(lf_rpc_server_register(reinterpret_cast<lf_rpc_server_t>(&long_name), "x", echo, nullptr),
            LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_rpc_server_destroy(s), LF_OK);
  lf_rpc_client_t c = nullptr;
  EXPECT_LT(lf_rpc_client_create(nullptr, &c), 0);
  EXPECT_EQ(lf_rpc_wait(nullptr, 0), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_rpc_release(nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_rpc_cancel(reinterpret_cast<lf_rpc_request_t>(&long_name)), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_rpc_call_respond(nullptr, nullptr, 0, nullptr, 0), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_rpc_call_cancelled(nullptr), 1);
}

}  // namespace
