#include "transport/dpdk/dpdk_endpoint.hpp"

#include <rte_mbuf.h>
#include <time.h>

#include <atomic>
#include <cstring>

#include "memory/allocator.hpp"

namespace lf::dpdk {

namespace {

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

/// Copy `len` bytes from offset `off` of a (possibly multi-segment) mbuf.
void copy_out(const rte_mbuf *m, size_t off, char *dst, size_t len) noexcept {
  for (; m && len; m = m->next) {
    const size_t seg = rte_pktmbuf_data_len(m);
    if (off >= seg) {
      off -= seg;
      continue;
    }
    const size_t k = std::min(len, seg - off);
    std::memcpy(dst, rte_pktmbuf_mtod_offset(m, const char *, off), k);
    dst += k, len -= k, off = 0;
  }
}

/// An unexpected message: a complete host copy, counted against the cap
/// until it is delivered or dropped.
class Unexpected final : public Incoming {
 public:
  Unexpected(uint64_t tag, BufferPtr data, size_t n, std::shared_ptr<std::atomic<size_t>> held)
      : Incoming(tag, n), data_(std::move(data)), held_(std::move(held)) {}
  ~Unexpected() override { held_->fetch_sub(size(), std::memory_order_relaxed); }
  void deliver(RecvOp &op) noexcept override {
    if (op.want_buffer) {
      op.matched_tag = tag();
      op.message_bytes = op.bytes = size();
      op.buffer = std::move(data_);
      complete_status(op.status, LF_OK);
      return;
    }
    complete_copy(op, tag(), data_->data(), size());
  }

 private:
  BufferPtr data_;
  std::shared_ptr<std::atomic<size_t>> held_;
};

class DpdkEndpoint final : public Endpoint {
 public:
  DpdkEndpoint(std::shared_ptr<Net> net, std::shared_ptr<Flow> flow, size_t cap, Deadline deadline)
      : net_(std::move(net)), flow_(std::move(flow)), cap_(cap), deadline_(deadline) {}

  ~DpdkEndpoint() override {
    {
      std::lock_guard g(flow_->mu);
      if (cur_.op) fail_op(*cur_.op, make_error(LF_ERR_CLOSED, "channel closed"));
      flow_->close();
    }
    net_->detach(*flow_);
  }

  void send(SendOp &op) noexcept override {
    std::lock_guard g(flow_->mu);
    flow_->queue_send(op);
    flow_->pump(now_ns());
  }

  Status progress(Matcher &m) noexcept override {
    Port &port = flow_->port();
    net_->poll(port);
    std::lock_guard g(flow_->mu);
    if (!flow_->broken() && port.kind() == Port::Kind::memif && !port.link_up()) {
      if (port.went_down())
        flow_->fail(
            make_error(LF_ERR_PEER_GONE, "dpdk: the memif link to rank %d went down (the peer exited)", flow_->peer()));
      else if (Clock::now() > deadline_)
        flow_->fail(make_error(LF_ERR_TIMEOUT, "dpdk: rank %d never attached to its memif port %s", flow_->peer(),
                               port.name().c_str()));
    }
    const bool moved = deliver(m);
    flow_->pump(now_ns());
    if (moved) idle_.store(0, std::memory_order_relaxed);
    if (flow_->peer_finished() && !flow_->broken())
      flow_->fail(make_error(LF_ERR_PEER_GONE, "dpdk: rank %d closed the channel", flow_->peer()));
    if (flow_->broken()) {
      if (cur_.op) fail_op(*cur_.op, flow_->error());
      cur_ = {};
      return std::unexpected(flow_->error());
    }
    return {};
  }

  void wait_for_activity(int timeout_ms) noexcept override {
    // No fd signals a frame: back off from yielding to sleeping while the
    // channel stays quiet, so that an idle rank does not burn a core.
    const unsigned rounds = idle_.fetch_add(1, std::memory_order_relaxed);
    if (rounds < 64) {
      sched_yield();
      return;
    }
    int64_t us = rounds < 256 ? 20 : rounds < 1024 ? 100 : 500;
    if (timeout_ms >= 0) us = std::min<int64_t>(us, int64_t{timeout_ms} * 1000);
    timespec ts{0, static_cast<long>(us * 1000)};
    nanosleep(&ts, nullptr);
  }

 private:
  struct Assembly {
    bool active = false;
    uint64_t tag = 0;
    size_t total = 0, got = 0;
    RecvOp *op = nullptr;  ///< matched, copied into directly (unless a buffer receive)
    BufferPtr copy;        ///< buffer receive, or unexpected
  };

  /// Hand over what arrived in order; true when anything moved.
  bool deliver(Matcher &m) noexcept {
    bool moved = false;
    // Bounded per call so that one busy channel does not starve the others;
    // all of it when the flow is ending, since nothing comes after.
    for (int budget = 1024; rte_mbuf *mb = flow_->front(); --budget) {
      if (budget <= 0 && !flow_->peer_finished() && !flow_->broken()) break;
      uint8_t copy[kFrameOverhead];
      const auto *head = static_cast<const uint8_t *>(rte_pktmbuf_read(mb, 0, kFrameOverhead, copy));
      FrameHeader h;
      if (!head || decode_frame(head, rte_pktmbuf_pkt_len(mb), net_->size, &h)) {
        protocol_error("a frame that passed the poller no longer decodes");
        return moved;
      }
      if (h.flags & kFirst) {
        if (cur_.active) return protocol_error("a message started before the previous one ended"), moved;
        RecvOp *op = m.take_posted(h.tag);
        if (!op && held_->load(std::memory_order_relaxed) >= cap_) break;  // resumes when the channel takes some
        cur_ = Assembly{true, h.tag, h.msg_len, 0, op, {}};
        if (!op || op->want_buffer) {
          auto buf = allocate(h.msg_len ? h.msg_len : 1, MemoryKind::host);
          if (!buf) {
            flow_->fail(buf.error());
            return moved;
          }
          cur_.copy = std::move(*buf);
          if (!op) held_->fetch_add(h.msg_len, std::memory_order_relaxed);
        }
      } else if (!cur_.active) {
        return protocol_error("a continuation fragment without a first one"), moved;
      }
      if (h.len > cur_.total - cur_.got) return protocol_error("a message longer than it announced"), moved;
      if (cur_.copy) {
        copy_out(mb, kFrameOverhead, static_cast<char *>(cur_.copy->data()) + cur_.got, h.len);
      } else if (cur_.got < cur_.op->capacity) {
        copy_out(mb, kFrameOverhead, static_cast<char *>(cur_.op->data) + cur_.got,
                 std::min<size_t>(h.len, cur_.op->capacity - cur_.got));
      }
      cur_.got += h.len;
      flow_->pop();
      moved = true;
      if (h.flags & kLast) {
        if (cur_.got != cur_.total) return protocol_error("a message shorter than it announced"), moved;
        finish(m);
      }
    }
    return moved;
  }

  void finish(Matcher &m) noexcept {
    Assembly a = std::move(cur_);
    cur_ = {};
    if (a.op && !a.op->want_buffer) {
      a.op->matched_tag = a.tag;
      a.op->message_bytes = a.total;
      complete_length(*a.op, a.total);
      return;
    }
    RecvOp *op = a.op;
    if (!op && (op = m.take_posted(a.tag))) held_->fetch_sub(a.total, std::memory_order_relaxed);
    if (op) {
      a.copy->set_size(a.total);
      if (op->want_buffer) {
        op->matched_tag = a.tag;
        op->message_bytes = op->bytes = a.total;
        op->buffer = std::move(a.copy);
        complete_status(op->status, LF_OK);
      } else {
        complete_copy(*op, a.tag, a.copy->data(), a.total);
      }
      return;
    }
    a.copy->set_size(a.total);
    try {
      m.add_unexpected(std::make_unique<Unexpected>(a.tag, std::move(a.copy), a.total, held_));
    } catch (...) {
      held_->fetch_sub(a.total, std::memory_order_relaxed);
      flow_->fail(make_error(LF_ERR_NO_MEMORY, "dpdk: no memory for an unexpected message"));
    }
  }

  void protocol_error(const char *what) noexcept {
    flow_->fail(make_error(LF_ERR_PROTOCOL, "dpdk: rank %d sent %s", flow_->peer(), what));
  }

  std::shared_ptr<Net> net_;
  std::shared_ptr<Flow> flow_;
  size_t cap_;
  Deadline deadline_;
  Assembly cur_;
  std::shared_ptr<std::atomic<size_t>> held_ = std::make_shared<std::atomic<size_t>>(0);
  std::atomic<unsigned> idle_{0};
};

}  // namespace

std::unique_ptr<Endpoint> make_endpoint(std::shared_ptr<Net> net, std::shared_ptr<Flow> flow, size_t unexpected_cap,
                                        Deadline deadline) {
  return std::make_unique<DpdkEndpoint>(std::move(net), std::move(flow), unexpected_cap, deadline);
}

}  // namespace lf::dpdk
