#include "exec/plan.hpp"

#include <cstdlib>

namespace lf::exec {

Builtin builtin_named(const std::string &n) noexcept {
  if (n == "add") return Builtin::add;
  if (n == "mul") return Builtin::mul;
  if (n == "scale") return Builtin::scale;
  if (n == "sum") return Builtin::sum;
  if (n == "matmul") return Builtin::matmul;
  return Builtin::none;
}

std::optional<std::string> attr(const std::string &attrs, const std::string &key) {
  size_t pos = 0;
  while (pos <= attrs.size()) {
    size_t end = attrs.find(',', pos);
    if (end == std::string::npos) end = attrs.size();
    const std::string item = attrs.substr(pos, end - pos);
    if (const size_t eq = item.find('='); eq != std::string::npos && item.substr(0, eq) == key)
      return item.substr(eq + 1);
    pos = end + 1;
  }
  return std::nullopt;
}

std::optional<Shape> infer_shape(Builtin b, const std::vector<std::optional<Shape>> &in, const std::string &attrs,
                                 std::string &why) {
  const size_t want = b == Builtin::add || b == Builtin::mul || b == Builtin::matmul ? 2 : 1;
  if (in.size() != want) {
    why = "takes " + std::to_string(want) + " input(s), not " + std::to_string(in.size());
    return std::nullopt;
  }
  if (b == Builtin::scale) {
    auto f = attr(attrs, "factor");
    char *end = nullptr;
    if (!f || f->empty() || (std::strtof(f->c_str(), &end), *end != '\0')) {
      why = "needs the attribute factor=<number>";
      return std::nullopt;
    }
  }
  for (const auto &s : in)
    if (!s) return std::nullopt;  // after a user op: checked when it runs
  switch (b) {
    case Builtin::add:
    case Builtin::mul:
      if (in[0]->dims != in[1]->dims) {
        why = "needs equal shapes, got " + in[0]->str() + " and " + in[1]->str();
        return std::nullopt;
      }
      return in[0];
    case Builtin::scale: return in[0];
    case Builtin::sum: return Shape{};
    case Builtin::matmul: {
      const auto &a = in[0]->dims, &c = in[1]->dims;
      if (a.size() != 2 || c.size() != 2 || a[1] != c[0]) {
        why = "needs [m,k] x [k,n], got " + in[0]->str() + " x " + in[1]->str();
        return std::nullopt;
      }
      return Shape{{a[0], c[1]}};
    }
    case Builtin::none: break;
  }
  return std::nullopt;
}

std::string validate(const PlanWire &p, const std::function<const OpDef *(const std::string &)> &lookup,
                     const std::function<std::optional<Shape>(const PlanInput &)> &resident, Validated &out) {
  auto &shapes = out.shapes;
  for (const PlanInput &in : p.inputs) {
    if (shapes.count(in.name)) return "input '" + in.name + "' is defined twice";
    if (in.resident) {
      auto s = resident(in);
      if (!s)
        return "input '" + in.name + "': job " + std::to_string(in.job) + " has no resident output '" + in.output + "'";
      shapes[in.name] = *s;
    } else {
      shapes[in.name] = in.shape;
    }
  }
  std::unordered_map<std::string, size_t> producer;
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const PlanOp &op = p.ops[i];
    if (!lookup(op.op)) return "op '" + op.op + "' (#" + std::to_string(i) + "): no such op on this service";
    if (shapes.count(op.output) || producer.count(op.output))
      return "op '" + op.op + "' (#" + std::to_string(i) + "): its output '" + op.output + "' is defined twice";
    producer[op.output] = i;
  }
  for (size_t i = 0; i < p.ops.size(); ++i)
    for (const auto &name : p.ops[i].inputs)
      if (!shapes.count(name) && !producer.count(name))
        return "op '" + p.ops[i].op + "' (#" + std::to_string(i) + "): input '" + name + "' is not defined";
  // Depth-first order; a tensor met again while its producer is on the
  // stack closes a cycle.
  enum : uint8_t { fresh, active, done };
  std::vector<uint8_t> state(p.ops.size(), fresh);
  std::string why;
  std::function<bool(size_t)> visit = [&](size_t i) -> bool {
    if (state[i] == done) return true;
    if (state[i] == active) {
      why = "op '" + p.ops[i].op + "' (#" + std::to_string(i) + "): its inputs depend on its own output (a cycle)";
      return false;
    }
    state[i] = active;
    for (const auto &name : p.ops[i].inputs)
      if (auto it = producer.find(name); it != producer.end() && !visit(it->second)) return false;
    state[i] = done;
    out.order.push_back(i);
    return true;
  };
  for (size_t i = 0; i < p.ops.size(); ++i)
    if (!visit(i)) return why;
  for (size_t i : out.order) {
    const PlanOp &op = p.ops[i];
    const OpDef *def = lookup(op.op);
    std::optional<Shape> s;
    if (def->builtin != Builtin::none) {
      std::vector<std::optional<Shape>> in;
      for (const auto &name : op.inputs) in.push_back(shapes[name]);
      std::string bad;
      s = infer_shape(def->builtin, in, op.attrs, bad);
      if (!bad.empty()) return "op '" + op.op + "' (#" + std::to_string(i) + ") " + bad;
    }
    shapes[op.output] = s;
  }
  for (const auto &o : p.outputs)
    if (!shapes.count(o)) return "output '" + o + "' is not a tensor of the plan";
  return "";
}

}  // namespace lf::exec
