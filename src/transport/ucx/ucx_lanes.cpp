#include "transport/ucx/ucx_lanes.hpp"

#include <algorithm>
#include <set>
#include <sstream>

namespace lf::ucx {

namespace {

std::string tl_of(const std::string &resource) { return resource.substr(0, resource.find('/')); }

bool starts_with(const std::string &s, const char *p) { return s.rfind(p, 0) == 0; }

bool is_rdma_tl(const std::string &tl) {
  for (const char *p : {"rc", "dc", "ud", "srd", "mlx", "ugni", "gni", "efa", "ib"})
    if (starts_with(tl, p)) return true;
  return false;
}

bool is_device_tl(const std::string &tl) {
  for (const char *p : {"cuda_ipc", "gdr_copy", "rocm_ipc", "rocm_gdr", "ze_ipc"})
    if (tl == p) return true;
  return false;
}

/// Transports that stay within one host.
bool is_host_only_tl(const std::string &tl) {
  for (const char *p : {"self", "posix", "sysv", "xpmem", "cma", "knem", "cuda_ipc", "cuda_copy", "rocm_copy",
                        "rocm_ipc", "gdr_copy", "ze_copy", "ze_ipc"})
    if (tl == p) return true;
  return false;
}

}  // namespace

bool Lanes::rdma() const {
  for (const auto &r : resources)
    if (is_rdma_tl(tl_of(r))) return true;
  return false;
}

bool Lanes::device() const {
  for (const auto &r : resources)
    if (is_device_tl(tl_of(r))) return true;
  return false;
}

std::vector<std::string> Lanes::network_tls() const {
  std::set<std::string> out;
  for (const auto &r : resources)
    if (!is_host_only_tl(tl_of(r))) out.insert(tl_of(r));
  return {out.begin(), out.end()};
}

std::vector<std::string> Lanes::peer_tls() const {
  std::set<std::string> out;
  for (const auto &r : resources)
    if (tl_of(r) != "self") out.insert(tl_of(r));
  return {out.begin(), out.end()};
}

std::string Lanes::text() const {
  std::string s;
  for (const auto &r : resources) s += (s.empty() ? "" : ",") + r;
  return s;
}

std::string Lanes::tl_names() const {
  std::vector<std::string> seen;
  for (const auto &r : resources)
    if (std::find(seen.begin(), seen.end(), tl_of(r)) == seen.end()) seen.push_back(tl_of(r));
  std::string s;
  for (const auto &t : seen) s += (s.empty() ? "" : ", ") + t;
  return s;
}

Lanes Lanes::parse_list(const std::string &text) {
  Lanes l;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) l.resources.push_back(item);
  return l;
}

Lanes Lanes::parse_context_info(const std::string &info) {
  // "#      resource 1  :  md 1  dev 1  flags -- tcp/lo"
  Lanes l;
  std::stringstream ss(info);
  std::string line;
  while (std::getline(ss, line)) {
    if (line.find("resource") == std::string::npos) continue;
    auto sp = line.find_last_of(" \t");
    std::string r = sp == std::string::npos ? line : line.substr(sp + 1);
    if (r.find('/') != std::string::npos) l.resources.push_back(r);
  }
  return l;
}

}  // namespace lf::ucx
