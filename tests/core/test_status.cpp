#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>

#include "core/status.hpp"

TEST(Status, CodesAreDistinctAndNamed) {
  std::set<std::string> names;
  std::set<int> codes;
  for (int c = LF_IN_PROGRESS; c >= LF_ERR_NOT_FOUND; --c) {
    std::string n = lf::status_string(c);
    EXPECT_NE(n, "LF_ERR_UNKNOWN") << c;
    names.insert(n);
    codes.insert(c);
  }
  EXPECT_EQ(names.size(), codes.size());
  EXPECT_STREQ(lf::status_string(LF_OK), "LF_OK");
  EXPECT_STREQ(lf::status_string(-999), "LF_ERR_UNKNOWN");
}

TEST(Status, LastErrorIsPerThread) {
  lf::set_last_error(lf::make_error(LF_ERR_TIMEOUT, "rank %d never arrived", 3));
  std::string other;
  std::thread t([&] {
    lf::set_last_error(LF_ERR_IO, "disk on fire");
    other = lf::last_error();
  });
  t.join();
  EXPECT_EQ(std::string(lf::last_error()), "LF_ERR_TIMEOUT: rank 3 never arrived");
  EXPECT_EQ(other, "LF_ERR_IO: disk on fire");
}

TEST(Status, SysErrorNamesTheCallAndErrno) {
  lf::Error e = lf::sys_error(ENOENT, "open %s", "/nope");
  EXPECT_EQ(e.code, LF_ERR_IO);
  EXPECT_NE(e.message.find("open /nope"), std::string::npos);
  EXPECT_NE(e.message.find("No such file"), std::string::npos);
  EXPECT_EQ(lf::sys_error(ENOMEM, "mmap").code, LF_ERR_NO_MEMORY);
}

namespace {
lf::Result<int> posix_check_fails() {
  LF_POSIX_CHECK(::close(-1));
  return 1;
}
}  // namespace

TEST(Status, PosixCheckMacroReturnsError) {
  auto r = posix_check_fails();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("close(-1)"), std::string::npos);
  EXPECT_NE(r.error().message.find("Bad file descriptor"), std::string::npos);
}
