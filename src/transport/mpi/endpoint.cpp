// The endpoint of one mpi channel: it owns the channel's two streams (the
// ring, ring.hpp, and the direct stream, direct.hpp) and what they share
// (link.hpp), picks the stream of each message it sends, takes arrived
// messages from the stream the peer is on, and closes the channel. The
// choice of stream and the markers that switch it are described in wire.hpp.
#include "transport/mpi/endpoint.hpp"

#include <algorithm>

#include "transport/mpi/direct.hpp"
#include "transport/mpi/link.hpp"
#include "transport/mpi/mpi_transport.hpp"
#include "transport/mpi/ring.hpp"

namespace lf::mpi {
namespace {

class MpiEndpoint final : public Endpoint {
 public:
  MpiEndpoint(MpiTransport &t, int peer, int base_tag, uint64_t peer_eager, MPI_Comm stream) noexcept
      : t_(t),
        send_eager_(std::min(t.eager_limit(), peer_eager)),
        link_(t, peer, send_eager_),
        ring_(link_, t.comm(), base_tag, stream != MPI_COMM_NULL),
        direct_(link_, stream) {}

  Status post_ring() noexcept { return ring_.post(); }

  ~MpiEndpoint() override {
    Error closed = make_error(LF_ERR_CLOSED, "channel was closed");
    {
      auto lock = t_.mpi_lock();
      // Tell the peer, unless the connection already failed, on the stream
      // the peer reads now.
      if (!link_.broken()) {
        if (send_direct_)
          direct_.send_bye();
        else
          ring_.send_bye();
      }
      ring_.cancel_receives();
      link_.drop_in_flight(closed);
    }
    t_.drain_graveyard(false);
  }

  void send(SendOp &op) noexcept override {
    if (link_.broken()) return fail_op(op, *link_.broken());
    const char *src = static_cast<const char *>(op.data);
    bool device = false;
    if (op.buffer && !op.buffer->data() && op.size) {
      if (op.buffer->kind() != MemoryKind::cuda_device)
        return fail_op(op, make_error(LF_ERR_UNSUPPORTED, "the mpi transport cannot move %s memory",
                                      memory_kind_name(op.buffer->kind())));
      src = reinterpret_cast<const char *>(static_cast<uintptr_t>(op.buffer->device_handle()));
      device = true;
    } else {
      device = link_.is_device(src);
    }
    if (device && op.header_size)
      return fail_op(op, make_error(LF_ERR_UNSUPPORTED, "mpi: a gather send's payload must be host memory"));
    auto lock = t_.mpi_lock();
    const uint64_t n = op.total();
    bool large = n > send_eager_ || device;
    bool direct_ok = direct_.open() && !device && n <= t_.chunk() && op.tag <= t_.direct_tag_max();
    if (send_direct_) {
      if (direct_ok && (large || small_run_ + 1 < kSmallRun)) {
        small_run_ = large ? 0 : small_run_ + 1;
        return direct_.send(op, src);
      }
      if (auto st = direct_.send_marker(); !st) return fail_op(op, st.error());
      send_direct_ = false;
    } else if (direct_ok && large) {
      if (auto st = ring_.send_marker(); !st) return fail_op(op, st.error());
      send_direct_ = true;
      small_run_ = 0;
      return direct_.send(op, src);
    }
    if (!large) return ring_.send_eager(op, src);
    ring_.send_large(op, src, device);
  }

  Status progress(Matcher &m) noexcept override {
    if (link_.broken()) return std::unexpected(*link_.broken());
    auto lock = t_.mpi_lock();
    // Sends first: their completion frees slots and lets the peer go on.
    if (auto st = link_.sends().test(); !st) return link_.fail(st.error());
    // Messages in the order they were sent, from the stream the peer is on.
    for (;;) {
      auto next = recv_direct_ ? direct_.next(m) : ring_.next(m);
      if (!next) return std::unexpected(next.error());
      if (*next == Next::idle) break;
      if (*next == Next::switched) recv_direct_ = !recv_direct_;
    }
    // Large messages, both directions.
    if (auto st = link_.transfers().progress(); !st) return link_.fail(st.error());
    return {};
  }

 private:
  MpiTransport &t_;
  uint64_t send_eager_;  // the smaller of our and the peer's eager limit
  Link link_;
  RingStream ring_;
  DirectStream direct_;
  bool send_direct_ = false;  // this rank's messages go on the direct stream
  bool recv_direct_ = false;  // the peer's messages come on the direct stream
  int small_run_ = 0;         // small messages sent direct in a row
};

}  // namespace

Result<std::unique_ptr<Endpoint>> make_endpoint(MpiTransport &t, int peer, int base_tag, uint64_t peer_eager,
                                                MPI_Comm stream) {
  std::unique_ptr<MpiEndpoint> ep;
  try {
    ep = std::make_unique<MpiEndpoint>(t, peer, base_tag, peer_eager, stream);
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for an endpoint");
  }
  if (auto st = ep->post_ring(); !st) return std::unexpected(st.error());
  return std::unique_ptr<Endpoint>(std::move(ep));
}

}  // namespace lf::mpi
