"""File ingest: chunks into lavaflow buffers, and straight on to a peer."""
import os
import threading

import numpy as np
import pytest

import lavaflow as lf

SIZE = 3 * (1 << 20) + 12345


def content(rank):
    return np.random.default_rng(1000 + rank).integers(0, 256, SIZE, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory, ctx):
    d = tmp_path_factory.mktemp(f"ingest{ctx.rank}")
    p = d / "data.bin"
    p.write_bytes(content(ctx.rank))
    return p


def test_chunks_in_order(ctx, files):
    want = content(ctx.rank)
    with ctx.ingest(files, chunk_bytes=1 << 20) as ing:
        assert ing.path_taken
        got = bytearray()
        for off, buf in ing:
            assert off == len(got)
            got += memoryview(buf)
            buf.free()  # back to the ring
        assert bytes(got) == want
        st = ing.stats()
        assert st["chunks"] == 4 and st["bytes"] == SIZE
    assert ing.closed
    with pytest.raises(lf.Closed):
        ing.next()


def test_range_fd_and_end(ctx, files):
    want = content(ctx.rank)
    fd = os.open(files, os.O_RDONLY)
    try:
        ing = lf.ingest(ctx, fd, offset=4096, length=10000, chunk_bytes=4096)
    finally:
        os.close(fd)  # the ingest reads through its own description
    parts = []
    while (item := ing.next(timeout=60)) is not None:
        parts.append(bytes(memoryview(item[1])))
    assert b"".join(parts) == want[4096:14096]
    ing.close()
    ing.close()  # twice is fine


def test_bad_inputs(ctx, tmp_path):
    with pytest.raises(lf.Error) as e:
        ctx.ingest(tmp_path / "missing")
    assert e.value.status_name == "LF_ERR_NOT_FOUND"
    with pytest.raises(lf.Error):
        ctx.ingest(tmp_path)  # a directory
    with pytest.raises(ValueError):
        ctx.ingest(tmp_path / "x", kind="no-such-kind")


def test_cancel(ctx, files):
    ing = ctx.ingest(files, chunk_bytes=1 << 20)
    ing.cancel()
    with pytest.raises(lf.Cancelled):
        for _ in ing:
            pass
    ing.close()


def test_send_to_peer(ctx, ch, files, peer):
    # Each rank sends its file to its peer and receives the peer's, chunk by
    # chunk, until the zero-byte message that ends the range.
    got, errors = bytearray(), []

    def receive():
        try:
            while True:
                b = ch.recv_buffer(tag=90, timeout=60)
                if len(b) == 0:
                    break
                got.extend(memoryview(b))
                b.free()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=receive)
    t.start()
    with ctx.ingest(files, kind="host-shared", chunk_bytes=1 << 20) as ing:
        ing.send(ch, tag=90)
    t.join()
    assert not errors, errors
    assert bytes(got) == content(peer)
