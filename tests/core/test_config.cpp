#include <gtest/gtest.h>
#include <stdlib.h>

#include <set>

#include "core/config.hpp"

using namespace lf;

TEST(Config, EveryRowIsWellFormedAndUnique) {
  std::set<std::string> seen;
  for (const auto &t : config::all()) {
    std::string n = t.name;
    EXPECT_EQ(n.rfind("LF_", 0), 0u) << n;
    EXPECT_TRUE(seen.insert(n).second) << "duplicate " << n;
    EXPECT_GT(std::string(t.help).size(), 10u) << n;
  }
  EXPECT_NE(config::find("LF_BOOTSTRAP_TIMEOUT"), nullptr);
  EXPECT_EQ(config::find("LF_NOT_A_TUNABLE"), nullptr);
}

TEST(Config, EnvironmentOverridesDefault) {
  unsetenv("LF_SPIN_COUNT");
  EXPECT_EQ(config::get_int("LF_SPIN_COUNT"), 20000);
  setenv("LF_SPIN_COUNT", "4k", 1);
  EXPECT_EQ(config::get_int("LF_SPIN_COUNT"), 4096);
  setenv("LF_SPIN_COUNT", "garbage", 1);
  EXPECT_EQ(config::get_int("LF_SPIN_COUNT"), 20000) << "unparsable values fall back to the default";
  unsetenv("LF_SPIN_COUNT");
}

TEST(Config, BooleansAndSeconds) {
  setenv("LF_STRICT", "yes", 1);
  EXPECT_TRUE(config::get_bool("LF_STRICT"));
  setenv("LF_STRICT", "off", 1);
  EXPECT_FALSE(config::get_bool("LF_STRICT"));
  unsetenv("LF_STRICT");
  setenv("LF_BOOTSTRAP_TIMEOUT", "2.5", 1);
  EXPECT_DOUBLE_EQ(config::get_seconds("LF_BOOTSTRAP_TIMEOUT"), 2.5);
  unsetenv("LF_BOOTSTRAP_TIMEOUT");
  EXPECT_DOUBLE_EQ(config::get_seconds("LF_BOOTSTRAP_TIMEOUT"), 60.0);
}
