// One rank of a multi-process test, using only the public C API. The tests
// (test_bootstrap, test_namespaces, test_multihost, the mpiexec tests) start
// it with LF_RANK/LF_SIZE/LF_BOOTSTRAP or under mpirun, and read what it
// prints, one fact per line:
//
//   init <rank> <size>                     after lf_init
//   scope <rank> <peer> <scope> <reason>   lf_scope / lf_scope_explain
//   channel <rank> <peer> <transport> <reason>
//   sent <rank> <peer> <messages> <bytes> <checksum>     what went to peer
//   stream <rank> <peer> <messages> <bytes> <checksum>   what came from peer, all verified
//   gone <rank> <peer> <status> <milliseconds> <detail>
//   error <rank> <what>: <status> <lf_last_error>
//   done <rank>
//
// Scenarios (argv[1]):
//   init      lf_init, print, lf_barrier, lf_finalize; a failing lf_init
//             prints "error" with the status and exits 2.
//   scope     as init (every scenario prints a scope line for every peer).
//   stream    every rank opens a channel to every other rank (each rank in a
//             different order, to show that the order does not matter), then
//             exchanges checksummed, numbered messages of many sizes on two
//             tags with every peer at once, and checks content, order, tag
//             and size of each. argv[2] = messages per peer (default 64);
//             argv[3], if given, is the transport every remote-scope channel
//             must use (exit 4 otherwise).
//   die       ranks 0 and 1 open a channel; rank 1 sends half a stream and
//             exits abruptly (_exit, no lf_finalize); rank 0 reports how its
//             pending receive ended ("gone" line).
//   gate      ranks 0 and 1 print "ready <rank>", wait for one byte on the
//             inherited fd argv[2] (the test's go signal), then open a channel
//             to each other and print "opened <rank> <peer> <milliseconds>".
#include <lavaflow/lavaflow.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

int g_rank = -1;

[[noreturn]] void die_with(const char *what, lf_status_t st) {
  std::printf("error %d %s: %s %s\n", g_rank, what, lf_status_string(st), lf_last_error());
  std::fflush(stdout);
  std::_Exit(2);
}

#define CHECK(call)                         \
  do {                                      \
    lf_status_t st_ = (call);               \
    if (st_ != LF_OK) die_with(#call, st_); \
  } while (0)

// Message i from `src` to `dst`: its size cycles through a list that covers
// empty, tiny, around the eager limits and well above the staging buffer.
size_t message_size(int i) {
  static const size_t sizes[] = {0, 1, 8, 100, 4096, 8193, 65536, 65537, 300000, 1 << 20, 3 << 20};
  return sizes[static_cast<size_t>(i) % (sizeof sizes / sizeof sizes[0])];
}

uint64_t tag_of(int i) { return i % 3 == 0 ? 7u : 0x1234567890abcdefull; }  // 64-bit tags

void fill(std::vector<unsigned char> &buf, int src, int dst, int i) {
  uint64_t x = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(src * 7919 + dst * 104729 + i + 1);
  for (size_t k = 0; k < buf.size(); ++k) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buf[k] = static_cast<unsigned char>(x);
  }
  // The first bytes say which message this is, so order is checked too.
  if (buf.size() >= 4) std::memcpy(buf.data(), &i, 4);
}

uint64_t fnv(uint64_t h, const unsigned char *p, size_t n) {
  for (size_t k = 0; k < n; ++k) h = (h ^ p[k]) * 1099511628211ull;
  return h;
}

int stream(lf_context_t ctx, int messages, const char *expect_remote) {
  int rank = lf_rank(ctx), size = lf_size(ctx);
  std::vector<lf_channel_t> ch(static_cast<size_t>(size), nullptr);
  // Rank r opens its channels starting with peer r+1, wrapping around: the
  // orders differ between ranks, which must not deadlock.
  for (int k = 1; k < size; ++k) {
    int peer = (rank + k) % size;
    CHECK(lf_channel_open(ctx, peer, &ch[static_cast<size_t>(peer)]));
    const char *transport = lf_channel_transport(ch[static_cast<size_t>(peer)]);
    std::printf("channel %d %d %s %s\n", rank, peer, transport, lf_channel_reason(ch[static_cast<size_t>(peer)]));
    if (expect_remote && lf_scope(ctx, peer) == LF_SCOPE_REMOTE && std::strcmp(transport, expect_remote) != 0) {
      std::printf("error %d channel to rank %d uses %s, expected %s\n", rank, peer, transport, expect_remote);
      std::fflush(stdout);
      std::_Exit(4);
    }
  }
  std::fflush(stdout);
  struct Msg {
    std::vector<unsigned char> data;
    lf_request_t req = nullptr;
  };
  std::vector<std::vector<Msg>> out(static_cast<size_t>(size)), in(static_cast<size_t>(size));
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    auto &o = out[static_cast<size_t>(peer)];
    auto &r = in[static_cast<size_t>(peer)];
    o.resize(static_cast<size_t>(messages));
    r.resize(static_cast<size_t>(messages));
    for (int i = 0; i < messages; ++i) {
      Msg &m = r[static_cast<size_t>(i)];
      m.data.assign(message_size(i), 0);
      CHECK(lf_irecv(ch[static_cast<size_t>(peer)], m.data.data(), m.data.size(), tag_of(i), &m.req));
    }
  }
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    auto &o = out[static_cast<size_t>(peer)];
    for (int i = 0; i < messages; ++i) {
      Msg &m = o[static_cast<size_t>(i)];
      m.data.assign(message_size(i), 0);
      fill(m.data, rank, peer, i);
      CHECK(lf_isend(ch[static_cast<size_t>(peer)], m.data.data(), m.data.size(), tag_of(i), &m.req));
    }
  }
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    uint64_t sum = 1469598103934665603ull, bytes = 0;
    for (int i = 0; i < messages; ++i) {
      Msg &m = in[static_cast<size_t>(peer)][static_cast<size_t>(i)];
      lf_completion_t c = LF_COMPLETION_INIT;
      CHECK(lf_wait_completion(m.req, &c));
      std::vector<unsigned char> want(message_size(i));
      fill(want, peer, rank, i);
      if (c.bytes != want.size() || c.tag != tag_of(i) || m.data != want) {
        std::printf("error %d message %d from rank %d: %zu bytes (want %zu), tag %llx, content %s\n", rank, i, peer,
                    c.bytes, want.size(), static_cast<unsigned long long>(c.tag),
                    m.data == want ? "ok" : "differs (corrupt or out of order)");
        std::fflush(stdout);
        std::_Exit(3);
      }
      sum = fnv(sum, m.data.data(), m.data.size());
      bytes += m.data.size();
    }
    uint64_t out_sum = 1469598103934665603ull, out_bytes = 0;
    for (Msg &m : out[static_cast<size_t>(peer)]) {
      CHECK(lf_wait(m.req, nullptr));
      out_sum = fnv(out_sum, m.data.data(), m.data.size());
      out_bytes += m.data.size();
    }
    std::printf("sent %d %d %d %llu %016llx\n", rank, peer, messages, static_cast<unsigned long long>(out_bytes),
                static_cast<unsigned long long>(out_sum));
    std::printf("stream %d %d %d %llu %016llx\n", rank, peer, messages, static_cast<unsigned long long>(bytes),
                static_cast<unsigned long long>(sum));
  }
  std::fflush(stdout);
  CHECK(lf_barrier(ctx));  // nobody closes while a peer still reads
  for (lf_channel_t c : ch)
    if (c) CHECK(lf_channel_close(c));
  return 0;
}

int die(lf_context_t ctx) {
  int rank = lf_rank(ctx);
  if (rank > 1) return 0;
  lf_channel_t ch = nullptr;
  CHECK(lf_channel_open(ctx, 1 - rank, &ch));
  std::printf("channel %d %d %s %s\n", rank, 1 - rank, lf_channel_transport(ch), lf_channel_reason(ch));
  std::fflush(stdout);
  std::vector<unsigned char> buf(1 << 20, 0x5a);
  if (rank == 1) {
    for (int i = 0; i < 4; ++i) CHECK(lf_send(ch, buf.data(), buf.size(), 1));
    std::printf("dying 1\n");
    std::fflush(stdout);
    std::_Exit(0);  // no lf_finalize: like a crash
  }
  for (int i = 0; i < 4; ++i) CHECK(lf_recv(ch, buf.data(), buf.size(), 1, nullptr));
  auto t0 = std::chrono::steady_clock::now();
  lf_status_t st = lf_recv(ch, buf.data(), buf.size(), 1, nullptr);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::printf("gone %d 1 %s %lld %s\n", rank, lf_status_string(st), static_cast<long long>(ms), lf_last_error());
  std::fflush(stdout);
  lf_channel_close(ch);
  return 0;
}

int gate(lf_context_t ctx, int go_fd) {
  int rank = lf_rank(ctx);
  if (rank > 1) return 0;
  std::printf("ready %d\n", rank);
  std::fflush(stdout);
  char byte;
  ssize_t n;
  do {
    n = read(go_fd, &byte, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) {
    std::printf("error %d no go signal\n", rank);
    std::fflush(stdout);
    std::_Exit(5);
  }
  auto t0 = std::chrono::steady_clock::now();
  lf_channel_t ch = nullptr;
  CHECK(lf_channel_open(ctx, 1 - rank, &ch));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::printf("opened %d %d %lld %s\n", rank, 1 - rank, static_cast<long long>(ms), lf_channel_transport(ch));
  std::fflush(stdout);
  CHECK(lf_channel_close(ch));
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string scenario = argc > 1 ? argv[1] : "init";
  lf_context_t ctx = nullptr;
  lf_status_t st = lf_init(&ctx);
  if (st != LF_OK) {
    std::printf("error -1 lf_init: %s %s\n", lf_status_string(st), lf_last_error());
    return 2;
  }
  g_rank = lf_rank(ctx);
  std::printf("init %d %d\n", g_rank, lf_size(ctx));
  for (int p = 0; p < lf_size(ctx); ++p) {
    char why[256];
    CHECK(lf_scope_explain(ctx, p, why, sizeof why));
    std::printf("scope %d %d %s %s\n", g_rank, p, lf_scope_string(lf_scope(ctx, p)), why);
  }
  std::fflush(stdout);
  int rc = 0;
  if (scenario == "stream") rc = stream(ctx, argc > 2 ? std::atoi(argv[2]) : 64, argc > 3 ? argv[3] : nullptr);
  if (scenario == "die") return die(ctx) == 0 && lf_finalize(ctx) == LF_OK ? 0 : 1;
  if (scenario == "gate") rc = gate(ctx, argc > 2 ? std::atoi(argv[2]) : -1);
  CHECK(lf_barrier(ctx));
  CHECK(lf_finalize(ctx));
  std::printf("done %d\n", g_rank);
  return rc;
}
