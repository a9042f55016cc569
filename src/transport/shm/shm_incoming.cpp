// Unexpected messages and views of the shm receiver (shm_incoming.hpp).
#include "transport/shm/shm_incoming.hpp"

#include <sys/uio.h>

#include <cstring>
#include <string>

#include "memory/allocator.hpp"

namespace lf::shm {

namespace {
void set_error(RecvOp &op, const std::string &msg) noexcept {
  try {
    op.error = msg;
  } catch (...) {
  }
}
}  // namespace

void finish_recv(RecvOp &op, uint64_t tag, uint64_t total, uint64_t cap) noexcept {
  op.matched_tag = tag;
  op.message_bytes = total;
  op.bytes = std::min(total, cap);
  if (total > cap) {
    set_error(op, "message of " + std::to_string(total) + " bytes truncated to the receive capacity of " +
                      std::to_string(cap));
    complete_status(op.status, LF_ERR_TRUNCATED);
    return;
  }
  complete_status(op.status, LF_OK);
}

bool prepare_destination(RecvOp &op, uint64_t total, char *&dst, uint64_t &cap) noexcept {
  if (op.want_buffer) {
    // Only large messages (total > 0) are placed piecewise.
    auto b = allocate(total, MemoryKind::host);
    if (!b) return fail_op(op, b.error()), false;
    op.buffer = std::move(*b);
    dst = static_cast<char *>(op.buffer->data());
    cap = total;
    return true;
  }
  dst = static_cast<char *>(op.data);
  cap = op.capacity;
  return true;
}

CopyIncoming::CopyIncoming(uint64_t tag, const void *data, size_t n, std::shared_ptr<Budget> b)
    : Incoming(tag, n), budget_(std::move(b)) {
  copy_ = budget_->blocks.get(n);
  if (n) std::memcpy(copy_, data, n);
  budget_->charge(cost());
}

CopyIncoming::~CopyIncoming() {
  budget_->blocks.put(copy_, size());
  budget_->uncharge(cost());
}

InlineIncoming::InlineIncoming(uint64_t tag, const void *data, size_t n, std::shared_ptr<Budget> b)
    : Incoming(tag, n), budget_(std::move(b)) {
  if (n) std::memcpy(data_, data, n);
  budget_->charge(kIncomingOverhead);
}

PipeIncoming::~PipeIncoming() {
  if (!st_->op) {
    st_->abandoned = true;
    st_->release_heap();
    st_->uncharge();
  }
}

void PipeIncoming::deliver(RecvOp &op) noexcept {
  PipeState &s = *st_;
  if (s.complete) {
    complete_copy(op, s.tag, s.heap, s.total);
    s.release_heap();
    s.uncharge();
    return;
  }
  char *dst;
  uint64_t cap;
  if (!prepare_destination(op, s.total, dst, cap)) {
    s.abandoned = true;
    s.release_heap();
    s.uncharge();
    return;
  }
  if (uint64_t n = std::min(s.received, cap)) std::memcpy(dst, s.heap, n);
  s.release_heap();
  s.uncharge();
  s.dst = dst;
  s.cap = cap;
  s.op = &op;  // the endpoint completes it when the last chunk arrives
}

void cma_deliver(CmaPeer &peer, RecvOp &op, uint64_t tag, uint64_t size, uint64_t addr, uint64_t cookie) noexcept {
  if (!peer.ctl->open()) {
    fail_op(op, make_error(LF_ERR_CLOSED, "shm: the connection closed before a CMA message was read"));
    return;
  }
  char *dst;
  uint64_t cap;
  if (!prepare_destination(op, size, dst, cap)) {
    peer.ctl->push(Kind::ack, cookie, op.status);
    return;
  }
  uint64_t n = std::min(size, cap), done = 0;
  while (done < n) {
    iovec local{dst + done, n - done};
    iovec remote{reinterpret_cast<void *>(addr + done), n - done};
    ssize_t got = process_vm_readv(peer.pid, &local, 1, &remote, 1, 0);
    if (got > 0) {
      done += static_cast<uint64_t>(got);
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    int err = got < 0 ? errno : EFAULT;
    lf_status_t code = err == ESRCH ? LF_ERR_PEER_GONE : LF_ERR_IO;
    fail_op(op, make_error(code, "shm: process_vm_readv of %llu bytes from pid %d: %s",
                           static_cast<unsigned long long>(n), static_cast<int>(peer.pid), strerror(err)));
    peer.ctl->push(Kind::ack, cookie, code);
    return;
  }
  finish_recv(op, tag, size, cap);
  peer.ctl->push(Kind::ack, cookie, LF_OK);
}

ParkedIncoming::ParkedIncoming(std::shared_ptr<Parked> p, std::shared_ptr<ParkLink> link)
    : Incoming(p->tag, p->total), p_(std::move(p)), link_(std::move(link)) {
  link_->budget->charge(kIncomingOverhead);
}

ParkedIncoming::~ParkedIncoming() {
  if (!taken_) p_->abandoned.store(true, std::memory_order_relaxed);
  link_->budget->uncharge(kIncomingOverhead);
}

void ParkedIncoming::deliver(RecvOp &op) noexcept {
  taken_ = true;
  if (link_->broken.load(std::memory_order_relaxed) || !link_->ctl->open()) {
    p_->abandoned.store(true, std::memory_order_relaxed);
    fail_op(op, make_error(LF_ERR_PEER_GONE,
                           "shm: the connection closed before a large message was fetched "
                           "from its sender"));
    return;
  }
  if (prepare_destination(op, p_->total, p_->dst, p_->cap))
    p_->op = &op;  // the receiver completes it when the last chunk arrives
  else
    p_->discard = true;  // op failed; the sender still finishes its send
  link_->ctl->push(Kind::resume, p_->pos, 0);
}

ShmView::ShmView(std::shared_ptr<SharedSegment> seg, uint64_t offset, uint64_t length, std::shared_ptr<ControlTx> tx,
                 uint64_t cookie)
    : segment_(std::move(seg)), tx_(std::move(tx)), cookie_(cookie) {
  kind_ = requested_ = MemoryKind::host_shared;
  data_ = static_cast<char *>(segment_->base()) + offset;
  size_ = length;
  const auto addr = reinterpret_cast<uintptr_t>(data_);
  alignment_ = addr ? std::min<size_t>(addr & (~addr + 1), kPage) : kPage;
  page_size_ = kPage;
  flags_ = buffer_flags::imported;
  // The view can be forwarded zero-copy to a third rank: it names the same
  // segment (the id is the creator's) and holds its fd.
  ref_ = segment_->ref(offset, length);
}

}  // namespace lf::shm
