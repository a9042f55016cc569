// The LF_TRANSPORTS filter: "shm,tcp" allows only those, "^tcp" excludes one.
// Parsed here, in the transport layer, so that transports can consult it at
// start (a GPU variant skips probing devices it will never use) and the
// channel layer's selection reads the same rules.
#pragma once

#include <set>
#include <string>

namespace lf {

struct TransportFilter {
  std::set<std::string> allow, deny;
  std::string text;

  /// Split a comma-separated list; blanks around names are ignored.
  static TransportFilter parse(const std::string &text);
  /// The filter set by the LF_TRANSPORTS environment variable.
  static TransportFilter from_environment();
  bool permits(const std::string &name) const { return !deny.count(name) && (allow.empty() || allow.count(name)); }
};

}  // namespace lf
