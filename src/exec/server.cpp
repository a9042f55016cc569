#include "exec/server.hpp"

#include <cstring>

#include "capi/capi_error.hpp"
#include "capi/capi_memory.hpp"
#include "core/config.hpp"
#include "core/log.hpp"

namespace lf::exec {

using capi::fail;
using Clock = std::chrono::steady_clock;

namespace {

thread_local OpCall *t_op = nullptr;

/// Answer the call with `st` and `text` (also the status the handler returns).
lf_status_t refuse(lf_rpc_call_t call, lf_status_t st, const std::string &text) {
  // A job stopped by its token: say which side of it flipped.
  if (st == LF_ERR_CANCELLED && lf_rpc_call_remaining_ms(call) == 0) st = LF_ERR_TIMEOUT;
  (void)lf_rpc_call_fail(call, st, text.c_str());
  return st;
}

std::string json_escape(const std::string &s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

}  // namespace

OpCall *OpCall::current(lf_exec_op_t op) noexcept {
  return op && reinterpret_cast<OpCall *>(op) == t_op ? t_op : nullptr;
}

Result<std::unique_ptr<Service>> Service::start(lf_context_t ctx, const char *listen_addr) noexcept {
  try {
    std::unique_ptr<Service> s(new Service);
    s->ctx_ = ctx;
    const std::string want = config::get_string("LF_EXEC_DEVICE");
    if (want != "cpu") {
      auto vk = vulkan_kernels();
      if (vk) {
        s->kernels_ = std::move(*vk);
      } else if (want == "vulkan") {
        return LF_FAIL(LF_ERR_UNAVAILABLE, "exec: LF_EXEC_DEVICE=vulkan, but %s", vk.error().message.c_str());
      } else {
        LF_LOG(info, "exec: built-in ops run on the CPU: %s", vk.error().message.c_str());
      }
    }
    if (!s->kernels_) s->kernels_ = std::move(*cpu_kernels());
    for (const char *name : {"add", "mul", "scale", "sum", "matmul"}) s->ops_[name] = OpDef{builtin_named(name)};
    const int64_t cap = config::get_int("LF_EXEC_CLIENT_MEM_MAX");
    s->client_cap_ = cap > 0 ? static_cast<uint64_t>(cap) : 1;
    const int64_t workers = config::get_int("LF_EXEC_WORKERS");
    s->workers_ = workers > 0 && workers <= 1024 ? static_cast<int>(workers) : 2;
    const int64_t queue = config::get_int("LF_EXEC_QUEUE_MAX");
    if (lf_status_t st = lf_shared_pool(ctx, &s->pool_); st != LF_OK)
      return LF_FAIL(st, "exec: no shared pool: %s", lf_last_error());
    s->rpc_ = std::make_unique<rpc::Server>(s->workers_, queue > 0 ? static_cast<size_t>(queue) : 1);
    Service *self = s.get();
    s->rpc_->on_drop([self](lf_channel_t ch) { self->on_drop(ch); });
    s->rpc_->add_handler(kRun, on_run, self);
    s->rpc_->add_handler(kFetch, on_fetch, self);
    s->rpc_->add_handler(kPut, on_put, self, true);
    s->rpc_->add_handler(kRelease, on_release, self, true);
    s->rpc_->add_handler(kHealth, on_health, self, true);
    if (listen_addr) {
      if (lf_status_t st = lf_listen(ctx, listen_addr, &s->listener_); st != LF_OK)
        return LF_FAIL(st, "%s", lf_last_error());
      char addr[512];
      if (lf_status_t st = lf_listener_address(s->listener_, addr, sizeof addr); st != LF_OK)
        return LF_FAIL(st, "%s", lf_last_error());
      s->address_ = addr;
      s->acceptor_ = std::thread([self] { self->accept_loop(); });
    } else {
      // The other ranks of this world: each opens its side in lf_exec_connect.
      const int me = lf_rank(ctx), n = lf_size(ctx);
      s->address_ = "rank:" + std::to_string(me);
      for (int p = 0; p < n; ++p) {
        if (p == me) continue;
        lf_channel_t ch;
        if (lf_status_t st = lf_channel_open(ctx, p, &ch); st != LF_OK)
          return LF_FAIL(st, "exec: opening the channel to rank %d: %s", p, lf_last_error());
        if (auto st = s->add_client(ch); !st) {
          lf_channel_close(ch);
          return std::unexpected(st.error());
        }
      }
    }
    return s;
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "exec: no memory to start a service");
  } catch (const std::system_error &e) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "exec: cannot start a thread: %s", e.what());
  }
}

Service::~Service() { stop(); }

void Service::stop() noexcept {
  if (stopping_.exchange(true)) return;
  if (acceptor_.joinable()) acceptor_.join();
  if (rpc_) rpc_->stop();  // flips every token, waits for running handlers
  if (listener_) lf_listener_close(listener_);
  std::unordered_map<lf_channel_t, std::shared_ptr<Client>> clients;
  std::vector<lf_channel_t> closing;
  {
    std::lock_guard g(mu_);
    clients.swap(clients_);
    closing.swap(to_close_);
    stopped_ = true;
  }
  for (auto &[ch, cl] : clients) {
    {
      std::lock_guard g(cl->mu);
      cl->dead = true;
      cl->uploads.clear();
      cl->jobs.clear();
    }
    lf_channel_close(ch);
  }
  for (lf_channel_t ch : closing) lf_channel_close(ch);
  if (pool_) lf_pool_destroy(pool_);
  pool_ = nullptr;
}

Status Service::register_op(const std::string &name, lf_exec_op_fn fn, void *user) noexcept {
  try {
    std::unique_lock g(ops_mu_);
    ops_[name] = OpDef{Builtin::none, fn, user};
    return {};
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "exec: no memory to register an op");
  }
}

std::unordered_map<std::string, OpDef> Service::ops_of(const PlanWire &p) {
  // A copy: an op re-registered while the job runs changes later jobs only.
  std::unordered_map<std::string, OpDef> defs;
  std::shared_lock g(ops_mu_);
  for (const PlanOp &op : p.ops)
    if (auto it = ops_.find(op.op); it != ops_.end()) defs.emplace(op.op, it->second);
  return defs;
}

Status Service::add_client(lf_channel_t ch) noexcept {
  try {
    auto cl = std::make_shared<Client>();
    cl->ch = ch;
    cl->by_descriptor = std::strcmp(lf_channel_transport(ch), "shm") == 0;
    cl->account = std::make_shared<Account>(client_cap_, bytes_);
    {
      std::lock_guard g(mu_);
      if (stopped_) return LF_FAIL(LF_ERR_CLOSED, "exec: the service is stopping");
      clients_[ch] = cl;
    }
    if (lf_status_t st = rpc_->serve(ch); st != LF_OK) {
      std::lock_guard g(mu_);
      clients_.erase(ch);
      return LF_FAIL(st, "exec: cannot serve a client: %s", lf_last_error());
    }
    return {};
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "exec: no memory for a client");
  }
}

void Service::accept_loop() noexcept {
  std::vector<lf_channel_t> closing;
  while (!stopping_.load()) {
    // Channels dropped a round ago: the rpc server's receiving thread has
    // re-read its list since, so nothing uses them any more.
    for (lf_channel_t ch : closing) lf_channel_close(ch);
    closing.clear();
    {
      std::lock_guard g(mu_);
      closing.swap(to_close_);
    }
    lf_channel_t ch = nullptr;
    lf_status_t st = lf_accept(listener_, 100, &ch);
    if (st == LF_OK) {
      if (auto added = add_client(ch); !added) {
        LF_LOG(warn, "exec: %s", added.error().message.c_str());
        lf_channel_close(ch);
      }
    } else if (st != LF_ERR_TIMEOUT) {
      LF_LOG(info, "exec: refused a client: %s", lf_last_error());
    }
  }
  std::lock_guard g(mu_);
  to_close_.insert(to_close_.end(), closing.begin(), closing.end());
}

void Service::on_drop(lf_channel_t ch) noexcept {
  std::shared_ptr<Client> cl;
  {
    std::lock_guard g(mu_);
    auto it = clients_.find(ch);
    if (it == clients_.end()) return;
    cl = std::move(it->second);
    clients_.erase(it);
    try {
      to_close_.push_back(ch);
    } catch (const std::bad_alloc &) {
      // The channel stays open until the service stops.
    }
  }
  std::unordered_map<uint64_t, Upload> uploads;
  std::unordered_map<uint64_t, std::unordered_map<std::string, Resident>> jobs;
  {
    std::lock_guard g(cl->mu);
    cl->dead = true;
    uploads.swap(cl->uploads);
    jobs.swap(cl->jobs);
  }
  cl->arrived.notify_all();
  LF_LOG(info, "exec: a client left; freed %zu upload(s) and %zu job(s)", uploads.size(), jobs.size());
}

std::shared_ptr<Service::Client> Service::client_of(lf_rpc_call_t call) noexcept {
  rpc::Call *c = rpc::Server::current(call);
  if (!c) return nullptr;
  std::lock_guard g(mu_);
  auto it = clients_.find(c->from->ch);
  return it == clients_.end() ? nullptr : it->second;
}

lf_status_t Service::on_put(lf_rpc_call_t call, void *self) {
  auto *s = static_cast<Service *>(self);
  auto cl = s->client_of(call);
  if (!cl) return refuse(call, LF_ERR_CLOSED, "exec: this client was dropped");
  size_t hl = 0, pl = 0;
  const void *h = lf_rpc_call_header(call, &hl);
  const void *payload = lf_rpc_call_payload(call, &pl);
  PutHeader put;
  if (const char *why = decode(h, hl, put)) return refuse(call, LF_ERR_PROTOCOL, std::string("exec: x.put: ") + why);
  if (pl > put.total - put.offset) return refuse(call, LF_ERR_PROTOCOL, "exec: x.put: the batch runs past the upload");
  std::unique_lock l(cl->mu);
  auto it = cl->uploads.find(put.tensor);
  if (it == cl->uploads.end()) {
    l.unlock();  // the pool and the account need no client lock
    auto t = Tensor::create(s->pool_, put.total, cl->account);
    if (!t) return refuse(call, t.error().code, t.error().message);
    l.lock();
    if (cl->dead) return refuse(call, LF_ERR_CLOSED, "exec: this client was dropped");
    it = cl->uploads.emplace(put.tensor, Upload{put.job, std::move(*t)}).first;
  }
  Tensor &t = *it->second.tensor;
  if (t.bytes() != put.total) return refuse(call, LF_ERR_PROTOCOL, "exec: x.put: the upload's size changed");
  l.unlock();
  if (pl) std::memcpy(reinterpret_cast<uint8_t *>(t.data()) + put.offset, payload, pl);
  if (t.filled.fetch_add(pl) + pl == t.bytes()) {
    std::lock_guard g(cl->mu);  // a waiter checks under the lock: no lost wake-up
    cl->arrived.notify_all();
  }
  return LF_OK;
}

Result<std::shared_ptr<Tensor>> Service::wait_upload(Client &cl, uint64_t id, const rpc::Call &rc) {
  std::unique_lock l(cl.mu);
  for (;;) {
    if (auto it = cl.uploads.find(id); it != cl.uploads.end()) {
      auto &t = it->second.tensor;
      if (t->filled.load() >= t->bytes()) return t;
    }
    if (cl.dead) return LF_FAIL(LF_ERR_PEER_GONE, "exec: the client left");
    if (rc.cancelled_now()) return LF_FAIL(LF_ERR_CANCELLED, "exec: the job was cancelled");
    // Cancels flip a token without notifying: look again every millisecond.
    cl.arrived.wait_for(l, std::chrono::milliseconds(1));
  }
}

lf_status_t Service::on_run(lf_rpc_call_t call, void *self) {
  auto *s = static_cast<Service *>(self);
  auto cl = s->client_of(call);
  if (!cl) return refuse(call, LF_ERR_CLOSED, "exec: this client was dropped");
  size_t hl = 0;
  const void *h = lf_rpc_call_header(call, &hl);
  PlanWire p;
  if (const char *why = decode(h, hl, p)) return refuse(call, LF_ERR_PROTOCOL, std::string("exec: x.run: ") + why);
  s->running_.fetch_add(1);
  RunResult result;
  std::string why;
  const rpc::Call &rc = *rpc::Server::current(call);
  lf_status_t st = s->run(rc, *cl, p, result, why);
  s->running_.fetch_sub(1);
  s->done_.fetch_add(1);
  {
    // The job's uploads were its inputs only; a failed job keeps nothing.
    std::lock_guard g(cl->mu);
    std::erase_if(cl->uploads, [&](const auto &u) { return u.second.job == p.job; });
  }
  if (st == LF_ERR_PEER_GONE) return st;  // nobody to answer
  if (st != LF_OK) return refuse(call, st, why);
  std::vector<uint8_t> header;
  try {
    header = encode(result);
  } catch (const std::bad_alloc &) {
    std::lock_guard g(cl->mu);
    cl->jobs.erase(p.job);
    return refuse(call, LF_ERR_NO_MEMORY, "exec: no memory for the job's answer");
  }
  return lf_rpc_call_respond(call, header.data(), header.size(), nullptr, 0);
}

lf_status_t Service::run(const rpc::Call &rc, Client &cl, const PlanWire &p, RunResult &result, std::string &why) {
  auto stop = [&why](lf_status_t st, std::string text) {
    why = std::move(text);
    return st;
  };
  Validated v;
  std::unordered_map<std::string, Resident> have;  // every tensor of the job so far
  const std::unordered_map<std::string, OpDef> defs = ops_of(p);
  auto lookup = [&defs](const std::string &n) -> const OpDef * {
    auto it = defs.find(n);
    return it == defs.end() ? nullptr : &it->second;
  };
  const std::string bad = validate(
      p, lookup,
      [&](const PlanInput &in) -> std::optional<Shape> {
        std::lock_guard g(cl.mu);
        auto j = cl.jobs.find(in.job);
        if (j == cl.jobs.end()) return std::nullopt;
        auto o = j->second.find(in.output);
        if (o == j->second.end()) return std::nullopt;
        have[in.name] = o->second;
        return o->second.shape;
      },
      v);
  if (!bad.empty()) return stop(LF_ERR_INVALID_ARG, "exec: invalid plan: " + bad);
  const CancelCheck cancelled = [&rc] { return rc.cancelled_now(); };
  std::string info = "[";
  for (size_t i : v.order) {
    const PlanOp &op = p.ops[i];
    const std::string where = "exec: op '" + op.op + "' (#" + std::to_string(i) + ")";
    OpCall oc;
    for (const auto &name : op.inputs) {
      if (!have.count(name)) {
        // An upload, arriving while earlier ops run.
        const PlanInput *in = nullptr;
        for (const auto &x : p.inputs)
          if (x.name == name) in = &x;
        auto t = wait_upload(cl, in->tensor, rc);
        if (!t) return stop(t.error().code, where + ": input '" + name + "': " + t.error().message);
        if ((*t)->bytes() != in->shape.bytes())
          return stop(LF_ERR_PROTOCOL, where + ": input '" + name + "' arrived with the wrong size");
        have[name] = Resident{in->shape, std::move(*t)};
      }
      oc.inputs.push_back(have[name]);
    }
    const OpDef *def = lookup(op.op);
    const auto t0 = Clock::now();
    Status ran;
    if (def->builtin != Builtin::none) {
      std::vector<std::optional<Shape>> shapes;
      for (const auto &r : oc.inputs) shapes.push_back(r.shape);
      std::string misfit;
      auto shape = infer_shape(def->builtin, shapes, op.attrs, misfit);
      if (!shape) return stop(LF_ERR_INVALID_ARG, where + " " + misfit);
      auto out = Tensor::create(pool_, shape->bytes(), cl.account);
      if (!out) return stop(out.error().code, where + ": " + out.error().message);
      oc.output = Resident{*shape, std::move(*out)};
      const float *a = oc.inputs[0].tensor->data();
      float *o = oc.output.tensor->data();
      const size_t n = shape->elements();
      switch (def->builtin) {
        case Builtin::add: ran = kernels_->add(a, oc.inputs[1].tensor->data(), o, n, cancelled); break;
        case Builtin::mul: ran = kernels_->mul(a, oc.inputs[1].tensor->data(), o, n, cancelled); break;
        case Builtin::scale:
          ran = kernels_->scale(a, std::strtof(attr(op.attrs, "factor")->c_str(), nullptr), o, n, cancelled);
          break;
        case Builtin::sum: ran = kernels_->sum(a, oc.inputs[0].shape.elements(), o, cancelled); break;
        case Builtin::matmul: {
          const auto &ad = oc.inputs[0].shape.dims, &bd = oc.inputs[1].shape.dims;
          ran = kernels_->matmul(a, oc.inputs[1].tensor->data(), o, static_cast<size_t>(ad[0]),
                                 static_cast<size_t>(ad[1]), static_cast<size_t>(bd[1]), cancelled);
          break;
        }
        case Builtin::none: break;
      }
    } else {
      oc.attrs = &op.attrs;
      oc.pool = pool_;
      oc.account = cl.account;
      oc.call = &rc;
      t_op = &oc;
      const lf_status_t st = def->fn(reinterpret_cast<lf_exec_op_t>(&oc), def->user);
      t_op = nullptr;
      if (st != LF_OK) {
        ran = LF_FAIL(st < 0 ? st : LF_ERR_INTERNAL, "%s", lf_last_error());
      } else if (!oc.output.tensor) {
        ran = LF_FAIL(LF_ERR_INVALID_ARG, "the op returned without an output (lf_exec_op_output)");
      }
    }
    if (!ran) {
      lf_status_t st = ran.error().code;
      if (st == LF_ERR_CANCELLED) return stop(st, where + ": stopped: the job was cancelled or its deadline passed");
      return stop(st, where + ": " + ran.error().message);
    }
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
    info += std::string(info.size() > 1 ? "," : "") + "{\"op\":\"" + op.op + "\",\"output\":\"" + op.output +
            "\",\"device\":\"" + json_escape(def->builtin != Builtin::none ? device() : "user") +
            "\",\"us\":" + std::to_string(us) + "}";
    have[op.output] = std::move(oc.output);
  }
  // Outputs that are plain uploads need their bytes too.
  std::unordered_map<std::string, Resident> keep;
  for (const auto &name : p.outputs) {
    if (!have.count(name)) {
      for (const auto &x : p.inputs)
        if (x.name == name) {
          auto t = wait_upload(cl, x.tensor, rc);
          if (!t) return stop(t.error().code, "exec: output '" + name + "': " + t.error().message);
          have[name] = Resident{x.shape, std::move(*t)};
        }
    }
    keep[name] = have[name];
    result.outputs.push_back({name, have[name].shape});
  }
  result.info = info + "]";
  if (rc.cancelled_now())
    return stop(LF_ERR_CANCELLED, "exec: the job was cancelled or its deadline passed as it finished");
  {
    std::lock_guard g(cl.mu);
    if (cl.dead) return stop(LF_ERR_PEER_GONE, "exec: the client left");  // nothing kept
    if (!keep.empty()) cl.jobs[p.job] = keep;
  }
  if (cl.by_descriptor) {
    for (size_t i = 0; i < p.outputs.size(); ++i) {
      lf_buffer_t view = capi::wrap(alias(keep[p.outputs[i]].tensor));
      lf_request_t req;
      lf_status_t st =
          view ? lf_isend_buffer(cl.ch, view, output_tag(p.job, static_cast<unsigned>(i)), &req) : LF_ERR_NO_MEMORY;
      if (st == LF_OK)
        st = lf_wait(req, nullptr);  // a descriptor: done once published
      else if (view)
        lf_free(view);
      if (st != LF_OK) {
        std::lock_guard g(cl.mu);
        cl.jobs.erase(p.job);
        return stop(st, "exec: handing over output '" + p.outputs[i] + "': " + lf_last_error());
      }
    }
  }
  return LF_OK;
}

lf_status_t Service::on_fetch(lf_rpc_call_t call, void *self) {
  auto *s = static_cast<Service *>(self);
  auto cl = s->client_of(call);
  if (!cl) return refuse(call, LF_ERR_CLOSED, "exec: this client was dropped");
  size_t hl = 0;
  const void *h = lf_rpc_call_header(call, &hl);
  FetchHeader f;
  if (const char *why = decode(h, hl, f)) return refuse(call, LF_ERR_PROTOCOL, std::string("exec: x.fetch: ") + why);
  std::shared_ptr<Tensor> t;
  {
    std::lock_guard g(cl->mu);
    auto j = cl->jobs.find(f.job);
    if (j == cl->jobs.end())
      return refuse(call, LF_ERR_CLOSED, "exec: fetch: the job was released or never kept results");
    auto o = j->second.find(f.name);
    if (o == j->second.end())
      return refuse(call, LF_ERR_NOT_FOUND, "exec: fetch: '" + f.name + "' is not an output of the job");
    t = o->second.tensor;
  }
  lf_request_t req;
  if (lf_status_t st = lf_isend(cl->ch, t->data(), t->bytes(), f.tag, &req); st != LF_OK)
    return refuse(call, st, std::string("exec: fetch: ") + lf_last_error());
  // The tensor is borrowed until the send is out; a client that died
  // breaks the channel and ends it.
  for (;;) {
    lf_status_t st = lf_wait_timeout(req, 100, nullptr);
    if (st == LF_OK) break;
    if (st != LF_ERR_TIMEOUT) return refuse(call, st, std::string("exec: fetch: ") + lf_last_error());
  }
  return LF_OK;
}

lf_status_t Service::on_release(lf_rpc_call_t call, void *self) {
  auto *s = static_cast<Service *>(self);
  auto cl = s->client_of(call);
  if (!cl) return refuse(call, LF_ERR_CLOSED, "exec: this client was dropped");
  size_t hl = 0;
  const void *h = lf_rpc_call_header(call, &hl);
  uint64_t job = 0;
  if (const char *why = decode_job_id(h, hl, job))
    return refuse(call, LF_ERR_PROTOCOL, std::string("exec: x.release: ") + why);
  std::unordered_map<std::string, Resident> gone;  // freed outside the lock
  std::lock_guard g(cl->mu);
  if (auto j = cl->jobs.find(job); j != cl->jobs.end()) {
    gone.swap(j->second);
    cl->jobs.erase(j);
  }
  std::erase_if(cl->uploads, [&](const auto &u) { return u.second.job == job; });
  return LF_OK;
}

std::string Service::health_json() {
  std::string ops;
  {
    std::shared_lock g(ops_mu_);
    for (const auto &[name, def] : ops_) ops += std::string(ops.empty() ? "" : ",") + "\"" + json_escape(name) + "\"";
  }
  size_t clients = 0;
  {
    std::lock_guard g(mu_);
    clients = clients_.size();
  }
  const uint64_t running = running_.load(), held = rpc_->held();
  const double up = std::chrono::duration<double>(Clock::now() - started_).count();
  char tail[384];
  std::snprintf(tail, sizeof tail,
                "],\"workers\":%d,\"jobs_queued\":%llu,\"jobs_running\":%llu,\"jobs_done\":%llu,"
                "\"bytes_in_use\":%llu,\"clients\":%zu,\"uptime_s\":%.3f}",
                workers_, static_cast<unsigned long long>(held > running ? held - running : 0),
                static_cast<unsigned long long>(running), static_cast<unsigned long long>(done_.load()),
                static_cast<unsigned long long>(bytes_->load()), clients, up);
  return "{\"status\":\"serving\",\"device\":\"" + json_escape(device()) + "\",\"address\":\"" + json_escape(address_) +
         "\",\"ops\":[" + ops + tail;
}

lf_status_t Service::on_health(lf_rpc_call_t call, void *self) {
  const std::string j = static_cast<Service *>(self)->health_json();
  return lf_rpc_call_respond(call, j.data(), j.size(), nullptr, 0);
}

}  // namespace lf::exec
