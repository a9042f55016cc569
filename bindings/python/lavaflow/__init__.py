"""lavaflow: zero-copy channels between processes, from Python.

    import lavaflow as lf
    with lf.init() as ctx:
        ch = ctx.open(ctx.rank ^ 1)
        ch.send(numpy_array, tag=1)         # any contiguous buffer-protocol or DLPack object
        n = ch.recv(out_array, tag=1)       # returns the bytes received
        buf = ctx.alloc(1 << 20)            # shared-pool memory: sent by descriptor over shm
        ch.send_buffer(buf)
        view = numpy.from_dlpack(ch.recv_buffer())   # a view, no copy

Every call that can block releases the GIL and can be interrupted with Ctrl-C
(KeyboardInterrupt; the channel stays usable). Errors are lavaflow.Error and
its subclasses PeerGone, Timeout, Truncated, Cancelled, Unavailable, Closed.
"""

import atexit as _atexit
import weakref as _weakref

from ._lavaflow import (  # noqa: F401
    ANY_TAG,
    MEMORY_KINDS,
    Buffer,
    Cancelled,
    Channel,
    Closed,
    Context,
    Error,
    ExecClient,
    ExecServer,
    Group,
    Ingest,
    Job,
    Listener,
    PeerGone,
    Plan,
    Request,
    RpcCall,
    RpcClient,
    RpcRequest,
    RpcServer,
    Timeout,
    Truncated,
    Unavailable,
    ingest,
    listen,
    status_string,
    version,
)
from ._lavaflow import init as _init

__all__ = [
    "ANY_TAG", "MEMORY_KINDS", "Buffer", "Cancelled", "Channel", "Closed", "Context", "Error", "ExecClient",
    "ExecServer", "Group", "Ingest", "Job", "Listener", "PeerGone", "Plan", "Request", "RpcCall", "RpcClient",
    "RpcRequest", "RpcServer", "Timeout", "Truncated", "Unavailable", "ingest", "init", "listen", "status_string",
    "version",
]
__version__ = version()

_live = _weakref.WeakSet()


def init():
    """Join the job: under mpirun, with LF_RANK/LF_SIZE/LF_BOOTSTRAP, or as a world of one.

    Returns an lf.Context (also a context manager that finalizes on exit).
    Contexts still alive at interpreter exit are finalized then.
    """
    ctx = _init()
    _live.add(ctx)
    return ctx


@_atexit.register
def _finalize_all():
    for ctx in list(_live):
        try:
            ctx.finalize()
        except Exception:  # exit goes on regardless
            pass
