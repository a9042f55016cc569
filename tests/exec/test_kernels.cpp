// The execution service's built-in kernels (src/exec/kernels), on the CPU and
// on the Vulkan device (Mesa's lavapipe on machines without a GPU), against a
// double-precision reference; cancel between chunks; concurrent callers.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "exec/kernels/kernels.hpp"
#include "exec/kernels/kernels_common.hpp"
#include "lavaflow_features.h"

namespace lf::exec {
namespace {

/// Whether Mesa's lavapipe ICD is where the Vulkan loader looks: then a
/// Vulkan build must be able to run the kernels, and failing to is a bug.
bool lavapipe_installed() {
  for (const char *var : {"VK_ICD_FILENAMES", "VK_DRIVER_FILES"})
    if (const char *v = std::getenv(var); v && *v) return std::string(v).find("lvp_icd") != std::string::npos;
  std::error_code ec;
  for (const char *dir : {"/usr/share/vulkan/icd.d", "/usr/local/share/vulkan/icd.d", "/etc/vulkan/icd.d"})
    for (const auto &e : std::filesystem::directory_iterator(dir, ec))
      if (e.path().filename().string().starts_with("lvp_icd")) return true;
  return false;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto &x : v) x = d(rng);
  return v;
}

const size_t kSizes[] = {0, 1, 63, 64, 65, 100003};

const CancelCheck kNever = [] { return false; };

struct Shape {
  size_t m, k, n;
};
const Shape kShapes[] = {{1, 1, 1}, {17, 33, 9}, {128, 256, 64}, {3, 1000, 5}};

/// k.matmul on random operands of shape `s`, each element checked against a
/// double-precision dot product (tolerance relative to the sum of |terms|).
void expect_matmul(Kernels &k, Shape s) {
  auto a = random_floats(s.m * s.k, 6), b = random_floats(s.k * s.n, 7);
  std::vector<float> out(s.m * s.n, NAN);
  auto st = k.matmul(a.data(), b.data(), out.data(), s.m, s.k, s.n, kNever);
  ASSERT_TRUE(st) << st.error().message;
  for (size_t i = 0; i < s.m; ++i)
    for (size_t j = 0; j < s.n; ++j) {
      double want = 0, mag = 0;
      for (size_t p = 0; p < s.k; ++p) {
        want += double(a[i * s.k + p]) * double(b[p * s.n + j]);
        mag += std::fabs(double(a[i * s.k + p]) * double(b[p * s.n + j]));
      }
      ASSERT_NEAR(out[i * s.n + j], want, 1e-5 * mag + 1e-7)
          << s.m << "x" << s.k << "x" << s.n << " at (" << i << ", " << j << ")";
    }
}

class KernelsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto k = GetParam() == "cpu" ? cpu_kernels() : vulkan_kernels();
    if (!k) {
      ASSERT_EQ(k.error().code, LF_ERR_UNAVAILABLE) << k.error().message;
      ASSERT_FALSE(k.error().message.empty());
      if (LAVAFLOW_HAVE_VULKAN && lavapipe_installed())
        FAIL() << "lavapipe is installed but the Vulkan kernels are unavailable: " << k.error().message;
      GTEST_SKIP() << k.error().message;
    }
    k_ = std::move(*k);
  }

  /// Elementwise result checked against the double reference, rounded to float.
  template <typename Ref>
  void expect_elementwise(const std::vector<float> &got, size_t n, Ref ref) {
    for (size_t i = 0; i < n; ++i) {
      const double want = ref(i);
      ASSERT_NEAR(got[i], want, 1e-6 * std::fabs(want) + 1e-30) << "element " << i << " of " << n;
    }
  }

  std::unique_ptr<Kernels> k_;
};

TEST_P(KernelsTest, DeviceNamesTheBackend) {
  if (GetParam() == "cpu")
    EXPECT_EQ(k_->device(), "cpu");
  else
    EXPECT_TRUE(k_->device().starts_with("vulkan:") && k_->device().size() > 7) << k_->device();
}

TEST_P(KernelsTest, AddMulScaleMatchTheReference) {
  for (size_t n : kSizes) {
    auto a = random_floats(n, 1), b = random_floats(n, 2);
    std::vector<float> out(n, NAN);
    auto st = k_->add(a.data(), b.data(), out.data(), n, kNever);
    ASSERT_TRUE(st) << st.error().message;
    expect_elementwise(out, n, [&](size_t i) { return double(a[i]) + double(b[i]); });

    std::fill(out.begin(), out.end(), NAN);
    st = k_->mul(a.data(), b.data(), out.data(), n, kNever);
    ASSERT_TRUE(st) << st.error().message;
    expect_elementwise(out, n, [&](size_t i) { return double(a[i]) * double(b[i]); });

    std::fill(out.begin(), out.end(), NAN);
    st = k_->scale(a.data(), -2.5f, out.data(), n, kNever);
    ASSERT_TRUE(st) << st.error().message;
    expect_elementwise(out, n, [&](size_t i) { return double(a[i]) * -2.5; });
  }
}

TEST_P(KernelsTest, InPlaceElementwiseIsAllowed) {
  const size_t n = 100003;
  auto a = random_floats(n, 3), b = random_floats(n, 4);
  auto out = a;
  ASSERT_TRUE(k_->add(out.data(), b.data(), out.data(), n, kNever));
  expect_elementwise(out, n, [&](size_t i) { return double(a[i]) + double(b[i]); });
}

TEST_P(KernelsTest, SumMatchesTheReference) {
  for (size_t n : kSizes) {
    auto a = random_floats(n, 5);
    double want = 0, mag = 0;
    for (float x : a) want += x, mag += std::fabs(x);
    float got = NAN;
    auto st = k_->sum(a.data(), n, &got, kNever);
    ASSERT_TRUE(st) << st.error().message;
    EXPECT_NEAR(got, want, 2e-6 * mag + 1e-6) << "n = " << n;
  }
  // Many chunks, and a value that float accumulation in one pass would lose.
  const size_t n = (size_t{1} << 22) + 7;
  std::vector<float> ones(n, 1.0f);
  float got = 0;
  ASSERT_TRUE(k_->sum(ones.data(), n, &got, kNever));
  EXPECT_EQ(got, static_cast<float>(n));
}

TEST_P(KernelsTest, MatmulMatchesTheReference) {
  for (Shape sh : kShapes) expect_matmul(*k_, sh);
}

TEST_P(KernelsTest, EmptyMatmulsAreZeroOrNothing) {
  std::vector<float> out(6, NAN);
  ASSERT_TRUE(k_->matmul(nullptr, nullptr, out.data(), 2, 0, 3, kNever));  // k = 0: all zeros
  for (float x : out) EXPECT_EQ(x, 0.0f);
  ASSERT_TRUE(k_->matmul(nullptr, nullptr, nullptr, 0, 4, 3, kNever));
  ASSERT_TRUE(k_->matmul(nullptr, nullptr, nullptr, 2, 4, 0, kNever));
}

TEST_P(KernelsTest, EmptyCancelCheckNeverCancels) {
  const size_t n = 1000;
  auto a = random_floats(n, 8);
  std::vector<float> out(n);
  ASSERT_TRUE(k_->scale(a.data(), 2.0f, out.data(), n, CancelCheck{}));
  EXPECT_EQ(out[999], a[999] * 2.0f);
}

TEST_P(KernelsTest, AlreadyCancelledCallsDoNothing) {
  int calls = 0;
  CancelCheck yes = [&] {
    ++calls;
    return true;
  };
  const size_t n = 1000;
  auto a = random_floats(n, 9);
  std::vector<float> out(n, 7.0f);
  float s = 7.0f;
  std::vector<Status> got;
  got.push_back(k_->add(a.data(), a.data(), out.data(), n, yes));
  got.push_back(k_->mul(a.data(), a.data(), out.data(), n, yes));
  got.push_back(k_->scale(a.data(), 3.0f, out.data(), n, yes));
  got.push_back(k_->sum(a.data(), n, &s, yes));
  got.push_back(k_->matmul(a.data(), a.data(), out.data(), 10, 100, 10, yes));
  got.push_back(k_->add(nullptr, nullptr, nullptr, 0, yes));  // even with nothing to do
  for (const auto &st : got) {
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, LF_ERR_CANCELLED) << st.error().message;
  }
  EXPECT_EQ(calls, 6);
  EXPECT_EQ(s, 7.0f);
  for (float x : out) ASSERT_EQ(x, 7.0f);  // no chunk ran
}

TEST_P(KernelsTest, CancelAfterTheFirstChunkStopsThere) {
  // Polled once per chunk: false for the first, true from the second on, so
  // exactly two polls and the rest of the work never runs.
  int calls = 0;
  CancelCheck second = [&] { return ++calls >= 2; };
  const size_t n = size_t{1} << 22;  // many chunks on either backend
  auto a = random_floats(n, 10);
  std::vector<float> out(n, 7.0f);
  auto expect_stopped = [&](const Status &st, const char *op, size_t last = 0) {
    ASSERT_FALSE(st) << op;
    EXPECT_EQ(st.error().code, LF_ERR_CANCELLED) << op << ": " << st.error().message;
    EXPECT_EQ(calls, 2) << op;
    EXPECT_EQ(out[last ? last : n - 1], 7.0f) << op << ": the last chunk ran";
    calls = 0;
    std::fill(out.begin(), out.end(), 7.0f);
  };
  expect_stopped(k_->add(a.data(), a.data(), out.data(), n, second), "add");
  expect_stopped(k_->mul(a.data(), a.data(), out.data(), n, second), "mul");
  expect_stopped(k_->scale(a.data(), 2.0f, out.data(), n, second), "scale");
  float s = 7.0f;
  auto st = k_->sum(a.data(), n, &s, second);
  expect_stopped(st, "sum");
  EXPECT_EQ(s, 7.0f);
  expect_stopped(k_->matmul(a.data(), a.data(), out.data(), 512, 512, 512, second), "matmul", 512 * 512 - 1);
  // A flag flipped from another thread is seen the same way (the service's token).
  std::atomic<bool> token{false};
  std::atomic<int> polls{0};
  CancelCheck by_token = [&] {
    if (polls.fetch_add(1) == 1) std::thread([&] { token.store(true); }).join();
    return token.load();
  };
  st = k_->add(a.data(), a.data(), out.data(), n, by_token);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, LF_ERR_CANCELLED);
  EXPECT_EQ(polls.load(), 2);
}

TEST_P(KernelsTest, ConcurrentCallersGetTheirOwnResults) {
  constexpr int kThreads = 4, kRounds = 8;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      const size_t n = 100003 + static_cast<size_t>(t) * 1000;
      auto a = random_floats(n, 100 + t), b = random_floats(n, 200 + t);
      std::vector<float> out(n);
      std::vector<float> mm(17 * 9);
      for (int r = 0; r < kRounds; ++r) {
        if (!k_->add(a.data(), b.data(), out.data(), n, kNever)) ++bad;
        for (size_t i = 0; i < n; i += 97)
          if (out[i] != a[i] + b[i]) ++bad;
        float s = 0;
        if (!k_->sum(a.data(), n, &s, kNever)) ++bad;
        double want = 0, mag = 0;
        for (float x : a) want += x, mag += std::fabs(x);
        if (std::fabs(s - want) > 2e-6 * mag + 1e-6) ++bad;
        if (!k_->matmul(a.data(), b.data(), mm.data(), 17, 33, 9, kNever)) ++bad;
        for (size_t i = 0; i < 17; ++i)
          for (size_t j = 0; j < 9; ++j) {
            double w = 0, m = 0;
            for (size_t p = 0; p < 33; ++p) {
              w += double(a[i * 33 + p]) * double(b[p * 9 + j]);
              m += std::fabs(double(a[i * 33 + p]) * double(b[p * 9 + j]));
            }
            if (std::fabs(mm[i * 9 + j] - w) > 1e-5 * m + 1e-7) ++bad;
          }
      }
    });
  for (auto &th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_P(KernelsTest, BadArgumentsAreInvalidArg) {
  float x = 1, out = 0;
  auto expect_invalid = [](const Status &st) {
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, LF_ERR_INVALID_ARG);
    EXPECT_FALSE(st.error().message.empty());
  };
  expect_invalid(k_->add(nullptr, &x, &out, 1, kNever));
  expect_invalid(k_->mul(&x, nullptr, &out, 1, kNever));
  expect_invalid(k_->scale(&x, 2.0f, nullptr, 1, kNever));
  expect_invalid(k_->sum(&x, 1, nullptr, kNever));
  expect_invalid(k_->sum(nullptr, 1, &out, kNever));
  expect_invalid(k_->matmul(&x, &x, &out, SIZE_MAX / 2, 4, 1, kNever));
  expect_invalid(k_->matmul(nullptr, &x, &out, 1, 1, 1, kNever));
  expect_invalid(k_->add(&x, &x, &out, SIZE_MAX, kNever));
}

INSTANTIATE_TEST_SUITE_P(Backends, KernelsTest, ::testing::Values("cpu", "vulkan"),
                         [](const auto &p) { return p.param; });

TEST(VulkanKernels, RunOrSayWhyNot) {
  auto k = vulkan_kernels();
  if (k) {
    EXPECT_TRUE((*k)->device().starts_with("vulkan:"));
    std::printf("kernels run on %s\n", (*k)->device().c_str());
    return;
  }
  EXPECT_EQ(k.error().code, LF_ERR_UNAVAILABLE);
  EXPECT_FALSE(k.error().message.empty());
  if (LAVAFLOW_HAVE_VULKAN && lavapipe_installed())
    ADD_FAILURE() << "lavapipe is installed but the Vulkan kernels are unavailable: " << k.error().message;
}

TEST(VulkanKernels, SmallStagingBuffersChunkEveryOp) {
  // 16 KiB buffers: 4096 floats per chunk, matmul in column panels of b
  // and row blocks (128x256x64: 4 panels of 16 columns, blocks of 16 rows;
  // 3x1000x5: panels of 4 and 1 columns; 17x33x9: rows padded to 12).
  auto k = detail::vulkan_kernels_capped(16384);
  if (!k) {
    if (LAVAFLOW_HAVE_VULKAN && lavapipe_installed()) FAIL() << k.error().message;
    GTEST_SKIP() << k.error().message;
  }
  const size_t n = 100003;
  auto a = random_floats(n, 11), b = random_floats(n, 12);
  std::vector<float> out(n, NAN);
  ASSERT_TRUE((*k)->add(a.data(), b.data(), out.data(), n, kNever));
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], a[i] + b[i]) << i;
  float s = NAN;
  ASSERT_TRUE((*k)->sum(a.data(), n, &s, kNever));
  double want = 0, mag = 0;
  for (float x : a) want += x, mag += std::fabs(x);
  EXPECT_NEAR(s, want, 2e-6 * mag + 1e-6);
  for (Shape sh : kShapes) expect_matmul(**k, sh);
  // A panel of b four columns wide that does not fit one buffer cannot be staged.
  std::vector<float> big(2000 * 2, 1.0f);
  auto st = (*k)->matmul(big.data(), big.data(), out.data(), 2, 2000, 2, kNever);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, LF_ERR_UNSUPPORTED) << st.error().message;
}

TEST(VulkanKernels, TwoInstancesShareTheDevice) {
  auto a = vulkan_kernels();
  if (!a) GTEST_SKIP() << a.error().message;
  auto b = vulkan_kernels();
  ASSERT_TRUE(b) << b.error().message;
  float x[3] = {1, 2, 3}, out = 0;
  ASSERT_TRUE((*a)->sum(x, 3, &out, kNever));
  EXPECT_EQ(out, 6.0f);
  a->reset();
  ASSERT_TRUE((*b)->sum(x, 3, &out, kNever));
  EXPECT_EQ(out, 6.0f);
}

}  // namespace
}  // namespace lf::exec
