// The direct stream of one mpi channel (direct.hpp), and the unexpected
// messages it hands to the channel.
#include "transport/mpi/direct.hpp"

#include <algorithm>

#include "core/bootstrap_mpi.hpp"
#include "memory/allocator.hpp"
#include "transport/mpi/mpi_transport.hpp"

namespace lf::mpi {
namespace {

/// A direct-stream message taken off MPI's queue by MPI_Improbe before its
/// receive was posted: MPI keeps it (a large one stays at the sender) until
/// MPI_Imrecv. Dropped unreceived (its channel closed), it stays with MPI,
/// like the payload of an unexpected large message of the ring: receiving it
/// then would end its send as delivered although nobody received it, and
/// could read memory whose sender has been told the send failed.
class MpiDirectIncoming final : public Incoming {
 public:
  MpiDirectIncoming(uint64_t tag, size_t n, MPI_Message msg, DirectStream *stream) noexcept
      : Incoming(tag, n), msg_(msg), stream_(stream) {}
  void deliver(RecvOp &op) noexcept override { stream_->start(op, msg_, tag(), size()); }

 private:
  MPI_Message msg_;
  DirectStream *stream_;  // the channel drops its unexpected messages before its endpoint
};

}  // namespace

void DirectStream::send(SendOp &op, const char *src) noexcept {
  MPI_Request req;
  int rc = op.header_size ? isend_message(op, 0, op.total(), link_.peer(), static_cast<int>(op.tag + 1), comm_, &req)
                          : MPI_Isend(src, static_cast<int>(op.size), MPI_BYTE, link_.peer(),
                                      static_cast<int>(op.tag + 1), comm_, &req);
  if (rc != MPI_SUCCESS) {
    Error err = mpi_error(rc, "MPI_Isend (direct)");
    fail_op(op, err);
    (void)link_.fail(err);  // the peer now waits on this stream for a message that will not come
    return;
  }
  link_.keep_send(&op, req, -1);
}

Result<Next> DirectStream::next(Matcher &m) noexcept {
  // With no receive posted, a message is as well kept by MPI as by the
  // channel (in order, a large one still at its sender): leave it there
  // rather than note it as unexpected, and take it on the first progress
  // after a receive is posted. Unless sends are in flight: the peer's bye
  // may be waiting on this stream, and it is what ends them if the peer
  // closed.
  if (!m.has_posted() && link_.sends().empty() && link_.transfers().empty()) return Next::idle;
  const int peer = link_.peer();
  int flag = 0;
  MPI_Message msg = MPI_MESSAGE_NULL;
  MPI_Status status{};
  int rc = MPI_Improbe(peer, MPI_ANY_TAG, comm_, &flag, &msg, &status);
  if (rc != MPI_SUCCESS) return link_.lost(mpi_error(rc, "MPI_Improbe"));
  if (!flag) return Next::idle;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  size_t n = static_cast<size_t>(count);
  if (status.MPI_TAG == 0) {  // a marker
    if (n != kEnvSize) return link_.lost(make_error(LF_ERR_PROTOCOL, "rank %d sent a %zu-byte stream marker", peer, n));
    Envelope e;
    rc = MPI_Mrecv(&e, kEnvSize, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return link_.lost(mpi_error(rc, "MPI_Mrecv (marker)"));
    if (e.kind == kBye) return link_.lost(make_error(LF_ERR_PEER_GONE, "rank %d closed its end of the channel", peer));
    if (e.kind != kRing)
      return link_.lost(make_error(LF_ERR_PROTOCOL, "rank %d sent a stream marker of unknown kind %u", peer, e.kind));
    return Next::switched;
  }
  uint64_t tag = static_cast<uint64_t>(status.MPI_TAG) - 1;
  if (RecvOp *op = m.take_posted(tag)) {
    begin_recv(*op, msg, tag, n);
  } else if (auto *in = new (std::nothrow) MpiDirectIncoming(tag, n, msg, this)) {
    m.add_unexpected(std::unique_ptr<Incoming>(in));
  } else {
    discard(msg, n);
    return link_.lost(make_error(LF_ERR_NO_MEMORY, "mpi: no memory to note an unexpected message; channel broken"));
  }
  if (link_.broken()) return std::unexpected(*link_.broken());
  return Next::taken;
}

void DirectStream::start(RecvOp &op, MPI_Message msg, uint64_t tag, size_t n) noexcept {
  auto lock = link_.transport().mpi_lock();
  if (link_.broken()) {
    fail_op(op, *link_.broken());
    return discard(msg, n);
  }
  begin_recv(op, msg, tag, n);
}

void DirectStream::discard(MPI_Message msg, size_t n) noexcept {
  std::unique_ptr<char[]> mem(new (std::nothrow) char[n ? n : 1]);
  MPI_Request req;
  if (mem && MPI_Imrecv(mem.get(), static_cast<int>(n), MPI_BYTE, &msg, &req) == MPI_SUCCESS)
    link_.transport().bury(req, std::move(mem));
}

void DirectStream::begin_recv(RecvOp &op, MPI_Message msg, uint64_t tag, size_t n) noexcept {
  // It goes straight into place unless it is larger than the receive or
  // bound for device memory.
  Transfers &transfers = link_.transfers();
  op.matched_tag = tag;
  op.message_bytes = n;
  auto d = link_.recv_dest(op, n);
  BufferPtr bounce;
  if (d && (n > d->cap || d->device)) {
    auto b = allocate(n ? n : 1, d->device ? MemoryKind::host_pinned : MemoryKind::host);
    if (b)
      bounce = std::move(*b);
    else
      d = std::unexpected(b.error());
  }
  std::unique_ptr<Transfer> x;
  if (d && bounce && !(x = transfers.take())) d = LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory to start a receive");
  if (!d) {
    // Only this receive fails: the message is taken all the same, so the
    // stream goes on.
    fail_op(op, d.error());
    return discard(msg, n);
  }
  op.bytes = std::min<uint64_t>(n, d->cap);
  MPI_Request req;
  int rc = MPI_Imrecv(bounce ? bounce->data() : d->mem, static_cast<int>(n), MPI_BYTE, &msg, &req);
  int flag = 0;
  if (rc == MPI_SUCCESS && !bounce) rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
  if (rc != MPI_SUCCESS) {
    Error err = mpi_error(rc, "MPI_Imrecv");
    fail_op(op, err);
    return (void)link_.fail(err);
  }
  // Straight into place, MPI usually moves it within MPI_Imrecv (see
  // Transfers::run_recv): then there is nothing to keep track of.
  if (flag) return complete(op, LF_OK);
  if (!x && !(x = transfers.take())) {
    cancel(req);  // matched: waits until the data is in place
    Error err = make_error(LF_ERR_NO_MEMORY, "mpi: no memory to track a receive; channel broken");
    fail_op(op, err);
    return (void)link_.fail(err);
  }
  x->rop = &op;
  x->size = n;
  if (bounce) {
    x->bounce = std::move(bounce);
    x->dst = d->mem;
    x->keep = op.bytes;
    x->dst_device = d->device;
  }
  x->direct.push_back(req);  // within the capacity Transfers::take() gives
  link_.run_recv(std::move(x), {});
}

}  // namespace lf::mpi
