"""The GIL, Ctrl-C, threads on one channel, fork."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import lavaflow as lf
from conftest import exchange


def test_gil_released_while_waiting(ctx, ch):
    # Each rank's main thread waits for a message its peer's *second* thread
    # sends only after running Python code. If a wait held the GIL, the
    # waiting rank's own second thread could not run, so its peer would never
    # get its message: the test would deadlock instead of pass.
    done = []

    def worker():
        total = 0
        for i in range(200_000):
            total += i
        done.append(total)
        ch.send(b"go", tag=30)

    t = threading.Thread(target=worker)
    t.start()
    out = bytearray(2)
    assert ch.recv(out, tag=30, timeout=60) == 2
    t.join()
    assert done and bytes(out) == b"go"
    # The same through Request.wait and a barrier.
    t = threading.Thread(target=worker)
    r = ch.irecv(out, tag=30)
    t.start()
    assert r.wait(timeout=60) == 2
    t.join()
    ctx.barrier()


# Ctrl-C during waits: test_interrupt.py (child ranks, SIGINT through a pipe handshake).


def test_waiter_and_a_busy_thread_on_one_channel(ch, ctx):
    # The main thread waits on the channel (tag 55) while a second thread
    # ping-pongs on it (tag 56): the waiter goes passive while the other
    # thread drives the channel, and must still get its message afterwards.
    first = ctx.size == 1 or ctx.rank == 0
    rounds = 2000
    errors = []

    def pingpong():
        try:
            b, c = np.zeros(1, np.uint8), np.zeros(1, np.uint8)
            for _ in range(rounds):
                if ctx.size == 1:
                    exchange(ch, b, c, tag=56)
                elif first:
                    ch.send(b, 56)
                    ch.recv(b, 56, timeout=60)
                else:
                    ch.recv(b, 56, timeout=60)
                    ch.send(b, 56)
            ch.send(b"done", tag=55)  # the peer's main thread was waiting for this
        except BaseException as e:
            errors.append(e)

    out = bytearray(4)
    r = ch.irecv(out, tag=55) if ctx.size == 1 else None
    t = threading.Thread(target=pingpong)
    t.start()
    if r is None:
        assert ch.recv(out, tag=55, timeout=120) == 4
    else:
        assert r.wait(timeout=120) == 4
    t.join()
    assert not errors, errors
    assert bytes(out) == b"done"


def test_eight_threads_one_channel(ch, ctx):
    rounds = 300
    errors = []

    def worker(i):
        try:
            tag = 40 + i
            out = np.zeros(4, np.int64)
            for k in range(rounds):
                msg = np.array([ctx.rank, i, k, i * k], np.int64)
                if k % 2:
                    r = ch.irecv(out, tag)
                    ch.send(msg, tag, timeout=60)
                    r.wait(timeout=60)
                else:
                    s = ch.isend(msg, tag)
                    ch.recv(out, tag, timeout=60)
                    s.wait(timeout=60)
                peer = ctx.rank ^ 1 if ctx.size == 2 else ctx.rank
                assert list(out) == [peer, i, k, i * k], (i, k, list(out))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_fork_after_import(ctx):
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            try:
                ctx.rank  # the parent's context is not the child's
            except RuntimeError:
                pass
            else:
                raise AssertionError("inherited context usable")
            for k in list(os.environ):
                if k.startswith(("LF_RANK", "LF_SIZE", "LF_BOOTSTRAP", "LF_JOB_KEY", "OMPI_", "PMIX_")):
                    del os.environ[k]
            with lf.init() as c:  # a world of one
                assert c.size == 1
                with c.open(c.rank) as s:
                    out = bytearray(4)
                    r = s.irecv(out, tag=1)
                    s.send(b"fork", tag=1)
                    assert r.wait(timeout=30) == 4 and bytes(out) == b"fork"
                b = c.alloc(4096, "host")
                np.frombuffer(b, np.uint8)[:] = 1
                b.free()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish in 60 s")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent is unaffected.
    out = bytearray(2)
    with ctx.open(ctx.rank ^ 1 if ctx.size == 2 else ctx.rank) as c2:
        assert exchange(c2, b"ok", out, tag=50) == 2


def test_one_request_two_waiters(ch):
    # A request is waited by one thread at a time: the other gets a
    # RuntimeError, or the result if the first had finished already.
    out = bytearray(4)
    r = ch.irecv(out, tag=51)
    results = []

    def waiter():
        try:
            results.append(r.wait(timeout=60))
        except RuntimeError as e:
            results.append(e)

    threads = [threading.Thread(target=waiter) for _ in range(2)]
    for t in threads:
        t.start()
    ch.send(b"both", tag=51)
    for t in threads:
        t.join()
    assert 4 in results and all(x == 4 or isinstance(x, RuntimeError) for x in results), results
    assert bytes(out) == b"both"


def test_close_while_another_thread_waits(ctx, peer):
    c2 = ctx.open(peer)
    errors = []

    def waiter():
        try:
            c2.recv(bytearray(4), tag=52, timeout=60)
        except lf.Error as e:
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    c2.close()
    t.join()
    # Our close, or the peer's close of its end, whichever the wait saw first.
    assert len(errors) == 1 and isinstance(errors[0], (lf.Closed, lf.PeerGone)), errors
