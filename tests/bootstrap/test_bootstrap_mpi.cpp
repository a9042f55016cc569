// The bootstrap under Open MPI: ctest runs this binary with
// `mpiexec -n 2`, once per test (--gtest_filter), because MPI can be
// initialised only once per process:
//   LavaflowOwnsMpi       lf_init initialises MPI and lf_finalize finalises it;
//   ApplicationOwnsMpi    the application initialised MPI first: lavaflow
//                         cooperates and leaves MPI running after lf_finalize,
//                         and its traffic does not disturb the application's.
// Every rank runs the same assertions; a failure on either rank fails the
// mpiexec command.
#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>
#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int env_int(const char *name) {
  const char *v = std::getenv(name);
  return v ? std::atoi(v) : -1;
}

void check_world(lf_context_t ctx) {
  int rank = env_int("OMPI_COMM_WORLD_RANK"), size = env_int("OMPI_COMM_WORLD_SIZE");
  ASSERT_GE(rank, 0) << "not started by Open MPI's mpiexec";
  EXPECT_EQ(lf_rank(ctx), rank);
  EXPECT_EQ(lf_size(ctx), size);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(lf_barrier(ctx), LF_OK) << lf_last_error();
  for (int p = 0; p < size; ++p) {
    lf_scope_t s = lf_scope(ctx, p);
    // One machine, one IPC namespace: every other rank is local.
    EXPECT_EQ(s, p == rank ? LF_SCOPE_SELF : LF_SCOPE_LOCAL) << "peer " << p;
    char json[4096];
    size_t needed = 0;
    ASSERT_EQ(lf_location_json(ctx, p, json, sizeof json, &needed), LF_OK) << lf_last_error();
    EXPECT_NE(std::string(json).find("\"pid\""), std::string::npos);
  }
  EXPECT_EQ(lf_scope(ctx, size), LF_SCOPE_INVALID);
}

TEST(MpiBootstrap, LavaflowOwnsMpi) {
  int initialized = 1;
  MPI_Initialized(&initialized);
  ASSERT_FALSE(initialized);
  lf_context_t ctx = nullptr;
  ASSERT_EQ(lf_init(&ctx), LF_OK) << lf_last_error();
  MPI_Initialized(&initialized);
  EXPECT_TRUE(initialized) << "lf_init under mpiexec should have initialised MPI";
  check_world(ctx);
  ASSERT_EQ(lf_finalize(ctx), LF_OK) << lf_last_error();
  int finalized = 0;
  MPI_Finalized(&finalized);
  EXPECT_TRUE(finalized) << "lavaflow initialised MPI, so lf_finalize must finalise it";
}

TEST(MpiBootstrap, ApplicationOwnsMpi) {
  int provided = 0;
  ASSERT_EQ(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), MPI_SUCCESS);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // An application message in flight on MPI_COMM_WORLD while lavaflow
  // bootstraps and runs barriers: lavaflow's own communicator must not
  // intercept it.
  int token = 1000 + rank, got = -1;
  MPI_Request reqs[2];
  MPI_Irecv(&got, 1, MPI_INT, (rank + size - 1) % size, 0, MPI_COMM_WORLD, &reqs[0]);
  MPI_Isend(&token, 1, MPI_INT, (rank + 1) % size, 0, MPI_COMM_WORLD, &reqs[1]);
  lf_context_t ctx = nullptr;
  ASSERT_EQ(lf_init(&ctx), LF_OK) << lf_last_error();
  check_world(ctx);
  ASSERT_EQ(lf_finalize(ctx), LF_OK) << lf_last_error();
  MPI_Waitall(2, reqs, MPI_STATUSES_IGNORE);
  EXPECT_EQ(got, 1000 + (rank + size - 1) % size);
  int finalized = 1;
  MPI_Finalized(&finalized);
  EXPECT_FALSE(finalized) << "the application owns MPI; lf_finalize must leave it running";
  EXPECT_EQ(MPI_Barrier(MPI_COMM_WORLD), MPI_SUCCESS);
  MPI_Finalize();
}

}  // namespace

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
