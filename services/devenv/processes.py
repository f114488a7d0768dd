"""Child processes that never outlive their owner by accident.

Every child starts in its own process group (so a kill reaches whatever it forks) with its output
in a log file. Owners that live in-process (tests, benchmarks) register an ``atexit`` hook; the
``standby dev`` command instead records the pids in its state file so that ``down`` can stop
exactly what ``up`` started.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_LIVE: set[Process] = set()  # strong: a running child is never garbage-collected unnoticed


@dataclass(eq=False)
class Process:
    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    inherit_env: bool = True  # False: only ``env`` (a container's environment, not this machine's)
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**(os.environ if self.inherit_env else {}), **(self.env or {})},
            )
        finally:
            log.close()
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        terminate_group(self.popen.pid, timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL, for fault tests: no chance to clean up."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def detach(self) -> None:
        """Let the process outlive this Python process (``standby dev up``)."""
        _LIVE.discard(self)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    # A zombie that is not ours (started by an earlier `dev up`) has exited too: it only waits for
    # its parent (init) to reap it, which may take seconds.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def terminate_group(pid: int, *, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL what is left after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=3)


def live_processes() -> list[Process]:
    return [p for p in _LIVE if p.alive()]
