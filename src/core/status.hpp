// Status and error model of the C++ core.
//
// Fallible calls return lf::Result<T> (std::expected<T, lf::Error>). An Error
// carries the public status code and a readable message; the C API turns it
// into a return code plus the thread's lf_last_error() text.
#pragma once

#include <lavaflow/lavaflow.h>

#include <cerrno>
#include <cstdarg>
#include <expected>
#include <string>
#include <string_view>

namespace lf {

struct Error {
  lf_status_t code = LF_ERR_INTERNAL;
  std::string message;
};

template <typename T>
using Result = std::expected<T, Error>;

/// Result of a call that returns nothing on success.
using Status = Result<void>;

/// Build an Error from a printf-style message.
Error make_error(lf_status_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/// Build an Error for a failed system call: "<what>: <strerror(err)>".
/// The status is LF_ERR_NO_MEMORY for ENOMEM and LF_ERR_IO otherwise.
Error sys_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/// std::unexpected shorthand: `return fail(LF_ERR_INVALID_ARG, "bad %d", x);`
#define LF_FAIL(code, ...) std::unexpected(::lf::make_error((code), __VA_ARGS__))

/// Run a POSIX call that returns -1 and sets errno; retries EINTR. On failure
/// returns an lf::Error naming the call, file and line from the enclosing
/// function (which must return lf::Result<...>).
#define LF_POSIX_CHECK(expr)                                                                                   \
  ({                                                                                                           \
    long lf_rc_;                                                                                               \
    do {                                                                                                       \
      lf_rc_ = (long)(expr);                                                                                   \
    } while (lf_rc_ == -1 && errno == EINTR);                                                                  \
    if (lf_rc_ == -1) return std::unexpected(::lf::sys_error(errno, "%s (%s:%d)", #expr, __FILE__, __LINE__)); \
    lf_rc_;                                                                                                    \
  })

/// Thread-local detail for lf_last_error().
void set_last_error(const Error &e) noexcept;
void set_last_error(lf_status_t code, const char *msg) noexcept;
/// The same from two pieces, without formatting or (once the thread's text
/// has grown) allocating: for paths as frequent as a wait that timed out.
void set_last_error(lf_status_t code, std::string_view a, std::string_view b) noexcept;
const char *last_error() noexcept;

const char *status_string(lf_status_t s) noexcept;

}  // namespace lf
