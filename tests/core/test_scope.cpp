// Scope rules, on locations built by hand.
#include <gtest/gtest.h>

#include "core/scope.hpp"

using namespace lf;

namespace {
ProcessLocation host_a(int64_t pid) {
  ProcessLocation l;
  l.hostname = "node-a";
  l.boot_id = "11111111-2222-3333-4444-555555555555";
  l.ipc_ns = 4026531839;
  l.mnt_ns = 4026531832;
  l.net_ns = 4026531833;
  l.pid_ns = 4026531836;
  l.pid = pid;
  return l;
}
}  // namespace

TEST(Scope, SameProcessIsSelf) {
  auto d = decide_scope(host_a(10), host_a(10));
  EXPECT_EQ(d.scope, Scope::self);
}

TEST(Scope, SameKernelAndIpcNamespaceIsLocal) {
  auto d = decide_scope(host_a(10), host_a(11));
  EXPECT_EQ(d.scope, Scope::local);
  EXPECT_EQ(d.reason, "same host, same IPC namespace: local");
}

TEST(Scope, SameHostnameDifferentBootIdIsRemote) {
  auto b = host_a(11);
  b.boot_id = "99999999-2222-3333-4444-555555555555";
  auto d = decide_scope(host_a(10), b);
  EXPECT_EQ(d.scope, Scope::remote);
  EXPECT_NE(d.reason.find("different kernel boot ids"), std::string::npos) << d.reason;
}

TEST(Scope, SameHostnameDifferentIpcNamespaceIsRemote) {
  auto b = host_a(11);
  b.ipc_ns = 4026532000;
  auto d = decide_scope(host_a(10), b);
  EXPECT_EQ(d.scope, Scope::remote);
  EXPECT_NE(d.reason.find("different IPC namespaces"), std::string::npos) << d.reason;
}

TEST(Scope, SamePidInAnotherPidNamespaceIsNotSelf) {
  auto b = host_a(10);
  b.pid_ns = 4026532111;
  EXPECT_EQ(decide_scope(host_a(10), b).scope, Scope::local);
}

TEST(Scope, NoReachableSocketNamespaceIsRemote) {
  auto b = host_a(11);
  b.net_ns = 1;
  b.mnt_ns = 2;
  EXPECT_EQ(decide_scope(host_a(10), b).scope, Scope::remote);
  b.mnt_ns = host_a(0).mnt_ns;  // a filesystem socket still reaches it
  EXPECT_EQ(decide_scope(host_a(10), b).scope, Scope::local);
}

TEST(Scope, DifferentHostnamesOnOneKernelStayLocal) {
  // A UTS namespace changes the hostname, not whether memory can be shared.
  auto b = host_a(11);
  b.hostname = "container-1";
  auto d = decide_scope(host_a(10), b);
  EXPECT_EQ(d.scope, Scope::local);
  EXPECT_NE(d.reason.find("hostnames differ"), std::string::npos);
}

TEST(Scope, DifferentHostsAreRemote) {
  auto b = host_a(11);
  b.hostname = "node-b";
  b.boot_id = "aaaaaaaa-2222-3333-4444-555555555555";
  auto d = decide_scope(host_a(10), b);
  EXPECT_EQ(d.scope, Scope::remote);
  EXPECT_EQ(d.reason, "hostnames differ (node-a vs node-b), different kernel boot ids: remote");
}

TEST(Scope, UnknownBootIdIsRemote) {
  auto b = host_a(11);
  b.boot_id.clear();
  EXPECT_EQ(decide_scope(host_a(10), b).scope, Scope::remote);
}
