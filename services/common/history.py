"""Reading a plan's stream as a time machine: every object's state as of a moment, one object's
states, and the earliest moment a rebuild can reach.

The stream holds, per object, its states since the plan's history horizon (see
:mod:`services.watcher.history`, which keeps it) and always its latest. The state of an object as
of a moment is its last change stored **at or before** that moment (inclusive); a deletion there
means the object did not exist then. A moment is reachable when it is not before the horizon and
no object's count limit (``statesPerObject``) has dropped a state it would need."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import nats.js.errors
from nats.js import JetStreamContext

from schemas import subjects
from services.common import streams

HDR_HORIZON = "Standby-Horizon"  # RFC 3339: a rebuild can reach back to this moment


def rfc3339(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def recorded_horizon(js: JetStreamContext, stream: str, subject: str) -> float | None:
    """The earliest moment a rebuild of the stream's plan can reach, as last recorded (None: the
    keeper never dropped anything)."""
    try:
        raw = await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return None
    return parse_rfc3339((raw.headers or {})[HDR_HORIZON])


@dataclass
class AsOf:
    """Every object's last change at or before ``at`` (deletions included), with bodies."""

    at: float | None
    states: dict[str, streams.Scanned] = field(default_factory=dict)
    first_at: dict[str, float] = field(default_factory=dict)  # per subject: its oldest state kept

    def add(self, msg: streams.Scanned) -> None:
        self.states[msg.subject] = msg
        self.first_at.setdefault(msg.subject, msg.stored_at)

    def present(self) -> dict[str, streams.Scanned]:
        """The objects that existed at ``at``."""
        return {s: m for s, m in self.states.items() if m.headers.get(streams.HDR_TYPE) != "DELETE"}


@dataclass(frozen=True)
class Reach:
    """How far back a plan's stream reaches."""

    horizon: float | None  # recorded by the history keeper (None: nothing dropped by age)
    first_change: float | None  # the plan's oldest change kept (None: an empty stream)
    capped: frozenset[str]  # objects holding statesPerObject states: older ones may have been dropped

    def missing(self, at: float, first_at: dict[str, float]) -> str | None:
        """Pure: why the state as of ``at`` cannot be told exactly (None: it can). ``first_at``:
        the oldest state kept of each object that has one at or before ``at``."""
        if self.horizon is not None and at < self.horizon:
            return f"the plan's history starts at {rfc3339(self.horizon)}"
        if self.first_change is None or at < self.first_change:
            return "the plan's stream holds no change that early"
        lost = sorted(s for s in self.capped if s not in first_at)
        if lost:
            return f"{len(lost)} objects kept only later states (statesPerObject), e.g. {lost[0]}"
        return None


async def as_of(js: JetStreamContext, stream: str, filter_subject: str, at: float | None) -> AsOf:
    """One pass over the stream, up to ``at`` (None: now)."""
    out = AsOf(at)
    async for msg in streams.scan(js, stream, filter_subject, until=at):
        out.add(msg)
    return out


async def reach(js: JetStreamContext, stream: str, *, prefix: str, plan_namespace: str, plan_name: str) -> Reach:
    filter_subject = subjects.plan_filter(prefix, plan_namespace, plan_name)
    info = await js.stream_info(stream, subjects_filter=filter_subject)
    cap = info.config.max_msgs_per_subject or -1
    counts = info.state.subjects or {}
    capped = frozenset(s for s, n in counts.items() if 0 < cap <= n)
    first = None
    if counts:
        oldest = await js.get_msg(stream, seq=1, subject=filter_subject, next=True)
        first = oldest.time.timestamp() if oldest.time else None
    horizon = await recorded_horizon(js, stream, subjects.horizon_subject(prefix, plan_namespace, plan_name))
    return Reach(horizon, first, capped)


async def earliest_moment(js: JetStreamContext, stream: str, reached: Reach, filter_subject: str) -> float | None:
    """The earliest moment whose state can be told exactly: after the horizon, the plan's first
    change, and the oldest state kept of every capped object (a headers-only pass)."""
    if reached.first_change is None:
        return None
    candidates = [reached.first_change] + ([reached.horizon] if reached.horizon is not None else [])
    if reached.capped:
        oldest: dict[str, float] = {}
        async for msg in streams.scan(js, stream, filter_subject, headers_only=True):
            if msg.subject in reached.capped:
                oldest.setdefault(msg.subject, msg.stored_at)
        candidates += oldest.values()
    return max(candidates)


async def object_states(js: JetStreamContext, stream: str, subject: str) -> list[streams.Scanned]:
    """Every state the stream holds of one object (``subject`` may have a wildcard, e.g. for the
    version), oldest first."""
    return [m async for m in streams.scan(js, stream, subject)]
