// Remote execution from Python (lavaflow_exec.h): ExecServer, ExecClient,
// Plan and Job. Job.fetch returns a read-only numpy array over the fetched
// view (the service's memory itself on the same host).
#include <pybind11/stl.h>

#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "context.hpp"

namespace lfpy {
namespace {

// lf_exec_wait and lf_rpc_wait treat a timeout of 0 as "no deadline" (see
// rpc.cpp): look with at least 1 ms, GIL released.
lf_status_t exec_look(lf_job_t j, int64_t t) {
  py::gil_scoped_release nogil;
  return lf_exec_wait(j, t > 0 ? t : 1);
}

std::string json_of(const char *call, const std::function<lf_status_t(char *, size_t)> &get) {
  std::string s(16 << 10, '\0');
  for (int tries = 0; tries < 4; ++tries) {
    lf_status_t st;
    {
      py::gil_scoped_release nogil;
      st = get(s.data(), s.size());
    }
    if (st == LF_OK) {
      s.resize(std::strlen(s.c_str()));
      return s;
    }
    if (st != LF_ERR_TRUNCATED) raise_status(st, call);
    s.assign(s.size() * 8, '\0');
  }
  raise_status(LF_ERR_TRUNCATED, call, "the JSON kept growing");
}

py::object loads(const std::string &json) { return py::module_::import("json").attr("loads")(json); }

// ---- server --------------------------------------------------------------------------

struct ServerState : Closable {
  lf_exec_server_t s = nullptr;
  void close_now() noexcept override {
    if (inherited()) s = nullptr;
    if (!s) return;
    lf_exec_server_t srv = s;
    s = nullptr;
    py::gil_scoped_release nogil;
    lf_exec_server_stop(srv);
  }
  ~ServerState() override { close_now(); }
};

class ExecServer {
 public:
  ExecServer(py::object ctx, const std::optional<std::string> &address) : ctx_(std::move(ctx)) {
    Context &c = ctx_.cast<Context &>();
    lf_context_t h = c.handle("ExecServer");
    lf_status_t st;
    {
      py::gil_scoped_release nogil;
      st = lf_exec_server_start(h, address ? address->c_str() : nullptr, &st_->s);
    }
    check(st, "ExecServer");
    c.add_closable(st_);
  }
  lf_exec_server_t live(const char *what) const {
    if (!st_->s) raise_status(LF_ERR_CLOSED, what, "the service was stopped");
    return st_->s;
  }
  std::string address() const {
    char buf[512];
    check(lf_exec_server_address(live("ExecServer.address"), buf, sizeof buf), "ExecServer.address");
    return buf;
  }
  std::string device() const {
    const char *d = lf_exec_server_device(live("ExecServer.device"));
    return d ? d : "";
  }
  void stop() { st_->close_now(); }
  bool stopped() const noexcept { return !st_->s; }

 private:
  py::object ctx_;
  std::shared_ptr<ServerState> st_ = std::make_shared<ServerState>();
};

// ---- client side ---------------------------------------------------------------------

struct ClientState : Closable {
  lf_exec_client_t c = nullptr;
  void close_now() noexcept override {
    if (inherited()) c = nullptr;
    if (!c) return;
    lf_exec_client_t cl = c;
    c = nullptr;
    py::gil_scoped_release nogil;
    lf_exec_disconnect(cl);
  }
  ~ClientState() override { close_now(); }
};

// A job, released (lf_exec_release) once neither the Job object nor a
// fetched view needs it; its plan's input buffers are held until then.
struct JobHandle {
  lf_job_t j = nullptr;
  std::vector<std::shared_ptr<BufferHandle>> inputs;
  std::shared_ptr<ClientState> client;
  ~JobHandle() {
    if (j) lf_exec_release(j);
  }
};

// A fetched output: read-only float32 memory, freed with the last reference.
struct FetchedView {
  std::shared_ptr<BufferHandle> buf;
  std::shared_ptr<JobHandle> job;
  size_t count = 0;
};

class Plan {
 public:
  explicit Plan(py::object ctx) : ctx_(std::move(ctx)) { check(lf_plan_create(&p_), "Plan"); }
  ~Plan() {
    if (p_) lf_plan_destroy(p_);
  }
  Plan(const Plan &) = delete;
  Plan &operator=(const Plan &) = delete;

  // A float32 array, copied once into a shared-pool buffer (which reaches a
  // same-host service by descriptor), or an lf.Buffer used as it is (then
  // `shape` is needed, and the buffer must not change until the job ends).
  Plan &input(const std::string &name, py::handle data, const std::optional<std::vector<int64_t>> &shape) {
    std::shared_ptr<BufferHandle> hold;
    std::vector<int64_t> dims;
    if (py::isinstance<Buffer>(data)) {
      Buffer &b = data.cast<Buffer &>();
      hold = b.share();
      if (!hold) raise_status(LF_ERR_CLOSED, "Plan.input", "the Buffer was freed or sent");
      if (!shape) {
        PyErr_SetString(PyExc_ValueError, "lavaflow: Plan.input: an lf.Buffer needs shape=");
        throw py::error_already_set();
      }
      dims = *shape;
    } else {
      Pinned mem = Pinned::acquire(data, false, true);
      if (mem.dtype_kind() != 'f' || mem.itemsize() != 4) {
        PyErr_SetString(PyExc_TypeError, "lavaflow: Plan.input: tensors are float32 (numpy.float32)");
        throw py::error_already_set();
      }
      dims = shape ? *shape : mem.shape();
      if (mem.size() == 0) {
        PyErr_SetString(PyExc_ValueError, "lavaflow: Plan.input: an empty tensor");
        throw py::error_already_set();
      }
      Buffer copy = ctx_.cast<Context &>().alloc(mem.size(), "host-shared", false);
      std::memcpy(copy.data(), mem.data(), mem.size());
      hold = copy.share();
    }
    check(lf_plan_input(p_, name.c_str(), hold->h, dims.data(), static_cast<int>(dims.size())), "Plan.input");
    inputs_.push_back(std::move(hold));
    return *this;
  }

  Plan &input_resident(const std::string &name, py::handle job, const std::string &output);

  Plan &op(const std::string &op_name, const std::vector<std::string> &inputs, const std::string &output,
           const py::object &attrs) {
    std::vector<const char *> names;
    for (auto &s : inputs) names.push_back(s.c_str());
    std::string a;
    if (py::isinstance<py::dict>(attrs)) {
      for (auto [k, v] : attrs.cast<py::dict>())
        a += (a.empty() ? "" : ",") + std::string(py::str(k)) + "=" + std::string(py::str(v));
    } else if (!attrs.is_none()) {
      a = attrs.cast<std::string>();
    }
    check(lf_plan_op(p_, op_name.c_str(), names.data(), static_cast<int>(names.size()), output.c_str(), a.c_str()),
          "Plan.op");
    return *this;
  }

  Plan &output(const std::string &name) {
    check(lf_plan_output(p_, name.c_str()), "Plan.output");
    return *this;
  }

  lf_plan_t handle() const noexcept { return p_; }
  const std::vector<std::shared_ptr<BufferHandle>> &inputs() const noexcept { return inputs_; }

 private:
  py::object ctx_;
  lf_plan_t p_ = nullptr;
  std::vector<std::shared_ptr<BufferHandle>> inputs_;
};

class Job {
 public:
  explicit Job(std::shared_ptr<JobHandle> h) : h_(std::move(h)) {}

  lf_job_t live(const char *what) const {
    if (!h_) raise_status(LF_ERR_CLOSED, what, "the job was released");
    return h_->j;
  }

  // None once the job ended well; raises its error otherwise.
  void wait(const py::object &timeout) {
    lf_job_t j = live("Job.wait");
    lf_status_t st = exec_look(j, 1);
    auto step = [&](int64_t t) {
      st = lf_exec_wait(j, t > 0 ? t : 1);
      return st != LF_IN_PROGRESS;
    };
    WaitEnd end = st != LF_IN_PROGRESS ? WaitEnd::done : wait_slices(nullptr, timeout_ms(timeout), step);
    if (end == WaitEnd::interrupted) throw py::error_already_set();  // the job goes on
    if (end == WaitEnd::timeout) raise_status(LF_ERR_TIMEOUT, "Job.wait", "still running (wait again or cancel)");
    if (st != LF_OK) raise_status(st, "Job");
    h_->inputs.clear();  // done with them
  }

  bool test() {
    lf_status_t st = exec_look(live("Job.test"), 1);
    return st != LF_IN_PROGRESS;
  }

  py::object fetch(const std::string &name) {
    lf_job_t j = live("Job.fetch");
    int64_t shape[8];
    int ndim = 0;
    check(lf_exec_output_shape(j, name.c_str(), shape, &ndim), "Job.fetch");
    lf_buffer_t view = nullptr;
    lf_status_t st;
    {
      py::gil_scoped_release nogil;
      st = lf_exec_fetch(j, name.c_str(), &view);
    }
    check(st, "Job.fetch");
    FetchedView fv{std::make_shared<BufferHandle>(view), h_, lf_buffer_size(view) / sizeof(float)};
    py::object holder = py::cast(std::move(fv));
    py::module_ np = py::module_::import("numpy");
    py::list dims;
    for (int i = 0; i < ndim; ++i) dims.append(shape[i]);
    // frombuffer keeps `holder` (and so the view and the job) alive; the
    // export is read-only, so is the array.
    return np.attr("frombuffer")(holder, np.attr("float32")).attr("reshape")(py::tuple(dims));
  }

  py::object info() const {
    lf_job_t j = live("Job.info");
    return loads(json_of("Job.info", [j](char *b, size_t n) { return lf_exec_job_info(j, b, n); }));
  }

  void cancel() { check(lf_exec_cancel(live("Job.cancel")), "Job.cancel"); }
  // Drops this object's hold: the job is released once no fetched array needs it.
  void release() { h_.reset(); }
  bool released() const noexcept { return !h_; }
  const std::shared_ptr<JobHandle> &handle() const noexcept { return h_; }

 private:
  std::shared_ptr<JobHandle> h_;
};

Plan &Plan::input_resident(const std::string &name, py::handle job, const std::string &output) {
  Job &jb = job.cast<Job &>();
  check(lf_plan_input_resident(p_, name.c_str(), jb.live("Plan.input_resident"), output.c_str()),
        "Plan.input_resident");
  return *this;
}

class ExecClient {
 public:
  ExecClient(py::object ctx, py::object target) : ctx_(std::move(ctx)) {
    Context &c = ctx_.cast<Context &>();
    lf_context_t h = c.handle("ExecClient");
    lf_status_t st;
    if (py::isinstance<py::int_>(target)) {
      int rank = target.cast<int>();
      py::gil_scoped_release nogil;
      st = lf_exec_connect(h, rank, &st_->c);
    } else {
      std::string addr = target.cast<std::string>();
      py::gil_scoped_release nogil;
      st = lf_exec_connect_addr(h, addr.c_str(), &st_->c);
    }
    check(st, "ExecClient");
    c.add_closable(st_);
  }

  lf_exec_client_t live(const char *what) const {
    if (!st_->c) raise_status(LF_ERR_CLOSED, what, "the client is disconnected");
    return st_->c;
  }

  std::string transport() const { return lf_exec_client_transport(live("ExecClient.transport")); }

  py::object health() const {
    lf_exec_client_t c = live("ExecClient.health");
    return loads(json_of("ExecClient.health", [c](char *b, size_t n) { return lf_exec_health(c, b, n); }));
  }

  std::unique_ptr<Job> run(Plan &plan, int64_t deadline_ms) {
    lf_exec_client_t c = live("ExecClient.run");
    if (deadline_ms < 0) {
      PyErr_SetString(PyExc_ValueError, "lavaflow: ExecClient.run: deadline_ms must be >= 0 (0: none)");
      throw py::error_already_set();
    }
    auto h = std::make_shared<JobHandle>();
    h->inputs = plan.inputs();
    h->client = st_;
    lf_status_t st;
    {
      py::gil_scoped_release nogil;  // sends the inputs
      st = lf_exec_run(c, plan.handle(), deadline_ms, &h->j);
    }
    check(st, "ExecClient.run");
    return std::make_unique<Job>(std::move(h));
  }

  void close() { st_->close_now(); }
  bool closed() const noexcept { return !st_->c; }

 private:
  py::object ctx_;
  std::shared_ptr<ClientState> st_ = std::make_shared<ClientState>();
};

}  // namespace

void bind_exec(py::module_ &m, py::class_<Context> &ctx) {
  using namespace pybind11::literals;
  py::class_<FetchedView>(m, "_FetchedView", py::buffer_protocol()).def_buffer([](FetchedView &v) {
    void *p = v.buf && v.buf->h ? lf_buffer_data(v.buf->h) : nullptr;
    static float empty = 0;
    return py::buffer_info(p ? p : &empty, sizeof(float), "f", 1, {static_cast<py::ssize_t>(v.count)},
                           {static_cast<py::ssize_t>(sizeof(float))}, true);
  });

  py::class_<ExecServer>(m, "ExecServer",
                         "An execution service in this process (lf_exec_server_start): address None serves the "
                         "other ranks of the job, else clients that connect by address (tcp needs LF_EXEC_TOKEN).")
      .def(py::init<py::object, const std::optional<std::string> &>(), "context"_a, "address"_a = py::none())
      .def_property_readonly("address", &ExecServer::address)
      .def_property_readonly("device", &ExecServer::device, "\"cpu\" or \"vulkan:<device>\".")
      .def("stop", &ExecServer::stop, "Cancel running jobs, close every client, free every tensor.")
      .def_property_readonly("stopped", &ExecServer::stopped)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](ExecServer &s, py::args) { s.stop(); });

  py::class_<Plan>(m, "Plan",
                   "A graph of float32 tensor ops to run on a service: inputs, ops, outputs. Methods return the "
                   "plan, so calls chain.")
      .def(py::init<py::object>(), "context"_a)
      .def("input", &Plan::input, "name"_a, "data"_a, "shape"_a = py::none(), py::return_value_policy::reference,
           "A float32 array (copied once into shared-pool memory) or an lf.Buffer with shape= (used in place; "
           "leave it unchanged until the job ends).")
      .def("input_resident", &Plan::input_resident, "name"_a, "job"_a, "output"_a, py::return_value_policy::reference,
           "Output `output` of an earlier, unreleased job of the same client.")
      .def("op", &Plan::op, "op"_a, "inputs"_a, "output"_a, "attrs"_a = py::none(), py::return_value_policy::reference,
           "Op `op` (add, mul, scale, sum, matmul, or one the service registered) over named tensors, defining "
           "`output`; attrs: a dict or \"key=value,...\".")
      .def("output", &Plan::output, "name"_a, py::return_value_policy::reference,
           "Keep tensor `name` on the service as a result.");

  py::class_<Job>(m, "Job", "A plan running on a service (ExecClient.run).")
      .def("wait", &Job::wait, "timeout"_a = py::none(),
           "Wait for the job (GIL released; Ctrl-C raises KeyboardInterrupt and the job goes on). Raises its error "
           "(lf.Timeout for its deadline, lf.Cancelled, lf.Error naming the failing op ...), or lf.Timeout after "
           "`timeout` seconds with the job still valid.")
      .def("test", &Job::test, "True once the job ended.")
      .def("fetch", &Job::fetch, "name"_a,
           "Output `name` of a completed job as a read-only float32 numpy array (same host: the service's memory "
           "itself, no copy). It keeps the job's result alive while it exists.")
      .def("info", &Job::info, "Status and, per op, where it ran and how long it took (a dict).")
      .def("cancel", &Job::cancel)
      .def("release", &Job::release, "Free the job's results on the service (once no fetched array still uses them).")
      .def_property_readonly("released", &Job::released)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](Job &j, py::args) { j.release(); });

  py::class_<ExecClient>(m, "ExecClient", "A client of an execution service (Context.exec_connect).")
      .def(py::init<py::object, py::object>(), "context"_a, "target"_a)
      .def_property_readonly("transport", &ExecClient::transport)
      .def("health", &ExecClient::health, "The service's health (device, ops, jobs, memory, clients, uptime).")
      .def("run", &ExecClient::run, "plan"_a, "deadline_ms"_a = 0, "Start the plan; returns an lf.Job.")
      .def("close", &ExecClient::close, "Disconnect: running jobs are cancelled on the service.")
      .def_property_readonly("closed", &ExecClient::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](ExecClient &c, py::args) { c.close(); });

  ctx.def(
         "exec_connect",
         [](py::object self, py::object target) { return std::make_unique<ExecClient>(self, std::move(target)); },
         "target"_a, "A client of the service at an address (str) or started by a rank of this job (int).")
      .def(
          "plan", [](py::object self) { return std::make_unique<Plan>(self); }, "An empty lf.Plan.");
}

}  // namespace lfpy
