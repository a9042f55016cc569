// The ucx transport's endpoint: one channel's ucp endpoint and the data path.
//
// Send: one active message per lavaflow message (ucp_am_send_nbx), the
// 32-byte header of ucx_wire.hpp carrying tag and sequence; a gather send is
// a two-entry iovec (UCP_DATATYPE_IOV), a buffer send passes the memory
// handle of its pool slab (registered once, transport_registration).
// Messages from LF_UCX_RNDV_THRESH up are sent by rendezvous, so a backlog
// of unexpected large messages stays at the sender.
//
// Receive: the worker's handler queues each arrival on its connection, in
// sequence order (eager data copied out of UCX, rendezvous data as UCX's
// descriptor). progress() hands them to the matcher: a matched receive gets
// eager data copied, or the rendezvous data fetched straight into it
// (ucp_am_recv_data_nbx; into a fresh buffer for a buffer receive, into a
// spill buffer when it would be truncated); an unmatched one becomes an
// Incoming that does the same when a receive is posted.
#pragma once

#include <memory>

#include "transport/transport.hpp"
#include "transport/ucx/ucx_worker.hpp"

namespace lf::ucx {

/// A connection to `peer`'s worker (published `address`, binary) for the
/// next channel between the two ranks. Both ranks call it, in the same order.
Result<std::shared_ptr<Conn>> open_conn(const std::shared_ptr<Worker> &w, int peer, const std::string &address);

/// The endpoint over `conn`; `t` registers the memory of buffer sends.
std::unique_ptr<Endpoint> make_endpoint(std::shared_ptr<Conn> conn, Transport &t);

}  // namespace lf::ucx
