// Logging to stderr, filtered by LF_LOG_LEVEL (error, warn, info, debug, trace).
#pragma once

namespace lf {

enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3, trace = 4 };

/// Current threshold (read once from LF_LOG_LEVEL; default warn).
LogLevel log_level() noexcept;
bool log_enabled(LogLevel level) noexcept;
void log(LogLevel level, const char *fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

}  // namespace lf

#define LF_LOG(level, ...)                                                                       \
  do {                                                                                           \
    if (::lf::log_enabled(::lf::LogLevel::level)) ::lf::log(::lf::LogLevel::level, __VA_ARGS__); \
  } while (0)
