// Test "hosts" on one machine, from scripts/netns-hosts.sh (network, UTS
// and IPC namespaces on a private bridge, 10.77.0.x), as a fixture base: a
// suite makes its hosts once, removes them at its end, and every test is
// skipped with the reason where they cannot be made (not root, no
// iproute2). The hosts' names carry the process id, so that test binaries
// running at once never share them. One such suite per test binary (the
// state is the binary's).
//
// Needs LF_SOURCE_DIR (the source tree, for the script).
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "multiprocess.hpp"

namespace lftest {

/// What a shell command prints on its standard output.
inline std::string shell_output(const std::string &cmd) {
  std::string out;
  FILE *f = popen(cmd.c_str(), "r");
  if (!f) return out;
  char buf[256];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  pclose(f);
  return out;
}

class NamespaceHosts : public ::testing::Test {
 protected:
  static const std::string &script() {
    static const std::string s = LF_SOURCE_DIR "/scripts/netns-hosts.sh";
    return s;
  }

  /// Make `count` hosts named after `tag` (call from SetUpTestSuite).
  static void make_hosts(const std::string &tag, int count = 2) {
    skip_reason().clear();
    if (!is_root()) {
      skip_reason() = "needs root for network/UTS/IPC namespaces";
      return;
    }
    if (!sh_ok("ip netns list") || !sh_ok("which nsenter unshare")) {
      skip_reason() = "iproute2 'ip netns' or util-linux nsenter/unshare unavailable";
      return;
    }
    prefix() = tag + std::to_string(getpid() % 100000);
    const std::string out = shell_output(script() + " up -p " + prefix() + " -n " + std::to_string(count) + " 2>&1");
    if (!sh_ok("ip netns list | grep -q '^" + prefix() + "-h" + std::to_string(count) + "'"))
      skip_reason() = "could not create namespace hosts (no CAP_NET_ADMIN?): " + out;
  }
  static void SetUpTestSuite() { make_hosts("lfh"); }
  static void TearDownTestSuite() {
    if (!prefix().empty()) sh_ok(script() + " down -p " + prefix());
  }
  static std::string &prefix() {
    static std::string p;
    return p;
  }
  static std::string &skip_reason() {
    static std::string r;
    return r;
  }

  void SetUp() override {
    if (!skip_reason().empty()) GTEST_SKIP() << skip_reason();
  }
  void TearDown() override { procs.kill_all(); }

  /// `argv` run on host `host` (1-based).
  static std::vector<std::string> on_host(int host, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {script(), "exec", "-p", prefix(), std::to_string(host)});
    return argv;
  }
  /// A shell command run on host `host`; true when it succeeded.
  static bool sh_on_host(int host, const std::string &cmd) {
    return sh_ok("ip netns exec " + prefix() + "-h" + std::to_string(host) + " " + cmd);
  }
  /// The eth0 receive counter of host `host`.
  static uint64_t rx_bytes(int host) {
    std::istringstream in(shell_output(script() + " counters -p " + prefix() + " " + std::to_string(host)));
    uint64_t rx = 0, tx = 0;
    in >> rx >> tx;
    return rx;
  }

  Procs procs;
};

}  // namespace lftest
