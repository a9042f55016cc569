#include "transport/filter.hpp"

#include <sstream>

#include "core/config.hpp"

namespace lf {

TransportFilter TransportFilter::parse(const std::string &text) {
  TransportFilter f;
  f.text = text;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty()) continue;
    if (item[0] == '^')
      f.deny.insert(item.substr(1));
    else
      f.allow.insert(item);
  }
  return f;
}

TransportFilter TransportFilter::from_environment() { return parse(config::get_string("LF_TRANSPORTS")); }

}  // namespace lf
