// Channels by address (lf_listen / lf_accept / lf_connect) between two
// independent processes, each a world of one: plain messages and request
// channels over tcp and unix sockets, the token challenge (wrong, missing),
// a client that speaks garbage, and a peer that dies. The parent passes the
// listener's address from one process to the other over the harness's pipes.
#include <lavaflow/lavaflow.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <string>

#include "multiprocess.hpp"
#include "own_world.hpp"

using namespace lftest;

namespace {

void send_text(const Rank &r, const std::string &s) {
  uint32_t n = static_cast<uint32_t>(s.size());
  r.report(&n, sizeof n);
  r.report(s.data(), n);
}
std::string recv_text(const Rank &r) {
  uint32_t n = 0;
  r.receive(&n, sizeof n);
  std::string s(n, '\0');
  r.receive(s.data(), n);
  return s;
}

/// Listen on `addr` and tell the parent the bound address (relayed to rank 1).
lf_listener_t listen_and_tell(Rank &r, lf_context_t ctx, const std::string &addr) {
  lf_listener_t l;
  REQUIRE_OK(r, lf_listen(ctx, addr.c_str(), &l));
  char buf[256];
  REQUIRE_OK(r, lf_listener_address(l, buf, sizeof buf));
  send_text(r, buf);
  return l;
}

lf_status_t echo(lf_rpc_call_t c, void *) {
  size_t pl;
  const void *p = lf_rpc_call_payload(c, &pl);
  return lf_rpc_call_respond(c, nullptr, 0, p, pl);
}

class Dial : public MultiProcess, public ::testing::WithParamInterface<std::string> {
 protected:
  /// Relay rank 0's listener address to rank 1.
  void relay() {
    uint32_t n = 0;
    ASSERT_TRUE(read_report(0, &n, sizeof n));
    std::string a(n, '\0');
    ASSERT_TRUE(read_report(0, a.data(), n));
    send_to(1, &n, sizeof n);
    send_to(1, a.data(), n);
  }
  std::string address() const {
    if (GetParam() == "tcp") return "tcp://127.0.0.1:0";
    return "unix:/tmp/lf-dial-" + std::to_string(getpid()) + ".sock";
  }
};

TEST_P(Dial, MessagesAndCallsFlowBothWays) {
  const std::string addr = address();
  spawn(2, [&](Rank &r) {
    lf_context_t ctx = own_world(r, "s3cret");
    if (r.rank == 0) {
      lf_listener_t l = listen_and_tell(r, ctx, addr);
      lf_channel_t ch;
      REQUIRE_OK(r, lf_accept(l, 30000, &ch));
      REQUIRE(r, lf_channel_peer(ch) == -1, "peer %d", lf_channel_peer(ch));
      REQUIRE(r, std::strstr(lf_channel_reason(ch), "by address") != nullptr, "reason: %s", lf_channel_reason(ch));
      // Same host: a Unix socket moves onto shared memory, TCP stays a stream.
      const char *want = addr.rfind("unix:", 0) == 0 ? "shm" : "tcp";
      REQUIRE(r, std::strcmp(lf_channel_transport(ch), want) == 0, "transport %s, want %s (%s)",
              lf_channel_transport(ch), want, lf_channel_reason(ch));
      // A shared buffer crosses whole (by descriptor on shm).
      lf_request_t b;
      REQUIRE_OK(r, lf_irecv_buffer(ch, 4, &b));
      lf_buffer_t view = nullptr;
      lf_completion_t info = LF_COMPLETION_INIT;
      REQUIRE_OK(r, lf_wait_buffer(b, &view, &info));
      REQUIRE(r, lf_buffer_size(view) == 4 << 20 && static_cast<char *>(lf_buffer_data(view))[123] == 'q',
              "buffer of %zu bytes", lf_buffer_size(view));
      REQUIRE_OK(r, lf_free(view));
      std::vector<char> msg(1 << 20);
      size_t got = 0;
      REQUIRE_OK(r, lf_recv(ch, msg.data(), msg.size(), 1, &got));
      REQUIRE_OK(r, lf_send(ch, msg.data(), got, 2));
      lf_rpc_server_t s;
      REQUIRE_OK(r, lf_rpc_server_create(1, &s));
      REQUIRE_OK(r, lf_rpc_server_register(s, "echo", echo, nullptr));
      REQUIRE_OK(r, lf_rpc_server_serve(s, ch));
      char done;
      REQUIRE_OK(r, lf_recv(ch, &done, 1, 3, nullptr));
      REQUIRE_OK(r, lf_rpc_server_destroy(s));
      REQUIRE_OK(r, lf_listener_close(l));
      REQUIRE_OK(r, lf_finalize(ctx));
      return;
    }
    const std::string a = recv_text(r);
    lf_channel_t ch;
    REQUIRE_OK(r, lf_connect(ctx, a.c_str(), 30000, &ch));
    REQUIRE(r, lf_channel_peer(ch) == -1, "peer %d", lf_channel_peer(ch));
    lf_buffer_t shared;
    REQUIRE_OK(r, lf_alloc(ctx, 4 << 20, LF_MEM_HOST_SHARED, &shared));
    std::memset(lf_buffer_data(shared), 'q', 4 << 20);
    lf_request_t sb;
    REQUIRE_OK(r, lf_isend_buffer(ch, shared, 4, &sb));  // the buffer now belongs to the send
    REQUIRE_OK(r, lf_wait(sb, nullptr));
    std::vector<char> out((1 << 20) - 3), in(1 << 20);
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(i * 7);
    REQUIRE_OK(r, lf_send(ch, out.data(), out.size(), 1));
    size_t got = 0;
    REQUIRE_OK(r, lf_recv(ch, in.data(), in.size(), 2, &got));
    REQUIRE(r, got == out.size() && std::memcmp(in.data(), out.data(), got) == 0, "echo of %zu bytes", got);
    lf_rpc_client_t c;
    REQUIRE_OK(r, lf_rpc_client_create(ch, &c));
    for (int i = 0; i < 50; ++i) {
      lf_rpc_request_t q;
      REQUIRE_OK(r, lf_rpc_call(c, "echo", nullptr, 0, &i, sizeof i, 0, &q));
      REQUIRE_OK(r, lf_rpc_wait(q, 30000));
      const void *p;
      size_t pl;
      REQUIRE_OK(r, lf_rpc_response(q, nullptr, nullptr, &p, &pl));
      REQUIRE(r, pl == sizeof i && std::memcmp(p, &i, pl) == 0, "call %d", i);
      REQUIRE_OK(r, lf_rpc_release(q));
    }
    REQUIRE_OK(r, lf_rpc_client_destroy(c));
    REQUIRE_OK(r, lf_send(ch, "d", 1, 3));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  relay();
  expect_all_ok(60);
}

TEST_P(Dial, AWrongTokenIsRefusedAndTheListenerStaysUsable) {
  const std::string addr = address();
  spawn(2, [&](Rank &r) {
    if (r.rank == 0) {
      lf_context_t ctx = own_world(r, "right");
      lf_listener_t l = listen_and_tell(r, ctx, addr);
      lf_channel_t ch;
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_accept(l, 30000, &ch));  // the wrong token
      REQUIRE(r, std::strstr(lf_last_error(), "refused") != nullptr, "%s", lf_last_error());
      REQUIRE_OK(r, lf_accept(l, 30000, &ch));  // the right one
      char c;
      REQUIRE_OK(r, lf_recv(ch, &c, 1, 1, nullptr));
      REQUIRE_OK(r, lf_listener_close(l));
      REQUIRE_OK(r, lf_finalize(ctx));
      return;
    }
    const std::string a = recv_text(r);
    lf_context_t ctx = own_world(r, "wrong");
    lf_channel_t ch;
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_connect(ctx, a.c_str(), 30000, &ch));
    REQUIRE(r, std::strstr(lf_last_error(), "refused") != nullptr, "%s", lf_last_error());
    setenv("LF_EXEC_TOKEN", "right", 1);  // read at each connect
    REQUIRE_OK(r, lf_connect(ctx, a.c_str(), 30000, &ch));
    REQUIRE_OK(r, lf_send(ch, "x", 1, 1));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  relay();
  expect_all_ok(60);
}

TEST_P(Dial, AClientSpeakingGarbageIsRefused) {
  const std::string addr = address();
  spawn(2, [&](Rank &r) {
    if (r.rank == 0) {
      lf_context_t ctx = own_world(r, "tok");
      lf_listener_t l = listen_and_tell(r, ctx, addr);
      lf_channel_t ch;
      REQUIRE_ST(r, LF_ERR_PROTOCOL, lf_accept(l, 30000, &ch));
      REQUIRE_OK(r, lf_accept(l, 30000, &ch));
      char c;
      REQUIRE_OK(r, lf_recv(ch, &c, 1, 1, nullptr));
      REQUIRE_OK(r, lf_finalize(ctx));
      return;
    }
    const std::string a = recv_text(r);
    // A raw socket that sends 56 bytes that are not a hello.
    int fd;
    if (a.rfind("tcp://", 0) == 0) {
      fd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(static_cast<uint16_t>(std::stoi(a.substr(a.rfind(':') + 1))));
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(r, connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0, "connect: %s", strerror(errno));
    } else {
      fd = socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un su{};
      su.sun_family = AF_UNIX;
      std::strncpy(su.sun_path, a.c_str() + 5, sizeof su.sun_path - 1);
      REQUIRE(r, connect(fd, reinterpret_cast<sockaddr *>(&su), sizeof su) == 0, "connect: %s", strerror(errno));
    }
    char junk[56];
    std::memset(junk, 'z', sizeof junk);
    REQUIRE(r, write(fd, junk, sizeof junk) == static_cast<ssize_t>(sizeof junk), "write");
    lf_context_t ctx = own_world(r, "tok");
    lf_channel_t ch;
    REQUIRE_OK(r, lf_connect(ctx, a.c_str(), 30000, &ch));
    REQUIRE_OK(r, lf_send(ch, "x", 1, 1));
    close(fd);
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  relay();
  expect_all_ok(60);
}

TEST_P(Dial, ADeadClientBreaksItsChannel) {
  const std::string addr = address();
  spawn(2, [&](Rank &r) {
    if (r.rank == 0) {
      lf_context_t ctx = own_world(r, "tok");
      lf_listener_t l = listen_and_tell(r, ctx, addr);
      lf_channel_t ch;
      REQUIRE_OK(r, lf_accept(l, 30000, &ch));
      char c;
      REQUIRE_OK(r, lf_recv(ch, &c, 1, 1, nullptr));
      r.signal('a');  // connected: the parent kills the client
      REQUIRE_ST(r, LF_ERR_PEER_GONE, lf_recv(ch, &c, 1, 1, nullptr));
      REQUIRE_OK(r, lf_finalize(ctx));
      return;
    }
    const std::string a = recv_text(r);
    lf_context_t ctx = own_world(r, "tok");
    lf_channel_t ch;
    REQUIRE_OK(r, lf_connect(ctx, a.c_str(), 30000, &ch));
    REQUIRE_OK(r, lf_send(ch, "x", 1, 1));
    for (;;) pause();
  });
  relay();
  ASSERT_EQ(await(0), 'a');
  kill(pid_of(1), SIGKILL);
  expect_all_ok(60, {1});
}

INSTANTIATE_TEST_SUITE_P(Sockets, Dial, ::testing::Values("tcp", "unix"), [](const auto &i) { return i.param; });

TEST(DialArgs, ListeningOnTcpNeedsAToken) {
  unsetenv("LF_EXEC_TOKEN");
  unsetenv("LF_EXEC_TOKEN_FILE");
  lf_context_t ctx;
  ASSERT_EQ(lf_init(&ctx), LF_OK);
  lf_listener_t l;
  EXPECT_EQ(lf_listen(ctx, "tcp://127.0.0.1:0", &l), LF_ERR_INVALID_ARG);
  EXPECT_NE(std::strstr(lf_last_error(), "LF_EXEC_TOKEN"), nullptr) << lf_last_error();
  EXPECT_EQ(lf_listen(ctx, "carrier-pigeon://x", &l), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_listen(ctx, nullptr, &l), LF_ERR_INVALID_ARG);
  lf_channel_t ch;
  EXPECT_EQ(lf_accept(nullptr, 0, &ch), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_listener_close(reinterpret_cast<lf_listener_t>(ctx)), LF_ERR_INVALID_ARG);
  EXPECT_LT(lf_connect(ctx, "unix:/nonexistent/nowhere.sock", 1000, &ch), 0);
  EXPECT_EQ(lf_finalize(ctx), LF_OK);
}

}  // namespace
