"""One rank of test_interrupt.py: waits that get SIGINT from the test.

Rank 0 runs the cases. For each it prints "wait <case>" just before it
blocks and writes a byte to the fd in argv[1] once it is inside the wait
(lavaflow._lavaflow._notify_next_wait); the test then sends it SIGINT, and it prints "ok <case>" once the
KeyboardInterrupt came and the channel (or context) proved usable again, or
"fail <case> <why>". Rank 1 helps: it does what the test writes on its stdin
("go <case>"), then prints "done <case>". Nothing here sleeps to synchronise:
every step waits for a line or a message.
"""
import signal
import sys
import threading

import numpy as np

import lavaflow as lf


def say(*words):
    print(*words, flush=True)


def expect_interrupt(ch, case, fn):
    """Runs fn, which must block until SIGINT comes, then tells rank 1 (tag 2) to go on."""
    try:
        lf._lavaflow._notify_next_wait(NOTIFY_FD)  # a byte once fn() is inside its wait
        say("wait", case)  # the test reads this, then that byte, then sends SIGINT
        fn()
    except KeyboardInterrupt:
        ch.send(b"ping", tag=2)
        return True
    say("fail", case, "the wait returned instead of raising KeyboardInterrupt")
    return False


def rank0(ctx, ch):
    out = bytearray(8)

    # A blocking recv: the receive is cancelled, then the same tag works.
    if expect_interrupt(ch, "recv", lambda: ch.recv(out, tag=1)):
        n = ch.recv(out, tag=1, timeout=60)
        say("ok" if (n, bytes(out[:n])) == (8, b"after^C!") else "fail", "recv")

    # Request.wait: KeyboardInterrupt, the request stays valid.
    r = ch.irecv(out, tag=3)
    if expect_interrupt(ch, "request", lambda: r.wait()):
        assert not r.done
        n = r.wait(timeout=60)
        say("ok" if (n, bytes(out[:n])) == (8, b"request!") else "fail", "request")

    # recv_buffer (lf_wait_buffer_timeout in slices).
    if expect_interrupt(ch, "recv_buffer", lambda: ch.recv_buffer(tag=4)):
        b = ch.recv_buffer(tag=4, timeout=60)
        say("ok" if bytes(memoryview(b)) == b"buffer!!" else "fail", "recv_buffer")

    # irecv_buffer's Request.wait, then a cancel.
    r = ch.irecv_buffer(tag=5)
    if expect_interrupt(ch, "buffer_request", lambda: r.wait()):
        r.cancel()
        try:
            r.wait(timeout=60)
            say("fail", "buffer_request", "not cancelled")
        except lf.Cancelled:
            say("ok", "buffer_request")

    # The barrier: rank 1 enters it only after the interrupt; this rank has
    # entered it all the same, so the next barrier pairs with rank 1's next.
    if expect_interrupt(ch, "barrier", lambda: ctx.barrier()):
        ctx.barrier(timeout=60)
        say("ok", "barrier")

    # allreduce: it completes in the background once rank 1 joins; the
    # barrier after it runs after it (collectives run in call order).
    a = np.full(4, 3.0)
    if expect_interrupt(ch, "allreduce", lambda: ctx.allreduce(a)):
        ctx.barrier(timeout=60)
        say("ok" if (a == 5.0).all() else "fail", "allreduce")

    # An rpc call whose handler waits until rank 1's server is told to answer.
    client = lf.RpcClient(ch_rpc[0])
    call = client.call("slow", b"", b"x")
    if expect_interrupt(ch, "rpc", lambda: call.wait()):
        h, p = call.wait(timeout=60)
        say("ok" if bytes(p) == b"answer" else "fail", "rpc")
    client.close()

    # A second thread waiting meanwhile is not disturbed: only the main
    # thread sees the signal.
    got = []
    t = threading.Thread(target=lambda: got.append(ch.recv(bytearray(8), tag=6, timeout=60)))
    t.start()
    if expect_interrupt(ch, "main_only", lambda: ch.recv(out, tag=7)):
        t.join()
        say("ok" if got == [8] else "fail", "main_only")


ch_rpc = []
NOTIFY_FD = int(sys.argv[1]) if len(sys.argv) > 1 else -1


def rank1(ctx, ch):
    release = threading.Event()
    server = lf.RpcServer(1)

    def slow(call):
        release.wait(60)
        return b"answer"

    server.register("slow", slow)
    server.serve(ch_rpc[0])
    ping = bytearray(4)
    for line in sys.stdin:
        case = line.split()[1]
        if case == "exit":
            break
        ch.recv(ping, tag=2, timeout=60)  # rank 0 got its KeyboardInterrupt
        if case == "recv":
            ch.send(b"after^C!", tag=1)
        elif case == "request":
            ch.send(b"request!", tag=3)
        elif case == "recv_buffer":
            ch.send(b"buffer!!", tag=4)
        elif case == "barrier":
            ctx.barrier(timeout=60)
            ctx.barrier(timeout=60)
        elif case == "allreduce":
            ctx.allreduce(np.full(4, 2.0))
            ctx.barrier(timeout=60)
        elif case == "rpc":
            release.set()
        elif case == "main_only":
            ch.send(b"thread!!", tag=6)
        say("done", case)
    server.close()


def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the launcher ignores SIGINT
    with lf.init() as ctx:
        peer = 1 - ctx.rank
        ch = ctx.open(peer)
        ch_rpc.append(ctx.open(peer))  # rank 1 serves rpc on it, rank 0 calls
        # The first collective opens the collectives' channels inside the
        # call, which needs every rank and cannot be interrupted: do it first.
        ctx.barrier(timeout=60)
        if ctx.rank == 0:
            rank0(ctx, ch)
            say("end")
        else:
            rank1(ctx, ch)
        ctx.barrier(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
