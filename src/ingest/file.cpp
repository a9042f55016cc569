#include "ingest/file.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace lf::ingest {

namespace {
int open_retry(const char *path, int flags) noexcept {
  int fd;
  do {
    fd = ::open(path, flags);
  } while (fd < 0 && errno == EINTR);
  return fd;
}
}  // namespace

Result<std::unique_ptr<File>> File::open(const char *path, int fd, uint64_t offset, uint64_t length, bool direct) {
  std::unique_ptr<File> f(new File());
  const std::string what = path ? std::string("'") + path + "'" : "fd " + std::to_string(fd);
  if (path) {
    f->fd_ = open_retry(path, O_RDONLY | O_CLOEXEC);
    if (f->fd_ < 0) {
      const int err = errno;
      const lf_status_t code = err == ENOENT ? LF_ERR_NOT_FOUND : err == ENOTDIR ? LF_ERR_INVALID_ARG : LF_ERR_IO;
      return LF_FAIL(code, "cannot open %s for reading: %s", what.c_str(), std::strerror(err));
    }
  } else {
    // A description of our own: the caller's file offset and flags stay
    // untouched, and the caller may close its descriptor at once.
    f->fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (f->fd_ < 0)
      return LF_FAIL(errno == EBADF ? LF_ERR_INVALID_ARG : LF_ERR_IO, "cannot use %s: %s", what.c_str(),
                     std::strerror(errno));
    const int fl = fcntl(f->fd_, F_GETFL);
    if (fl >= 0 && (fl & O_ACCMODE) == O_WRONLY)
      return LF_FAIL(LF_ERR_INVALID_ARG, "%s is open for writing only", what.c_str());
  }
  struct stat st {};
  if (fstat(f->fd_, &st) != 0) return LF_FAIL(LF_ERR_IO, "fstat(%s): %s", what.c_str(), std::strerror(errno));
  uint64_t size = 0;
  if (S_ISDIR(st.st_mode)) return LF_FAIL(LF_ERR_INVALID_ARG, "%s is a directory, not a file", what.c_str());
  if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    if (ioctl(f->fd_, BLKGETSIZE64, &size) != 0)
      return LF_FAIL(LF_ERR_IO, "BLKGETSIZE64(%s): %s", what.c_str(), std::strerror(errno));
  } else {
    return LF_FAIL(LF_ERR_INVALID_ARG, "%s is not a regular file or block device (a pipe, socket or character device?)",
                   what.c_str());
  }
  if (offset > size)
    return LF_FAIL(LF_ERR_INVALID_ARG, "offset %llu lies past the end of %s (%llu bytes)",
                   static_cast<unsigned long long>(offset), what.c_str(), static_cast<unsigned long long>(size));
  if (length == 0) length = size - offset;
  if (length > size - offset)
    return LF_FAIL(LF_ERR_INVALID_ARG, "range [%llu, +%llu) extends past the end of %s (%llu bytes)",
                   static_cast<unsigned long long>(offset), static_cast<unsigned long long>(length), what.c_str(),
                   static_cast<unsigned long long>(size));
  f->begin_ = offset;
  f->end_ = offset + length;
  if (direct) {
    if (offset % kDirectAlign) {
      f->direct_refused_ = "O_DIRECT needs an offset aligned to " + std::to_string(kDirectAlign) + " bytes";
    } else {
      // Reopen through /proc: O_DIRECT set with fcntl would change the
      // caller's description too, and a filesystem that refuses O_DIRECT
      // (tmpfs) says so here, at open.
      const std::string self = "/proc/self/fd/" + std::to_string(f->fd_);
      f->direct_fd_ = open_retry(self.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
      if (f->direct_fd_ < 0)
        f->direct_refused_ = std::string("the filesystem refuses O_DIRECT (open: ") + std::strerror(errno) + ")";
    }
  }
  return f;
}

void File::drop_direct(std::string why) noexcept {
  if (direct_fd_ >= 0) ::close(direct_fd_);
  direct_fd_ = -1;
  direct_refused_ = std::move(why);
}

File::~File() {
  if (direct_fd_ >= 0) ::close(direct_fd_);
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace lf::ingest
