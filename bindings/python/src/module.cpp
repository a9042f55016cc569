// The lavaflow Python module (_lavaflow; the package lavaflow re-exports it):
// Context, Channel, Request, Buffer and the errors, over the C API only; the
// other files bind listeners, rpc, collectives and ingest.
#include <pybind11/stl.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "buffer.hpp"
#include "channel.hpp"
#include "context.hpp"
#include "lfpy.hpp"

namespace lfpy {
namespace {

// The C reference for bench.py, on the very channel Python uses: the same
// ping-pong written against the C API, timed here with the GIL released.
double c_pingpong(Channel &ch, size_t iters, size_t nbytes, bool first) {
  lf_channel_t c = ch.raw("_c_pingpong");
  std::vector<char> buf(nbytes ? nbytes : 1);
  lf_status_t st = LF_OK;
  double secs = 0;
  {
    py::gil_scoped_release nogil;
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < iters && st == LF_OK; ++i) {
      if (first) {
        st = lf_send(c, buf.data(), nbytes, 0);
        if (st == LF_OK) st = lf_recv(c, buf.data(), nbytes, 0, nullptr);
      } else {
        st = lf_recv(c, buf.data(), nbytes, 0, nullptr);
        if (st == LF_OK) st = lf_send(c, buf.data(), nbytes, 0);
      }
    }
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  check(st, "_c_pingpong");
  return secs;
}

// The C reference for the zero-copy figure: each side takes a shared-pool
// buffer, sends it by descriptor, receives the other's and frees it.
double c_zero_copy(Context &ctx, Channel &ch, size_t iters, size_t nbytes, bool first) {
  lf_channel_t c = ch.raw("_c_zero_copy");
  lf_pool_t pool = nullptr;
  check(lf_shared_pool(ctx.handle("_c_zero_copy"), &pool), "_c_zero_copy");
  lf_status_t st = LF_OK;
  double secs = 0;
  {
    py::gil_scoped_release nogil;
    auto send = [&] {
      lf_buffer_t b;
      lf_request_t r;
      lf_status_t s = lf_pool_acquire(pool, nbytes, &b);
      if (s == LF_OK) s = lf_isend_buffer(c, b, 0, &r);
      return s == LF_OK ? lf_wait(r, nullptr) : s;
    };
    auto recv = [&] {
      lf_request_t r;
      lf_buffer_t b = nullptr;
      lf_status_t s = lf_irecv_buffer(c, 0, &r);
      if (s == LF_OK) s = lf_wait_buffer(r, &b, nullptr);
      return s == LF_OK ? lf_free(b) : s;
    };
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < iters && st == LF_OK; ++i) {
      if (first) {
        st = send();
        if (st == LF_OK) st = recv();
      } else {
        st = recv();
        if (st == LF_OK) st = send();
      }
    }
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  check(st, "_c_zero_copy");
  return secs;
}

std::unique_ptr<Context> init() {
  lf_context_t c = nullptr;
  lf_status_t st;
  {
    py::gil_scoped_release nogil;
    st = lf_init(&c);
  }
  check(st, "lavaflow.init");
  return std::make_unique<Context>(c);
}

}  // namespace
}  // namespace lfpy

PYBIND11_MODULE(_lavaflow, m) {
  using namespace lfpy;
  using namespace pybind11::literals;
  m.doc() = "lavaflow over its C API; import the package `lavaflow`, not this module.";
  register_errors(m);
  m.attr("ANY_TAG") = py::int_(LF_ANY_TAG);
  m.def(
      "version", [] { return std::string(lf_version()); }, "The C library's version.");
  m.def("status_string", [](int st) { return std::string(lf_status_string(st)); });
  std::vector<std::string> kinds;
  for (int k = 0; k < LF_MEM_KIND_COUNT_; ++k)
    kinds.emplace_back(lf_memory_kind_string(static_cast<lf_memory_kind_t>(k)));
  m.attr("MEMORY_KINDS") = py::tuple(py::cast(kinds));

  py::class_<Buffer> buffer(m, "Buffer", py::buffer_protocol(),
                            "Memory from lavaflow's allocator or a received buffer. Supports the buffer protocol "
                            "and DLPack (1-D uint8; numpy.from_dlpack(b).view(dtype) for other types).");
  buffer.def_property_readonly("kind", &Buffer::kind)
      .def_property_readonly("requested_kind", &Buffer::requested_kind)
      .def_property_readonly("fallback_reason", &Buffer::fallback_reason)
      .def_property_readonly("nbytes", &Buffer::size)
      .def_property_readonly("address", &Buffer::address, "Host address of the memory (0 when freed).")
      .def_property_readonly("numa_node", &Buffer::numa_node)
      .def_property_readonly("freed", [](const Buffer &b) { return !b.live(); })
      .def("__len__", &Buffer::size)
      .def("__dlpack__", &Buffer::dlpack, "stream"_a = py::none())
      .def("__dlpack_device__", &Buffer::dlpack_device)
      .def("free", &Buffer::free, "Give the memory back now (DLPack consumers keep it until they let go).")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](Buffer &b, py::args) { b.free(); })
      .def("__repr__", [](const Buffer &b) {
        return "<lavaflow.Buffer " + std::to_string(b.size()) + " bytes, " + std::string(b.kind()) +
               (b.live() ? "" : ", freed") + ">";
      });
  install_buffer_protocol(buffer);

  set_signal_thread(py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>());

  py::class_<Request>(m, "Request", "A posted send, receive or non-blocking collective.")
      .def("test", &Request::test, "True once complete (wait() then returns at once).")
      .def("wait", &Request::wait, "timeout"_a = py::none(),
           "Wait (GIL released); returns the bytes moved, or the Buffer of irecv_buffer. Raises Timeout after "
           "`timeout` seconds, leaving the request valid.")
      .def("cancel", &Request::cancel, "Ask to cancel; wait() then raises Cancelled or returns normally.")
      .def_property_readonly("done", &Request::done);

  py::class_<Channel> channel(m, "Channel", "An ordered channel to one peer.");
  channel.def_property_readonly("transport", &Channel::transport)
      .def_property_readonly("reason", &Channel::reason)
      .def_property_readonly("peer", &Channel::peer)
      .def_property_readonly("closed", &Channel::closed)
      .def("status", &Channel::status, "0 while healthy, else the LF_ERR_* code that broke it.")
      .def("send", &Channel::send, "obj"_a, "tag"_a = 0, "timeout"_a = py::none())
      .def("recv", &Channel::recv, "out"_a, "tag"_a = 0, "timeout"_a = py::none())
      .def("isend", &Channel::isend, "obj"_a, "tag"_a = 0)
      .def("send_gather", &Channel::send_gather, "header"_a, "payload"_a, "tag"_a = 0, "timeout"_a = py::none(),
           "Send header then payload as one message, without joining them first (lf_isend_gather).")
      .def("isend_gather", &Channel::isend_gather, "header"_a, "payload"_a, "tag"_a = 0)
      .def("irecv", &Channel::irecv, "out"_a, "tag"_a = 0)
      .def("send_buffer", &Channel::send_buffer, "buf"_a, "tag"_a = 0, "timeout"_a = py::none())
      .def("isend_buffer", &Channel::isend_buffer, "buf"_a, "tag"_a = 0)
      .def("recv_buffer", &Channel::recv_buffer, "tag"_a = 0, "timeout"_a = py::none())
      .def("irecv_buffer", &Channel::irecv_buffer, "tag"_a = 0)
      .def("close", &Channel::close)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](Channel &c, py::args) { c.close(); });
  install_fast_methods(channel);

  py::class_<Context> context(m, "Context", "This process's membership of a lavaflow job (lavaflow.init()).");
  context.def_property_readonly("rank", &Context::rank)
      .def_property_readonly("size", &Context::size)
      .def_property_readonly("finalized", &Context::finalized)
      .def("scope", &Context::scope, "peer"_a)
      .def("scope_explain", &Context::scope_explain, "peer"_a)
      .def("location", &Context::location, "rank"_a, "The rank's location as a JSON string.")
      .def("barrier", &Context::barrier, "timeout"_a = py::none(),
           "Wait until every rank entered (GIL released, Ctrl-C raises KeyboardInterrupt; the rank has entered "
           "the barrier all the same).")
      .def(
          "open",
          [](py::object self, int peer, std::optional<std::string> transports, bool strict,
             const std::string &memory_kind, size_t message_bytes) {
            return self.cast<Context &>().open(self, peer, std::move(transports), strict, memory_kind, message_bytes);
          },
          "peer"_a, "transports"_a = py::none(), "strict"_a = false, "memory_kind"_a = "host", "message_bytes"_a = 0)
      .def(
          "connect",
          [](py::object self, const std::string &address, const py::object &timeout) {
            return self.cast<Context &>().connect(self, address, timeout);
          },
          "address"_a, "timeout"_a = py::none(),
          "A channel to the listener at `address` (lf_connect; GIL released). timeout in seconds, None: "
          "LF_CONNECT_TIMEOUT.")
      .def("alloc", &Context::alloc, "nbytes"_a, "kind"_a = "host-shared", "strict"_a = false)
      .def("progress_thread", &Context::progress_thread, "enable"_a)
      .def("finalize", &Context::finalize)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](Context &c, py::args) { c.finalize(); });

  bind_dial(m, context);
  bind_rpc(m);
  bind_coll(m, context);
  bind_ingest(m, context);
  bind_exec(m, context);

  m.def("_c_pingpong", &c_pingpong, "channel"_a, "iters"_a, "nbytes"_a, "first"_a,
        "Benchmark reference: the ping-pong in C on this channel; returns seconds.");
  m.def("_c_zero_copy", &c_zero_copy, "context"_a, "channel"_a, "iters"_a, "nbytes"_a, "first"_a,
        "Benchmark reference: the shared-pool zero-copy ping-pong in C; returns seconds.");
  m.def("_notify_next_wait", &notify_next_wait, "fd"_a,
        "Tests: the main thread's next wait writes one byte to fd once it is waiting (GIL released).");
  m.def("_set_passive_waits", &set_passive_waits, "on"_a,
        "Benchmark: False makes a waiter on a channel another thread drives spin in the library's wait, as "
        "before (default True: it only looks now and then).");
  m.def("init", &init, "Join the job (mpirun, LF_RANK/LF_SIZE/LF_BOOTSTRAP, or a world of one).");
}
