// The file side of an ingest: the descriptors, the byte range and whether
// O_DIRECT is in use (and why not, when it was asked for and refused).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/status.hpp"

namespace lf::ingest {

/// O_DIRECT transfers must be aligned to the device's logical block; 4 KiB
/// covers every device of interest and costs nothing for page-sized chunks.
inline constexpr size_t kDirectAlign = 4096;

class File {
 public:
  /// Open `path` (or, with path == nullptr, a new description of `fd`) for
  /// reading [offset, offset + length); length 0: to the end of the file.
  /// Errors: LF_ERR_NOT_FOUND (no such file), LF_ERR_INVALID_ARG (a
  /// directory, not a regular file or block device, a bad descriptor, a range
  /// past the end), LF_ERR_IO (no permission, other failures).
  static Result<std::unique_ptr<File>> open(const char *path, int fd, uint64_t offset, uint64_t length, bool direct);
  ~File();
  File(const File &) = delete;
  File &operator=(const File &) = delete;

  /// The descriptor reads go to (O_DIRECT when direct()).
  int fd() const noexcept { return direct_fd_ >= 0 ? direct_fd_ : fd_; }
  /// A buffered descriptor of the same file: for pieces O_DIRECT cannot take
  /// (an unaligned remainder after a short read).
  int buffered_fd() const noexcept { return fd_; }
  bool direct() const noexcept { return direct_fd_ >= 0; }
  /// Why O_DIRECT was asked for and is not used ("" otherwise).
  const std::string &direct_refused() const noexcept { return direct_refused_; }
  /// Drop O_DIRECT (the buffers turned out unaligned); `why` is reported.
  void drop_direct(std::string why) noexcept;
  uint64_t begin() const noexcept { return begin_; }
  uint64_t end() const noexcept { return end_; }

 private:
  File() = default;
  int fd_ = -1;
  int direct_fd_ = -1;
  uint64_t begin_ = 0, end_ = 0;
  std::string direct_refused_;
};

}  // namespace lf::ingest
