// Collectives on numpy arrays (and any contiguous buffer or DLPack object),
// over the world (Context) or a group of its ranks (Group, lf_group_t):
// barrier, bcast, reduce, allreduce, allgather, alltoall and the
// non-blocking ibarrier, ibcast, iallreduce.
// barrier, bcast and allreduce wait on their non-blocking forms in slices,
// so Ctrl-C gets through (the collective then completes in the background,
// its memory held until it does); reduce, allgather and alltoall have no
// non-blocking form in the C API and wait in the blocking call, GIL released.
#include <cstring>
#include <limits>

#include <pybind11/stl.h>

#include "context.hpp"

namespace lfpy {
namespace {

lf_dtype_t dtype_of(const Pinned &p, const char *call) {
  const size_t n = p.itemsize();
  switch (p.dtype_kind()) {
    case 'i':
      if (n == 1) return LF_INT8;
      if (n == 4) return LF_INT32;
      if (n == 8) return LF_INT64;
      break;
    case 'u':
      if (n == 1) return LF_UINT8;
      if (n == 4) return LF_UINT32;
      if (n == 8) return LF_UINT64;
      break;
    case 'f':
      if (n == 4) return LF_FLOAT32;
      if (n == 8) return LF_FLOAT64;
      break;
    default: break;
  }
  PyErr_Format(PyExc_TypeError,
               "lavaflow: %s: reductions take int8, uint8, int32, uint32, int64, uint64, float32 or float64 "
               "elements, not kind '%c' of %zu bytes",
               call, p.dtype_kind() ? p.dtype_kind() : '?', n);
  throw py::error_already_set();
}

lf_op_t op_of(const std::string &op) {
  if (op == "sum") return LF_SUM;
  if (op == "prod") return LF_PROD;
  if (op == "min") return LF_MIN;
  if (op == "max") return LF_MAX;
  PyErr_Format(PyExc_ValueError, "lavaflow: unknown op '%s' (sum, prod, min or max)", op.c_str());
  throw py::error_already_set();
}

[[noreturn]] void value_error(const std::string &what) {
  PyErr_SetString(PyExc_ValueError, ("lavaflow: " + what).c_str());
  throw py::error_already_set();
}

// A new array for `like` with `n` rows in front of its shape (allgather), or
// of its shape (alltoall); `like` must be a numpy-style array.
py::object new_like(py::handle like, long n) {
  if (!py::hasattr(like, "shape") || !py::hasattr(like, "dtype"))
    value_error("pass `out=`: the input is not an array whose shape and dtype could be copied");
  py::module_ np = py::module_::import("numpy");
  py::tuple shape = py::tuple(like.attr("shape"));
  if (n > 0) {
    py::list full;
    full.append(n);
    for (auto d : shape) full.append(d);
    shape = py::tuple(full);
  }
  return np.attr("empty")(shape, like.attr("dtype"));
}

bool same_memory(const Pinned &a, const Pinned &b) { return a.data() == b.data() && a.size() == b.size(); }

struct Reduction {
  Pinned in, out;
  py::object result;
  bool in_place = false;
  lf_dtype_t dt{};
  lf_op_t op{};
  size_t count = 0;
};

// arr (+ out): in place when out is None or is arr.
// writable: the result lands in this rank's memory (false: reduce off the root).
Reduction prepare(py::handle arr, const py::object &out, const std::string &op, const char *call,
                  bool writable = true) {
  Reduction r;
  r.op = op_of(op);
  if (out.is_none()) {
    r.out = Pinned::acquire(arr, writable, true);
    r.in_place = true;
    r.result = py::reinterpret_borrow<py::object>(arr);
  } else {
    r.in = Pinned::acquire(arr, false, true);
    r.out = Pinned::acquire(out, writable, true);
    r.result = out;
    if (same_memory(r.in, r.out)) {
      r.in.release();
      r.in_place = true;
    } else if (r.in.size() != r.out.size()) {
      value_error(std::string(call) + ": out holds " + std::to_string(r.out.size()) + " bytes, the input " +
                  std::to_string(r.in.size()));
    }
  }
  r.dt = dtype_of(r.out, call);
  if (!r.in_place && dtype_of(r.in, call) != r.dt)
    value_error(std::string(call) + ": out's dtype differs from the input's");
  r.count = r.out.size() / r.out.itemsize();
  return r;
}

// The C calls of the world and of a group, by handle type, so that one
// binding body serves Context and Group.
lf_status_t c_ibarrier(lf_context_t h, lf_request_t *r) { return lf_ibarrier(h, r); }
lf_status_t c_ibarrier(lf_group_t h, lf_request_t *r) { return lf_ibarrier_g(h, r); }
lf_status_t c_ibcast(lf_context_t h, void *b, size_t n, int root, lf_request_t *r) {
  return lf_ibcast(h, b, n, root, r);
}
lf_status_t c_ibcast(lf_group_t h, void *b, size_t n, int root, lf_request_t *r) {
  return lf_ibcast_g(h, b, n, root, r);
}
lf_status_t c_iallreduce(lf_context_t h, const void *s, void *d, size_t n, lf_dtype_t dt, lf_op_t op, lf_request_t *r) {
  return lf_iallreduce(h, s, d, n, dt, op, r);
}
lf_status_t c_iallreduce(lf_group_t h, const void *s, void *d, size_t n, lf_dtype_t dt, lf_op_t op, lf_request_t *r) {
  return lf_iallreduce_g(h, s, d, n, dt, op, r);
}
lf_status_t c_reduce(lf_context_t h, const void *s, void *d, size_t n, lf_dtype_t dt, lf_op_t op, int root) {
  return lf_reduce(h, s, d, n, dt, op, root);
}
lf_status_t c_reduce(lf_group_t h, const void *s, void *d, size_t n, lf_dtype_t dt, lf_op_t op, int root) {
  return lf_reduce_g(h, s, d, n, dt, op, root);
}
lf_status_t c_allgather(lf_context_t h, const void *s, size_t n, void *d) { return lf_allgather(h, s, n, d); }
lf_status_t c_allgather(lf_group_t h, const void *s, size_t n, void *d) { return lf_allgather_g(h, s, n, d); }
lf_status_t c_alltoall(lf_context_t h, const void *s, size_t n, void *d) { return lf_alltoall(h, s, n, d); }
lf_status_t c_alltoall(lf_group_t h, const void *s, size_t n, void *d) { return lf_alltoall_g(h, s, n, d); }

// What the binding bodies need of the world (Context) or of a Group: the
// handle, the lock that keeps one thread at a time in its collectives, the
// owner of interrupted collectives' memory, and the caller's rank and size.
struct World {
  static constexpr const char *kName = "Context";
  Context &c;
  explicit World(Context &ctx) : c(ctx) {}
  lf_context_t handle(const std::string &call) const { return c.handle(call.c_str()); }
  std::mutex &mutex() const { return c.coll_mutex(); }
  const std::shared_ptr<ChannelState> &state() const { return c.coll_state(); }
  int rank() const { return c.rank(); }
  int size() const { return c.size(); }
};

struct InGroup {
  static constexpr const char *kName = "Group";
  Group &g;
  explicit InGroup(Group &grp) : g(grp) {}
  lf_group_t handle(const std::string &call) const { return g.handle(call.c_str()); }
  std::mutex &mutex() const { return g.coll_mutex(); }
  const std::shared_ptr<ChannelState> &state() const { return g.coll_state(); }
  int rank() const { return g.rank(); }
  int size() const { return g.size(); }
};

template <class T, class Fn>
lf_status_t locked_blocking(const T &t, Fn &&fn) {
  py::gil_scoped_release nogil;
  std::lock_guard g(t.mutex());
  return fn();
}

template <class T>
std::string name_of(const char *method) {
  return std::string(T::kName) + "." + method;
}

// Bodies of the collectives, shared by Context and Group.
template <class T>
void barrier(T t, const py::object &timeout) {
  const std::string call = name_of<T>("barrier");
  auto h = t.handle(call);
  lf_request_t req = nullptr;
  check(locked_blocking(t, [&] { return c_ibarrier(h, &req); }), call.c_str());
  wait_owned(t.state(), req, Pinned(), Pinned(), timeout, call.c_str());
}

template <class T>
py::object bcast(T t, py::object arr, int root, const py::object &timeout) {
  const std::string call = name_of<T>("bcast");
  auto h = t.handle(call);
  Pinned mem = Pinned::acquire(arr, true);
  lf_request_t req = nullptr;
  check(locked_blocking(t, [&] { return c_ibcast(h, mem.data(), mem.size(), root, &req); }), call.c_str());
  wait_owned(t.state(), req, std::move(mem), Pinned(), timeout, call.c_str());
  return arr;
}

template <class T>
py::object allreduce(T t, py::object arr, const std::string &op, const py::object &out, const py::object &timeout) {
  const std::string call = name_of<T>("allreduce");
  auto h = t.handle(call);
  Reduction r = prepare(arr, out, op, call.c_str());
  lf_request_t req = nullptr;
  const void *send = r.in_place ? LF_IN_PLACE : r.in.data();
  check(locked_blocking(t, [&] { return c_iallreduce(h, send, r.out.data(), r.count, r.dt, r.op, &req); }),
        call.c_str());
  wait_owned(t.state(), req, std::move(r.out), std::move(r.in), timeout, call.c_str());
  return r.result;
}

template <class T>
py::object reduce(T t, py::object arr, const std::string &op, int root, const py::object &out) {
  const std::string call = name_of<T>("reduce");
  auto h = t.handle(call);
  const bool at_root = t.rank() == root;
  // In place at the root; elsewhere the input is only read.
  Reduction r = prepare(arr, out, op, call.c_str(), at_root);
  const void *send = r.in_place ? (at_root ? LF_IN_PLACE : r.out.data()) : r.in.data();
  void *recv = at_root ? r.out.data() : nullptr;
  check(locked_blocking(t, [&] { return c_reduce(h, send, recv, r.count, r.dt, r.op, root); }), call.c_str());
  return r.result;
}

template <class T>
py::object allgather(T t, py::object arr, py::object out) {
  const std::string call = name_of<T>("allgather");
  auto h = t.handle(call);
  // A non-member's size is still the group's: the library then reports that
  // it is not a member, rather than this a size mismatch.
  const int size = t.size();
  if (out.is_none()) out = new_like(arr, size);
  Pinned in = Pinned::acquire(arr, false);
  Pinned o = Pinned::acquire(out, true);
  if (o.size() != in.size() * static_cast<size_t>(size))
    value_error(call + ": out holds " + std::to_string(o.size()) + " bytes, not size × " + std::to_string(in.size()));
  check(locked_blocking(t, [&] { return c_allgather(h, in.data(), in.size(), o.data()); }), call.c_str());
  return out;
}

template <class T>
py::object alltoall(T t, py::object arr, py::object out) {
  const std::string call = name_of<T>("alltoall");
  auto h = t.handle(call);
  if (out.is_none()) out = new_like(arr, 0);
  Pinned o = Pinned::acquire(out, true);
  Pinned in = Pinned::acquire(arr, false);
  const size_t n = static_cast<size_t>(t.size());
  if (in.size() != o.size() || in.size() % n)
    value_error(call + ": the input and out must be the same size, a multiple of the " + std::to_string(n) + " blocks");
  const void *send = same_memory(in, o) ? LF_IN_PLACE : in.data();
  check(locked_blocking(t, [&] { return c_alltoall(h, send, in.size() / n, o.data()); }), call.c_str());
  return out;
}

template <class T>
std::unique_ptr<Request> ibarrier(T t) {
  const std::string call = name_of<T>("ibarrier");
  auto h = t.handle(call);
  lf_request_t req = nullptr;
  check(locked_blocking(t, [&] { return c_ibarrier(h, &req); }), call.c_str());
  return std::make_unique<Request>(t.state(), req, Pinned(), false);
}

template <class T>
std::unique_ptr<Request> ibcast(T t, py::object arr, int root) {
  const std::string call = name_of<T>("ibcast");
  auto h = t.handle(call);
  Pinned mem = Pinned::acquire(arr, true);
  lf_request_t req = nullptr;
  check(locked_blocking(t, [&] { return c_ibcast(h, mem.data(), mem.size(), root, &req); }), call.c_str());
  return std::make_unique<Request>(t.state(), req, std::move(mem), false);
}

template <class T>
std::unique_ptr<Request> iallreduce(T t, py::object arr, const std::string &op, const py::object &out) {
  const std::string call = name_of<T>("iallreduce");
  auto h = t.handle(call);
  Reduction r = prepare(arr, out, op, call.c_str());
  lf_request_t req = nullptr;
  const void *send = r.in_place ? LF_IN_PLACE : r.in.data();
  check(locked_blocking(t, [&] { return c_iallreduce(h, send, r.out.data(), r.count, r.dt, r.op, &req); }),
        call.c_str());
  return std::make_unique<Request>(t.state(), req, std::move(r.out), false, std::move(r.in));
}

// The collectives' methods on Context (Obj = Context, T = World) or Group.
template <class T, class Obj>
void bind_methods(py::class_<Obj> &cls) {
  using namespace pybind11::literals;
  cls.def(
         "bcast",
         [](Obj &o, py::object arr, int root, const py::object &timeout) {
           return bcast(T(o), std::move(arr), root, timeout);
         },
         "arr"_a, "root"_a = 0, "timeout"_a = py::none(),
         "Copy the root's `arr` into every rank's `arr` (in place, any dtype); returns arr.")
      .def(
          "allreduce",
          [](Obj &o, py::object arr, const std::string &op, const py::object &out, const py::object &timeout) {
            return allreduce(T(o), std::move(arr), op, out, timeout);
          },
          "arr"_a, "op"_a = "sum", "out"_a = py::none(), "timeout"_a = py::none(),
          "Combine every rank's `arr` with op (sum, prod, min, max) into `out`, or into `arr` in place when out is "
          "None; returns the result array. Same bits on every rank.")
      .def(
          "reduce",
          [](Obj &o, py::object arr, const std::string &op, int root, const py::object &out) {
            return reduce(T(o), std::move(arr), op, root, out);
          },
          "arr"_a, "op"_a = "sum", "root"_a = 0, "out"_a = py::none(),
          "Combine every rank's `arr` into `out` (or `arr` in place) at `root`; other ranks' arrays are left as "
          "they are. Waits in the C call (no Ctrl-C until it returns).")
      .def(
          "allgather", [](Obj &o, py::object arr, py::object out) { return allgather(T(o), std::move(arr), out); },
          "arr"_a, "out"_a = py::none(),
          "Every rank's `arr`, stacked in rank order: out[i] is rank i's (a new array of shape (size,) + "
          "arr.shape unless given).")
      .def(
          "alltoall", [](Obj &o, py::object arr, py::object out) { return alltoall(T(o), std::move(arr), out); },
          "arr"_a, "out"_a = py::none(),
          "Block j of this rank's `arr` (split into size blocks along its bytes) lands as block i(this rank) of "
          "rank j's out; out=arr works in place.")
      .def(
          "ibarrier", [](Obj &o) { return ibarrier(T(o)); }, "A barrier as an lf.Request (wait(), test()).")
      .def(
          "ibcast", [](Obj &o, py::object arr, int root) { return ibcast(T(o), std::move(arr), root); }, "arr"_a,
          "root"_a = 0, "bcast as an lf.Request; arr is held until it completes.")
      .def(
          "iallreduce",
          [](Obj &o, py::object arr, const std::string &op, const py::object &out) {
            return iallreduce(T(o), std::move(arr), op, out);
          },
          "arr"_a, "op"_a = "sum", "out"_a = py::none(),
          "allreduce as an lf.Request; the arrays are held until it completes.");
}

}  // namespace

void Context::barrier(const py::object &timeout) {
  // The collective barrier (lf_ibarrier) rather than the bootstrap's
  // lf_barrier: it can be waited in slices, so Ctrl-C gets through. An
  // interrupted barrier still completes in the background: this rank has
  // entered it.
  lfpy::barrier(World(*this), timeout);
}

// ---- Group ---------------------------------------------------------------------------

Group::Group(py::object ctx, lf_group_t g, std::vector<int> ranks)
    : ctx_(std::move(ctx)),
      g_(g),
      ranks_(std::move(ranks)),
      fork_gen_(fork_generation()),
      state_(std::make_shared<ChannelState>()) {
  rank_ = lf_group_rank(g);
  size_ = lf_group_size(g);
}

Group::~Group() {
  if (!g_ || fork_gen_ != fork_generation()) return;  // freed, or the parent's (fork)
  try {
    free();
  } catch (py::error_already_set &e) {
    e.discard_as_unraisable(__func__);
  }
}

lf_group_t Group::handle(const char *call) const {
  context().handle(call);  // finalized context, forked child
  if (!g_) raise_status(LF_ERR_CLOSED, call, "the group was freed");
  return g_;
}

void Group::free() {
  if (!g_) return;
  if (fork_gen_ != fork_generation()) {
    PyErr_SetString(PyExc_RuntimeError, "lavaflow: Group.free: this group belongs to the parent process (fork)");
    throw py::error_already_set();
  }
  // A member's free is collective: wait for the others in an interruptible
  // group barrier first, so that Ctrl-C gets through while a member is late
  // (the group is then still live); lf_group_free's own barrier then passes
  // at once. A non-member, or a group of a finalized context, frees at once.
  if (rank_ >= 0 && !context().finalized() && !free_barrier_posted_) {
    lf_request_t req = nullptr;
    lf_status_t st;
    {
      py::gil_scoped_release nogil;
      std::lock_guard l(mu_);
      st = lf_ibarrier_g(g_, &req);
    }
    // A failed group frees all the same: lf_group_free answers at once then.
    if (st == LF_OK) {
      // Posted once: a free() retried after Ctrl-C must not enter a second
      // barrier the other members never join.
      free_barrier_posted_ = true;
      lf_status_t wst = LF_OK;
      auto step = [&](int64_t t) {
        wst = lf_wait_timeout(req, t, nullptr);
        return wst != LF_ERR_TIMEOUT;
      };
      if (!step(0) && wait_slices(nullptr, -1, step) == WaitEnd::interrupted) {
        py::error_already_set interrupt;
        state_->adopt(req, Pinned(), false);
        throw interrupt;
      }
    }
  }
  lf_group_t g = g_;
  g_ = nullptr;
  lf_status_t st;
  {
    py::gil_scoped_release nogil;
    std::lock_guard l(mu_);
    st = lf_group_free(g);
  }
  state_->reap(true);  // queued collectives ended with LF_ERR_CLOSED
  check(st, "Group.free");
}

void bind_coll(py::module_ &m, py::class_<Context> &ctx) {
  using namespace pybind11::literals;
  bind_methods<World>(ctx);
  ctx.def(
      "group",
      [](py::object self, const std::vector<int> &ranks) {
        Context &c = self.cast<Context &>();
        lf_context_t h = c.handle("Context.group");
        if (ranks.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
          value_error("Context.group: too many ranks");
        lf_group_t g = nullptr;
        lf_status_t st;
        {
          py::gil_scoped_release nogil;
          st = lf_group_create(h, ranks.data(), static_cast<int>(ranks.size()), &g);
        }
        check(st, "Context.group");
        return std::make_unique<Group>(std::move(self), g, ranks);
      },
      "ranks"_a,
      "A Group of these world ranks, in group rank order (lf_group_create). Collective over the members, who "
      "pass the same list and create the groups they share in the same order; a rank not in the list gets a "
      "Group whose rank is -1 and whose collectives raise lf.Error. GIL released; waits in the C call.");

  py::class_<Group> group(m, "Group",
                          "Collectives over a subset of the ranks (Context.group). Each group has channels of its "
                          "own: overlapping groups never take each other's messages, and different groups' "
                          "collectives may run from different threads.");
  group.def_property_readonly("rank", &Group::rank, "This rank's rank in the group, -1 when not a member.")
      .def_property_readonly("size", &Group::size)
      .def_property_readonly("ranks", &Group::ranks, "The members' world ranks, in group rank order.")
      .def_property_readonly("member", [](const Group &g) { return g.rank() >= 0; })
      .def_property_readonly("freed", [](const Group &g) { return !g.live(); })
      .def(
          "barrier", [](Group &g, const py::object &timeout) { barrier(InGroup(g), timeout); },
          "timeout"_a = py::none(), "Wait until every member entered (GIL released, Ctrl-C raises KeyboardInterrupt).")
      .def("free", &Group::free,
           "Free the group: collective over the members (an interruptible barrier first); non-members and groups "
           "of a finalized context free at once.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](Group &g, py::args) { g.free(); })
      .def("__repr__", [](const Group &g) {
        std::string s = "<lavaflow.Group of ranks [";
        for (size_t i = 0; i < g.ranks().size(); ++i) s += (i ? ", " : "") + std::to_string(g.ranks()[i]);
        return s + "], rank " + std::to_string(g.rank()) + (g.live() ? "" : ", freed") + ">";
      });
  bind_methods<InGroup>(group);
}

}  // namespace lfpy
