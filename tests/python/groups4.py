"""Groups over four ranks (ctest Python.Groups4: run_ranks.py -n 4 -- pytest
groups4.py; not collected by the two-rank suite). Subsets, a non-member's
error, and overlapping groups driven at the same time from threads."""
import threading

import numpy as np
import pytest

import lavaflow as lf


@pytest.fixture(scope="module")
def world():
    c = lf.init()
    if c.size != 4:
        c.finalize()
        pytest.skip("needs four ranks (run_ranks.py -n 4)")
    yield c
    c.finalize()


def test_subset_allreduce_bcast_allgather(world):
    ranks = [3, 1, 2]  # world rank 0 is not a member; group rank order differs from the world's
    with world.group(ranks) as g:
        assert g.size == 3 and g.ranks == ranks
        if world.rank == 0:
            assert g.rank == -1 and not g.member
            with pytest.raises(lf.Error, match="not a member") as e:
                g.allreduce(np.zeros(4))
            assert e.value.status == -1
            with pytest.raises(lf.Error, match="not a member"):
                g.bcast(np.zeros(4))
            with pytest.raises(lf.Error, match="not a member"):
                g.iallreduce(np.zeros(4))
            return
        assert g.rank == ranks.index(world.rank)
        a = np.full(6, world.rank + 1, np.float64)
        assert g.allreduce(a) is a and (a == 2 + 3 + 4).all()
        out = np.empty(6)
        g.allreduce(np.full(6, world.rank, np.float64), op="min", out=out)
        assert (out == 1).all()
        b = np.full((2, 2), world.rank, np.int32)
        g.bcast(b, root=0)  # group rank 0 is world rank 3
        assert (b == 3).all()
        got = g.allgather(np.array([world.rank, -world.rank], np.int64))
        assert (got == [[3, -3], [1, -1], [2, -2]]).all()
        r = g.ibcast(np.full(3, world.rank, np.uint8), root=2)
        r.wait(timeout=60)
        c = np.full(3, world.rank + 1, np.int64)
        g.reduce(c, root=1)
        if g.rank == 1:
            assert (c == 9).all()
        g.ibarrier().wait(timeout=60)


def test_overlapping_groups_from_threads(world):
    # a = {0,1,2}, b = {1,2,3} share ranks 1 and 2; each thread drives one
    # group (or the world) while the others run: different groups may run
    # at the same time, and none takes another's messages.
    a = world.group([0, 1, 2])
    b = world.group([1, 2, 3])
    rounds = 30
    errors = []

    def drive(name, coll, members, scale):
        try:
            for i in range(rounds):
                x = np.full(8, scale * (world.rank + 1) + i, np.int64)
                coll.allreduce(x, timeout=60)
                want = sum(scale * (r + 1) + i for r in members)
                if not (x == want).all():
                    errors.append((name, i, x[0], want))
        except Exception as e:  # reported below, on the main thread
            errors.append((name, repr(e)))

    threads = [threading.Thread(target=drive, args=("world", world, range(4), 1000))]
    if a.member:
        threads.append(threading.Thread(target=drive, args=("a", a, [0, 1, 2], 1)))
    if b.member:
        threads.append(threading.Thread(target=drive, args=("b", b, [1, 2, 3], 100)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    b.free()
    a.free()
    assert a.freed and b.freed


def test_free_is_collective_and_closes(world):
    g = world.group([2, 0])
    if g.member:
        x = np.ones(2)
        g.allreduce(x)
        assert (x == 2).all()
    g.free()
    with pytest.raises(lf.Closed):
        g.barrier()
    world.barrier(timeout=60)
