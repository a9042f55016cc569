// Transport selection by cost. Each transport estimates what a message of
// the channel's typical size and memory kind costs at the peer's scope; the
// cheapest that the user's filter allows, that started on both ranks and
// that can serve this peer wins. Reads only estimates, the scope decision,
// the set of transports that started on both ranks, and the filter, so both
// ranks of a channel reach the same answer.

#include <algorithm>
#include <cstdio>

#include "channel/channel.hpp"
#include "channel/context.hpp"
#include "core/config.hpp"
#include "transport/filter.hpp"

namespace lf {

namespace {

Result<TransportFilter> parse_filter(const std::string &text, Context &ctx) {
  TransportFilter f = TransportFilter::parse(text);
  for (const auto *names : {&f.allow, &f.deny})
    for (const std::string &name : *names) {
      bool known = false;
      for (auto &ts : ctx.transports()) known |= name == ts.transport->name();
      if (!known)
        return LF_FAIL(LF_ERR_NOT_FOUND, "LF_TRANSPORTS names '%s', which is not a transport of this build",
                       name.c_str());
    }
  return f;
}

std::string format_cost(const Cost &c, size_t bytes) {
  char buf[96];
  double t = c.time_us(bytes);
  if (t < 10)
    std::snprintf(buf, sizeof buf, "%.2f us", t);
  else
    std::snprintf(buf, sizeof buf, "%.0f us", t);
  return buf;
}

std::string format_bytes(size_t n) {
  if (n >= (size_t(1) << 20) && n % (size_t(1) << 20) == 0) return std::to_string(n >> 20) + " MiB";
  if (n >= 1024 && n % 1024 == 0) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " B";
}

}  // namespace

Result<Selection> select_transport(Context &ctx, int peer, const ChannelOptions &opts) {
  ScopeDecision sd = ctx.scope(peer);
  bool strict = opts.strict.value_or(config::get_bool("LF_STRICT"));
  auto filter = parse_filter(opts.transports.value_or(config::get_string("LF_TRANSPORTS")), ctx);
  if (!filter) return std::unexpected(filter.error());
  bool device_kind = !(kHostKinds & kind_bit(opts.memory_kind));
  const size_t bytes = opts.message_bytes;

  // Every transport that can serve the scope, cheapest first for a message
  // of the size the channel is opened for (ties: registry order).
  struct Candidate {
    Transport *t;
    Cost cost;
  };
  std::vector<Candidate> order;
  const CostQuery q{peer, sd.scope, opts.memory_kind, bytes};
  for (auto &ts : ctx.transports())
    if (auto c = ts.transport->estimate(q)) order.push_back({ts.transport.get(), *c});
  std::stable_sort(order.begin(), order.end(), [bytes](const Candidate &a, const Candidate &b) {
    return a.cost.time_us(bytes) < b.cost.time_us(bytes);
  });

  std::string skipped;
  // Strict mode holds the user to the best transport LF_TRANSPORTS allows.
  const Candidate *first_choice = nullptr;
  for (const Candidate &c : order)
    if (filter->permits(c.t->name())) {
      first_choice = &c;
      break;
    }
  for (const Candidate &c : order) {
    Transport *t = c.t;
    std::string why;
    const std::string name = t->name();
    if (!filter->permits(name))
      why = "excluded by LF_TRANSPORTS=" + filter->text;
    else if (!ctx.has_transport(ctx.rank(), name))
      why = "not available here";
    else if (!ctx.has_transport(peer, name))
      why = "not available on rank " + std::to_string(peer);
    else if (auto u = t->unusable_for(ctx, peer))
      why = *u;
    if (why.empty()) {
      if (strict && &c != first_choice)
        return LF_FAIL(LF_ERR_UNAVAILABLE, "strict mode: %s scope to rank %d wants %s, which is unusable (%s)",
                       scope_name(sd.scope), peer, first_choice->t->name(), skipped.c_str());
      if (strict && device_kind && !(t->caps().memory_kinds & kind_bit(opts.memory_kind)))
        return LF_FAIL(LF_ERR_UNAVAILABLE, "strict mode: no transport moves %s memory natively to rank %d%s%s%s",
                       memory_kind_name(opts.memory_kind), peer, skipped.empty() ? "" : " (skipped ", skipped.c_str(),
                       skipped.empty() ? "" : ")");
      std::string detail = sd.reason;
      // "same host, same IPC namespace: local" -> "local scope, same host, same IPC namespace: shm"
      if (auto colon = detail.rfind(": "); colon != std::string::npos) detail.resize(colon);
      auto described = [&](Transport *x) {
        std::string d = x->describe(ctx, peer);
        return d.empty() ? std::string(x->name()) : std::string(x->name()) + " [" + d + "]";
      };
      Selection s{t, std::string(scope_name(sd.scope)) + " scope, " + detail + ": " + described(t)};
      // The estimate that won, and the runner-up it beat.
      s.reason += " (est. " + format_cost(c.cost, bytes) + " per " + format_bytes(bytes);
      for (const Candidate &o : order)
        if (&o != &c && filter->permits(o.t->name())) {
          if (o.cost.time_us(bytes) >= c.cost.time_us(bytes))
            s.reason += "; " + described(o.t) + " " + format_cost(o.cost, bytes);
          break;
        }
      s.reason += ")";
      if (!skipped.empty()) s.reason += " (skipped " + skipped + ")";
      return s;
    }
    if (!skipped.empty()) skipped += "; ";
    skipped += name + ": " + why;
  }
  return LF_FAIL(LF_ERR_UNAVAILABLE, "no transport can reach rank %d (%s)%s%s", peer, sd.reason.c_str(),
                 skipped.empty() ? "" : ": ", skipped.c_str());
}

}  // namespace lf
