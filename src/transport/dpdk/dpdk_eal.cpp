#include "transport/dpdk/dpdk_eal.hpp"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <sstream>
#include <vector>

#include "core/config.hpp"
#include "core/log.hpp"

namespace lf::dpdk {

namespace {

std::mutex g_mu;
bool g_tried = false;
Error g_error{LF_OK, {}};
std::string g_cmdline;

bool has_option(const std::vector<std::string> &args, std::initializer_list<const char *> names) {
  for (const std::string &a : args)
    for (const char *n : names)
      if (a == n || (a.rfind(n, 0) == 0 && a.size() > std::strlen(n) && a[std::strlen(n)] == '=')) return true;
  return false;
}

std::vector<std::string> build_args() {
  std::string text = config::get_string("LF_DPDK_EAL");
  if (text.find_first_not_of(" \t") == std::string::npos)
    text =
        "--no-huge -m 128 --no-shconf --no-pci --no-telemetry --log-level=*:error --log-level=pmd.net.memif:critical";
  std::vector<std::string> args{"lavaflow"};
  std::istringstream in(text);
  for (std::string w; in >> w;) args.push_back(w);
  if (!has_option(args, {"--file-prefix"})) {
    std::random_device rd;
    char p[64];
    std::snprintf(p, sizeof p, "--file-prefix=lf%d-%08x", static_cast<int>(getpid()), rd());
    args.push_back(p);
  }
  if (!has_option(args, {"-l", "-c", "--lcores"})) {
    cpu_set_t set;
    int cpu = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
      for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &set)) {
          cpu = i;
          break;
        }
    args.push_back("-l");
    args.push_back(std::to_string(cpu));
  }
  return args;
}

}  // namespace

Status ensure_eal() {
  std::lock_guard g(g_mu);
  if (g_tried) {
    if (g_error.code != LF_OK) return std::unexpected(g_error);
    return {};
  }
  g_tried = true;
  std::vector<std::string> args = build_args();
  for (const std::string &a : args) g_cmdline += (g_cmdline.empty() ? "" : " ") + a;
  std::vector<char *> argv;
  for (std::string &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  cpu_set_t saved;
  const bool have_saved = sched_getaffinity(0, sizeof saved, &saved) == 0;
  // rte_eal_init permutes argv (getopt); the strings stay owned by args.
  const int rc = rte_eal_init(static_cast<int>(argv.size() - 1), argv.data());
  if (have_saved) sched_setaffinity(0, sizeof saved, &saved);
  if (rc < 0) {
    const int err = rte_errno;
    g_error = make_error(LF_ERR_UNAVAILABLE, "dpdk: the EAL did not start (rte_eal_init with \"%s\": %s%s)",
                         g_cmdline.c_str(), rte_strerror(err),
                         err == EINVAL ? "; check LF_DPDK_EAL, DPDK printed the options it accepts" : "");
    LF_LOG(info, "%s", g_error.message.c_str());
    return std::unexpected(g_error);
  }
  // With --no-shconf nothing lives in the runtime directory; an empty one per
  // process would pile up in /var/run/dpdk.
  if (const char *dir = rte_eal_get_runtime_dir(); dir && *dir) ::rmdir(dir);
  LF_LOG(debug, "dpdk: EAL started: %s", g_cmdline.c_str());
  return {};
}

std::string eal_command_line() {
  std::lock_guard g(g_mu);
  return g_cmdline;
}

}  // namespace lf::dpdk
