#!/usr/bin/env python3
"""pingpong: two ranks bounce numpy arrays of growing size over one channel and
print the one-way latency (round trip / 2, median of 7 samples) for each size,
plus the transport the channel chose and why.

    mpiexec -n 2 python3 examples/python/pingpong.py
    LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-pp.sock python3 examples/python/pingpong.py &
    LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-pp.sock python3 examples/python/pingpong.py

(from a build tree: PYTHONPATH=build/bindings/python, and /usr/bin/python3 on Debian)
"""
import statistics
import sys
import time

import numpy as np

import lavaflow as lf


def main():
    with lf.init() as ctx:
        if ctx.size != 2:
            sys.exit(f"pingpong needs exactly 2 ranks (got {ctx.size})")
        first = ctx.rank == 0
        with ctx.open(1 - ctx.rank) as ch:
            if first:
                print(f"transport: {ch.transport} ({ch.reason})")
            size = 8
            while size <= 4 << 20:
                buf = np.zeros(size, np.uint8)
                iters = max(10, min(20000, (64 << 20) // size))
                samples = []
                for _ in range(7):
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        if first:
                            ch.send(buf, tag=1)
                            ch.recv(buf, tag=1)
                        else:
                            ch.recv(buf, tag=1)
                            ch.send(buf, tag=1)
                    samples.append((time.perf_counter() - t0) / iters / 2)
                if first:
                    print(f"{size:>9} B  {statistics.median(samples) * 1e6:9.2f} us one-way")
                size *= 8


if __name__ == "__main__":
    main()
