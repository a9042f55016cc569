// The fallback engine: one thread reads ahead with pread, up to the ring,
// when io_uring is unavailable (an old kernel, seccomp, io_uring_disabled,
// a build without liburing) or LF_INGEST_ENGINE=pread asks for it.
#pragma once

#include <deque>
#include <thread>

#include "ingest/reader.hpp"

namespace lf::ingest {

class PreadReader final : public Reader {
 public:
  PreadReader(Plan plan, std::string why);
  ~PreadReader() override;
  Result<std::unique_ptr<Read>> next(Clock::time_point deadline) override;
  void cancel() noexcept override;
  void drain() noexcept override;
  int in_flight() const noexcept override;
  std::string describe() const override { return "pread thread (" + why_ + ")"; }

 private:
  void run() noexcept;
  void read_one(Read &r) noexcept;

  std::string why_;
  // Guarded by the ring's mutex; the thread waits on the ring's condition
  // variable, which every released place and every finished read signal.
  std::deque<std::unique_ptr<Read>> done_;
  bool stop_ = false;
  bool finished_ = false;
  int reading_ = 0;
  std::thread thread_;
};

}  // namespace lf::ingest
