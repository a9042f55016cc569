// Errors, acquiring Python memory, interruptible waits.
#include <dlpack/dlpack.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

#include "lfpy.hpp"

namespace lfpy {

namespace {
PyObject *g_error = nullptr;
PyObject *g_peer_gone = nullptr;
PyObject *g_timeout = nullptr;
PyObject *g_truncated = nullptr;
PyObject *g_cancelled = nullptr;
PyObject *g_unavailable = nullptr;
PyObject *g_closed = nullptr;

PyObject *new_error(py::module_ &m, const char *name, PyObject *bases, const char *doc) {
  std::string full = std::string("lavaflow.") + name;
  PyObject *cls = PyErr_NewExceptionWithDoc(full.c_str(), doc, bases, nullptr);
  if (!cls) throw py::error_already_set();
  m.add_object(name, py::handle(cls));  // steals nothing: add_object increfs
  return cls;
}

PyObject *class_for(lf_status_t st) {
  switch (st) {
    case LF_ERR_PEER_GONE: return g_peer_gone;
    case LF_ERR_TIMEOUT: return g_timeout;
    case LF_ERR_TRUNCATED: return g_truncated;
    case LF_ERR_CANCELLED: return g_cancelled;
    case LF_ERR_UNAVAILABLE:
    case LF_ERR_UNSUPPORTED: return g_unavailable;
    case LF_ERR_CLOSED: return g_closed;
    default: return g_error;
  }
}

// Slice of a wait between two looks at pending signals.
constexpr int64_t kSliceMs = 100;
}  // namespace

void register_errors(py::module_ &m) {
  g_error = new_error(m, "Error", PyExc_Exception,
                      "A lavaflow call failed. .status is the LF_ERR_* code, .status_name its name; "
                      "str() gives lavaflow's explanation.");
  py::tuple timeout_bases = py::make_tuple(py::handle(g_error), py::handle(PyExc_TimeoutError));
  g_peer_gone = new_error(m, "PeerGone", g_error, "The peer process exited or its connection broke.");
  g_timeout = new_error(m, "Timeout", timeout_bases.ptr(), "A deadline passed.");
  g_truncated = new_error(m, "Truncated", g_error, "The receive buffer was smaller than the message.");
  g_cancelled = new_error(m, "Cancelled", g_error, "The request was cancelled before it completed.");
  g_unavailable = new_error(m, "Unavailable", g_error, "Not supported or not available here.");
  g_closed = new_error(m, "Closed", g_error, "The channel, request or context is closed.");
}

void raise_status(lf_status_t st, const char *call) { raise_status(st, call, lf_last_error()); }

void raise_status(lf_status_t st, const char *call, const std::string &detail, long long bytes) {
  std::string msg = std::string(call) + ": " + lf_status_string(st);
  if (!detail.empty()) msg += ": " + detail;
  PyObject *cls = class_for(st);
  py::object inst = py::reinterpret_steal<py::object>(PyObject_CallFunction(cls, "s", msg.c_str()));
  if (!inst) throw py::error_already_set();
  inst.attr("status") = py::int_(st);
  inst.attr("status_name") = py::str(lf_status_string(st));
  if (bytes >= 0) inst.attr("bytes") = py::int_(bytes);
  PyErr_SetObject(cls, inst.ptr());
  throw py::error_already_set();
}

// ---- Pinned --------------------------------------------------------------------------

Pinned &Pinned::operator=(Pinned &&o) noexcept {
  if (this != &o) {
    release();
    data_ = o.data_;
    size_ = o.size_;
    has_view_ = o.has_view_;
    view_ = o.view_;
    dl_ = o.dl_;
    keep_ = o.keep_;
    o.has_view_ = false;
    o.dl_ = nullptr;
    o.keep_ = nullptr;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void Pinned::release() noexcept {
  if (has_view_) PyBuffer_Release(&view_);
  has_view_ = false;
  if (dl_ && dl_->deleter) dl_->deleter(dl_);  // producers' deleters may need the GIL: we hold it
  dl_ = nullptr;
  Py_CLEAR(keep_);
  data_ = nullptr;
  size_ = 0;
}

namespace {
std::string shape_text(int ndim, const Py_ssize_t *shape, const Py_ssize_t *strides) {
  std::string s = "shape (";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  s += "), strides (";
  for (int i = 0; ndim && strides && i < ndim; ++i) s += (i ? ", " : "") + std::to_string(strides[i]);
  return s + ")";
}

[[noreturn]] void not_contiguous(const std::string &what) {
  PyErr_Format(PyExc_ValueError,
               "lavaflow: the array is not contiguous in C order (%s); lavaflow never copies silently: pass "
               "numpy.ascontiguousarray(a) to send a contiguous copy",
               what.c_str());
  throw py::error_already_set();
}

[[noreturn]] void buffer_error(const std::string &what) {
  PyErr_SetString(PyExc_BufferError, what.c_str());
  throw py::error_already_set();
}

// Takes the DLManagedTensor out of a "dltensor" capsule (renaming it
// "used_dltensor", as the DLPack protocol asks); a capsule consumed before is
// refused, never used twice.
DLManagedTensor *consume_capsule(PyObject *cap) {
  if (PyCapsule_IsValid(cap, "used_dltensor"))
    buffer_error("lavaflow: this DLPack capsule was already consumed (a capsule can be used once)");
  if (!PyCapsule_IsValid(cap, "dltensor")) {
    PyErr_SetString(PyExc_TypeError, "lavaflow: a capsule that is not a DLPack \"dltensor\" capsule");
    throw py::error_already_set();
  }
  auto *t = static_cast<DLManagedTensor *>(PyCapsule_GetPointer(cap, "dltensor"));
  if (!t) throw py::error_already_set();
  if (PyCapsule_SetName(cap, "used_dltensor") != 0) throw py::error_already_set();
  return t;
}
}  // namespace

Pinned Pinned::acquire(py::handle obj, bool writable) {
  Pinned p;
  PyObject *o = obj.ptr();
  if (PyObject_CheckBuffer(o)) {
    if (PyObject_GetBuffer(o, &p.view_, PyBUF_STRIDES) != 0) throw py::error_already_set();
    p.has_view_ = true;
    if (writable && p.view_.readonly) {
      std::string t = Py_TYPE(o)->tp_name;
      p.release();
      buffer_error("lavaflow: the receive buffer (" + t + ") is read-only");
    }
    if (!PyBuffer_IsContiguous(&p.view_, 'C')) {
      std::string what = shape_text(p.view_.ndim, p.view_.shape, p.view_.strides);
      p.release();
      not_contiguous(what);
    }
    p.data_ = p.view_.buf;
    p.size_ = static_cast<size_t>(p.view_.len);
    return p;
  }
  // DLPack: a capsule itself, or an object with __dlpack__.
  py::object cap;
  if (PyCapsule_CheckExact(o)) {
    cap = py::reinterpret_borrow<py::object>(obj);
  } else if (PyObject_HasAttrString(o, "__dlpack__")) {
    cap = obj.attr("__dlpack__")();
  } else if (PyObject_HasAttrString(o, "__cuda_array_interface__")) {
    buffer_error(std::string("lavaflow: ") + Py_TYPE(o)->tp_name +
                 " is CUDA memory (__cuda_array_interface__), which this module cannot move; pass it through "
                 "DLPack from a build with CUDA, or copy it to the host");
  } else {
    PyErr_Format(PyExc_TypeError, "lavaflow: expected a contiguous buffer-protocol or DLPack object, got %s",
                 Py_TYPE(o)->tp_name);
    throw py::error_already_set();
  }
  p.dl_ = consume_capsule(cap.ptr());
  const DLTensor &t = p.dl_->dl_tensor;
  if (t.device.device_type != kDLCPU && t.device.device_type != kDLCUDAHost) {
    int dev = t.device.device_type;
    p.release();
    buffer_error("lavaflow: DLPack device type " + std::to_string(dev) +
                 " is not host memory; this module moves host memory");
  }
  const size_t elem = (static_cast<size_t>(t.dtype.bits) * t.dtype.lanes + 7) / 8;
  size_t count = 1;
  int64_t expect = 1;
  bool contiguous = true;
  for (int i = t.ndim - 1; i >= 0; --i) {
    count *= static_cast<size_t>(t.shape[i]);
    if (t.strides && t.shape[i] != 1 && t.strides[i] != expect) contiguous = false;
    expect *= t.shape[i];
  }
  if (!contiguous && count > 0) {
    std::vector<Py_ssize_t> sh(t.shape, t.shape + t.ndim), st(t.strides, t.strides + t.ndim);
    std::string what = shape_text(t.ndim, sh.data(), st.data()) + " in elements, through DLPack";
    p.release();
    not_contiguous(what);
  }
  p.data_ = static_cast<char *>(t.data) + t.byte_offset;
  p.size_ = count * elem;
  p.keep_ = obj.inc_ref().ptr();
  return p;
}

// ---- waiting -------------------------------------------------------------------------

int64_t timeout_ms(const py::object &timeout) {
  if (timeout.is_none()) return -1;
  double s = timeout.cast<double>();
  if (s < 0) return -1;
  return static_cast<int64_t>(s * 1000.0 + 0.5);
}

lf_status_t wait_request(lf_request_t &req, int64_t timeout, size_t *bytes, bool *interrupted) {
  *interrupted = false;
  // Already complete (eager sends, a message that was waiting): no GIL round trip.
  lf_status_t st = lf_wait_timeout(req, 0, bytes);
  if (st != LF_ERR_TIMEOUT) {
    req = nullptr;
    return st;
  }
  auto start = std::chrono::steady_clock::now();
  for (;;) {
    int64_t slice = kSliceMs;
    if (timeout >= 0) {
      int64_t spent =
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
      if (spent >= timeout) return LF_ERR_TIMEOUT;
      slice = std::min(slice, timeout - spent);
    }
    {
      py::gil_scoped_release nogil;
      st = lf_wait_timeout(req, slice, bytes);
    }
    if (st != LF_ERR_TIMEOUT) {
      req = nullptr;
      return st;
    }
    if (PyErr_CheckSignals() != 0) {
      *interrupted = true;
      return LF_ERR_TIMEOUT;
    }
  }
}

lf_status_t wait_buffer_ready(lf_request_t req, int64_t timeout, bool *interrupted) {
  *interrupted = false;
  int done = 0;
  lf_status_t st = lf_test(req, &done);
  if (st < 0) return st;
  if (done) return LF_OK;
  auto start = std::chrono::steady_clock::now();
  auto ms_since = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  };
  int64_t checked = 0;
  for (;;) {
    {
      py::gil_scoped_release nogil;
      // Spin briefly, then back off to short sleeps: there is no
      // lf_wait_buffer with a deadline to block in.
      auto pause = std::chrono::microseconds(0);
      for (int i = 0;; ++i) {
        st = lf_test(req, &done);
        if (st < 0 || done) break;
        if (i > 2000) {
          pause = std::min(std::chrono::microseconds(1000), pause + std::chrono::microseconds(20));
          std::this_thread::sleep_for(pause);
        }
        int64_t now = ms_since();
        if (now - checked >= kSliceMs || (timeout >= 0 && now >= timeout)) break;
      }
    }
    if (st < 0) return st;
    if (done) return LF_OK;
    checked = ms_since();
    if (PyErr_CheckSignals() != 0) {
      *interrupted = true;
      return LF_ERR_TIMEOUT;
    }
    if (timeout >= 0 && checked >= timeout) return LF_ERR_TIMEOUT;
  }
}

// ---- orphans -------------------------------------------------------------------------

void ChannelState::adopt(lf_request_t req, Pinned &&mem, bool buffer_recv) noexcept {
  lf_cancel(req);
  orphans.push_back(Orphan{req, std::move(mem), buffer_recv});
  reap(false);
}

void ChannelState::reap(bool all) noexcept {
  if (orphans.empty()) return;
  // Work on a list of our own: the GIL is released below, and other threads
  // may adopt requests meanwhile.
  std::vector<Orphan> mine;
  mine.swap(orphans);
  std::vector<Orphan> left;
  for (Orphan &o : mine) {
    bool finished = false;
    if (o.buffer_recv) {
      int done = 0;
      lf_status_t st = lf_test(o.req, &done);
      if (st < 0 || done || all) {
        lf_buffer_t b = nullptr;
        lf_status_t w;
        {
          py::gil_scoped_release nogil;
          w = lf_wait_buffer(o.req, &b, nullptr);
        }
        if (w == LF_OK && b) lf_free(b);
        finished = true;
      }
    } else {
      lf_status_t st;
      if (all) {
        py::gil_scoped_release nogil;
        st = lf_wait_timeout(o.req, -1, nullptr);
      } else {
        st = lf_wait_timeout(o.req, 0, nullptr);
      }
      finished = st != LF_ERR_TIMEOUT;
    }
    if (finished)
      o.mem.release();
    else
      left.push_back(std::move(o));
  }
  for (Orphan &o : left) orphans.push_back(std::move(o));
}

}  // namespace lfpy
