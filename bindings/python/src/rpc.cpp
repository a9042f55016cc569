// Request channels from Python (lavaflow_rpc.h): RpcServer with Python
// handlers, RpcClient, RpcRequest.
//
// A Python handler runs on one of the server's threads and takes the GIL for
// its whole run: Python handlers of one process serialise on the GIL (the
// server's receiving thread does not need it, so requests keep arriving and
// cancels keep getting through while a handler runs).
#include <memory>
#include <string>
#include <vector>

#include "context.hpp"

namespace lfpy {
namespace {

// ---- server --------------------------------------------------------------------------

struct HandlerEntry {
  py::object fn;
};

struct ServerState : Closable {
  lf_rpc_server_t s = nullptr;
  std::vector<std::unique_ptr<HandlerEntry>> handlers;  // until destroy: a running call may use a replaced one
  std::vector<py::object> channels;                     // served: kept open until destroy

  void close_now() noexcept override {
    if (inherited()) s = nullptr;
    if (!s) return;
    lf_rpc_server_t srv = s;
    s = nullptr;
    {
      // Running handlers need the GIL to finish.
      py::gil_scoped_release nogil;
      lf_rpc_server_destroy(srv);
    }
    handlers.clear();
    channels.clear();
  }
  ~ServerState() override { close_now(); }
};

// The call inside a Python handler. Valid only during the handler, on its thread.
class RpcCall {
 public:
  explicit RpcCall(lf_rpc_call_t c) : c_(c) {}

  lf_rpc_call_t live(const char *what) const {
    if (!c_) raise_status(LF_ERR_CLOSED, what, "the call ended when its handler returned");
    return c_;
  }
  std::string method() const { return lf_rpc_call_method(live("RpcCall.method")); }
  py::bytes header() const {
    size_t n = 0;
    const void *p = lf_rpc_call_header(live("RpcCall.header"), &n);
    return py::bytes(static_cast<const char *>(p), n);
  }
  py::object payload() {
    lf_rpc_call_t c = live("RpcCall.payload");
    if (!payload_) {
      size_t n = 0;
      const void *p = lf_rpc_call_payload(c, &n);
      payload_ = py::reinterpret_steal<py::object>(PyMemoryView_FromMemory(
          const_cast<char *>(static_cast<const char *>(p ? p : "")), static_cast<Py_ssize_t>(n), PyBUF_READ));
      if (!payload_) throw py::error_already_set();
    }
    return payload_;
  }
  bool cancelled() const { return lf_rpc_call_cancelled(live("RpcCall.cancelled")) != 0; }
  int64_t remaining_ms() const { return lf_rpc_call_remaining_ms(live("RpcCall.remaining_ms")); }

  void respond(py::handle header, py::handle payload) {
    lf_rpc_call_t c = live("RpcCall.respond");
    Pinned h = Pinned::acquire(header, false);
    Pinned p = Pinned::acquire(payload, false);
    lf_status_t st;
    {
      py::gil_scoped_release nogil;
      st = lf_rpc_call_respond(c, h.data(), h.size(), p.data(), p.size());
    }
    check(st, "RpcCall.respond");
    responded_ = true;
  }
  void fail(int status, const std::string &message) {
    check(lf_rpc_call_fail(live("RpcCall.fail"), status, message.c_str()), "RpcCall.fail");
    responded_ = true;
  }
  bool responded() const noexcept { return responded_; }

  // The handler returned: the call and its payload go away. A view of the
  // payload kept past this point would read freed memory; say so loudly.
  void end() noexcept {
    c_ = nullptr;
    if (payload_) {
      py::object r = py::reinterpret_steal<py::object>(PyObject_CallMethod(payload_.ptr(), "release", nullptr));
      if (!r) {
        PyErr_Clear();
        PyErr_WarnEx(PyExc_RuntimeWarning,
                     "lavaflow: an rpc handler kept a view of call.payload past its return; the memory is gone "
                     "now. Copy what you keep (bytes(call.payload), numpy.array(...)).",
                     1);
        if (PyErr_Occurred()) PyErr_WriteUnraisable(nullptr);
      }
      payload_ = py::object();
    }
  }

 private:
  lf_rpc_call_t c_;
  py::object payload_;
  bool responded_ = false;
};

// The C handler for every Python handler: takes the GIL, runs fn(call), and
// answers with what it returns (None: empty; a buffer: the payload; a tuple
// (header, payload)) or with the exception it raised.
lf_status_t trampoline(lf_rpc_call_t call, void *user) {
  if (_Py_IsFinalizing()) {
    lf_rpc_call_fail(call, LF_ERR_CLOSED, "the server's Python interpreter is exiting");
    return LF_ERR_CLOSED;
  }
  py::gil_scoped_acquire gil;
  auto *h = static_cast<HandlerEntry *>(user);
  auto holder = std::make_unique<RpcCall>(call);
  RpcCall *rc = holder.get();
  py::object obj = py::cast(std::move(holder));
  lf_status_t result = LF_OK;
  try {
    py::object out = h->fn(obj);
    if (!out.is_none() && !rc->responded()) {
      if (py::isinstance<py::tuple>(out) && py::len(out) == 2) {
        py::tuple t = out;
        rc->respond(t[0], t[1]);
      } else {
        rc->respond(py::bytes(""), out);
      }
    }
  } catch (py::error_already_set &e) {
    result = status_for(e);  // < 0
    std::string text = std::string(py::str(e.type().attr("__name__"))) + ": " + std::string(py::str(e.value()));
    if (!rc->responded()) lf_rpc_call_fail(call, result, text.c_str());
  } catch (const std::exception &e) {
    result = LF_ERR_INTERNAL;
    if (!rc->responded()) lf_rpc_call_fail(call, result, e.what());
  }
  rc->end();
  return result;
}

class RpcServer {
 public:
  explicit RpcServer(int threads) {
    if (threads < 0) {
      PyErr_SetString(PyExc_ValueError, "lavaflow: RpcServer: threads must be >= 0 (0: 2)");
      throw py::error_already_set();
    }
    check(lf_rpc_server_create(threads, &st_->s), "RpcServer");
  }

  lf_rpc_server_t live(const char *what) const {
    if (!st_->s) raise_status(LF_ERR_CLOSED, what, "the server is closed");
    return st_->s;
  }

  void register_handler(const std::string &method, py::object fn) {
    lf_rpc_server_t s = live("RpcServer.register");
    if (!PyCallable_Check(fn.ptr())) {
      PyErr_SetString(PyExc_TypeError, "lavaflow: RpcServer.register: fn must be callable (fn(call))");
      throw py::error_already_set();
    }
    auto entry = std::make_unique<HandlerEntry>(HandlerEntry{std::move(fn)});
    check(lf_rpc_server_register(s, method.c_str(), trampoline, entry.get()), "RpcServer.register");
    st_->handlers.push_back(std::move(entry));
  }

  void serve(py::object channel) {
    lf_rpc_server_t s = live("RpcServer.serve");
    Channel &ch = channel.cast<Channel &>();
    lf_channel_t c = ch.raw("RpcServer.serve");
    check(lf_rpc_server_serve(s, c), "RpcServer.serve");
    if (!registered_) {
      ch.context().cast<Context &>().add_closable(st_);
      registered_ = true;
    }
    st_->channels.push_back(std::move(channel));
  }

  void close() { st_->close_now(); }
  bool closed() const noexcept { return !st_->s; }

 private:
  std::shared_ptr<ServerState> st_ = std::make_shared<ServerState>();
  bool registered_ = false;
};

// ---- client --------------------------------------------------------------------------

// lf_rpc_wait with a timeout of at least 1 ms, GIL released: lf_rpc_wait(r, 0)
// does not return at once as lavaflow_rpc.h says ("0: test") but waits for
// the end of the call (rpc::deadline_in treats 0 as no deadline), which with
// the GIL held would starve the Python handler that is to answer it.
lf_status_t rpc_look(lf_rpc_request_t r, int64_t t) {
  py::gil_scoped_release nogil;
  return lf_rpc_wait(r, t > 0 ? t : 1);
}

// One call's C request and the memory it borrows; lf_rpc_release when the
// last holder (the RpcRequest, a view of its response) lets go.
struct CallHandle {
  lf_rpc_request_t r = nullptr;
  Pinned header, payload;
  bool done = false;
  lf_status_t status = LF_OK;
  std::string error;
  ~CallHandle() {
    if (r) lf_rpc_release(r);
  }
};

struct ClientState : Closable {
  lf_rpc_client_t c = nullptr;
  py::object channel;
  std::vector<std::shared_ptr<CallHandle>> abandoned;  // dropped in flight: kept until they end

  void reap(bool all) noexcept {
    std::vector<std::shared_ptr<CallHandle>> left;
    for (auto &h : abandoned) {
      lf_status_t st = rpc_look(h->r, 1);
      if (st == LF_IN_PROGRESS && !all) left.push_back(std::move(h));
    }
    abandoned.swap(left);  // the others release here, their memory with them
  }
  void close_now() noexcept override {
    if (inherited()) c = nullptr;
    if (!c) return;
    lf_rpc_client_t cl = c;
    c = nullptr;
    {
      py::gil_scoped_release nogil;
      lf_rpc_client_destroy(cl);  // in-flight calls end with LF_ERR_CLOSED
    }
    reap(true);
    channel = py::object();
  }
  ~ClientState() override { close_now(); }
};

// A read-only export of a response's payload that keeps the call alive.
struct ResponseView {
  std::shared_ptr<CallHandle> hold;
  const void *data = nullptr;
  size_t size = 0;
};

class RpcRequest {
 public:
  RpcRequest(std::shared_ptr<ClientState> client, std::shared_ptr<CallHandle> h)
      : client_(std::move(client)), h_(std::move(h)) {}
  ~RpcRequest() {
    if (h_ && !h_->done && h_->r) {
      lf_rpc_cancel(h_->r);
      if (client_->c) {
        client_->abandoned.push_back(std::move(h_));
        client_->reap(false);
      }
    }
  }

  void finish(lf_status_t st) {
    h_->done = true;
    h_->status = st;
    if (st != LF_OK) h_->error = lf_last_error();
    h_->header.release();
    h_->payload.release();
  }

  bool test() {
    if (h_->done) return true;
    lf_status_t st = rpc_look(h_->r, 1);
    if (st == LF_IN_PROGRESS) return false;
    finish(st);
    return true;
  }

  py::object wait(const py::object &timeout) {
    if (!h_->done) {
      lf_status_t st = LF_OK;
      lf_rpc_request_t r = h_->r;
      auto step = [&](int64_t t) {  // runs without the GIL (see rpc_look)
        st = lf_rpc_wait(r, t > 0 ? t : 1);
        return st != LF_IN_PROGRESS;
      };
      st = rpc_look(r, 1);
      WaitEnd end = st != LF_IN_PROGRESS ? WaitEnd::done : wait_slices(nullptr, timeout_ms(timeout), step);
      if (end == WaitEnd::interrupted) throw py::error_already_set();  // the call goes on
      if (end == WaitEnd::timeout)
        raise_status(LF_ERR_TIMEOUT, "RpcRequest.wait", "no answer yet (the call goes on; wait again or cancel)");
      finish(st);
    }
    return response();
  }

  py::object response() {
    if (!h_->done) raise_status(LF_ERR_INVALID_ARG, "RpcRequest.response", "the call has not completed (wait first)");
    if (h_->status != LF_OK) raise_status(h_->status, "RpcRequest", h_->error);
    const void *hp = nullptr, *pp = nullptr;
    size_t hl = 0, pl = 0;
    check(lf_rpc_response(h_->r, &hp, &hl, &pp, &pl), "RpcRequest.response");
    py::object view = py::cast(ResponseView{h_, pp, pl});
    py::object mv = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(view.ptr()));
    if (!mv) throw py::error_already_set();
    return py::make_tuple(py::bytes(static_cast<const char *>(hp), hl), mv);
  }

  void cancel() {
    if (!h_->done) check(lf_rpc_cancel(h_->r), "RpcRequest.cancel");
  }
  bool done() const noexcept { return h_->done; }

 private:
  std::shared_ptr<ClientState> client_;
  std::shared_ptr<CallHandle> h_;
};

class RpcClient {
 public:
  explicit RpcClient(py::object channel) {
    Channel &ch = channel.cast<Channel &>();
    check(lf_rpc_client_create(ch.raw("RpcClient"), &st_->c), "RpcClient");
    ch.context().cast<Context &>().add_closable(st_);
    st_->channel = std::move(channel);
  }

  std::unique_ptr<RpcRequest> call(const std::string &method, py::handle header, py::handle payload,
                                   int64_t deadline_ms) {
    if (!st_->c) raise_status(LF_ERR_CLOSED, "RpcClient.call", "the client is closed");
    if (deadline_ms < 0) {
      PyErr_SetString(PyExc_ValueError, "lavaflow: RpcClient.call: deadline_ms must be >= 0 (0: none)");
      throw py::error_already_set();
    }
    if (!st_->abandoned.empty()) st_->reap(false);
    auto h = std::make_shared<CallHandle>();
    h->header = Pinned::acquire(header, false);
    h->payload = Pinned::acquire(payload, false);
    check(lf_rpc_call(st_->c, method.c_str(), h->header.data(), h->header.size(), h->payload.data(), h->payload.size(),
                      deadline_ms, &h->r),
          "RpcClient.call");
    return std::make_unique<RpcRequest>(st_, std::move(h));
  }

  void close() { st_->close_now(); }
  bool closed() const noexcept { return !st_->c; }

 private:
  std::shared_ptr<ClientState> st_ = std::make_shared<ClientState>();
};

}  // namespace

void bind_rpc(py::module_ &m) {
  using namespace pybind11::literals;
  py::class_<ResponseView>(m, "_ResponseView", py::buffer_protocol()).def_buffer([](ResponseView &v) {
    return py::buffer_info(const_cast<void *>(v.data ? v.data : static_cast<const void *>("")), 1, "B", 1,
                           {static_cast<py::ssize_t>(v.size)}, {static_cast<py::ssize_t>(1)}, true);
  });

  py::class_<RpcCall>(m, "RpcCall",
                      "One request inside its handler (valid only until the handler returns, on its thread).")
      .def_property_readonly("method", &RpcCall::method)
      .def_property_readonly("header", &RpcCall::header, "The request's header (bytes, a copy).")
      .def_property_readonly("payload", &RpcCall::payload,
                             "The request's payload: a read-only memoryview of the received message, no copy, "
                             "released when the handler returns (copy what you keep).")
      .def_property_readonly("cancelled", &RpcCall::cancelled,
                             "True once the client cancelled, the deadline passed or the server stops.")
      .def_property_readonly("remaining_ms", &RpcCall::remaining_ms, "Milliseconds to the deadline; -1: none.")
      .def("respond", &RpcCall::respond, "header"_a = py::bytes(""), "payload"_a = py::bytes(""),
           "Send the response (at most once); returning a value from the handler does the same.")
      .def("fail", &RpcCall::fail, "status"_a, "message"_a,
           "Answer with an error status (< 0, e.g. -1) and a text the client's exception carries.");

  py::class_<RpcServer>(m, "RpcServer",
                        "Serves requests on channels with Python handlers, on `threads` threads of its own (0: 2). "
                        "Each handler takes the GIL, so Python handlers of one process run one at a time.")
      .def(py::init<int>(), "threads"_a = 0)
      .def("register", &RpcServer::register_handler, "method"_a, "fn"_a,
           "fn(call) -> None | payload | (header, payload); an exception answers with an error (lf.Error: its "
           "status; ValueError/TypeError/KeyError: LF_ERR_INVALID_ARG; TimeoutError: LF_ERR_TIMEOUT; others "
           "LF_ERR_INTERNAL) and its text.")
      .def("serve", &RpcServer::serve, "channel"_a, "Serve the requests arriving on `channel` (kept open until close).")
      .def("close", &RpcServer::close, "Stop: cancel running calls, wait for their handlers, join the threads.")
      .def_property_readonly("closed", &RpcServer::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](RpcServer &s, py::args) { s.close(); });

  py::class_<RpcRequest>(m, "RpcRequest", "One call in flight (RpcClient.call).")
      .def("wait", &RpcRequest::wait, "timeout"_a = py::none(),
           "Wait (GIL released, Ctrl-C raises KeyboardInterrupt and the call goes on); returns (header: bytes, "
           "payload: read-only memoryview) or raises the call's error (lf.Timeout for its deadline, lf.Cancelled, "
           "lf.Error with the server's text ...). Raises lf.Timeout after `timeout` seconds, the call still valid.")
      .def("test", &RpcRequest::test, "True once the call ended.")
      .def_property_readonly("response", &RpcRequest::response, "(header, payload) of a completed call.")
      .def("cancel", &RpcRequest::cancel, "Ask the server to cancel (wait() tells the outcome).")
      .def_property_readonly("done", &RpcRequest::done);

  py::class_<RpcClient>(m, "RpcClient", "Calls the server at the other end of a channel.")
      .def(py::init<py::object>(), "channel"_a)
      .def("call", &RpcClient::call, "method"_a, "header"_a = py::bytes(""), "payload"_a = py::bytes(""),
           "deadline_ms"_a = 0,
           "Start a call; header and payload (any contiguous buffer or DLPack object) are held, not copied, until "
           "it ends. deadline_ms > 0 bounds it. Returns an lf.RpcRequest.")
      .def("close", &RpcClient::close, "Calls still in flight end with lf.Closed.")
      .def_property_readonly("closed", &RpcClient::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](RpcClient &c, py::args) { c.close(); });
}

}  // namespace lfpy
