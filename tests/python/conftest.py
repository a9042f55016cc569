"""Fixtures for the lavaflow Python tests.

Every test runs on every rank, in the same order, and pairs up with the same
test on the peer (rank ^ 1 with two ranks, itself in a world of one, so the
suite also runs as one plain process). Tests are written symmetrically: each
rank posts its receive, sends, then waits. Each test uses its own tags, so a
failure in one cannot feed stray messages to the next, and each is bounded:
a test still running after 120 s dumps every thread's stack and exits.
"""
import faulthandler
import sys

import pytest

import lavaflow as lf


@pytest.fixture(scope="session")
def ctx():
    c = lf.init()
    assert c.size in (1, 2), "the suite runs on one or two ranks"
    yield c
    c.finalize()


@pytest.fixture(scope="session")
def peer(ctx):
    return ctx.rank ^ 1 if ctx.size == 2 else ctx.rank


@pytest.fixture(scope="session")
def ch(ctx, peer):
    c = ctx.open(peer)
    yield c
    c.close()


@pytest.fixture(autouse=True)
def bounded(request):
    """No test may hang: after 120 s the process prints its stacks and exits."""
    faulthandler.dump_traceback_later(120, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def in_step(request):
    """Both ranks start each test together (requests tests that take ctx only)."""
    if "ctx" in request.fixturenames:
        request.getfixturevalue("ctx").barrier()
    yield


def exchange(ch, obj, out, tag, timeout=60):
    """Post the receive, send, wait: works between two ranks and on a self channel."""
    r = ch.irecv(out, tag)
    ch.send(obj, tag, timeout=timeout)
    return r.wait(timeout=timeout)
