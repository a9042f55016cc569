// The one table of transports. A new transport adds its factory here.
#include <algorithm>
#include <cstring>

#include "lavaflow_features.h"
#include "transport/transport.hpp"

namespace lf {

std::unique_ptr<Transport> make_self_transport();

std::vector<std::unique_ptr<Transport>> make_transports() {
  std::vector<std::unique_ptr<Transport>> t;
  t.push_back(make_self_transport());
  std::stable_sort(t.begin(), t.end(), [](const auto &a, const auto &b) { return a->caps().priority > b->caps().priority; });
  return t;
}

}  // namespace lf
