// lf-bench-exec-kernels: throughput of the execution service's built-in
// kernels (src/exec/kernels) on each backend, beside the memory floor.
//
//   lf-bench-exec-kernels [--rounds N] [--n ELEMENTS] [--dim D]
//
// memcpy   the floor for the streaming ops: copying the 2 x 4n input bytes
//          (GB/s of bytes read + written, like add's figure).
// add      out = a + b on n floats; GB/s counts 12n bytes (2 reads, 1 write).
// sum      of n floats; GB/s counts 4n bytes.
// matmul   D x D x D; GFLOP/s counts 2 D^3.
// Rounds alternate the backends; each figure is the median over the rounds.
// The Vulkan figures include the copies into and out of the staging buffers
// (the kernels take host pointers), which is what a job pays.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "exec/kernels/kernels.hpp"

namespace {

double seconds(const std::function<void()> &fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void check(const lf::Status &st, const char *what) {
  if (!st) {
    std::fprintf(stderr, "%s: %s\n", what, st.error().message.c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char **argv) {
  int rounds = 7;
  size_t n = size_t{16} << 20;
  size_t dim = 512;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc)
      rounds = std::max(1, std::atoi(argv[++i]));
    else if (a == "--n" && i + 1 < argc)
      n = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--dim" && i + 1 < argc)
      dim = std::strtoull(argv[++i], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: %s [--rounds N] [--n ELEMENTS] [--dim D]\n", argv[0]);
      return 2;
    }
  }

  struct Backend {
    std::unique_ptr<lf::exec::Kernels> k;
    std::vector<double> add, sum, mm;
  };
  std::vector<Backend> backends;
  if (auto c = lf::exec::cpu_kernels()) backends.push_back({std::move(*c), {}, {}, {}});
  if (auto v = lf::exec::vulkan_kernels())
    backends.push_back({std::move(*v), {}, {}, {}});
  else
    std::printf("# vulkan: %s\n", v.error().message.c_str());

  std::vector<float> a(n), b(n), out(n);
  for (size_t i = 0; i < n; ++i) a[i] = static_cast<float>(i % 1000) * 1e-3f, b[i] = 1.0f;
  std::vector<float> ma(dim * dim, 0.5f), mb(dim * dim, 0.25f), mc(dim * dim);
  const lf::exec::CancelCheck never = [] { return false; };

  // Warm up: first-touch pages, staging buffers, pipelines' first dispatch.
  std::memcpy(out.data(), a.data(), n * sizeof(float));
  for (auto &be : backends) {
    check(be.k->add(a.data(), b.data(), out.data(), n, never), "add");
    check(be.k->matmul(ma.data(), mb.data(), mc.data(), dim, dim, dim, never), "matmul");
  }

  std::vector<double> floor;
  for (int r = 0; r < rounds; ++r) {
    floor.push_back(2.0 * 2 * n * sizeof(float) / 1e9 / seconds([&] {
                      std::memcpy(out.data(), a.data(), n * sizeof(float));
                      std::memcpy(out.data(), b.data(), n * sizeof(float));
                    }));
    for (auto &be : backends) {
      be.add.push_back(3.0 * n * sizeof(float) / 1e9 /
                       seconds([&] { check(be.k->add(a.data(), b.data(), out.data(), n, never), "add"); }));
      float s = 0;
      be.sum.push_back(1.0 * n * sizeof(float) / 1e9 /
                       seconds([&] { check(be.k->sum(a.data(), n, &s, never), "sum"); }));
      be.mm.push_back(2.0 * dim * dim * dim / 1e9 / seconds([&] {
                        check(be.k->matmul(ma.data(), mb.data(), mc.data(), dim, dim, dim, never), "matmul");
                      }));
    }
  }
  std::printf("# medians of %d rounds; n = %zu floats, matmul %zu^3\n", rounds, n, dim);
  std::printf("%-40s %12s %12s %16s\n", "backend", "add GB/s", "sum GB/s", "matmul GFLOP/s");
  std::printf("%-40s %12.2f %12s %16s\n", "memcpy (floor for add)", median(floor), "-", "-");
  for (auto &be : backends)
    std::printf("%-40s %12.2f %12.2f %16.2f\n", be.k->device().c_str(), median(be.add), median(be.sum), median(be.mm));
  return 0;
}
