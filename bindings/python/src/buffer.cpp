// lavaflow.Buffer: buffer protocol and DLPack export with shared ownership, so
// that memory stays alive while any consumer holds it.
#include "buffer.hpp"

#include <dlpack/dlpack.h>
#include <pthread.h>

#include <atomic>

namespace lfpy {

namespace {
std::atomic<unsigned> g_fork_gen{0};
[[maybe_unused]] const int g_atfork = pthread_atfork(nullptr, nullptr, [] { g_fork_gen.fetch_add(1); });

// One allocation per export: the tensor, its shape, and a share of the buffer.
struct Export {
  DLManagedTensor tensor{};
  int64_t shape[1] = {0};
  std::shared_ptr<BufferHandle> hold;
};

// Needs no GIL: consumers may call it from any thread.
void export_deleter(DLManagedTensor *t) {
  if (t) delete static_cast<Export *>(t->manager_ctx);
}

// A capsule nobody consumed frees its tensor; a consumed one was renamed
// "used_dltensor" and belongs to its consumer.
void capsule_destructor(PyObject *cap) {
  if (!PyCapsule_IsValid(cap, "dltensor")) return;
  auto *t = static_cast<DLManagedTensor *>(PyCapsule_GetPointer(cap, "dltensor"));
  if (t && t->deleter) t->deleter(t);
}

int getbuffer(PyObject *self, Py_buffer *view, int flags) {
  try {
    auto *b = py::cast<Buffer *>(py::handle(self));
    if (!b->live()) {
      PyErr_SetString(PyExc_BufferError, "lavaflow: the Buffer was freed or sent");
      view->obj = nullptr;
      return -1;
    }
    if (!b->data()) {
      PyErr_SetString(PyExc_BufferError, "lavaflow: device memory has no host pointer");
      view->obj = nullptr;
      return -1;
    }
    if (PyBuffer_FillInfo(view, self, b->data(), static_cast<Py_ssize_t>(b->size()), 0, flags) != 0) return -1;
    ++b->exports;
    return 0;
  } catch (py::error_already_set &e) {
    e.restore();
  } catch (std::exception &e) {
    PyErr_SetString(PyExc_BufferError, e.what());
  }
  view->obj = nullptr;
  return -1;
}

void releasebuffer(PyObject *self, Py_buffer *) {
  try {
    auto *b = py::cast<Buffer *>(py::handle(self));
    --b->exports;
  } catch (...) {
  }
}
}  // namespace

unsigned fork_generation() noexcept { return g_fork_gen.load(std::memory_order_relaxed); }

BufferHandle::BufferHandle(lf_buffer_t b) : h(b), fork_gen(fork_generation()) {}

BufferHandle::~BufferHandle() {
  // In a forked child the handle is the parent's: leave it alone.
  if (h && fork_gen == fork_generation()) lf_free(h);
}

Buffer::Buffer(lf_buffer_t b) : hold_(std::make_shared<BufferHandle>(b)) {
  data_ = lf_buffer_data(b);
  size_ = lf_buffer_size(b);
  kind_ = lf_memory_kind_string(lf_buffer_kind(b));
  requested_kind_ = lf_memory_kind_string(lf_buffer_requested_kind(b));
  fallback_reason_ = lf_buffer_fallback_reason(b);
  if (!fallback_reason_) fallback_reason_ = "";
}

void Buffer::check_live(const char *what) const {
  if (!hold_) {
    PyErr_Format(PyExc_BufferError, "lavaflow: Buffer.%s: the buffer was freed or handed to send_buffer", what);
    throw py::error_already_set();
  }
}

void *Buffer::data() const { return hold_ ? data_ : nullptr; }

int Buffer::numa_node() const {
  check_live("numa_node");
  return lf_buffer_numa_node(hold_->h);
}

lf_buffer_t Buffer::take() {
  check_live("send_buffer");
  if (exports > 0 || hold_.use_count() > 1) {
    PyErr_Format(PyExc_BufferError,
                 "lavaflow: send_buffer hands the memory to the channel, but %d buffer-protocol view(s) and %ld "
                 "DLPack export(s) still refer to it; drop them first, or use send()",
                 exports, static_cast<long>(hold_.use_count() - 1));
    throw py::error_already_set();
  }
  lf_buffer_t h = hold_->h;
  hold_->h = nullptr;
  hold_.reset();
  return h;
}

void Buffer::free() {
  if (exports > 0) {
    PyErr_Format(PyExc_BufferError, "lavaflow: Buffer.free: %d buffer-protocol view(s) still use the memory", exports);
    throw py::error_already_set();
  }
  hold_.reset();
}

py::capsule Buffer::dlpack(const py::object &stream) const {
  check_live("__dlpack__");
  if (!stream.is_none()) {
    PyErr_SetString(PyExc_BufferError, "lavaflow: host memory takes no stream (stream must be None)");
    throw py::error_already_set();
  }
  if (!data_) {
    PyErr_SetString(PyExc_BufferError, "lavaflow: device memory has no host pointer to export through this module");
    throw py::error_already_set();
  }
  auto *e = new Export;
  e->hold = hold_;
  e->shape[0] = static_cast<int64_t>(size_);
  DLTensor &t = e->tensor.dl_tensor;
  t.data = data_;
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = 1;
  t.dtype = DLDataType{kDLUInt, 8, 1};
  t.shape = e->shape;
  t.strides = nullptr;  // compact row-major
  t.byte_offset = 0;
  e->tensor.manager_ctx = e;
  e->tensor.deleter = export_deleter;
  PyObject *cap = PyCapsule_New(&e->tensor, "dltensor", capsule_destructor);
  if (!cap) {
    delete e;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::capsule>(cap);
}

py::tuple Buffer::dlpack_device() const { return py::make_tuple(static_cast<int>(kDLCPU), 0); }

void install_buffer_protocol(py::handle type) {
  auto *t = reinterpret_cast<PyTypeObject *>(type.ptr());
  t->tp_as_buffer->bf_getbuffer = getbuffer;
  t->tp_as_buffer->bf_releasebuffer = releasebuffer;
}

lf_memory_kind_t kind_from_name(const std::string &name) {
  if (name == "host-shared") return LF_MEM_HOST_SHARED;  // the default, on every alloc()
  for (int k = 0; k < LF_MEM_KIND_COUNT_; ++k)
    if (name == lf_memory_kind_string(static_cast<lf_memory_kind_t>(k))) return static_cast<lf_memory_kind_t>(k);
  std::string all;
  for (int k = 0; k < LF_MEM_KIND_COUNT_; ++k)
    all += std::string(k ? ", " : "") + lf_memory_kind_string(static_cast<lf_memory_kind_t>(k));
  PyErr_Format(PyExc_ValueError, "lavaflow: unknown memory kind '%s' (one of: %s)", name.c_str(), all.c_str());
  throw py::error_already_set();
}

}  // namespace lfpy
