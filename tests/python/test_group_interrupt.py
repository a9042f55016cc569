"""Ctrl-C during a Group's waits (allreduce, bcast, barrier, free): two
child ranks (group_interrupt_child.py); rank 0 is sent SIGINT each time it is
inside a wait, which it signals on a pipe."""
import os

import pytest

from interrupt_driver import drive, in_a_job

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "group_interrupt_child.py")
CASES = ["allreduce", "bcast", "barrier", "free"]


@pytest.mark.skipif(in_a_job(), reason="runs its own two ranks: once, from the world-of-one run")
def test_ctrl_c_during_group_waits(tmp_path):
    oks, fails, codes, errs = drive(CHILD, tmp_path)
    assert not fails, (fails, errs)
    assert oks == CASES, (oks, errs)
    assert codes == (0, 0), errs
