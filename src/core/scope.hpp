// Scope between two processes: SELF, LOCAL (memory can be shared) or REMOTE.
#pragma once

#include <string>

#include "core/location.hpp"

namespace lf {

enum class Scope { self = LF_SCOPE_SELF, local = LF_SCOPE_LOCAL, remote = LF_SCOPE_REMOTE };

struct ScopeDecision {
  Scope scope;
  std::string reason;  ///< One line, e.g. "same host, same IPC namespace: local".
};

/// Compare two locations.
///  - same kernel (boot id), pid namespace and pid: self;
///  - same kernel and IPC namespace, and a Unix socket can reach the peer
///    (same network namespace for abstract sockets or same mount namespace
///    for filesystem sockets): local;
///  - otherwise remote. Equal hostnames alone never make two processes local.
ScopeDecision decide_scope(const ProcessLocation &me, const ProcessLocation &peer);

const char *scope_name(Scope s) noexcept;

}  // namespace lf
