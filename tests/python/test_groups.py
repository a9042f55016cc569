"""Groups (Context.group): collectives over a subset of the ranks, on the
suite's one or two ranks. Every rank creates the same groups in the same
order; tests/python/groups4.py covers subsets of four ranks."""
import numpy as np
import pytest

import lavaflow as lf


def test_group_in_reverse_rank_order(ctx):
    ranks = list(reversed(range(ctx.size)))
    with ctx.group(ranks) as g:
        assert g.size == ctx.size and g.ranks == ranks and g.member
        assert g.rank == ranks.index(ctx.rank)
        a = np.full(3, ctx.rank + 1, np.int64)
        assert g.allreduce(a) is a and (a == sum(r + 1 for r in ranks)).all()
        b = np.full(2, ctx.rank, np.float64)
        g.bcast(b, root=0)  # group rank 0 is the last world rank
        assert (b == ranks[0]).all()
        # Blocks in group rank order, not world rank order.
        got = g.allgather(np.array([ctx.rank], np.int32))
        assert got.shape == (ctx.size, 1) and (got[:, 0] == ranks).all()
        s = np.array([100 * g.rank + j for j in range(g.size)], np.int64)
        t = g.alltoall(s)
        assert (t == [100 * i + g.rank for i in range(g.size)]).all()
        c = np.full(2, 3, np.int32)
        g.reduce(c, op="prod", root=g.size - 1)
        if g.rank == g.size - 1:
            assert (c == 3 ** g.size).all()
        g.barrier(timeout=60)
    assert g.freed


def test_group_of_one_rank_and_a_non_member(ctx):
    # A group of world rank 0 only: with two ranks, rank 1 is not a member.
    with ctx.group([0]) as g:
        assert g.size == 1 and g.ranks == [0]
        if ctx.rank == 0:
            assert g.rank == 0 and g.member
            a = np.arange(4, dtype=np.float32)
            assert (g.allreduce(a, op="max") == np.arange(4)).all()
            assert (g.bcast(np.ones(2)) == 1).all()
            assert (g.allgather(np.array([7, 8], np.uint8)) == [[7, 8]]).all()
            g.iallreduce(a, op="sum").wait(timeout=60)
            assert (a == np.arange(4)).all()
        else:
            assert g.rank == -1 and not g.member
            for call in (lambda: g.allreduce(np.zeros(2)), lambda: g.bcast(np.zeros(2)),
                         lambda: g.allgather(np.zeros(2)), lambda: g.barrier(), lambda: g.ibarrier(),
                         lambda: g.reduce(np.zeros(2)), lambda: g.alltoall(np.zeros(2))):
                with pytest.raises(lf.Error, match="not a member") as e:
                    call()
                assert e.value.status == -1 and e.value.status_name == "LF_ERR_INVALID_ARG"
    # The world still works after a non-member's failed calls.
    x = np.ones(1)
    assert ctx.allreduce(x)[0] == ctx.size


def test_overlapping_groups_interleaved(ctx):
    # Overlapping groups share members: each has channels of its own, so
    # interleaving them (and the world) never mixes their messages.
    world_order = list(range(ctx.size))
    with ctx.group(world_order) as a, ctx.group(list(reversed(world_order))) as b, ctx.group([0]) as c:
        for i in range(20):
            x = np.full(5, ctx.rank + i, np.int64)
            y = np.full(5, 10 * (ctx.rank + i), np.int64)
            ra = a.iallreduce(x)
            rb = b.iallreduce(y)
            w = ctx.allreduce(np.full(5, i, np.int64))
            ra.wait(timeout=60)
            rb.wait(timeout=60)
            assert (x == sum(r + i for r in world_order)).all()
            assert (y == sum(10 * (r + i) for r in world_order)).all()
            assert (w == i * ctx.size).all()
            if ctx.rank == 0:
                z = np.full(2, i, np.int32)
                assert (c.allreduce(z) == i).all()


def test_group_bad_lists_and_freed(ctx):
    for ranks in ([], [0, 0], [ctx.size], [-1]):
        with pytest.raises(lf.Error) as e:
            ctx.group(ranks)
        assert e.value.status == -1, ranks
    g = ctx.group([0])
    g.free()
    g.free()  # twice is a no-op
    assert g.freed
    with pytest.raises(lf.Closed, match="freed"):
        g.allreduce(np.zeros(2))
    with pytest.raises(TypeError, match="reductions take"):
        with ctx.group(list(range(ctx.size))) as h:
            h.allreduce(np.zeros(3, np.float16))  # rejected before anything is sent, on every rank alike
