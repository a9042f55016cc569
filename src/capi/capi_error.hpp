// How every C entry point reports failure: a status code plus the thread's
// lf_last_error() text, and no exception ever crossing the C boundary.
#pragma once

#include <lavaflow/lavaflow.h>

#include <exception>
#include <new>
#include <string>

#include "core/status.hpp"

namespace lf::capi {

/// Record `e` as the thread's last error and return its code.
inline lf_status_t fail(const Error &e) noexcept {
  set_last_error(e);
  return e.code;
}
lf_status_t fail(lf_status_t code, const char *fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

/// A copy of `s` that lives until the process exits: what the C API returns
/// for a handle's strings (transport, reason, fallback reason), so that they
/// stay valid after the handle is closed or freed. Equal strings share one
/// copy, so the set stays as small as the set of distinct texts.
const char *intern(const std::string &s) noexcept;

/// Run `body` (returning lf_status_t), converting exceptions to statuses.
template <typename F>
lf_status_t guard(F &&body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    return fail(LF_ERR_NO_MEMORY, "out of memory");
  } catch (const std::exception &e) {
    return fail(LF_ERR_INTERNAL, "unexpected exception: %s", e.what());
  } catch (...) {
    return fail(LF_ERR_INTERNAL, "unexpected exception");
  }
}

}  // namespace lf::capi
