// Channel.send and Channel.recv as METH_FASTCALL functions: the per-message
// path, without pybind11's argument dispatch.
#include <cstring>

#include "channel.hpp"

namespace lfpy {
namespace {

Channel &channel_of(PyObject *self) {
  auto *inst = reinterpret_cast<py::detail::instance *>(self);
  return *inst->get_value_and_holder().value_ptr<Channel>();
}

// (obj|out, tag=0, timeout=None), positional or by keyword.
bool parse_transfer(const char *fn, const char *first, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                    PyObject **out) {
  const char *names[3] = {first, "tag", "timeout"};
  out[0] = out[1] = out[2] = nullptr;
  if (nargs > 3) {
    PyErr_Format(PyExc_TypeError, "%s() takes at most 3 arguments (%zd given)", fn, nargs);
    return false;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) out[i] = args[i];
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t k = 0; k < nkw; ++k) {
    const char *key = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
    if (!key) return false;
    int slot = -1;
    for (int j = 0; j < 3; ++j)
      if (std::strcmp(key, names[j]) == 0) slot = j;
    if (slot < 0) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%s'", fn, key);
      return false;
    }
    if (out[slot]) {
      PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fn, key);
      return false;
    }
    out[slot] = args[nargs + k];
  }
  if (!out[0]) {
    PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, first);
    return false;
  }
  return true;
}

bool tag_of(PyObject *o, uint64_t *tag) {
  if (!o) {
    *tag = 0;
    return true;
  }
  if (!PyLong_Check(o)) {
    PyErr_Format(PyExc_TypeError, "lavaflow: the tag must be an int in [0, 2**64), not %s", Py_TYPE(o)->tp_name);
    return false;
  }
  *tag = PyLong_AsUnsignedLongLong(o);
  if (*tag == static_cast<uint64_t>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    PyErr_SetString(PyExc_TypeError, "lavaflow: the tag must be an int in [0, 2**64)");
    return false;
  }
  return true;
}

template <bool kSend>
PyObject *fast_transfer(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  PyObject *a[3];
  uint64_t tag;
  if (!parse_transfer(kSend ? "send" : "recv", kSend ? "obj" : "out", args, nargs, kwnames, a) || !tag_of(a[1], &tag))
    return nullptr;
  try {
    py::object timeout = a[2] ? py::reinterpret_borrow<py::object>(a[2]) : py::none();
    Channel &ch = channel_of(self);
    if constexpr (kSend) {
      ch.send(py::handle(a[0]), tag, timeout);
      Py_RETURN_NONE;
    } else {
      return PyLong_FromSize_t(ch.recv(py::handle(a[0]), tag, timeout));
    }
  } catch (py::error_already_set &e) {
    e.restore();
  } catch (const std::exception &e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyMethodDef g_send_def = {"send", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&fast_transfer<true>)),
                          METH_FASTCALL | METH_KEYWORDS,
                          "send(obj, tag=0, timeout=None)\n\nSend a contiguous buffer-protocol or DLPack object "
                          "(read-only is fine); returns when the memory may be reused."};
PyMethodDef g_recv_def = {"recv", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&fast_transfer<false>)),
                          METH_FASTCALL | METH_KEYWORDS,
                          "recv(out, tag=0, timeout=None) -> int\n\nReceive the next message with `tag` "
                          "(ANY_TAG: any) into writable memory; returns the bytes received."};

}  // namespace

void install_fast_methods(py::handle type) {
  for (PyMethodDef *def : {&g_send_def, &g_recv_def}) {
    py::object descr =
        py::reinterpret_steal<py::object>(PyDescr_NewMethod(reinterpret_cast<PyTypeObject *>(type.ptr()), def));
    if (!descr) throw py::error_already_set();
    type.attr(def->ml_name) = descr;
  }
}

}  // namespace lfpy
