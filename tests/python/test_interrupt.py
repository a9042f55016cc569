"""Ctrl-C during waits: two child ranks (interrupt_child.py); rank 0 is sent
SIGINT each time it is inside a wait: it says which wait on its stdout, and
writes a byte to a second pipe once the wait has begun."""
import os

import pytest

from interrupt_driver import drive, in_a_job

CASES = ["recv", "request", "recv_buffer", "buffer_request", "barrier", "allreduce", "rpc", "main_only"]
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interrupt_child.py")


@pytest.mark.skipif(in_a_job(), reason="runs its own two ranks: once, from the world-of-one run")
def test_ctrl_c_during_waits(tmp_path):
    oks, fails, codes, errs = drive(CHILD, tmp_path)
    assert not fails, (fails, errs)
    assert oks == CASES, (oks, errs)
    assert codes == (0, 0), errs
