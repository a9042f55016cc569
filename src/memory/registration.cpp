#include "memory/registration.hpp"

namespace lf {

Result<RegistrationHandle> Registrations::get(uint64_t owner, const std::function<Result<RegistrationHandle>()> &make) {
  std::lock_guard g(mu_);
  for (const auto &[o, h] : handles_)
    if (o == owner) return h;
  auto h = make();
  if (!h) return h;
  try {
    handles_.emplace_back(owner, *h);
  } catch (const std::bad_alloc &) {
    // Uncached: correct, only slower (the next send registers again).
  }
  return h;
}

bool Registrations::has(uint64_t owner) const noexcept {
  std::lock_guard g(mu_);
  for (const auto &entry : handles_)
    if (entry.first == owner) return true;
  return false;
}

void Registrations::clear() noexcept {
  std::vector<std::pair<uint64_t, RegistrationHandle>> drop;
  {
    std::lock_guard g(mu_);
    drop.swap(handles_);
  }
  // Deleters run outside the lock: a transport's deregistration may take
  // its own locks.
}

}  // namespace lf
