// Read-only views of a job's results on the client (lf_exec_fetch).
//
//  - Same host: the service hands each output over by descriptor; the view
//    the channel gives us maps the service's segment read-write, so the
//    client maps each segment a second time, read-only, once, and every
//    fetched view points into that mapping: no copy, no system call per
//    fetch, and a write faults.
//  - Another host: the result is received into fresh pages that are made
//    read-only once filled.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "core/status.hpp"
#include "memory/buffer.hpp"

namespace lf::exec {

/// Read-only mappings of the shared segments results arrive in, by segment id.
class ReadOnlySegments {
 public:
  ~ReadOnlySegments();
  /// A read-only view of `received` (a zero-copy view with a shared_ref),
  /// which it keeps alive, and `keep` with it (the connection: while it is
  /// open the sender keeps the memory for us). LF_ERR_UNSUPPORTED when it
  /// has no shared_ref.
  Result<BufferPtr> view(std::shared_ptr<Buffer> received, std::shared_ptr<void> keep) noexcept;

 private:
  struct Map {
    void *base = nullptr;
    size_t size = 0;
  };
  std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Map>> maps_;
};

/// `bytes` of fresh, writable pages; seal() makes them read-only.
class SealedPages final : public Buffer {
 public:
  static Result<std::unique_ptr<SealedPages>> create(size_t bytes) noexcept;
  ~SealedPages() override;
  Status seal() noexcept;

 private:
  SealedPages() = default;
  size_t mapped_ = 0;
};

}  // namespace lf::exec
