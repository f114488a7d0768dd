"""A RecoveryExecutionJob's status as the typed model: pure functions, no I/O.

The job writes only what these return (:class:`schemas.api.RecoveryExecutionJobStatus`), so what
``kubectl get rej`` shows has one shape, checked by the model, across restarts and versions."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from schemas import api
from services.common import plans

log = logging.getLogger(__name__)


def recorded(raw: Mapping[str, Any] | None) -> api.RecoveryExecutionJobStatus:
    """The status a job carries (written by an earlier run, perhaps of an operator that was killed);
    one that does not parse starts afresh (the job is idempotent)."""
    try:
        return api.RecoveryExecutionJobStatus.model_validate(dict(raw or {}))
    except ValidationError as exc:
        log.warning("the job's recorded status does not parse; starting afresh: %s", exc)
        return api.RecoveryExecutionJobStatus()


def progress(done: int, total: int) -> api.Progress:
    return api.Progress(done=done, total=total, summary=f"{done}/{total}")


def waves_of(rep: api.RecoveryExecutionPlanSpec, recorded: Sequence[api.WaveResult]) -> list[api.WaveResult]:
    """The waves' results so far: as recorded when they are the plan's waves, else new."""
    if [w.name for w in recorded] == [w.name for w in rep.waves]:
        return list(recorded)
    return [api.WaveResult(name=w.name) for w in rep.waves]


def reported(results: Sequence[api.ObjectResult], limit: int) -> list[api.ObjectResult]:
    """What the status lists of the objects: failures first, at most ``limit``."""
    failures = [r for r in results if r.outcome == "Failed"]
    return (failures + [r for r in results if r.outcome != "Failed"])[:limit]


def outcome(*, failed: int, total: int, dry_run: bool) -> tuple[api.JobPhase, str]:
    phase: api.JobPhase = "Completed" if not failed else ("Failed" if failed >= total > 0 else "PartiallyFailed")
    summary = f"{total} objects, {failed} failed" + (" (dry run: nothing changed)" if dry_run else "")
    return phase, summary


def complete(ok: bool, reason: str, message: str) -> api.Condition:
    return api.Condition(type="Complete", status="True" if ok else "False", reason=reason, message=message[:1000],
                         last_transition_time=plans.now_iso())
