// Collectives on numpy arrays (and any contiguous buffer or DLPack object):
// Context.barrier is in context.cpp; here bcast, reduce, allreduce,
// allgather, alltoall and the non-blocking ibarrier, ibcast, iallreduce.
// barrier, bcast and allreduce wait on their non-blocking forms in slices,
// so Ctrl-C gets through (the collective then completes in the background,
// its memory held until it does); reduce, allgather and alltoall have no
// non-blocking form in the C API and wait in the blocking call, GIL released.
#include <cstring>

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

template <class Fn>
lf_status_t locked_blocking(Context &ctx, Fn &&fn) {
  py::gil_scoped_release nogil;
  std::lock_guard g(ctx.coll_mutex());
  return fn();
}

}  // namespace

void bind_coll(py::class_<Context> &ctx) {
  using namespace pybind11::literals;
  ctx.def(
         "bcast",
         [](Context &c, py::object arr, int root, const py::object &timeout) {
           lf_context_t h = c.handle("Context.bcast");
           Pinned mem = Pinned::acquire(arr, true);
           lf_request_t req = nullptr;
           check(locked_blocking(c, [&] { return lf_ibcast(h, mem.data(), mem.size(), root, &req); }), "Context.bcast");
           wait_owned(c.coll_state(), req, std::move(mem), Pinned(), timeout, "Context.bcast");
           return arr;
         },
         "arr"_a, "root"_a = 0, "timeout"_a = py::none(),
         "Copy the root's `arr` into every rank's `arr` (in place, any dtype); returns arr.")
      .def(
          "allreduce",
          [](Context &c, py::object arr, const std::string &op, const py::object &out, const py::object &timeout) {
            lf_context_t h = c.handle("Context.allreduce");
            Reduction r = prepare(arr, out, op, "Context.allreduce");
            lf_request_t req = nullptr;
            const void *send = r.in_place ? LF_IN_PLACE : r.in.data();
            check(locked_blocking(c, [&] { return lf_iallreduce(h, send, r.out.data(), r.count, r.dt, r.op, &req); }),
                  "Context.allreduce");
            wait_owned(c.coll_state(), req, std::move(r.out), std::move(r.in), timeout, "Context.allreduce");
            return r.result;
          },
          "arr"_a, "op"_a = "sum", "out"_a = py::none(), "timeout"_a = py::none(),
          "Combine every rank's `arr` with op (sum, prod, min, max) into `out`, or into `arr` in place when out is "
          "None; returns the result array. Same bits on every rank.")
      .def(
          "reduce",
          [](Context &c, py::object arr, const std::string &op, int root, const py::object &out) {
            lf_context_t h = c.handle("Context.reduce");
            const bool at_root = c.rank() == root;
            // In place at the root; elsewhere the input is only read.
            Reduction r = prepare(arr, out, op, "Context.reduce", at_root);
            const void *send = r.in_place ? (at_root ? LF_IN_PLACE : r.out.data()) : r.in.data();
            void *recv = at_root ? r.out.data() : nullptr;
            check(locked_blocking(c, [&] { return lf_reduce(h, send, recv, r.count, r.dt, r.op, root); }),
                  "Context.reduce");
            return r.result;
          },
          "arr"_a, "op"_a = "sum", "root"_a = 0, "out"_a = py::none(),
          "Combine every rank's `arr` into `out` (or `arr` in place) at `root`; other ranks' arrays are left as "
          "they are. Waits in the C call (no Ctrl-C until it returns).")
      .def(
          "allgather",
          [](Context &c, py::object arr, py::object out) {
            lf_context_t h = c.handle("Context.allgather");
            if (out.is_none()) out = new_like(arr, c.size());
            Pinned in = Pinned::acquire(arr, false);
            Pinned o = Pinned::acquire(out, true);
            if (o.size() != in.size() * static_cast<size_t>(c.size()))
              value_error("Context.allgather: out holds " + std::to_string(o.size()) + " bytes, not size × " +
                          std::to_string(in.size()));
            check(locked_blocking(c, [&] { return lf_allgather(h, in.data(), in.size(), o.data()); }),
                  "Context.allgather");
            return out;
          },
          "arr"_a, "out"_a = py::none(),
          "Every rank's `arr`, stacked in rank order: out[i] is rank i's (a new array of shape (size,) + "
          "arr.shape unless given).")
      .def(
          "alltoall",
          [](Context &c, py::object arr, py::object out) {
            lf_context_t h = c.handle("Context.alltoall");
            if (out.is_none()) out = new_like(arr, 0);
            Pinned o = Pinned::acquire(out, true);
            Pinned in = Pinned::acquire(arr, false);
            const size_t n = static_cast<size_t>(c.size());
            if (in.size() != o.size() || in.size() % n)
              value_error("Context.alltoall: the input and out must be the same size, a multiple of the world's " +
                          std::to_string(n) + " blocks");
            const void *send = same_memory(in, o) ? LF_IN_PLACE : in.data();
            check(locked_blocking(c, [&] { return lf_alltoall(h, send, in.size() / n, o.data()); }),
                  "Context.alltoall");
            return out;
          },
          "arr"_a, "out"_a = py::none(),
          "Block j of this rank's `arr` (split into size blocks along its bytes) lands as block i(this rank) of "
          "rank j's out; out=arr works in place.")
      .def(
          "ibarrier",
          [](Context &c) {
            lf_context_t h = c.handle("Context.ibarrier");
            lf_request_t req = nullptr;
            check(locked_blocking(c, [&] { return lf_ibarrier(h, &req); }), "Context.ibarrier");
            return std::make_unique<Request>(c.coll_state(), req, Pinned(), false);
          },
          "A barrier as an lf.Request (wait(), test()).")
      .def(
          "ibcast",
          [](Context &c, py::object arr, int root) {
            lf_context_t h = c.handle("Context.ibcast");
            Pinned mem = Pinned::acquire(arr, true);
            lf_request_t req = nullptr;
            check(locked_blocking(c, [&] { return lf_ibcast(h, mem.data(), mem.size(), root, &req); }),
                  "Context.ibcast");
            return std::make_unique<Request>(c.coll_state(), req, std::move(mem), false);
          },
          "arr"_a, "root"_a = 0, "bcast as an lf.Request; arr is held until it completes.")
      .def(
          "iallreduce",
          [](Context &c, py::object arr, const std::string &op, const py::object &out) {
            lf_context_t h = c.handle("Context.iallreduce");
            Reduction r = prepare(arr, out, op, "Context.iallreduce");
            lf_request_t req = nullptr;
            const void *send = r.in_place ? LF_IN_PLACE : r.in.data();
            check(locked_blocking(c, [&] { return lf_iallreduce(h, send, r.out.data(), r.count, r.dt, r.op, &req); }),
                  "Context.iallreduce");
            return std::make_unique<Request>(c.coll_state(), req, std::move(r.out), false, std::move(r.in));
          },
          "arr"_a, "op"_a = "sum", "out"_a = py::none(),
          "allreduce as an lf.Request; the arrays are held until it completes.");
}

}  // namespace lfpy
