"""A plan's status as the syncer sees it, computed from what it knows: a pure function.

Nothing reads "in sync" that is unknown: while the stream cannot be read, the count of changes not
yet applied and the age of the oldest one are absent and ``Synced`` is ``Unknown``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from schemas import annotations as ann
from schemas import api
from services.syncer.progress import PlanProgress


@dataclass(frozen=True)
class Observed:
    """What the consumer knows beyond the progress: the stream, the breaker, the fence."""

    generation: int
    stream_reachable: bool
    undelivered: int  # in the stream, not yet delivered to the syncer
    breaker: api.DeleteBreakerStatus
    fenced: bool
    fence_fresh: bool = True
    now: float = 0.0


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def _condition(type_: str, status: bool | None, reason: str, message: str = "") -> api.Condition:
    return api.Condition(type=type_, status="Unknown" if status is None else str(status),
                         reason=reason, message=message)


MAX_SHOWN = 20  # dead letters listed in the status (the newest); objectsFailed counts them all


def plan_status(progress: PlanProgress, seen: Observed) -> api.RecoveryPlanStatus:
    failed = len(progress.failed)
    # Delivered and not yet settled (in a worker, or nak'd and waiting to come again), and not
    # yet delivered at all.
    out_of_sync = seen.undelivered + len(progress.unapplied) if seen.stream_reachable else None
    if seen.breaker.open:
        degraded = _condition("Degraded", True, "DeleteBreakerOpen",
                              f"mass deletion refused since {seen.breaker.opened_at}; check the source, then set "
                              f"the annotation {ann.DELETE_BREAKER_RESET} on this plan to a new value to let the "
                              "deletions through")
    elif not seen.stream_reachable:
        degraded = _condition("Degraded", True, "StreamUnreachable", "the stream cannot be read")
    elif not seen.fence_fresh:
        degraded = _condition("Degraded", True, "FenceUnknown",
                              "the fences in the destination cannot be read; no copy is written until they can")
    elif failed:
        examples = ", ".join(f"{key} ({letter.reason})" for key, letter in sorted(progress.failed.items())[:3])
        degraded = _condition("Degraded", True, "DeadLetters", f"{failed} objects failed: {examples}")
    else:
        degraded = _condition("Degraded", False, "Healthy")
    if out_of_sync is None:
        synced = _condition("Synced", None, "StreamUnreachable", "how many changes wait is unknown")
    elif out_of_sync:
        # No count in the message: it would change with every change applied, and a message that
        # changes makes every status write read the plan first to merge the conditions (the counts
        # are objectsOutOfSync and objectsFailed).
        synced = _condition("Synced", False, "CatchingUp", "changes are waiting to be applied" +
                            (f", {failed} failed" if failed else ""))
    elif failed:
        synced = _condition("Synced", False, "DeadLetters", f"0 changes pending, {failed} failed")
    else:
        synced = _condition("Synced", True, "UpToDate", "0 changes pending, 0 failed")
    stream = _condition("StreamReachable", seen.stream_reachable,
                        "Connected" if seen.stream_reachable else "Disconnected")
    if seen.fenced:
        phase = "Activated"
    elif degraded.status == "True":
        phase = "Degraded"
    else:
        phase = "Synced" if out_of_sync == 0 else "Syncing"
    return api.RecoveryPlanStatus(
        phase=phase,
        conditions=[synced, degraded, stream],
        objects_in_sync=len(progress.copies) - sum(1 for key in progress.failed if key in progress.copies),
        objects_out_of_sync=out_of_sync,
        objects_failed=failed,
        stream_sequence=progress.last_sequence,
        replication_lag_seconds=round(progress.last_lag_seconds, 3) if progress.last_lag_seconds is not None else None,
        pending_change_age_seconds=round(progress.oldest_unapplied_age(seen.now), 3) if seen.stream_reachable else None,
        last_event_time=_iso(progress.last_applied_at) if progress.last_applied_at else None,
        observed_generation=seen.generation,
        delete_breaker=seen.breaker,
        dead_letters=[api.DeadLetterStatus(ref=str(key), reason=letter.reason, message=letter.detail[:500],
                                           sequence=letter.sequence, time=_iso(letter.at))
                      for key, letter in sorted(progress.failed.items(), key=lambda kv: -kv[1].at)[:MAX_SHOWN]],
    )


# What changes with every change applied. A status that differs from the last one written only in
# these is written at most every ``status_progress_seconds`` (:func:`due`).
PROGRESS_FIELDS = ("objects_in_sync", "objects_out_of_sync", "stream_sequence", "replication_lag_seconds",
                   "pending_change_age_seconds", "last_event_time")


def due(last: api.RecoveryPlanStatus | None, status: api.RecoveryPlanStatus, *, since_written: float,
        progress_every: float) -> bool:
    """Whether ``status`` is to be written now, ``since_written`` seconds after ``last`` was: at
    once when anything but the progress changed (a condition, the phase, a dead letter, the
    breaker), the progress alone at most every ``progress_every`` seconds. A first copy of 5,000
    objects otherwise wrote every plan's status every tick, each write a request the stand-by's API
    server serves among the copies' (docs/benchmarks.md, "Scale")."""
    if last is None:
        return True
    if status == last:
        return False
    unset = dict.fromkeys(PROGRESS_FIELDS)
    return status.model_copy(update=unset) != last.model_copy(update=unset) or since_written >= progress_every


EventKind = Literal["Normal", "Warning"]


def status_events(before: api.RecoveryPlanStatus | None,
                  after: api.RecoveryPlanStatus) -> list[tuple[EventKind, str, str]]:
    """(type, reason, message) of the Events a change of the plan's status is told by: the delete
    breaker opening and being reset, and each new dead letter. ``before`` None: the consumer just
    started, and a breaker already open (restored) is told again."""
    told: list[tuple[EventKind, str, str]] = []
    was_open = bool(before and before.delete_breaker and before.delete_breaker.open)
    now_open = bool(after.delete_breaker and after.delete_breaker.open)
    if now_open and not was_open:
        told.append(("Warning", "DeleteBreakerOpened",
                     f"mass deletion refused since {after.delete_breaker.opened_at if after.delete_breaker else '?'}; "
                     f"check the source, then `standby breaker reset` or fail over"))
    elif was_open and not now_open:
        told.append(("Normal", "DeleteBreakerReset", "the held deletions go through"))
    seen = {(d.ref, d.time) for d in (before.dead_letters if before else [])}
    fresh = [d for d in after.dead_letters if (d.ref, d.time) not in seen]
    if fresh:
        listed = ", ".join(f"{d.ref} ({d.reason})" for d in fresh[:5]) + (
            f" and {len(fresh) - 5} more" if len(fresh) > 5 else "")
        told.append(("Warning", "DeadLettered", f"changes refused for good: {listed}; `standby dlq list`"))
    return told
