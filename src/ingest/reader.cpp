#include "ingest/reader.hpp"

#include <algorithm>

namespace lf::ingest {

Result<std::unique_ptr<Read>> Reader::make_read(RingPlace place) noexcept {
  auto r = std::make_unique<Read>();
  r->offset = cursor_;
  r->want = static_cast<size_t>(std::min<uint64_t>(plan_.chunk, plan_.file->end() - cursor_));
  auto b = plan_.pool->acquire(plan_.block);
  if (!b) return std::unexpected(b.error());
  r->block = std::move(*b);
  r->place = std::move(place);
  cursor_ += r->want;
  return r;
}

size_t Reader::piece_len(const Read &r) const noexcept {
  size_t len = r.want - r.got;
  // O_DIRECT reads whole blocks: the tail of the range is read up to the
  // next block boundary (the block has room) and trimmed after.
  if (plan_.file->direct() && !r.buffered_only) len = (len + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  return std::min(len, plan_.max_io);
}

int Reader::piece_fd(const Read &r, size_t len) const noexcept {
  if (!plan_.file->direct() || r.buffered_only) return plan_.file->buffered_fd();
  const auto addr = reinterpret_cast<uintptr_t>(r.block->data()) + r.got;
  const uint64_t off = r.offset + r.got;
  // A remainder after a short read may start mid-block: O_DIRECT would
  // refuse it (rocksdb#6853), the page cache does not.
  if ((addr | off | len) % kDirectAlign) return plan_.file->buffered_fd();
  return plan_.file->fd();
}

}  // namespace lf::ingest
