// File ingest from Python (lavaflow_ingest.h): lavaflow.Ingest yields the
// file's chunks as lavaflow.Buffers, or sends them on a channel.
#include <condition_variable>
#include <mutex>
#include <thread>

#include "context.hpp"

namespace lfpy {
namespace {

struct IngestState : Closable {
  lf_ingest_t in = nullptr;
  void close_now() noexcept override {
    if (inherited()) in = nullptr;
    if (!in) return;
    lf_ingest_t i = in;
    in = nullptr;
    py::gil_scoped_release nogil;  // waits for a concurrent next()/send() to return
    lf_ingest_close(i);
  }
  ~IngestState() override { close_now(); }
};

class Ingest {
 public:
  Ingest(Context *ctx, py::object ctx_obj, py::object file, uint64_t offset, uint64_t length, const std::string &kind,
         size_t chunk_bytes, int queue_depth, bool direct, int ring_chunks)
      : ctx_obj_(std::move(ctx_obj)) {
    lf_ingest_params_t p = LF_INGEST_PARAMS_INIT;
    p.kind = kind_from_name(kind);
    p.chunk_bytes = chunk_bytes;
    p.queue_depth = queue_depth;
    p.direct = direct ? 1 : 0;
    p.ring_chunks = ring_chunks;
    lf_context_t h = ctx ? ctx->handle("Ingest") : nullptr;
    lf_status_t st;
    if (py::isinstance<py::int_>(file)) {
      int fd = file.cast<int>();
      py::gil_scoped_release nogil;
      st = lf_ingest_open_fd(h, fd, offset, length, &p, &st_->in);
    } else {
      std::string path = py::str(py::module_::import("os").attr("fspath")(file));
      py::gil_scoped_release nogil;
      st = lf_ingest_open(h, path.c_str(), offset, length, &p, &st_->in);
    }
    check(st, "Ingest");
    if (ctx) ctx->add_closable(st_);
  }

  lf_ingest_t live(const char *what) const {
    if (!st_->in) raise_status(LF_ERR_CLOSED, what, "the ingest is closed");
    return st_->in;
  }

  // (offset, Buffer), or None at the end of the range.
  py::object next(const py::object &timeout) {
    lf_ingest_t in = live("Ingest.next");
    lf_buffer_t chunk = nullptr;
    uint64_t off = 0;
    lf_status_t st = LF_OK;
    // LF_ERR_TIMEOUT means "nothing ready yet, call again", so slices lose nothing.
    auto step = [&](int64_t t) {
      st = lf_ingest_next(in, &chunk, &off, t);
      return st != LF_ERR_TIMEOUT;
    };
    WaitEnd end = step(0) ? WaitEnd::done : wait_slices(nullptr, timeout_ms(timeout), step);
    if (end == WaitEnd::interrupted) throw py::error_already_set();
    if (end == WaitEnd::timeout) raise_status(LF_ERR_TIMEOUT, "Ingest.next", "no chunk ready yet");
    check(st, "Ingest.next");
    if (!chunk) return py::none();
    return py::make_tuple(off, py::cast(Buffer(chunk)));
  }

  // lf_ingest_send on a thread of its own, so that this thread can wait in
  // slices: Ctrl-C cancels the ingest (lf_ingest_cancel, any thread) and
  // waits for the send to return before raising.
  void send(py::object channel, uint64_t tag) {
    lf_ingest_t in = live("Ingest.send");
    lf_channel_t ch = channel.cast<Channel &>().raw("Ingest.send");
    struct Shared {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      lf_status_t st = LF_OK;
      std::string error;
    };
    auto sh = std::make_shared<Shared>();
    std::thread worker([sh, in, ch, tag] {
      lf_status_t st = lf_ingest_send(in, ch, tag);
      std::lock_guard g(sh->mu);
      sh->st = st;
      if (st != LF_OK) sh->error = lf_last_error();
      sh->done = true;
      sh->cv.notify_all();
    });
    auto step = [&](int64_t t) {
      std::unique_lock g(sh->mu);
      sh->cv.wait_for(g, std::chrono::milliseconds(t), [&] { return sh->done; });
      return sh->done;
    };
    WaitEnd end = wait_slices(nullptr, -1, step);
    if (end == WaitEnd::interrupted) {
      lf_ingest_cancel(in);
      py::gil_scoped_release nogil;
      worker.join();
    } else {
      worker.join();
    }
    if (end == WaitEnd::interrupted) throw py::error_already_set();
    if (sh->st != LF_OK) raise_status(sh->st, "Ingest.send", sh->error);
  }

  std::string path_taken() const {
    const char *s = lf_ingest_path_taken(live("Ingest.path_taken"));
    return s ? s : "";
  }

  py::dict stats() const {
    lf_ingest_stats_t s = LF_INGEST_STATS_INIT;
    check(lf_ingest_stats(live("Ingest.stats"), &s), "Ingest.stats");
    py::dict d;
    d["chunks"] = s.chunks;
    d["bytes"] = s.bytes;
    d["reads"] = s.reads;
    d["fixed_reads"] = s.fixed_reads;
    d["rereads"] = s.rereads;
    d["ring_chunks"] = s.ring_chunks;
    d["ring_high_water"] = s.ring_high_water;
    d["chunk_memory"] = s.chunk_memory;
    d["ring_held"] = s.ring_held;
    return d;
  }

  void cancel() { check(lf_ingest_cancel(live("Ingest.cancel")), "Ingest.cancel"); }
  void close() { st_->close_now(); }
  bool closed() const noexcept { return !st_->in; }

 private:
  py::object ctx_obj_;
  std::shared_ptr<IngestState> st_ = std::make_shared<IngestState>();
};

std::unique_ptr<Ingest> make_ingest(py::object ctx, py::object file, uint64_t offset, uint64_t length,
                                    const std::string &kind, size_t chunk_bytes, int queue_depth, bool direct,
                                    int ring_chunks) {
  Context *c = ctx.is_none() ? nullptr : &ctx.cast<Context &>();
  return std::make_unique<Ingest>(c, ctx, std::move(file), offset, length, kind, chunk_bytes, queue_depth, direct,
                                  ring_chunks);
}

}  // namespace

void bind_ingest(py::module_ &m, py::class_<Context> &ctx) {
  using namespace pybind11::literals;
  py::class_<Ingest>(m, "Ingest",
                     "A file (or a byte range of it) read in chunks into lavaflow buffers with io_uring "
                     "(lavaflow_ingest.h). Iterate for (file_offset, lf.Buffer) pairs, or send() them on a channel.")
      .def("next", &Ingest::next, "timeout"_a = py::none(),
           "The next (file_offset, Buffer), None at the end; raises lf.Timeout when none is ready in `timeout` "
           "seconds. Buffer.free() (or dropping it) returns the chunk to the ring.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__",
           [](Ingest &i) {
             py::object r = i.next(py::none());
             if (r.is_none()) throw py::stop_iteration();
             return r;
           })
      .def("send", &Ingest::send, "channel"_a, "tag"_a = 0,
           "Send the whole range on `channel` chunk by chunk, then a zero-byte message with `tag` (the receiver "
           "takes recv_buffer(tag) until it gets an empty buffer). Ctrl-C cancels the ingest.")
      .def_property_readonly("path_taken", &Ingest::path_taken, "How it reads and why, e.g. \"io_uring, ...\".")
      .def("stats", &Ingest::stats, "Counters as a dict.")
      .def("cancel", &Ingest::cancel, "Stop reading (any thread); next() and send() then raise lf.Cancelled.")
      .def("close", &Ingest::close, "Cancel and free; chunks already taken stay valid.")
      .def_property_readonly("closed", &Ingest::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](Ingest &i, py::args) { i.close(); });
  const char *doc =
      "Open `file` (a path or an open file descriptor) for chunked reads of [offset, offset + length) (length 0: "
      "to the end). kind: the chunks' memory kind (\"host-shared\" chunks cross shm channels by descriptor).";
  m.def("ingest", &make_ingest, "context"_a, "file"_a, "offset"_a = 0, "length"_a = 0, "kind"_a = "host",
        "chunk_bytes"_a = 0, "queue_depth"_a = 0, "direct"_a = false, "ring_chunks"_a = 0, doc);
  ctx.def(
      "ingest",
      [](py::object self, py::object file, uint64_t offset, uint64_t length, const std::string &kind,
         size_t chunk_bytes, int queue_depth, bool direct, int ring_chunks) {
        return make_ingest(self, std::move(file), offset, length, kind, chunk_bytes, queue_depth, direct, ring_chunks);
      },
      "file"_a, "offset"_a = 0, "length"_a = 0, "kind"_a = "host", "chunk_bytes"_a = 0, "queue_depth"_a = 0,
      "direct"_a = false, "ring_chunks"_a = 0, doc);
}

}  // namespace lfpy
