// lf-bench-layers: where the small-message latency goes. The same 8-byte
// ping-pong (one-way = round trip / 2, median of samples) measured at three
// layers of one build:
//   endpoint  the shm transport's Endpoint with a one-receive matcher
//   channel   lf::Channel (matching queues, progress, wait loop)
//   capi      lf_send/lf_recv through liblavaflow (handle tables, requests)
// The C API sources are compiled into this binary (not the shared library)
// so that all three layers run in one process with one build. It also times
// the C API's per-request bookkeeping on its own (handle table, shared_ptr,
// request reset), in a loop without any peer.
//
//   ./lf-bench-layers [bytes] [--bind]      (forks rank 1 itself)
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.h"
#include "capi/capi_internal.hpp"
#include "channel/channel.hpp"
#include "channel/context.hpp"

namespace {

using namespace lf;

[[noreturn]] void die(const char *what, const Error &e) {
  std::fprintf(stderr, "lf-bench-layers: %s: %s\n", what, e.message.c_str());
  std::exit(1);
}

/// A matcher that holds at most one posted receive (the ping-pong needs no more).
class OneMatcher final : public Matcher {
 public:
  RecvOp *posted = nullptr;
  RecvOp *take_posted(uint64_t tag) noexcept override {
    if (!posted || (posted->tag != tag && posted->tag != LF_ANY_TAG)) return nullptr;
    return std::exchange(posted, nullptr);
  }
  void add_unexpected(std::unique_ptr<Incoming>) noexcept override {
    std::fprintf(stderr, "lf-bench-layers: unexpected message in a ping-pong\n");
    std::exit(1);
  }
};

constexpr int kSamples = 31, kIters = 20000;

template <typename F>
double ns_per_call(F &&f) {
  constexpr int kN = 2'000'000;
  std::vector<double> v;
  for (int s = 0; s < 7; ++s) {
    double t0 = bench_now_us();
    for (int i = 0; i < kN; ++i) f();
    v.push_back((bench_now_us() - t0) * 1e3 / kN);
  }
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename Send, typename Recv>
double pingpong(int rank, Send &&send, Recv &&recv) {
  std::vector<double> v;
  for (int s = -3; s < kSamples; ++s) {
    double t0 = bench_now_us();
    for (int i = 0; i < kIters; ++i) {
      if (rank == 0) {
        send();
        recv();
      } else {
        recv();
        send();
      }
    }
    if (s >= 0) v.push_back((bench_now_us() - t0) / kIters / 2);
  }
  return median(v);
}

}  // namespace

int main(int argc, char **argv) {
  size_t n = 8;
  bool bind = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--bind"))
      bind = true;
    else
      n = bench_parse_size(argv[i]);
  }
  std::string addr = "unix:/tmp/lf-bench-layers-" + std::to_string(getpid()) + ".sock";
  setenv("LF_BOOTSTRAP", addr.c_str(), 1);
  setenv("LF_SIZE", "2", 1);
  setenv("LF_BOOTSTRAP_MODE", "env", 1);
  bench_job_key();
  pid_t child = fork();
  const int rank = child == 0 ? 1 : 0;
  setenv("LF_RANK", rank ? "1" : "0", 1);
  if (bind) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(rank, &one);
    sched_setaffinity(0, sizeof one, &one);
  }
  auto ctx = Context::create();
  if (!ctx) die("context", ctx.error());
  std::vector<char> buf(n ? n : 1, 'x');

  // Endpoint layer.
  Transport *shm = nullptr;
  for (auto &ts : (*ctx)->transports())
    if (std::string(ts.transport->name()) == "shm" && ts.started) shm = ts.transport.get();
  if (!shm) {
    std::fprintf(stderr, "lf-bench-layers: the shm transport did not start\n");
    return 1;
  }
  auto ep = shm->connect(**ctx, 1 - rank, deadline_in(30));
  if (!ep) die("connect", ep.error());
  OneMatcher m;
  auto ep_send = [&] {
    SendOp op;
    op.tag = 1;
    op.data = buf.data();
    op.size = n;
    (*ep)->send(op);
    while (op.status == LF_IN_PROGRESS) (void)(*ep)->progress(m);
  };
  auto ep_recv = [&] {
    RecvOp op;
    op.tag = 1;
    op.data = buf.data();
    op.capacity = n;
    m.posted = &op;
    while (op.status == LF_IN_PROGRESS) (void)(*ep)->progress(m);
  };
  const double t_ep = pingpong(rank, ep_send, ep_recv);

  // Channel layer.
  ChannelOptions opts;
  opts.transports = "shm";
  auto ch = Channel::open(**ctx, 1 - rank, opts);
  if (!ch) die("channel", ch.error());
  auto ch_send = [&] {
    SendOp op;
    op.tag = 1;
    op.data = buf.data();
    op.size = n;
    (*ch)->post_send(op);
    (*ch)->wait(op.status);
  };
  auto ch_recv = [&] {
    RecvOp op;
    op.tag = 1;
    op.data = buf.data();
    op.capacity = n;
    (*ch)->post_recv(op);
    (*ch)->wait(op.status);
  };
  const double t_ch = pingpong(rank, ch_send, ch_recv);

  // C API layer: a context of its own (second rendezvous address).
  std::string addr2 = addr + ".capi";
  setenv("LF_BOOTSTRAP", addr2.c_str(), 1);
  setenv("LF_TRANSPORTS", "shm", 1);
  lf_context_t cctx;
  lf_channel_t cch;
  if (lf_init(&cctx) != LF_OK || lf_channel_open(cctx, 1 - rank, &cch) != LF_OK) {
    std::fprintf(stderr, "lf-bench-layers: C API: %s\n", lf_last_error());
    return 1;
  }
  auto c_send = [&] {
    if (lf_send(cch, buf.data(), n, 1) != LF_OK) std::exit(1);
  };
  auto c_recv = [&] {
    if (lf_recv(cch, buf.data(), n, 1, nullptr) != LF_OK) std::exit(1);
  };
  const double t_c = pingpong(rank, c_send, c_recv);

  // What lf_send/lf_recv would cost without a request handle: the same
  // handle lookup and keep-alive reference, but the op on the stack (the
  // blocking calls never expose their request). Not the library's code:
  // a measurement of the proposed fast path.
  auto fast_send = [&] {
    capi::ChannelSlot *cs = capi::channels().get(cch);
    std::shared_ptr<Channel> keep = cs->ch;
    SendOp op;
    op.tag = 1;
    op.data = buf.data();
    op.size = n;
    keep->post_send(op);
    keep->wait(op.status);
    if (op.status != LF_OK) std::exit(1);
  };
  auto fast_recv = [&] {
    capi::ChannelSlot *cs = capi::channels().get(cch);
    std::shared_ptr<Channel> keep = cs->ch;
    RecvOp op;
    op.tag = 1;
    op.data = buf.data();
    op.capacity = n;
    keep->post_recv(op);
    keep->wait(op.status);
    if (op.status != LF_OK) std::exit(1);
  };
  const double t_f = pingpong(rank, fast_send, fast_recv);

  if (rank == 0) {
    std::printf("# lf-bench-layers: %zu-byte ping-pong, one-way = RTT/2, median of %d samples x %d round trips\n", n,
                kSamples, kIters);
    std::printf("endpoint  %8.1f ns\n", t_ep * 1e3);
    std::printf("channel   %8.1f ns   (%+.1f ns: matching queues, progress and wait loop)\n", t_ch * 1e3,
                (t_ch - t_ep) * 1e3);
    std::printf("capi      %8.1f ns   (%+.1f ns: lf_send/lf_recv request handling)\n", t_c * 1e3, (t_c - t_ch) * 1e3);
    std::printf("capi-fast %8.1f ns   (%+.1f ns over channel: blocking calls with the op on the stack, proposed)\n",
                t_f * 1e3, (t_f - t_ch) * 1e3);
    // What a request costs the C API, without any message (one thread, no contention).
    auto &reqs = capi::requests();
    const double t_handle = ns_per_call([&] {
      auto [h, slot] = reqs.acquire();
      reqs.retire(reinterpret_cast<void *>(static_cast<uintptr_t>(h)), [](capi::RequestSlot &) {});
    });
    std::shared_ptr<Channel> sp = *ch, other;
    const double t_shared = ns_per_call([&] {
      other = sp;
      other.reset();
    });
    capi::RequestSlot slot;
    const double t_reset = ns_per_call([&] {
      slot.send = SendOp{};
      slot.recv = RecvOp{};
      asm volatile("" ::"r"(&slot) : "memory");
    });
    std::printf("# C API bookkeeping per request, no message moved:\n");
    std::printf("handle table acquire + retire (spin lock each)    %6.1f ns\n", t_handle);
    std::printf("shared_ptr<Channel> copy + reset (atomic inc/dec)  %6.1f ns\n", t_shared);
    std::printf("SendOp{} + RecvOp{} reset of the request slot      %6.1f ns\n", t_reset);
    std::printf("one-way = one request on each side: about %.1f ns of the %+.1f ns\n", t_handle + t_shared + t_reset,
                (t_c - t_ch) * 1e3);
  }
  (void)lf_channel_close(cch);
  (void)lf_finalize(cctx);
  (*ch)->close();
  ep->reset();
  (void)(*ctx)->bootstrap().barrier({});
  if (child > 0) waitpid(child, nullptr, 0);
  return 0;
}
