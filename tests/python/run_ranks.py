#!/usr/bin/env python3
"""Runs a command as N lavaflow ranks without a launcher (LF_RANK, LF_SIZE,
LF_BOOTSTRAP=unix:..., LF_JOB_KEY), waits for all of them with a deadline,
prints each rank's output, and fails if any rank fails or the deadline passes.

    run_ranks.py [-n 2] [--timeout 300] -- python3 -m pytest tests/python
"""
import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    with tempfile.TemporaryDirectory(prefix="lf-py-") as tmp:
        env = dict(os.environ, LF_SIZE=str(args.n), LF_BOOTSTRAP=f"unix:{tmp}/bootstrap.sock",
                   LF_JOB_KEY=secrets.token_hex(32))
        for k in [k for k in env if k.startswith(("OMPI_", "PMIX_"))]:
            del env[k]  # not under mpirun, even if this runs inside one
        logs, procs = [], []
        for rank in range(args.n):
            log = open(os.path.join(tmp, f"rank{rank}.log"), "w+")
            logs.append(log)
            procs.append(subprocess.Popen(cmd, env=dict(env, LF_RANK=str(rank)), stdout=log,
                                          stderr=subprocess.STDOUT))
        deadline = time.monotonic() + args.timeout
        codes = [None] * args.n
        while None in codes:
            for i, p in enumerate(procs):
                if codes[i] is None:
                    try:
                        codes[i] = p.wait(timeout=0.05)
                    except subprocess.TimeoutExpired:
                        pass
            failed = any(c not in (None, 0) for c in codes)
            if (failed or time.monotonic() > deadline) and None in codes:
                time.sleep(2 if failed else 0)  # let a failing rank's peer report its own view
                for i, p in enumerate(procs):
                    if codes[i] is None:
                        p.kill()
                        codes[i] = p.wait()
                if not failed:
                    print(f"run_ranks: deadline of {args.timeout:.0f} s passed", file=sys.stderr)
        for rank, log in enumerate(logs):
            log.seek(0)
            print(f"===== rank {rank} (exit {codes[rank]})")
            sys.stdout.write(log.read())
            log.close()
        return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
