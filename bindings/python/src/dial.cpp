// lavaflow.Listener over lf_listen/lf_accept: channels by address.
#include "context.hpp"

namespace lfpy {
namespace {

struct ListenerState : Closable {
  lf_listener_t l = nullptr;
  void close_now() noexcept override {
    if (l && !inherited()) lf_listener_close(l);
    l = nullptr;
  }
  ~ListenerState() override { close_now(); }
};

class Listener {
 public:
  Listener(py::object ctx, const std::string &address) : ctx_obj_(std::move(ctx)) {
    Context &c = ctx_obj_.cast<Context &>();
    lf_context_t h = c.handle("lavaflow.listen");
    lf_status_t st;
    {
      py::gil_scoped_release nogil;
      st = lf_listen(h, address.c_str(), &state_->l);
    }
    check(st, "lavaflow.listen");
    char buf[512];
    check(lf_listener_address(state_->l, buf, sizeof buf), "lavaflow.listen");
    address_ = buf;
    c.add_closable(state_);
  }

  const std::string &address() const noexcept { return address_; }
  bool closed() const noexcept { return !state_->l; }

  // lf_accept with the GIL released. Not in slices: lf_accept's deadline
  // also bounds the handshake of a client it has accepted, so short slices
  // would refuse clients that connect near a slice's end.
  std::unique_ptr<Channel> accept(const py::object &timeout) {
    if (!state_->l) raise_status(LF_ERR_CLOSED, "Listener.accept", "the listener is closed");
    lf_channel_t ch = nullptr;
    const int64_t ms = timeout_ms(timeout);
    lf_listener_t l = state_->l;
    lf_status_t st;
    {
      py::gil_scoped_release nogil;
      st = lf_accept(l, ms, &ch);
    }
    check(st, "Listener.accept");
    return ctx_obj_.cast<Context &>().adopt_channel(ctx_obj_, ch);
  }

  void close() { state_->close_now(); }

 private:
  py::object ctx_obj_;
  std::shared_ptr<ListenerState> state_ = std::make_shared<ListenerState>();
  std::string address_;
};

}  // namespace

void bind_dial(py::module_ &m, py::class_<Context> &ctx) {
  using namespace pybind11::literals;
  py::class_<Listener>(m, "Listener",
                       "Accepts channels from processes outside the job, by address (lavaflow.listen). "
                       "Connections are authenticated with LF_EXEC_TOKEN / LF_EXEC_TOKEN_FILE (required on tcp); on "
                       "a unix socket the client must be the same user.")
      .def(py::init<py::object, const std::string &>(), "context"_a, "address"_a)
      .def_property_readonly("address", &Listener::address, "The address clients connect to (port filled in).")
      .def_property_readonly("closed", &Listener::closed)
      .def("accept", &Listener::accept, "timeout"_a = py::none(),
           "The next authenticated client as an lf.Channel (peer -1); raises Timeout after `timeout` seconds. "
           "The GIL is released; Ctrl-C is seen once it returns (lf_accept cannot be woken), so pass a timeout "
           "and loop where Ctrl-C matters.")
      .def("close", &Listener::close, "Stop listening; accepted channels stay open.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](Listener &l, py::args) { l.close(); });
  m.def(
      "listen", [](py::object c, const std::string &address) { return std::make_unique<Listener>(c, address); },
      "context"_a, "address"_a,
      "Listen on \"tcp://HOST:PORT\" (port 0: any), \"unix:/path\" or \"unix:@name\"; returns an lf.Listener.");
  ctx.def(
      "listen", [](py::object self, const std::string &address) { return std::make_unique<Listener>(self, address); },
      "address"_a, "lavaflow.listen(ctx, address).");
}

}  // namespace lfpy
