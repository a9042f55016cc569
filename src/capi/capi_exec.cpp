// The C entry points of remote execution (lavaflow_exec.h). Services,
// clients, plans and jobs are typed handles (objects.hpp); an op handle is
// valid only on the thread running that op (OpCall::current).
#include <lavaflow/lavaflow.h>
#include <lavaflow/lavaflow_exec.h>

#include <cstring>
#include <memory>

#include "capi/capi_internal.hpp"
#include "capi/capi_memory.hpp"
#include "capi/objects.hpp"
#include "exec/client.hpp"
#include "exec/server.hpp"

using namespace lf::capi;
using namespace lf::exec;

namespace {

ObjectTable<Service, HandleType::exec_server> &services() noexcept {
  static ObjectTable<Service, HandleType::exec_server> t;
  return t;
}
ObjectTable<ExecClient, HandleType::exec_client> &exec_clients() noexcept {
  static ObjectTable<ExecClient, HandleType::exec_client> t;
  return t;
}
ObjectTable<ClientPlan, HandleType::plan> &plans() noexcept {
  static ObjectTable<ClientPlan, HandleType::plan> t;
  return t;
}
ObjectTable<Job, HandleType::job> &jobs() noexcept {
  static ObjectTable<Job, HandleType::job> t;
  return t;
}

template <class T, class Table>
std::shared_ptr<T> live(Table &t, const void *h, const char *fn, const char *what) noexcept {
  auto o = t.get(h);
  if (!o) fail(LF_ERR_INVALID_ARG, "%s: not a live %s", fn, what);
  return o;
}

bool name_ok(const char *s) noexcept {
  if (!s) return false;
  const size_t n = strnlen(s, kMaxName + 1);
  return n <= kMaxName && valid_name(std::string(s, n));
}

lf_status_t shape_of(const int64_t *shape, int ndim, Shape &out, const char *fn) noexcept {
  if (ndim < 0 || ndim > kMaxDims) return fail(LF_ERR_INVALID_ARG, "%s: ndim %d is out of range (0..8)", fn, ndim);
  if (ndim && !shape) return fail(LF_ERR_INVALID_ARG, "%s: shape is NULL", fn);
  uint64_t elems = 1;
  for (int i = 0; i < ndim; ++i) {
    if (shape[i] < 0) return fail(LF_ERR_INVALID_ARG, "%s: dimension %d is negative", fn, i);
    if (shape[i] && elems > kMaxTensorBytes / 4 / static_cast<uint64_t>(shape[i]))
      return fail(LF_ERR_INVALID_ARG, "%s: the tensor is larger than 1 TiB", fn);
    elems = shape[i] ? elems * static_cast<uint64_t>(shape[i]) : 0;
  }
  out.dims.assign(shape, shape + ndim);
  return LF_OK;
}

lf_status_t from(const lf::Status &s) noexcept { return s ? LF_OK : fail(s.error()); }

}  // namespace

/* ---- service --------------------------------------------------------------------------- */

LF_API lf_status_t lf_exec_server_start(lf_context_t ctx, const char *listen_addr, lf_exec_server_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_exec_server_start: out is NULL");
    *out = nullptr;
    if (!context_of(ctx)) return fail(LF_ERR_INVALID_ARG, "lf_exec_server_start: not a live context");
    auto s = Service::start(ctx, listen_addr);
    if (!s) return fail(s.error());
    std::shared_ptr<Service> shared(std::move(*s));
    *out = services().add<lf_exec_server_t>(shared);
    if (!*out) {
      shared->stop();
      return fail(LF_ERR_NO_MEMORY, "lf_exec_server_start: no free handle");
    }
    return LF_OK;
  });
}

LF_API lf_status_t lf_exec_server_address(lf_exec_server_t s, char *buf, size_t len) {
  auto srv = live<Service>(services(), s, "lf_exec_server_address", "execution service");
  if (!srv) return LF_ERR_INVALID_ARG;
  if (!buf || len <= srv->address().size())
    return fail(LF_ERR_TRUNCATED, "lf_exec_server_address: needs %zu bytes", srv->address().size() + 1);
  std::memcpy(buf, srv->address().c_str(), srv->address().size() + 1);
  return LF_OK;
}

LF_API lf_status_t lf_exec_server_register(lf_exec_server_t s, const char *op_name, lf_exec_op_fn fn, void *user) {
  auto srv = live<Service>(services(), s, "lf_exec_server_register", "execution service");
  if (!srv) return LF_ERR_INVALID_ARG;
  if (!name_ok(op_name))
    return fail(LF_ERR_INVALID_ARG, "lf_exec_server_register: an op name is 1..63 bytes of [A-Za-z0-9_.-]");
  if (!fn) return fail(LF_ERR_INVALID_ARG, "lf_exec_server_register: fn is NULL");
  return guard([&] { return from(srv->register_op(op_name, fn, user)); });
}

LF_API const char *lf_exec_server_device(lf_exec_server_t s) {
  auto srv = services().get(s);
  return srv ? srv->device().c_str() : "";
}

LF_API lf_status_t lf_exec_server_stop(lf_exec_server_t s) {
  auto srv = services().take(s);
  if (!srv) return fail(LF_ERR_INVALID_ARG, "lf_exec_server_stop: not a live execution service");
  srv->stop();
  return LF_OK;
}

LF_API int lf_exec_op_ninputs(lf_exec_op_t op) {
  OpCall *c = OpCall::current(op);
  return c ? static_cast<int>(c->inputs.size()) : 0;
}

LF_API lf_buffer_t lf_exec_op_input(lf_exec_op_t op, int i, const int64_t **shape, int *ndim) {
  OpCall *c = OpCall::current(op);
  if (!c || i < 0 || static_cast<size_t>(i) >= c->inputs.size()) {
    fail(LF_ERR_INVALID_ARG, "lf_exec_op_input: no input %d of this op", i);
    return nullptr;
  }
  const Resident &r = c->inputs[static_cast<size_t>(i)];
  if (shape) *shape = r.shape.dims.data();
  if (ndim) *ndim = static_cast<int>(r.shape.dims.size());
  return r.tensor->handle();
}

LF_API const char *lf_exec_op_attrs(lf_exec_op_t op) {
  OpCall *c = OpCall::current(op);
  return c && c->attrs ? c->attrs->c_str() : "";
}

LF_API lf_status_t lf_exec_op_output(lf_exec_op_t op, const int64_t *shape, int ndim, lf_buffer_t *out) {
  OpCall *c = OpCall::current(op);
  if (!c) return fail(LF_ERR_INVALID_ARG, "lf_exec_op_output: not an op running on this thread");
  if (!out) return fail(LF_ERR_INVALID_ARG, "lf_exec_op_output: out is NULL");
  if (c->output.tensor) return fail(LF_ERR_INVALID_ARG, "lf_exec_op_output: the output was already allocated");
  return guard([&]() -> lf_status_t {
    Shape s;
    if (lf_status_t st = shape_of(shape, ndim, s, "lf_exec_op_output"); st != LF_OK) return st;
    auto t = Tensor::create(c->pool, s.bytes(), c->account);
    if (!t) return fail(t.error());
    c->output = Resident{std::move(s), std::move(*t)};
    *out = c->output.tensor->handle();
    return LF_OK;
  });
}

LF_API int lf_exec_op_cancelled(lf_exec_op_t op) {
  OpCall *c = OpCall::current(op);
  return !c || c->call->cancelled_now();
}

/* ---- client ---------------------------------------------------------------------------- */

namespace {

lf_status_t add_client(lf_channel_t ch, lf_exec_client_t *out) {
  auto c = ExecClient::over(ch);
  if (!c) return fail(c.error());
  *out = exec_clients().add<lf_exec_client_t>(*c);
  if (!*out) {
    (void)(*c)->disconnect();
    return fail(LF_ERR_NO_MEMORY, "lf_exec_connect: no free handle");
  }
  return LF_OK;
}

}  // namespace

LF_API lf_status_t lf_exec_connect(lf_context_t ctx, int server_rank, lf_exec_client_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_exec_connect: out is NULL");
    *out = nullptr;
    if (!context_of(ctx)) return fail(LF_ERR_INVALID_ARG, "lf_exec_connect: not a live context");
    if (server_rank < 0 || server_rank >= lf_size(ctx) || server_rank == lf_rank(ctx))
      return fail(LF_ERR_INVALID_ARG, "lf_exec_connect: rank %d is not another rank of this world", server_rank);
    lf_channel_t ch;
    if (lf_status_t st = lf_channel_open(ctx, server_rank, &ch); st != LF_OK) return st;
    return add_client(ch, out);
  });
}

LF_API lf_status_t lf_exec_connect_addr(lf_context_t ctx, const char *addr, lf_exec_client_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_exec_connect_addr: out is NULL");
    *out = nullptr;
    lf_channel_t ch;
    if (lf_status_t st = lf_connect(ctx, addr, 10000, &ch); st != LF_OK) return st;
    return add_client(ch, out);
  });
}

LF_API lf_status_t lf_exec_disconnect(lf_exec_client_t c) {
  auto cl = exec_clients().take(c);
  if (!cl) return fail(LF_ERR_INVALID_ARG, "lf_exec_disconnect: not a live execution client");
  return from(cl->disconnect());
}

LF_API const char *lf_exec_client_transport(lf_exec_client_t c) {
  auto cl = exec_clients().get(c);
  return cl ? cl->transport() : "";
}

LF_API lf_status_t lf_exec_health(lf_exec_client_t c, char *json, size_t len) {
  auto cl = live<ExecClient>(exec_clients(), c, "lf_exec_health", "execution client");
  if (!cl) return LF_ERR_INVALID_ARG;
  return guard([&]() -> lf_status_t {
    auto h = cl->health();
    if (!h) return fail(h.error());
    if (!json || len <= h->size()) return fail(LF_ERR_TRUNCATED, "lf_exec_health: needs %zu bytes", h->size() + 1);
    std::memcpy(json, h->c_str(), h->size() + 1);
    return LF_OK;
  });
}

LF_API lf_status_t lf_plan_create(lf_plan_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_plan_create: out is NULL");
    *out = plans().add<lf_plan_t>(std::make_shared<ClientPlan>());
    return *out ? LF_OK : fail(LF_ERR_NO_MEMORY, "lf_plan_create: no free handle");
  });
}

LF_API lf_status_t lf_plan_input(lf_plan_t p, const char *name, lf_buffer_t data, const int64_t *shape, int ndim) {
  auto plan = live<ClientPlan>(plans(), p, "lf_plan_input", "plan");
  if (!plan) return LF_ERR_INVALID_ARG;
  if (!name_ok(name)) return fail(LF_ERR_INVALID_ARG, "lf_plan_input: a name is 1..63 bytes of [A-Za-z0-9_.-]");
  return guard([&]() -> lf_status_t {
    ClientPlan::Input in;
    if (lf_status_t st = shape_of(shape, ndim, in.shape, "lf_plan_input"); st != LF_OK) return st;
    if (!lf_buffer_data(data))
      return fail(LF_ERR_INVALID_ARG, "lf_plan_input: '%s' is not a live buffer in host memory", name);
    if (lf_buffer_size(data) != in.shape.bytes())
      return fail(LF_ERR_INVALID_ARG, "lf_plan_input: '%s' has %zu bytes; shape %s of float32 needs %llu", name,
                  lf_buffer_size(data), in.shape.str().c_str(), static_cast<unsigned long long>(in.shape.bytes()));
    in.name = name;
    in.data = data;
    std::lock_guard g(plan->mu);
    if (plan->inputs.size() >= kMaxItems) return fail(LF_ERR_INVALID_ARG, "lf_plan_input: more than 1024 inputs");
    plan->inputs.push_back(std::move(in));
    return LF_OK;
  });
}

LF_API lf_status_t lf_plan_input_resident(lf_plan_t p, const char *name, lf_job_t job, const char *output) {
  auto plan = live<ClientPlan>(plans(), p, "lf_plan_input_resident", "plan");
  if (!plan) return LF_ERR_INVALID_ARG;
  auto j = live<Job>(jobs(), job, "lf_plan_input_resident", "job");
  if (!j) return LF_ERR_INVALID_ARG;
  if (!name_ok(name) || !name_ok(output))
    return fail(LF_ERR_INVALID_ARG, "lf_plan_input_resident: a name is 1..63 bytes of [A-Za-z0-9_.-]");
  return guard([&]() -> lf_status_t {
    ClientPlan::Input in;
    {
      std::lock_guard jg(j->mu);
      if (j->status != LF_OK)
        return fail(LF_ERR_INVALID_ARG, "lf_plan_input_resident: the job has not completed successfully");
      bool found = false;
      for (const auto &o : j->result.outputs)
        if (o.name == output) in.shape = o.shape, found = true;
      if (!found) return fail(LF_ERR_NOT_FOUND, "lf_plan_input_resident: '%s' is not an output of the job", output);
    }
    in.name = name;
    in.job = j;
    in.output = output;
    std::lock_guard g(plan->mu);
    if (plan->inputs.size() >= kMaxItems)
      return fail(LF_ERR_INVALID_ARG, "lf_plan_input_resident: more than 1024 inputs");
    plan->inputs.push_back(std::move(in));
    return LF_OK;
  });
}

LF_API lf_status_t lf_plan_op(lf_plan_t p, const char *op_name, const char *const *inputs, int ninputs,
                              const char *output, const char *attrs) {
  auto plan = live<ClientPlan>(plans(), p, "lf_plan_op", "plan");
  if (!plan) return LF_ERR_INVALID_ARG;
  if (!name_ok(op_name) || !name_ok(output))
    return fail(LF_ERR_INVALID_ARG, "lf_plan_op: op and output names are 1..63 bytes of [A-Za-z0-9_.-]");
  if (ninputs < 0 || ninputs > 255 || (ninputs && !inputs))
    return fail(LF_ERR_INVALID_ARG, "lf_plan_op: %d inputs (0..255, and a NULL array only for 0)", ninputs);
  if (attrs && strnlen(attrs, kMaxAttrs + 1) > kMaxAttrs)
    return fail(LF_ERR_INVALID_ARG, "lf_plan_op: attributes longer than %zu bytes", kMaxAttrs);
  return guard([&]() -> lf_status_t {
    PlanOp op;
    op.op = op_name;
    op.output = output;
    op.attrs = attrs ? attrs : "";
    for (int i = 0; i < ninputs; ++i) {
      if (!name_ok(inputs[i])) return fail(LF_ERR_INVALID_ARG, "lf_plan_op: input %d is not a valid name", i);
      op.inputs.emplace_back(inputs[i]);
    }
    std::lock_guard g(plan->mu);
    if (plan->ops.size() >= kMaxItems) return fail(LF_ERR_INVALID_ARG, "lf_plan_op: more than 1024 ops");
    plan->ops.push_back(std::move(op));
    return LF_OK;
  });
}

LF_API lf_status_t lf_plan_output(lf_plan_t p, const char *name) {
  auto plan = live<ClientPlan>(plans(), p, "lf_plan_output", "plan");
  if (!plan) return LF_ERR_INVALID_ARG;
  if (!name_ok(name)) return fail(LF_ERR_INVALID_ARG, "lf_plan_output: a name is 1..63 bytes of [A-Za-z0-9_.-]");
  return guard([&]() -> lf_status_t {
    std::lock_guard g(plan->mu);
    for (const auto &o : plan->outputs)
      if (o == name) return fail(LF_ERR_INVALID_ARG, "lf_plan_output: '%s' is already an output", name);
    if (plan->outputs.size() >= kMaxOutputs) return fail(LF_ERR_INVALID_ARG, "lf_plan_output: more than 255 outputs");
    plan->outputs.emplace_back(name);
    return LF_OK;
  });
}

LF_API lf_status_t lf_plan_destroy(lf_plan_t p) {
  if (!plans().take(p)) return fail(LF_ERR_INVALID_ARG, "lf_plan_destroy: not a live plan");
  return LF_OK;
}

LF_API lf_status_t lf_exec_run(lf_exec_client_t c, lf_plan_t p, int64_t deadline_ms, lf_job_t *out) {
  auto cl = live<ExecClient>(exec_clients(), c, "lf_exec_run", "execution client");
  if (!cl) return LF_ERR_INVALID_ARG;
  auto plan = live<ClientPlan>(plans(), p, "lf_exec_run", "plan");
  if (!plan) return LF_ERR_INVALID_ARG;
  if (!out) return fail(LF_ERR_INVALID_ARG, "lf_exec_run: out is NULL");
  if (deadline_ms < 0) return fail(LF_ERR_INVALID_ARG, "lf_exec_run: deadline_ms is negative");
  return guard([&]() -> lf_status_t {
    *out = nullptr;
    auto j = cl->run(*plan, deadline_ms);
    if (!j) return fail(j.error());
    *out = jobs().add<lf_job_t>(*j);
    if (!*out) {
      cl->release(*j);
      return fail(LF_ERR_NO_MEMORY, "lf_exec_run: no free handle");
    }
    return LF_OK;
  });
}

LF_API lf_status_t lf_exec_wait(lf_job_t j, int64_t timeout_ms) {
  auto job = live<Job>(jobs(), j, "lf_exec_wait", "job");
  if (!job) return LF_ERR_INVALID_ARG;
  return job->client->wait(*job, timeout_ms);
}

LF_API lf_status_t lf_exec_fetch(lf_job_t j, const char *output, lf_buffer_t *view) {
  auto job = live<Job>(jobs(), j, "lf_exec_fetch", "job");
  if (!job) return LF_ERR_INVALID_ARG;
  if (!view || !output) return fail(LF_ERR_INVALID_ARG, "lf_exec_fetch: output or view is NULL");
  return guard([&]() -> lf_status_t {
    *view = nullptr;
    auto b = job->client->fetch(*job, output);
    if (!b) return fail(b.error());
    *view = wrap(std::move(*b));
    return *view ? LF_OK : LF_ERR_NO_MEMORY;
  });
}

LF_API lf_status_t lf_exec_output_shape(lf_job_t j, const char *output, int64_t *shape, int *ndim) {
  auto job = live<Job>(jobs(), j, "lf_exec_output_shape", "job");
  if (!job) return LF_ERR_INVALID_ARG;
  if (!output || !ndim) return fail(LF_ERR_INVALID_ARG, "lf_exec_output_shape: output or ndim is NULL");
  std::lock_guard g(job->mu);
  if (job->status != LF_OK)
    return fail(LF_ERR_INVALID_ARG, "lf_exec_output_shape: the job has not completed successfully");
  for (const auto &o : job->result.outputs)
    if (o.name == output) {
      *ndim = static_cast<int>(o.shape.dims.size());
      if (shape) std::copy(o.shape.dims.begin(), o.shape.dims.end(), shape);
      return LF_OK;
    }
  return fail(LF_ERR_NOT_FOUND, "lf_exec_output_shape: '%s' is not an output of the job", output);
}

LF_API lf_status_t lf_exec_job_info(lf_job_t j, char *json, size_t len) {
  auto job = live<Job>(jobs(), j, "lf_exec_job_info", "job");
  if (!job) return LF_ERR_INVALID_ARG;
  return guard([&]() -> lf_status_t {
    std::string s;
    {
      std::lock_guard g(job->mu);
      s = "{\"job\":" + std::to_string(job->id) + ",\"status\":" + std::to_string(job->status) +
          ",\"ops\":" + (job->result.info.empty() ? "[]" : job->result.info) + "}";
    }
    if (!json || len <= s.size()) return fail(LF_ERR_TRUNCATED, "lf_exec_job_info: needs %zu bytes", s.size() + 1);
    std::memcpy(json, s.c_str(), s.size() + 1);
    return LF_OK;
  });
}

LF_API lf_status_t lf_exec_cancel(lf_job_t j) {
  auto job = live<Job>(jobs(), j, "lf_exec_cancel", "job");
  if (!job) return LF_ERR_INVALID_ARG;
  return job->client->cancel(*job);
}

LF_API lf_status_t lf_exec_release(lf_job_t j) {
  auto job = jobs().take(j);
  if (!job) return fail(LF_ERR_INVALID_ARG, "lf_exec_release: not a live job");
  job->client->release(job);
  return LF_OK;
}
