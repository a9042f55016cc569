// Machine topology: NUMA nodes, CPUs and GPUs. Uses hwloc where built with
// it and sysfs otherwise.
#pragma once

#include <string>
#include <vector>

namespace lf {

struct NumaNodeInfo {
  int os_index = 0;
  std::string cpus;  ///< CPU list, e.g. "0-15".
  uint64_t memory_bytes = 0;
};

struct GpuInfo {
  std::string pci_bus_id;  ///< "0000:3b:00.0"
  std::string vendor;      ///< "NVIDIA", "AMD", "Intel" or the PCI vendor id
  std::string name;
};

struct Topology {
  int cpus = 0;
  std::vector<NumaNodeInfo> numa_nodes;
  std::vector<GpuInfo> gpus;
  std::string source;  ///< "hwloc 2.9.0" or "sysfs"

  /// Detected once per process and cached.
  static const Topology &get();
};

/// NUMA node of CPU `cpu` (-1 if unknown).
int numa_node_of_cpu(int cpu) noexcept;

/// Compress a list of CPU ids into "0-3,8" form.
std::string format_cpu_list(const std::vector<int> &cpus);

}  // namespace lf
