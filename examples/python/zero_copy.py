#!/usr/bin/env python3
"""zero_copy: rank 0 fills buffers from the context's shared pool and sends
them with send_buffer; over a shared-memory channel only a descriptor
travels, and rank 1's numpy array is a view of the very same memory
(numpy.from_dlpack, no copy). Freeing the view returns the memory to rank 0's
pool.

Ownership, as in the C API:
  - send_buffer takes the buffer: afterwards buf.freed is True, and it refuses
    while a view of it (memoryview, numpy array) is still alive.
  - recv_buffer returns a Buffer the receiver owns; a numpy view made with
    numpy.from_dlpack keeps the memory alive even after Buffer.free().

    mpiexec -n 2 python3 examples/python/zero_copy.py
    LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-zc.sock python3 examples/python/zero_copy.py &
    LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-zc.sock python3 examples/python/zero_copy.py
"""
import sys
import time

import numpy as np

import lavaflow as lf

ROUNDS = 1000
SHAPE = (1024, 1024)  # 4 MiB of float32


def main():
    with lf.init() as ctx:
        if ctx.size != 2:
            sys.exit("zero_copy needs exactly 2 ranks")
        with ctx.open(1 - ctx.rank) as ch:
            if ctx.rank == 0:
                print(f"transport: {ch.transport} ({ch.reason})")
                t0 = time.perf_counter()
                for i in range(ROUNDS):
                    buf = ctx.alloc(4 * SHAPE[0] * SHAPE[1])  # kind "host-shared": the shared pool
                    a = np.frombuffer(buf, np.float32).reshape(SHAPE)  # a writable view
                    a[0, 0] = i
                    del a  # send_buffer refuses while a view is alive
                    ch.send_buffer(buf, tag=7)  # buf belongs to lavaflow now
                    ch.recv(bytearray(1), tag=8)  # rank 1 is done with the view
                us = (time.perf_counter() - t0) / ROUNDS * 1e6
                print(f"{ROUNDS} rounds of 4 MiB: {us:.2f} us per round (send + view + free + ack)")
            else:
                for i in range(ROUNDS):
                    got = ch.recv_buffer(tag=7)
                    view = np.from_dlpack(got).view(np.float32).reshape(SHAPE)  # read-only view, no copy
                    assert view[0, 0] == i and not view.flags.owndata
                    if i == 0:
                        print(f"rank 1 got a {got.kind} buffer of {got.nbytes} bytes at {got.address:#x}")
                    del view
                    got.free()  # returns the memory to rank 0's pool
                    ch.send(b"k", tag=8)


if __name__ == "__main__":
    main()
