#include "core/topology.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "lavaflow_features.h"

#if LAVAFLOW_HAVE_HWLOC
#include <hwloc.h>
#endif

namespace lf {

std::string format_cpu_list(const std::vector<int> &cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) out += "-" + std::to_string(cpus[j]);
    i = j + 1;
  }
  return out;
}

namespace {
std::string read_line(const std::string &path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

void sysfs_numa(Topology &t) {
  DIR *d = opendir("/sys/devices/system/node");
  if (!d) return;
  while (dirent *e = readdir(d)) {
    int idx;
    if (std::sscanf(e->d_name, "node%d", &idx) != 1) continue;
    NumaNodeInfo n;
    n.os_index = idx;
    n.cpus = read_line("/sys/devices/system/node/" + std::string(e->d_name) + "/cpulist");
    std::ifstream mi("/sys/devices/system/node/" + std::string(e->d_name) + "/meminfo");
    std::string line;
    while (std::getline(mi, line)) {
      unsigned long long kb;
      if (std::sscanf(line.c_str(), "Node %*d MemTotal: %llu kB", &kb) == 1) n.memory_bytes = kb * 1024;
    }
    t.numa_nodes.push_back(n);
  }
  closedir(d);
}

[[maybe_unused]] const char *vendor_name(unsigned id) {
  switch (id) {
    case 0x10de: return "NVIDIA";
    case 0x1002: return "AMD";
    case 0x8086: return "Intel";
    default: return nullptr;
  }
}

Topology detect() {
  Topology t;
  t.cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
#if LAVAFLOW_HAVE_HWLOC
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) == 0) {
    hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    // Find PCI devices through hwloc's Linux (sysfs) backend, not its
    // libpciaccess plugin: that one parses the whole PCI name database at
    // every load (slow in every lf_init, and it leaks the names).
    hwloc_topology_set_components(topo, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, "pci");
    if (hwloc_topology_load(topo) == 0) {
      t.source = "hwloc " HWLOC_VERSION;
      t.cpus = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
      int nn = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
      for (int i = 0; i < nn; ++i) {
        hwloc_obj_t o = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
        NumaNodeInfo n;
        n.os_index = static_cast<int>(o->os_index);
        char *s = nullptr;
        hwloc_bitmap_list_asprintf(&s, o->cpuset);
        if (s) n.cpus = s, free(s);
        n.memory_bytes = o->attr ? o->attr->numanode.local_memory : 0;
        t.numa_nodes.push_back(n);
      }
      for (hwloc_obj_t o = hwloc_get_next_pcidev(topo, nullptr); o; o = hwloc_get_next_pcidev(topo, o)) {
        // PCI class 0x03xx is a display controller, 0x12xx a processing accelerator.
        unsigned cls = o->attr->pcidev.class_id >> 8;
        if (cls != 0x03 && cls != 0x12) continue;
        GpuInfo g;
        char bus[32];
        std::snprintf(bus, sizeof bus, "%04x:%02x:%02x.%x", o->attr->pcidev.domain, o->attr->pcidev.bus,
                      o->attr->pcidev.dev, o->attr->pcidev.func);
        g.pci_bus_id = bus;
        const char *v = vendor_name(o->attr->pcidev.vendor_id);
        char vid[16];
        std::snprintf(vid, sizeof vid, "0x%04x", o->attr->pcidev.vendor_id);
        g.vendor = v ? v : vid;
        if (const char *name = hwloc_obj_get_info_by_name(o, "PCIDevice")) g.name = name;
        t.gpus.push_back(g);
      }
    }
    hwloc_topology_destroy(topo);
  }
#endif
  if (t.source.empty()) {
    t.source = "sysfs";
    sysfs_numa(t);
  }
  return t;
}
}  // namespace

const Topology &Topology::get() {
  static const Topology t = detect();
  return t;
}

int numa_node_of_cpu(int cpu) noexcept {
  char path[96];
  for (int node = 0; node < 1024; ++node) {
    std::snprintf(path, sizeof path, "/sys/devices/system/node/node%d/cpu%d", node, cpu);
    if (access(path, F_OK) == 0) return node;
    std::snprintf(path, sizeof path, "/sys/devices/system/node/node%d", node);
    if (access(path, F_OK) != 0 && node > 64) break;
  }
  return -1;
}

}  // namespace lf
