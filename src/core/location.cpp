#include "core/location.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/config.hpp"
#include "core/topology.hpp"

namespace lf {

using json = nlohmann::json;

namespace {
uint64_t ns_inode(const char *which) {
  struct stat st {};
  std::string path = std::string("/proc/self/ns/") + which;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_ino);
}

std::string read_line(const char *path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

std::vector<std::string> ipv4_addresses() {
  std::vector<std::string> out;
  struct ifaddrs *ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return out;
  for (auto *p = ifa; p; p = p->ifa_next) {
    if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    auto *sin = reinterpret_cast<sockaddr_in *>(p->ifa_addr);
    if (ntohl(sin->sin_addr.s_addr) >> 24 == 127) continue;
    if (inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf)) out.emplace_back(buf);
  }
  freeifaddrs(ifa);
  return out;
}
}  // namespace

Result<ProcessLocation> ProcessLocation::detect() {
  ProcessLocation loc;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) return std::unexpected(sys_error(errno, "gethostname"));
  loc.hostname = host;
  loc.boot_id = read_line("/proc/sys/kernel/random/boot_id");
  loc.ipc_ns = ns_inode("ipc");
  loc.mnt_ns = ns_inode("mnt");
  loc.net_ns = ns_inode("net");
  loc.pid_ns = ns_inode("pid");
  loc.pid = getpid();
  loc.uid = getuid();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
    loc.cpuset = format_cpu_list(cpus);
  }
  int cpu = sched_getcpu();
  if (cpu >= 0) loc.numa_node = numa_node_of_cpu(cpu);
  for (const GpuInfo &g : Topology::get().gpus) loc.gpus.push_back(g.pci_bus_id);
  loc.addresses = ipv4_addresses();

  std::string file = config::get_string("LF_LOCATION_FILE");
  if (!file.empty()) {
    std::ifstream f(file);
    if (!f) return LF_FAIL(LF_ERR_NOT_FOUND, "LF_LOCATION_FILE=%s cannot be opened", file.c_str());
    std::stringstream ss;
    ss << f.rdbuf();
    if (auto st = loc.apply_json(ss.str()); !st) return std::unexpected(st.error());
  }
  return loc;
}

Result<ProcessLocation> ProcessLocation::from_config(const std::string &path) {
  std::ifstream f(path);
  if (!f) return LF_FAIL(LF_ERR_NOT_FOUND, "location file %s cannot be opened", path.c_str());
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json(ss.str());
}

Result<ProcessLocation> ProcessLocation::from_json(const std::string &text) {
  ProcessLocation loc;
  if (auto st = loc.apply_json(text); !st) return std::unexpected(st.error());
  return loc;
}

Status ProcessLocation::apply_json(const std::string &text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return LF_FAIL(LF_ERR_INVALID_ARG, "location JSON is not an object");
  try {
    if (j.contains("hostname")) hostname = j["hostname"].get<std::string>();
    if (j.contains("boot_id")) boot_id = j["boot_id"].get<std::string>();
    if (j.contains("ipc_ns")) ipc_ns = j["ipc_ns"].get<uint64_t>();
    if (j.contains("mnt_ns")) mnt_ns = j["mnt_ns"].get<uint64_t>();
    if (j.contains("net_ns")) net_ns = j["net_ns"].get<uint64_t>();
    if (j.contains("pid_ns")) pid_ns = j["pid_ns"].get<uint64_t>();
    if (j.contains("pid")) pid = j["pid"].get<int64_t>();
    if (j.contains("uid")) uid = j["uid"].get<uint32_t>();
    if (j.contains("numa_node")) numa_node = j["numa_node"].get<int>();
    if (j.contains("cpuset")) cpuset = j["cpuset"].get<std::string>();
    if (j.contains("gpus")) gpus = j["gpus"].get<std::vector<std::string>>();
    if (j.contains("addresses")) addresses = j["addresses"].get<std::vector<std::string>>();
  } catch (const json::exception &e) {
    return LF_FAIL(LF_ERR_INVALID_ARG, "location JSON has a field of the wrong type: %s", e.what());
  }
  return {};
}

std::string ProcessLocation::to_json() const {
  json j = {{"hostname", hostname},   {"boot_id", boot_id}, {"ipc_ns", ipc_ns}, {"mnt_ns", mnt_ns},
            {"net_ns", net_ns},       {"pid_ns", pid_ns},   {"pid", pid},       {"uid", uid},
            {"numa_node", numa_node}, {"cpuset", cpuset},   {"gpus", gpus},     {"addresses", addresses}};
  return j.dump();
}

}  // namespace lf
