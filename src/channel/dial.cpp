#include "channel/dial.hpp"

#include <unistd.h>

#include "channel/context.hpp"
#include "channel/dial_wire.hpp"
#include "core/config.hpp"
#include "core/location.hpp"
#include "core/log.hpp"
#include "core/scope.hpp"
#include "transport/filter.hpp"
#include "transport/shm/shm_rings.hpp"
#include "transport/tcp/endpoint.hpp"

namespace lf {

namespace {

// A handshake that has not finished by then is dropped: a client that
// connects and says nothing cannot hold a listener.
constexpr double kHandshakeSeconds = 5;

Result<JobKey> token() { return JobKey::from_environment("LF_EXEC_TOKEN", "LF_EXEC_TOKEN_FILE"); }

const char *socket_kind(const SockAddr &a) { return a.family == SockAddr::Family::tcp ? "TCP" : "Unix"; }

/// Exchange locations; the scope's reason ("same host, same IPC namespace: local").
Result<ScopeDecision> exchange_locations(int fd, Deadline deadline) {
  auto me = ProcessLocation::detect();
  if (!me) return std::unexpected(me.error());
  if (auto st = send_msg(fd, me->to_json(), deadline); !st) return std::unexpected(st.error());
  auto text = recv_msg(fd, deadline, dial::kMaxLocation);
  if (!text) return std::unexpected(text.error());
  auto peer = ProcessLocation::from_json(*text);
  if (!peer) return LF_FAIL(LF_ERR_PROTOCOL, "the peer's location is malformed: %s", peer.error().message.c_str());
  return decide_scope(*me, *peer);
}

// The acceptor chooses the channel's transport and tells the connector, so
// that the two never disagree (their LF_TRANSPORTS may differ): shared memory
// when the socket is a Unix socket between processes that can share memory,
// else lavaflow's tcp framing on the socket itself.
constexpr char kUseShm = 's', kUseStream = 't';

Result<std::shared_ptr<Channel>> make_channel(Context &ctx, Fd fd, bool acceptor, char use, const std::string &how,
                                              const ScopeDecision &scope, Deadline deadline) {
  std::string reason = "by address, " + how + ": " + scope.reason;
  Result<std::unique_ptr<Endpoint>> ep;
  const char *transport;
  if (use == kUseShm) {
    ep = shm::endpoint_over_socket(std::move(fd), acceptor, deadline);
    transport = "shm";
    reason += ": shm";
  } else {
    ep = tcp::connected_endpoint(std::move(fd), tcp::Settings::from_config(), -1, std::nullopt);
    transport = "tcp";
    reason += ": tcp framing";
  }
  if (!ep) return std::unexpected(ep.error());
  LF_LOG(info, "channel %s", reason.c_str());
  return Channel::adopt(ctx, -1, std::move(*ep), transport, std::move(reason));
}

}  // namespace

DialListener::DialListener(Context &ctx, Fd fd, SockAddr addr, JobKey key) noexcept
    : ctx_(ctx.shared_from_this()), fd_(std::move(fd)), addr_(std::move(addr)), key_(std::move(key)) {}

Result<std::unique_ptr<DialListener>> DialListener::listen(Context &ctx, const std::string &address) {
  auto addr = SockAddr::parse(address);
  if (!addr) return std::unexpected(addr.error());
  auto key = token();
  if (!key) return std::unexpected(key.error());
  if (addr->family == SockAddr::Family::tcp && !key->set())
    return LF_FAIL(LF_ERR_INVALID_ARG,
                   "listening on %s needs a secret its clients share: set LF_EXEC_TOKEN or LF_EXEC_TOKEN_FILE",
                   address.c_str());
  auto fd = listen_on(*addr);
  if (!fd) return std::unexpected(fd.error());
  auto bound = bound_address(fd->get(), *addr);
  if (!bound) return std::unexpected(bound.error());
  std::unique_ptr<DialListener> l(new DialListener(ctx, std::move(*fd), *bound, std::move(*key)));
  l->address_ = bound->to_string();
  return l;
}

Result<std::shared_ptr<Channel>> DialListener::accept(Deadline deadline) {
  std::lock_guard g(mu_);
  auto c = accept_one(fd_.get(), deadline);
  if (!c) return std::unexpected(c.error());
  const int fd = c->get();
  // The caller's deadline bounds the wait for a connection only: a client
  // that arrived gets the whole handshake bound, however little of the
  // caller's time is left (a short accept timeout in a loop would otherwise
  // cut off clients mid-handshake).
  const Deadline hs = deadline_in(kHandshakeSeconds);
  auto refuse = [&](lf_status_t code, const std::string &why) -> Result<std::shared_ptr<Channel>> {
    dial::Verdict v;
    v.status = code;
    uint8_t out[dial::kVerdictSize];
    dial::encode(v, out);
    (void)send_all(fd, out, sizeof out, hs);
    return LF_FAIL(code, "refused a client on %s: %s", address_.c_str(), why.c_str());
  };
  if (addr_.family != SockAddr::Family::tcp) {
    auto cred = peer_credentials(fd);
    if (!cred) return std::unexpected(cred.error());
    if (cred->uid != ::geteuid() && cred->uid != 0)
      return refuse(LF_ERR_INVALID_ARG, "its uid " + std::to_string(cred->uid) + " is another user's");
  }
  dial::ServerHello sh;
  sh.flags = key_.set() ? dial::kFlagTokenRequired : 0;
  sh.nonce = random_nonce();
  uint8_t hello[dial::kServerHelloSize];
  dial::encode(sh, hello);
  if (auto st = send_all(fd, hello, sizeof hello, hs); !st) return std::unexpected(st.error());
  uint8_t in[dial::kClientHelloSize];
  if (auto st = recv_all(fd, in, sizeof in, hs); !st) return std::unexpected(st.error());
  dial::ClientHello ch;
  if (const char *bad = dial::decode(in, ch))
    return LF_FAIL(LF_ERR_PROTOCOL, "client on %s: %s", address_.c_str(), bad);
  if (!key_.verify(dial::proof_message(true, sh.nonce, ch.nonce), ch.proof))
    return refuse(LF_ERR_INVALID_ARG, key_.set() ? "it did not present the token (LF_EXEC_TOKEN)"
                                                 : "it presented a token this listener does not have");
  dial::Verdict v;
  v.proof = key_.prove(dial::proof_message(false, ch.nonce, sh.nonce));
  uint8_t out[dial::kVerdictSize];
  dial::encode(v, out);
  if (auto st = send_all(fd, out, sizeof out, hs); !st) return std::unexpected(st.error());
  auto scope = exchange_locations(fd, hs);
  if (!scope) return std::unexpected(scope.error());
  const bool shm_ok = addr_.family != SockAddr::Family::tcp && scope->scope == Scope::local &&
                      TransportFilter::parse(config::get_string("LF_TRANSPORTS")).permits("shm");
  const char use = shm_ok ? kUseShm : kUseStream;
  if (auto st = send_all(fd, &use, 1, hs); !st) return std::unexpected(st.error());
  return make_channel(*ctx_, std::move(*c), true, use,
                      std::string("accepted on ") + address_ + " (" + socket_kind(addr_) + ")", *scope, hs);
}

Result<std::shared_ptr<Channel>> connect_by_address(Context &ctx, const std::string &address, Deadline deadline) {
  auto addr = SockAddr::parse(address);
  if (!addr) return std::unexpected(addr.error());
  auto key = token();
  if (!key) return std::unexpected(key.error());
  auto c = connect_to(*addr, deadline);
  if (!c) return std::unexpected(c.error());
  const int fd = c->get();
  const Deadline hs = std::min(deadline, deadline_in(kHandshakeSeconds));
  uint8_t hello[dial::kServerHelloSize];
  if (auto st = recv_all(fd, hello, sizeof hello, hs); !st) return std::unexpected(st.error());
  dial::ServerHello sh;
  if (const char *bad = dial::decode(hello, sh)) return LF_FAIL(LF_ERR_PROTOCOL, "%s: %s", address.c_str(), bad);
  if ((sh.flags & dial::kFlagTokenRequired) && !key->set())
    return LF_FAIL(LF_ERR_INVALID_ARG, "%s requires a token: set LF_EXEC_TOKEN or LF_EXEC_TOKEN_FILE", address.c_str());
  dial::ClientHello ch;
  ch.nonce = random_nonce();
  ch.proof = key->prove(dial::proof_message(true, sh.nonce, ch.nonce));
  uint8_t out[dial::kClientHelloSize];
  dial::encode(ch, out);
  if (auto st = send_all(fd, out, sizeof out, hs); !st) return std::unexpected(st.error());
  uint8_t in[dial::kVerdictSize];
  if (auto st = recv_all(fd, in, sizeof in, hs); !st) return std::unexpected(st.error());
  dial::Verdict v;
  if (const char *bad = dial::decode(in, v)) return LF_FAIL(LF_ERR_PROTOCOL, "%s: %s", address.c_str(), bad);
  if (v.status < 0)
    return LF_FAIL(static_cast<lf_status_t>(v.status),
                   "%s refused this client (a wrong or missing token, or another user's process)", address.c_str());
  if (!key->verify(dial::proof_message(false, ch.nonce, sh.nonce), v.proof))
    return LF_FAIL(LF_ERR_PROTOCOL, "%s could not prove it holds the token: not the listener we meant",
                   address.c_str());
  auto scope = exchange_locations(fd, hs);
  if (!scope) return std::unexpected(scope.error());
  char use = 0;
  if (auto st = recv_all(fd, &use, 1, hs); !st) return std::unexpected(st.error());
  if (use != kUseShm && use != kUseStream)
    return LF_FAIL(LF_ERR_PROTOCOL, "%s chose an unknown transport for the channel", address.c_str());
  if (use == kUseShm && addr->family == SockAddr::Family::tcp)
    return LF_FAIL(LF_ERR_PROTOCOL, "%s chose shared memory over a TCP socket", address.c_str());
  return make_channel(ctx, std::move(*c), false, use, "connected to " + address + " (" + socket_kind(*addr) + ")",
                      *scope, hs);
}

}  // namespace lf
