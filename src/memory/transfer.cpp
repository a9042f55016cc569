#include "memory/transfer.hpp"

#include <algorithm>
#include <cstring>

#include "memory/cuda_rt.hpp"

namespace lf::cuda {

std::vector<Run> coalesce(const std::vector<Piece> &pieces) {
  std::vector<Run> runs;
  size_t packed = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece &p = pieces[i];
    if (p.bytes == 0) continue;
    // Pieces are packed back to back, so a piece that continues the previous
    // run's device range also continues its packed range.
    if (!runs.empty() && runs.back().device + runs.back().bytes == p.device &&
        runs.back().first + runs.back().count == i) {
      runs.back().bytes += p.bytes;
      ++runs.back().count;
    } else {
      runs.push_back(Run{p.device, packed, p.bytes, i, 1});
    }
    packed += p.bytes;
  }
  return runs;
}

std::vector<std::pair<size_t, size_t>> chunk_plan(size_t n, size_t chunk) {
  std::vector<std::pair<size_t, size_t>> plan;
  if (chunk == 0) chunk = n;
  for (size_t off = 0; off < n; off += chunk) plan.emplace_back(off, std::min(chunk, n - off));
  return plan;
}

#if LAVAFLOW_HAVE_CUDA

namespace {
cudaStream_t as_stream(void *s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t as_event(void *e) { return static_cast<cudaEvent_t>(e); }
}  // namespace

Result<std::unique_ptr<TransferManager>> TransferManager::create(const TransferOptions &o) noexcept {
  try {
    const Runtime &rt = Runtime::get();
    if (auto why = rt.available()) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why->c_str());
    if (o.device < 0 || o.device >= rt.device_count())
      return LF_FAIL(LF_ERR_INVALID_ARG, "CUDA device %d does not exist (%d found)", o.device, rt.device_count());
    if (o.chunk < 4096 || o.batch_bytes < 4096 || o.small_limit > o.batch_bytes)
      return LF_FAIL(LF_ERR_INVALID_ARG, "transfer options: chunk %zu, batch %zu, small limit %zu", o.chunk,
                     o.batch_bytes, o.small_limit);
    std::unique_ptr<TransferManager> t(new TransferManager);
    t->opt_ = o;
    const Api &a = rt.api();
    LF_CUDA_CHECK(rt, a.SetDevice(o.device));
    for (int i = 0; i < 2; ++i) {
      LF_CUDA_CHECK(rt, a.HostAlloc(&t->stage_[i], o.chunk, cudaHostAllocDefault));
      cudaStream_t s = nullptr;
      // Non-blocking: the staging streams must not serialise with the
      // legacy default stream other code may be using.
      LF_CUDA_CHECK(rt, a.StreamCreateWithFlags(&s, cudaStreamNonBlocking));
      t->stream_[i] = s;
      cudaEvent_t e = nullptr;
      LF_CUDA_CHECK(rt, a.EventCreateWithFlags(&e, cudaEventDisableTiming));
      t->event_[i] = e;
    }
    LF_CUDA_CHECK(rt, a.HostAlloc(&t->batch_host_, o.batch_bytes, cudaHostAllocDefault));
    LF_CUDA_CHECK(rt, a.Malloc(&t->batch_device_, o.batch_bytes));
    return t;
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "no memory for a transfer manager");
  }
}

TransferManager::~TransferManager() {
  const Runtime &rt = Runtime::get();
  if (rt.available()) return;  // nothing was created
  const Api &a = rt.api();
  (void)a.SetDevice(opt_.device);
  drain();
  for (int i = 0; i < 2; ++i) {
    if (event_[i]) a.EventDestroy(as_event(event_[i]));
    if (stream_[i]) a.StreamDestroy(as_stream(stream_[i]));
    if (stage_[i]) a.FreeHost(stage_[i]);
  }
  if (batch_host_) a.FreeHost(batch_host_);
  if (batch_device_) a.Free(batch_device_);
}

void TransferManager::drain() noexcept {
  // After a failure mid-pipeline a DMA may still read or write a staging
  // buffer: wait for both streams before the buffers are reused or freed.
  const Api &a = Runtime::get().api();
  for (void *s : stream_)
    if (s) (void)a.StreamSynchronize(as_stream(s));
}

bool TransferManager::is_pinned(const void *p) const noexcept {
  const Runtime &rt = Runtime::get();
  if (rt.available() || !p) return false;
  cudaPointerAttributes attr{};
  if (rt.api().PointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)rt.api().GetLastError();  // clear the sticky-free error of an unknown pointer
    return false;
  }
  return attr.type == cudaMemoryTypeHost;
}

Status TransferManager::direct(void *dst, const void *src, size_t n, bool to_device) {
  const Runtime &rt = Runtime::get();
  const Api &a = rt.api();
  LF_CUDA_CHECK(rt, a.MemcpyAsync(dst, src, n, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost,
                                  as_stream(stream_[0])));
  LF_CUDA_CHECK(rt, a.StreamSynchronize(as_stream(stream_[0])));
  ++stats_.direct_copies;
  return {};
}

Status TransferManager::staged_h2d(char *dst, const char *src, size_t n) {
  const Runtime &rt = Runtime::get();
  const Api &a = rt.api();
  const auto plan = chunk_plan(n, opt_.chunk);
  for (size_t i = 0; i < plan.size(); ++i) {
    const int b = static_cast<int>(i % 2);
    const auto [off, len] = plan[i];
    // Staging buffer b was last used by chunk i-2: wait for its DMA only,
    // while chunk i-1's DMA from the other buffer keeps running.
    if (i >= 2) LF_CUDA_CHECK(rt, a.EventSynchronize(as_event(event_[b])));
    std::memcpy(stage_[b], src + off, len);
    LF_CUDA_CHECK(rt, a.MemcpyAsync(dst + off, stage_[b], len, cudaMemcpyHostToDevice, as_stream(stream_[b])));
    LF_CUDA_CHECK(rt, a.EventRecord(as_event(event_[b]), as_stream(stream_[b])));
    ++stats_.staged_chunks;
  }
  for (int b = 0; b < 2; ++b) LF_CUDA_CHECK(rt, a.StreamSynchronize(as_stream(stream_[b])));
  return {};
}

Status TransferManager::staged_d2h(char *dst, const char *src, size_t n) {
  const Runtime &rt = Runtime::get();
  const Api &a = rt.api();
  const auto plan = chunk_plan(n, opt_.chunk);
  auto issue = [&](size_t i) -> Status {
    const int b = static_cast<int>(i % 2);
    LF_CUDA_CHECK(rt, a.MemcpyAsync(stage_[b], src + plan[i].first, plan[i].second, cudaMemcpyDeviceToHost,
                                    as_stream(stream_[b])));
    LF_CUDA_CHECK(rt, a.EventRecord(as_event(event_[b]), as_stream(stream_[b])));
    return {};
  };
  if (!plan.empty())
    if (auto st = issue(0); !st) return st;
  for (size_t i = 0; i < plan.size(); ++i) {
    // The DMA of chunk i+1 runs into the other buffer (freed when chunk i-1
    // was copied out in the previous iteration) while the CPU copies chunk i.
    if (i + 1 < plan.size())
      if (auto st = issue(i + 1); !st) return st;
    const int b = static_cast<int>(i % 2);
    LF_CUDA_CHECK(rt, a.EventSynchronize(as_event(event_[b])));
    std::memcpy(dst + plan[i].first, stage_[b], plan[i].second);
    ++stats_.staged_chunks;
  }
  return {};
}

Status TransferManager::h2d(void *dst, const void *src, size_t n) noexcept {
  if (n == 0) return {};
  if (!dst || !src) return LF_FAIL(LF_ERR_INVALID_ARG, "h2d: NULL pointer");
  std::lock_guard g(mu_);
  const Runtime &rt = Runtime::get();
  LF_CUDA_CHECK(rt, rt.api().SetDevice(opt_.device));
  // Queued pieces were added before this copy: they must land first.
  if (auto st = flush_locked(); !st) return st;
  Status st = is_pinned(src) ? direct(dst, src, n, true)
                             : staged_h2d(static_cast<char *>(dst), static_cast<const char *>(src), n);
  if (!st) return drain(), st;
  stats_.bytes_h2d += n;
  return {};
}

Status TransferManager::d2h(void *dst, const void *src, size_t n) noexcept {
  if (n == 0) return {};
  if (!dst || !src) return LF_FAIL(LF_ERR_INVALID_ARG, "d2h: NULL pointer");
  std::lock_guard g(mu_);
  const Runtime &rt = Runtime::get();
  LF_CUDA_CHECK(rt, rt.api().SetDevice(opt_.device));
  if (auto st = flush_locked(); !st) return st;
  Status st = is_pinned(dst) ? direct(dst, src, n, false)
                             : staged_d2h(static_cast<char *>(dst), static_cast<const char *>(src), n);
  if (!st) return drain(), st;
  stats_.bytes_d2h += n;
  return {};
}

Status TransferManager::add_h2d(void *dst, const void *src, size_t n) noexcept {
  if (n == 0) return {};
  if (!dst || !src) return LF_FAIL(LF_ERR_INVALID_ARG, "add_h2d: NULL pointer");
  if (n > opt_.small_limit) return h2d(dst, src, n);
  std::lock_guard g(mu_);
  if (!d2h_pieces_.empty() || h2d_fill_ + n > opt_.batch_bytes) {
    const Runtime &rt = Runtime::get();
    LF_CUDA_CHECK(rt, rt.api().SetDevice(opt_.device));
    if (auto st = flush_locked(); !st) return st;
  }
  try {
    h2d_pieces_.push_back(Piece{reinterpret_cast<uintptr_t>(dst), reinterpret_cast<uintptr_t>(src), n});
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "no memory to queue a transfer");
  }
  std::memcpy(static_cast<char *>(batch_host_) + h2d_fill_, src, n);
  h2d_fill_ += n;
  return {};
}

Status TransferManager::add_d2h(void *dst, const void *src, size_t n) noexcept {
  if (n == 0) return {};
  if (!dst || !src) return LF_FAIL(LF_ERR_INVALID_ARG, "add_d2h: NULL pointer");
  if (n > opt_.small_limit) return d2h(dst, src, n);
  std::lock_guard g(mu_);
  if (!h2d_pieces_.empty() || d2h_fill_ + n > opt_.batch_bytes) {
    const Runtime &rt = Runtime::get();
    LF_CUDA_CHECK(rt, rt.api().SetDevice(opt_.device));
    if (auto st = flush_locked(); !st) return st;
  }
  try {
    d2h_pieces_.push_back(Piece{reinterpret_cast<uintptr_t>(src), reinterpret_cast<uintptr_t>(dst), n});
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "no memory to queue a transfer");
  }
  d2h_fill_ += n;
  return {};
}

Status TransferManager::flush() noexcept {
  std::lock_guard g(mu_);
  const Runtime &rt = Runtime::get();
  if (h2d_pieces_.empty() && d2h_pieces_.empty()) return {};
  LF_CUDA_CHECK(rt, rt.api().SetDevice(opt_.device));
  return flush_locked();
}

Status TransferManager::flush_locked() {
  Status st = !h2d_pieces_.empty() ? flush_h2d() : !d2h_pieces_.empty() ? flush_d2h() : Status{};
  // A failed batch is dropped: its pieces' outcome is unknown, and the caller
  // learns it from this status.
  h2d_pieces_.clear();
  d2h_pieces_.clear();
  h2d_fill_ = d2h_fill_ = 0;
  if (!st) drain();
  return st;
}

Status TransferManager::flush_h2d() {
  const Runtime &rt = Runtime::get();
  const Api &a = rt.api();
  cudaStream_t s = as_stream(stream_[0]);
  const std::vector<Run> runs = coalesce(h2d_pieces_);
  if (runs.size() == 1) {
    // Contiguous on the device: one copy straight to the destination.
    LF_CUDA_CHECK(
        rt, a.MemcpyAsync(reinterpret_cast<void *>(runs[0].device), batch_host_, h2d_fill_, cudaMemcpyHostToDevice, s));
  } else {
    // One copy over the link into the device scratch, then device-side
    // scatter; all on one stream, so in order.
    LF_CUDA_CHECK(rt, a.MemcpyAsync(batch_device_, batch_host_, h2d_fill_, cudaMemcpyHostToDevice, s));
    for (const Run &r : runs) {
      LF_CUDA_CHECK(
          rt, a.MemcpyAsync(reinterpret_cast<void *>(r.device), static_cast<char *>(batch_device_) + r.packed_offset,
                            r.bytes, cudaMemcpyDeviceToDevice, s));
      ++stats_.device_copies;
    }
  }
  LF_CUDA_CHECK(rt, a.StreamSynchronize(s));
  ++stats_.batches;
  stats_.batched_pieces += h2d_pieces_.size();
  stats_.bytes_h2d += h2d_fill_;
  return {};
}

Status TransferManager::flush_d2h() {
  const Runtime &rt = Runtime::get();
  const Api &a = rt.api();
  cudaStream_t s = as_stream(stream_[0]);
  const std::vector<Run> runs = coalesce(d2h_pieces_);
  if (runs.size() == 1) {
    LF_CUDA_CHECK(rt, a.MemcpyAsync(batch_host_, reinterpret_cast<const void *>(runs[0].device), d2h_fill_,
                                    cudaMemcpyDeviceToHost, s));
  } else {
    for (const Run &r : runs) {
      LF_CUDA_CHECK(rt, a.MemcpyAsync(static_cast<char *>(batch_device_) + r.packed_offset,
                                      reinterpret_cast<const void *>(r.device), r.bytes, cudaMemcpyDeviceToDevice, s));
      ++stats_.device_copies;
    }
    LF_CUDA_CHECK(rt, a.MemcpyAsync(batch_host_, batch_device_, d2h_fill_, cudaMemcpyDeviceToHost, s));
  }
  LF_CUDA_CHECK(rt, a.StreamSynchronize(s));
  size_t off = 0;
  for (const Piece &p : d2h_pieces_) {
    std::memcpy(reinterpret_cast<void *>(p.host), static_cast<char *>(batch_host_) + off, p.bytes);
    off += p.bytes;
  }
  ++stats_.batches;
  stats_.batched_pieces += d2h_pieces_.size();
  stats_.bytes_d2h += d2h_fill_;
  return {};
}

TransferStats TransferManager::stats() const noexcept {
  std::lock_guard g(mu_);
  return stats_;
}

#else  // !LAVAFLOW_HAVE_CUDA

Result<std::unique_ptr<TransferManager>> TransferManager::create(const TransferOptions &) noexcept {
  // The runtime's own words, as in a build with CUDA but no driver.
  if (const auto &why = Runtime::get().available()) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why->c_str());
  return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without CUDA (LAVAFLOW_WITH_CUDA)");
}
TransferManager::~TransferManager() = default;
Status TransferManager::h2d(void *, const void *, size_t) noexcept { return LF_FAIL(LF_ERR_UNAVAILABLE, "no CUDA"); }
Status TransferManager::d2h(void *, const void *, size_t) noexcept { return LF_FAIL(LF_ERR_UNAVAILABLE, "no CUDA"); }
Status TransferManager::add_h2d(void *, const void *, size_t) noexcept {
  return LF_FAIL(LF_ERR_UNAVAILABLE, "no CUDA");
}
Status TransferManager::add_d2h(void *, const void *, size_t) noexcept {
  return LF_FAIL(LF_ERR_UNAVAILABLE, "no CUDA");
}
Status TransferManager::flush() noexcept { return {}; }
bool TransferManager::is_pinned(const void *) const noexcept { return false; }
TransferStats TransferManager::stats() const noexcept { return stats_; }

#endif

}  // namespace lf::cuda
