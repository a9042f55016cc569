#include "rpc/client.hpp"

#include "capi/capi_error.hpp"
#include "core/config.hpp"

#include <thread>

namespace lf::rpc {

using capi::fail;

Client::~Client() = default;

lf_status_t Client::call(Request &r, const char *method, const void *header, size_t header_len, const void *payload,
                         size_t payload_len, int64_t deadline_ms) noexcept {
  std::lock_guard g(mu_);
  if (broken_) return fail(broken_, "rpc client: %s", broken_why_.c_str());
  const Clock::time_point deadline = deadline_in(deadline_ms);
  r.id = next_id_++;
  r.give_up = deadline == Clock::time_point::max()
                  ? deadline
                  : deadline + std::chrono::milliseconds(config::get_int("LF_RPC_DEADLINE_GRACE_MS"));
  try {
    Prefix p;
    p.kind = Kind::request;
    p.id = r.id;
    p.remaining_ns = remaining_ns(deadline);
    r.out = make_message(p, method, header, header_len, payload, payload_len);
    pending_.emplace(r.id, &r);
    sending_.reserve(sending_.size() + 1);
  } catch (const std::bad_alloc &) {
    pending_.erase(r.id);
    return fail(LF_ERR_NO_MEMORY, "rpc client: no memory for a call");
  }
  if (lf_status_t st = send_message(ch_, r.out, &r.send); st != LF_OK) {
    pending_.erase(r.id);
    r.send = nullptr;
    return st;  // lf_last_error says why
  }
  sending_.push_back(&r);  // reserved above
  return LF_OK;
}

lf_status_t Client::wait(Request &r, int64_t timeout_ms) noexcept {
  // 0 is a test: one look (and one round of receiving, if no other thread
  // is at it), then LF_IN_PROGRESS.
  const Clock::time_point end =
      timeout_ms < 0 ? Clock::time_point::max() : Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (bool looked = false;; looked = true) {
    lf_status_t st = r.status.load(std::memory_order_acquire);
    if (st != LF_IN_PROGRESS) {
      if (st < 0) return fail(st, "%s", r.error.c_str());
      return st;
    }
    const Clock::time_point now = Clock::now();
    if (now >= r.give_up) {
      std::lock_guard g(mu_);
      if (r.status.load(std::memory_order_relaxed) == LF_IN_PROGRESS)
        complete_locked(r, LF_ERR_TIMEOUT, "rpc: no answer by the call's deadline");
      continue;
    }
    if (looked && now >= end) return LF_IN_PROGRESS;
    const Clock::time_point until = std::min(end, r.give_up);
    int64_t slice = 10;
    if (until != Clock::time_point::max())
      slice = std::max<int64_t>(
          0, std::min<int64_t>(slice, std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count()));
    if (!drive(slice) && slice > 0) {
      std::unique_lock l(mu_);
      progressed_.wait_for(l, std::chrono::milliseconds(1),
                           [&] { return r.status.load(std::memory_order_relaxed) != LF_IN_PROGRESS; });
    }
  }
}

bool Client::drive(int64_t slice_ms) noexcept {
  std::unique_lock d(drive_mu_, std::try_to_lock);
  if (!d.owns_lock()) return false;
  lf_buffer_t buf = nullptr;
  Message msg;
  lf_status_t st = inbox_.next(slice_ms, &buf, msg);
  std::lock_guard g(mu_);
  for (; st == LF_OK; st = inbox_.next(0, &buf, msg)) {
    const Prefix &p = msg.prefix;
    if (p.kind != Kind::response || p.status > 0) {
      lf_free(buf);
      fail_all_locked(LF_ERR_PROTOCOL, "rpc client: the server sent a message that is not a response");
      break;
    }
    if (p.id == 0) {  // the server dropped this client, and says why
      std::string why(reinterpret_cast<const char *>(msg.header), p.header_len);
      lf_free(buf);
      fail_all_locked(p.status < 0 ? p.status : LF_ERR_PROTOCOL, why);
      break;
    }
    auto it = pending_.find(p.id);
    if (it == pending_.end()) {  // answered after the client gave up on it, or released
      lf_free(buf);
      continue;
    }
    Request &r = *it->second;
    r.response = buf;
    r.msg = msg;
    std::string_view text;
    if (p.status < 0) text = std::string_view(reinterpret_cast<const char *>(msg.header), p.header_len);
    complete_locked(r, p.status, text);
  }
  if (st != LF_OK && st != LF_ERR_TIMEOUT && !broken_) fail_all_locked(st, "rpc: the channel broke: " + inbox_.why());
  reap_sends_locked();
  progressed_.notify_all();
  return true;
}

void Client::reap_sends_locked() noexcept {
  for (size_t i = 0; i < sending_.size();) {
    Request &r = *sending_[i];
    int done = 0;
    lf_status_t st = lf_test(r.send, &done);
    if (st == LF_OK && !done) {
      ++i;
      continue;
    }
    lf_status_t end = lf_wait(r.send, nullptr);  // frees the finished send
    r.send = nullptr;
    if (end != LF_OK && r.status.load(std::memory_order_relaxed) == LF_IN_PROGRESS && pending_.count(r.id))
      complete_locked(r, end, lf_last_error());
    sending_[i] = sending_.back();
    sending_.pop_back();
  }
}

void Client::complete_locked(Request &r, lf_status_t st, std::string_view why) noexcept {
  try {
    r.error.assign(why);
  } catch (...) {
  }
  pending_.erase(r.id);
  r.status.store(st, std::memory_order_release);
}

void Client::fail_all_locked(lf_status_t st, const std::string &why) noexcept {
  broken_ = st;
  try {
    broken_why_ = why;
  } catch (...) {
  }
  while (!pending_.empty()) complete_locked(*pending_.begin()->second, st, why);
}

lf_status_t Client::cancel(Request &r) noexcept {
  std::lock_guard g(mu_);
  if (r.status.load(std::memory_order_relaxed) != LF_IN_PROGRESS || !pending_.count(r.id) || broken_) return LF_OK;
  uint8_t msg[kPrefixSize];
  Prefix p;
  p.kind = Kind::cancel;
  p.id = r.id;
  encode_prefix(p, msg);
  // Small and eager on every transport: it leaves within the call.
  return lf_send(ch_, msg, sizeof msg, kRpcTag);
}

void Client::release(Request &r) noexcept {
  (void)cancel(r);
  std::unique_lock l(mu_);
  // A response still to come is dropped; a thread still waiting on the
  // request (it holds its own reference) wakes with LF_ERR_CLOSED.
  if (pending_.count(r.id)) complete_locked(r, LF_ERR_CLOSED, "rpc request was released");
  progressed_.notify_all();
  if (r.response) lf_free(r.response);
  r.response = nullptr;
  // The request's send reads its block and the caller's payload until it is
  // out: wait for that (a broken channel ends it at once).
  for (;;) {
    reap_sends_locked();
    if (!r.send) break;
    l.unlock();
    if (!drive(1)) std::this_thread::yield();
    l.lock();
  }
}

void Client::close() noexcept {
  std::lock_guard g(mu_);
  if (!broken_) fail_all_locked(LF_ERR_CLOSED, "rpc client was destroyed");
}

}  // namespace lf::rpc
