// The lanes of the ucx transport: the UCX resources ("tl/device") a ucp
// context opened, as ucp_context_print_info lists them, and what kind of
// reach they give. Only the cost estimate and the reachability check read
// them; the data path never looks at a transport's name.
#pragma once

#include <string>
#include <vector>

namespace lf::ucx {

/// The UCX transports (lanes) a context opened, as "tl/device" resources.
struct Lanes {
  std::vector<std::string> resources;
  /// A lane of an RDMA transport (rc, dc, ud, srd...).
  bool rdma() const;
  /// A lane that moves GPU memory (cuda_ipc, gdr_copy, rocm_ipc...).
  bool device() const;
  /// Transports that can carry traffic between hosts.
  std::vector<std::string> network_tls() const;
  /// Every transport but self.
  std::vector<std::string> peer_tls() const;
  /// "tcp/lo,tcp/eth0,posix/memory" (also the published form).
  std::string text() const;
  /// The transport names alone, deduplicated: "tcp, posix, cma".
  std::string tl_names() const;
  static Lanes parse_list(const std::string &text);
  /// The resources listed by ucp_context_print_info.
  static Lanes parse_context_info(const std::string &info);
};

}  // namespace lf::ucx
