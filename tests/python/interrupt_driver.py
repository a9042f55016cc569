"""The parent side of the Ctrl-C tests (test_interrupt.py,
test_group_interrupt.py): it starts two child ranks running `child`; rank 0
says on its stdout which wait comes next ("wait NAME") and writes a byte to
a pipe once the wait has begun; then rank 0 gets SIGINT and rank 1 is told
to go on ("go NAME"). Rank 0 reports "ok NAME" or "fail ...", and "end"."""
import os
import secrets
import signal
import subprocess
import sys
import threading


def in_a_job():
    return any(k in os.environ for k in ("LF_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"))


def drive(child, tmp_path):
    """Runs the two ranks; returns (oks, fails, exit codes, both ranks' stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LF_", "OMPI_", "PMIX_"))}
    env.update(LF_SIZE="2", LF_BOOTSTRAP=f"unix:{tmp_path}/bootstrap.sock", LF_JOB_KEY=secrets.token_hex(32))
    logs = [open(tmp_path / f"rank{r}.err", "w+") for r in (0, 1)]
    notify_r, notify_w = os.pipe()
    p0 = subprocess.Popen([sys.executable, child, str(notify_w)], env=dict(env, LF_RANK="0"),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logs[0], text=True,
                          pass_fds=(notify_w,))
    os.close(notify_w)
    p1 = subprocess.Popen([sys.executable, child], env=dict(env, LF_RANK="1"), stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=logs[1], text=True)
    # Only against a hang: a wait that ignores SIGINT never prints again.
    watchdog = threading.Timer(120, lambda: (p0.kill(), p1.kill()))
    watchdog.start()
    oks, fails, codes = [], [], (None, None)
    try:
        for line in p0.stdout:
            words = line.split()
            if words[0] == "wait":
                if os.read(notify_r, 1) != b"w":  # rank 0 is inside the wait now
                    break
                os.kill(p0.pid, signal.SIGINT)
                p1.stdin.write(f"go {words[1]}\n")
                p1.stdin.flush()
            elif words[0] == "ok":
                oks.append(words[1])
            elif words[0] == "fail":
                fails.append(line.strip())
            elif words[0] == "end":
                p1.stdin.write("go exit\n")
                p1.stdin.flush()
                break
        codes = p0.wait(), p1.wait()
    finally:
        os.close(notify_r)
        watchdog.cancel()
        for p in (p0, p1):
            if p.poll() is None:
                p.kill()
                p.wait()
    errs = []
    for r, log in enumerate(logs):
        log.seek(0)
        errs.append(f"--- rank {r}\n{log.read()}")
        log.close()
    return oks, fails, codes, errs
