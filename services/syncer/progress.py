"""What the syncer knows of one plan's objects: the one owner of that state, keyed by ObjectKey.

- the copies in the destination (what each records: source version, uid, the inverse), filled by
  the warm-up LIST and by every write, so most messages need no read;
- the objects whose last change was dead-lettered, until a later change of the same object is
  applied (or its copy deleted);
- the changes delivered but not yet applied (by stream sequence, with the time the stream stored
  them), from which the age of the oldest change not yet applied is computed.

No I/O; the status the plan shows is computed from it (:mod:`services.syncer.status`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.subjects import ObjectKey

Op = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Copy:
    """What a destination copy records."""

    resource_version: int | None
    inverse: list[Op] | None
    source_uid: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why an object's last change was not applied, and where that change is in the stream."""

    reason: str
    detail: str = ""
    subject: str = ""  # the change's subject: `standby dlq retry` publishes its last state again
    sequence: int = 0
    at: float = 0.0  # unix time


@dataclass
class PlanProgress:
    copies: dict[ObjectKey, Copy] = field(default_factory=dict)
    failed: dict[ObjectKey, DeadLetter] = field(default_factory=dict)  # the last dead letter of each
    unapplied: dict[int, float] = field(default_factory=dict)  # stream sequence -> stored at (unix time)
    last_sequence: int = 0  # the highest stream sequence settled
    last_applied_at: float = 0.0  # unix time of the last write
    last_lag_seconds: float | None = None  # source observed -> applied, of the last write

    # -- a message's way through ----------------------------------------------------------------
    def delivered(self, sequence: int, stored_at: float) -> None:
        """Delivered to the syncer (again, after a nak: it stays unapplied meanwhile)."""
        self.unapplied[sequence] = stored_at

    def settled(self, sequence: int) -> None:
        """Acknowledged: applied, skipped (stale, fenced, not ours) or dead-lettered."""
        self.unapplied.pop(sequence, None)
        self.last_sequence = max(self.last_sequence, sequence)

    def wrote(self, key: ObjectKey, copy: Copy | None, *, observed_at: float, now: float) -> None:
        """The copy of ``key`` now reflects its latest change (``None``: it was deleted)."""
        if copy is None:
            self.copies.pop(key, None)
        else:
            self.copies[key] = copy
        self.failed.pop(key, None)
        self.last_applied_at = now
        self.last_lag_seconds = max(0.0, now - observed_at)

    def dead_lettered(self, key: ObjectKey | None, letter: DeadLetter) -> None:
        """``key`` None: the message named no object (its subject is not one of ours)."""
        if key is not None:
            self.failed[key] = letter

    def forget_dead_letters(self) -> int:
        """An operator accepted them (``standby dlq purge``): the objects count as settled."""
        count = len(self.failed)
        self.failed.clear()
        return count

    # -- what the status reads ------------------------------------------------------------------
    def oldest_unapplied_age(self, now: float) -> float:
        """Seconds since the stream stored the oldest change not yet applied; 0 when in step."""
        return max(0.0, now - min(self.unapplied.values())) if self.unapplied else 0.0
