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
    // shm transport
    {"LF_SHM_RING_SLOTS", "1024", T::integer,
     "shm: 64-byte slots per direction of a channel's message ring (power of two; set by the accepting rank)"},
    {"LF_SHM_FIFO_BYTES", "2M", T::bytes,
     "shm: per direction bytes of the fifo that carries eager payloads and pipelined chunks (power of two)"},
    {"LF_SHM_EAGER_LIMIT", "16K", T::bytes,
     "shm: messages up to this size are copied into the fifo at once (above: pipelined or CMA)"},
    {"LF_SHM_CHUNK", "128K", T::bytes,
     "shm: chunk of a pipelined copy (sender copies one while the receiver copies another)"},
    {"LF_SHM_CMA_THRESHOLD", "0", T::bytes,
     "shm: messages of at least this size are read by the receiver with process_vm_readv (single copy); 0 = never"},
    {"LF_SHM_UNEXPECTED_MAX", "64M", T::bytes,
     "shm: bytes of unexpected messages copied out of a channel's ring; beyond it the ring stops draining "
     "(backpressure)"},
    {"LF_SHM_HOLD_US", "50", T::integer,
     "shm: microseconds a message stays in the ring when no receive at all is posted, before it is copied out as "
     "unexpected (a receive posted meanwhile takes it with one copy); 0 = copy out at once"},
    {"LF_SHM_SPIN", "1000", T::integer, "shm: polls of the ring in a wait before sleeping on the futex doorbell"},
    {"LF_SHM_HUP_CHECK", "1024", T::integer, "shm: progress calls between checks of the peer's socket for a hang-up"},
    // tcp transport
    {"LF_TCP_PORT", "0", T::integer, "Port the tcp transport listens on (0.0.0.0); 0 = any free port"},
    {"LF_TCP_MAX_MESSAGE", "16G", T::bytes,
     "Largest tcp message a peer may announce; longer headers are a protocol error (set alike on all ranks)"},
    {"LF_TCP_UNEXPECTED_BYTES", "64M", T::bytes,
     "Per tcp channel: bytes of unexpected messages copied out of the socket; a larger backlog waits in the socket"},
    {"LF_TCP_SOCKBUF", "0", T::bytes, "SO_SNDBUF/SO_RCVBUF of tcp channels; 0 = kernel autotuning"},
    {"LF_TCP_KEEPALIVE", "10", T::seconds,
     "Idle seconds before TCP keepalive probes notice a vanished peer host; 0 = off"},
    // mpi transport
    {"LF_MPI_EAGER_LIMIT", "1K", T::bytes,
     "mpi transport: messages up to this size travel with their envelope in one MPI message (one copy)"},
    {"LF_MPI_EAGER_SLOTS", "16", T::integer, "mpi transport: eager receives kept posted per channel"},
    {"LF_MPI_CHUNK", "8M", T::bytes,
     "mpi transport: largest MPI message of a payload; also the pinned staging chunk for device memory"},
    {"LF_MPI_STREAMS", "8", T::integer,
     "mpi transport: channels per pair of ranks that get a direct stream (one communicator each, made at start); "
     "0 = every message goes through the envelope ring"},
    {"LF_MPI_CUDA", "auto", T::string,
     "mpi transport and device memory: auto (MPIX_Query_cuda_support), on (pass device pointers), off (stage)"},
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
