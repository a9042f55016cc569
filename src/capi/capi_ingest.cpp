// C API: file ingest (lf_ingest_*), over src/ingest, and its send pump onto
// a channel.
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <thread>

#include "capi/capi_internal.hpp"
#include "capi/capi_memory.hpp"
#include "ingest/ingest.hpp"

using namespace lf;
using namespace lf::capi;

namespace {

// handles.hpp has no ingest type yet; a type byte of our own keeps another
// table's handle from naming an ingest slot.
constexpr auto kIngestHandle = static_cast<HandleType>(0x49);

// One ingest as C sees it: the object, and who runs on it now (next and
// send are one thread's at a time; cancel and close come from anywhere).
struct IngestState {
  std::unique_ptr<ingest::Ingest> in;
  std::atomic<bool> busy{false};
};

struct IngestSlot {
  std::shared_ptr<IngestState> state;
};

using IngestTable = HandleTable<IngestSlot, kIngestHandle>;

IngestTable &ingests() noexcept {
  static IngestTable t;
  return t;
}

std::shared_ptr<IngestState> ingest_of(lf_ingest_t h, const char *fn, lf_status_t &code) noexcept {
  if (!h) {
    code = fail(LF_ERR_INVALID_ARG, "%s: ingest is NULL", fn);
    return nullptr;
  }
  std::shared_ptr<IngestState> s;
  ingests().with_locked(h, [&](IngestSlot &slot) { s = slot.state; });
  if (!s) code = fail(LF_ERR_CLOSED, "%s: ingest is not valid (closed, or not an ingest handle)", fn);
  return s;
}

// Exclusive use of an ingest for next/send.
class Busy {
 public:
  Busy(IngestState &s, const char *fn, lf_status_t &code) noexcept : s_(s) {
    bool expected = false;
    owned_ = s_.busy.compare_exchange_strong(expected, true, std::memory_order_acquire);
    if (!owned_)
      code = fail(LF_ERR_INVALID_ARG, "%s: another thread is in lf_ingest_next or lf_ingest_send on this ingest", fn);
  }
  ~Busy() {
    if (owned_) s_.busy.store(false, std::memory_order_release);
  }
  explicit operator bool() const noexcept { return owned_; }

 private:
  IngestState &s_;
  bool owned_ = false;
};

lf_status_t open_common(const char *fn, const char *path, int fd, uint64_t offset, uint64_t length,
                        const lf_ingest_params_t *params, lf_ingest_t *out) {
  if (!out) return fail(LF_ERR_INVALID_ARG, "%s: out is NULL", fn);
  lf_ingest_params_t p = LF_INGEST_PARAMS_INIT;
  if (params) {
    if (params->size < sizeof(size_t) || params->size > 4096)
      return fail(LF_ERR_INVALID_ARG, "%s: params->size=%zu: initialise with LF_INGEST_PARAMS_INIT", fn, params->size);
    std::memcpy(reinterpret_cast<char *>(&p) + sizeof(size_t), reinterpret_cast<const char *>(params) + sizeof(size_t),
                std::min(params->size, sizeof p) - sizeof(size_t));
  }
  if (p.queue_depth < 0) return fail(LF_ERR_INVALID_ARG, "%s: queue_depth %d", fn, p.queue_depth);
  if (p.ring_chunks < 0) return fail(LF_ERR_INVALID_ARG, "%s: ring_chunks %d", fn, p.ring_chunks);
  if (p.direct != 0 && p.direct != 1) return fail(LF_ERR_INVALID_ARG, "%s: direct must be 0 or 1", fn);
  auto in = ingest::Ingest::open(path, fd, offset, length,
                                 ingest::Options{.kind = static_cast<MemoryKind>(p.kind),
                                                 .chunk_bytes = p.chunk_bytes,
                                                 .queue_depth = p.queue_depth,
                                                 .direct = p.direct == 1,
                                                 .ring_chunks = p.ring_chunks});
  if (!in) {
    Error e = in.error();
    e.message = std::string(fn) + ": " + e.message;
    return fail(e);
  }
  auto state = std::make_shared<IngestState>();
  state->in = std::move(*in);
  auto [h, slot] = ingests().acquire();
  if (!slot) return fail(LF_ERR_NO_MEMORY, "%s: no ingest handle available", fn);
  slot->state = std::move(state);
  ingests().publish(h);
  *out = IngestTable::to_handle<lf_ingest_t>(h);
  return LF_OK;
}

// How long lf_ingest_send waits for the next release of a zero-copy chunk
// before it returns with views still out (see send_all).
constexpr auto kReleaseIdle = std::chrono::seconds(1);

// The send pump: every chunk goes on the channel as it lands; while nothing
// is ready it drives the sends (and the channel, whose progress also brings
// the peer's releases of zero-copy chunks, which free ring places).
lf_status_t send_all(ingest::Ingest &in, lf_channel_t chh, uint64_t tag) {
  std::shared_ptr<Channel> ch;
  channels().with_locked(chh, [&](ChannelSlot &s) { ch = s.ch; });
  if (!ch) return fail(LF_ERR_CLOSED, "lf_ingest_send: channel is not valid (closed, or not a channel handle)");
  std::deque<lf_request_t> sends;
  lf_status_t result = LF_OK;
  std::string why;
  auto note = [&](lf_status_t st, const std::string &text) {
    if (result == LF_OK && st < 0) {
      result = st;
      why = text;
    }
  };
  // Complete the sends at the front that are done (all of them with `all`).
  auto reap = [&](bool all) {
    while (!sends.empty()) {
      if (!all) {
        int done = 0;
        lf_status_t st = lf_test(sends.front(), &done);
        if (st == LF_OK && !done) break;
      }
      lf_status_t st = lf_wait(sends.front(), nullptr);
      note(st, lf_last_error());
      sends.pop_front();
    }
  };
  // Until `done()` (ring places freed) or the channel breaks: progress,
  // then yield for up to 2 ms, then sleep on the channel in 1 ms steps.
  auto drive_until = [&](auto done) {
    const auto t0 = std::chrono::steady_clock::now();
    while (!done() && !ch->health()) {
      ch->progress();
      reap(false);
      if (done()) break;
      if (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(2))
        std::this_thread::yield();
      else
        ch->wait_for_activity(1);
    }
  };
  int64_t wait_ms = 0;
  while (result == LF_OK) {
    auto c = in.next(wait_ms, nullptr);
    wait_ms = 0;
    if (c && *c) {
      lf_buffer_t b = wrap(std::move(*c));
      if (!b) {
        note(LF_ERR_NO_MEMORY, "lf_ingest_send: no buffer handle available");
        break;
      }
      lf_request_t req = nullptr;
      lf_status_t st = lf_isend_buffer(chh, b, tag, &req);
      if (st != LF_OK) {
        note(st, lf_last_error());
        lf_free(b);  // still ours when the send was refused
        break;
      }
      sends.push_back(req);
      reap(false);
      continue;
    }
    if (c) break;  // the end of the range
    if (c.error().code != LF_ERR_TIMEOUT) {
      note(c.error().code, "lf_ingest_send: " + c.error().message);
      break;
    }
    reap(false);
    ch->progress();
    if (auto h = ch->health()) {
      note(h->code, "lf_ingest_send: " + h->message);
      break;
    }
    if (in.in_flight() > 0) {
      wait_ms = 1;  // wakes at the first completion
      continue;
    }
    // Every place is held by a send or by the peer's views: drive the
    // channel until a release frees one. A release does not wake a sleeper,
    // so short waits yield the CPU instead of sleeping; only a peer that
    // keeps its chunks for a while makes us sleep on the channel.
    // A place freed here may be taken at once by the pread thread for its
    // next read, so "room" alone could stay false while a chunk becomes
    // ready: stop driving as soon as a read is under way too.
    drive_until([&] { return in.has_room() || in.in_flight() > 0; });
  }
  reap(true);
  // The end marker, also after a failure, so that the peer never waits for
  // more (it tells a short transfer by the bytes it received).
  if (!ch->health()) {
    lf_status_t st = lf_send(chh, nullptr, 0, tag);
    note(st, lf_last_error());
  }
  // Zero-copy chunks are the peer's views of our memory until it frees
  // them: return only then, so that the caller may close the channel or
  // exit at once (a pool that drops a block punches its pages, and a view
  // still open on it would read zeros). A peer that stops driving its
  // channel (it closed it) may leave its last releases unsent: give up once
  // none has come for kReleaseIdle; by then it has read every chunk (it
  // freed them before the end marker reached it).
  for (int held = in.ring_held(); held > 0 && !ch->health();) {
    const auto idle_until = std::chrono::steady_clock::now() + kReleaseIdle;
    drive_until([&] { return in.ring_held() < held || std::chrono::steady_clock::now() > idle_until; });
    const int now = in.ring_held();
    if (now == held) break;
    held = now;
  }
  if (result != LF_OK) return fail(result, "%s", why.c_str());
  return LF_OK;
}

}  // namespace

LF_API lf_status_t lf_ingest_open(lf_context_t, const char *path, uint64_t offset, uint64_t length,
                                  const lf_ingest_params_t *params, lf_ingest_t *out) {
  // The context is not needed: the ingest's pool is its own.
  return guard([&]() -> lf_status_t {
    if (!path) return fail(LF_ERR_INVALID_ARG, "lf_ingest_open: path is NULL");
    return open_common("lf_ingest_open", path, -1, offset, length, params, out);
  });
}

LF_API lf_status_t lf_ingest_open_fd(lf_context_t, int fd, uint64_t offset, uint64_t length,
                                     const lf_ingest_params_t *params, lf_ingest_t *out) {
  return guard([&]() -> lf_status_t {
    if (fd < 0) return fail(LF_ERR_INVALID_ARG, "lf_ingest_open_fd: fd %d is not a descriptor", fd);
    return open_common("lf_ingest_open_fd", nullptr, fd, offset, length, params, out);
  });
}

LF_API lf_status_t lf_ingest_next(lf_ingest_t h, lf_buffer_t *chunk, uint64_t *file_offset, int64_t timeout_ms) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    if (!chunk) return fail(LF_ERR_INVALID_ARG, "lf_ingest_next: chunk is NULL");
    auto s = ingest_of(h, "lf_ingest_next", code);
    if (!s) return code;
    Busy busy(*s, "lf_ingest_next", code);
    if (!busy) return code;
    uint64_t off = 0;
    auto c = s->in->next(timeout_ms, &off);
    if (!c) {
      Error e = c.error();
      e.message = "lf_ingest_next: " + e.message;
      return fail(e);
    }
    lf_buffer_t b = nullptr;
    if (*c && !(b = wrap(std::move(*c)))) return LF_ERR_NO_MEMORY;
    *chunk = b;
    if (file_offset) *file_offset = b ? off : 0;
    return LF_OK;
  });
}

LF_API lf_status_t lf_ingest_send(lf_ingest_t h, lf_channel_t ch, uint64_t tag) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    auto s = ingest_of(h, "lf_ingest_send", code);
    if (!s) return code;
    if (!ch) return fail(LF_ERR_INVALID_ARG, "lf_ingest_send: channel is NULL");
    if (tag == LF_ANY_TAG) return fail(LF_ERR_INVALID_ARG, "lf_ingest_send: LF_ANY_TAG is for receives only");
    Busy busy(*s, "lf_ingest_send", code);
    if (!busy) return code;
    return send_all(*s->in, ch, tag);
  });
}

LF_API const char *lf_ingest_path_taken(lf_ingest_t h) {
  lf_status_t code = LF_OK;
  auto s = ingest_of(h, "lf_ingest_path_taken", code);
  return s ? intern(s->in->path_taken()) : nullptr;
}

LF_API lf_status_t lf_ingest_stats(lf_ingest_t h, lf_ingest_stats_t *out) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_ingest_stats: out is NULL");
    if (out->size < sizeof(size_t) || out->size > 4096)
      return fail(LF_ERR_INVALID_ARG, "lf_ingest_stats: out->size=%zu: initialise with LF_INGEST_STATS_INIT",
                  out->size);
    auto s = ingest_of(h, "lf_ingest_stats", code);
    if (!s) return code;
    const ingest::Stats st = s->in->stats();
    lf_ingest_stats_t c = LF_INGEST_STATS_INIT;
    c.chunks = st.chunks;
    c.bytes = st.bytes;
    c.reads = st.reads;
    c.fixed_reads = st.fixed_reads;
    c.rereads = st.resubmits;
    c.ring_chunks = static_cast<uint64_t>(st.ring_chunks);
    c.ring_high_water = static_cast<uint64_t>(st.ring_high_water);
    c.chunk_memory = st.block_bytes;
    c.ring_held = static_cast<uint64_t>(st.ring_held);
    std::memcpy(reinterpret_cast<char *>(out) + sizeof(size_t), reinterpret_cast<char *>(&c) + sizeof(size_t),
                std::min(out->size, sizeof c) - sizeof(size_t));
    return LF_OK;
  });
}

LF_API lf_status_t lf_ingest_cancel(lf_ingest_t h) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    auto s = ingest_of(h, "lf_ingest_cancel", code);
    if (!s) return code;
    s->in->cancel();
    // With nobody in next/send, collect the reads in flight now, so that
    // every block is back in the pool when this returns; otherwise the
    // thread in next/send does it on its way out.
    bool expected = false;
    if (s->busy.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      s->in->drain();
      s->busy.store(false, std::memory_order_release);
    }
    return LF_OK;
  });
}

LF_API lf_status_t lf_ingest_close(lf_ingest_t h) {
  return guard([&]() -> lf_status_t {
    if (!h) return fail(LF_ERR_INVALID_ARG, "lf_ingest_close: ingest is NULL");
    std::shared_ptr<IngestState> s;
    if (!ingests().retire(h, [&](IngestSlot &slot) { s = std::move(slot.state); }) || !s)
      return fail(LF_ERR_CLOSED, "lf_ingest_close: ingest is not valid (closed twice, or not an ingest handle)");
    s->in->cancel();
    // A thread still in next/send returns promptly once cancelled; the
    // ingest is destroyed (its reads drained) only after it left.
    for (unsigned i = 0;; ++i) {
      bool expected = false;
      if (s->busy.compare_exchange_strong(expected, true, std::memory_order_acquire)) break;
      SpinLock::pause(i);
    }
    s->in.reset();
    return LF_OK;
  });
}
