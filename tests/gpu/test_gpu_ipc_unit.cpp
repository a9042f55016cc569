// The pieces of GPU IPC that judge what a peer sent, in one process: device
// identity comparison, announcement records, and imports of bad fds (pipes,
// short or unsealed memfds). The import of a real Vulkan allocation runs on
// lavapipe; CUDA parts skip with CUDA's error text.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "lavaflow_features.h"
#include "memory/allocator.hpp"
#include "memory/cuda_rt.hpp"
#include "memory/device_copy.hpp"
#include "transport/gpu/gpu_ipc.hpp"

namespace lf::gpu_ipc {
namespace {

TEST(GpuIdentity, MismatchNeedsNoCommonDevice) {
  EXPECT_FALSE(identity_mismatch(Api::vulkan, "aa/11,bb/22", "cc/33,bb/22"));
  auto why = identity_mismatch(Api::vulkan, "aa/11", "bb/11");
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("no Vulkan device in common"), std::string::npos) << *why;
  // Symmetric: both ranks must reach the same verdict and text.
  EXPECT_EQ(*why, *identity_mismatch(Api::vulkan, "bb/11", "aa/11"));
  EXPECT_TRUE(identity_mismatch(Api::cuda, "", "0000:3b:00.0"));
  EXPECT_TRUE(identity_listed("0000:3b:00.0,0000:5e:00.0", "0000:5e:00.0"));
  EXPECT_FALSE(identity_listed("0000:3b:00.0", "0000:3b:00"));
  EXPECT_FALSE(identity_listed("0000:3b:00.0", ""));
}

TEST(GpuIdentity, LocalVulkanIdentityOrReason) {
  auto id = local_identity(Api::vulkan);
  if (!id) GTEST_SKIP() << id.error().message;
  // "<32 hex>/<32 hex>" per device.
  EXPECT_GE(id->size(), 65u);
  EXPECT_EQ((*id)[32], '/');
  auto buf = allocate(4096, AllocOptions{.kind = MemoryKind::vulkan_device, .strict = true});
  ASSERT_TRUE(buf) << buf.error().message;
  const ExportHandle *h = (*buf)->export_handle();
  ASSERT_NE(h, nullptr);
  // The device an allocation lives on is one this process publishes.
  EXPECT_TRUE(identity_listed(*id, identity_of(*h, (*buf)->device()))) << *id;
  EXPECT_NE(h->segment_id, 0u);  // allocation ids key the peer's import cache
}

TEST(GpuIdentity, CudaIdentityListsEveryDeviceCudaSees) {
  // The identity comes from sysfs (lf_init must not initialise CUDA); where
  // CUDA runs, every device it reports must be in it, or no CUDA buffer
  // would ever travel by descriptor.
  auto id = local_identity(Api::cuda);
  if (auto why = cuda::Runtime::get().available())
    GTEST_SKIP() << *why << (id ? "" : "; identity: " + id.error().message);
  ASSERT_TRUE(id) << id.error().message;
  ExportHandle h;
  h.kind = MemoryKind::cuda_device;
  for (int d = 0; d < cuda::Runtime::get().device_count(); ++d)
    EXPECT_TRUE(identity_listed(*id, identity_of(h, d)))
        << "device " << d << " (" << identity_of(h, d) << ") missing from " << *id;
}

TEST(GpuCache, SenderMirrorPredictsTheReceiversEvictions) {
  // The sender announces an id exactly when its mirror lacks it; the
  // receiver must then never meet an id it evicted without a new announcement.
  IdLru<char> sender(4);
  IdLru<int> receiver(4);
  uint64_t seq[] = {1, 2, 3, 4, 1, 5, 2, 6, 1, 1, 7, 8, 9, 3, 1, 2, 10, 4};
  int announcements = 0;
  for (uint64_t id : seq) {
    const bool announce = !sender.touch(id);
    if (announce) {
      sender.insert(id, 0);
      ++announcements;
    }
    // Receiver: a cached id needs no announcement; an uncached one must have one.
    if (receiver.touch(id)) {
      ASSERT_FALSE(announce) << "id " << id << " re-announced although the receiver still has it";
    } else {
      ASSERT_TRUE(announce) << "id " << id << " was evicted by the receiver but not announced again";
      receiver.insert(id, static_cast<int>(id));
    }
    ASSERT_LE(receiver.size(), 4u);
  }
  EXPECT_GT(announcements, 10);  // evictions did happen
  EXPECT_EQ(*receiver.touch(4), 4);
}

Record good_vulkan_record(uint64_t size) {
  Record r{};
  r.version = kRecordVersion;
  r.kind = static_cast<int32_t>(MemoryKind::vulkan_device);
  r.allocation_size = size;
  return r;
}

TEST(GpuRecord, ChecksRejectMalformedRecords) {
  Record r = good_vulkan_record(4096);
  EXPECT_EQ(check_record(r, Api::vulkan), nullptr);
  EXPECT_NE(check_record(r, Api::cuda), nullptr);  // a Vulkan record on cuda-ipc
  Record bad = r;
  bad.version = 99;
  EXPECT_NE(check_record(bad, Api::vulkan), nullptr);
  bad = r;
  bad.kind = static_cast<int32_t>(MemoryKind::host_shared);
  EXPECT_NE(check_record(bad, Api::vulkan), nullptr);
  bad.kind = 1234;
  EXPECT_NE(check_record(bad, Api::vulkan), nullptr);
  bad = r;
  bad.allocation_size = 0;
  EXPECT_NE(check_record(bad, Api::vulkan), nullptr);
  bad.allocation_size = kMaxAllocation + 1;
  EXPECT_NE(check_record(bad, Api::vulkan), nullptr);
  bad = r;
  bad.dedicated = 7;
  EXPECT_NE(check_record(bad, Api::vulkan), nullptr);
  Record c{};
  c.version = kRecordVersion;
  c.kind = static_cast<int32_t>(MemoryKind::cuda_device);
  c.allocation_size = 1 << 20;
  EXPECT_EQ(check_record(c, Api::cuda), nullptr);
  std::memset(c.bus_id, 'x', sizeof c.bus_id);  // no terminating NUL
  EXPECT_NE(check_record(c, Api::cuda), nullptr);
}

TEST(GpuImport, RefusesFdsThatAreNotTheAnnouncedMemory) {
  const Record r = good_vulkan_record(1 << 20);
  // No fd at all.
  auto m = import(r, Fd());
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, LF_ERR_PROTOCOL);
  // A pipe.
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ::close(p[1]);
  m = import(r, Fd(p[0]));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, LF_ERR_PROTOCOL);
  EXPECT_NE(m.error().message.find("pipe"), std::string::npos) << m.error().message;
  // A memfd shorter than the allocation it claims to be: mapping it would
  // SIGBUS on the first access past its end.
  int short_fd = memfd_create("short", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(short_fd, 0);
  ASSERT_EQ(ftruncate(short_fd, 4096), 0);
  ASSERT_EQ(fcntl(short_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  m = import(r, Fd(short_fd));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, LF_ERR_PROTOCOL);
  EXPECT_NE(m.error().message.find("claims"), std::string::npos) << m.error().message;
  // Large enough but not sealed: the peer could shrink it later.
  int open_fd = memfd_create("unsealed", MFD_CLOEXEC);
  ASSERT_GE(open_fd, 0);
  ASSERT_EQ(ftruncate(open_fd, 1 << 20), 0);
  m = import(r, Fd(open_fd));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, LF_ERR_PROTOCOL);
  EXPECT_NE(m.error().message.find("sealed"), std::string::npos) << m.error().message;
}

#if LAVAFLOW_HAVE_VULKAN
class Sink final : public ReleaseSink {
 public:
  void release(uint64_t cookie) noexcept override { released = cookie; }
  uint64_t released = 0;
};

TEST(GpuImport, ViewsOfARealAllocationSeeItsBytes) {
  if (auto why = kind_unavailable_reason(MemoryKind::vulkan_device)) GTEST_SKIP() << *why;
  // Export and import within one process: the same memory twice.
  auto buf = allocate(1 << 16, AllocOptions{.kind = MemoryKind::vulkan_device, .strict = true});
  ASSERT_TRUE(buf) << buf.error().message;
  const ExportHandle *h = (*buf)->export_handle();
  ASSERT_NE(h, nullptr);
  SendSync sync;
  ASSERT_TRUE(sync.before_publish(**buf));
  Record r = make_record(*h, (*buf)->device(), sync);
  ASSERT_EQ(check_record(r, Api::vulkan), nullptr);
  auto m = import(r, Fd(fcntl(h->fd, F_DUPFD_CLOEXEC, 0)));
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ((*m)->size(), h->allocation_size);

  std::vector<uint32_t> v(1024);
  for (uint32_t i = 0; i < v.size(); ++i) v[i] = i * 2654435761u;
  ASSERT_TRUE(buffer_write(**buf, 4096, v.data(), v.size() * 4));

  auto sink = std::make_shared<Sink>();
  {
    View view(*m, 4096, v.size() * 4, sink, 42);
    EXPECT_EQ(view.kind(), MemoryKind::vulkan_device);
    EXPECT_EQ(view.size(), v.size() * 4);
    EXPECT_TRUE(view.flags() & buffer_flags::imported);
    std::vector<uint32_t> got(v.size());
    ASSERT_TRUE(buffer_read(view, 0, got.data(), got.size() * 4));
    EXPECT_EQ(got, v);
    // The staged path addresses the view through its region, offset included.
    std::fill(got.begin(), got.end(), 0);
    ASSERT_TRUE(buffer_read(view, 0, got.data(), got.size() * 4, {.force_staging = true}));
    EXPECT_EQ(got, v);
    auto region = vk::region_of(view);
    ASSERT_TRUE(region) << region.error().message;
    EXPECT_EQ(region->offset, 4096u);
    EXPECT_EQ(sink->released, 0u);
  }
  EXPECT_EQ(sink->released, 42u);  // freeing the view releases the sender's buffer
}
#endif

}  // namespace
}  // namespace lf::gpu_ipc
