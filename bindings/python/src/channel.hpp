// lavaflow.Channel and lavaflow.Request.
#pragma once

#include <memory>
#include <string>

#include "buffer.hpp"
#include "lfpy.hpp"

namespace lfpy {

// A posted send, receive or non-blocking collective. `chan` keeps it (and its
// memory) when the Request is dropped before it completes.
class Request {
 public:
  Request(std::shared_ptr<ChannelState> chan, lf_request_t req, Pinned &&mem, bool buffer_recv,
          Pinned &&mem2 = Pinned());
  ~Request();
  Request(const Request &) = delete;
  Request &operator=(const Request &) = delete;

  // A request that completed before it was posted (a stashed message).
  static std::unique_ptr<Request> completed(std::shared_ptr<ChannelState> chan, lf_status_t st, size_t bytes,
                                            const std::string &detail, py::object buffer);

  bool test();
  py::object wait(const py::object &timeout);
  void cancel();
  bool done() const noexcept { return finished_; }

 private:
  void finish(lf_status_t st, size_t bytes);
  py::object result();

  std::shared_ptr<ChannelState> chan_;
  lf_request_t req_;
  Pinned mem_, mem2_;
  bool buffer_recv_;
  bool busy_ = false;
  bool finished_ = false;
  lf_status_t status_ = LF_OK;
  size_t bytes_ = 0;
  std::string error_;  // lf_last_error() at completion, for a later wait()
  py::object buffer_;  // the received lavaflow.Buffer of a buffer receive
};

class Channel {
 public:
  Channel(lf_channel_t ch, py::object ctx, lf_context_t ctx_handle);
  ~Channel();
  Channel(const Channel &) = delete;
  Channel &operator=(const Channel &) = delete;

  void send(py::handle obj, uint64_t tag, const py::object &timeout);
  size_t recv(py::handle out, uint64_t tag, const py::object &timeout);
  std::unique_ptr<Request> isend(py::handle obj, uint64_t tag);
  std::unique_ptr<Request> irecv(py::handle out, uint64_t tag);
  void send_gather(py::handle header, py::handle payload, uint64_t tag, const py::object &timeout);
  std::unique_ptr<Request> isend_gather(py::handle header, py::handle payload, uint64_t tag);
  void send_buffer(Buffer &buf, uint64_t tag, const py::object &timeout);
  std::unique_ptr<Request> isend_buffer(Buffer &buf, uint64_t tag);
  py::object recv_buffer(uint64_t tag, const py::object &timeout);
  std::unique_ptr<Request> irecv_buffer(uint64_t tag);
  void close();
  int status() const;

  const std::string &transport() const noexcept { return transport_; }
  const std::string &reason() const noexcept { return reason_; }
  int peer() const noexcept { return peer_; }
  bool closed() const noexcept { return !state_->ch; }
  const std::shared_ptr<ChannelState> &state() const noexcept { return state_; }
  const py::object &context() const noexcept { return ctx_; }
  // The C handle, for the benchmark's C reference loops and the rpc layer.
  lf_channel_t raw(const char *call) const { return handle(call); }

 private:
  lf_channel_t handle(const char *call) const;
  // Waits a blocking send; on interrupt or timeout the channel keeps the
  // send (cancelled where the transport still can) and its memory, and this raises.
  void finish_send(lf_request_t req, Pinned &&mem, Pinned &&mem2, const py::object &timeout, const char *call);
  // Waits a blocking receive into `mem`. On interrupt or timeout the receive
  // is cancelled and its end awaited: a receive that had matched a message
  // meanwhile returns it (timeout) or stashes it for the next receive
  // (Ctrl-C), so no message is lost.
  size_t finish_recv(lf_request_t req, Pinned &&mem, const py::object &timeout, const char *call);
  // A stashed message delivered into `mem`.
  size_t deliver(const Stashed &s, const Pinned &mem, const char *call);

  std::shared_ptr<ChannelState> state_;
  py::object ctx_;  // keeps the Context alive while the channel is
  std::string transport_, reason_;
  int peer_ = -1;
  unsigned fork_gen_ = 0;
};

// Replaces Channel.send/recv on the Python type with METH_FASTCALL versions.
void install_fast_methods(py::handle type);

}  // namespace lfpy
