#include "core/scope.hpp"

namespace lf {

const char *scope_name(Scope s) noexcept {
  switch (s) {
    case Scope::self: return "self";
    case Scope::local: return "local";
    case Scope::remote: return "remote";
  }
  return "invalid";
}

ScopeDecision decide_scope(const ProcessLocation &me, const ProcessLocation &peer) {
  const bool same_name = me.hostname == peer.hostname;
  const std::string host = same_name ? "same host" : "hostnames differ (" + me.hostname + " vs " + peer.hostname + ")";
  // Without a boot id on either side nothing proves a shared kernel.
  if (me.boot_id.empty() || peer.boot_id.empty()) return {Scope::remote, host + ", boot id unknown: remote"};
  if (me.boot_id != peer.boot_id) return {Scope::remote, host + ", different kernel boot ids: remote"};
  if (me.pid_ns == peer.pid_ns && me.pid == peer.pid) return {Scope::self, "same process: self"};
  const std::string kernel = same_name ? "same host" : "same kernel, " + host;
  if (me.ipc_ns != peer.ipc_ns) return {Scope::remote, kernel + ", different IPC namespaces: remote"};
  if (me.net_ns != peer.net_ns && me.mnt_ns != peer.mnt_ns)
    return {Scope::remote, kernel +
                               ", same IPC namespace but neither network nor mount namespace shared "
                               "(no Unix socket can reach the peer): remote"};
  return {Scope::local, kernel + ", same IPC namespace: local"};
}

}  // namespace lf
