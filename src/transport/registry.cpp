// The one table of transports. A new transport adds its factory here.
#include <algorithm>
#include <cstring>

#include "lavaflow_features.h"
#include "transport/transport.hpp"

namespace lf {

std::unique_ptr<Transport> make_self_transport();
std::unique_ptr<Transport> make_shm_transport();
std::unique_ptr<Transport> make_vulkan_ipc_transport();
std::unique_ptr<Transport> make_cuda_ipc_transport();
std::unique_ptr<Transport> make_tcp_transport();
#if LAVAFLOW_HAVE_MPI
std::unique_ptr<Transport> make_mpi_transport();
#endif

std::vector<std::unique_ptr<Transport>> make_transports() {
  std::vector<std::unique_ptr<Transport>> t;
  t.push_back(make_self_transport());
  t.push_back(make_shm_transport());
  // GPU IPC: variants of shm (shm_transport.cpp); they report why they
  // cannot run where the build or the machine lacks Vulkan / CUDA.
  t.push_back(make_vulkan_ipc_transport());
  t.push_back(make_cuda_ipc_transport());
  t.push_back(make_tcp_transport());
#if LAVAFLOW_HAVE_MPI
  t.push_back(make_mpi_transport());
#endif
  std::stable_sort(t.begin(), t.end(),
                   [](const auto &a, const auto &b) { return a->caps().priority > b->caps().priority; });
  return t;
}

}  // namespace lf
