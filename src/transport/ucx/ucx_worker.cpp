#include "transport/ucx/ucx_worker.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/config.hpp"
#include "core/log.hpp"

namespace lf::ucx {

Settings Settings::from_config() {
  Settings s;
  s.rndv_thresh = static_cast<size_t>(std::max<int64_t>(0, config::get_int("LF_UCX_RNDV_THRESH")));
  s.peer_errors = config::get_bool("LF_UCX_PEER_ERRORS");
  s.keepalive_s = config::get_seconds("LF_UCX_KEEPALIVE");
  s.linger_s = config::get_seconds("LF_UCX_LINGER");
  return s;
}

Error ucs_error(ucs_status_t st, const char *what, int peer) {
  lf_status_t code = LF_ERR_IO;
  switch (st) {
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CANCELED:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED: code = LF_ERR_PEER_GONE; break;
    case UCS_ERR_NO_MEMORY: code = LF_ERR_NO_MEMORY; break;
    case UCS_ERR_MESSAGE_TRUNCATED: code = LF_ERR_TRUNCATED; break;
    default: break;
  }
  return make_error(code, "ucx: %s (rank %d): %s", what, peer, ucs_status_string(st));
}

// ---- connections -------------------------------------------------------------------------

Conn::~Conn() {
  std::lock_guard g(worker->mu);
  worker->took(ready.size());
  for (Arrival &a : ready) worker->release(a);
  for (auto &[seq, a] : ahead) worker->release(a);
}

void Conn::fail(lf_status_t code, const char *fmt, ...) noexcept {
  if (broken()) return;
  char text[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  error.code = code;
  try {
    error.message = text;
  } catch (...) {
  }
}

void Conn::cancel_fetches() noexcept {
  // A cancelled request completes later, in ucp_worker_progress, where its
  // callback fails the op and frees the slot.
  for (RecvSlot *s = recvs, *n; s; s = n) {
    n = s->next;  // the callback may run inside the cancel and free s
    if (s->req) ucp_request_cancel(worker->worker, s->req);
  }
}

void Conn::arrive(Arrival &&a) noexcept {
  switch (check_sequence(recv_next, a.seq)) {
    case SeqVerdict::deliver: break;
    case SeqVerdict::hold:
      try {
        if (ahead.emplace(a.seq, std::move(a)).second) return;
      } catch (const std::bad_alloc &) {
        worker->release(a);
        return fail(LF_ERR_NO_MEMORY, "ucx: no memory to hold a message that arrived out of order");
      }
      worker->release(a);
      return fail(LF_ERR_PROTOCOL, "ucx: rank %d sent a message sequence number twice", peer);
    case SeqVerdict::duplicate:
      worker->release(a);
      return fail(LF_ERR_PROTOCOL, "ucx: rank %d repeated an old sequence number", peer);
    case SeqVerdict::too_far:
      worker->release(a);
      return fail(LF_ERR_PROTOCOL, "ucx: rank %d skipped too many sequence numbers", peer);
  }
  try {
    ready.push_back(std::move(a));
    ++recv_next;
    worker->queued(1);
    for (auto it = ahead.begin(); it != ahead.end() && it->first == recv_next; it = ahead.erase(it)) {
      ready.push_back(std::move(it->second));
      ++recv_next;
      worker->queued(1);
    }
  } catch (const std::bad_alloc &) {
    fail(LF_ERR_NO_MEMORY, "ucx: no memory to queue an arrived message");
  }
}

// ---- the worker ---------------------------------------------------------------------------

namespace {

/// ucp_init with lavaflow's settings.
Result<ucp_context_h> init_context(const Settings &s) {
  const char *tls = std::getenv("UCX_TLS");
  const bool shm_lanes = !tls || std::strstr(tls, "sm") || std::strstr(tls, "posix") || std::strstr(tls, "sysv") ||
                         std::strstr(tls, "all") || tls[0] == '^';
  if (s.peer_errors && shm_lanes) {
    // UCX's shared-memory transports advertise peer-failure support only
    // when asked to (1.13 defaults: n), and peer error mode leaves out every
    // lane without it: with UCX_TLS=sm there would be no lane at all. Their
    // detection is keepalive's process check. A user's own setting stays
    // (these are read from the environment: ucp_config_modify does not reach
    // memory-domain settings in 1.13).
    setenv("UCX_POSIX_ERROR_HANDLING", "y", 0);
    setenv("UCX_SYSV_ERROR_HANDLING", "y", 0);
  }
  ucp_config_t *cfg = nullptr;
  if (ucs_status_t st = ucp_config_read(nullptr, nullptr, &cfg); st != UCS_OK)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx: ucp_config_read: %s", ucs_status_string(st));
  if (!std::getenv("UCX_KEEPALIVE_INTERVAL") && s.keepalive_s > 0) {
    // The default (tens of seconds) is far longer than lavaflow promises for
    // noticing a dead peer.
    char v[32];
    std::snprintf(v, sizeof v, "%.3fs", s.keepalive_s);
    (void)ucp_config_modify(cfg, "KEEPALIVE_INTERVAL", v);
  }
  ucp_params_t p{};
  p.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED | UCP_PARAM_FIELD_NAME;
  p.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  p.mt_workers_shared = 0;
  p.name = "lavaflow";
  ucp_context_h ctx = nullptr;
  ucs_status_t st = ucp_init(&p, cfg, &ctx);
  ucp_config_release(cfg);
  if (st != UCS_OK) return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx: ucp_init: %s", ucs_status_string(st));
  return ctx;
}

/// The resources UCX opened for `ctx` (UCX_TLS applied), and whether any
/// reaches another process.
Result<Lanes> context_lanes(ucp_context_h ctx) {
  Lanes lanes;
  char *text = nullptr;
  size_t len = 0;
  if (FILE *f = open_memstream(&text, &len)) {
    ucp_context_print_info(ctx, f);
    std::fclose(f);
    lanes = Lanes::parse_context_info(std::string(text, len));
    std::free(text);
  }
  if (lanes.peer_tls().empty())
    return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx: no UCX transport reaches another process (UCX_TLS=%s; resources: %s)",
                   std::getenv("UCX_TLS") ? std::getenv("UCX_TLS") : "all",
                   lanes.text().empty() ? "none" : lanes.text().c_str());
  return lanes;
}

}  // namespace

Result<Lanes> Worker::probe(const Settings &s) {
  auto ctx = init_context(s);
  if (!ctx) return std::unexpected(ctx.error());
  auto lanes = context_lanes(*ctx);
  ucp_cleanup(*ctx);
  return lanes;
}

Result<std::shared_ptr<Worker>> Worker::create(const Settings &s) {
  std::shared_ptr<Worker> w(new Worker(s));
  auto ctx = init_context(s);
  if (!ctx) return std::unexpected(ctx.error());
  w->context = *ctx;
  auto lanes = context_lanes(w->context);
  if (!lanes) return std::unexpected(lanes.error());
  w->lanes_ = std::move(*lanes);
  ucs_status_t st;
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // serialised by mu
  if ((st = ucp_worker_create(w->context, &wp, &w->worker)) != UCS_OK) {
    w->worker = nullptr;
    return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx: ucp_worker_create: %s", ucs_status_string(st));
  }
  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS | UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  if ((st = ucp_worker_query(w->worker, &attr)) != UCS_OK)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx: ucp_worker_query: %s", ucs_status_string(st));
  w->address_.assign(static_cast<const char *>(static_cast<const void *>(attr.address)), attr.address_length);
  ucp_worker_release_address(w->worker, attr.address);
  if (attr.max_am_header < kHeaderSize)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx: active message headers are limited to %zu bytes", attr.max_am_header);
  if ((st = ucp_worker_get_efd(w->worker, &w->efd)) != UCS_OK)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx: ucp_worker_get_efd: %s", ucs_status_string(st));

  ucp_am_handler_param_t hp{};
  hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS | UCP_AM_HANDLER_PARAM_FIELD_CB |
                  UCP_AM_HANDLER_PARAM_FIELD_ARG;
  hp.id = kAmId;
  hp.flags = UCP_AM_FLAG_WHOLE_MSG;
  hp.cb = &Worker::on_am;
  hp.arg = w.get();
  if ((st = ucp_worker_set_am_recv_handler(w->worker, &hp)) != UCS_OK)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx: ucp_worker_set_am_recv_handler: %s", ucs_status_string(st));
  return w;
}

Worker::~Worker() {
  if (worker) {
    std::lock_guard g(mu);
    for (auto &[key, list] : early_)
      for (auto &[h, a] : list) release(a);
    early_.clear();
    // Closing endpoints that never finished: ucp_worker_destroy releases them.
    for (auto &[c, req] : closing_)
      if (req) ucp_request_free(req);
    closing_.clear();
    ucp_worker_destroy(worker);
  }
  if (context) ucp_cleanup(context);
}

void Worker::shutdown() noexcept {
  std::lock_guard g(mu);
  // Endpoints still flushing keep their connections (and through them this
  // worker) alive: let go, so that the worker can be destroyed.
  for (auto &[c, req] : closing_)
    if (req) ucp_request_free(req);
  closing_.clear();
}

void Worker::progress_locked() noexcept {
  // Once per call: on tcp lanes every ucp_worker_progress polls UCX's
  // epoll set (a system call), and the callers come back soon anyway.
  (void)ucp_worker_progress(worker);
  if (!closing_.empty()) reap_closing();
}

uint32_t Worker::next_channel(int peer) {
  std::lock_guard g(mu);
  return counted_[peer]++;
}

void Worker::attach(Conn &c) {
  const auto key = std::make_pair(c.peer, c.channel);
  conns_[key] = &c;
  auto it = early_.find(key);
  if (it == early_.end()) return;
  for (auto &[h, a] : it->second) c.arrive(std::move(a));
  early_.erase(it);
}

void Worker::detach(Conn &c) noexcept { conns_.erase(std::make_pair(c.peer, c.channel)); }

void Worker::keep_closing(std::shared_ptr<Conn> c, void *close_req) { closing_.emplace_back(std::move(c), close_req); }

void Worker::reap_closing() noexcept {
  for (size_t i = 0; i < closing_.size();) {
    void *req = closing_[i].second;
    if (req && ucp_request_check_status(req) == UCS_INPROGRESS) {
      ++i;
      continue;
    }
    if (req) ucp_request_free(req);
    closing_[i] = std::move(closing_.back());
    closing_.pop_back();
  }
}

void Worker::release(Arrival &a) noexcept {
  if (a.hold == Arrival::Hold::rndv && a.desc) ucp_am_data_release(worker, a.desc);
  a.desc = nullptr;
  a.copy.reset();
}

Error Worker::take_stray_error() noexcept {
  Error e = std::move(stray_);
  stray_ = Error{LF_OK, {}};
  return e;
}

ucs_status_t Worker::on_am(void *arg, const void *header, size_t header_length, void *data, size_t length,
                           const ucp_am_recv_param_t *param) {
  auto *w = static_cast<Worker *>(arg);
  const bool rndv = param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV;
  Header h;
  if (const char *why = decode_header(header, header_length, length, static_cast<uint32_t>(w->size_), &h)) {
    uint32_t rank, channel;
    auto it = peek_route(header, header_length, &rank, &channel)
                  ? w->conns_.find(std::make_pair(static_cast<int>(rank), channel))
                  : w->conns_.end();
    if (it != w->conns_.end()) {
      it->second->fail(LF_ERR_PROTOCOL, "ucx: rank %u sent a bad message: %s", rank, why);
    } else {
      LF_LOG(warn, "ucx: dropped an active message: %s", why);
      if (w->stray_.code == LF_OK) w->stray_ = make_error(LF_ERR_PROTOCOL, "ucx: %s", why);
    }
    return UCS_OK;  // UCX drops the message (for a rendezvous: without fetching it)
  }
  if (h.token != w->token_) {
    // Not from this job: dropped without touching the channel it names, so
    // that a stranger cannot break a channel by making up a message.
    LF_LOG(warn, "ucx: dropped an active message without this job's token (claims rank %u, channel %u)", h.rank,
           h.channel);
    if (w->stray_.code == LF_OK) w->stray_ = make_error(LF_ERR_PROTOCOL, "ucx: a message without this job's token");
    return UCS_OK;
  }
  Arrival a;
  a.type = h.type;
  a.seq = h.seq;
  a.tag = h.tag;
  a.size = length;
  if (rndv) {
    a.hold = Arrival::Hold::rndv;
    a.desc = data;
  } else {
    a.copy.reset(new (std::nothrow) char[length ? length : 1]);
    if (!a.copy) {
      auto it = w->conns_.find(std::make_pair(static_cast<int>(h.rank), h.channel));
      if (it != w->conns_.end())
        it->second->fail(LF_ERR_NO_MEMORY, "ucx: no memory for an arrived message of %zu bytes", length);
      return UCS_OK;
    }
    if (length) std::memcpy(a.copy.get(), data, length);
  }
  w->route(h, std::move(a));
  return rndv ? UCS_INPROGRESS : UCS_OK;
}

void Worker::route(const Header &h, Arrival &&a) noexcept {
  const auto key = std::make_pair(static_cast<int>(h.rank), h.channel);
  if (auto it = conns_.find(key); it != conns_.end()) {
    Conn &c = *it->second;
    if (c.broken()) return release(a);
    return c.arrive(std::move(a));
  }
  const uint32_t counted = counted_.count(key.first) ? counted_[key.first] : 0;
  if (h.channel < counted) return release(a);  // that channel is closed here
  if (h.channel - counted > 4096) {
    // Not a channel this rank will open soon: a confused or hostile peer.
    if (stray_.code == LF_OK)
      stray_ = make_error(LF_ERR_PROTOCOL, "ucx: rank %u sent to channel %u, far beyond the %u opened", h.rank,
                          h.channel, counted);
    return release(a);
  }
  try {
    early_[key].emplace_back(h, std::move(a));
  } catch (const std::bad_alloc &) {
    release(a);
    if (stray_.code == LF_OK) stray_ = make_error(LF_ERR_NO_MEMORY, "ucx: no memory to keep an early message");
  }
}

}  // namespace lf::ucx
