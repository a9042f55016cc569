// lf-info: what this build and this machine offer, like ucx_info.
//   lf-info            everything (features, location, topology, memory kinds,
//                      transports, job key, tunables)
//   lf-info -c         tunables only
//   lf-info -l         this process's location as JSON
#include <cstdio>
#include <cstring>
#include <string>

#include "core/bootstrap.hpp"
#include "core/config.hpp"
#include "core/job_key.hpp"
#include "core/location.hpp"
#include "core/topology.hpp"
#include "lavaflow_features.h"
#include "memory/allocator.hpp"
#include "transport/transport.hpp"

using namespace lf;

namespace {

void features() { std::printf("# lavaflow %s\n# Build features\n%s", LF_VERSION_STRING, LAVAFLOW_FEATURE_SUMMARY); }

void location() {
  std::printf("\n# Process location\n");
  auto loc = ProcessLocation::detect();
  if (!loc) {
    std::printf("  unavailable: %s\n", loc.error().message.c_str());
    return;
  }
  std::printf("  hostname   %s\n  boot id    %s\n  namespaces ipc:%llu mnt:%llu net:%llu pid:%llu\n",
              loc->hostname.c_str(), loc->boot_id.c_str(), (unsigned long long)loc->ipc_ns,
              (unsigned long long)loc->mnt_ns, (unsigned long long)loc->net_ns, (unsigned long long)loc->pid_ns);
  std::printf("  pid %lld, uid %u, NUMA node %d, CPUs %s\n", (long long)loc->pid, loc->uid, loc->numa_node,
              loc->cpuset.c_str());
  std::string addrs;
  for (auto &a : loc->addresses) addrs += (addrs.empty() ? "" : ", ") + a;
  std::printf("  addresses  %s\n", addrs.empty() ? "(none but loopback)" : addrs.c_str());
}

void topology() {
  const Topology &t = Topology::get();
  std::printf("\n# Topology (%s)\n  %d CPUs, %zu NUMA node(s)\n", t.source.c_str(), t.cpus, t.numa_nodes.size());
  for (auto &n : t.numa_nodes)
    std::printf("  node %d: CPUs %s, %.1f GiB\n", n.os_index, n.cpus.c_str(), n.memory_bytes / double(1 << 30));
  if (t.gpus.empty()) std::printf("  GPUs: none found on the PCI bus\n");
  for (auto &g : t.gpus) std::printf("  GPU %s %s %s\n", g.pci_bus_id.c_str(), g.vendor.c_str(), g.name.c_str());
}

void memory_kinds() {
  std::printf("\n# Memory kinds\n");
  for (int k = 0; k < LF_MEM_KIND_COUNT_; ++k) {
    auto kind = static_cast<MemoryKind>(k);
    auto why = kind_unavailable_reason(kind);
    std::printf("  %-20s %s%s\n", memory_kind_name(kind), why ? "unavailable: " : "available", why ? why->c_str() : "");
  }
}

void transports() {
  std::printf("\n# Transports (priority order)\n");
  for (auto &t : make_transports()) {
    TransportCaps c = t->caps();
    std::string scopes = std::string(c.self ? "self " : "") + (c.local ? "local " : "") + (c.remote ? "remote" : "");
    auto why = t->unavailable_reason();
    std::printf("  %-11s scopes: %-18s zero-copy: %-3s %s%s\n", t->name(), scopes.c_str(), c.zero_copy ? "yes" : "no",
                why ? "unavailable: " : "available", why ? why->c_str() : "");
    for (const std::string &line : t->details()) std::printf("              %s\n", line.c_str());
  }
}

void security() {
  std::printf("\n# Security\n");
  // The key a standalone rank started with this environment would use; under
  // mpirun rank 0 draws a fresh random key for every job instead.
  auto key = JobKey::from_environment();
  if (!key)
    std::printf("  job key: invalid: %s\n", key.error().message.c_str());
  else if (!key->set())
    std::printf("  job key: none (unauthenticated)%s\n",
                Bootstrap::launched_by_mpi() ? "; under mpirun rank 0 draws a random key"
                                             : ": set LF_JOB_KEY or LF_JOB_KEY_FILE for multi-rank standalone jobs");
  else
    std::printf("  job key: set (from %s)\n", key->source().c_str());
}

void tunables() {
  std::printf("\n# Tunables (environment variables)\n");
  for (const auto &t : config::all()) {
    std::string v = config::get_string(t.name);
    // A secret is never printed, only whether it is set.
    if (std::strcmp(t.name, "LF_JOB_KEY") == 0 && !v.empty()) v = "(hidden)";
    std::printf("  %s=%s%s\n      [%s] %s (default \"%s\")\n", t.name, v.c_str(),
                config::is_set(t.name) ? "  (set)" : "", config::type_name(t.type), t.help, t.default_value);
  }
}

}  // namespace

int main(int argc, char **argv) {
  if (argc > 1 && std::strcmp(argv[1], "-c") == 0) {
    tunables();
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "-l") == 0) {
    auto loc = ProcessLocation::detect();
    if (!loc) {
      std::fprintf(stderr, "lf-info: %s\n", loc.error().message.c_str());
      return 1;
    }
    std::printf("%s\n", loc->to_json().c_str());
    return 0;
  }
  if (argc > 1) {
    std::fprintf(stderr, "usage: lf-info [-c | -l]\n  -c  tunables only\n  -l  this process's location as JSON\n");
    return 2;
  }
  features();
  location();
  topology();
  memory_kinds();
  transports();
  security();
  tunables();
  return 0;
}
