// Where a process runs, in the terms that decide whether two processes can
// share memory: the kernel instance (boot id) and the namespaces, not just
// the hostname.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.hpp"

namespace lf {

struct ProcessLocation {
  std::string hostname;
  std::string boot_id;  ///< /proc/sys/kernel/random/boot_id: one per kernel boot.
  uint64_t ipc_ns = 0;  ///< Inode of /proc/self/ns/ipc.
  uint64_t mnt_ns = 0;  ///< Inode of /proc/self/ns/mnt (filesystem sockets, /dev/shm).
  uint64_t net_ns = 0;  ///< Inode of /proc/self/ns/net (abstract Unix sockets, loopback).
  uint64_t pid_ns = 0;  ///< Inode of /proc/self/ns/pid (pids are only comparable within one).
  int64_t pid = 0;
  uint32_t uid = 0;
  int numa_node = -1;                  ///< Node of the CPU the process started on, -1 if unknown.
  std::string cpuset;                  ///< Allowed CPUs as a list, e.g. "0-3,8".
  std::vector<std::string> gpus;       ///< PCI bus ids of GPUs visible to the process.
  std::vector<std::string> addresses;  ///< Non-loopback IPv4 addresses of this host (TCP endpoints).

  /// Detect the calling process's location, then apply LF_LOCATION_FILE if set.
  static Result<ProcessLocation> detect();
  /// Alias of detect(), named after the seed's ProcessLocation::from_hostname().
  static Result<ProcessLocation> from_hostname() { return detect(); }
  /// A location read entirely from a JSON file (missing fields stay empty).
  static Result<ProcessLocation> from_config(const std::string &path);
  /// Parse/serialise the JSON form used by the bootstrap exchange and config files.
  static Result<ProcessLocation> from_json(const std::string &json);
  std::string to_json() const;
  /// Override the fields present in `json` (a partial location).
  Status apply_json(const std::string &json);

  bool operator==(const ProcessLocation &) const = default;
};

}  // namespace lf
