"""Remote execution: a service in this process (an abstract unix socket of
its own), a client, plans of built-in ops, read-only results."""
import os

import numpy as np
import pytest

import lavaflow as lf


@pytest.fixture(scope="module")
def service(ctx):
    with lf.ExecServer(ctx, f"unix:@lf-py-exec-{os.getpid()}") as srv:
        assert srv.address.startswith("unix:@lf-py-exec-") and srv.device
        with ctx.exec_connect(srv.address) as client:
            yield srv, client
    assert srv.stopped and client.closed


def test_health(service):
    srv, client = service
    h = client.health()
    assert h["device"] == srv.device
    assert {"add", "mul", "scale", "sum", "matmul"} <= set(h["ops"])
    assert h["clients"] >= 1
    assert client.transport


def test_plan_and_read_only_results(ctx, service):
    _, client = service
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((3, 2), 0.5, np.float32)
    a.flags.writeable = False  # read-only inputs are fine
    plan = (ctx.plan().input("a", a).input("b", b)
            .op("matmul", ["a", "b"], "m").op("scale", ["m"], "s", {"factor": 3}).op("sum", ["s"], "t")
            .output("s").output("t"))
    job = client.run(plan, deadline_ms=60_000)
    job.wait(timeout=60)
    assert job.test()
    s, t = job.fetch("s"), job.fetch("t")
    want = 3 * (a @ b)
    assert s.shape == (2, 2) and s.dtype == np.float32 and np.allclose(s, want)
    assert t.shape == () and np.isclose(t, want.sum())
    assert not s.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        s[0, 0] = 1
    info = job.info()
    assert info["status"] == 0 and [o["op"] for o in info["ops"]] == ["matmul", "scale", "sum"]
    job.release()
    assert job.released
    assert np.allclose(s, want)  # the fetched array keeps the result alive
    with pytest.raises(lf.Closed):
        job.fetch("s")


def test_resident_inputs(ctx, service):
    _, client = service
    x = np.ones((4,), np.float32)
    with client.run(ctx.plan().input("x", x).op("add", ["x", "x"], "y").output("y")) as first:
        first.wait(timeout=60)
        second = client.run(ctx.plan().input_resident("y", first, "y").op("mul", ["y", "y"], "z").output("z"))
        second.wait(timeout=60)
        assert (second.fetch("z") == 4).all()
        second.release()


def test_errors(ctx, service):
    _, client = service
    a = np.ones(3, np.float32)
    with pytest.raises(lf.Error, match="nope") as e:
        client.run(ctx.plan().input("a", a).op("nope", ["a"], "x").output("x")).wait(timeout=60)
    assert e.value.status_name == "LF_ERR_INVALID_ARG"
    with pytest.raises(lf.Error):
        client.run(ctx.plan().input("a", a).input("b", np.ones(4, np.float32)).op("add", ["a", "b"], "c")
                   .output("c")).wait(timeout=60)
    with pytest.raises(TypeError, match="float32"):
        ctx.plan().input("a", np.ones(3))
    with pytest.raises(ValueError, match="not contiguous"):
        ctx.plan().input("a", np.ones(6, np.float32)[::2])
    with pytest.raises(ValueError):
        client.run(ctx.plan(), deadline_ms=-1)
    job = client.run(ctx.plan().input("a", a).op("sum", ["a"], "s").output("s"))
    job.wait(timeout=60)
    with pytest.raises(lf.Error) as e:
        job.fetch("not-an-output")
    assert e.value.status_name == "LF_ERR_NOT_FOUND"
    job.release()
