// Helpers for the memory tests: what the kernel says about a mapping.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace lf::test {

/// The /proc/self/smaps block of the mapping that contains `addr` ("" if none).
inline std::string smaps_of(const void *addr) {
  std::ifstream f("/proc/self/smaps");
  std::string line, block;
  bool in = false;
  const auto a = reinterpret_cast<uintptr_t>(addr);
  while (std::getline(f, line)) {
    unsigned long lo = 0, hi = 0;
    // Header lines look like "7f0000000000-7f0000200000 rw-p ..."; field
    // lines ("AnonHugePages:  0 kB") never parse as two hex numbers.
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {
      if (in) return block;
      in = a >= lo && a < hi;
      block.clear();
    }
    if (in) block += line + "\n";
  }
  return in ? block : "";
}

/// A "Name:   123 kB" field of an smaps block or /proc/self/status, in kB (-1 if absent).
inline long field_kb(const std::string &text, const char *name) {
  std::istringstream in(text);
  std::string line;
  const size_t n = std::strlen(name);
  while (std::getline(in, line)) {
    if (line.compare(0, n, name) == 0 && line.size() > n && line[n] == ':') return std::atol(line.c_str() + n + 1);
  }
  return -1;
}

inline std::string read_file(const char *path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// VmLck of this process in kB.
inline long vm_locked_kb() { return field_kb(read_file("/proc/self/status"), "VmLck"); }

/// Number of resident pages in [p, p + len) according to mincore.
inline size_t resident_pages(const void *p, size_t len) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const auto a = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const size_t span = reinterpret_cast<uintptr_t>(p) + len - a;
  std::vector<unsigned char> vec((span + page - 1) / page);
  if (mincore(reinterpret_cast<void *>(a), span, vec.data()) != 0) return 0;
  size_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

inline long read_long(const char *path) {
  FILE *f = std::fopen(path, "re");
  if (!f) return -1;
  long v = -1;
  if (std::fscanf(f, "%ld", &v) != 1) v = -1;
  std::fclose(f);
  return v;
}

inline long free_hugepages_2m() { return read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"); }
inline long nr_hugepages() { return read_long("/proc/sys/vm/nr_hugepages"); }

/// Fill with a pattern derived from `seed`; check it.
inline void fill(void *p, size_t n, uint8_t seed) {
  auto *c = static_cast<uint8_t *>(p);
  for (size_t i = 0; i < n; ++i) c[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 12));
}
inline bool check(const void *p, size_t n, uint8_t seed) {
  auto *c = static_cast<const uint8_t *>(p);
  for (size_t i = 0; i < n; ++i)
    if (c[i] != static_cast<uint8_t>(seed + i * 7 + (i >> 12))) return false;
  return true;
}

}  // namespace lf::test
