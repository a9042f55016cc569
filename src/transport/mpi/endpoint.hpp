// One mpi channel's endpoint, as the transport makes it in connect().
#pragma once

#include <mpi.h>

#include <memory>

#include "transport/transport.hpp"

namespace lf::mpi {

class MpiTransport;

/// The endpoint of the channel to `peer` whose ring tags start at `base_tag`
/// (channel bits), with the peer's eager limit and the channel's direct
/// stream (MPI_COMM_NULL: none). Its ring receives are posted on return.
Result<std::unique_ptr<Endpoint>> make_endpoint(MpiTransport &t, int peer, int base_tag, uint64_t peer_eager,
                                                MPI_Comm stream);

}  // namespace lf::mpi
