"""How the dev environment tells whether a recorded process still runs."""

from __future__ import annotations

import subprocess
import time

from services.devenv.processes import pid_alive


def test_an_exited_process_that_is_not_our_child_counts_as_gone() -> None:
    """`dev down` stops processes an earlier `dev up` started: once one exits it is a zombie until
    its parent reaps it, and kill(0) still finds it. It must count as gone at once."""
    # The shell's background child exits at once; its parent becomes `sleep`, which never reaps it.
    parent = subprocess.Popen(["sh", "-c", "sleep 0 & echo $!; exec sleep 30"], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        orphan = int(parent.stdout.readline())
        for _ in range(100):
            if not pid_alive(orphan):
                break
            time.sleep(0.01)
        assert not pid_alive(orphan)
        assert pid_alive(parent.pid)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
