"""dtype and shape round trips, DLPack in and out, zero copy, lifetimes."""
import gc
import weakref

import numpy as np
import pytest

import lavaflow as lf
from conftest import exchange

DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float16,
          np.float32, np.float64, np.complex64, np.complex128]
SHAPES = [(0,), (1,), (7,), (3, 4), (2, 3, 5), (2, 1, 2, 3)]


def sample(dtype, shape, seed):
    n = int(np.prod(shape))
    raw = np.random.default_rng(seed).integers(0, 120, size=n * np.dtype(dtype).itemsize, dtype=np.uint8)
    a = raw.view(dtype).reshape(shape).copy()
    if dtype is np.bool_:
        a = (raw[:n] % 2 == 1).reshape(shape)
    return a


class OnlyDLPack:
    """An object that offers DLPack and not the buffer protocol (as torch tensors do)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, stream=None):
        return self.a.__dlpack__()

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dtype_shape_round_trip(ch, dtype):
    for i, shape in enumerate(SHAPES):
        a = sample(dtype, shape, i)
        out = np.empty(shape, dtype)
        assert exchange(ch, a, out, tag=20) == a.nbytes
        assert out.dtype == a.dtype and out.shape == a.shape and np.array_equal(out, a)
        if dtype is np.bool_:
            continue  # numpy 1.24 exports no bool over DLPack
        # In and out through DLPack only.
        out2 = np.empty(shape, dtype)
        assert exchange(ch, OnlyDLPack(a), OnlyDLPack(out2), tag=21) == a.nbytes
        assert np.array_equal(out2, a)


@pytest.mark.parametrize("dtype", [np.int32, np.float64, np.complex64], ids=lambda d: np.dtype(d).name)
def test_buffer_round_trip_is_a_view(ctx, ch, dtype):
    shape = (4, 6)
    a = sample(dtype, shape, 7)
    b = ctx.alloc(a.nbytes)
    np.frombuffer(b, dtype).reshape(shape)[...] = a
    r = ch.irecv_buffer(tag=22)
    ch.send_buffer(b, tag=22, timeout=60)
    assert b.freed  # the memory belongs to the channel now
    got = r.wait(timeout=60)
    assert isinstance(got, lf.Buffer) and got.nbytes == a.nbytes
    v = np.from_dlpack(got)
    assert not v.flags.owndata and v.ctypes.data == got.address  # a view, no copy
    assert np.array_equal(v.view(dtype).reshape(shape), a)
    # The view outlives the Buffer object: DLPack holds the memory.
    del got
    gc.collect()
    assert np.array_equal(v.view(dtype).reshape(shape), a)


def test_recv_buffer_blocking_and_kinds(ctx, ch):
    b = ctx.alloc(64 << 20)
    r = ch.irecv_buffer(tag=23)
    ch.send_buffer(b, tag=23)
    got = r.wait(timeout=60)
    assert got.nbytes == 64 << 20
    if ch.transport == "shm":
        assert got.kind == "host-shared"  # a view of the sender's shared pool


def test_capsule_consumed_twice(ctx, ch):
    a = np.arange(16, dtype=np.int64)
    cap = a.__dlpack__()
    out = np.zeros(16, np.int64)
    assert exchange(ch, cap, out, tag=24) == 128 and (out == a).all()
    with pytest.raises(BufferError, match="already consumed"):
        ch.send(cap, tag=24)

    b = ctx.alloc(256, "host")
    memoryview(b)[:4] = b"\x01\x02\x03\x04"
    cap = b.__dlpack__()

    class Same:  # hands out one capsule to every consumer
        def __dlpack__(self, stream=None):
            return cap

        def __dlpack_device__(self):
            return (1, 0)

    v = np.from_dlpack(Same())  # consumes the capsule
    with pytest.raises(Exception):
        np.from_dlpack(Same())  # numpy refuses a used capsule
    with pytest.raises(BufferError, match="already consumed"):
        ch.send(cap, tag=24)
    b.free()  # the consumer still holds the memory
    del cap
    gc.collect()
    assert list(v[:4]) == [1, 2, 3, 4]
    # An export nobody consumes is released with its capsule.
    b2 = ctx.alloc(256, "host")
    for _ in range(1000):
        b2.__dlpack__()
    b2.free()


def test_isend_keeps_the_object_alive(ctx, ch):
    big = np.full(4 << 20, 7, dtype=np.uint8)  # beyond eager sizes: in flight until received
    big[-1] = 9
    ref = weakref.ref(big)
    r = ch.isend(big, tag=25)
    del big
    gc.collect()
    assert ref() is not None
    out = np.zeros(4 << 20, np.uint8)
    assert ch.recv(out, tag=25, timeout=60) == 4 << 20
    assert r.wait(timeout=60) == 4 << 20
    assert out[0] == 7 and out[-1] == 9
    gc.collect()
    assert ref() is None  # released once complete


def test_dropped_request_keeps_memory(ch):
    big = np.full(4 << 20, 3, dtype=np.uint8)
    ch.isend(big, tag=26)  # the Request is dropped at once
    del big
    gc.collect()
    out = np.zeros(4 << 20, np.uint8)
    assert ch.recv(out, tag=26, timeout=60) == 4 << 20
    assert (out == 3).all()


def test_optional_frameworks(ch):
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    out = torch.zeros(3, 4)
    assert exchange(ch, t, out, tag=27) == 48
    assert torch.equal(out, t)


def test_refused_send_buffer_keeps_the_buffer(ctx, ch, peer):
    b = ctx.alloc(4096)
    with pytest.raises(ValueError, match="ANY_TAG"):
        ch.send_buffer(b, tag=lf.ANY_TAG)
    assert not b.freed
    c2 = ctx.open(peer)
    c2.close()
    with pytest.raises(lf.Closed):
        c2.send_buffer(b, tag=28)
    assert not b.freed  # refused before lavaflow took it
    memoryview(b)[0] = 1
    b.free()
