// lf-bench-dpdk: the raw-DPDK floor under lavaflow's dpdk transport, and
// what an idle dpdk rank costs. Two forked processes (EAL started in each
// after the fork), the same EAL options and the same net_memif device as
// the transport uses (or net_af_packet with --iface):
//
//   lf-bench-dpdk raw-lat  [--samples 25] [--bind]   8-byte payload ping-pong, one-way median us
//   lf-bench-dpdk raw-rate [--seconds 2] [--bind]    64-byte payload frames one way, Mpps received
//   lf-bench-dpdk idle     [--seconds 2]             CPU a rank spends blocked in lf_recv on a
//                                                    quiet dpdk channel (LF_TRANSPORTS=dpdk)
//
// Output: one line "<mode> <figure> <unit>" per run, for scripts/bench-dpdk.sh.
#include <lavaflow/lavaflow.h>
#include <rte_bus_vdev.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

double now_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

[[noreturn]] void die(const char *what) {
  std::fprintf(stderr, "lf-bench-dpdk: %s\n", what);
  std::exit(1);
}

void bind_to(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

struct RawPort {
  uint16_t id = 0;
  rte_mempool *pool = nullptr;
};

/// EAL with lavaflow's defaults, then a memif port (rank 0 the server, which
/// says over `ready` once it listens; the client waits for that).
RawPort raw_port(int rank, const std::string &socket, int ready[2]) {
  char prefix[64];
  std::snprintf(prefix, sizeof prefix, "--file-prefix=lfbench%d", static_cast<int>(getpid()));
  char lcore[16];
  std::snprintf(lcore, sizeof lcore, "%d", sched_getcpu());
  const char *argv[] = {"lf-bench-dpdk",  "--no-huge",           "-m",   "128", "--no-shconf", "--no-pci",
                        "--no-telemetry", "--log-level=*:error", prefix, "-l",  lcore};
  int argc = static_cast<int>(sizeof argv / sizeof argv[0]);
  std::vector<char *> args;
  for (const char *a : argv) args.push_back(const_cast<char *>(a));
  if (rte_eal_init(argc, args.data()) < 0) die("rte_eal_init failed");
  if (const char *dir = rte_eal_get_runtime_dir(); dir && *dir) rmdir(dir);
  RawPort p;
  p.pool = rte_pktmbuf_pool_create("bench", 8191, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  if (!p.pool) die("rte_pktmbuf_pool_create failed");
  const std::string args_s =
      "id=1,role=" + std::string(rank == 0 ? "server" : "client") + ",socket=" + socket + ",socket-abstract=yes";
  char c = 0;
  if (rank == 1 && read(ready[0], &c, 1) != 1) die("the server never listened");
  if (rte_vdev_init("net_memif_bench", args_s.c_str()) < 0) die("rte_vdev_init failed");
  if (rank == 0 && write(ready[1], &c, 1) != 1) die("pipe");
  if (rte_eth_dev_get_port_by_name("net_memif_bench", &p.id) != 0) die("no port");
  rte_eth_conf conf{};
  if (rte_eth_dev_configure(p.id, 1, 1, &conf) || rte_eth_rx_queue_setup(p.id, 0, 1024, 0, nullptr, p.pool) ||
      rte_eth_tx_queue_setup(p.id, 0, 1024, 0, nullptr))
    die("port setup failed");
  const double end = now_us() + 10e6;
  while (rte_eth_dev_start(p.id) != 0)
    if (now_us() > end) die("memif did not start");
  rte_eth_link l{};
  while (rte_eth_link_get_nowait(p.id, &l) == 0 && !l.link_status)
    if (now_us() > end) die("memif link did not come up");
  return p;
}

rte_mbuf *frame(RawPort &p, size_t payload) {
  rte_mbuf *m = rte_pktmbuf_alloc(p.pool);
  if (!m) die("pool empty");
  auto *d = rte_pktmbuf_append(m, static_cast<uint16_t>(14 + payload));
  std::memset(d, 0, 14 + payload);
  d[12] = static_cast<char>(0x88), d[13] = static_cast<char>(0xB6);
  return m;
}

void send_one(RawPort &p, rte_mbuf *m) {
  while (rte_eth_tx_burst(p.id, 0, &m, 1) != 1) {
  }
}

rte_mbuf *recv_one(RawPort &p) {
  rte_mbuf *m = nullptr;
  while (rte_eth_rx_burst(p.id, 0, &m, 1) != 1) {
  }
  return m;
}

void raw_lat(int rank, RawPort &p, int samples) {
  constexpr int kIters = 2000;
  std::vector<double> v;
  for (int s = -2; s < samples; ++s) {
    const double t0 = now_us();
    for (int i = 0; i < kIters; ++i) {
      if (rank == 0) {
        send_one(p, frame(p, 8));
        rte_pktmbuf_free(recv_one(p));
      } else {
        rte_pktmbuf_free(recv_one(p));
        send_one(p, frame(p, 8));
      }
    }
    if (s >= 0) v.push_back((now_us() - t0) / kIters / 2);
  }
  if (rank == 0) {
    std::sort(v.begin(), v.end());
    std::printf("raw-lat %.3f us\n", v[v.size() / 2]);
  }
}

void raw_rate(int rank, RawPort &p, double seconds) {
  constexpr uint16_t kBurst = 32;
  rte_mbuf *b[kBurst];
  if (rank == 1) {  // the sender, until the receiver says stop (a 1-byte frame back)
    for (;;) {
      for (auto &m : b) m = frame(p, 64);
      uint16_t sent = rte_eth_tx_burst(p.id, 0, b, kBurst);
      for (uint16_t j = sent; j < kBurst; ++j) rte_pktmbuf_free(b[j]);
      rte_mbuf *stop = nullptr;
      if (rte_eth_rx_burst(p.id, 0, &stop, 1) == 1) {
        rte_pktmbuf_free(stop);
        return;
      }
      // The receiver may close its end before the stop frame is read.
      rte_eth_link l{};
      if (rte_eth_link_get_nowait(p.id, &l) == 0 && !l.link_status) return;
    }
  }
  uint64_t got = 0;
  const double t0 = now_us(), end = t0 + seconds * 1e6;
  double t = t0;
  while ((t = now_us()) < end) {
    const uint16_t n = rte_eth_rx_burst(p.id, 0, b, kBurst);
    for (uint16_t j = 0; j < n; ++j) rte_pktmbuf_free(b[j]);
    got += n;
  }
  send_one(p, frame(p, 1));
  std::printf("raw-rate %.3f Mpps\n", static_cast<double>(got) / (t - t0));
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void idle(int rank, double seconds) {
  lf_context_t ctx;
  if (lf_init(&ctx) != LF_OK) die(lf_last_error());
  lf_channel_t ch;
  if (lf_channel_open(ctx, 1 - rank, &ch) != LF_OK) die(lf_last_error());
  char c = 0;
  if (rank == 0) {
    // Blocked in a receive the peer satisfies only after `seconds`.
    const double w0 = now_us(), c0 = cpu_seconds();
    if (lf_recv(ch, &c, 1, 1, nullptr) != LF_OK) die(lf_last_error());
    const double wall = (now_us() - w0) / 1e6, cpu = cpu_seconds() - c0;
    std::printf("idle %.1f %% of a core (%s, %.2f s blocked)\n", 100 * cpu / wall, lf_channel_transport(ch), wall);
  } else {
    const double end = now_us() + seconds * 1e6;
    while (now_us() < end) usleep(10000);  // a benchmark's quiet period, not synchronisation
    if (lf_send(ch, &c, 1, 1) != LF_OK) die(lf_last_error());
  }
  lf_barrier(ctx);
  lf_channel_close(ch);
  lf_finalize(ctx);
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) die("usage: lf-bench-dpdk raw-lat|raw-rate|idle [--samples N] [--seconds S] [--bind]");
  const std::string mode = argv[1];
  int samples = 25;
  double seconds = 2;
  bool bind = false;
  for (int i = 2; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--samples") && i + 1 < argc)
      samples = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc)
      seconds = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--bind"))
      bind = true;
    else
      die("unknown option");
  }
  const std::string socket = "/lf-bench-dpdk-" + std::to_string(getpid());
  if (mode == "idle") {
    setenv("LF_BOOTSTRAP", ("unix:/tmp/lf-bench-dpdk-" + std::to_string(getpid()) + ".sock").c_str(), 1);
    setenv("LF_SIZE", "2", 1);
    setenv("LF_BOOTSTRAP_MODE", "env", 1);
    setenv("LF_TRANSPORTS", "dpdk", 0);
  }
  int ready[2];
  if (pipe(ready) != 0) die("pipe");
  std::fflush(nullptr);
  const pid_t child = fork();
  if (child < 0) die("fork failed");
  const int rank = child == 0 ? 1 : 0;
  if (bind) bind_to(rank);
  if (mode == "idle") {
    setenv("LF_RANK", rank ? "1" : "0", 1);
    idle(rank, seconds);
  } else {
    RawPort p = raw_port(rank, socket, ready);
    if (mode == "raw-lat")
      raw_lat(rank, p, samples);
    else if (mode == "raw-rate")
      raw_rate(rank, p, seconds);
    else
      die("unknown mode");
    rte_eth_dev_stop(p.id);
    rte_eth_dev_close(p.id);
  }
  if (child == 0) _exit(0);
  int st = 0;
  waitpid(child, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
