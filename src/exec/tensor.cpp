#include "exec/tensor.hpp"

#include "capi/capi_memory.hpp"

namespace lf::exec {

Result<std::shared_ptr<Tensor>> Tensor::create(lf_pool_t pool, uint64_t bytes, std::shared_ptr<Account> acct) noexcept {
  try {
    // A pool block is never empty; a tensor with a zero dimension still
    // has a (tiny) home so that every tensor can be sent by descriptor.
    const uint64_t charged = bytes ? bytes : 4;
    uint64_t used = acct->used.load();
    do {
      if (used + charged > acct->cap)
        return LF_FAIL(LF_ERR_BUSY,
                       "exec: a %llu-byte tensor would pass this client's memory cap (%llu of %llu bytes in use; "
                       "LF_EXEC_CLIENT_MEM_MAX)",
                       static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(used),
                       static_cast<unsigned long long>(acct->cap));
    } while (!acct->used.compare_exchange_weak(used, used + charged));
    std::shared_ptr<Tensor> t(new Tensor);
    t->bytes_ = bytes;
    t->charged_ = charged;
    t->acct_ = acct;  // from here the destructor refunds the charge
    acct->service_total->fetch_add(charged);
    if (lf_status_t st = lf_pool_acquire(pool, charged, &t->buf_); st != LF_OK)
      return LF_FAIL(st == LF_ERR_NO_MEMORY ? LF_ERR_BUSY : st, "exec: no memory for a %llu-byte tensor: %s",
                     static_cast<unsigned long long>(bytes), lf_last_error());
    if (auto *b = capi::peek(t->buf_)) b->set_size(bytes);
    return t;
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "exec: no memory for a tensor");
  }
}

Tensor::~Tensor() {
  if (buf_) lf_free(buf_);
  if (acct_) {
    acct_->used.fetch_sub(charged_);
    acct_->service_total->fetch_sub(charged_);
  }
}

namespace {

class Alias final : public Buffer {
 public:
  explicit Alias(std::shared_ptr<Tensor> t) : t_(std::move(t)) {
    const Buffer *b = capi::peek(t_->handle());
    describe_as(*b);
    ref_ = b->shared_ref();
  }
  const SharedRef *shared_ref() const noexcept override { return ref_; }

 private:
  std::shared_ptr<Tensor> t_;
  const SharedRef *ref_ = nullptr;  // the tensor's block's, alive as long as t_
};

}  // namespace

BufferPtr alias(std::shared_ptr<Tensor> t) { return std::make_unique<Alias>(std::move(t)); }

}  // namespace lf::exec
