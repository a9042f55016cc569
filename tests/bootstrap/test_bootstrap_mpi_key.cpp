// Under mpiexec -n 2 (issue 18): the MPI bootstrap gives every rank the same
// job key, drawn at random by rank 0 for this job alone, before anything
// else runs; two jobs get two different keys. Linked against lf_core, so it
// sees Bootstrap::job_key() directly.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <cstring>

#include "core/bootstrap.hpp"

namespace {

TEST(MpiBootstrap, SharesARandomJobKey) {
  ASSERT_EQ(setenv("LF_BOOTSTRAP_MODE", "mpi", 1), 0);
  auto b = lf::Bootstrap::from_environment();
  ASSERT_TRUE(b) << b.error().message;
  const lf::JobKey &key = (*b)->job_key();
  ASSERT_TRUE(key.set()) << "the MPI bootstrap left the job unauthenticated";
  EXPECT_EQ(std::string(key.source()).rfind("mpi", 0), 0u) << key.source();
  const lf::JobKey::Bytes zero{};
  EXPECT_NE(std::memcmp(key.bytes().data(), zero.data(), zero.size()), 0) << "an all-zero key";
  // Every rank holds rank 0's bytes.
  auto all = (*b)->allgather(std::string(reinterpret_cast<const char *>(key.bytes().data()), key.bytes().size()));
  ASSERT_TRUE(all) << all.error().message;
  for (const std::string &k : *all) EXPECT_EQ(k, (*all)[0]);
  // A second bootstrap in the same job (a new lf_init) draws a new key.
  auto again = lf::Bootstrap::from_environment();
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_NE(std::memcmp((*again)->job_key().bytes().data(), key.bytes().data(), key.bytes().size()), 0);
}

}  // namespace

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
