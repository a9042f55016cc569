// Transport selection. Reads only capability flags, the scope decision, the
// set of transports that started on both ranks, and the user's filter, so
// both ranks of a channel reach the same answer.

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

bool serves(const TransportCaps &c, Scope s) {
  switch (s) {
    case Scope::self: return c.self;
    case Scope::local: return c.local;
    case Scope::remote: return c.remote;
  }
  return false;
}

}  // namespace

Result<Selection> select_transport(Context &ctx, int peer, const ChannelOptions &opts) {
  ScopeDecision sd = ctx.scope(peer);
  bool strict = opts.strict.value_or(config::get_bool("LF_STRICT"));
  auto filter = parse_filter(opts.transports.value_or(config::get_string("LF_TRANSPORTS")), ctx);
  if (!filter) return std::unexpected(filter.error());
  bool device_kind = !(kHostKinds & kind_bit(opts.memory_kind));

  // Candidates that serve the scope, ordered: native support for the
  // payload's memory kind first, then priority (the registry's order).
  std::vector<Transport *> order;
  for (int pass = 0; pass < 2; ++pass)
    for (auto &ts : ctx.transports()) {
      TransportCaps c = ts.transport->caps();
      if (!serves(c, sd.scope)) continue;
      bool native = c.memory_kinds & kind_bit(opts.memory_kind);
      if ((pass == 0) == native) order.push_back(ts.transport.get());
    }

  std::string skipped;
  Transport *first_choice = order.empty() ? nullptr : order.front();
  for (Transport *t : order) {
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
      if (strict && t != first_choice)
        return LF_FAIL(LF_ERR_UNAVAILABLE, "strict mode: %s scope to rank %d wants %s, which is unusable (%s)",
                       scope_name(sd.scope), peer, first_choice->name(), skipped.c_str());
      if (strict && device_kind && !(t->caps().memory_kinds & kind_bit(opts.memory_kind)))
        return LF_FAIL(LF_ERR_UNAVAILABLE, "strict mode: no transport moves %s memory natively to rank %d",
                       memory_kind_name(opts.memory_kind), peer);
      std::string detail = sd.reason;
      // "same host, same IPC namespace: local" -> "local scope, same host, same IPC namespace: shm"
      if (auto colon = detail.rfind(": "); colon != std::string::npos) detail.resize(colon);
      Selection s{t, std::string(scope_name(sd.scope)) + " scope, " + detail + ": " + name};
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
