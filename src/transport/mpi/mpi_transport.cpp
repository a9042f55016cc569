// The mpi transport: start-up, communicators, graveyard and connect()
// (mpi_transport.hpp), and make_mpi_transport(), the registry's factory.
#include "transport/mpi/mpi_transport.hpp"

#include <algorithm>
#include <climits>
#include <cstring>

#include "core/bootstrap_mpi.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "transport/mpi/endpoint.hpp"
#include "transport/mpi/wire.hpp"

namespace lf {
namespace mpi {

void Graveyard::bury(MPI_Request req, std::unique_ptr<char[]> mem) noexcept {
  std::lock_guard g(mu_);
  try {
    graves_.push_back({req, std::move(mem)});
  } catch (const std::bad_alloc &) {
    (void)mem.release();  // leaking is safer than freeing memory MPI may still use
    MPI_Request_free(&req);
  }
}

void Graveyard::drain(bool final) noexcept {
  std::lock_guard g(mu_);
  if (graves_.empty()) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {
    for (auto &gr : graves_) (void)gr.mem.release();
    graves_.clear();
    return;
  }
  for (int round = 0; round < (final ? 100000 : 1) && !graves_.empty(); ++round)
    std::erase_if(graves_, [](Grave &gr) {
      int flag = 0;
      MPI_Test(&gr.req, &flag, MPI_STATUS_IGNORE);
      return flag != 0;
    });
  if (final)
    for (auto &gr : graves_) {
      // Still pending at shutdown: let MPI finish on its own and keep the memory.
      MPI_Request_free(&gr.req);
      (void)gr.mem.release();
    }
}

MpiTransport::~MpiTransport() {
  drain_graveyard(true);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized)
    for (MPI_Comm &c : streams_) MPI_Comm_free(&c);
}

TransportCaps MpiTransport::caps() const noexcept {
  TransportCaps c;
  c.remote = true;
  c.memory_kinds = kHostKinds;
#if LAVAFLOW_HAVE_CUDA
  if (!cuda::Runtime::get().available()) c.memory_kinds |= kind_bit(MemoryKind::cuda_device);
#endif
  return c;
}

std::optional<Cost> MpiTransport::estimate(const CostQuery &q) const noexcept {
  if (q.scope != Scope::remote) return std::nullopt;
  // Below tcp's: MPI may ride RDMA (Open MPI's UCX PML) where lavaflow's
  // tcp cannot, and on tcp it costs about what lavaflow's tcp does.
  const Cost c{20, 1.5};
  return caps().memory_kinds & kind_bit(q.kind) ? c : staged(c);
}

std::optional<std::string> MpiTransport::unavailable_reason() const {
  if (Bootstrap::launched_by_mpi() || config::get_string("LF_BOOTSTRAP_MODE") == "mpi") return std::nullopt;
  return "not started by mpirun/mpiexec (the mpi transport rides the MPI bootstrap)";
}

Result<std::string> MpiTransport::start(World &world) {
  if (std::string(world.bootstrap().name()) != "mpi")
    return LF_FAIL(LF_ERR_UNAVAILABLE,
                   "the job was not started by mpirun (bootstrap '%s'); the mpi transport needs the MPI bootstrap",
                   world.bootstrap().name());
  auto *b = dynamic_cast<MpiBootstrap *>(&world.bootstrap());
  if (!b) return LF_FAIL(LF_ERR_INTERNAL, "bootstrap says 'mpi' but is not an MpiBootstrap");
  comm_ = b->comm();
  serialize_ = b->thread_level() < MPI_THREAD_MULTIPLE;
  void *ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
  long tag_ub = flag && ub ? *static_cast<int *>(ub) : 32767;
  int bits = 0;
  while (bits < 31 && (1L << (bits + 1)) - 1 <= tag_ub) ++bits;
  seq_bits_ = bits >= 24 ? 20 : bits - 4;
  chan_bits_ = bits - seq_bits_;
  eager_limit_ = static_cast<uint64_t>(std::max<int64_t>(0, config::get_int("LF_MPI_EAGER_LIMIT")));
  if (eager_limit_ > (1u << 20)) eager_limit_ = 1u << 20;
  slots_ = static_cast<int>(std::clamp<int64_t>(config::get_int("LF_MPI_EAGER_SLOTS"), 1, 1024));
  chunk_ = static_cast<uint64_t>(std::clamp<int64_t>(config::get_int("LF_MPI_CHUNK"), 4096, kMaxChunk));
  direct_tag_max_ = static_cast<uint64_t>(tag_ub) - 1;
  if (auto st = make_streams(); !st) return std::unexpected(st.error());
  dev_ = detect_device_support(chunk_);
  LF_LOG(info,
         "mpi transport: tag bits %d+%d, eager limit %llu, chunk %llu, %zu direct streams, thread level %d; device "
         "memory: %s",
         chan_bits_, seq_bits_, (unsigned long long)eager_limit_, (unsigned long long)chunk_, streams_.size(),
         b->thread_level(), dev_.description.c_str());
  // Peers size their send protocol by our eager receive slots.
  return "mpi:eager=" + std::to_string(eager_limit_);
}

/// Communicators for the channels' direct streams, one per channel index
/// (shared by all peers: a probe names its source). MPI_Comm_dup is
/// collective, so every rank makes the same number, agreed on first.
Status MpiTransport::make_streams() {
  int want = static_cast<int>(std::clamp<int64_t>(config::get_int("LF_MPI_STREAMS"), 0, 256));
  int n = 0;
  int rc = MPI_Allreduce(&want, &n, 1, MPI_INT, MPI_MIN, comm_);
  if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Allreduce (direct streams)"));
  for (int i = 0; i < n; ++i) {
    MPI_Comm c = MPI_COMM_NULL;
    rc = MPI_Comm_dup(comm_, &c);
    if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Comm_dup (direct streams)"));
    MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
    try {
      streams_.push_back(c);
    } catch (const std::bad_alloc &) {
      MPI_Comm_free(&c);
      return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for direct streams");
    }
  }
  return {};
}

Result<std::unique_ptr<Endpoint>> MpiTransport::connect(World &world, int peer, Deadline) {
  if (comm_ == MPI_COMM_NULL) return LF_FAIL(LF_ERR_UNAVAILABLE, "mpi transport did not start");
  if (peer == world.rank() || peer < 0 || peer >= world.size())
    return LF_FAIL(LF_ERR_INVALID_ARG, "mpi: cannot connect rank %d to rank %d", world.rank(), peer);
  const std::string &addr = world.address(peer, "mpi");
  uint64_t peer_eager = 0;
  if (addr.rfind("mpi:eager=", 0) != 0 || (peer_eager = std::strtoull(addr.c_str() + 10, nullptr, 10)) > (1u << 20))
    return LF_FAIL(LF_ERR_PROTOCOL, "rank %d published a bad mpi address '%s'", peer, addr.c_str());
  uint32_t k;
  {
    std::lock_guard g(connect_mu_);
    k = next_channel_[peer]++;
  }
  if (k >= (1u << chan_bits_) - 1)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "mpi: %u channels were opened between ranks %d and %d; MPI_TAG_UB allows %u", k,
                   world.rank(), peer, (1u << chan_bits_) - 1);
  return make_endpoint(*this, peer, static_cast<int>(k << seq_bits_), peer_eager, stream(k));
}

}  // namespace mpi

std::unique_ptr<Transport> make_mpi_transport() { return std::make_unique<mpi::MpiTransport>(); }

}  // namespace lf
