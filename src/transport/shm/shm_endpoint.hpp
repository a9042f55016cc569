// The shared-memory endpoint's interface to shm_transport.cpp: the
// tunables, the connection the handshake produced, and the factory of the
// endpoint that moves the messages over it (shm_endpoint.cpp and its parts:
// shm_sender, shm_receiver, shm_control, shm_incoming, shm_segments,
// device_lane).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/net.hpp"
#include "memory/buffer.hpp"
#include "transport/transport.hpp"

namespace lf::shm {

/// LF_SHM_* tunables, read once per connection.
struct Tunables {
  uint32_t ring_slots = 1024;
  uint64_t fifo_bytes = 2u << 20;
  uint64_t eager_limit = 16u << 10;
  uint64_t chunk = 128u << 10;
  uint64_t cma_threshold = 0;  ///< 0: never use CMA
  uint64_t unexpected_max = 64u << 20;
  int spin = 1000;
  int hup_every = 1024;
  int hold_us = 50;
  static Tunables from_config();
};

/// A connection after the handshake.
struct Connection {
  Fd sock;                                 ///< Unix socket: fd passing and liveness
  std::shared_ptr<SharedSegment> segment;  ///< the rings
  int role = 0;                            ///< 0: connecting rank (writes direction 0), 1: accepting rank
  int peer_rank = -1;
  pid_t peer_pid = 0;          ///< from SO_PEERCRED, for process_vm_readv
  bool peer_reads_me = false;  ///< the peer proved it can process_vm_readv this process
};

/// What the GPU IPC variants (vulkan-ipc, cuda-ipc) add to a connection:
/// buffers of `api`'s memory that the peer can import travel as device
/// descriptors (transport/gpu/gpu_ipc.hpp). api 0: plain shm.
struct DeviceIpc {
  int api = 0;                ///< 0 or a gpu_ipc::Api
  std::string peer_identity;  ///< the devices the peer published (gpu_ipc::local_identity)
};

/// Build the endpoint over an established connection.
Result<std::unique_ptr<Endpoint>> make_endpoint(Connection conn, const Tunables &t, const DeviceIpc &device = {});

}  // namespace lf::shm
