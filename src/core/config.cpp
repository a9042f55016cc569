#include "core/config.hpp"

#include <cassert>
#include <cstdlib>
#include <cstring>

#include "core/log.hpp"

namespace lf::config {

namespace {
using T = Type;
// The one table. Keep rows grouped by layer; lf-info prints them in this order.
constexpr Tunable kTunables[] = {
    // core
    {"LF_LOG_LEVEL", "warn", T::string, "Log threshold: error, warn, info, debug or trace"},
    {"LF_RANK", "", T::integer, "This process's rank when started without mpirun"},
    {"LF_SIZE", "", T::integer, "Number of ranks when started without mpirun"},
    {"LF_BOOTSTRAP", "", T::string, "Rendezvous served by rank 0: tcp://host:port or unix:/path (standalone launch)"},
    {"LF_BOOTSTRAP_TIMEOUT", "60", T::seconds, "Seconds to wait for every rank to arrive at bootstrap"},
    {"LF_BOOTSTRAP_MODE", "auto", T::string, "auto, mpi, env or single: how lf_init finds the world"},
    {"LF_JOB_KEY", "", T::string,
     "Secret shared by every rank of a standalone job; authenticates the bootstrap and every connection"},
    {"LF_JOB_KEY_FILE", "", T::string, "File (mode 600) holding the job key, when LF_JOB_KEY is unset"},
    {"LF_LOCATION_FILE", "", T::string,
     "JSON file whose fields override the detected process location (tests, unusual clusters)"},
    // memory (Layer 1)
    {"LF_HOST_PAGE_ALIGN_THRESHOLD", "16K", T::bytes,
     "Host buffers of at least this size are page aligned (smaller ones: 64 B)"},
    {"LF_HUGEPAGE_SIZE", "auto", T::string,
     "Huge page size for host-hugepage: auto (1G for requests >= 1 GiB when reserved, else 2M), 2M or 1G"},
    {"LF_POOL_CAP", "0", T::bytes, "Cap of every pool created without an explicit cap; 0 = the preset's"},
    {"LF_SHM_SEGMENT_SIZE", "64M", T::bytes,
     "Size of the memfd segments the shared pool carves buffers from (larger buffers get their own)"},
    {"LF_SHARED_POOL_PRESET", "default", T::string,
     "Sizing of a context's shared pool: default, high-throughput or low-memory"},
    {"LF_CUDA_LIBRARY", "", T::string,
     "CUDA runtime to dlopen; empty = libcudart.so, libcudart.so.13, libcudart.so.12"},
    // channels
    {"LF_TRANSPORTS", "", T::string, "Transports to allow, comma separated (shm,tcp); ^name excludes; empty = all"},
    {"LF_STRICT", "0", T::boolean, "Fail instead of falling back to a lesser transport or memory kind"},
    {"LF_CONNECT_TIMEOUT", "30", T::seconds, "Seconds lf_channel_open waits for the peer"},
    {"LF_SPIN_COUNT", "20000", T::integer, "Polls in a blocking wait before the waiter sleeps"},
    {"LF_PROGRESS_THREAD", "0", T::boolean, "Start a background progress thread at lf_init"},
    // channels by address (lf_listen / lf_connect)
    {"LF_EXEC_TOKEN", "", T::string,
     "Secret a listener and its clients share (lf_listen/lf_connect; hashed, never sent); required on tcp"},
    {"LF_EXEC_TOKEN_FILE", "", T::string, "File holding that secret (mode 0600), when LF_EXEC_TOKEN is empty"},
    // request channels (lavaflow_rpc.h)
    {"LF_RPC_QUEUE_MAX", "1024", T::integer,
     "Calls an rpc server holds queued or running; past it a call is answered LF_ERR_BUSY"},
    {"LF_RPC_DEADLINE_GRACE_MS", "100", T::integer,
     "Milliseconds an rpc client waits past a call's deadline for the server's answer before it ends the call itself"},
// transports: the rows of each transport's folder (tunables.inc there),
// in registry order; CMake lists the files (src/transport/CMakeLists.txt).
#include "transport_tunables.inc"
};
}  // namespace

std::span<const Tunable> all() noexcept { return kTunables; }

const Tunable *find(const char *name) noexcept {
  for (const Tunable &t : kTunables)
    if (std::strcmp(t.name, name) == 0) return &t;
  return nullptr;
}

bool is_set(const char *name) { return std::getenv(name) != nullptr; }

std::string get_string(const char *name) {
  const Tunable *t = find(name);
  assert(t && "unknown tunable");
  if (const char *v = std::getenv(name)) return v;
  return t ? t->default_value : "";
}

namespace {
bool parse_int(const std::string &s, int64_t &out) {
  if (s.empty()) return false;
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 0);
  if (errno || end == s.c_str()) return false;
  int64_t mul = 1;
  if (*end) {
    switch (*end) {
      case 'k':
      case 'K': mul = 1LL << 10; break;
      case 'm':
      case 'M': mul = 1LL << 20; break;
      case 'g':
      case 'G': mul = 1LL << 30; break;
      default: return false;
    }
    if (end[1] && std::strcmp(end + 1, "iB") != 0 && std::strcmp(end + 1, "B") != 0) return false;
  }
  out = v * mul;
  return true;
}

bool parse_bool(const std::string &s, bool &out) {
  static const char *yes[] = {"1", "true", "yes", "on", "y"};
  static const char *no[] = {"0", "false", "no", "off", "n", ""};
  for (const char *y : yes)
    if (strcasecmp(s.c_str(), y) == 0) return out = true, true;
  for (const char *n : no)
    if (strcasecmp(s.c_str(), n) == 0) return out = false, true;
  return false;
}
}  // namespace

int64_t get_int(const char *name) {
  int64_t v = 0;
  if (parse_int(get_string(name), v)) return v;
  const Tunable *t = find(name);
  if (std::getenv(name)) LF_LOG(warn, "%s=%s is not a number; using %s", name, std::getenv(name), t->default_value);
  if (t && parse_int(t->default_value, v)) return v;
  return 0;
}

bool get_bool(const char *name) {
  bool v = false;
  if (parse_bool(get_string(name), v)) return v;
  const Tunable *t = find(name);
  LF_LOG(warn, "%s=%s is not a boolean; using %s", name, std::getenv(name), t ? t->default_value : "0");
  return t && parse_bool(t->default_value, v) && v;
}

double get_seconds(const char *name) {
  std::string s = get_string(name);
  char *end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() && v >= 0) return v;
  const Tunable *t = find(name);
  LF_LOG(warn, "%s=%s is not a number of seconds; using %s", name, s.c_str(), t ? t->default_value : "0");
  return t ? std::strtod(t->default_value, nullptr) : 0;
}

const char *type_name(Type t) noexcept {
  switch (t) {
    case Type::integer: return "int";
    case Type::boolean: return "bool";
    case Type::string: return "string";
    case Type::seconds: return "seconds";
    case Type::bytes: return "bytes";
  }
  return "?";
}

}  // namespace lf::config
