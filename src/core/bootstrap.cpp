#include "core/bootstrap.hpp"

#include <cstdlib>
#include <cstring>

#include "core/config.hpp"
#include "core/log.hpp"
#include "core/net.hpp"
#include "lavaflow_features.h"
#if LAVAFLOW_HAVE_MPI
#include "core/bootstrap_mpi.hpp"
#endif

namespace lf {

namespace {

class SingleBootstrap final : public Bootstrap {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  const char *name() const noexcept override { return "single"; }
  Result<std::vector<std::string>> allgather(const std::string &mine) override { return std::vector{mine}; }
  Status barrier() override { return {}; }
};

constexpr uint32_t kHelloMagic = 0x4c464253;  // "LFBS"

struct Hello {
  uint32_t magic;
  int32_t rank;
  int32_t size;
};

// Star topology around rank 0: fine for the handful of collectives the
// bootstrap does (startup, barriers); data never flows through it.
class RendezvousBootstrap final : public Bootstrap {
 public:
  RendezvousBootstrap(int rank, int size, bool unix_socket) : rank_(rank), size_(size), unix_(unix_socket) {}
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  const char *name() const noexcept override { return unix_ ? "unix" : "tcp"; }

  Status start(const SockAddr &addr, double timeout_s) {
    Deadline deadline = deadline_in(timeout_s);
    if (rank_ == 0) {
      auto lfd = listen_on(addr, size_ + 16);
      if (!lfd) return std::unexpected(lfd.error());
      if (addr.family == SockAddr::Family::unix_path) unlink_path_ = addr.host;
      peers_.resize(static_cast<size_t>(size_));
      for (int arrived = 1; arrived < size_;) {
        auto fd = accept_one(lfd->get(), deadline);
        if (!fd) {
          std::string missing;
          for (int r = 1; r < size_; ++r)
            if (!peers_[static_cast<size_t>(r)]) missing += (missing.empty() ? "" : ",") + std::to_string(r);
          return LF_FAIL(LF_ERR_TIMEOUT,
                         "bootstrap at %s: %d of %d ranks arrived within %.0f s; missing rank(s) %s "
                         "(raise LF_BOOTSTRAP_TIMEOUT or check that every rank was started)",
                         addr.to_string().c_str(), arrived, size_, timeout_s, missing.c_str());
        }
        Hello h{};
        if (auto st = recv_all(fd->get(), &h, sizeof h, deadline); !st) {
          LF_LOG(warn, "bootstrap: dropped a connection that sent no greeting: %s", st.error().message.c_str());
          continue;
        }
        if (h.magic != kHelloMagic || h.size != size_ || h.rank <= 0 || h.rank >= size_ ||
            peers_[static_cast<size_t>(h.rank)]) {
          LF_LOG(warn, "bootstrap: rejected greeting (magic %x, rank %d, size %d; expected size %d)", h.magic, h.rank,
                 h.size, size_);
          continue;
        }
        peers_[static_cast<size_t>(h.rank)] = std::move(*fd);
        ++arrived;
      }
      // Nobody else connects after this point; remove the socket file now.
      if (!unlink_path_.empty()) ::unlink(unlink_path_.c_str()), unlink_path_.clear();
      return {};
    }
    auto fd = connect_to(addr, deadline);
    if (!fd)
      return LF_FAIL(fd.error().code == LF_ERR_TIMEOUT ? LF_ERR_TIMEOUT : fd.error().code,
                     "bootstrap: rank %d could not reach rank 0 within %.0f s: %s", rank_, timeout_s,
                     fd.error().message.c_str());
    Hello h{kHelloMagic, rank_, size_};
    if (auto st = send_all(fd->get(), &h, sizeof h, deadline); !st) return st;
    root_ = std::move(*fd);
    return {};
  }

  Result<std::vector<std::string>> allgather(const std::string &mine) override {
    Deadline none = deadline_in(0);
    std::vector<std::string> all(static_cast<size_t>(size_));
    if (rank_ == 0) {
      all[0] = mine;
      for (int r = 1; r < size_; ++r) {
        auto m = recv_msg(peers_[static_cast<size_t>(r)].get(), none);
        if (!m) return std::unexpected(annotate(m.error(), r));
        all[static_cast<size_t>(r)] = std::move(*m);
      }
      std::string packed;
      for (const auto &s : all) {
        uint64_t n = s.size();
        packed.append(reinterpret_cast<const char *>(&n), sizeof n).append(s);
      }
      for (int r = 1; r < size_; ++r)
        if (auto st = send_msg(peers_[static_cast<size_t>(r)].get(), packed, none); !st)
          return std::unexpected(annotate(st.error(), r));
      return all;
    }
    if (auto st = send_msg(root_.get(), mine, none); !st) return std::unexpected(annotate(st.error(), 0));
    auto packed = recv_msg(root_.get(), none, 1u << 30);
    if (!packed) return std::unexpected(annotate(packed.error(), 0));
    size_t off = 0;
    for (auto &s : all) {
      uint64_t n;
      if (off + sizeof n > packed->size()) return LF_FAIL(LF_ERR_PROTOCOL, "bootstrap: short allgather reply");
      std::memcpy(&n, packed->data() + off, sizeof n);
      off += sizeof n;
      if (n > packed->size() - off) return LF_FAIL(LF_ERR_PROTOCOL, "bootstrap: bad allgather reply");
      s.assign(packed->data() + off, n);
      off += n;
    }
    return all;
  }

  Status barrier() override {
    auto r = allgather({});
    if (!r) return std::unexpected(r.error());
    return {};
  }

  ~RendezvousBootstrap() override {
    if (!unlink_path_.empty()) ::unlink(unlink_path_.c_str());
  }

 private:
  Error annotate(Error e, int peer) const {
    e.message = "bootstrap exchange with rank " + std::to_string(peer) + ": " + e.message;
    return e;
  }
  int rank_, size_;
  bool unix_;
  Fd root_;
  std::vector<Fd> peers_;
  std::string unlink_path_;
};

Result<int> env_int(const char *name) {
  const char *v = std::getenv(name);
  if (!v || !*v) return LF_FAIL(LF_ERR_INVALID_ARG, "%s is not set", name);
  char *end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end || x < 0 || x > 1 << 24) return LF_FAIL(LF_ERR_INVALID_ARG, "%s=%s is not a valid number", name, v);
  return static_cast<int>(x);
}

}  // namespace

std::unique_ptr<Bootstrap> Bootstrap::single() { return std::make_unique<SingleBootstrap>(); }

bool Bootstrap::launched_by_mpi() noexcept {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_RANK") ||
         std::getenv("MPI_LOCALNRANKS");
}

Result<std::unique_ptr<Bootstrap>> Bootstrap::rendezvous(int rank, int size, const std::string &address,
                                                         double timeout_s) {
  if (size < 1 || rank < 0 || rank >= size)
    return LF_FAIL(LF_ERR_INVALID_ARG, "bootstrap: rank %d is not in a world of %d", rank, size);
  auto addr = SockAddr::parse(address);
  if (!addr) return std::unexpected(addr.error());
  auto b = std::make_unique<RendezvousBootstrap>(rank, size, addr->family != SockAddr::Family::tcp);
  if (auto st = b->start(*addr, timeout_s); !st) return std::unexpected(st.error());
  return b;
}

Result<std::unique_ptr<Bootstrap>> Bootstrap::from_environment() {
  std::string mode = config::get_string("LF_BOOTSTRAP_MODE");
  bool have_env = config::is_set("LF_RANK") || config::is_set("LF_SIZE") || config::is_set("LF_BOOTSTRAP");
  if (mode == "single") return single();
  if (mode == "mpi" || (mode == "auto" && !have_env && launched_by_mpi())) {
#if LAVAFLOW_HAVE_MPI
    auto b = MpiBootstrap::create();
    if (!b) return std::unexpected(b.error());
    return std::unique_ptr<Bootstrap>(std::move(*b));
#else
    return LF_FAIL(LF_ERR_UNSUPPORTED,
                   "started by an MPI launcher but this lavaflow was built without MPI; rebuild with "
                   "LAVAFLOW_WITH_MPI=ON or launch with LF_RANK, LF_SIZE and LF_BOOTSTRAP");
#endif
  }
  if (mode == "env" || (mode == "auto" && have_env)) {
    auto rank = env_int("LF_RANK");
    if (!rank) return std::unexpected(rank.error());
    auto size = env_int("LF_SIZE");
    if (!size) return std::unexpected(size.error());
    if (*size == 1 && !config::is_set("LF_BOOTSTRAP")) return single();
    std::string addr = config::get_string("LF_BOOTSTRAP");
    if (addr.empty()) return LF_FAIL(LF_ERR_INVALID_ARG, "LF_RANK/LF_SIZE are set but LF_BOOTSTRAP is not");
    return rendezvous(*rank, *size, addr, config::get_seconds("LF_BOOTSTRAP_TIMEOUT"));
  }
  if (mode != "auto")
    return LF_FAIL(LF_ERR_INVALID_ARG, "LF_BOOTSTRAP_MODE=%s is not one of auto, mpi, env, single", mode.c_str());
  return single();
}

}  // namespace lf
