// The Python module's shared pieces: error raising, acquiring Python buffers
// (buffer protocol or DLPack) and the interruptible wait. Everything here is
// built on the C API (lavaflow.h) only.
#pragma once

#include <lavaflow/lavaflow.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <memory>
#include <string>
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

  // writable: the memory is a receive target. Raises TypeError, ValueError
  // (not contiguous) or BufferError (read-only, consumed capsule, device memory).
  static Pinned acquire(py::handle obj, bool writable);

  void release() noexcept;
  void *data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }

 private:
  void *data_ = nullptr;
  size_t size_ = 0;
  bool has_view_ = false;
  Py_buffer view_{};
  DLManagedTensor *dl_ = nullptr;
  PyObject *keep_ = nullptr;  // a strong reference for the duration
};

// ---- waiting -------------------------------------------------------------------------

// Converts a Python timeout (None = forever, seconds otherwise) to milliseconds, -1 = forever.
int64_t timeout_ms(const py::object &timeout);

// Waits for `req` with the GIL released, in slices, checking for signals
// between slices. Returns the request's status (and frees it: req becomes
// NULL) or LF_ERR_TIMEOUT with req still valid. *interrupted is set when a
// signal handler raised (the Python error is then set).
lf_status_t wait_request(lf_request_t &req, int64_t timeout, size_t *bytes, bool *interrupted);

// The same for an lf_irecv_buffer request (lf_wait_buffer has no deadline,
// so it polls lf_test): returns LF_OK once the request is complete (and then
// lf_wait_buffer does not block), or LF_ERR_TIMEOUT.
lf_status_t wait_buffer_ready(lf_request_t req, int64_t timeout, bool *interrupted);

// ---- channels' leftovers -------------------------------------------------------------

// A request nobody waits for any more (its Request object was dropped, or a
// blocking call was interrupted) with the memory it still uses. The channel
// keeps it until it completes, so the memory outlives the transfer.
struct Orphan {
  lf_request_t req = nullptr;
  Pinned mem;
  bool buffer_recv = false;  // complete with lf_wait_buffer and free the buffer
};

struct ChannelState {
  lf_channel_t ch = nullptr;
  std::vector<Orphan> orphans;
  // Completes what it can without blocking (GIL held); everything when the
  // channel is closed.
  void reap(bool all) noexcept;
  void adopt(lf_request_t req, Pinned &&mem, bool buffer_recv) noexcept;
};

}  // namespace lfpy
