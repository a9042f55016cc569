"""Context, channel, errors, bad inputs, read-only memory, truncation."""
import numpy as np
import pytest

import lavaflow as lf
from conftest import exchange


def test_context_and_channel(ctx, ch, peer):
    assert 0 <= ctx.rank < ctx.size
    assert ctx.scope(ctx.rank) == "self"
    assert ctx.scope(peer) in ("self", "local", "remote")
    assert ch.peer == peer
    assert ch.transport and ch.reason
    assert ch.status() == 0
    assert not ch.closed
    assert lf.version() == lf.__version__


def test_errors_carry_status(ctx):
    with pytest.raises(lf.Error) as e:
        ctx.scope(ctx.size + 5)
    assert e.value.status == -1 and e.value.status_name == "LF_ERR_INVALID_ARG"
    assert "LF_ERR_INVALID_ARG" in str(e.value)
    for cls in (lf.PeerGone, lf.Timeout, lf.Truncated, lf.Cancelled, lf.Unavailable, lf.Closed):
        assert issubclass(cls, lf.Error)
    assert issubclass(lf.Timeout, TimeoutError)
    with pytest.raises(lf.Error) as e:
        ctx.alloc(0, "host")
    assert e.value.status == -1
    with pytest.raises(ValueError, match="unknown memory kind"):
        ctx.alloc(64, "no-such-kind")


def test_readonly_sends(ch):
    a = np.arange(100, dtype=np.int32)
    a.flags.writeable = False
    out = np.zeros(100, np.int32)
    assert exchange(ch, a, out, tag=10) == 400
    assert (out == a).all()
    payload = b"read-only bytes"
    got = bytearray(64)
    assert exchange(ch, payload, got, tag=10) == len(payload)
    assert bytes(got[: len(payload)]) == payload
    assert exchange(ch, memoryview(payload), got, tag=10) == len(payload)


def test_readonly_receive_buffer_is_a_buffer_error(ch):
    ro = np.zeros(8, np.uint8)
    ro.flags.writeable = False
    for target in (ro, b"12345678", memoryview(b"12345678")):
        with pytest.raises(BufferError, match="read-only"):
            ch.recv(target, tag=11)
        with pytest.raises(BufferError, match="read-only"):
            ch.irecv(target, tag=11)
    # Nothing was posted: the channel is intact.
    out = bytearray(8)
    assert exchange(ch, b"still ok", out, tag=11) == 8 and bytes(out) == b"still ok"


def test_non_contiguous_is_a_clear_error(ch):
    a = np.arange(20, dtype=np.float64)
    for bad in (a[::2], a.reshape(4, 5).T, a.reshape(4, 5)[:, 1:]):
        with pytest.raises(ValueError, match="not contiguous.*ascontiguousarray"):
            ch.send(bad, tag=12)
        with pytest.raises(ValueError, match="not contiguous"):
            ch.irecv(bad, tag=12)

    class StridedDLPack:  # reaches the DLPack path: no buffer protocol
        def __dlpack__(self, stream=None):
            return a[::2].__dlpack__()

    with pytest.raises(ValueError, match="not contiguous.*DLPack"):
        ch.send(StridedDLPack(), tag=12)
    out = np.zeros(10)
    assert exchange(ch, np.ascontiguousarray(a[::2]), out, tag=12) == 80
    assert (out == a[::2]).all()


def test_wrong_types(ch):
    for bad in (object(), 3, "text", None):
        with pytest.raises(TypeError):
            ch.send(bad, tag=13)
    with pytest.raises(TypeError):
        ch.send(b"x", tag=-1)
    with pytest.raises(TypeError):
        ch.recv(bytearray(1), tag=1.5)
    with pytest.raises(TypeError):
        ch.send(b"x", 1, None, 4)
    with pytest.raises(TypeError):
        ch.send(b"x", tagg=1)

    class CudaOnly:
        __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False), "version": 3}

    with pytest.raises(BufferError, match="CUDA"):
        ch.send(CudaOnly(), tag=13)


def test_truncated(ch):
    r = ch.irecv(bytearray(4), tag=14)
    ch.send(b"0123456789", tag=14)
    with pytest.raises(lf.Truncated) as e:
        r.wait(timeout=60)
    assert e.value.status == -7 and e.value.bytes == 4


def test_timeout_leaves_channel_usable(ctx, ch):
    # Nothing is sent on tag 15 before both ranks pass the barrier below.
    out = bytearray(3)
    with pytest.raises(lf.Timeout):
        ch.recv(out, tag=15, timeout=0.05)
    r = ch.irecv(out, tag=15)
    with pytest.raises(lf.Timeout):
        r.wait(timeout=0.01)
    assert not r.done
    ctx.barrier()
    ch.send(b"abc", tag=15)
    assert r.wait(timeout=60) == 3 and bytes(out) == b"abc"
    assert r.test() and r.done


def test_any_tag(ch):
    out = bytearray(5)
    r = ch.irecv(out, lf.ANY_TAG)
    ch.send(b"hello", tag=77)
    assert r.wait(timeout=60) == 5 and bytes(out) == b"hello"


def test_cancel_receive(ctx, ch):
    r = ch.irecv(bytearray(4), tag=16)
    r.cancel()
    with pytest.raises(lf.Cancelled):
        r.wait(timeout=60)
    ctx.barrier()  # the peer sends on tag 16 only once this rank's receive is cancelled
    out = bytearray(4)
    assert exchange(ch, b"next", out, tag=16) == 4 and bytes(out) == b"next"


def test_closed_channel(ctx, peer):
    with ctx.open(peer) as c2:
        out = bytearray(2)
        assert exchange(c2, b"ok", out, tag=17) == 2
    assert c2.closed
    with pytest.raises(lf.Closed):
        c2.send(b"x", tag=17)
    c2.close()  # twice is fine


def test_buffer_basics(ctx):
    b = ctx.alloc(4096, "host")
    assert b.kind == "host" and b.nbytes == 4096 and len(b) == 4096 and b.fallback_reason == ""
    m = memoryview(b)
    m[:3] = b"abc"
    with pytest.raises(BufferError, match="view"):
        b.free()  # a view is alive
    m.release()
    b.free()
    assert b.freed
    with pytest.raises(BufferError):
        memoryview(b)
    with pytest.raises(BufferError):
        b.__dlpack__()
    b.free()  # twice is fine
    s = ctx.alloc(1 << 20)  # the shared pool by default
    assert s.kind == "host-shared" or s.fallback_reason
