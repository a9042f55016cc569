#include "transport/dpdk/dpdk_ports.hpp"

#include <dirent.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>

#include "core/config.hpp"

namespace lf::dpdk {

namespace {

std::string read_line(const std::string &path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

/// An interface as the kernel shows it: "eth0 (mtu 1500, mac ..., up)", or
/// "" when there is none of that name.
std::string interface_text(const std::string &name) {
  const std::string dir = "/sys/class/net/" + name;
  const std::string mtu = read_line(dir + "/mtu");
  if (mtu.empty()) return "";
  return name + " (mtu " + mtu + ", mac " + read_line(dir + "/address") + ", " + read_line(dir + "/operstate") + ")";
}

bool has_net_raw() {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2]{};
  if (syscall(SYS_capget, &h, d) != 0) return false;
  return d[CAP_NET_RAW / 32].effective & (1u << (CAP_NET_RAW % 32));
}

}  // namespace

std::vector<std::string> describe_ports() {
  std::vector<std::string> out;
  out.push_back("memif: one port per local peer (net_memif, abstract socket /lavaflow-dpdk-<epoch>), at most 31");
  const std::string iface = config::get_string("LF_DPDK_PORT");
  if (!iface.empty()) {
    const std::string t = interface_text(iface);
    if (t.empty())
      out.push_back("af_packet: LF_DPDK_PORT=" + iface + " names no interface of this network namespace");
    else
      out.push_back("af_packet: " + t + (has_net_raw() ? "" : "; this process lacks CAP_NET_RAW to open it"));
    return out;
  }
  std::string candidates;
  if (DIR *d = opendir("/sys/class/net")) {
    while (dirent *e = readdir(d)) {
      const std::string n = e->d_name;
      if (n == "." || n == ".." || n == "lo") continue;
      if (const std::string t = interface_text(n); !t.empty()) candidates += (candidates.empty() ? "" : ", ") + t;
    }
    closedir(d);
  }
  out.push_back("af_packet: none (LF_DPDK_PORT unset); interfaces it may name: " +
                (candidates.empty() ? std::string("none") : candidates));
  return out;
}

}  // namespace lf::dpdk
