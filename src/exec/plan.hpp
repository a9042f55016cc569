// A plan on the service: validation (before anything runs) and the order the
// ops run in.
//
// Validation names the op at fault: an unknown op, a wrong number of inputs,
// shapes a built-in op cannot combine, a tensor defined twice, an input no
// one defines, an output that is no tensor, or a cycle. Shapes flow through
// built-in ops; a user op's output shape is known only once it ran, so the
// ops after it are checked when they run.
#pragma once

#include <lavaflow/lavaflow.h>

#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "exec/wire.hpp"

namespace lf::exec {

enum class Builtin { none, add, mul, scale, sum, matmul };

/// What a name in a plan refers to on the service.
struct OpDef {
  Builtin builtin = Builtin::none;
  lf_exec_op_fn fn = nullptr;  ///< user op
  void *user = nullptr;
};

/// The built-in op called `name`, or Builtin::none.
Builtin builtin_named(const std::string &name) noexcept;

/// Output shape of built-in `b` over `in` (unknown inputs give nullopt), or
/// the reason the shapes do not fit in `why`.
std::optional<Shape> infer_shape(Builtin b, const std::vector<std::optional<Shape>> &in, const std::string &attrs,
                                 std::string &why);

/// Value of `key` in "key=value,key=value", or nullopt.
std::optional<std::string> attr(const std::string &attrs, const std::string &key);

struct Validated {
  std::vector<size_t> order;                                     ///< op indices, producers first
  std::unordered_map<std::string, std::optional<Shape>> shapes;  ///< every tensor's shape, when known
};

/// Validate `p`: `lookup` resolves op names (nullptr: unknown), `resident`
/// the shape of a resident input (nullopt: no such result). Returns the
/// reason it is invalid, or "" and fills `out`.
std::string validate(const PlanWire &p, const std::function<const OpDef *(const std::string &)> &lookup,
                     const std::function<std::optional<Shape>(const PlanInput &)> &resident, Validated &out);

}  // namespace lf::exec
