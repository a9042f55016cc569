// Tunables: one table row each (name, default, type, help). The value comes
// from the environment variable of the same name, else the default. lf-info
// prints every row with its current value.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace lf::config {

enum class Type { integer, boolean, string, seconds, bytes };

struct Tunable {
  const char *name;           ///< Environment variable, always LF_*.
  const char *default_value;  ///< As the user would write it.
  Type type;
  const char *help;
};

/// Every tunable of the library, in display order.
std::span<const Tunable> all() noexcept;

/// The row for `name`, or nullptr.
const Tunable *find(const char *name) noexcept;

/// Raw value: the environment's if set, else the default. Unknown names are a
/// programming error and abort in debug builds.
std::string get_string(const char *name);

/// Integer value; accepts K/M/G suffixes for bytes and "true"/"false"/"yes"/
/// "no"/"on"/"off" for booleans. Unparsable values fall back to the default
/// with a warning.
int64_t get_int(const char *name);
bool get_bool(const char *name);
double get_seconds(const char *name);

/// True when the environment sets `name` (even to the default).
bool is_set(const char *name);

const char *type_name(Type t) noexcept;

}  // namespace lf::config
