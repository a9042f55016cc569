#include "exec/client.hpp"

#include <cstring>
#include <deque>

#include "capi/capi_error.hpp"
#include "capi/capi_memory.hpp"
#include "core/config.hpp"

namespace lf::exec {

using capi::fail;

namespace {

/// A fetch's bound: generous for the size, so that a stopped service is not
/// waited on forever.
int64_t fetch_deadline_ms(uint64_t bytes) noexcept { return 30000 + static_cast<int64_t>(bytes >> 20) * 100; }

/// Wait for a receive or send, ending it (cancelled) if `give_up_ms` passes.
lf_status_t finish_request(lf_request_t r, int64_t give_up_ms) noexcept {
  lf_status_t st = lf_wait_timeout(r, give_up_ms, nullptr);
  if (st != LF_ERR_TIMEOUT) return st;
  lf_cancel(r);
  (void)lf_wait(r, nullptr);
  return fail(LF_ERR_TIMEOUT, "exec: the service did not deliver in %lld ms", static_cast<long long>(give_up_ms));
}

}  // namespace

Result<std::shared_ptr<ExecClient>> ExecClient::over(lf_channel_t ch) noexcept {
  std::shared_ptr<ExecClient> c(new (std::nothrow) ExecClient);
  try {
    if (c) c->hold_ = std::make_shared<ChannelHold>(ch);
  } catch (const std::bad_alloc &) {
    c.reset();
  }
  if (!c || !c->hold_) {
    lf_channel_close(ch);
    return LF_FAIL(LF_ERR_NO_MEMORY, "exec: no memory for a client");
  }
  c->ch_ = ch;
  c->transport_ = lf_channel_transport(ch);
  c->by_descriptor_ = std::strcmp(c->transport_, "shm") == 0;
  const int64_t chunk = config::get_int("LF_EXEC_CHUNK");
  c->chunk_ = chunk > (1 << 20) ? static_cast<uint64_t>(chunk) : uint64_t{1} << 20;
  if (lf_status_t st = lf_rpc_client_create(ch, &c->rpc_); st != LF_OK) return LF_FAIL(st, "%s", lf_last_error());
  return c;
}

ExecClient::~ExecClient() { (void)disconnect(); }

Status ExecClient::check_open() noexcept {
  std::lock_guard g(mu_);
  if (closed_) return LF_FAIL(LF_ERR_CLOSED, "exec: the client is disconnected");
  return {};
}

Status ExecClient::disconnect() noexcept {
  {
    std::lock_guard g(mu_);
    if (closed_) return {};
    closed_ = true;
  }
  reap(false);
  // Closing the channel tells the service: it cancels what still runs for
  // us and frees every tensor we held. Views still out keep it open.
  if (rpc_) lf_rpc_client_destroy(rpc_);
  rpc_ = nullptr;
  std::shared_ptr<ChannelHold> hold;
  {
    std::lock_guard g(mu_);
    hold.swap(hold_);
  }
  std::lock_guard g(mu_);
  parked_.clear();
  return {};
}

Result<std::string> ExecClient::health() noexcept {
  if (auto st = check_open(); !st) return std::unexpected(st.error());
  reap(false);
  lf_rpc_request_t r;
  if (lf_status_t st = lf_rpc_call(rpc_, kHealth, nullptr, 0, nullptr, 0, 5000, &r); st != LF_OK)
    return LF_FAIL(st, "%s", lf_last_error());
  lf_status_t st = lf_rpc_wait(r, -1);
  std::string out;
  if (st == LF_OK) {
    const void *h = nullptr;
    size_t hl = 0;
    st = lf_rpc_response(r, &h, &hl, nullptr, nullptr);
    if (st == LF_OK) out.assign(static_cast<const char *>(h), hl);
  }
  std::string why = st == LF_OK ? "" : lf_last_error();
  lf_rpc_release(r);
  if (st != LF_OK) return LF_FAIL(st, "exec: health: %s", why.c_str());
  return out;
}

Result<std::shared_ptr<Job>> ExecClient::run(ClientPlan &p, int64_t deadline_ms) noexcept {
  if (auto st = check_open(); !st) return std::unexpected(st.error());
  reap(false);
  try {
    auto j = std::make_shared<Job>();
    j->client = shared_from_this();
    PlanWire w;
    struct Upload {
      const uint8_t *data;
      uint64_t bytes, tensor;
    };
    std::vector<Upload> uploads;
    {
      std::lock_guard pg(p.mu);
      std::lock_guard g(mu_);
      j->id = next_job_++;
      w.job = j->id;
      for (const auto &in : p.inputs) {
        PlanInput pi;
        pi.name = in.name;
        pi.shape = in.shape;
        if (in.job) {
          if (in.job->client.get() != this)
            return LF_FAIL(LF_ERR_INVALID_ARG, "exec: input '%s' is a result of another client's job", in.name.c_str());
          pi.resident = true;
          pi.job = in.job->id;
          pi.output = in.output;
        } else {
          pi.tensor = next_tensor_++;
          const void *d = lf_buffer_data(in.data);
          if (!d && in.shape.bytes())
            return LF_FAIL(LF_ERR_INVALID_ARG, "exec: input '%s' is not a live host buffer", in.name.c_str());
          uploads.push_back({static_cast<const uint8_t *>(d), in.shape.bytes(), pi.tensor});
        }
        w.inputs.push_back(std::move(pi));
      }
      w.ops = p.ops;
      w.outputs = p.outputs;
    }
    j->plan = encode(w);
    j->uploads = !uploads.empty();
    std::lock_guard jg(j->mu);
    if (by_descriptor_) {
      for (size_t i = 0; i < w.outputs.size(); ++i) {
        lf_request_t rx;
        if (lf_status_t st = lf_irecv_buffer(ch_, output_tag(j->id, static_cast<unsigned>(i)), &rx); st != LF_OK) {
          settle_locked(*j, st);
          return LF_FAIL(st, "%s", lf_last_error());
        }
        j->handover.push_back(rx);
      }
    }
    if (lf_status_t st = lf_rpc_call(rpc_, kRun, j->plan.data(), j->plan.size(), nullptr, 0, deadline_ms, &j->run);
        st != LF_OK) {
      std::string why = lf_last_error();
      settle_locked(*j, st);
      return LF_FAIL(st, "%s", why.c_str());
    }
    // Uploads: batches of chunk_ bytes, two in flight.
    struct Put {
      std::vector<uint8_t> header;
      lf_rpc_request_t r = nullptr;
    };
    std::deque<Put> flying;
    lf_status_t failed = LF_OK;
    std::string why;
    auto finish_oldest = [&] {
      lf_status_t st = lf_rpc_wait(flying.front().r, -1);
      if (st != LF_OK && failed == LF_OK) failed = st, why = lf_last_error();
      lf_rpc_release(flying.front().r);
      flying.pop_front();
    };
    for (const Upload &u : uploads) {
      uint64_t off = 0;
      do {
        const uint64_t n = std::min(chunk_, u.bytes - off);
        if (flying.size() == 2) finish_oldest();
        if (failed != LF_OK) break;
        Put put;
        put.header = encode(PutHeader{j->id, u.tensor, u.bytes, off});
        flying.push_back(std::move(put));
        Put &q = flying.back();
        if (lf_status_t st = lf_rpc_call(rpc_, kPut, q.header.data(), q.header.size(), u.data + off, n, 0, &q.r);
            st != LF_OK) {
          failed = st, why = lf_last_error();
          flying.pop_back();
          break;
        }
        off += n;
      } while (off < u.bytes);
      if (failed != LF_OK) break;
    }
    while (!flying.empty()) finish_oldest();
    if (failed != LF_OK) {
      lf_rpc_cancel(j->run);
      (void)lf_rpc_wait(j->run, -1);
      settle_locked(*j, failed);
      send_release(*j);
      return LF_FAIL(failed, "exec: uploading the job's inputs: %s", why.c_str());
    }
    return j;
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "exec: no memory to run a plan");
  }
}

void ExecClient::settle_locked(Job &j, lf_status_t st) noexcept {
  if (j.status != LF_IN_PROGRESS) return;
  std::string why = st == LF_OK ? "" : lf_last_error();
  if (st == LF_OK) {
    const void *h = nullptr;
    size_t hl = 0;
    st = lf_rpc_response(j.run, &h, &hl, nullptr, nullptr);
    if (st == LF_OK) {
      if (const char *bad = decode(h, hl, j.result)) {
        st = LF_ERR_PROTOCOL;
        why = std::string("exec: the service's answer is malformed: ") + bad;
      } else if (by_descriptor_ && j.result.outputs.size() != j.handover.size()) {
        st = LF_ERR_PROTOCOL;
        why = "exec: the service answered with a different number of outputs";
      }
    } else {
      why = lf_last_error();
    }
  }
  // The service handed the outputs over before it answered, on the same
  // ordered channel: they are here (or the channel broke).
  for (size_t i = 0; i < j.handover.size(); ++i) {
    lf_request_t rx = j.handover[i];
    if (st != LF_OK) {
      lf_cancel(rx);
      lf_buffer_t b = nullptr;
      if (lf_wait_buffer(rx, &b, nullptr) == LF_OK) lf_free(b);
      continue;
    }
    lf_buffer_t b = nullptr;
    lf_status_t got = lf_wait_buffer_timeout(rx, 10000, &b, nullptr);
    if (got == LF_ERR_TIMEOUT) {
      lf_cancel(rx);
      if (lf_wait_buffer(rx, &b, nullptr) != LF_OK) b = nullptr;
    }
    if (!b) {
      st = got == LF_OK || got == LF_ERR_TIMEOUT ? LF_ERR_PROTOCOL : got;
      why = "exec: the service did not hand over output '" + j.result.outputs[i].name + "'";
      continue;
    }
    std::shared_ptr<Buffer> view(capi::unwrap_take(b).release());
    if (view && view->size() != j.result.outputs[i].shape.bytes() && j.result.outputs[i].shape.bytes() != 0) {
      st = LF_ERR_PROTOCOL;
      why = "exec: output '" + j.result.outputs[i].name + "' arrived with the wrong size";
      continue;
    }
    try {
      j.outputs.push_back(std::move(view));
    } catch (const std::bad_alloc &) {
      st = LF_ERR_NO_MEMORY, why = "exec: no memory to keep an output";
    }
  }
  j.handover.clear();
  if (st != LF_OK) j.outputs.clear();
  if (j.run) lf_rpc_release(j.run);
  j.run = nullptr;
  j.status = st;
  try {
    j.error = why;
  } catch (...) {
  }
}

lf_status_t ExecClient::wait(Job &j, int64_t timeout_ms) noexcept {
  std::unique_lock l(j.mu);
  if (j.released) return fail(LF_ERR_CLOSED, "exec: the job was released");
  if (j.status == LF_IN_PROGRESS) {
    lf_rpc_request_t r = j.run;
    l.unlock();  // others may wait on the same job; the rpc layer drives for all
    lf_status_t st = lf_rpc_wait(r, timeout_ms);
    if (st == LF_IN_PROGRESS) return st;
    l.lock();
    settle_locked(j, st);
  }
  if (j.status == LF_OK) return LF_OK;
  return fail(j.status, "%s", j.error.c_str());
}

Result<BufferPtr> ExecClient::fetch(Job &j, const std::string &output) noexcept {
  std::unique_lock l(j.mu);
  if (j.released) return LF_FAIL(LF_ERR_CLOSED, "exec: fetch: the job was released");
  if (j.status == LF_IN_PROGRESS)
    return LF_FAIL(LF_ERR_INVALID_ARG, "exec: fetch: the job has not completed (lf_exec_wait)");
  if (j.status != LF_OK)
    return LF_FAIL(LF_ERR_CLOSED, "exec: fetch: the job ended with %s; it kept no results", status_string(j.status));
  size_t i = 0;
  while (i < j.result.outputs.size() && j.result.outputs[i].name != output) ++i;
  if (i == j.result.outputs.size())
    return LF_FAIL(LF_ERR_NOT_FOUND, "exec: fetch: '%s' is not an output of the job", output.c_str());
  if (by_descriptor_) {
    std::shared_ptr<ChannelHold> hold;
    {
      std::lock_guard g(mu_);
      hold = hold_;
    }
    if (!hold) return LF_FAIL(LF_ERR_CLOSED, "exec: fetch: the client is disconnected");
    return segments_.view(j.outputs[i], std::move(hold));
  }
  const uint64_t bytes = j.result.outputs[i].shape.bytes();
  const uint64_t id = j.id;
  l.unlock();
  auto pages = SealedPages::create(bytes);
  if (!pages) return std::unexpected(pages.error());
  if (bytes) {
    uint64_t tag;
    {
      std::lock_guard g(mu_);
      if (closed_) return LF_FAIL(LF_ERR_CLOSED, "exec: the client is disconnected");
      tag = (uint64_t{0x4c465846} << 32) | (next_fetch_++ & 0xffffffff);
    }
    lf_request_t rx;
    if (lf_status_t st = lf_irecv(ch_, (*pages)->data(), bytes, tag, &rx); st != LF_OK)
      return LF_FAIL(st, "%s", lf_last_error());
    std::vector<uint8_t> h;
    try {
      h = encode(FetchHeader{id, tag, output});
    } catch (const std::bad_alloc &) {
      lf_cancel(rx);
      (void)lf_wait(rx, nullptr);
      return LF_FAIL(LF_ERR_NO_MEMORY, "exec: no memory to fetch");
    }
    lf_rpc_request_t r;
    lf_status_t st = lf_rpc_call(rpc_, kFetch, h.data(), h.size(), nullptr, 0, fetch_deadline_ms(bytes), &r);
    if (st == LF_OK) {
      st = lf_rpc_wait(r, -1);
      std::string why = st == LF_OK ? "" : lf_last_error();
      lf_rpc_release(r);
      if (st != LF_OK) fail(st, "%s", why.c_str());
    }
    if (st != LF_OK) {
      std::string why = lf_last_error();
      lf_cancel(rx);
      (void)lf_wait(rx, nullptr);
      return LF_FAIL(st, "%s", why.c_str());
    }
    // The service answers after its send is out, so the bytes are here or close.
    if (lf_status_t got = finish_request(rx, fetch_deadline_ms(bytes)); got != LF_OK)
      return LF_FAIL(got, "exec: fetch: %s", lf_last_error());
  }
  if (auto s = (*pages)->seal(); !s) return std::unexpected(s.error());
  return BufferPtr(std::move(*pages));
}

lf_status_t ExecClient::cancel(Job &j) noexcept {
  std::lock_guard l(j.mu);
  if (j.released) return fail(LF_ERR_CLOSED, "exec: the job was released");
  if (j.status == LF_IN_PROGRESS && j.run) lf_rpc_cancel(j.run);
  return LF_OK;
}

void ExecClient::release(const std::shared_ptr<Job> &j) noexcept {
  bool park = false;
  {
    std::lock_guard l(j->mu);
    if (j->released) return;
    j->released = true;
    j->outputs.clear();  // the service's blocks go back as our views go
    if (j->status == LF_IN_PROGRESS) {
      lf_rpc_cancel(j->run);
      park = true;
    }
  }
  if (!park) {
    // Also after a failure: an upload that arrived after its job ended
    // would stay on the service otherwise.
    send_release(*j);
    return;
  }
  try {
    std::lock_guard g(mu_);
    parked_.push_back(j);
  } catch (const std::bad_alloc &) {
    std::lock_guard l(j->mu);
    (void)lf_rpc_wait(j->run, -1);
    settle_locked(*j, lf_rpc_wait(j->run, 0));
    j->outputs.clear();
    send_release(*j);
  }
  reap(false);
}

void ExecClient::send_release(const Job &j) noexcept {
  if (!j.uploads && (j.status != LF_OK || j.result.outputs.empty())) return;
  const uint64_t id = j.id;
  std::lock_guard g(mu_);
  if (closed_ || !rpc_) return;  // the service frees everything when the channel closes
  try {
    const std::vector<uint8_t> h = encode_job_id(id);
    lf_rpc_request_t r;
    // Answered inline by the service the moment it arrives: releasing the
    // request now (which sends a cancel behind it) cannot stop it.
    if (lf_rpc_call(rpc_, kRelease, h.data(), h.size(), nullptr, 0, 0, &r) == LF_OK) lf_rpc_release(r);
  } catch (const std::bad_alloc &) {
  }
}

void ExecClient::reap(bool block) noexcept {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard g(mu_);
    jobs.swap(parked_);
  }
  std::vector<std::shared_ptr<Job>> still;
  for (auto &j : jobs) {
    std::lock_guard l(j->mu);
    lf_status_t st = lf_rpc_wait(j->run, block ? -1 : 0);
    if (st == LF_IN_PROGRESS) {
      still.push_back(j);
      continue;
    }
    settle_locked(*j, st);
    j->outputs.clear();
    send_release(*j);
  }
  std::lock_guard g(mu_);
  parked_.insert(parked_.end(), still.begin(), still.end());
}

}  // namespace lf::exec
