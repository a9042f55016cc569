// The state both streams of one mpi channel share (link.hpp).
#include "transport/mpi/link.hpp"

#include <cstring>

#include "core/bootstrap_mpi.hpp"
#include "memory/allocator.hpp"
#include "transport/mpi/mpi_transport.hpp"
#include "transport/mpi/wire.hpp"

namespace lf::mpi {

Link::Link(MpiTransport &t, int peer, uint64_t send_eager) noexcept
    : t_(t), peer_(peer), sends_(t, kEnvSize + send_eager), transfers_(sends_, peer, t.comm()) {}

Status Link::fail(Error e) noexcept {
  if (!broken_) broken_ = e;
  drop_in_flight(e);
  return std::unexpected(e);
}

Result<Next> Link::lost(Error e) noexcept {
  (void)fail(std::move(e));
  return std::unexpected(*broken_);
}

void Link::drop_in_flight(const Error &e) noexcept {
  sends_.drop(e);
  transfers_.drop(e);
}

Result<std::pair<int, MPI_Request>> Link::post_envelope(const Envelope &e, const char *payload, size_t n, MPI_Comm comm,
                                                        int tag) noexcept {
  auto slot = sends_.take_slot();
  if (!slot) return std::unexpected(slot.error());
  char *buf = sends_.slot(*slot);
  std::memcpy(buf, &e, kEnvSize);
  if (n) std::memcpy(buf + kEnvSize, payload, n);
  MPI_Request req;
  int rc = MPI_Isend(buf, static_cast<int>(kEnvSize + n), MPI_BYTE, peer_, tag, comm, &req);
  if (rc != MPI_SUCCESS) {
    sends_.free_slot(*slot);
    Error err = mpi_error(rc, "MPI_Isend");
    (void)fail(err);
    return std::unexpected(err);
  }
  return std::pair{*slot, req};
}

Result<std::pair<int, MPI_Request>> Link::post_envelope(const Envelope &e, const SendOp &op, MPI_Comm comm,
                                                        int tag) noexcept {
  if (!op.header_size) return post_envelope(e, static_cast<const char *>(op.data), op.size, comm, tag);
  auto slot = sends_.take_slot();
  if (!slot) return std::unexpected(slot.error());
  char *buf = sends_.slot(*slot);
  std::memcpy(buf, &e, kEnvSize);
  copy_message(op, 0, buf + kEnvSize, op.total());
  MPI_Request req;
  int rc = MPI_Isend(buf, static_cast<int>(kEnvSize + op.total()), MPI_BYTE, peer_, tag, comm, &req);
  if (rc != MPI_SUCCESS) {
    sends_.free_slot(*slot);
    Error err = mpi_error(rc, "MPI_Isend");
    (void)fail(err);
    return std::unexpected(err);
  }
  return std::pair{*slot, req};
}

int isend_message(const SendOp &op, uint64_t off, uint64_t len, int peer, int tag, MPI_Comm comm,
                  MPI_Request *req) noexcept {
  const uint64_t h = op.header_size;
  const auto *head = static_cast<const char *>(op.header);
  const auto *body = static_cast<const char *>(op.data);
  if (off >= h) return MPI_Isend(body + (off - h), static_cast<int>(len), MPI_BYTE, peer, tag, comm, req);
  if (off + len <= h) return MPI_Isend(head + off, static_cast<int>(len), MPI_BYTE, peer, tag, comm, req);
  // Both pieces: absolute addresses from MPI_BOTTOM. The type may be freed
  // at once: MPI keeps it until the send is done.
  MPI_Aint addr[2];
  MPI_Get_address(head + off, &addr[0]);
  MPI_Get_address(body, &addr[1]);
  const int lens[2] = {static_cast<int>(h - off), static_cast<int>(len - (h - off))};
  MPI_Datatype type;
  int rc = MPI_Type_create_hindexed(2, lens, addr, MPI_BYTE, &type);
  if (rc != MPI_SUCCESS) return rc;
  if ((rc = MPI_Type_commit(&type)) == MPI_SUCCESS) rc = MPI_Isend(MPI_BOTTOM, 1, type, peer, tag, comm, req);
  MPI_Type_free(&type);
  return rc;
}

Status Link::send_marker(uint32_t kind, MPI_Comm comm, int tag) noexcept {
  Envelope e;
  e.kind = kind;
  auto sent = post_envelope(e, nullptr, 0, comm, tag);
  if (!sent) return std::unexpected(sent.error());
  keep_send(nullptr, sent->second, sent->first);
  return {};
}

void Link::send_bye(MPI_Comm comm, int tag) noexcept {
  Envelope bye;
  bye.kind = kBye;
  std::unique_ptr<char[]> buf(new (std::nothrow) char[kEnvSize]);
  MPI_Request req = MPI_REQUEST_NULL;
  if (!buf) return;
  std::memcpy(buf.get(), &bye, kEnvSize);
  if (MPI_Isend(buf.get(), kEnvSize, MPI_BYTE, peer_, tag, comm, &req) == MPI_SUCCESS) t_.bury(req, std::move(buf));
}

void Link::run_recv(std::unique_ptr<Transfer> x, Status st) noexcept {
  if (auto done = transfers_.run_recv(std::move(x), std::move(st)); !done) (void)fail(done.error());
}

bool Link::is_device(const void *p) const noexcept { return on_device(t_.device(), p); }

Result<Link::Dest> Link::recv_dest(RecvOp &op, uint64_t size) noexcept {
  if (!op.want_buffer) return Dest{static_cast<char *>(op.data), op.capacity, is_device(op.data)};
  auto buf = allocate(size ? size : 1, MemoryKind::host);
  if (!buf) return std::unexpected(buf.error());
  (*buf)->set_size(size);
  op.buffer = std::move(*buf);
  return Dest{static_cast<char *>(op.buffer->data()), size, false};
}

}  // namespace lf::mpi
