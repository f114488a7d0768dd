"""Every benchmark docs/benchmarks.md shows runs and prints its JSON result line: each script, as
the docs run it (`cd benchmarks && ../.venv/bin/python NAME.py`), at the smallest sizes its options
allow, so a benchmark cannot rot between the sessions that measure with it. The figures of a run
this small mean nothing (targets may be missed: exit 1 then); a crash, or no result line, fails."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SMALL = {
    "transforms.py": ["--seconds", "0.2"],
    "watcher.py": ["--rate", "20", "--seconds", "2", "--burst", "50"],
    "sync.py": ["--objects", "100", "--rounds", "1", "--rate", "10", "--seconds", "3", "--memory-objects", "200"],
    "activation.py": ["--deployments", "10", "--rounds", "1"],
    "clients.py": ["--objects", "50", "--rounds", "1"],
    "fences.py": ["--deployments", "20", "--fences", "1,3", "--rounds", "1"],
    "history.py": ["--objects", "100", "--states", "2", "--changes", "50"],
    "patches.py": ["--deployments", "20", "--rounds", "1"],
    "rebuild.py": ["--objects", "100", "--rounds", "1"],
    "replication.py": ["--objects", "100", "--rate", "10", "--seconds", "3"],
    "scale.py": ["--objects", "300", "--plans", "3", "--rate", "10", "--seconds", "3"],
}


def test_every_benchmark_in_the_docs_is_smoke_tested() -> None:
    text = (BENCHMARKS.parent / "docs" / "benchmarks.md").read_text()
    shown = set(re.findall(r"\.\./\.venv/bin/python (\w+\.py)", text))
    assert shown == set(SMALL), shown ^ set(SMALL)


def run_small(script: str, *extra: str) -> dict[str, Any]:
    """Run ``script`` at its smallest sizes (and ``extra`` options); its JSON result line."""
    done = subprocess.run([sys.executable, script, *SMALL[script], *extra], cwd=BENCHMARKS, capture_output=True,
                          text=True, timeout=240, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode in (0, 1) and lines, f"{script} exited {done.returncode}:\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@pytest.mark.parametrize("script", sorted(SMALL))
def test_a_benchmark_runs_and_prints_its_result(script: str) -> None:
    result = run_small(script)
    assert result["benchmark"] == script.removesuffix(".py"), result


def test_scale_profiles_the_stand_by_api_server_on_cpus_of_its_own(tmp_path: Path) -> None:
    """`scale.py --profile-into DIR` (docs/benchmarks.md reads its profiles with go tool pprof) and
    `--standby-cpus 1`: the stand-by's API server on one CPU, the pipeline on the others."""
    result = run_small("scale.py", "--first-copy-only", "--profile-into", str(tmp_path), "--profile-seconds", "1",
                       "--standby-cpus", "1")
    assert "first_copy" in result and "restart" not in result, result
    cpus = result["cpus"]
    assert len(cpus["standby"]) == 1 and cpus["others"] and not set(cpus["standby"]) & set(cpus["others"]), cpus
    for phase in ("raw", "first_copy"):
        assert (tmp_path / f"{phase}.pprof").read_bytes()[:2] == b"\x1f\x8b", phase  # a gzipped pprof profile


def test_activation_profiles_the_stand_by_api_server(tmp_path: Path) -> None:
    """`activation.py --profile-into DIR`: a profile per measurement, the job's included."""
    run_small("activation.py", "--profile-into", str(tmp_path), "--profile-seconds", "1")
    for name in ("act-0", "base-0", "fenced", "unfenced"):
        assert (tmp_path / f"{name}.pprof").read_bytes()[:2] == b"\x1f\x8b", name
