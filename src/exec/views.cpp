#include "exec/views.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

namespace lf::exec {

namespace {

size_t os_page() noexcept { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

/// A fetched view: bytes inside a read-only mapping of the service's
/// segment, keeping the received view (and so the service's block) alive.
class ReadOnlyView final : public Buffer {
 public:
  ReadOnlyView(std::shared_ptr<Buffer> received, std::shared_ptr<void> map, std::shared_ptr<void> keep,
               void *data) noexcept
      : received_(std::move(received)), map_(std::move(map)), keep_(std::move(keep)) {
    describe_as(*received_);
    data_ = data;
    flags_ &= ~buffer_flags::pooled;
  }

 private:
  std::shared_ptr<Buffer> received_;
  std::shared_ptr<void> map_;
  std::shared_ptr<void> keep_;  // destroyed last: the connection outlives the view
};

}  // namespace

ReadOnlySegments::~ReadOnlySegments() = default;

Result<BufferPtr> ReadOnlySegments::view(std::shared_ptr<Buffer> received, std::shared_ptr<void> keep) noexcept {
  const SharedRef *ref = received ? received->shared_ref() : nullptr;
  if (!ref || ref->fd < 0) return LF_FAIL(LF_ERR_UNSUPPORTED, "exec: the result did not arrive as shared memory");
  if (ref->offset > ref->segment_size || received->size() > ref->segment_size - ref->offset)
    return LF_FAIL(LF_ERR_PROTOCOL, "exec: a result lies outside its segment");
  try {
    std::shared_ptr<Map> m;
    {
      std::lock_guard g(mu_);
      auto &slot = maps_[ref->segment_id];
      if (!slot || slot->size < ref->segment_size) {
        void *p = mmap(nullptr, ref->segment_size, PROT_READ, MAP_SHARED, ref->fd, 0);
        if (p == MAP_FAILED) return std::unexpected(sys_error(errno, "exec: mmap(result segment, read-only)"));
        const size_t size = ref->segment_size;
        slot = std::shared_ptr<Map>(new Map{p, size}, [](Map *x) {
          munmap(x->base, x->size);
          delete x;
        });
      }
      m = slot;
    }
    void *data = static_cast<uint8_t *>(m->base) + ref->offset;
    return BufferPtr(new ReadOnlyView(std::move(received), std::shared_ptr<void>(m, m.get()), std::move(keep), data));
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "exec: no memory for a view");
  }
}

Result<std::unique_ptr<SealedPages>> SealedPages::create(size_t bytes) noexcept {
  std::unique_ptr<SealedPages> b(new (std::nothrow) SealedPages);
  if (!b) return LF_FAIL(LF_ERR_NO_MEMORY, "exec: no memory for a result");
  const size_t pg = os_page();
  const size_t len = bytes ? (bytes + pg - 1) / pg * pg : pg;
  // Populated at once: faulting the pages in one by one as the transport
  // writes them costs more than the kernel filling them in a batch.
  void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) return std::unexpected(sys_error(errno, "exec: mmap(%zu bytes for a result)", len));
  b->data_ = p;
  b->size_ = bytes;
  b->mapped_ = len;
  b->alignment_ = pg;
  b->page_size_ = pg;
  return b;
}

SealedPages::~SealedPages() {
  registrations_.clear();
  if (data_) munmap(data_, mapped_);
}

Status SealedPages::seal() noexcept {
  if (mprotect(data_, mapped_, PROT_READ) != 0) return std::unexpected(sys_error(errno, "exec: mprotect(result)"));
  return {};
}

}  // namespace lf::exec
