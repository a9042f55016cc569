"""One rank of test_group_interrupt.py: Ctrl-C in a Group's waits.

As interrupt_child.py: rank 0 prints "wait <case>" just before it blocks and
writes a byte to the fd in argv[1] once it is inside the wait; the test then
sends it SIGINT. Rank 0 tells rank 1 (a message, tag 2) once the
KeyboardInterrupt came; rank 1 then joins the collective, on the test's
"go <case>" line. Rank 0 prints "ok <case>" once the group proved usable
again, or "fail <case> <why>". Nothing sleeps to synchronise.
"""
import signal
import sys

import numpy as np

import lavaflow as lf


def say(*words):
    print(*words, flush=True)


def expect_interrupt(ch, notify_fd, case, fn):
    try:
        lf._lavaflow._notify_next_wait(notify_fd)
        say("wait", case)
        fn()
    except KeyboardInterrupt:
        ch.send(b"ping", tag=2)
        return True
    say("fail", case, "the wait returned instead of raising KeyboardInterrupt")
    return False


def rank0(g, ch, notify_fd):
    a = np.full(4, 1.0)
    if expect_interrupt(ch, notify_fd, "allreduce", lambda: g.allreduce(a)):
        g.barrier(timeout=60)  # runs after the interrupted allreduce
        say("ok" if (a == 3.0).all() else "fail", "allreduce")
    b = np.zeros(3, np.int32)
    if expect_interrupt(ch, notify_fd, "bcast", lambda: g.bcast(b, root=1)):
        g.barrier(timeout=60)
        say("ok" if (b == 7).all() else "fail", "bcast")
    if expect_interrupt(ch, notify_fd, "barrier", lambda: g.barrier()):
        g.barrier(timeout=60)
        say("ok", "barrier")
    if expect_interrupt(ch, notify_fd, "free", g.free):
        live = not g.freed
        g.free()  # joins the barrier the interrupted free entered
        say("ok" if live and g.freed else "fail", "free")


def rank1(g, ch):
    ping = bytearray(4)
    for line in sys.stdin:
        case = line.split()[1]
        if case == "exit":
            break
        ch.recv(ping, tag=2, timeout=60)  # rank 0 got its KeyboardInterrupt
        if case == "allreduce":
            g.allreduce(np.full(4, 2.0))
            g.barrier(timeout=60)
        elif case == "bcast":
            g.bcast(np.full(3, 7, np.int32), root=1)
            g.barrier(timeout=60)
        elif case == "barrier":
            g.barrier(timeout=60)
            g.barrier(timeout=60)
        elif case == "free":
            g.free()
        say("done", case)


def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the launcher ignores SIGINT
    with lf.init() as ctx:
        ch = ctx.open(1 - ctx.rank)
        # Creating the group opens its channels inside the call, which needs
        # both ranks: it is not one of the interrupted waits.
        g = ctx.group([0, 1])
        g.barrier(timeout=60)
        if ctx.rank == 0:
            rank0(g, ch, int(sys.argv[1]))
            say("end")
        else:
            rank1(g, ch)
        ctx.barrier(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
