// UCX transport (transport role): lavaflow's channels over UCX's ucp layer,
// so that the same code reaches InfiniBand and RoCE (rc, dc, ud lanes),
// device memory where UCX has it, and tcp or shared memory where that is all
// UCX finds. Nothing here branches on a UCX transport's name except the
// cost estimate, which reads the lane list UCX reports.
//
// start(). One ucp context and worker per lavaflow context (ucx_worker.hpp);
// publishes
//     lanes=<tl/dev,...>;addr=<hex of the ucp worker address>
// connect(). Both ranks create a ucp endpoint to the other's worker, in peer
// error mode, for the n-th channel between them (ucx_endpoint.hpp); no
// handshake, so ranks opening channels in any order never deadlock.
//
// Selection. ucx wins REMOTE scope when both ranks have an RDMA lane; with
// only tcp or shared-memory lanes it costs more than lavaflow's own tcp and
// shm (measured: docs/performance.md, "ucx"), so it is chosen only when
// LF_TRANSPORTS asks for it.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "core/config.hpp"
#include "core/job_key.hpp"
#include "core/log.hpp"
#include "transport/filter.hpp"
#include "transport/transport.hpp"
#include "transport/ucx/ucx_endpoint.hpp"
#include "transport/ucx/ucx_worker.hpp"

namespace lf {

namespace {

/// The token every active message of this job carries (ucx_wire.hpp): an
/// HMAC of a fixed label under the job key, the same on every rank.
uint64_t job_token(World &world) {
  JobKey key = world.bootstrap().job_key();
  if (!key.set())
    if (auto k = JobKey::from_environment()) key = std::move(*k);
  static constexpr char kLabel[] = "lavaflow ucx active messages v2";
  const JobKey::Proof p = key.prove({reinterpret_cast<const uint8_t *>(kLabel), sizeof kLabel - 1});
  uint64_t t;
  std::memcpy(&t, p.data(), sizeof t);
  return t;
}

using ucx::Lanes;
using ucx::Worker;

struct PublishedAddress {
  Lanes lanes;
  std::string worker;  ///< binary ucp address
};

std::string to_hex(const std::string &bin) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bin.size() * 2);
  for (unsigned char c : bin) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::optional<std::string> from_hex(const std::string &hex) {
  if (hex.size() % 2) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

std::optional<PublishedAddress> parse_address(const std::string &text) {
  const std::string l = "lanes=", a = ";addr=";
  auto at = text.find(a);
  if (text.rfind(l, 0) != 0 || at == std::string::npos) return std::nullopt;
  auto bin = from_hex(text.substr(at + a.size()));
  if (!bin || bin->empty()) return std::nullopt;
  return PublishedAddress{Lanes::parse_list(text.substr(l.size(), at - l.size())), std::move(*bin)};
}

std::vector<std::string> common(std::vector<std::string> a, const std::vector<std::string> &b) {
  std::erase_if(a, [&](const std::string &x) { return std::find(b.begin(), b.end(), x) == b.end(); });
  return a;
}

std::string join(const std::vector<std::string> &v) {
  std::string s;
  for (const auto &x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "none" : s;
}

class UcxTransport final : public Transport {
 public:
  UcxTransport() = default;
  ~UcxTransport() override {
    if (worker_) worker_->shutdown();
  }

  const char *name() const noexcept override { return "ucx"; }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.local = true;
    c.remote = true;
    c.memory_kinds = kHostKinds;
    return c;
  }

  std::optional<Cost> estimate(const CostQuery &q) const noexcept override {
    if (q.scope == Scope::self) return std::nullopt;
    bool rdma = false;
    if (worker_ && world_) {
      try {
        auto peer = parse_address(world_->address(q.peer, "ucx"));
        rdma = worker_->lanes().rdma() && peer && peer->lanes.rdma();
      } catch (...) {
      }
    }
    // With RDMA across hosts: below lavaflow's tcp (25 us, 1.2 GB/s). With
    // only tcp or shared-memory lanes: above tcp and shm at every size,
    // as measured here (docs/performance.md).
    Cost c;
    if (q.scope == Scope::remote && rdma)
      c = {3, 10};
    else if (q.scope == Scope::remote)
      c = {40, 1};
    else
      c = {15, 3};
    return kHostKinds & kind_bit(q.kind) ? c : staged(c);
  }

  std::optional<std::string> unavailable_reason() const override {
    if (!TransportFilter::from_environment().permits("ucx")) return std::nullopt;  // start() says why
    if (auto l = probe_lanes(); !l) return l.error().message;
    return std::nullopt;
  }

  std::vector<std::string> details() const override {
    if (!TransportFilter::from_environment().permits("ucx")) return {};
    auto l = probe_lanes();
    if (!l) return {};
    return {"lanes: " + l->text(),
            std::string("rdma: ") + (l->rdma() ? "yes" : "no") + ", device memory: " + (l->device() ? "yes" : "no")};
  }

  Result<std::string> start(World &world) override {
    const TransportFilter filter = TransportFilter::from_environment();
    if (!filter.permits("ucx"))
      return LF_FAIL(LF_ERR_UNAVAILABLE, "excluded by LF_TRANSPORTS (no UCX context created)");
    auto lanes = probe_lanes();
    if (!lanes) return std::unexpected(lanes.error());
    // Without an RDMA or device lane ucx never wins a channel (estimate()),
    // so its worker, threads and listening sockets would be pure cost:
    // started only when asked for.
    if (!lanes->rdma() && !lanes->device() && !filter.allow.count("ucx") && !config::get_bool("LF_UCX_START_ALWAYS"))
      return LF_FAIL(LF_ERR_UNAVAILABLE,
                     "ucx has only %s lanes here, where lavaflow's own transports are faster; it starts when "
                     "LF_TRANSPORTS names it (or LF_UCX_START_ALWAYS=1)",
                     lanes->tl_names().c_str());
    auto w = ensure_worker();
    if (!w) return std::unexpected(w.error());
    (*w)->set_world(world.rank(), world.size());
    (*w)->set_token(job_token(world));
    world_ = &world;
    LF_LOG(debug, "ucx: rank %d lanes %s", world.rank(), (*w)->lanes().text().c_str());
    return "lanes=" + (*w)->lanes().text() + ";addr=" + to_hex((*w)->address());
  }

  std::optional<std::string> unusable_for(World &world, int peer) const override {
    int lo = std::min(world.rank(), peer), hi = std::max(world.rank(), peer);
    auto a = parse_address(world.address(lo, "ucx"));
    auto b = parse_address(world.address(hi, "ucx"));
    if (!a || !b) return "a ucx address published by rank " + std::to_string(!a ? lo : hi) + " is unreadable";
    const bool remote = world.scope(peer).scope == Scope::remote;
    auto shared = remote ? common(a->lanes.network_tls(), b->lanes.network_tls())
                         : common(a->lanes.peer_tls(), b->lanes.peer_tls());
    if (shared.empty())
      return "ucx: ranks " + std::to_string(lo) + " and " + std::to_string(hi) + " share no UCX transport that " +
             (remote ? "crosses hosts" : "reaches another process") + " (rank " + std::to_string(lo) + ": " +
             a->lanes.tl_names() + "; rank " + std::to_string(hi) + ": " + b->lanes.tl_names() + ")";
    return std::nullopt;
  }

  std::string describe(World &world, int peer) const override {
    auto a = parse_address(world.address(world.rank(), "ucx"));
    auto b = parse_address(world.address(peer, "ucx"));
    if (!a || !b) return {};
    const bool remote = world.scope(peer).scope == Scope::remote;
    return join(remote ? common(a->lanes.network_tls(), b->lanes.network_tls())
                       : common(a->lanes.peer_tls(), b->lanes.peer_tls()));
  }

  Result<std::unique_ptr<Endpoint>> connect(World &world, int peer, Deadline deadline) override {
    (void)deadline;  // creating a ucp endpoint does not wait for the peer
    if (!worker_ || !world_) return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx did not start on rank %d", world.rank());
    if (peer == world.rank() || peer < 0 || peer >= world.size())
      return LF_FAIL(LF_ERR_INVALID_ARG, "ucx: cannot connect rank %d to rank %d", world.rank(), peer);
    auto addr = parse_address(world.address(peer, "ucx"));
    if (!addr) return LF_FAIL(LF_ERR_PROTOCOL, "rank %d published an unreadable ucx address", peer);
    auto conn = ucx::open_conn(worker_, peer, addr->worker);
    if (!conn) return std::unexpected(conn.error());
    const bool remote = world.scope(peer).scope == Scope::remote;
    LF_LOG(info, "ucx: channel to rank %d over %s lanes: %s", peer, remote ? "network" : "local",
           join(remote ? common(worker_->lanes().network_tls(), addr->lanes.network_tls())
                       : common(worker_->lanes().peer_tls(), addr->lanes.peer_tls()))
               .c_str());
    return ucx::make_endpoint(std::move(*conn), *this);
  }

  Status progress() noexcept override {
    if (!worker_ || !world_) return {};
    std::unique_lock g(worker_->mu, std::try_to_lock);
    if (!g.owns_lock()) return {};  // another thread drives the worker right now
    worker_->progress_locked();
    if (Error e = worker_->take_stray_error(); e.code != LF_OK) return std::unexpected(e);
    return {};
  }

  int event_fd() const noexcept override { return worker_ && world_ ? worker_->efd : -1; }

  bool arm() noexcept override {
    if (!worker_ || !world_) return true;
    std::unique_lock g(worker_->mu, std::try_to_lock);
    if (!g.owns_lock()) return false;  // another thread is driving the worker: do not sleep
    if (worker_->undelivered()) return false;
    return ucp_worker_arm(worker_->worker) != UCS_ERR_BUSY;
  }

  Result<RegistrationHandle> register_memory(void *base, size_t length, MemoryKind kind) noexcept override {
    if (!(kHostKinds & kind_bit(kind)) || !base || !length) return RegistrationHandle{};
    if (auto w = ensure_worker(); !w) return std::unexpected(w.error());
    ucp_mem_map_params_t p{};
    p.field_mask =
        UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    p.address = base;
    p.length = length;
    p.memory_type = UCS_MEMORY_TYPE_HOST;
    ucp_mem_h memh = nullptr;
    {
      std::lock_guard g(worker_->mu);
      if (ucs_status_t st = ucp_mem_map(worker_->context, &p, &memh); st != UCS_OK)
        return LF_FAIL(LF_ERR_IO, "ucx: ucp_mem_map of %zu bytes: %s", length, ucs_status_string(st));
    }
    try {
      auto *r = new ucx::MemReg{worker_, memh};
      return RegistrationHandle(r, [](void *h) {
        auto *reg = static_cast<ucx::MemReg *>(h);
        {
          std::lock_guard g(reg->worker->mu);
          ucp_mem_unmap(reg->worker->context, reg->memh);
        }
        delete reg;
      });
    } catch (const std::bad_alloc &) {
      std::lock_guard g(worker_->mu);
      ucp_mem_unmap(worker_->context, memh);
      return LF_FAIL(LF_ERR_NO_MEMORY, "ucx: no memory for a registration handle");
    }
  }

 private:
  /// The worker, created on first need (lf-info's availability probe or
  /// start) and kept for the transport's life.
  Result<std::shared_ptr<Worker>> ensure_worker() const {
    std::lock_guard g(probe_mu_);
    if (worker_) return worker_;
    if (probe_error_.code != LF_OK) return std::unexpected(probe_error_);
    auto w = Worker::create(ucx::Settings::from_config());
    if (!w) {
      probe_error_ = w.error();
      return std::unexpected(w.error());
    }
    worker_ = std::move(*w);
    return worker_;
  }

  Result<Lanes> probe_lanes() const {
    std::lock_guard g(probe_mu_);
    if (!lanes_) lanes_ = Worker::probe(ucx::Settings::from_config());
    return *lanes_;
  }

  mutable std::optional<Result<Lanes>> lanes_;
  mutable std::mutex probe_mu_;
  mutable std::shared_ptr<Worker> worker_;
  mutable Error probe_error_{LF_OK, {}};
  World *world_ = nullptr;
};

}  // namespace

std::unique_ptr<Transport> make_ucx_transport() { return std::make_unique<UcxTransport>(); }

}  // namespace lf
