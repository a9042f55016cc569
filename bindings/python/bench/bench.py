#!/usr/bin/env python3
"""lavaflow from Python against mpi4py and against lavaflow's C API, in one job.

    mpiexec --allow-run-as-root -n 2 --bind-to core \\
        env PYTHONPATH=build/bindings/python /usr/bin/python3 bindings/python/bench/bench.py [--rounds 7]

Both ranks run this script. Each round runs every variant once, in the same
order on both ranks (so the variants alternate), and every figure is the
median over the rounds. Variants:

  8 B one-way (round trip / 2, ping-pong):
    lf-python   Channel.send / Channel.recv on a numpy array
    lf-c        the same loop in C (lf_send / lf_recv) on the same channel, from _lavaflow._c_pingpong
    mpi4py      comm.Send / comm.Recv on the same numpy array (MPI_COMM_WORLD, same job)
  64 MiB shared-pool buffer one-way: each side ctx.alloc()s a buffer from the
    shared pool, send_buffer()s it, recv_buffer()s the other's and frees it
    (a descriptor each way; the memory returns to the sender's pool)
  a second thread's rate while the main thread waits in Channel.recv, against
    its rate alone: (a) pure-Python work, (b) a ping-pong on another tag.
"""
import argparse
import json
import statistics
import sys
import threading
import time

from mpi4py import MPI  # initialises MPI first: lavaflow joins it

import numpy as np

import lavaflow as lf


def pingpong_py(ch, buf, iters, first):
    send, recv = ch.send, ch.recv
    t0 = time.perf_counter()
    if first:
        for _ in range(iters):
            send(buf, 0)
            recv(buf, 0)
    else:
        for _ in range(iters):
            recv(buf, 0)
            send(buf, 0)
    return time.perf_counter() - t0


def pingpong_mpi(comm, buf, iters, first, peer):
    msg = [buf, MPI.BYTE]
    send, recv = comm.Send, comm.Recv
    t0 = time.perf_counter()
    if first:
        for _ in range(iters):
            send(msg, peer, 0)
            recv(msg, peer, 0)
    else:
        for _ in range(iters):
            recv(msg, peer, 0)
            send(msg, peer, 0)
    return time.perf_counter() - t0


def zero_copy(ctx, ch, nbytes, iters, first):
    t0 = time.perf_counter()
    for _ in range(iters):
        if first:
            ch.send_buffer(ctx.alloc(nbytes), 0)
            ch.recv_buffer(0).free()
        else:
            v = ch.recv_buffer(0)
            v.free()
            ch.send_buffer(ctx.alloc(nbytes), 0)
    return time.perf_counter() - t0


def python_work(seconds):
    """Iterations of a small pure-Python loop in `seconds`."""
    n = 0
    end = time.perf_counter() + seconds
    while True:
        for i in range(1000):
            n += i & 1
        if time.perf_counter() >= end:
            return n / seconds


def second_thread_rates(ctx, ch, ch2, seconds, rank):
    """Rate of a second thread on rank 0, alone and while rank 0's main thread
    waits in Channel.recv for a message that only comes once the second
    thread is done. In both cases rank 1's main thread waits the same way
    (in Channel.recv), so the two measurements differ only in rank 0's main
    thread.
      work:  a pure-Python loop (iterations per second)
      pp:    8 B ping-pongs with rank 1's second thread on `ch`; the main
             thread waits on another channel to the same peer (ch2)
      pp-same: the same, the main thread waiting on `ch` itself (other tag)
      pp-same-spin: pp-same with the bindings' passive waits off
             (lavaflow._lavaflow._set_passive_waits(False)): the waiter
             spins in the library's wait as before, for a side-by-side
    Also the main thread's CPU time while it waits, as a share of the wall
    time (waiter_cpu): what the waiter takes from the second thread's core.
    """
    buf = np.zeros(1, np.uint8)
    out = {}

    def pingpong_thread(c):
        n = 0
        end = time.perf_counter() + seconds
        b = np.zeros(1, np.uint8)
        first = rank == 0
        while True:
            for _ in range(100):
                if first:
                    c.send(b, 7)
                    c.recv(b, 7)
                else:
                    c.recv(b, 7)
                    c.send(b, 7)
            n += 100
            if first:  # rank 0 decides when to stop and says so
                b[0] = 1 if time.perf_counter() >= end else 0
                c.send(b, 9)
                if b[0]:
                    return n / seconds
            else:
                c.recv(b, 9)
                if b[0]:
                    return n / seconds

    def run(kind, waiting, wait_ch, passive=True):
        lf._lavaflow._set_passive_waits(passive)
        ctx.barrier()
        res, cpu = [], []
        if kind == "work":  # rank 0's worker tells rank 1's thread when it is done
            note = np.zeros(1, np.uint8)
            if rank == 0:
                target = lambda: (res.append(python_work(seconds)), wait_ch.send(note, 6))  # noqa: E731
            else:
                target = lambda: wait_ch.recv(note, 6)  # noqa: E731
        else:
            target = lambda: res.append(pingpong_thread(ch))  # noqa: E731
        t = threading.Thread(target=target)
        t.start()
        if rank == 0:
            if waiting:
                cpu0, wall0 = time.thread_time(), time.perf_counter()
                wait_ch.recv(buf, 5)  # the main thread waits here, GIL released
                cpu.append((time.thread_time() - cpu0) / (time.perf_counter() - wall0))
                t.join()
            else:
                t.join()
                wait_ch.send(buf, 5)
        else:  # the same on rank 1 either way: join, then send or receive
            t.join()
            if waiting:
                wait_ch.send(buf, 5)  # only now may rank 0's main thread go on
            else:
                wait_ch.recv(buf, 5)
        lf._lavaflow._set_passive_waits(True)
        return (res[0] if res else 0.0), (cpu[0] if cpu else 0.0)

    for kind, wait_ch, passive in (("work", ch2, True), ("pp", ch2, True), ("pp-same", ch, True),
                                   ("pp-same-spin", ch, False)):
        base = "pp" if kind.startswith("pp") else kind
        alone, _ = run(base, False, wait_ch, passive)
        waiting, cpu = run(base, True, wait_ch, passive)
        out[kind + "_alone"] = alone
        out[kind + "_waiting"] = waiting
        out[kind + "_ratio"] = waiting / alone if alone else 0.0  # adjacent pair: drifts cancel
        out[kind + "_waiter_cpu"] = cpu
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=100_000, help="round trips per 8 B sample")
    ap.add_argument("--zc-iters", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=0.25, help="length of each second-thread sample")
    ap.add_argument("--json", help="write the medians here (rank 0)")
    args = ap.parse_args()

    comm = MPI.COMM_WORLD
    ctx = lf.init()
    rank, size = ctx.rank, ctx.size
    if size != 2 or comm.Get_size() != 2:
        sys.exit("bench.py needs exactly 2 ranks under mpiexec")
    peer = 1 - rank
    first = rank == 0
    ch = ctx.open(peer)
    ch2 = ctx.open(peer)  # where the main thread waits in the second-thread figures
    buf = np.zeros(8, np.uint8)
    one_way = {"lf-python": [], "lf-c": [], "mpi4py": [], "zc-64MiB": [], "zc-64MiB-c": []}
    thread_rates = {}

    # Warm up every path once.
    pingpong_py(ch, buf, 2000, first)
    lf._lavaflow._c_pingpong(ch, 2000, 8, first)
    pingpong_mpi(comm, buf, 2000, first, peer)
    zero_copy(ctx, ch, 64 << 20, 100, first)
    lf._lavaflow._c_zero_copy(ctx, ch, 100, 64 << 20, first)

    for _ in range(args.rounds):
        ctx.barrier()
        one_way["lf-python"].append(pingpong_py(ch, buf, args.iters, first) / args.iters / 2)
        ctx.barrier()
        one_way["lf-c"].append(lf._lavaflow._c_pingpong(ch, args.iters, 8, first) / args.iters / 2)
        comm.Barrier()
        one_way["mpi4py"].append(pingpong_mpi(comm, buf, args.iters, first, peer) / args.iters / 2)
        ctx.barrier()
        one_way["zc-64MiB"].append(zero_copy(ctx, ch, 64 << 20, args.zc_iters, first) / args.zc_iters / 2)
        ctx.barrier()
        one_way["zc-64MiB-c"].append(
            lf._lavaflow._c_zero_copy(ctx, ch, args.zc_iters, 64 << 20, first) / args.zc_iters / 2)
        for k, v in second_thread_rates(ctx, ch, ch2, args.seconds, rank).items():
            thread_rates.setdefault(k, []).append(v)

    if rank == 0:
        med = {k: statistics.median(v) * 1e6 for k, v in one_way.items()}
        rates = {k: statistics.median(v) for k, v in thread_rates.items()}
        print(f"transport: {ch.transport} ({ch.reason}); {args.rounds} rounds, medians")
        for k, v in one_way.items():
            print(f"  {k:10s} one-way {med[k]:.3f} us   (rounds: {', '.join(f'{x * 1e6:.3f}' for x in v)})")
        print(f"  lf-python - lf-c      = {med['lf-python'] - med['lf-c']:+.3f} us  (target <= +0.25)")
        print(f"  mpi4py / lf-python    = {med['mpi4py'] / med['lf-python']:.2f}x  (target >= 1.5x)")
        print(f"  zero copy, 64 MiB     = {med['zc-64MiB']:.3f} us  (target <= 2; C: {med['zc-64MiB-c']:.3f} us)")
        for kind in ("work", "pp", "pp-same", "pp-same-spin"):
            alone, waiting, ratio = rates[kind + "_alone"], rates[kind + "_waiting"], rates[kind + "_ratio"]
            print(f"  second thread, {kind:12s} alone {alone:11.0f}/s, main waiting {waiting:11.0f}/s: "
                  f"median of the rounds' ratios {ratio:6.1%}  (target >= 90%); "
                  f"waiter's CPU {rates[kind + '_waiter_cpu']:6.1%} of its wait")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"one_way_us": med, "rounds_us": {k: [x * 1e6 for x in v] for k, v in one_way.items()},
                           "thread_rates": {k: v for k, v in thread_rates.items()}}, f, indent=1)
    ch.close()
    ctx.finalize()


if __name__ == "__main__":
    main()
