// The C entry points of request channels (lavaflow_rpc.h). Servers, clients
// and requests are typed handles (objects.hpp); a call is valid only on the
// thread running its handler (Server::current), so a stale or made-up handle
// of any kind is refused, never dereferenced.
#include <lavaflow/lavaflow.h>

#include <cstring>
#include <memory>

#include "capi/capi_internal.hpp"
#include "capi/objects.hpp"
#include "rpc/client.hpp"
#include "rpc/server.hpp"

using namespace lf::capi;
using namespace lf::rpc;

namespace {

ObjectTable<Server, HandleType::rpc_server> &servers() noexcept {
  static ObjectTable<Server, HandleType::rpc_server> t;
  return t;
}
ObjectTable<Client, HandleType::rpc_client> &clients() noexcept {
  static ObjectTable<Client, HandleType::rpc_client> t;
  return t;
}
ObjectTable<Request, HandleType::rpc_request> &requests_of_rpc() noexcept {
  static ObjectTable<Request, HandleType::rpc_request> t;
  return t;
}

std::shared_ptr<Server> server_of(lf_rpc_server_t s, const char *fn) noexcept {
  auto o = servers().get(s);
  if (!o) fail(LF_ERR_INVALID_ARG, "%s: not a live rpc server", fn);
  return o;
}

std::shared_ptr<Request> request_of(lf_rpc_request_t r, const char *fn) noexcept {
  auto o = requests_of_rpc().get(r);
  if (!o) fail(LF_ERR_INVALID_ARG, "%s: not a live rpc request", fn);
  return o;
}

bool valid_method(const char *m) noexcept {
  if (!m) return false;
  const size_t n = strnlen(m, kMaxMethod + 1);
  return n > 0 && n <= kMaxMethod;
}

}  // namespace

LF_API lf_status_t lf_rpc_server_create(int threads, lf_rpc_server_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_rpc_server_create: out is NULL");
    if (threads < 0 || threads > 1024)
      return fail(LF_ERR_INVALID_ARG, "lf_rpc_server_create: %d threads is out of range (0..1024)", threads);
    *out = servers().add<lf_rpc_server_t>(std::make_shared<Server>(threads ? threads : 2));
    return *out ? LF_OK : fail(LF_ERR_NO_MEMORY, "lf_rpc_server_create: no free handle");
  });
}

LF_API lf_status_t lf_rpc_server_register(lf_rpc_server_t s, const char *method, lf_rpc_handler_fn fn, void *user) {
  auto srv = server_of(s, "lf_rpc_server_register");
  if (!srv) return LF_ERR_INVALID_ARG;
  if (!valid_method(method)) return fail(LF_ERR_INVALID_ARG, "lf_rpc_server_register: method must be 1..255 bytes");
  if (!fn) return fail(LF_ERR_INVALID_ARG, "lf_rpc_server_register: handler is NULL");
  return srv->add_handler(method, fn, user);
}

LF_API lf_status_t lf_rpc_server_register_inline(lf_rpc_server_t s, const char *method, lf_rpc_handler_fn fn,
                                                 void *user) {
  auto srv = server_of(s, "lf_rpc_server_register_inline");
  if (!srv) return LF_ERR_INVALID_ARG;
  if (!valid_method(method))
    return fail(LF_ERR_INVALID_ARG, "lf_rpc_server_register_inline: method must be 1..255 bytes");
  if (!fn) return fail(LF_ERR_INVALID_ARG, "lf_rpc_server_register_inline: handler is NULL");
  return srv->add_handler(method, fn, user, true);
}

LF_API lf_status_t lf_rpc_server_serve(lf_rpc_server_t s, lf_channel_t ch) {
  auto srv = server_of(s, "lf_rpc_server_serve");
  if (!srv) return LF_ERR_INVALID_ARG;
  if (lf_status_t st = lf_channel_status(ch); st != LF_OK) return st;  // a bad or broken channel
  return srv->serve(ch);
}

LF_API lf_status_t lf_rpc_server_destroy(lf_rpc_server_t s) {
  auto srv = servers().take(s);
  if (!srv) return fail(LF_ERR_INVALID_ARG, "lf_rpc_server_destroy: not a live rpc server");
  srv->stop();
  return LF_OK;
}

LF_API const char *lf_rpc_call_method(lf_rpc_call_t c) {
  Call *call = Server::current(c);
  return call ? call->method.c_str() : "";
}

LF_API const void *lf_rpc_call_header(lf_rpc_call_t c, size_t *len) {
  Call *call = Server::current(c);
  if (len) *len = call ? call->msg.prefix.header_len : 0;
  return call ? call->msg.header : nullptr;
}

LF_API const void *lf_rpc_call_payload(lf_rpc_call_t c, size_t *len) {
  Call *call = Server::current(c);
  if (len) *len = call ? call->msg.prefix.payload_len : 0;
  return call ? call->msg.payload : nullptr;
}

LF_API int lf_rpc_call_cancelled(lf_rpc_call_t c) {
  Call *call = Server::current(c);
  return !call || call->cancelled_now();
}

LF_API int64_t lf_rpc_call_remaining_ms(lf_rpc_call_t c) {
  Call *call = Server::current(c);
  if (!call || call->deadline == Clock::time_point::max()) return -1;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(call->deadline - Clock::now()).count();
  return left > 0 ? left : 0;
}

LF_API lf_status_t lf_rpc_call_respond(lf_rpc_call_t c, const void *header, size_t header_len, const void *payload,
                                       size_t payload_len) {
  Call *call = Server::current(c);
  if (!call) return fail(LF_ERR_INVALID_ARG, "lf_rpc_call_respond: not an rpc call");
  if ((!header && header_len) || (!payload && payload_len))
    return fail(LF_ERR_INVALID_ARG, "lf_rpc_call_respond: NULL data with a nonzero length");
  if (header_len > kMaxHeader)
    return fail(LF_ERR_INVALID_ARG, "lf_rpc_call_respond: a %zu-byte header exceeds %zu bytes", header_len, kMaxHeader);
  return call->server->respond(*call, LF_OK, header, header_len, payload, payload_len);
}

LF_API lf_status_t lf_rpc_call_fail(lf_rpc_call_t c, lf_status_t status, const char *message) {
  Call *call = Server::current(c);
  if (!call) return fail(LF_ERR_INVALID_ARG, "lf_rpc_call_fail: not an rpc call");
  if (status >= 0) return fail(LF_ERR_INVALID_ARG, "lf_rpc_call_fail: status %d is not an error", status);
  const char *text = message ? message : "";
  return call->server->respond(*call, status, text, strnlen(text, 4096), nullptr, 0);
}

LF_API lf_status_t lf_rpc_client_create(lf_channel_t ch, lf_rpc_client_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_rpc_client_create: out is NULL");
    if (lf_status_t st = lf_channel_status(ch); st != LF_OK) return st;
    *out = clients().add<lf_rpc_client_t>(std::make_shared<Client>(ch));
    return *out ? LF_OK : fail(LF_ERR_NO_MEMORY, "lf_rpc_client_create: no free handle");
  });
}

LF_API lf_status_t lf_rpc_client_destroy(lf_rpc_client_t c) {
  auto client = clients().take(c);
  if (!client) return fail(LF_ERR_INVALID_ARG, "lf_rpc_client_destroy: not a live rpc client");
  client->close();  // requests not yet released keep the client alive
  return LF_OK;
}

LF_API lf_status_t lf_rpc_call(lf_rpc_client_t c, const char *method, const void *header, size_t header_len,
                               const void *payload, size_t payload_len, int64_t deadline_ms, lf_rpc_request_t *out) {
  return guard([&]() -> lf_status_t {
    auto client = clients().get(c);
    if (!client) return fail(LF_ERR_INVALID_ARG, "lf_rpc_call: not a live rpc client");
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_rpc_call: out is NULL");
    if (!valid_method(method)) return fail(LF_ERR_INVALID_ARG, "lf_rpc_call: method must be 1..255 bytes");
    if ((!header && header_len) || (!payload && payload_len))
      return fail(LF_ERR_INVALID_ARG, "lf_rpc_call: NULL data with a nonzero length");
    if (header_len > kMaxHeader)
      return fail(LF_ERR_INVALID_ARG, "lf_rpc_call: a %zu-byte header exceeds %zu bytes", header_len, kMaxHeader);
    if (deadline_ms < 0) return fail(LF_ERR_INVALID_ARG, "lf_rpc_call: deadline_ms is negative");
    auto r = std::make_shared<Request>();
    r->client = client;
    lf_status_t st = client->call(*r, method, header, header_len, payload, payload_len, deadline_ms);
    if (st != LF_OK) return st;
    if (!(*out = requests_of_rpc().add<lf_rpc_request_t>(r))) {
      client->release(*r);
      return fail(LF_ERR_NO_MEMORY, "lf_rpc_call: no free request handle");
    }
    return LF_OK;
  });
}

LF_API lf_status_t lf_rpc_wait(lf_rpc_request_t r, int64_t timeout_ms) {
  auto req = request_of(r, "lf_rpc_wait");
  if (!req) return LF_ERR_INVALID_ARG;
  return req->client->wait(*req, timeout_ms);
}

LF_API lf_status_t lf_rpc_response(lf_rpc_request_t r, const void **header, size_t *header_len, const void **payload,
                                   size_t *payload_len) {
  auto req = request_of(r, "lf_rpc_response");
  if (!req) return LF_ERR_INVALID_ARG;
  lf_status_t st = req->status.load(std::memory_order_acquire);
  if (st == LF_IN_PROGRESS) return fail(LF_ERR_INVALID_ARG, "lf_rpc_response: the request has not completed");
  if (st != LF_OK) return fail(st, "%s", req->error.c_str());
  if (header) *header = req->msg.header;
  if (header_len) *header_len = req->msg.prefix.header_len;
  if (payload) *payload = req->msg.payload;
  if (payload_len) *payload_len = req->msg.prefix.payload_len;
  return LF_OK;
}

LF_API lf_status_t lf_rpc_cancel(lf_rpc_request_t r) {
  auto req = request_of(r, "lf_rpc_cancel");
  if (!req) return LF_ERR_INVALID_ARG;
  return req->client->cancel(*req);
}

LF_API lf_status_t lf_rpc_release(lf_rpc_request_t r) {
  auto req = requests_of_rpc().take(r);
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_rpc_release: not a live rpc request");
  req->client->release(*req);
  return LF_OK;
}
