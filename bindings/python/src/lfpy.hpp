// The Python module's shared pieces: error raising, acquiring Python buffers
// (buffer protocol or DLPack) and the interruptible wait. Everything here is
// built on the C API (lavaflow.h) only.
#pragma once

#include <lavaflow/lavaflow.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <vector>

struct DLManagedTensor;

namespace lfpy {
namespace py = pybind11;

// ---- errors --------------------------------------------------------------------------

// Creates lavaflow.Error and its subclasses in module m.
void register_errors(py::module_ &m);

// Raises the lavaflow.Error subclass for `st` with lf_last_error()'s detail.
// Call it on the thread that saw the failure, before any other lavaflow call.
[[noreturn]] void raise_status(lf_status_t st, const char *call);
// The same with the detail captured earlier.
// bytes >= 0 becomes the error's .bytes (what a truncated receive delivered).
[[noreturn]] void raise_status(lf_status_t st, const char *call, const std::string &detail, long long bytes = -1);

// The status a Python exception stands for, for an answer to a peer:
// lf.Error's .status or its class, ValueError/TypeError/KeyError
// LF_ERR_INVALID_ARG, TimeoutError LF_ERR_TIMEOUT, NotImplementedError
// LF_ERR_UNSUPPORTED, MemoryError LF_ERR_NO_MEMORY, anything else
// LF_ERR_INTERNAL. Always < 0.
lf_status_t status_for(py::error_already_set &e);

// Raises unless st is LF_OK.
inline void check(lf_status_t st, const char *call) {
  if (st != LF_OK) raise_status(st, call);
}

// ---- Python memory handed to a transfer ----------------------------------------------

// A contiguous region of a Python object, held (buffer-protocol view or
// consumed DLPack tensor, plus a reference to the object) until release().
// release() needs the GIL.
class Pinned {
 public:
  Pinned() = default;
  Pinned(const Pinned &) = delete;
  Pinned &operator=(const Pinned &) = delete;
  Pinned(Pinned &&o) noexcept { *this = std::move(o); }
  Pinned &operator=(Pinned &&o) noexcept;
  ~Pinned() { release(); }

  // writable: the memory is a receive target; typed: fill dtype_kind() from
  // the buffer's format (collectives, plans). Raises TypeError, ValueError
  // (not contiguous) or BufferError (read-only, consumed capsule, device memory).
  static Pinned acquire(py::handle obj, bool writable, bool typed = false);

  void release() noexcept;
  void *data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  // The element type: 'i', 'u', 'f' (or 0 when unknown) and its size in bytes.
  char dtype_kind() const noexcept { return dtype_kind_; }
  size_t itemsize() const noexcept { return itemsize_; }
  // The object's shape in elements (bytes for objects without one); empty
  // past kMaxDims dimensions. Kept inline: acquire() is on every message's path.
  static constexpr int kMaxDims = 8;
  std::vector<int64_t> shape() const {
    return ndim_ >= 0 ? std::vector<int64_t>(dims_, dims_ + ndim_) : std::vector<int64_t>();
  }

 private:
  void *data_ = nullptr;
  size_t size_ = 0;
  char dtype_kind_ = 0;
  size_t itemsize_ = 1;
  int ndim_ = -1;  // -1: not known
  int64_t dims_[kMaxDims] = {};
  bool has_view_ = false;
  Py_buffer view_{};
  DLManagedTensor *dl_ = nullptr;
  PyObject *keep_ = nullptr;  // a strong reference for the duration
};

// ---- waiting -------------------------------------------------------------------------

// Converts a Python timeout (None = forever, seconds otherwise) to milliseconds, -1 = forever.
int64_t timeout_ms(const py::object &timeout);

// True on the thread that runs Python's signal handlers (the main thread):
// only it looks for Ctrl-C between slices of a wait.
bool on_signal_thread() noexcept;
// Set at import to threading.main_thread()'s ident.
void set_signal_thread(unsigned long ident) noexcept;
// Runs pending signal handlers, taking the GIL (call without it). True when
// one raised (the Python error is then set on this thread).
bool signal_raised();

enum class WaitEnd { done, timeout, interrupted };

// For tests: the next wait that starts slicing on the signal thread writes
// one byte to this fd (then forgets it), so a test can send SIGINT knowing
// the wait has begun. -1: none.
void notify_next_wait(int fd) noexcept;
void waiting_now() noexcept;
// For the benchmark's side-by-side: false makes waiters on a channel another
// thread drives wait as before (in the library's spinning wait). Default true.
void set_passive_waits(bool on) noexcept;
bool passive_waits() noexcept;

struct ChannelState;

// Waits with the GIL released until step(ms) reports completion. step(ms)
// waits at most ms milliseconds (0: only looks) and returns true once the
// operation is complete; it runs without the GIL. Between slices the main
// thread reacquires the GIL every 50 ms to run signal handlers
// (Ctrl-C: WaitEnd::interrupted, the Python error set); other threads never
// take the GIL while waiting. Where another thread of this process is
// driving `chan` (it called into the channel during this wait) the waiter
// does not compete with it: instead of the library's spinning wait it looks
// now and then (lf_*_timeout with 0), since that thread's progress completes
// this request too. The caller has already looked once (step(0) with the
// GIL) before calling this.
template <class Step>
WaitEnd wait_slices(const ChannelState *chan, int64_t timeout, Step &&step);

// ---- channels' leftovers -------------------------------------------------------------

// A message an interrupted blocking receive took after all (its cancel lost
// the race with the message): the channel hands it to the next matching
// receive, so Ctrl-C never drops a message.
struct Stashed {
  uint64_t tag = 0;
  lf_buffer_t buf = nullptr;  // owned; NULL for an empty message
  size_t bytes = 0;           // bytes held
  size_t message_bytes = 0;   // bytes the sender sent (more when the receive was truncated)
};

// A request nobody waits for any more (its Request object was dropped, or a
// blocking call was interrupted) with the memory it still uses. The channel
// keeps it until it completes, so the memory outlives the transfer.
struct Orphan {
  lf_request_t req = nullptr;
  Pinned mem;
  bool buffer_recv = false;  // complete with lf_wait_buffer and free the buffer
  Pinned mem2;               // a gather send's second piece
};

struct ChannelState {
  ~ChannelState();
  lf_channel_t ch = nullptr;
  lf_context_t ctx = nullptr;  // for the stash's copies
  std::vector<Orphan> orphans;
  std::vector<Stashed> stash;
  // Calls into the channel from this process's threads, for waiters: a
  // count that moves while a thread waits means another thread drives the
  // channel. `shared` is set once two threads have used the channel.
  std::atomic<uint64_t> calls{0};
  std::atomic<uintptr_t> last_caller{0};
  std::atomic<bool> shared{false};

  void note_call() noexcept {
    // Not a read-modify-write: waiters only look for a change, and two
    // threads' racing stores still change the value.
    calls.store(calls.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    const uintptr_t me = this_thread_token();
    if (last_caller.load(std::memory_order_relaxed) != me) {
      if (last_caller.exchange(me, std::memory_order_relaxed) != 0) shared.store(true, std::memory_order_relaxed);
    }
  }
  static uintptr_t this_thread_token() noexcept {
    static thread_local char token;
    return reinterpret_cast<uintptr_t>(&token);
  }
  // Completes what it can without blocking (GIL held); everything when the
  // channel is closed.
  void reap(bool all) noexcept;
  void adopt(lf_request_t req, Pinned &&mem, bool buffer_recv, Pinned &&mem2 = Pinned()) noexcept;
  // The first stashed message that a receive of `tag` matches, taken out; false if none.
  bool take_stashed(uint64_t tag, Stashed *out) noexcept;
  void free_stash() noexcept;
};

// ---- wait_slices ---------------------------------------------------------------------

namespace detail {
constexpr std::chrono::milliseconds kSignalSlice{50};  // between looks at Ctrl-C
constexpr std::chrono::milliseconds kOtherSlice{100};  // a wait's slice on other threads
constexpr std::chrono::milliseconds kSharedSlice{2};   // on a channel two threads use
constexpr std::chrono::microseconds kBusyHold{2000};   // passive this long after another thread's call
constexpr std::chrono::microseconds kMinPause{20};
constexpr std::chrono::microseconds kMaxPause{500};
}  // namespace detail

template <class Step>
WaitEnd wait_slices(const ChannelState *chan, int64_t timeout, Step &&step) {
  using namespace detail;
  using Clock = std::chrono::steady_clock;
  const bool signals = on_signal_thread();
  const auto start = Clock::now();
  const bool forever = timeout < 0;
  const auto deadline = start + std::chrono::milliseconds(forever ? 0 : timeout);
  auto next_signals = start + kSignalSlice;
  uint64_t seen = chan ? chan->calls.load(std::memory_order_relaxed) : 0;
  auto busy_until = start;
  auto pause = kMinPause;
  if (signals) waiting_now();
  py::gil_scoped_release nogil;
  for (;;) {
    auto now = Clock::now();
    if (!forever && now >= deadline) return WaitEnd::timeout;
    if (signals && now >= next_signals) {
      if (signal_raised()) return WaitEnd::interrupted;
      next_signals = Clock::now() + kSignalSlice;
    }
    auto limit = signals ? next_signals : now + kOtherSlice;
    if (!forever && deadline < limit) limit = deadline;
    if (chan && chan->shared.load(std::memory_order_relaxed) && passive_waits()) {
      const uint64_t c = chan->calls.load(std::memory_order_relaxed);
      if (c != seen) {
        seen = c;
        busy_until = now + kBusyHold;
      }
      if (now < busy_until) {
        std::this_thread::sleep_for(pause);
        pause = std::min<std::chrono::microseconds>(pause * 2, kMaxPause);
        if (step(0)) return WaitEnd::done;
        continue;
      }
      pause = kMinPause;
      if (now + kSharedSlice < limit) limit = now + kSharedSlice;
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(limit - now).count();
    if (step(left > 0 ? left : 0)) return WaitEnd::done;
  }
}

}  // namespace lfpy
