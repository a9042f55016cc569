// The registry: every transport this build has, from the list CMake
// generates out of the transport folders' lf_add_transport() calls.
#include "transport/transport.hpp"

namespace lf {

#define LF_TRANSPORT(factory) std::unique_ptr<Transport> factory();
#include "transport_factories.inc"
#undef LF_TRANSPORT

std::vector<std::unique_ptr<Transport>> make_transports() {
  std::vector<std::unique_ptr<Transport>> t;
#define LF_TRANSPORT(factory) t.push_back(factory());
#include "transport_factories.inc"
#undef LF_TRANSPORT
  return t;
}

}  // namespace lf
