// File -> peer rank: rank 0 sends a file with lf_ingest_send, rank 1
// receives the chunks as buffers and checks every byte, over shm (chunks of
// the host-shared kind travel as descriptors) and over tcp.
#include "ingest_test_util.hpp"
#include "multiprocess.hpp"

using namespace lftest;

namespace {

struct PeerCase {
  const char *transport;
  lf_memory_kind_t kind;
  const char *engine;
};

class IngestPeer : public MultiProcess, public ::testing::WithParamInterface<PeerCase> {};

constexpr uint64_t kTag = 77;
constexpr size_t kChunk = 256 * 1024;

// `leave`: rank 0 closes its channel and leaves as soon as lf_ingest_send
// returns, while rank 1 may still be reading zero-copy views.
void send_and_check(Rank &r, const std::string &path, uint64_t size, lf_memory_kind_t kind, const char *transport,
                    bool leave = false) {
  lf_context_t ctx;
  REQUIRE_OK(r, lf_init(&ctx));
  lf_channel_params_t cp = LF_CHANNEL_PARAMS_INIT;
  cp.transports = transport;
  cp.strict = 1;
  cp.message_bytes = kChunk;
  lf_channel_t ch;
  REQUIRE_OK(r, lf_channel_open_ex(ctx, 1 - r.rank, &cp, &ch));
  REQUIRE(r, std::string(lf_channel_transport(ch)) == transport, "transport %s", lf_channel_transport(ch));
  if (r.rank == 0) {
    lf_ingest_params_t p = LF_INGEST_PARAMS_INIT;
    p.kind = kind;
    p.chunk_bytes = kChunk;
    p.queue_depth = 4;
    p.ring_chunks = 8;
    lf_ingest_t in;
    REQUIRE_OK(r, lf_ingest_open(ctx, path.c_str(), 0, 0, &p, &in));
    REQUIRE_OK(r, lf_ingest_send(in, ch, kTag));
    lf_ingest_stats_t s = LF_INGEST_STATS_INIT;
    REQUIRE_OK(r, lf_ingest_stats(in, &s));
    REQUIRE(r, s.bytes == size, "sent %llu of %llu bytes", (unsigned long long)s.bytes, (unsigned long long)size);
    REQUIRE(r, s.ring_high_water <= 8, "ring high water %llu", (unsigned long long)s.ring_high_water);
    REQUIRE_OK(r, lf_ingest_close(in));
    if (leave) {
      REQUIRE_OK(r, lf_channel_close(ch));
      REQUIRE_OK(r, lf_finalize(ctx));
      return;
    }
    // The peer's answer: its checksum, after it freed every view.
    uint64_t peer_sum = 0;
    REQUIRE_OK(r, lf_recv(ch, &peer_sum, sizeof peer_sum, kTag + 1, nullptr));
    REQUIRE(r, peer_sum == pattern_checksum(0, size), "the peer's checksum differs");
  } else {
    uint64_t got = 0, sum = kFnvSeed;
    int zero_copy = 0, chunks = 0;
    for (;;) {
      lf_request_t req;
      REQUIRE_OK(r, lf_irecv_buffer(ch, kTag, &req));
      lf_buffer_t b;
      lf_completion_t info = LF_COMPLETION_INIT;
      REQUIRE_OK(r, lf_wait_buffer(req, &b, &info));
      const size_t n = lf_buffer_size(b);
      if (n == 0) {
        lf_free(b);
        break;
      }
      REQUIRE(r, n <= kChunk, "chunk of %zu bytes", n);
      size_t bad = pattern_mismatch(lf_buffer_data(b), n, got);
      REQUIRE(r, bad == SIZE_MAX, "wrong byte at file offset %llu", (unsigned long long)(got + bad));
      zero_copy += lf_buffer_kind(b) == LF_MEM_HOST_SHARED;
      ++chunks;
      sum = fnv(sum, lf_buffer_data(b), n);
      got += n;
      REQUIRE_OK(r, lf_free(b));
    }
    REQUIRE(r, got == size, "received %llu of %llu bytes", (unsigned long long)got, (unsigned long long)size);
    if (kind == LF_MEM_HOST_SHARED && std::string(transport) == "shm")
      REQUIRE(r, zero_copy == chunks, "%d of %d chunks arrived as views of the sender's shared memory", zero_copy,
              chunks);
    if (!leave) REQUIRE_OK(r, lf_send(ch, &sum, sizeof sum, kTag + 1));
  }
  REQUIRE_OK(r, lf_channel_close(ch));
  REQUIRE_OK(r, lf_finalize(ctx));
}

TEST_P(IngestPeer, FileToPeer) {
  TempDir dir;
  const std::string f = dir.file("send");
  // A range that is not a whole number of chunks, and more chunks than the ring.
  const uint64_t size = 37 * kChunk + 1234;
  write_pattern_file(f, size);
  env = {{"LF_INGEST_ENGINE", GetParam().engine}};
  const PeerCase c = GetParam();
  run(2, [&](Rank &r) { send_and_check(r, f, size, c.kind, c.transport); });
}

TEST_P(IngestPeer, SenderLeavesRightAfterTheSend) {
  // lf_ingest_send returns only once the peer freed every view: the sender
  // may close and exit at once without changing what the peer reads.
  TempDir dir;
  const std::string f = dir.file("leave");
  const uint64_t size = 24 * kChunk + 77;
  write_pattern_file(f, size);
  env = {{"LF_INGEST_ENGINE", GetParam().engine}};
  const PeerCase c = GetParam();
  run(2, [&](Rank &r) { send_and_check(r, f, size, c.kind, c.transport, true); });
}

TEST_P(IngestPeer, EmptyFileSendsOnlyTheEnd) {
  TempDir dir;
  const std::string f = dir.file("empty");
  write_pattern_file(f, 0);
  env = {{"LF_INGEST_ENGINE", GetParam().engine}};
  const PeerCase c = GetParam();
  run(2, [&](Rank &r) { send_and_check(r, f, 0, c.kind, c.transport); });
}

INSTANTIATE_TEST_SUITE_P(Transports, IngestPeer,
                         ::testing::Values(PeerCase{"shm", LF_MEM_HOST_SHARED, "auto"},
                                           PeerCase{"shm", LF_MEM_HOST, "auto"}, PeerCase{"tcp", LF_MEM_HOST, "auto"},
                                           PeerCase{"shm", LF_MEM_HOST_SHARED, "pread"}),
                         [](const auto &param_info) {
                           return std::string(param_info.param.transport) +
                                  (param_info.param.kind == LF_MEM_HOST_SHARED ? "SharedChunks" : "HostChunks") +
                                  (std::string(param_info.param.engine) == "pread" ? "Pread" : "");
                         });

}  // namespace
