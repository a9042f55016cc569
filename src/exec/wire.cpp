#include "exec/wire.hpp"

#include <cstring>

namespace lf::exec {

namespace {

constexpr uint32_t kPlanMagic = 0x5058464c;    // "LFXP"
constexpr uint32_t kResultMagic = 0x5258464c;  // "LFXR"
constexpr uint8_t kVersion = 1;

class Writer {
 public:
  template <class T>
  void put(T v) {
    const auto *p = reinterpret_cast<const uint8_t *>(&v);
    out_.insert(out_.end(), p, p + sizeof v);
  }
  void str8(const std::string &s) {
    put<uint8_t>(static_cast<uint8_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void str32(const std::string &s) {
    put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void shape(const Shape &s) {
    put<uint8_t>(static_cast<uint8_t>(s.dims.size()));
    for (int64_t d : s.dims) put<int64_t>(d);
  }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

// Reads fail soft: the first short read or bad field records why and every
// later read returns zeros, so a decoder checks once at the end of a record.
class Reader {
 public:
  Reader(const void *d, size_t n) : p_(static_cast<const uint8_t *>(d)), n_(d ? n : 0) {}
  template <class T>
  T get() {
    T v{};
    if (!need(sizeof v)) return v;
    std::memcpy(&v, p_ + off_, sizeof v);
    off_ += sizeof v;
    return v;
  }
  std::string str(size_t len_bytes, size_t max) {
    const size_t n = len_bytes == 1 ? get<uint8_t>() : get<uint32_t>();
    if (n > max) return fail("a string is longer than its limit"), std::string();
    if (!need(n)) return {};
    std::string s(reinterpret_cast<const char *>(p_ + off_), n);
    off_ += n;
    return s;
  }
  std::string name() {
    std::string s = str(1, kMaxName);
    if (!why_ && !valid_name(s)) fail("a name is empty or has characters outside [A-Za-z0-9_.-]");
    return s;
  }
  Shape shape() {
    Shape s;
    const unsigned nd = get<uint8_t>();
    if (nd > kMaxDims) return fail("a shape has more than 8 dimensions"), s;
    uint64_t elems = 1;
    for (unsigned i = 0; i < nd && !why_; ++i) {
      const int64_t d = get<int64_t>();
      if (d < 0) return fail("a dimension is negative"), s;
      if (d > 0 && elems > kMaxTensorBytes / 4 / static_cast<uint64_t>(d))
        return fail("a tensor is larger than 1 TiB"), s;
      elems = d ? elems * static_cast<uint64_t>(d) : 0;
      s.dims.push_back(d);
    }
    return s;
  }
  size_t count(size_t max, const char *why) {
    const size_t n = get<uint16_t>();
    if (n > max) fail(why);
    return why_ ? 0 : n;
  }
  void fail(const char *why) {
    if (!why_) why_ = why;
  }
  /// The record's verdict: a field's failure, or bytes left over.
  const char *end() {
    if (!why_ && off_ != n_) why_ = "bytes left after the last field";
    return why_;
  }
  const char *why() const { return why_; }

 private:
  bool need(size_t k) {
    if (why_) return false;
    if (n_ - off_ < k) {
      why_ = "the message ends inside a field";
      return false;
    }
    return true;
  }
  const uint8_t *p_;
  size_t n_, off_ = 0;
  const char *why_ = nullptr;
};

}  // namespace

uint64_t Shape::elements() const noexcept {
  uint64_t n = 1;
  for (int64_t d : dims) n *= static_cast<uint64_t>(d);
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

bool valid_name(const std::string &s) noexcept {
  if (s.empty() || s.size() > kMaxName) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
          c == '-'))
      return false;
  return true;
}

std::vector<uint8_t> encode(const PlanWire &p) {
  Writer w;
  w.put<uint32_t>(kPlanMagic);
  w.put<uint8_t>(kVersion);
  w.put<uint8_t>(0);
  w.put<uint64_t>(p.job);
  w.put<uint16_t>(static_cast<uint16_t>(p.inputs.size()));
  for (const PlanInput &in : p.inputs) {
    w.str8(in.name);
    w.shape(in.shape);
    w.put<uint8_t>(in.resident ? 1 : 0);
    if (in.resident) {
      w.put<uint64_t>(in.job);
      w.str8(in.output);
    } else {
      w.put<uint64_t>(in.tensor);
    }
  }
  w.put<uint16_t>(static_cast<uint16_t>(p.ops.size()));
  for (const PlanOp &op : p.ops) {
    w.str8(op.op);
    w.put<uint8_t>(static_cast<uint8_t>(op.inputs.size()));
    for (const auto &i : op.inputs) w.str8(i);
    w.str8(op.output);
    w.str32(op.attrs);
  }
  w.put<uint16_t>(static_cast<uint16_t>(p.outputs.size()));
  for (const auto &o : p.outputs) w.str8(o);
  return w.take();
}

const char *decode(const void *data, size_t len, PlanWire &p) {
  Reader r(data, len);
  if (r.get<uint32_t>() != kPlanMagic) r.fail("not a plan (bad magic)");
  if (r.get<uint8_t>() != kVersion) r.fail("plan version is not 1");
  if (r.get<uint8_t>() != 0) r.fail("a reserved byte of the plan is not 0");
  p.job = r.get<uint64_t>();
  const size_t ni = r.count(kMaxItems, "more than 1024 inputs");
  for (size_t i = 0; i < ni && !r.why(); ++i) {
    PlanInput in;
    in.name = r.name();
    in.shape = r.shape();
    const uint8_t src = r.get<uint8_t>();
    if (src > 1) r.fail("an input's source is neither upload nor resident");
    in.resident = src == 1;
    if (in.resident) {
      in.job = r.get<uint64_t>();
      in.output = r.name();
    } else {
      in.tensor = r.get<uint64_t>();
    }
    p.inputs.push_back(std::move(in));
  }
  const size_t no = r.count(kMaxItems, "more than 1024 ops");
  for (size_t i = 0; i < no && !r.why(); ++i) {
    PlanOp op;
    op.op = r.name();
    const unsigned nin = r.get<uint8_t>();
    for (unsigned k = 0; k < nin && !r.why(); ++k) op.inputs.push_back(r.name());
    op.output = r.name();
    op.attrs = r.str(4, kMaxAttrs);
    p.ops.push_back(std::move(op));
  }
  const size_t nout = r.count(kMaxOutputs, "more than 255 outputs");
  for (size_t i = 0; i < nout && !r.why(); ++i) p.outputs.push_back(r.name());
  return r.end();
}

std::vector<uint8_t> encode(const RunResult &res) {
  Writer w;
  w.put<uint32_t>(kResultMagic);
  w.put<uint16_t>(static_cast<uint16_t>(res.outputs.size()));
  for (const auto &o : res.outputs) {
    w.str8(o.name);
    w.shape(o.shape);
  }
  w.str32(res.info);
  return w.take();
}

const char *decode(const void *data, size_t len, RunResult &res) {
  Reader r(data, len);
  if (r.get<uint32_t>() != kResultMagic) r.fail("not a job result (bad magic)");
  const size_t n = r.count(kMaxOutputs, "more than 255 outputs");
  for (size_t i = 0; i < n && !r.why(); ++i) {
    RunResult::Output o;
    o.name = r.name();
    o.shape = r.shape();
    res.outputs.push_back(std::move(o));
  }
  res.info = r.str(4, size_t{1} << 20);
  return r.end();
}

std::vector<uint8_t> encode(const FetchHeader &f) {
  Writer w;
  w.put<uint64_t>(f.job);
  w.put<uint64_t>(f.tag);
  w.str8(f.name);
  return w.take();
}

const char *decode(const void *data, size_t len, FetchHeader &f) {
  Reader r(data, len);
  f.job = r.get<uint64_t>();
  f.tag = r.get<uint64_t>();
  f.name = r.name();
  return r.end();
}

std::vector<uint8_t> encode(const PutHeader &h) {
  Writer w;
  w.put<uint64_t>(h.job);
  w.put<uint64_t>(h.tensor);
  w.put<uint64_t>(h.total);
  w.put<uint64_t>(h.offset);
  return w.take();
}

const char *decode(const void *data, size_t len, PutHeader &h) {
  Reader r(data, len);
  h.job = r.get<uint64_t>();
  h.tensor = r.get<uint64_t>();
  h.total = r.get<uint64_t>();
  h.offset = r.get<uint64_t>();
  if (!r.why() && (h.total > kMaxTensorBytes || h.offset > h.total))
    r.fail("an upload's offset or size is out of range");
  return r.end();
}

std::vector<uint8_t> encode_job_id(uint64_t job) {
  Writer w;
  w.put<uint64_t>(job);
  return w.take();
}

const char *decode_job_id(const void *data, size_t len, uint64_t &job) {
  Reader r(data, len);
  job = r.get<uint64_t>();
  return r.end();
}

}  // namespace lf::exec
