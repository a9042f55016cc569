#include "core/bootstrap_mpi.hpp"

#include "core/log.hpp"

namespace lf {

Error mpi_error(int rc, const char *call) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  return make_error(LF_ERR_IO, "%s failed: %.*s", call, len, text);
}

Result<std::unique_ptr<MpiBootstrap>> MpiBootstrap::create() {
  std::unique_ptr<MpiBootstrap> b(new MpiBootstrap());
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) return LF_FAIL(LF_ERR_UNAVAILABLE, "MPI was already finalized by the application");
  if (!initialized) {
    // lavaflow may drive MPI from a progress thread, so ask for MULTIPLE and
    // remember what we got; the MPI transport serialises calls below it.
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &b->thread_level_);
    if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Init_thread"));
    b->owns_mpi_ = true;
  } else {
    MPI_Query_thread(&b->thread_level_);
  }
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &b->comm_);
  if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Comm_dup"));
  // Errors must come back as codes, never abort the job.
  MPI_Comm_set_errhandler(b->comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(b->comm_, &b->rank_);
  MPI_Comm_size(b->comm_, &b->size_);
  if (auto st = b->share_job_key(); !st) return std::unexpected(st.error());
  LF_LOG(debug, "MPI bootstrap: rank %d of %d, thread level %d, %s MPI", b->rank_, b->size_, b->thread_level_,
         b->owns_mpi_ ? "owns" : "shares");
  return b;
}

Status MpiBootstrap::share_job_key() {
  // Rank 0 draws the key; the launcher's channel carries it to the others.
  // A failed draw still takes part in the broadcast (ok = 0), so that every
  // rank fails together instead of waiting for a broadcast that never comes.
  struct {
    uint8_t ok;
    JobKey::Bytes bytes;
  } msg{};
  Error drawn{LF_ERR_INTERNAL, ""};
  if (rank_ == 0) {
    if (auto key = JobKey::random("mpi (drawn by rank 0)")) {
      msg.ok = 1;
      msg.bytes = key->bytes();
    } else {
      drawn = key.error();
    }
  }
  int rc = MPI_Bcast(&msg, sizeof msg, MPI_BYTE, 0, comm_);
  if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Bcast(job key)"));
  if (!msg.ok) return rank_ == 0 ? std::unexpected(drawn) : LF_FAIL(LF_ERR_IO, "rank 0 could not draw a job key");
  set_job_key(JobKey::of(msg.bytes, rank_ == 0 ? "mpi (drawn by rank 0)" : "mpi (from rank 0)"));
  return {};
}

MpiBootstrap::~MpiBootstrap() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  if (owns_mpi_) MPI_Finalize();
}

Result<std::vector<std::string>> MpiBootstrap::allgather(const std::string &mine) {
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
  int rc = MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_);
  if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Allgather"));
  int total = 0;
  for (int r = 0; r < size_; ++r) displs[static_cast<size_t>(r)] = total, total += lens[static_cast<size_t>(r)];
  std::string all(static_cast<size_t>(total), '\0');
  rc = MPI_Allgatherv(mine.data(), len, MPI_BYTE, all.data(), lens.data(), displs.data(), MPI_BYTE, comm_);
  if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Allgatherv"));
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r)
    out.emplace_back(all.data() + displs[static_cast<size_t>(r)], static_cast<size_t>(lens[static_cast<size_t>(r)]));
  return out;
}

Status MpiBootstrap::barrier(const Idle &idle) {
  if (!idle) {
    int rc = MPI_Barrier(comm_);
    if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Barrier"));
    return {};
  }
  // MPI_Barrier polls too, but only MPI: this one lets `idle` poll the rest.
  MPI_Request req;
  int rc = MPI_Ibarrier(comm_, &req);
  if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Ibarrier"));
  for (;;) {
    int done = 0;
    rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Test"));
    if (done) return {};
    idle();
  }
}

}  // namespace lf
