// lavaflow.Buffer: an lf_buffer_t with the buffer protocol and DLPack export.
#pragma once

#include <memory>
#include <string>

#include "lfpy.hpp"

namespace lfpy {

// Owns an lf_buffer_t; the last owner (the Buffer, a DLPack consumer) frees it.
struct BufferHandle {
  lf_buffer_t h = nullptr;
  unsigned fork_gen = 0;
  explicit BufferHandle(lf_buffer_t b);
  ~BufferHandle();
  BufferHandle(const BufferHandle &) = delete;
  BufferHandle &operator=(const BufferHandle &) = delete;
};

class Buffer {
 public:
  explicit Buffer(lf_buffer_t b);

  // Hands the lf_buffer_t over (for lf_isend_buffer): only when nothing else
  // refers to the memory (no buffer-protocol or DLPack export alive).
  lf_buffer_t take();
  // Gives back what take() returned, when the send refused it.
  void restore(lf_buffer_t b) { hold_ = std::make_shared<BufferHandle>(b); }
  // Drops this object's ownership; the memory goes once DLPack consumers let go.
  void free();

  bool live() const noexcept { return static_cast<bool>(hold_); }
  // A share of the memory (NULL once freed or sent): it stays alive while any share does.
  std::shared_ptr<BufferHandle> share() const noexcept { return hold_; }
  void *data() const;
  size_t size() const noexcept { return size_; }
  uintptr_t address() const noexcept { return reinterpret_cast<uintptr_t>(data_); }
  // Static strings of the C library (valid until the process exits).
  const char *kind() const noexcept { return kind_; }
  const char *requested_kind() const noexcept { return requested_kind_; }
  const char *fallback_reason() const noexcept { return fallback_reason_; }
  int numa_node() const;
  py::capsule dlpack(const py::object &stream) const;
  py::tuple dlpack_device() const;

  int exports = 0;  // live buffer-protocol views

 private:
  void check_live(const char *what) const;
  std::shared_ptr<BufferHandle> hold_;
  void *data_ = nullptr;
  size_t size_ = 0;
  const char *kind_ = "", *requested_kind_ = "", *fallback_reason_ = "";
};

// Installs the buffer protocol on the Python type of Buffer (created with py::buffer_protocol()).
void install_buffer_protocol(py::handle type);

// The fork generation: bumped in a child after fork(), so objects inherited
// from the parent know not to touch the parent's lavaflow state.
unsigned fork_generation() noexcept;

// Memory kind from its name ("host-shared", ...); raises ValueError.
lf_memory_kind_t kind_from_name(const std::string &name);

}  // namespace lfpy
