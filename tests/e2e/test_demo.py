"""The README's first command, as the README gives it: `make demo` starts its own clusters and NATS,
runs the three services, copies the sample shop deactivated, fails over, and says it succeeded."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_tells_the_whole_story_and_succeeds(tmp_path: Path) -> None:
    # --no-print-directory: run from `make test` (CI), make would announce the directory around it.
    ran = subprocess.run(["make", "--no-print-directory", "demo", f"DEMO_ARGS=--dir {tmp_path / 'demo'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    out = ran.stdout
    assert ran.returncode == 0 and out.rstrip().splitlines()[-1] == "Demo succeeded.", (
        ran.returncode, out[-3000:], ran.stderr[-3000:])
    for stage in ("[1/5] Starting local clusters", "[2/5] Applying the sample shop", "plan status: Synced",
                  "[3/5] A change in the source follows", "[4/5] Disaster: failing over", "Completed 9/9",
                  "deployment web       replicas 5, available 5", "Stopped everything."):
        assert stage in out, (stage, out)
