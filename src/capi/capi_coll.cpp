// C API: collectives and groups (include/lavaflow/lavaflow_coll.h). Every
// collective runs on the engine of a group: the world's, created by a
// context's first whole-world collective, or a group's, created with it by
// lf_group_create. A non-blocking collective is an ordinary request whose
// operation the engine's helper thread completes.
#include <algorithm>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>

#include "capi/capi_internal.hpp"
#include "capi/objects.hpp"
#include "coll/engine.hpp"
#include "coll/reduce.hpp"

using namespace lf;
using namespace lf::capi;

namespace {

// Above this a size is a caller's bug (a negative value cast to size_t).
constexpr size_t kMaxBytes = size_t(1) << 46;

// A group as its handle holds it. A rank outside the group holds one too
// (rank -1, no engine): its calls are refused with a reason.
struct Group {
  lf_context_t ctx = nullptr;
  std::vector<int> members;  // world ranks, by group rank
  int rank = -1;             // this rank's group rank; -1: not a member
  std::mutex mu;
  std::shared_ptr<coll::Engine> engine;  // mu; null once freed or its context finalized
  bool forgotten = false;                // mu: the context was finalized
};

ObjectTable<Group, HandleType::group> &groups() {
  static auto *t = new ObjectTable<Group, HandleType::group>();  // outlives exit-time calls
  return *t;
}

struct EngineSlot {
  // Serialises creating engines (the world's and groups'): their channels
  // open in call order. Held for as long as a creation waits for its peers,
  // so collectives on engines that exist never take it.
  std::mutex create_mu;
  std::mutex mu;  // guards what follows; held briefly
  std::shared_ptr<coll::Engine> engine;
  std::optional<Error> error;                // creation failed: every later call says so
  std::vector<std::weak_ptr<Group>> groups;  // mu: the context's groups, shut down with it
};

// Engines by context handle. A handle's generation makes it unique for the
// process's life, so an entry whose handle no longer resolves belongs to a
// finalized context and is dropped (its channels hold that context alive).
std::mutex registry_mu;
std::map<lf_context_t, std::shared_ptr<EngineSlot>> &registry() {
  static auto *r = new std::map<lf_context_t, std::shared_ptr<EngineSlot>>();  // outlives exit-time calls
  return *r;
}

// Shut down every engine of a slot that left the registry: the world's and
// its groups' (whose handles then refuse calls with LF_ERR_CLOSED).
void shut_down(EngineSlot &slot) noexcept {
  std::shared_ptr<coll::Engine> engine;
  std::vector<std::shared_ptr<Group>> gs;
  {
    std::lock_guard g(slot.mu);
    engine = std::move(slot.engine);
    for (auto &w : slot.groups)
      if (auto grp = w.lock()) gs.push_back(std::move(grp));
    slot.groups.clear();
  }
  // Pending non-blocking collectives fail with LF_ERR_CLOSED; a collective
  // another thread still runs holds its own reference and fails likewise.
  if (engine) engine->shutdown();
  for (auto &grp : gs) {
    std::shared_ptr<coll::Engine> e;
    {
      std::lock_guard g(grp->mu);
      e = std::move(grp->engine);
      grp->forgotten = true;
    }
    if (e) e->shutdown();
  }
}

std::shared_ptr<EngineSlot> slot_of(lf_context_t h) {
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
  for (auto &s : stale) shut_down(*s);
  return slot;
}

Result<std::shared_ptr<coll::Engine>> world_engine(lf_context_t h, Context &ctx) {
  std::shared_ptr<EngineSlot> slot = slot_of(h);
  auto existing = [&]() -> std::optional<Result<std::shared_ptr<coll::Engine>>> {
    std::lock_guard g(slot->mu);
    if (slot->error) return std::unexpected(*slot->error);
    if (slot->engine) return slot->engine;
    return std::nullopt;
  };
  if (auto e = existing()) return *e;
  std::lock_guard c(slot->create_mu);
  if (auto e = existing()) return *e;  // another thread created it meanwhile
  std::vector<int> all(static_cast<size_t>(ctx.size()));
  std::iota(all.begin(), all.end(), 0);
  auto e = coll::Engine::create(ctx, std::move(all), false);
  std::lock_guard g(slot->mu);
  if (!e) {
    slot->error = e.error();
    return std::unexpected(e.error());
  }
  slot->engine = std::move(*e);
  return slot->engine;
}

// Where a collective runs: this rank's rank and the size of its group (for
// the argument checks), then the engine.
struct View {
  int rank, size;
  const char *what;  // "world" or "group", for messages
};

lf_status_t check_reduction(lf_dtype_t dt, lf_op_t op, size_t count, const char *fn) noexcept {
  size_t es = coll::dtype_size(dt);
  if (es == 0) return fail(LF_ERR_INVALID_ARG, "%s: unknown dtype %d", fn, static_cast<int>(dt));
  if (op < LF_SUM || op > LF_MAX) return fail(LF_ERR_INVALID_ARG, "%s: unknown op %d", fn, static_cast<int>(op));
  if (count > kMaxBytes / es)
    return fail(LF_ERR_INVALID_ARG, "%s: count %zu of %s is not a plausible size", fn, count, coll::dtype_name(dt));
  return LF_OK;
}

lf_status_t check_root(const View &v, int root, const char *fn) noexcept {
  if (root < 0 || root >= v.size)
    return fail(LF_ERR_INVALID_ARG, "%s: root %d is not in a %s of %d", fn, root, v.what, v.size);
  return LF_OK;
}

// Run `a` on `engine` on this thread or, with `req`, start it there.
lf_status_t launch(const std::shared_ptr<coll::Engine> &engine, const coll::Args &a, lf_request_t *req,
                   const char *fn) {
  if (!req) {
    if (auto st = engine->run(a); !st) return fail(st.error());
    return LF_OK;
  }
  auto [id, r] = requests().acquire();
  if (!r) return fail(LF_ERR_NO_MEMORY, "%s: no free request handle", fn);
  r->ch = engine->anchor();
  r->is_send = false;
  r->recv = RecvOp{};
  lf_request_t handle = RequestTable::to_handle<lf_request_t>(id);
  requests().publish(id);
  if (auto st = engine->start(a, &r->recv); !st) {
    requests().retire(handle, [](RequestSlot &s) { s.ch.reset(); });
    return fail(st.error());
  }
  *req = handle;
  return LF_OK;
}

// Validate with `check` (returns LF_OK or a failure it recorded), then run
// the collective over the world of context `h`.
template <typename Check>
lf_status_t collective(lf_context_t h, coll::Args a, lf_request_t *req, const char *fn, Check &&check) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(h);
    if (!ctx) return h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (lf_status_t st = check(View{ctx->rank(), ctx->size(), "world"}); st != LF_OK) return st;
    auto engine = world_engine(h, *ctx);
    if (!engine) return fail(engine.error());
    return launch(*engine, a, req, fn);
  });
}

std::string list(const std::vector<int> &members) {
  std::string s;
  for (size_t i = 0; i < members.size() && i < 16; ++i) s += (i ? "," : "") + std::to_string(members[i]);
  if (members.size() > 16) s += ",...";
  return s;
}

// As collective(), over group `g`.
template <typename Check>
lf_status_t collective_g(lf_group_t g, coll::Args a, lf_request_t *req, const char *fn, Check &&check) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Group> grp = groups().get(g);
    if (!grp) return fail(LF_ERR_INVALID_ARG, "%s: %p is not a live group handle", fn, static_cast<void *>(g));
    if (grp->rank < 0)
      return fail(LF_ERR_INVALID_ARG, "%s: this rank (%d) is not a member of the group of ranks {%s}", fn,
                  lf_rank(grp->ctx), list(grp->members).c_str());
    if (lf_status_t st = check(View{grp->rank, static_cast<int>(grp->members.size()), "group"}); st != LF_OK) return st;
    std::shared_ptr<coll::Engine> engine;
    {
      std::lock_guard l(grp->mu);
      if (grp->forgotten) return fail(LF_ERR_CLOSED, "%s: the group's context was finalized", fn);
      engine = grp->engine;
    }
    if (!engine) return fail(LF_ERR_CLOSED, "%s: the group was freed", fn);
    return launch(engine, a, req, fn);
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
  shut_down(*slot);
}
}  // namespace lf::capi

LF_API size_t lf_dtype_size(lf_dtype_t dt) { return coll::dtype_size(dt); }

// ---- groups -------------------------------------------------------------------------

LF_API lf_status_t lf_group_create(lf_context_t h, const int *ranks, int n, lf_group_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_group_create: out is NULL");
    *out = nullptr;
    std::shared_ptr<Context> ctx = context_of(h);
    if (!ctx) return h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (!ranks) return fail(LF_ERR_INVALID_ARG, "lf_group_create: ranks is NULL");
    if (n < 1 || n > ctx->size())
      return fail(LF_ERR_INVALID_ARG, "lf_group_create: %d ranks for a group in a world of %d", n, ctx->size());
    auto grp = std::make_shared<Group>();
    grp->ctx = h;
    grp->members.assign(ranks, ranks + n);
    std::vector<char> seen(static_cast<size_t>(ctx->size()), 0);
    for (int i = 0; i < n; ++i) {
      int r = ranks[i];
      if (r < 0 || r >= ctx->size())
        return fail(LF_ERR_INVALID_ARG, "lf_group_create: ranks[%d] = %d is not in a world of %d", i, r, ctx->size());
      if (seen[static_cast<size_t>(r)]++)
        return fail(LF_ERR_INVALID_ARG, "lf_group_create: rank %d is listed twice", r);
      if (r == ctx->rank()) grp->rank = i;
    }
    std::shared_ptr<EngineSlot> slot;
    if (grp->rank >= 0) {
      slot = slot_of(h);
      std::lock_guard c(slot->create_mu);
      auto e = coll::Engine::create(*ctx, grp->members, true);
      if (!e) return fail(e.error());
      grp->engine = std::move(*e);
      std::lock_guard g(slot->mu);
      slot->groups.erase(std::remove_if(slot->groups.begin(), slot->groups.end(),
                                        [](const std::weak_ptr<Group> &w) { return w.expired(); }),
                         slot->groups.end());
      slot->groups.push_back(grp);
    }
    std::shared_ptr<coll::Engine> engine = grp->engine;
    auto handle = groups().add<lf_group_t>(std::move(grp));
    if (!handle) {
      if (engine) engine->shutdown();
      return fail(LF_ERR_NO_MEMORY, "lf_group_create: no free group handle");
    }
    *out = handle;
    return LF_OK;
  });
}

LF_API lf_status_t lf_group_free(lf_group_t g) {
  return guard([&]() -> lf_status_t {
    if (!g) return LF_OK;
    std::shared_ptr<Group> grp = groups().take(g);
    if (!grp) return fail(LF_ERR_INVALID_ARG, "lf_group_free: %p is not a live group handle", static_cast<void *>(g));
    std::shared_ptr<coll::Engine> engine;
    {
      std::lock_guard l(grp->mu);
      engine = std::move(grp->engine);
    }
    if (!engine) return LF_OK;
    if (engine->broken()) {
      engine->shutdown();
      return LF_OK;
    }
    // A barrier first, so that no member closes channels a peer still reads
    // from; a group that already failed answers it at once with its error.
    coll::Args bar;
    bar.kind = coll::Kind::barrier;
    Status st = engine->run(bar);
    engine->shutdown();
    if (!st) return fail(st.error());
    return LF_OK;
  });
}

LF_API int lf_group_rank(lf_group_t g) {
  std::shared_ptr<Group> grp = groups().get(g);
  if (!grp) {
    fail(LF_ERR_INVALID_ARG, "lf_group_rank: %p is not a live group handle", static_cast<void *>(g));
    return -1;
  }
  return grp->rank;
}

LF_API int lf_group_size(lf_group_t g) {
  std::shared_ptr<Group> grp = groups().get(g);
  if (!grp) {
    fail(LF_ERR_INVALID_ARG, "lf_group_size: %p is not a live group handle", static_cast<void *>(g));
    return -1;
  }
  return static_cast<int>(grp->members.size());
}

// ---- argument checks shared by the world's and the groups' calls ---------------------

namespace {

auto bcast_check(void *buf, size_t bytes, int root, const char *fn) {
  return [=](const View &v) -> lf_status_t {
    if (!buf && bytes) return fail(LF_ERR_INVALID_ARG, "%s: buf is NULL for %zu bytes", fn, bytes);
    if (bytes > kMaxBytes) return fail(LF_ERR_INVALID_ARG, "%s: %zu bytes is not a plausible size", fn, bytes);
    return check_root(v, root, fn);
  };
}

auto reduce_check(const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op, int root, const char *fn) {
  return [=](const View &v) -> lf_status_t {
    if (lf_status_t st = check_reduction(dt, op, count, fn); st != LF_OK) return st;
    if (lf_status_t st = check_root(v, root, fn); st != LF_OK) return st;
    if (!count) return LF_OK;
    if (!send) return fail(LF_ERR_INVALID_ARG, "%s: send is NULL (LF_IN_PLACE for in place)", fn);
    if ((v.rank == root || send == LF_IN_PLACE) && !recv)
      return fail(LF_ERR_INVALID_ARG, "%s: recv is NULL at the root (or with LF_IN_PLACE)", fn);
    return LF_OK;
  };
}

auto allreduce_check(const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op, const char *fn) {
  return [=](const View &) -> lf_status_t {
    if (lf_status_t st = check_reduction(dt, op, count, fn); st != LF_OK) return st;
    if (count && (!send || !recv))
      return fail(LF_ERR_INVALID_ARG, "%s: %s is NULL (LF_IN_PLACE for in place)", fn, send ? "recv" : "send");
    return LF_OK;
  };
}

auto blocks_check(const void *send, size_t bytes_per_rank, void *recv, const char *fn) {
  return [=](const View &v) -> lf_status_t {
    if (bytes_per_rank > kMaxBytes / static_cast<size_t>(v.size))
      return fail(LF_ERR_INVALID_ARG, "%s: %zu bytes per rank is not a plausible size", fn, bytes_per_rank);
    if (bytes_per_rank && (!send || !recv))
      return fail(LF_ERR_INVALID_ARG, "%s: %s is NULL (LF_IN_PLACE for in place)", fn, send ? "recv" : "send");
    return LF_OK;
  };
}

lf_status_t no_check(const View &) { return LF_OK; }

coll::Args args(coll::Kind k, const void *send, void *recv, size_t count, lf_dtype_t dt = LF_UINT8, lf_op_t op = LF_SUM,
                int root = 0) {
  return coll::Args{k, send, recv, count, dt, op, root};
}

}  // namespace

// ---- the whole world -------------------------------------------------------------------

LF_API lf_status_t lf_bcast(lf_context_t ctx, void *buf, size_t bytes, int root) {
  return collective(ctx, args(coll::Kind::bcast, buf, buf, bytes, LF_UINT8, LF_SUM, root), nullptr, "lf_bcast",
                    bcast_check(buf, bytes, root, "lf_bcast"));
}

LF_API lf_status_t lf_ibcast(lf_context_t ctx, void *buf, size_t bytes, int root, lf_request_t *req) {
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_ibcast: req is NULL");
  return collective(ctx, args(coll::Kind::bcast, buf, buf, bytes, LF_UINT8, LF_SUM, root), req, "lf_ibcast",
                    bcast_check(buf, bytes, root, "lf_ibcast"));
}

LF_API lf_status_t lf_reduce(lf_context_t ctx, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op,
                             int root) {
  return collective(ctx, args(coll::Kind::reduce, send, recv, count, dt, op, root), nullptr, "lf_reduce",
                    reduce_check(send, recv, count, dt, op, root, "lf_reduce"));
}

LF_API lf_status_t lf_allreduce(lf_context_t ctx, const void *send, void *recv, size_t count, lf_dtype_t dt,
                                lf_op_t op) {
  return collective(ctx, args(coll::Kind::allreduce, send, recv, count, dt, op), nullptr, "lf_allreduce",
                    allreduce_check(send, recv, count, dt, op, "lf_allreduce"));
}

LF_API lf_status_t lf_iallreduce(lf_context_t ctx, const void *send, void *recv, size_t count, lf_dtype_t dt,
                                 lf_op_t op, lf_request_t *req) {
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_iallreduce: req is NULL");
  return collective(ctx, args(coll::Kind::allreduce, send, recv, count, dt, op), req, "lf_iallreduce",
                    allreduce_check(send, recv, count, dt, op, "lf_iallreduce"));
}

LF_API lf_status_t lf_allgather(lf_context_t ctx, const void *send, size_t bytes_per_rank, void *recv) {
  return collective(ctx, args(coll::Kind::allgather, send, recv, bytes_per_rank), nullptr, "lf_allgather",
                    blocks_check(send, bytes_per_rank, recv, "lf_allgather"));
}

LF_API lf_status_t lf_alltoall(lf_context_t ctx, const void *send, size_t bytes_per_rank, void *recv) {
  return collective(ctx, args(coll::Kind::alltoall, send, recv, bytes_per_rank), nullptr, "lf_alltoall",
                    blocks_check(send, bytes_per_rank, recv, "lf_alltoall"));
}

LF_API lf_status_t lf_ibarrier(lf_context_t ctx, lf_request_t *req) {
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_ibarrier: req is NULL");
  return collective(ctx, args(coll::Kind::barrier, nullptr, nullptr, 0), req, "lf_ibarrier", no_check);
}

// ---- groups' collectives -----------------------------------------------------------------

LF_API lf_status_t lf_barrier_g(lf_group_t g) {
  return collective_g(g, args(coll::Kind::barrier, nullptr, nullptr, 0), nullptr, "lf_barrier_g", no_check);
}

LF_API lf_status_t lf_ibarrier_g(lf_group_t g, lf_request_t *req) {
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_ibarrier_g: req is NULL");
  return collective_g(g, args(coll::Kind::barrier, nullptr, nullptr, 0), req, "lf_ibarrier_g", no_check);
}

LF_API lf_status_t lf_bcast_g(lf_group_t g, void *buf, size_t bytes, int root) {
  return collective_g(g, args(coll::Kind::bcast, buf, buf, bytes, LF_UINT8, LF_SUM, root), nullptr, "lf_bcast_g",
                      bcast_check(buf, bytes, root, "lf_bcast_g"));
}

LF_API lf_status_t lf_ibcast_g(lf_group_t g, void *buf, size_t bytes, int root, lf_request_t *req) {
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_ibcast_g: req is NULL");
  return collective_g(g, args(coll::Kind::bcast, buf, buf, bytes, LF_UINT8, LF_SUM, root), req, "lf_ibcast_g",
                      bcast_check(buf, bytes, root, "lf_ibcast_g"));
}

LF_API lf_status_t lf_reduce_g(lf_group_t g, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op,
                               int root) {
  return collective_g(g, args(coll::Kind::reduce, send, recv, count, dt, op, root), nullptr, "lf_reduce_g",
                      reduce_check(send, recv, count, dt, op, root, "lf_reduce_g"));
}

LF_API lf_status_t lf_allreduce_g(lf_group_t g, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op) {
  return collective_g(g, args(coll::Kind::allreduce, send, recv, count, dt, op), nullptr, "lf_allreduce_g",
                      allreduce_check(send, recv, count, dt, op, "lf_allreduce_g"));
}

LF_API lf_status_t lf_iallreduce_g(lf_group_t g, const void *send, void *recv, size_t count, lf_dtype_t dt, lf_op_t op,
                                   lf_request_t *req) {
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_iallreduce_g: req is NULL");
  return collective_g(g, args(coll::Kind::allreduce, send, recv, count, dt, op), req, "lf_iallreduce_g",
                      allreduce_check(send, recv, count, dt, op, "lf_iallreduce_g"));
}

LF_API lf_status_t lf_allgather_g(lf_group_t g, const void *send, size_t bytes_per_rank, void *recv) {
  return collective_g(g, args(coll::Kind::allgather, send, recv, bytes_per_rank), nullptr, "lf_allgather_g",
                      blocks_check(send, bytes_per_rank, recv, "lf_allgather_g"));
}

LF_API lf_status_t lf_alltoall_g(lf_group_t g, const void *send, size_t bytes_per_rank, void *recv) {
  return collective_g(g, args(coll::Kind::alltoall, send, recv, bytes_per_rank), nullptr, "lf_alltoall_g",
                      blocks_check(send, bytes_per_rank, recv, "lf_alltoall_g"));
}
