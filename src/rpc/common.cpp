#include "rpc/common.hpp"

#include <cstring>

namespace lf::rpc {

Outgoing make_message(const Prefix &p, std::string_view method, const void *header, size_t header_len,
                      const void *payload, size_t payload_len) {
  Outgoing m;
  m.block.resize(kPrefixSize + method.size() + header_len);
  Prefix q = p;
  q.method_len = static_cast<uint16_t>(method.size());
  q.header_len = static_cast<uint32_t>(header_len);
  q.payload_len = payload_len;
  encode_prefix(q, m.block.data());
  if (!method.empty()) std::memcpy(m.block.data() + kPrefixSize, method.data(), method.size());
  if (header_len) std::memcpy(m.block.data() + kPrefixSize + method.size(), header, header_len);
  m.payload = payload;
  m.payload_len = payload_len;
  return m;
}

lf_status_t send_message(lf_channel_t ch, const Outgoing &m, lf_request_t *req) noexcept {
  return lf_isend_gather(ch, m.block.data(), m.block.size(), m.payload, m.payload_len, kRpcTag, req);
}

int64_t remaining_ns(Clock::time_point t) noexcept {
  if (t == Clock::time_point::max()) return 0;
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t - Clock::now()).count();
  return ns > 0 ? ns : 1;
}

Inbox::~Inbox() {
  if (!rx_) return;
  // A cancelled receive ends at once; one already matched ends with its message.
  (void)lf_cancel(rx_);
  lf_buffer_t b = nullptr;
  lf_completion_t info = LF_COMPLETION_INIT;
  if (lf_wait_buffer(rx_, &b, &info) == LF_OK) lf_free(b);
}

lf_status_t Inbox::fail(lf_status_t st, const char *why) noexcept {
  broken_ = st;
  try {
    why_ = why;
  } catch (...) {
  }
  return st;
}

lf_status_t Inbox::next(int64_t timeout_ms, lf_buffer_t *buf, Message &msg) noexcept {
  if (broken_) return broken_;
  if (!rx_) {
    if (lf_status_t st = lf_irecv_buffer(ch_, kRpcTag, &rx_); st != LF_OK) {
      rx_ = nullptr;
      return fail(st, lf_last_error());
    }
  }
  lf_completion_t info = LF_COMPLETION_INIT;
  lf_status_t st = lf_wait_buffer_timeout(rx_, timeout_ms, buf, &info);
  if (st == LF_ERR_TIMEOUT) return st;
  rx_ = nullptr;  // completed (and freed) either way
  if (st != LF_OK) return fail(st, lf_last_error());
  const auto *data = static_cast<const uint8_t *>(lf_buffer_data(*buf));
  if (const char *bad = decode(data, lf_buffer_size(*buf), msg)) {
    lf_free(*buf);
    *buf = nullptr;
    return fail(LF_ERR_PROTOCOL, bad);
  }
  return LF_OK;
}

}  // namespace lf::rpc
