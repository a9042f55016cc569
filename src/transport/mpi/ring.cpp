// The envelope protocol of one mpi channel (ring.hpp), and the unexpected
// messages it hands to the channel.
#include "transport/mpi/ring.hpp"

#include <algorithm>
#include <cstring>

#include "core/bootstrap_mpi.hpp"
#include "transport/mpi/device.hpp"
#include "transport/mpi/mpi_transport.hpp"

namespace lf::mpi {
namespace {

/// An eager message that arrived before its receive: a host copy that may
/// still have to go to device memory.
class MpiEagerIncoming final : public Incoming {
 public:
  MpiEagerIncoming(uint64_t tag, const char *data, size_t n, const Link *link)
      : Incoming(tag, n), copy_(new char[n ? n : 1]), link_(link) {
    if (n) std::memcpy(copy_.get(), data, n);
  }
  void deliver(RecvOp &op) noexcept override {
    deliver_eager(op, !op.want_buffer && link_->is_device(op.data), tag(), copy_.get(), size());
  }

 private:
  std::unique_ptr<char[]> copy_;
  const Link *link_;  // the channel drops its unexpected messages before its endpoint
};

/// A large message whose payload is still inside MPI.
class MpiLargeIncoming final : public Incoming {
 public:
  MpiLargeIncoming(const Envelope &e, RingStream *ring) noexcept : Incoming(e.tag, e.size), env_(e), ring_(ring) {}
  void deliver(RecvOp &op) noexcept override { ring_->start_large(op, env_); }

 private:
  Envelope env_;
  RingStream *ring_;
};

}  // namespace

RingStream::RingStream(Link &link, MPI_Comm comm, int base_tag, bool has_direct) noexcept
    : link_(link),
      comm_(comm),
      base_(base_tag),
      has_direct_(has_direct),
      seq_max_((1u << link.transport().seq_bits()) - 1),
      slot_size_(kEnvSize + link.transport().eager_limit()) {}

Status RingStream::post() noexcept {
  MpiTransport &t = link_.transport();
  auto lock = t.mpi_lock();
  try {
    ring_.resize(static_cast<size_t>(t.slots()));
    for (Ring &r : ring_) r.buf.reset(new char[slot_size_]);
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for %d receive slots", t.slots());
  }
  // Persistent receives: re-arming one is a single MPI_Start.
  for (Ring &r : ring_) {
    int rc = MPI_Recv_init(r.buf.get(), static_cast<int>(slot_size_), MPI_BYTE, link_.peer(), base_, comm_, &r.req);
    if (rc == MPI_SUCCESS) rc = MPI_Start(&r.req);
    if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Recv_init/MPI_Start"));
    r.active = true;
  }
  return {};
}

void RingStream::cancel_receives() noexcept {
  for (Ring &r : ring_) {
    if (r.active) cancel(r.req);
    if (r.req != MPI_REQUEST_NULL) MPI_Request_free(&r.req);
  }
}

void RingStream::send_eager(SendOp &op, const char *src) noexcept {
  Envelope e;
  e.kind = kEager;
  e.tag = op.tag;
  e.size = op.total();
  auto sent =
      op.header_size ? link_.post_envelope(e, op, comm_, base_) : link_.post_envelope(e, src, op.size, comm_, base_);
  if (!sent) return fail_op(op, sent.error());
  link_.keep_send(&op, sent->second, sent->first);
}

void RingStream::send_large(SendOp &op, const char *src, bool device) noexcept {
  MpiTransport &t = link_.transport();
  Transfers &transfers = link_.transfers();
  uint32_t seq = next_seq_;
  next_seq_ = next_seq_ == seq_max_ ? 1 : next_seq_ + 1;
  std::unique_ptr<Transfer> x = transfers.take();
  if (!x) return fail_op(op, make_error(LF_ERR_NO_MEMORY, "mpi: no memory to start a send"));
  Envelope e;
  e.kind = kLarge;
  e.seq = seq;
  e.tag = op.tag;
  e.size = op.total();
  e.chunk = t.chunk();
  auto sent = link_.post_envelope(e, nullptr, 0, comm_, base_);
  if (!sent) return fail_op(op, sent.error());
  auto [slot, env_req] = *sent;
  x->sop = &op;
  x->size = op.total();
  x->mpi_tag = base_ | static_cast<int>(seq);
  x->env_slot = slot;
  // One MPI_Testall covers envelope and payload; within the capacity
  // Transfers::take() gives.
  x->direct.push_back(env_req);
  Status st;
  if (device && !t.device().mpi_aware)
    st = transfers.start_pipeline(*x, /*send=*/true, true, const_cast<char *>(src), op.size, 0, op.size, e.chunk);
  else
    st = transfers.post_chunks(*x, const_cast<char *>(src), op.total(), e.chunk, /*send=*/true);
  if (st) st = transfers.track(x);
  if (st) return;
  // The envelope is out: the stream cannot be repaired.
  (void)link_.fail(st.error());
  transfers.abandon(*x, *link_.broken());
}

Result<Next> RingStream::next(Matcher &m) noexcept {
  Ring &r = ring_[head_];
  int flag = 0;
  MPI_Status status{};
  int rc = MPI_Test(&r.req, &flag, &status);
  if (rc != MPI_SUCCESS) {
    r.active = false;  // completed, with an error
    if (rc == MPI_ERR_TRUNCATE || status.MPI_ERROR == MPI_ERR_TRUNCATE)
      return link_.lost(
          make_error(LF_ERR_PROTOCOL, "rank %d sent an envelope larger than this rank's slots", link_.peer()));
    return link_.lost(mpi_error(rc, "MPI_Test (envelope)"));
  }
  if (!flag) return Next::idle;
  r.active = false;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  auto got = on_envelope(m, r.buf.get(), static_cast<size_t>(count));
  if (!got) return got;
  if (link_.broken()) return std::unexpected(*link_.broken());
  rc = MPI_Start(&r.req);
  if (rc != MPI_SUCCESS) return link_.lost(mpi_error(rc, "MPI_Start"));
  r.active = true;
  head_ = (head_ + 1) % ring_.size();
  return got;
}

Result<Next> RingStream::on_envelope(Matcher &m, const char *buf, size_t count) noexcept {
  const int peer = link_.peer();
  if (count < kEnvSize) return fault(make_error(LF_ERR_PROTOCOL, "rank %d sent a %zu-byte envelope", peer, count));
  Envelope e;
  std::memcpy(&e, buf, kEnvSize);
  switch (e.kind) {
    case kEager: {
      if (e.size != count - kEnvSize)
        return fault(make_error(LF_ERR_PROTOCOL, "rank %d: eager message announces %llu bytes but carries %zu", peer,
                                (unsigned long long)e.size, count - kEnvSize));
      if (RecvOp *op = m.take_posted(e.tag)) {
        deliver_eager(*op, !op->want_buffer && link_.is_device(op->data), e.tag, buf + kEnvSize, e.size);
        return Next::taken;
      }
      MpiEagerIncoming *in = nullptr;
      try {
        in = new MpiEagerIncoming(e.tag, buf + kEnvSize, e.size, &link_);
      } catch (const std::bad_alloc &) {
        return fault(make_error(LF_ERR_NO_MEMORY, "mpi: no memory to keep an unexpected message; channel broken"));
      }
      m.add_unexpected(std::unique_ptr<Incoming>(in));
      return Next::taken;
    }
    case kLarge: {
      if (count != kEnvSize || e.seq == 0 || e.seq > seq_max_ || e.chunk == 0 || e.chunk > kMaxChunk)
        return fault(make_error(LF_ERR_PROTOCOL, "rank %d sent a malformed large-message envelope", peer));
      if (RecvOp *op = m.take_posted(e.tag)) {
        begin_large_recv(*op, e);
        return Next::taken;
      }
      auto *in = new (std::nothrow) MpiLargeIncoming(e, this);
      if (!in) return fault(make_error(LF_ERR_NO_MEMORY, "mpi: no memory to note an unexpected message"));
      m.add_unexpected(std::unique_ptr<Incoming>(in));
      return Next::taken;
    }
    case kDirect:
      if (count != kEnvSize || !has_direct_)
        return fault(make_error(LF_ERR_PROTOCOL, "rank %d switched to a direct stream this channel lacks", peer));
      return Next::switched;
    case kBye: return fault(make_error(LF_ERR_PEER_GONE, "rank %d closed its end of the channel", peer));
    default: return fault(make_error(LF_ERR_PROTOCOL, "rank %d sent an envelope of unknown kind %u", peer, e.kind));
  }
}

void RingStream::start_large(RecvOp &op, const Envelope &e) noexcept {
  if (link_.broken()) return fail_op(op, *link_.broken());
  auto lock = link_.transport().mpi_lock();
  begin_large_recv(op, e);
}

void RingStream::begin_large_recv(RecvOp &op, const Envelope &e) noexcept {
  Transfers &transfers = link_.transfers();
  op.matched_tag = e.tag;
  op.message_bytes = e.size;
  std::unique_ptr<Transfer> x = transfers.take();
  if (!x) return fail_op(op, make_error(LF_ERR_NO_MEMORY, "mpi: no memory to start a receive"));
  x->rop = &op;
  x->size = e.size;
  x->mpi_tag = base_ | static_cast<int>(e.seq);
  auto d = link_.recv_dest(op, e.size);
  if (!d) {
    // The payload must still be consumed, or the next message with this
    // sequence number would meet it: the stream is lost.
    fail_op(op, d.error());
    return (void)link_.fail(make_error(LF_ERR_NO_MEMORY, "mpi: no memory for a %llu-byte buffer; channel broken",
                                       (unsigned long long)e.size));
  }
  op.bytes = std::min<uint64_t>(e.size, d->cap);
  Status st;
  if (d->device && !link_.transport().device().mpi_aware) {
    st = transfers.start_pipeline(*x, false, true, d->mem, d->cap, 0, e.size, e.chunk);
  } else {
    // Whole chunks that fit go straight into place; the rest (truncation)
    // through a bounce buffer.
    uint64_t fit = std::min<uint64_t>(e.size, d->cap) / e.chunk * e.chunk;
    if (e.size <= d->cap) fit = e.size;
    st = transfers.post_chunks(*x, d->mem, fit, e.chunk, /*send=*/false);
    if (st && fit < e.size) st = transfers.start_pipeline(*x, false, d->device, d->mem, d->cap, fit, e.size, e.chunk);
  }
  link_.run_recv(std::move(x), st);
}

}  // namespace lf::mpi
