"""Collectives on numpy arrays: every rank calls them in the same order (the
suite's tests run in the same order on every rank)."""
import numpy as np
import pytest

import lavaflow as lf

DTYPES = [np.int8, np.uint8, np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_allreduce_in_place_every_dtype(ctx, dtype):
    a = np.arange(1, 6, dtype=dtype) + ctx.rank
    want = sum(np.arange(1, 6, dtype=dtype) + r for r in range(ctx.size)).astype(dtype)
    assert ctx.allreduce(a) is a
    assert a.dtype == dtype and (a == want).all()


def test_allreduce_ops_and_out(ctx):
    a = np.array([ctx.rank + 1.0, -ctx.rank, 7.0])
    a.flags.writeable = False  # read-only input with out=
    ranks = np.arange(ctx.size)
    for op, want in [("sum", [(ranks + 1).sum(), -ranks.sum(), 7.0 * ctx.size]),
                     ("prod", [np.prod(ranks + 1.0), np.prod(-ranks * 1.0), 7.0 ** ctx.size]),
                     ("min", [1.0, -(ctx.size - 1), 7.0]), ("max", [ctx.size, 0.0, 7.0])]:
        out = np.zeros(3)
        assert ctx.allreduce(a, op=op, out=out) is out
        assert (out == np.array(want, dtype=float)).all(), (op, out, want)


def test_allreduce_bad_arguments(ctx):
    with pytest.raises(TypeError, match="reductions take"):
        ctx.allreduce(np.zeros(3, np.float16))
    with pytest.raises(TypeError, match="reductions take"):
        ctx.allreduce(np.zeros(3, bool))
    with pytest.raises(ValueError, match="unknown op"):
        ctx.allreduce(np.zeros(3), op="mean")
    with pytest.raises(ValueError, match="bytes"):
        ctx.allreduce(np.zeros(3), out=np.zeros(4))
    with pytest.raises(ValueError, match="dtype"):
        ctx.allreduce(np.zeros(2, np.int64), out=np.zeros(2, np.float64))
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(BufferError, match="read-only"):
        ctx.allreduce(ro)
    with pytest.raises(ValueError, match="not contiguous"):
        ctx.allreduce(np.zeros(6)[::2])


def test_bcast_reduce(ctx):
    a = np.full((2, 3), ctx.rank, np.int32)
    assert ctx.bcast(a, root=0) is a and (a == 0).all()
    b = np.full(4, ctx.rank + 1, np.int64)
    ctx.reduce(b, op="sum", root=0)
    if ctx.rank == 0:
        assert (b == sum(range(1, ctx.size + 1))).all()
    else:
        assert (b == ctx.rank + 1).all()  # only read off the root
    out = np.zeros(4, np.int64)
    ctx.reduce(np.full(4, 2, np.int64), op="prod", root=ctx.size - 1, out=out)
    if ctx.rank == ctx.size - 1:
        assert (out == 2 ** ctx.size).all()
    with pytest.raises(lf.Error):
        ctx.bcast(a, root=ctx.size)  # rejected before anything is sent, on every rank alike


def test_allgather_alltoall(ctx):
    a = np.array([ctx.rank, 10 * ctx.rank], np.float32)
    g = ctx.allgather(a)
    assert g.shape == (ctx.size, 2) and g.dtype == np.float32
    assert (g == np.array([[r, 10 * r] for r in range(ctx.size)], np.float32)).all()
    out = np.empty((ctx.size, 2), np.float32)
    assert ctx.allgather(a, out=out) is out and (out == g).all()
    with pytest.raises(ValueError, match="size"):
        ctx.allgather(a, out=np.empty(3, np.float32))
    # Block j of rank i goes to block i of rank j.
    s = np.array([100 * ctx.rank + j for j in range(ctx.size)], np.int64)
    t = ctx.alltoall(s)
    assert (t == np.array([100 * i + ctx.rank for i in range(ctx.size)])).all()
    ctx.alltoall(s, out=s)  # in place
    assert (s == t).all()


def test_nonblocking(ctx):
    b = ctx.ibarrier()
    assert b.wait(timeout=60) == 0
    a = np.full(8, ctx.rank + 1.0)
    r = ctx.iallreduce(a, op="max")
    del a  # held by the request until it completes
    r.wait(timeout=60)
    c = np.full(3, ctx.rank, np.uint8)
    r = ctx.ibcast(c, root=ctx.size - 1)
    r.wait(timeout=60)
    assert (c == ctx.size - 1).all()
    out = np.zeros(2)
    r = ctx.iallreduce(np.ones(2), out=out)
    assert r.wait(timeout=60) == 0 and (out == ctx.size).all()


def test_barrier_timeout_argument(ctx):
    ctx.barrier(timeout=60)
