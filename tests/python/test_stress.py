"""10^6 sends with flat memory: no reference or request leaks."""
import sys

import numpy as np

from conftest import exchange

TOTAL = 1_000_000
WINDOW = 1000  # the receiver acknowledges every WINDOW messages: bounded queues


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_million_sends_flat_rss(ctx, ch):
    msg = np.arange(2, dtype=np.int32)
    msg.flags.writeable = False
    out = np.zeros(2, np.int32)
    ack = bytearray(1)
    refs = sys.getrefcount(msg), sys.getrefcount(out)
    two = ctx.size == 2
    sender = not two or ctx.rank == 0
    receiver = not two or ctx.rank == 1

    def window(use_requests):
        if two and sender:
            for _ in range(WINDOW):
                if use_requests:
                    ch.isend(msg, 60).wait()
                else:
                    ch.send(msg, 60)
            ch.recv(ack, 61, timeout=60)
        elif two:
            for _ in range(WINDOW):
                if use_requests:
                    ch.irecv(out, 60).wait()
                else:
                    ch.recv(out, 60)
            ch.send(b"k", 61)
        else:  # one rank: both ends through a self channel
            for _ in range(WINDOW // 2):
                exchange(ch, msg, out, 60)

    windows = TOTAL // WINDOW if two else TOTAL // WINDOW // 4  # one process does both ends: a quarter
    warm = windows // 10
    for w in range(warm):
        window(w % 2 == 1)
    before = rss_bytes()
    for w in range(warm, windows):
        window(w % 2 == 1)
    grown = rss_bytes() - before
    assert (sys.getrefcount(msg), sys.getrefcount(out)) == refs
    if receiver:
        assert list(out) == [0, 1]
    assert grown < 4 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over {TOTAL} sends"
