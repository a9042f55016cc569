// Export in one process, import in a forked child, both see each other's
// writes: memfd buffers, shared-pool segments, Vulkan OPAQUE_FD memory.
//
// Each test forks before anything in it can start a thread (Vulkan drivers
// do); the two processes talk over a socketpair (fds via SCM_RIGHTS) and
// never sleep. The child reports through its exit status; TearDown kills and
// reaps a child left behind by a failed assertion.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "core/net.hpp"
#include "lavaflow_features.h"
#include "mem_test_util.hpp"
#include "memory/allocator.hpp"
#include "memory/pool.hpp"

namespace lf {
namespace {

// What travels next to the fd: an ExportHandle without its fd.
struct WireHandle {
  int32_t kind = 0;
  uint32_t memory_type_index = 0;
  uint64_t allocation_size = 0, offset = 0, length = 0, segment_id = 0;
  uint8_t device_uuid[16] = {}, driver_uuid[16] = {};
  uint8_t dedicated = 0;
};

WireHandle to_wire(const ExportHandle &h) {
  WireHandle w;
  w.kind = static_cast<int32_t>(h.kind);
  w.memory_type_index = h.memory_type_index;
  w.allocation_size = h.allocation_size;
  w.offset = h.offset;
  w.length = h.length;
  w.segment_id = h.segment_id;
  std::memcpy(w.device_uuid, h.device_uuid, 16);
  std::memcpy(w.driver_uuid, h.driver_uuid, 16);
  w.dedicated = h.dedicated;
  return w;
}

ExportHandle from_wire(const WireHandle &w, int fd) {
  ExportHandle h;
  h.kind = static_cast<MemoryKind>(w.kind);
  h.fd = fd;
  h.memory_type_index = w.memory_type_index;
  h.allocation_size = w.allocation_size;
  h.offset = w.offset;
  h.length = w.length;
  h.segment_id = w.segment_id;
  std::memcpy(h.device_uuid, w.device_uuid, 16);
  std::memcpy(h.driver_uuid, w.driver_uuid, 16);
  h.dedicated = w.dedicated;
  return h;
}

#define CHILD_CHECK(cond)                                                           \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "child: check failed: %s (line %d)\n", #cond, __LINE__); \
      return 1;                                                                     \
    }                                                                               \
  } while (0)

class Ipc : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    parent_.reset(sv[0]);
    child_.reset(sv[1]);
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Fork; the child runs body(socket) and _exits with its return value.
  template <typename F>
  void spawn(F body) {
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      parent_.reset();
      int rc = 1;
      try {
        rc = body(child_.get());
      } catch (...) {
        rc = 2;
      }
      std::fflush(stderr);
      _exit(rc);
    }
    child_.reset();
  }

  int join() {
    int status = 0;
    EXPECT_EQ(waitpid(pid_, &status, 0), pid_);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  int sock() const { return parent_.get(); }

  Fd parent_, child_;
  pid_t pid_ = -1;
};

Deadline soon() { return deadline_in(60); }

TEST_F(Ipc, SharedBufferBothSeeEachOthersWrites) {
  constexpr size_t kSize = 1 << 20;
  spawn([](int s) {
    WireHandle w;
    auto fd = recv_fd(s, &w, sizeof w, soon());
    CHILD_CHECK(fd);
    auto view = import_buffer(from_wire(w, fd->get()));
    CHILD_CHECK(view);
    fd->reset();  // the import holds its own reference
    CHILD_CHECK((*view)->kind() == MemoryKind::host_shared);
    CHILD_CHECK((*view)->size() == kSize);
    CHILD_CHECK(test::check((*view)->data(), kSize, 11));
    test::fill((*view)->data(), kSize, 22);
    char ack = 'k';
    CHILD_CHECK(send_all(s, &ack, 1, soon()));
    return 0;
  });
  auto b = allocate(kSize, MemoryKind::host_shared);
  ASSERT_TRUE(b) << b.error().message;
  test::fill((*b)->data(), kSize, 11);
  const ExportHandle *h = (*b)->export_handle();
  ASSERT_NE(h, nullptr);
  WireHandle w = to_wire(*h);
  ASSERT_TRUE(send_fd(sock(), h->fd, &w, sizeof w));
  char ack = 0;
  ASSERT_TRUE(recv_all(sock(), &ack, 1, soon()));
  EXPECT_TRUE(test::check((*b)->data(), kSize, 22)) << "the child's writes are visible here";
  EXPECT_EQ(join(), 0);
}

TEST_F(Ipc, SharedPoolSegmentMappedOnceAddressedByOffset) {
  struct Desc {
    uint64_t offset, length;
    uint8_t seed;
  };
  spawn([](int s) {
    WireHandle w;
    auto fd = recv_fd(s, &w, sizeof w, soon());
    CHILD_CHECK(fd);
    auto seg = SharedSegment::map(fd->release(), w.allocation_size, w.segment_id);
    CHILD_CHECK(seg);
    CHILD_CHECK((*seg)->id() == w.segment_id);
    for (int i = 0; i < 3; ++i) {
      Desc d;
      CHILD_CHECK(recv_all(s, &d, sizeof d, soon()));
      CHILD_CHECK(d.offset + d.length <= (*seg)->size());
      char *p = static_cast<char *>((*seg)->base()) + d.offset;
      CHILD_CHECK(test::check(p, d.length, d.seed));
      test::fill(p, d.length, static_cast<uint8_t>(d.seed + 100));
      CHILD_CHECK(send_all(s, &d.seed, 1, soon()));
    }
    return 0;
  });
  auto pool = Pool::create_shared();
  ASSERT_TRUE(pool) << pool.error().message;
  std::vector<BufferPtr> bufs;
  for (size_t n : {1000, 5000, 70000}) {
    auto b = (*pool)->acquire(n);
    ASSERT_TRUE(b) << b.error().message;
    bufs.push_back(std::move(*b));
  }
  const SharedRef *r0 = bufs[0]->shared_ref();
  ASSERT_NE(r0, nullptr);
  WireHandle w;
  w.kind = static_cast<int32_t>(MemoryKind::host_shared);
  w.allocation_size = r0->segment_size;
  w.segment_id = r0->segment_id;
  ASSERT_TRUE(send_fd(sock(), r0->fd, &w, sizeof w));  // the segment, once
  for (size_t i = 0; i < bufs.size(); ++i) {
    const SharedRef *r = bufs[i]->shared_ref();
    ASSERT_EQ(r->segment_id, r0->segment_id);
    const uint8_t seed = static_cast<uint8_t>(i + 1);
    test::fill(bufs[i]->data(), r->length, seed);
    Desc d{r->offset, r->length, seed};
    ASSERT_TRUE(send_all(sock(), &d, sizeof d, soon()));
    uint8_t ack = 0;
    ASSERT_TRUE(recv_all(sock(), &ack, 1, soon()));
    EXPECT_EQ(ack, seed);
    EXPECT_TRUE(test::check(bufs[i]->data(), r->length, static_cast<uint8_t>(seed + 100))) << "buffer " << i;
  }
  EXPECT_EQ(join(), 0);
}

#if LAVAFLOW_HAVE_VULKAN
class IpcVulkan : public Ipc, public ::testing::WithParamInterface<MemoryKind> {};

TEST_P(IpcVulkan, OpaqueFdExportImport) {
  constexpr size_t kSize = (1 << 20) + 4096;
  spawn([](int s) {
    WireHandle w;
    auto fd = recv_fd(s, &w, sizeof w, soon());
    if (!fd && fd.error().code == LF_ERR_PEER_GONE) return 0;  // parent skipped: no Vulkan
    CHILD_CHECK(fd);
    auto view = import_buffer(from_wire(w, fd->get()));
    if (!view) std::fprintf(stderr, "child: import: %s\n", view.error().message.c_str());
    CHILD_CHECK(view);
    fd->reset();
    CHILD_CHECK((*view)->flags() & buffer_flags::imported);
    CHILD_CHECK((*view)->size() == kSize);
    CHILD_CHECK((*view)->data() != nullptr);
    CHILD_CHECK(test::check((*view)->data(), kSize, 33));
    test::fill((*view)->data(), kSize, 44);
    char ack = 'k';
    CHILD_CHECK(send_all(s, &ack, 1, soon()));
    return 0;
  });
  if (auto why = kind_unavailable_reason(GetParam())) {
    parent_.reset();
    EXPECT_EQ(join(), 0);
    GTEST_SKIP() << *why;
  }
  auto b = allocate(kSize, AllocOptions{.kind = GetParam(), .strict = true});
  ASSERT_TRUE(b) << b.error().message;
  if (!(*b)->data()) {
    parent_.reset();
    EXPECT_EQ(join(), 0);
    GTEST_SKIP() << "this device's " << memory_kind_name(GetParam()) << " memory is not host visible";
  }
  test::fill((*b)->data(), kSize, 33);
  const ExportHandle *h = (*b)->export_handle();
  ASSERT_NE(h, nullptr);
  WireHandle w = to_wire(*h);
  ASSERT_TRUE(send_fd(sock(), h->fd, &w, sizeof w));
  char ack = 0;
  ASSERT_TRUE(recv_all(sock(), &ack, 1, soon()));
  EXPECT_TRUE(test::check((*b)->data(), kSize, 44)) << "the child's writes are visible here";
  EXPECT_EQ(join(), 0);
}

INSTANTIATE_TEST_SUITE_P(Kinds, IpcVulkan,
                         ::testing::Values(MemoryKind::vulkan_device, MemoryKind::vulkan_host_visible),
                         [](const ::testing::TestParamInfo<MemoryKind> &p) {
                           return std::string(p.param == MemoryKind::vulkan_device ? "device" : "host_visible");
                         });
#endif

TEST(Import, RejectsWhatCannotBeImported) {
  ExportHandle h;
  h.kind = MemoryKind::host;
  h.fd = 0;
  auto r = import_buffer(h);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, LF_ERR_UNSUPPORTED);
  h.kind = MemoryKind::host_shared;
  h.fd = -1;
  EXPECT_EQ(import_buffer(h).error().code, LF_ERR_INVALID_ARG);
  // A claimed size beyond the file must be refused, not mapped (SIGBUS later).
  auto b = allocate(4096, MemoryKind::host_shared);
  ASSERT_TRUE(b);
  ExportHandle lie = *(*b)->export_handle();
  lie.allocation_size = 1 << 30;
  lie.length = 1 << 30;
  auto bad = import_buffer(lie);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, LF_ERR_PROTOCOL) << bad.error().message;
}

}  // namespace
}  // namespace lf
