#!/usr/bin/env python3
"""service: a Python rpc service and an execution service, and their clients,
reached by address (lavaflow.listen / Context.connect / Context.exec_connect).

    python3 examples/python/service.py serve unix:@lf-demo &      # rpc on unix:@lf-demo, exec on ...-exec
    python3 examples/python/service.py call unix:@lf-demo

Over tcp ("tcp://127.0.0.1:7000") both sides need the same LF_EXEC_TOKEN.
(from a build tree: PYTHONPATH=build/bindings/python, and /usr/bin/python3 on Debian)
"""
import sys

import numpy as np

import lavaflow as lf


def serve(ctx, address):
    executor = lf.ExecServer(ctx, address + "-exec")  # built-in ops: add, mul, scale, sum, matmul
    server = lf.RpcServer(threads=2)

    def norms(call):  # holds the GIL while it runs: Python handlers run one at a time
        rows = np.frombuffer(call.payload, np.float32).reshape(-1, int(call.header))
        return np.linalg.norm(rows, axis=1).astype(np.float32)  # the response's payload

    server.register("norms", norms)
    with lf.listen(ctx, address) as listener:
        print(f"rpc on {listener.address}, exec on {executor.address} ({executor.device})", flush=True)
        while True:  # one client at a time, for the example's sake
            try:
                ch = listener.accept(timeout=1.0)  # lets Ctrl-C through once a second
            except lf.Timeout:
                continue
            server.serve(ch)


def call(ctx, address):
    ch = ctx.connect(address, timeout=10)
    client = lf.RpcClient(ch)
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    _, payload = client.call("norms", b"4", rows, deadline_ms=1000).wait(timeout=10)
    print("norms:", np.frombuffer(payload, np.float32))

    ex = ctx.exec_connect(address + "-exec")
    print("health:", ex.health())
    plan = ctx.plan().input("a", rows).input("b", rows.T.copy()).op("matmul", ["a", "b"], "g").output("g")
    job = ex.run(plan, deadline_ms=5000)
    job.wait(timeout=10)
    gram = job.fetch("g")  # read-only, the service's memory on the same host
    print("gram:\n", gram, "\nwhere each op ran:", job.info()["ops"])
    job.release()


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("serve", "call"):
        sys.exit(__doc__)
    with lf.init() as ctx:
        try:
            (serve if sys.argv[1] == "serve" else call)(ctx, sys.argv[2])
        except KeyboardInterrupt:  # finalize closes the services, then the channels
            print("stopped")


if __name__ == "__main__":
    main()
