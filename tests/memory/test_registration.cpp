// The memory registration hook (src/memory/registration.hpp and
// transport_registration in src/transport/transport.hpp): one registration
// per unit of memory and transport, kept across pool loans, shared by the
// blocks of a shared segment, and dropped before the memory is freed.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>

#include "memory/allocator.hpp"
#include "memory/pool.hpp"
#include "transport/transport.hpp"

namespace lf {
namespace {

/// A transport that only registers: counts its registrations and, when one
/// is dropped, whether the memory was still mapped.
class RegisteringTransport final : public Transport {
 public:
  std::atomic<int> registered{0}, dropped{0}, dropped_unmapped{0};
  const char *name() const noexcept override { return "registering"; }
  TransportCaps caps() const noexcept override { return {}; }
  std::optional<Cost> estimate(const CostQuery &) const noexcept override { return std::nullopt; }
  Result<std::string> start(World &) override { return std::string(); }
  Result<std::unique_ptr<Endpoint>> connect(World &, int, Deadline) override {
    return LF_FAIL(LF_ERR_UNSUPPORTED, "registration only");
  }
  Result<RegistrationHandle> register_memory(void *base, size_t length, MemoryKind) noexcept override {
    ++registered;
    auto *range = new std::pair<void *, size_t>(base, length);
    return RegistrationHandle(range, [this](void *p) {
      auto *r = static_cast<std::pair<void *, size_t> *>(p);
      // mincore fails with ENOMEM on an unmapped page.
      unsigned char v;
      const auto page = reinterpret_cast<uintptr_t>(r->first) & ~(uintptr_t{4095});
      if (mincore(reinterpret_cast<void *>(page), 1, &v) != 0) ++dropped_unmapped;
      ++dropped;
      delete r;
    });
  }
};

/// A transport that needs no registration (the default hook).
class PlainTransport final : public Transport {
 public:
  const char *name() const noexcept override { return "plain"; }
  TransportCaps caps() const noexcept override { return {}; }
  std::optional<Cost> estimate(const CostQuery &) const noexcept override { return std::nullopt; }
  Result<std::string> start(World &) override { return std::string(); }
  Result<std::unique_ptr<Endpoint>> connect(World &, int, Deadline) override {
    return LF_FAIL(LF_ERR_UNSUPPORTED, "registration only");
  }
};

TEST(Registration, MadeOncePerOwnerAndFailuresAreNotCached) {
  Registrations regs;
  int made = 0;
  auto ok = [&]() -> Result<RegistrationHandle> {
    return RegistrationHandle(new int(++made), [](void *p) { delete static_cast<int *>(p); });
  };
  auto bad = [&]() -> Result<RegistrationHandle> {
    ++made;
    return LF_FAIL(LF_ERR_IO, "refused");
  };
  ASSERT_FALSE(regs.get(1, bad).has_value());
  EXPECT_FALSE(regs.has(1));
  auto a = regs.get(1, ok), b = regs.get(1, ok), c = regs.get(2, ok);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->get(), b->get());
  EXPECT_NE(a->get(), c->get());
  EXPECT_EQ(made, 3);  // the failure, then one per owner
}

TEST(Registration, InstanceIdsAreUnique) {
  RegisteringTransport a;
  uint64_t first = a.instance_id();
  PlainTransport b;
  EXPECT_NE(first, b.instance_id());
}

TEST(Registration, APoolSlabIsRegisteredOnceAcrossLoans) {
  RegisteringTransport t;
  auto pool = Pool::create({.kind = MemoryKind::host});
  ASSERT_TRUE(pool) << pool.error().message;
  void *first_unit = nullptr;
  for (int i = 0; i < 5; ++i) {
    auto buf = (*pool)->acquire(3000);  // one 4 KiB block, back to the free list each time
    ASSERT_TRUE(buf);
    void *unit = nullptr;
    auto h = transport_registration(t, **buf, &unit);
    ASSERT_TRUE(h && *h);
    if (i == 0) first_unit = unit;
    EXPECT_EQ(unit, first_unit);
    EXPECT_LE(unit, (*buf)->data());
  }
  EXPECT_EQ(t.registered.load(), 1);
  EXPECT_EQ(t.dropped.load(), 0);  // kept with the cached block
  (*pool)->trim();                 // frees the block
  EXPECT_EQ(t.dropped.load(), 1);
  EXPECT_EQ(t.dropped_unmapped.load(), 0);
}

TEST(Registration, BlocksOfASharedSegmentShareOneRegistration) {
  RegisteringTransport t;
  auto pool = Pool::create({.kind = MemoryKind::host_shared});
  ASSERT_TRUE(pool) << pool.error().message;
  auto a = (*pool)->acquire(64 << 10), b = (*pool)->acquire(64 << 10);
  ASSERT_TRUE(a && b);
  ASSERT_NE((*a)->data(), (*b)->data());
  void *ua = nullptr, *ub = nullptr;
  auto ha = transport_registration(t, **a, &ua), hb = transport_registration(t, **b, &ub);
  ASSERT_TRUE(ha && hb);
  EXPECT_EQ(ha->get(), hb->get());
  EXPECT_EQ(ua, ub);
  const RegisteredRange r = (*a)->registered_range();
  EXPECT_GE(static_cast<char *>((*b)->data()) + (*b)->size(), static_cast<char *>(r.base));
  EXPECT_LE(static_cast<char *>((*b)->data()) + (*b)->size(), static_cast<char *>(r.base) + r.length);
  EXPECT_EQ(t.registered.load(), 1);
}

TEST(Registration, DroppedBeforeTheMemoryIsUnmapped) {
  RegisteringTransport t;
  {
    // A plain shared allocation is a memfd segment of its own, unmapped on free.
    auto buf = allocate(1 << 20, MemoryKind::host_shared);
    ASSERT_TRUE(buf) << buf.error().message;
    ASSERT_TRUE(transport_registration(t, **buf));
    auto big = allocate(8 << 20, MemoryKind::host);  // large host memory: mmap'd
    ASSERT_TRUE(big) << big.error().message;
    ASSERT_TRUE(transport_registration(t, **big));
    EXPECT_EQ(t.registered.load(), 2);
  }
  EXPECT_EQ(t.dropped.load(), 2);
  EXPECT_EQ(t.dropped_unmapped.load(), 0) << "a registration outlived its memory";
}

TEST(Registration, ATransportWithoutTheHookGetsAnEmptyHandle) {
  PlainTransport t;
  auto buf = allocate(4096, MemoryKind::host);
  ASSERT_TRUE(buf);
  auto h = transport_registration(t, **buf);
  ASSERT_TRUE(h);
  EXPECT_FALSE(*h);
}

}  // namespace
}  // namespace lf
