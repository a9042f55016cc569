"""Request channels (RpcServer/RpcClient) and channels by address (listen/connect).

Each process serves itself: a listener on an abstract unix socket of its
own, a client channel connected to it, the accepted channel served by an
RpcServer. So the suite runs the same standalone, as a world of one and
under mpiexec, with no pairing between ranks.
"""
import os
import threading

import numpy as np
import pytest

import lavaflow as lf


@pytest.fixture(scope="module")
def pair(ctx):
    """(client channel, server channel, listener) over unix:@..."""
    with ctx.listen(f"unix:@lf-py-test-{os.getpid()}") as listener:
        assert listener.address.startswith("unix:@lf-py-test-")
        got = []
        t = threading.Thread(target=lambda: got.append(listener.accept(timeout=60)))
        t.start()
        client_ch = ctx.connect(listener.address, timeout=60)
        t.join()
        assert len(got) == 1
        server_ch = got[0]
        assert client_ch.peer == -1 and server_ch.peer == -1
        assert client_ch.transport and "by address" in client_ch.reason
        yield client_ch, server_ch, listener
        client_ch.close()
        server_ch.close()


@pytest.fixture(scope="module")
def rpc(pair):
    client_ch, server_ch, _ = pair
    release = threading.Event()
    seen = {}
    server = lf.RpcServer(2)

    def echo(call):
        return call.header, bytes(call.payload)

    def total(call):
        a = np.frombuffer(call.payload, np.float64)
        return np.array([a.sum()])  # a payload only: empty header

    def manual(call):
        call.respond(b"h", b"p")

    def fails(call):
        call.fail(-9, "disk on fire")

    def raises(call):
        raise ValueError("no such thing")

    def raises_lf(call):
        raise lf.Unavailable("not here")

    def blocks(call):
        while not call.cancelled and not release.is_set():
            release.wait(0.001)  # the handler's own poll of its cancel token
        if call.cancelled:  # the client cancelled, or the deadline passed
            raise lf.Timeout("deadline") if call.remaining_ms == 0 else lf.Cancelled("stopped")

    def keep(call):
        seen["call"] = call
        return b"kept"

    for name, fn in [("echo", echo), ("total", total), ("manual", manual), ("fails", fails), ("raises", raises),
                     ("raises_lf", raises_lf), ("blocks", blocks), ("keep", keep)]:
        server.register(name, fn)
    server.serve(server_ch)
    client = lf.RpcClient(client_ch)
    yield client, seen, release
    release.set()
    client.close()
    server.close()
    assert server.closed and client.closed


def test_echo_and_zero_copy_response(rpc):
    client, _, _ = rpc
    a = np.arange(1000, dtype=np.int32)
    a.flags.writeable = False  # read-only payloads are fine
    h, p = client.call("echo", b"header", a, deadline_ms=60_000).wait(timeout=60)
    assert h == b"header"
    assert isinstance(p, memoryview) and p.readonly
    assert (np.frombuffer(p, np.int32) == a).all()
    h, p = client.call("total", payload=np.ones(10)).wait(timeout=60)
    assert h == b"" and np.frombuffer(p, np.float64)[0] == 10.0
    h, p = client.call("manual").wait(timeout=60)
    assert (h, bytes(p)) == (b"h", b"p")


def test_response_view_outlives_request(rpc):
    client, _, _ = rpc
    r = client.call("echo", b"", b"x" * 4096)
    _, p = r.wait(timeout=60)
    view = np.frombuffer(p, np.uint8)
    del r, p  # the view keeps the response alive
    assert bytes(view) == b"x" * 4096


def test_many_calls_in_flight(rpc):
    client, _, _ = rpc
    reqs = [client.call("echo", str(i).encode(), np.full(i, i, np.uint8)) for i in range(32)]
    for i, r in reversed(list(enumerate(reqs))):
        h, p = r.wait(timeout=60)
        assert h == str(i).encode() and bytes(p) == bytes([i]) * i
        assert r.done and r.test()


def test_errors(rpc):
    client, _, _ = rpc
    with pytest.raises(lf.Error) as e:
        client.call("fails").wait(timeout=60)
    assert e.value.status == -9 and "disk on fire" in str(e.value)
    with pytest.raises(lf.Error) as e:
        client.call("raises").wait(timeout=60)
    assert e.value.status == -1 and "ValueError: no such thing" in str(e.value)
    with pytest.raises(lf.Unavailable, match="not here"):
        client.call("raises_lf").wait(timeout=60)
    with pytest.raises(lf.Error) as e:
        client.call("no-such-method").wait(timeout=60)
    assert e.value.status_name == "LF_ERR_NOT_FOUND"
    with pytest.raises(ValueError):
        client.call("echo", deadline_ms=-1)
    with pytest.raises(TypeError):
        client.call("echo", payload=object())
    r = client.call("blocks")  # runs until cancelled
    with pytest.raises(lf.Error, match="has not completed"):
        r.response
    r.cancel()
    with pytest.raises(lf.Cancelled):
        r.wait(timeout=60)


def test_cancel_reaches_the_handler(rpc):
    client, seen, _ = rpc
    r = client.call("blocks")
    with pytest.raises(lf.Timeout):
        r.wait(timeout=0.01)  # still running: the request stays valid
    r.cancel()
    with pytest.raises(lf.Cancelled):
        r.wait(timeout=60)


def test_deadline(rpc):
    client, _, _ = rpc
    with pytest.raises(lf.Timeout):
        client.call("blocks", deadline_ms=20).wait(timeout=60)


def test_call_is_dead_after_its_handler(rpc):
    client, seen, _ = rpc
    client.call("keep").wait(timeout=60)
    with pytest.raises(lf.Closed):
        seen["call"].method


def test_dropped_request_in_flight(rpc):
    client, _, release = rpc
    r = client.call("blocks")
    del r  # cancelled and kept by the client until it ends
    assert bytes(client.call("echo", b"", b"after").wait(timeout=60)[1]) == b"after"


def test_send_gather(pair):
    client_ch, server_ch, _ = pair
    out = bytearray(16)
    r = server_ch.irecv(out, tag=7)
    client_ch.send_gather(b"head", np.frombuffer(b"payload!", np.uint8), tag=7)
    assert r.wait(timeout=60) == 12 and bytes(out[:12]) == b"headpayload!"
    r = server_ch.irecv(out, tag=8)
    s = client_ch.isend_gather(b"", b"only", tag=8)
    s.wait(timeout=60)
    assert r.wait(timeout=60) == 4 and bytes(out[:4]) == b"only"


def test_listener_errors(ctx, pair):
    _, _, listener = pair
    with pytest.raises(lf.Timeout):
        listener.accept(timeout=0.01)
    with pytest.raises(lf.Error):
        ctx.listen("nonsense://x")
    with pytest.raises(lf.Error):
        ctx.connect(f"unix:@lf-py-test-nobody-{os.getpid()}", timeout=1)
    other = lf.listen(ctx, f"unix:@lf-py-test-closed-{os.getpid()}")
    other.close()
    assert other.closed
    with pytest.raises(lf.Closed):
        other.accept(timeout=0)
