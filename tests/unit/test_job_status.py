"""A recovery job's status, computed as the typed model (no servers)."""

from __future__ import annotations

import pytest

from schemas import api
from services.recovery import status

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("failed", "total", "dry_run", "phase", "summary"), [
    pytest.param(0, 10, False, "Completed", "10 objects, 0 failed", id="completed"),
    pytest.param(3, 10, False, "PartiallyFailed", "10 objects, 3 failed", id="partial"),
    pytest.param(10, 10, False, "Failed", "10 objects, 10 failed", id="all-failed"),
    pytest.param(0, 0, False, "Completed", "0 objects, 0 failed", id="nothing-to-do"),
    pytest.param(0, 4, True, "Completed", "4 objects, 0 failed (dry run: nothing changed)", id="dry-run"),
])
def test_outcome(failed: int, total: int, dry_run: bool, phase: str, summary: str) -> None:
    assert status.outcome(failed=failed, total=total, dry_run=dry_run) == (phase, summary)


def test_failures_are_reported_first_and_bounded() -> None:
    results = [api.ObjectResult(plan="p", ref=f"r{i}", outcome="Failed" if i % 3 == 0 else "Activated")
               for i in range(10)]
    shown = status.reported(results, limit=5)
    assert [r.ref for r in shown] == ["r0", "r3", "r6", "r9", "r1"]


def test_a_recorded_status_resumes_and_a_foreign_one_starts_afresh() -> None:
    written = api.RecoveryExecutionJobStatus(phase="Activating", progress=status.progress(3, 9), epoch=4,
                                             waves=[api.WaveResult(name="db", phase="Running", total=9)])
    resumed = status.recorded(written.model_dump(by_alias=True, exclude_none=True, mode="json"))
    assert resumed == written and resumed.progress.summary == "3/9"
    assert status.recorded({"phase": "Exploded"}) == api.RecoveryExecutionJobStatus()
    rep = api.RecoveryExecutionPlanSpec(waves=[api.Wave(name="db", recovery_plans=[api.ObjectRef(name="p")])])
    assert status.waves_of(rep, resumed.waves) == resumed.waves
    other = api.RecoveryExecutionPlanSpec(waves=[api.Wave(name="web", recovery_plans=[api.ObjectRef(name="p")])])
    assert status.waves_of(other, resumed.waves) == [api.WaveResult(name="web")]
