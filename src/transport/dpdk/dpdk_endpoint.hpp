// The dpdk transport's endpoint: one channel over a Flow.
//
// Send: the op joins the flow's queue and goes out as frames within the
// peer's window; it completes when the peer has acknowledged all of it.
// Receive: frames leave the flow in order; the first of a message matches
// a posted receive (then the rest is copied straight into it) or starts a
// host copy that, once complete, goes to a receive posted meanwhile or to
// the channel's unexpected queue. While unexpected copies hold more than
// LF_DPDK_UNEXPECTED_BYTES, new unmatched messages stay in the flow, whose
// window then shuts and stops the sender.
//
// Failure: a memif link that goes down (the peer exited or was killed), a
// peer that acknowledges nothing for LF_DPDK_PEER_TIMEOUT, a malformed
// message or the peer's close fail the channel, after the messages that had
// fully arrived were handed over.
#pragma once

#include <memory>

#include "core/net.hpp"
#include "transport/dpdk/dpdk_net.hpp"

namespace lf::dpdk {

/// An endpoint on `flow` (already attached to `net`); `unexpected_cap` bytes
/// of unexpected copies at most; a memif link not up by `deadline` fails it.
std::unique_ptr<Endpoint> make_endpoint(std::shared_ptr<Net> net, std::shared_ptr<Flow> flow, size_t unexpected_cap,
                                        Deadline deadline);

}  // namespace lf::dpdk
