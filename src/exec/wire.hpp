// The execution service's messages (docs/exec.md): what travels in the
// header of each rpc call between lf_exec clients and the service.
//
// Every decoder checks each length against what arrived before reading it,
// and limits every count, so a malformed header gives a reason (the caller
// answers LF_ERR_PROTOCOL), never a read past the end
// (tests/fuzz/fuzz_exec_wire.cpp). This header stays free of core/status.hpp
// so the fuzz target builds with any C++20 compiler.
// Integers are in host byte order: both ends are lavaflow on the same ABI,
// and the magic catches a mismatch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lf::exec {

inline constexpr int kMaxDims = 8;
inline constexpr size_t kMaxName = 63;
inline constexpr size_t kMaxAttrs = 1024;
inline constexpr size_t kMaxItems = 1024;   ///< inputs or ops of one plan
inline constexpr size_t kMaxOutputs = 255;  ///< outputs of one plan (an 8-bit index in the output tags)
inline constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 40;

/// Method names on the rpc layer.
inline constexpr char kPut[] = "x.put";
inline constexpr char kRun[] = "x.run";
inline constexpr char kFetch[] = "x.fetch";
inline constexpr char kRelease[] = "x.release";
inline constexpr char kHealth[] = "x.health";

/// Tag of output `index` of job `job` when the service hands it over by
/// descriptor (same-host connections) or pushes it for a fetch.
inline uint64_t output_tag(uint64_t job, unsigned index) noexcept {
  return (uint64_t{0x4c465850} << 32) | ((job & 0xffffff) << 8) | (index & 0xff);
}

struct Shape {
  std::vector<int64_t> dims;
  uint64_t elements() const noexcept;
  uint64_t bytes() const noexcept { return elements() * 4; }
  std::string str() const;  ///< "[2,3]"
};

/// Whether `s` is a valid op, tensor or output name (1..63 of [A-Za-z0-9_.-]).
bool valid_name(const std::string &s) noexcept;

struct PlanInput {
  std::string name;
  Shape shape;
  bool resident = false;  ///< from an earlier job's output instead of an upload
  uint64_t tensor = 0;    ///< uploaded tensor id (x.put)
  uint64_t job = 0;       ///< resident: the job ...
  std::string output;     ///< ... and its output name
};

struct PlanOp {
  std::string op;
  std::vector<std::string> inputs;
  std::string output;
  std::string attrs;
};

struct PlanWire {
  uint64_t job = 0;
  std::vector<PlanInput> inputs;
  std::vector<PlanOp> ops;
  std::vector<std::string> outputs;
};

/// x.put header: bytes [offset, offset + payload) of upload `tensor`, `total`
/// bytes in all, an input of job `job` (the service drops it with the job).
struct PutHeader {
  uint64_t job = 0;
  uint64_t tensor = 0;
  uint64_t total = 0;
  uint64_t offset = 0;
};

/// x.run response header: each output's name, shape and size, then the job's JSON info.
struct RunResult {
  struct Output {
    std::string name;
    Shape shape;
  };
  std::vector<Output> outputs;
  std::string info;
};

/// x.fetch header: push output `name` of `job` as one message on `tag`.
struct FetchHeader {
  uint64_t job = 0;
  uint64_t tag = 0;
  std::string name;
};

// Encoders throw std::bad_alloc only. Decoders are pure functions over the
// received bytes: nullptr on success, else a static text saying what is wrong.
std::vector<uint8_t> encode(const PlanWire &p);
const char *decode(const void *data, size_t len, PlanWire &out);
std::vector<uint8_t> encode(const RunResult &r);
const char *decode(const void *data, size_t len, RunResult &out);
std::vector<uint8_t> encode(const FetchHeader &f);
const char *decode(const void *data, size_t len, FetchHeader &out);
std::vector<uint8_t> encode(const PutHeader &h);
const char *decode(const void *data, size_t len, PutHeader &out);
std::vector<uint8_t> encode_job_id(uint64_t job);
const char *decode_job_id(const void *data, size_t len, uint64_t &job);  ///< x.release

}  // namespace lf::exec
