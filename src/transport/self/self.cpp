// Loopback for a rank talking to itself: a send is queued and matched by the
// next progress of the same channel. Plain buffers are copied once at send
// time (a buffered send, like MPI_Bsend); buffers handed over with
// lf_isend_buffer move whole to the receiver without a copy.
#include <deque>

#include "transport/transport.hpp"
#include "transport/world.hpp"

namespace lf {

namespace {

class SelfEndpoint final : public Endpoint {
 public:
  void send(SendOp &op) noexcept override {
    try {
      if (op.buffer && !op.header_size)
        queue_.push_back(std::make_unique<EagerIncoming>(op.tag, std::move(op.buffer)));
      else
        queue_.push_back(std::make_unique<EagerIncoming>(op));
      complete_status(op.status, LF_OK);
    } catch (const std::bad_alloc &) {
      fail_op(op, make_error(LF_ERR_NO_MEMORY, "self transport: no memory to queue a %zu-byte message", op.size));
    }
  }

  Status progress(Matcher &m) noexcept override {
    while (!queue_.empty()) {
      std::unique_ptr<Incoming> msg = std::move(queue_.front());
      queue_.pop_front();
      if (RecvOp *op = m.take_posted(msg->tag()))
        msg->deliver(*op);
      else
        m.add_unexpected(std::move(msg));
    }
    return {};
  }

 private:
  std::deque<std::unique_ptr<Incoming>> queue_;
};

class SelfTransport final : public Transport {
 public:
  const char *name() const noexcept override { return "self"; }
  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.self = true;
    c.memory_kinds = ~0u;  // buffers move whole, whatever their kind
    c.zero_copy = true;
    return c;
  }
  std::optional<Cost> estimate(const CostQuery &q) const noexcept override {
    if (q.scope != Scope::self) return std::nullopt;
    return Cost{0.05, 50};  // a queue in one process; buffers move whole
  }
  Result<std::string> start(World &) override { return std::string(); }
  Result<std::unique_ptr<Endpoint>> connect(World &, int, Deadline) override {
    return std::unique_ptr<Endpoint>(std::make_unique<SelfEndpoint>());
  }
};

}  // namespace

std::unique_ptr<Transport> make_self_transport() { return std::make_unique<SelfTransport>(); }

}  // namespace lf
