// lf-bench-ingest: file ingest throughput through the C API, in the shapes
// scripts/bench-ingest.sh sets side by side with fio.
//
//   lf-bench-ingest read   --file F [--bs 1M] [--qd 8] [--ring 16] [--direct 0|1] [--rounds 1]
//       lf_ingest_next until the end; each chunk freed untouched (fio does
//       not touch its buffers either). One line per round:
//       "read <GB/s> cpu <GB per CPU second> slept <n> preempted <n>", the
//       last three of the reading thread (getrusage RUSAGE_THREAD).
//   lf-bench-ingest send   --file F --transport shm|tcp [--kind host|host-shared] [--rwin 8] ...
//       forks rank 1 (before any thread), lf_ingest_send from rank 0, rank 1
//       receives buffers (rwin receives posted ahead) and frees them. One line per round from rank 0,
//       "send <GB/s> cpu ...", as for read; rank 1's CPU time and sleeps go
//       to stderr ("recv: ...").
//   lf-bench-ingest memcpy [--bs 1M] [--bytes 1G]
//       the hardware floor of a page-cache read: copying the same bytes in
//       bs pieces, as the kernel does into the reader's buffer.
// GB/s = 1e9 bytes per second. LF_INGEST_ENGINE picks the engine as usual.
#include <lavaflow/lavaflow.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "bench_common.h"

namespace {

struct Opts {
  std::string mode, file, transport = "shm";
  size_t bs = size_t(1) << 20;
  int qd = 8, ring = 0, direct = 0, rounds = 1, rwin = 8;
  lf_memory_kind_t kind = LF_MEM_HOST;
  size_t bytes = size_t(1) << 30;
};

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// What the calling thread spent: CPU seconds, and how often it gave the CPU
// up by itself (slept) or had it taken (preempted). A figure that holds on a
// loaded machine: bytes per CPU second says what the path costs, the rest of
// the wall time is waiting (for the peer, or for a CPU).
struct ThreadUse {
  double cpu_s = 0;
  long slept = 0, preempted = 0;
  static ThreadUse now() {
    rusage u{};
    getrusage(RUSAGE_THREAD, &u);
    ThreadUse t;
    t.cpu_s = static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
              static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
    t.slept = u.ru_nvcsw;
    t.preempted = u.ru_nivcsw;
    return t;
  }
};

// "<mode> <GB/s> cpu <GB per CPU second> slept <n> preempted <n>".
void report(const char *mode, uint64_t bytes, double wall_s, const ThreadUse &a, const ThreadUse &b) {
  const double cpu = b.cpu_s - a.cpu_s;
  std::printf("%s %.3f cpu %.3f slept %ld preempted %ld\n", mode, static_cast<double>(bytes) / wall_s / 1e9,
              cpu > 0 ? static_cast<double>(bytes) / cpu / 1e9 : 0.0, b.slept - a.slept, b.preempted - a.preempted);
  std::fflush(stdout);
}

[[noreturn]] void die(const char *what, lf_status_t st) {
  std::fprintf(stderr, "lf-bench-ingest: %s: %s: %s\n", what, lf_status_string(st), lf_last_error());
  std::exit(1);
}
#define CHECK(call)                    \
  do {                                 \
    lf_status_t st_ = (call);          \
    if (st_ != LF_OK) die(#call, st_); \
  } while (0)

lf_ingest_params_t params(const Opts &o) {
  lf_ingest_params_t p = LF_INGEST_PARAMS_INIT;
  p.kind = o.kind;
  p.chunk_bytes = o.bs;
  p.queue_depth = o.qd;
  p.ring_chunks = o.ring;
  p.direct = o.direct;
  return p;
}

uint64_t file_size(const std::string &f) {
  struct stat st {};
  if (stat(f.c_str(), &st) != 0) {
    std::perror(f.c_str());
    std::exit(1);
  }
  return static_cast<uint64_t>(st.st_size);
}

void run_read(const Opts &o) {
  for (int r = 0; r < o.rounds; ++r) {
    lf_ingest_params_t p = params(o);
    lf_ingest_t in;
    const ThreadUse u0 = ThreadUse::now();
    const double t0 = now_s();
    CHECK(lf_ingest_open(nullptr, o.file.c_str(), 0, 0, &p, &in));
    uint64_t bytes = 0;
    for (;;) {
      lf_buffer_t c;
      CHECK(lf_ingest_next(in, &c, nullptr, -1));
      if (!c) break;
      bytes += lf_buffer_size(c);
      lf_free(c);
    }
    const double t = now_s() - t0;
    const ThreadUse u1 = ThreadUse::now();
    if (r == 0) std::fprintf(stderr, "path: %s\n", lf_ingest_path_taken(in));
    CHECK(lf_ingest_close(in));
    report("read", bytes, t, u0, u1);
  }
}

void run_send(const Opts &o) {
  const uint64_t size = file_size(o.file);
  bench_job_key();
  const std::string boot = "unix:/tmp/lf-bench-ingest-" + std::to_string(getpid());
  setenv("LF_SIZE", "2", 1);
  setenv("LF_BOOTSTRAP", boot.c_str(), 1);
  setenv("LF_TRANSPORTS", o.transport.c_str(), 1);
  const pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    std::exit(1);
  }
  const int rank = child == 0 ? 1 : 0;
  setenv("LF_RANK", rank ? "1" : "0", 1);
  if (const char *bind = std::getenv("LF_BENCH_BIND")) {
    // "a,b": rank 0 on CPU a, rank 1 on CPU b.
    int cpu[2] = {0, 1};
    std::sscanf(bind, "%d,%d", &cpu[0], &cpu[1]);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu[rank], &set);
    sched_setaffinity(0, sizeof set, &set);
  }
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  lf_channel_params_t cp = LF_CHANNEL_PARAMS_INIT;
  cp.transports = o.transport.c_str();
  cp.strict = 1;
  cp.message_bytes = o.bs;
  lf_channel_t ch;
  CHECK(lf_channel_open_ex(ctx, 1 - rank, &cp, &ch));
  for (int r = 0; r < o.rounds; ++r) {
    CHECK(lf_barrier(ctx));
    if (rank == 0) {
      lf_ingest_params_t p = params(o);
      lf_ingest_t in;
      const ThreadUse u0 = ThreadUse::now();
      const double t0 = now_s();
      CHECK(lf_ingest_open(ctx, o.file.c_str(), 0, 0, &p, &in));
      CHECK(lf_ingest_send(in, ch, 5));
      char ack;
      CHECK(lf_recv(ch, &ack, 1, 6, nullptr));  // the peer has every byte
      const double t = now_s() - t0;
      const ThreadUse u1 = ThreadUse::now();
      if (r == 0) std::fprintf(stderr, "path: %s; channel: %s\n", lf_ingest_path_taken(in), lf_channel_reason(ch));
      CHECK(lf_ingest_close(in));
      report("send", size, t, u0, u1);
    } else {
      uint64_t got = 0;
      const ThreadUse u0 = ThreadUse::now();
      const double t0 = now_s();
      // --rwin receives posted ahead (as lf-bench's bw posts its window), so
      // that chunks land in posted receives rather than as unexpected
      // messages; the ones left after the end marker are cancelled.
      std::deque<lf_request_t> posted;
      auto post = [&] {
        lf_request_t req;
        CHECK(lf_irecv_buffer(ch, 5, &req));
        posted.push_back(req);
      };
      for (int i = 0; i < std::max(o.rwin, 1); ++i) post();
      for (;;) {
        lf_buffer_t b;
        CHECK(lf_wait_buffer(posted.front(), &b, nullptr));
        posted.pop_front();
        const size_t n = lf_buffer_size(b);
        lf_free(b);
        if (n == 0) break;
        got += n;
        post();
      }
      for (lf_request_t req : posted) {
        CHECK(lf_cancel(req));
        lf_buffer_t b = nullptr;
        const lf_status_t st = lf_wait_buffer(req, &b, nullptr);
        if (st != LF_ERR_CANCELLED) die("a receive posted past the end marker", st == LF_OK ? LF_ERR_INTERNAL : st);
      }
      if (got != size) {
        std::fprintf(stderr, "lf-bench-ingest: rank 1 received %llu of %llu bytes\n",
                     static_cast<unsigned long long>(got), static_cast<unsigned long long>(size));
        std::exit(1);
      }
      char ack = 1;
      CHECK(lf_send(ch, &ack, 1, 6));
      // On stderr: the figures of record are the sender's.
      const double t = now_s() - t0;
      const ThreadUse u1 = ThreadUse::now();
      std::fprintf(stderr, "recv: %.3f s, %.3f CPU s, slept %ld, preempted %ld\n", t, u1.cpu_s - u0.cpu_s,
                   u1.slept - u0.slept, u1.preempted - u0.preempted);
    }
  }
  CHECK(lf_channel_close(ch));
  CHECK(lf_finalize(ctx));
  if (rank == 1) std::exit(0);
  int st = 0;
  waitpid(child, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::fprintf(stderr, "lf-bench-ingest: rank 1 failed\n");
    std::exit(1);
  }
}

void run_memcpy(const Opts &o) {
  // A 64 MiB source, as a page cache of pages already resident, copied in
  // bs pieces into one destination block, like read() into a chunk.
  const size_t src_bytes = size_t(64) << 20;
  std::vector<char> src(src_bytes, 1), dst(o.bs);
  for (int r = 0; r < o.rounds; ++r) {
    const double t0 = now_s();
    for (size_t done = 0; done < o.bytes; done += o.bs) {
      const size_t off = done % src_bytes;
      std::memcpy(dst.data(), src.data() + off, std::min(o.bs, src_bytes - off));
      asm volatile("" ::"r"(dst.data()) : "memory");
    }
    const double t = now_s() - t0;
    std::printf("memcpy %.3f\n", static_cast<double>(o.bytes) / t / 1e9);
    std::fflush(stdout);
  }
}

lf_memory_kind_t parse_kind(const std::string &s) {
  for (int k = 0; k < LF_MEM_KIND_COUNT_; ++k)
    if (s == lf_memory_kind_string(static_cast<lf_memory_kind_t>(k))) return static_cast<lf_memory_kind_t>(k);
  std::fprintf(stderr, "lf-bench-ingest: unknown kind %s\n", s.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char **argv) {
  Opts o;
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: lf-bench-ingest read|send|memcpy [--file F] [--bs 1M] [--qd 8] [--ring N] [--direct 0|1]\n"
                 "       [--rounds N] [--transport shm|tcp] [--kind host|host-shared|...] [--rwin 8] [--bytes 1G]\n");
    return 2;
  }
  o.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--file")
      o.file = v;
    else if (k == "--bs")
      o.bs = bench_parse_size(v.c_str());
    else if (k == "--qd")
      o.qd = std::atoi(v.c_str());
    else if (k == "--ring")
      o.ring = std::atoi(v.c_str());
    else if (k == "--direct")
      o.direct = std::atoi(v.c_str());
    else if (k == "--rwin")
      o.rwin = std::atoi(v.c_str());
    else if (k == "--rounds")
      o.rounds = std::atoi(v.c_str());
    else if (k == "--transport")
      o.transport = v;
    else if (k == "--kind")
      o.kind = parse_kind(v);
    else if (k == "--bytes")
      o.bytes = bench_parse_size(v.c_str());
    else {
      std::fprintf(stderr, "lf-bench-ingest: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (o.mode == "memcpy")
    run_memcpy(o);
  else if (o.file.empty()) {
    std::fprintf(stderr, "lf-bench-ingest: --file is required\n");
    return 2;
  } else if (o.mode == "read")
    run_read(o);
  else if (o.mode == "send")
    run_send(o);
  else {
    std::fprintf(stderr, "lf-bench-ingest: unknown mode %s\n", o.mode.c_str());
    return 2;
  }
  return 0;
}
