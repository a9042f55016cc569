// C API: collectives (include/lavaflow/lavaflow_coll.h). One engine per
// context, created by the first collective; a non-blocking collective is an
// ordinary request whose operation the engine's helper thread completes.
#include <map>
#include <mutex>

#include "capi/capi_internal.hpp"
#include "coll/engine.hpp"
#include "coll/reduce.hpp"

using namespace lf;
using namespace lf::capi;

namespace {

// Above this a size is a caller's bug (a negative value cast to size_t).
constexpr size_t kMaxBytes = size_t(1) << 46;

struct EngineSlot {
  std::mutex mu;  // serialises creation
  std::shared_ptr<coll::Engine> engine;
  std::optional<Error> error;  // creation failed: every later call says so
};

// Engines by context handle. A handle's generation makes it unique for the
// process's life, so an entry whose handle no longer resolves belongs to a
// finalized context and is dropped (its channels hold that context alive).
std::mutex registry_mu;
std::map<lf_context_t, std::shared_ptr<EngineSlot>> &registry() {
  static auto *r = new std::map<lf_context_t, std::shared_ptr<EngineSlot>>();  // outlives exit-time calls
  return *r;
}

Result<std::shared_ptr<coll::Engine>> engine_of(lf_context_t h, Context &ctx) {
  std::shared_ptr<EngineSlot> slot;
  std::vector<std::shared_ptr<EngineSlot>> stale;
  {
    std::lock_guard g(registry_mu);
    auto &reg = registry();
    for (auto it = reg.begin(); it != reg.end();) {
      if (it->first != h && !contexts().get(it->first)) {
        stale.push_back(std::move(it->second));
        it = reg.erase(it);
      } else {
        ++it;
      }
    }
    auto &s = reg[h];
    if (!s) s = std::make_shared<EngineSlot>();
    slot = s;
  }
  // Stale engines shut down here, unlocked: that joins their helper threads.
  for (auto &s : stale)
    if (s->engine) s->engine->shutdown();
  stale.clear();
  std::lock_guard g(slot->mu);
  if (slot->error) return std::unexpected(*slot->error);
  if (!slot->engine) {
    auto e = coll::Engine::create(ctx);
    if (!e) {
      slot->error = e.error();
      return std::unexpected(e.error());
    }
    slot->engine = std::move(*e);
  }
  return slot->engine;
}

lf_status_t check_reduction(lf_dtype_t dt, lf_op_t op, size_t count, const char *fn) noexcept {
  size_t es = coll::dtype_size(dt);
  if (es == 0) return fail(LF_ERR_INVALID_ARG, "%s: unknown dtype %d", fn, static_cast<int>(dt));
  if (op < LF_SUM || op > LF_MAX) return fail(LF_ERR_INVALID_ARG, "%s: unknown op %d", fn, static_cast<int>(op));
  if (count > kMaxBytes / es)
    return fail(LF_ERR_INVALID_ARG, "%s: count %zu of %s is not a plausible size", fn, count, coll::dtype_name(dt));
  return LF_OK;
}

lf_status_t check_root(const Context &ctx, int root, const char *fn) noexcept {
  if (root < 0 || root >= ctx.size())
    return fail(LF_ERR_INVALID_ARG, "%s: root %d is not in a world of %d", fn, root, ctx.size());
  return LF_OK;
}

// Validate with `check` (returns LF_OK or a failure it recorded), then run
// the collective on this thread or, with `req`, start it on the engine.
template <typename Check>
lf_status_t collective(lf_context_t h, coll::Args a, lf_request_t *req, const char *fn, Check &&check) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(h);
    if (!ctx) return h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (lf_status_t st = check(*ctx); st != LF_OK) return st;
    auto engine = engine_of(h, *ctx);
    if (!engine) return fail(engine.error());
    if (!req) {
      if (auto st = (*engine)->run(a); !st) return fail(st.error());
      return LF_OK;
    }
    auto [id, r] = requests().acquire();
    if (!r) return fail(LF_ERR_NO_MEMORY, "%s: no free request handle", fn);
    r->ch = (*engine)->anchor();
    r->is_send = false;
    r->recv = RecvOp{};
    lf_request_t handle = RequestTable::to_handle<lf_request_t>(id);
    requests().publish(id);
    if (auto st = (*engine)->start(a, &r->recv); !st) {
      requests().retire(handle, [](RequestSlot &s) { s.ch.reset(); });
      return fail(st.error());
    }
    *req = handle;
    return LF_OK;
  });
}

}  // namespace

namespace lf::capi {
void coll_forget(lf_context_t h) noexcept {
  std::shared_ptr<EngineSlot> slot;
  {
    std::lock_guard g(registry_mu);
    auto it = registry().find(h);
    if (it == registry().end()) return;
    slot = std::move(it->second);
    registry().erase(it);
  }
  std::shared_ptr<coll::Engine> engine;
  {
    std::lock_guard g(slot->mu);
    engine = std::move(slot->engine);
  }
  // Pending non-blocking collectives fail with LF_ERR_CLOSED; a collective
  // another thread still runs holds its own reference and fails likewise.
  if (engine) engine->shutdown();
}
}  // namespace lf::capi

LF_API size_t lf_dtype_size(lf_dtype_t dt) { return coll::dtype_size(dt); }

LF_API lf_status_t lf_bcast(lf_context_t ctx, void *buf, size_t bytes, int root) {
  coll::Args a{coll::Kind::bcast, buf, buf, bytes, LF_UINT8, LF_SUM, root};
  return collective(ctx, a, nullptr, "lf_bcast", [&](const Context &c) -> lf_status_t {
    if (!buf && bytes) return fail(LF_ERR_INVALID_ARG, "lf_bcast: buf is NULL for %zu bytes", bytes);
    if (bytes > kMaxBytes) return fail(LF_ERR_INVALID_ARG, "lf_bcast: %zu bytes is not a plausible size", bytes);
    return check_root(c, root, "lf_bcast");
  });
}

LF_API lf_status_t lf_ibcast(lf_context_t ctx, void *buf, size_t bytes, int root, lf_request_t *req) {
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_ibcast: req is NULL");
  coll::Args a{coll::Kind::bcast, buf, buf, bytes, LF_UINT8, LF_SUM, root};
  return collective(ctx, a, req, "lf_ibcast", [&](const Context &c) -> lf_status_t {
    if (!buf && bytes) return fail(LF_ERR_INVALID_ARG, "lf_ibcast: buf is NULL for %zu bytes", bytes);
    if (bytes > kMaxBytes) return fail(LF_ERR_INVALID_ARG, "lf_ibcast: %zu bytes is not a plausible size", bytes);
    return check_root(c, root, "lf_ibcast");
  });
}

LF_API lf_status_t lf_reduce(lf_context_t ctx, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op,
                             int root) {
  coll::Args a{coll::Kind::reduce, send, recv, count, dt, op, root};
  return collective(ctx, a, nullptr, "lf_reduce", [&](const Context &c) -> lf_status_t {
    if (lf_status_t st = check_reduction(dt, op, count, "lf_reduce"); st != LF_OK) return st;
    if (lf_status_t st = check_root(c, root, "lf_reduce"); st != LF_OK) return st;
    if (!count) return LF_OK;
    if (!send) return fail(LF_ERR_INVALID_ARG, "lf_reduce: send is NULL (LF_IN_PLACE for in place)");
    if ((c.rank() == root || send == LF_IN_PLACE) && !recv)
      return fail(LF_ERR_INVALID_ARG, "lf_reduce: recv is NULL at the root (or with LF_IN_PLACE)");
    return LF_OK;
  });
}

namespace {
lf_status_t check_allreduce(const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op, const char *fn) {
  if (lf_status_t st = check_reduction(dt, op, count, fn); st != LF_OK) return st;
  if (count && (!send || !recv))
    return fail(LF_ERR_INVALID_ARG, "%s: %s is NULL (LF_IN_PLACE for in place)", fn, send ? "recv" : "send");
  return LF_OK;
}
}  // namespace

LF_API lf_status_t lf_allreduce(lf_context_t ctx, const void *send, void *recv, size_t count, lf_dtype_t dt,
                                lf_op_t op) {
  coll::Args a{coll::Kind::allreduce, send, recv, count, dt, op, 0};
  return collective(ctx, a, nullptr, "lf_allreduce",
                    [&](const Context &) { return check_allreduce(send, recv, count, dt, op, "lf_allreduce"); });
}

LF_API lf_status_t lf_iallreduce(lf_context_t ctx, const void *send, void *recv, size_t count, lf_dtype_t dt,
                                 lf_op_t op, lf_request_t *req) {
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_iallreduce: req is NULL");
  coll::Args a{coll::Kind::allreduce, send, recv, count, dt, op, 0};
  return collective(ctx, a, req, "lf_iallreduce",
                    [&](const Context &) { return check_allreduce(send, recv, count, dt, op, "lf_iallreduce"); });
}

namespace {
lf_status_t check_blocks(const Context &c, const void *send, size_t bytes_per_rank, void *recv, const char *fn) {
  if (bytes_per_rank > kMaxBytes / static_cast<size_t>(c.size()))
    return fail(LF_ERR_INVALID_ARG, "%s: %zu bytes per rank is not a plausible size", fn, bytes_per_rank);
  if (bytes_per_rank && (!send || !recv))
    return fail(LF_ERR_INVALID_ARG, "%s: %s is NULL (LF_IN_PLACE for in place)", fn, send ? "recv" : "send");
  return LF_OK;
}
}  // namespace

LF_API lf_status_t lf_allgather(lf_context_t ctx, const void *send, size_t bytes_per_rank, void *recv) {
  coll::Args a{coll::Kind::allgather, send, recv, bytes_per_rank, LF_UINT8, LF_SUM, 0};
  return collective(ctx, a, nullptr, "lf_allgather",
                    [&](const Context &c) { return check_blocks(c, send, bytes_per_rank, recv, "lf_allgather"); });
}

LF_API lf_status_t lf_alltoall(lf_context_t ctx, const void *send, size_t bytes_per_rank, void *recv) {
  coll::Args a{coll::Kind::alltoall, send, recv, bytes_per_rank, LF_UINT8, LF_SUM, 0};
  return collective(ctx, a, nullptr, "lf_alltoall",
                    [&](const Context &c) { return check_blocks(c, send, bytes_per_rank, recv, "lf_alltoall"); });
}

LF_API lf_status_t lf_ibarrier(lf_context_t ctx, lf_request_t *req) {
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_ibarrier: req is NULL");
  coll::Args a{coll::Kind::barrier, nullptr, nullptr, 0, LF_UINT8, LF_SUM, 0};
  return collective(ctx, a, req, "lf_ibarrier", [](const Context &) { return LF_OK; });
}
