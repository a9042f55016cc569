#include "core/log.hpp"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "core/config.hpp"

namespace lf {

namespace {
LogLevel parse_level() noexcept {
  std::string v = config::get_string("LF_LOG_LEVEL");
  static const char *names[] = {"error", "warn", "info", "debug", "trace"};
  for (int i = 0; i < 5; ++i)
    if (v == names[i]) return static_cast<LogLevel>(i);
  return LogLevel::warn;
}
}  // namespace

LogLevel log_level() noexcept {
  static const LogLevel level = parse_level();
  return level;
}

bool log_enabled(LogLevel level) noexcept { return level <= log_level(); }

void log(LogLevel level, const char *fmt, ...) noexcept {
  static const char *tags[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
  char line[1024];
  int n =
      std::snprintf(line, sizeof line, "[lavaflow %d %s] ", static_cast<int>(getpid()), tags[static_cast<int>(level)]);
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line + n, sizeof line - static_cast<size_t>(n) - 1, fmt, ap);
  va_end(ap);
  size_t len = std::strlen(line);
  line[len++] = '\n';
  // One write per line so that lines of concurrent ranks do not interleave.
  ssize_t rc = ::write(STDERR_FILENO, line, len);
  (void)rc;
}

}  // namespace lf
