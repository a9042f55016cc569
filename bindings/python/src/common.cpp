// Errors, acquiring Python memory, interruptible waits.
#include <dlpack/dlpack.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>

#include <unistd.h>

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
  // A detail that starts with the status's own name (a server's text) says it once.
  std::string_view d = detail;
  const std::string prefix = std::string(lf_status_string(st)) + ": ";
  while (d.substr(0, prefix.size()) == prefix) d.remove_prefix(prefix.size());
  if (!d.empty()) msg += ": " + std::string(d);
  PyObject *cls = class_for(st);
  py::object inst = py::reinterpret_steal<py::object>(PyObject_CallFunction(cls, "s", msg.c_str()));
  if (!inst) throw py::error_already_set();
  inst.attr("status") = py::int_(st);
  inst.attr("status_name") = py::str(lf_status_string(st));
  if (bytes >= 0) inst.attr("bytes") = py::int_(bytes);
  PyErr_SetObject(cls, inst.ptr());
  throw py::error_already_set();
}

lf_status_t status_for(py::error_already_set &e) {
  if (e.matches(g_error)) {
    if (py::hasattr(e.value(), "status")) {
      try {
        const int st = e.value().attr("status").cast<int>();
        if (st < 0) return st;
      } catch (py::cast_error &) {
      }
    }
    const std::pair<PyObject *, lf_status_t> by_class[] = {
        {g_peer_gone, LF_ERR_PEER_GONE}, {g_timeout, LF_ERR_TIMEOUT},         {g_truncated, LF_ERR_TRUNCATED},
        {g_cancelled, LF_ERR_CANCELLED}, {g_unavailable, LF_ERR_UNAVAILABLE}, {g_closed, LF_ERR_CLOSED}};
    for (auto &[cls, st] : by_class)
      if (e.matches(cls)) return st;
    return LF_ERR_INTERNAL;
  }
  if (e.matches(PyExc_TimeoutError)) return LF_ERR_TIMEOUT;
  if (e.matches(PyExc_ValueError) || e.matches(PyExc_TypeError) || e.matches(PyExc_KeyError)) return LF_ERR_INVALID_ARG;
  if (e.matches(PyExc_NotImplementedError)) return LF_ERR_UNSUPPORTED;
  if (e.matches(PyExc_MemoryError)) return LF_ERR_NO_MEMORY;
  return LF_ERR_INTERNAL;
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
    dtype_kind_ = o.dtype_kind_;
    itemsize_ = o.itemsize_;
    ndim_ = o.ndim_;
    std::copy(o.dims_, o.dims_ + kMaxDims, dims_);
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

// 'i', 'u' or 'f' for a struct-module format of one number ("<i4" is not
// one: numpy gives "i", "<l" ...); 0 for anything else.
char format_kind(const char *fmt) {
  if (!fmt) return 'u';  // no format: unsigned bytes
  if (*fmt == '<' || *fmt == '>' || *fmt == '=' || *fmt == '@' || *fmt == '!') ++fmt;
  if (!fmt[0] || fmt[1]) return 0;
  switch (fmt[0]) {
    case 'b':
    case 'h':
    case 'i':
    case 'l':
    case 'q':
    case 'n': return 'i';
    case 'B':
    case 'H':
    case 'I':
    case 'L':
    case 'Q':
    case 'N':
    case 'c': return 'u';
    case 'e':
    case 'f':
    case 'd': return 'f';
    default: return 0;
  }
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

Pinned Pinned::acquire(py::handle obj, bool writable, bool typed) {
  Pinned p;
  PyObject *o = obj.ptr();
  if (PyObject_CheckBuffer(o)) {
    if (PyObject_GetBuffer(o, &p.view_, typed ? PyBUF_STRIDES | PyBUF_FORMAT : PyBUF_STRIDES) != 0)
      throw py::error_already_set();
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
    p.itemsize_ = p.view_.itemsize > 0 ? static_cast<size_t>(p.view_.itemsize) : 1;
    p.dtype_kind_ = format_kind(p.view_.format);
    if (p.view_.ndim <= kMaxDims && (p.view_.shape || p.view_.ndim == 0)) {
      p.ndim_ = p.view_.ndim;
      std::copy(p.view_.shape, p.view_.shape + p.view_.ndim, p.dims_);
    }
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
  p.itemsize_ = elem ? elem : 1;
  if (t.ndim <= kMaxDims) {
    p.ndim_ = t.ndim;
    std::copy(t.shape, t.shape + t.ndim, p.dims_);
  }
  if (t.dtype.lanes == 1) {
    switch (t.dtype.code) {
      case kDLInt: p.dtype_kind_ = 'i'; break;
      case kDLUInt: p.dtype_kind_ = 'u'; break;
      case kDLFloat: p.dtype_kind_ = 'f'; break;
      default: break;
    }
  }
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

namespace {
unsigned long g_main_thread = 0;
std::atomic<int> g_notify_fd{-1};
}  // namespace

void notify_next_wait(int fd) noexcept { g_notify_fd.store(fd); }

namespace {
std::atomic<bool> g_passive{true};
}
void set_passive_waits(bool on) noexcept { g_passive.store(on, std::memory_order_relaxed); }
bool passive_waits() noexcept { return g_passive.load(std::memory_order_relaxed); }

void waiting_now() noexcept {
  if (g_notify_fd.load(std::memory_order_relaxed) < 0) return;
  const int fd = g_notify_fd.exchange(-1);
  if (fd >= 0) (void)!::write(fd, "w", 1);
}

void set_signal_thread(unsigned long ident) noexcept { g_main_thread = ident; }

bool on_signal_thread() noexcept { return PyThread_get_thread_ident() == g_main_thread; }

bool signal_raised() {
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

// ---- orphans -------------------------------------------------------------------------

ChannelState::~ChannelState() { free_stash(); }

void ChannelState::adopt(lf_request_t req, Pinned &&mem, bool buffer_recv, Pinned &&mem2) noexcept {
  lf_cancel(req);
  orphans.push_back(Orphan{req, std::move(mem), buffer_recv, std::move(mem2)});
  reap(false);
}

bool ChannelState::take_stashed(uint64_t tag, Stashed *out) noexcept {
  for (auto it = stash.begin(); it != stash.end(); ++it) {
    if (tag == LF_ANY_TAG || it->tag == tag) {
      *out = *it;
      stash.erase(it);
      return true;
    }
  }
  return false;
}

void ChannelState::free_stash() noexcept {
  for (Stashed &s : stash)
    if (s.buf) lf_free(s.buf);
  stash.clear();
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
      lf_buffer_t b = nullptr;
      lf_status_t w;
      {
        py::gil_scoped_release nogil;
        w = lf_wait_buffer_timeout(o.req, all ? -1 : 0, &b, nullptr);
      }
      finished = w != LF_ERR_TIMEOUT;
      if (w == LF_OK && b) lf_free(b);
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
    if (finished) {
      o.mem.release();
      o.mem2.release();
    } else {
      left.push_back(std::move(o));
    }
  }
  for (Orphan &o : left) orphans.push_back(std::move(o));
}

}  // namespace lfpy
