#include "core/status.hpp"

#include <cstdio>
#include <cstring>

#include "lavaflow_features.h"

namespace lf {

namespace {
// The message must outlive the call that failed, so it is kept per thread.
thread_local std::string tl_last_error;

std::string vformat(const char *fmt, va_list ap) {
  char small[256];
  va_list ap2;
  va_copy(ap2, ap);
  int n = std::vsnprintf(small, sizeof small, fmt, ap);
  std::string out;
  if (n < 0) {
    out = fmt;
  } else if (static_cast<size_t>(n) < sizeof small) {
    out.assign(small, static_cast<size_t>(n));
  } else {
    out.resize(static_cast<size_t>(n));
    std::vsnprintf(out.data(), out.size() + 1, fmt, ap2);
  }
  va_end(ap2);
  return out;
}
}  // namespace

Error make_error(lf_status_t code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  Error e{code, vformat(fmt, ap)};
  va_end(ap);
  return e;
}

Error sys_error(int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string what = vformat(fmt, ap);
  va_end(ap);
  char buf[128];
  const char *msg = strerror_r(err, buf, sizeof buf);
  return Error{err == ENOMEM ? LF_ERR_NO_MEMORY : LF_ERR_IO, what + ": " + msg};
}

void set_last_error(lf_status_t code, std::string_view a, std::string_view b) noexcept {
  try {
    const auto inside = [](std::string_view v) {
      const char *lo = tl_last_error.data();
      return !v.empty() && v.data() >= lo && v.data() <= lo + tl_last_error.capacity();
    };
    if (inside(a) || inside(b)) {  // a piece of the old text (fail(st, lf_last_error()))
      tl_last_error = std::string(status_string(code)) + ": " + std::string(a) + std::string(b);
      return;
    }
    // assign/append reuse the thread's buffer.
    tl_last_error.assign(status_string(code)).append(": ").append(a).append(b);
  } catch (...) {
    tl_last_error.clear();
  }
}

void set_last_error(const Error &e) noexcept { set_last_error(e.code, e.message, {}); }

void set_last_error(lf_status_t code, const char *msg) noexcept { set_last_error(code, msg, {}); }

const char *last_error() noexcept { return tl_last_error.c_str(); }

const char *status_string(lf_status_t s) noexcept {
  switch (s) {
    case LF_OK: return "LF_OK";
    case LF_IN_PROGRESS: return "LF_IN_PROGRESS";
    case LF_ERR_INVALID_ARG: return "LF_ERR_INVALID_ARG";
    case LF_ERR_NO_MEMORY: return "LF_ERR_NO_MEMORY";
    case LF_ERR_UNSUPPORTED: return "LF_ERR_UNSUPPORTED";
    case LF_ERR_UNAVAILABLE: return "LF_ERR_UNAVAILABLE";
    case LF_ERR_PEER_GONE: return "LF_ERR_PEER_GONE";
    case LF_ERR_TIMEOUT: return "LF_ERR_TIMEOUT";
    case LF_ERR_TRUNCATED: return "LF_ERR_TRUNCATED";
    case LF_ERR_CLOSED: return "LF_ERR_CLOSED";
    case LF_ERR_IO: return "LF_ERR_IO";
    case LF_ERR_PROTOCOL: return "LF_ERR_PROTOCOL";
    case LF_ERR_INTERNAL: return "LF_ERR_INTERNAL";
    case LF_ERR_NOT_FOUND: return "LF_ERR_NOT_FOUND";
    case LF_ERR_CANCELLED: return "LF_ERR_CANCELLED";
    case LF_ERR_BUSY: return "LF_ERR_BUSY";
    default: return "LF_ERR_UNKNOWN";
  }
}

}  // namespace lf
