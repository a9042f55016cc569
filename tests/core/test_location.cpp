#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "core/location.hpp"
#include "core/topology.hpp"

using namespace lf;

TEST(Location, DetectsKernelAndNamespaces) {
  auto loc = ProcessLocation::detect();
  ASSERT_TRUE(loc) << loc.error().message;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  EXPECT_EQ(loc->hostname, host);
  EXPECT_EQ(loc->boot_id.size(), 36u) << loc->boot_id;
  EXPECT_NE(loc->ipc_ns, 0u);
  EXPECT_NE(loc->mnt_ns, 0u);
  EXPECT_NE(loc->net_ns, 0u);
  EXPECT_EQ(loc->pid, getpid());
  EXPECT_FALSE(loc->cpuset.empty());
}

TEST(Location, JsonRoundTrip) {
  auto loc = ProcessLocation::detect();
  ASSERT_TRUE(loc);
  loc->gpus = {"0000:3b:00.0"};
  auto back = ProcessLocation::from_json(loc->to_json());
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, *loc);
}

TEST(Location, BadJsonIsAnError) {
  EXPECT_FALSE(ProcessLocation::from_json("not json"));
  EXPECT_FALSE(ProcessLocation::from_json("[1,2]"));
  auto r = ProcessLocation::from_json(R"({"hostname": 42})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, LF_ERR_INVALID_ARG);
  EXPECT_FALSE(ProcessLocation::from_config("/nonexistent/location.json"));
}

TEST(Location, FileOverridesDetectedFields) {
  char path[] = "/tmp/lf-location-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << R"({"hostname": "gpu-node-7", "numa_node": 3})";
  setenv("LF_LOCATION_FILE", path, 1);
  auto loc = ProcessLocation::detect();
  unsetenv("LF_LOCATION_FILE");
  unlink(path);
  ASSERT_TRUE(loc) << loc.error().message;
  EXPECT_EQ(loc->hostname, "gpu-node-7");
  EXPECT_EQ(loc->numa_node, 3);
  EXPECT_EQ(loc->boot_id.size(), 36u) << "fields absent from the file stay detected";
}

TEST(Topology, FormatsCpuLists) {
  EXPECT_EQ(format_cpu_list({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(format_cpu_list({}), "");
  const Topology &t = Topology::get();
  EXPECT_GT(t.cpus, 0);
  EXPECT_FALSE(t.source.empty());
}
