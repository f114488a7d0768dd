"""The history keeper: holds a plan's stream to ``spec.history.maxAge`` without ever losing the
state a rebuild needs.

The stream has no ``max_age`` (the server would drop an object's latest state with it). Instead,
every ``history_compact_seconds`` the keeper picks a cut (now - maxAge) and, per object, drops the
states stored before the cut **except the last one** (the object's state at the cut, its latest if
it has not changed since), and a tombstone before the cut together with the states it ends (the
object did not exist at the cut). A rebuild as of any moment after the cut then finds every
object's state. The cut is recorded first, on the plan's horizon subject (the earliest moment a
rebuild can reach), then the states go: a keeper stopped in between claims less history than the
stream holds, never more; a keeper that does not run keeps everything (bounded by
``statesPerObject``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import nats.errors
from nats.js import JetStreamContext

from schemas import subjects
from schemas.envelope import EventType
from services.common import plans, streams
from services.common.history import HDR_HORIZON, recorded_horizon, rfc3339

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0  # after a pass the broker did not answer


@dataclass
class Before:
    """An object's states stored before the cut: how many, and the last one."""

    count: int = 0
    last_sequence: int = 0
    last_type: str = ""


def purges(before: dict[str, Before]) -> dict[str, int]:
    """Pure: per subject, the sequence below which its states go (``purge`` keeps that one on)."""
    out = {}
    for subject, seen in before.items():
        if seen.last_type == EventType.DELETE.value:
            out[subject] = seen.last_sequence + 1  # absent at the cut: the tombstone and all it ends
        elif seen.count > 1:
            out[subject] = seen.last_sequence
    return out


def states_before(scanned: Iterable[streams.Scanned]) -> dict[str, Before]:
    before: dict[str, Before] = {}
    for msg in scanned:
        seen = before.setdefault(msg.subject, Before())
        seen.count += 1
        seen.last_sequence, seen.last_type = msg.sequence, msg.headers.get(streams.HDR_TYPE, "")
    return before


@dataclass
class HistoryKeeper:
    plan: plans.Plan
    js: JetStreamContext
    prefix: str
    clock: Callable[[], float] = time.time

    @property
    def stream(self) -> str:
        return subjects.stream_name(self.plan.namespace, self.plan.name)

    async def run(self, every_seconds: float) -> None:
        while True:
            try:
                await self.compact()
            except (nats.errors.Error, TimeoutError) as exc:
                # A busy or lost broker is not the keeper's defect: nothing is dropped before the
                # horizon is recorded, so the next pass, soon, starts over.
                retry = min(every_seconds, RETRY_SECONDS)
                log.warning("history not compacted now, again in %.0f s: %r", retry, exc, extra={"plan": self.plan.key})
                await asyncio.sleep(retry)
                continue
            await asyncio.sleep(every_seconds)

    async def compact(self) -> int:
        """One pass; the number of objects whose older states were dropped."""
        max_age = self.plan.spec.history.max_age_seconds
        if max_age <= 0:
            return 0
        horizon = subjects.horizon_subject(self.prefix, self.plan.namespace, self.plan.name)
        cut = self.clock() - max_age
        earlier = await recorded_horizon(self.js, self.stream, horizon)
        if earlier is not None and earlier > cut:  # maxAge grew: what went before stays gone
            cut = earlier
        scanned = [m async for m in streams.scan(self.js, self.stream, subjects.plan_filter(
            self.prefix, self.plan.namespace, self.plan.name), headers_only=True, until=cut)]
        todo = purges(states_before(scanned))
        if not todo:
            return 0
        await self.js.publish(horizon, b"", headers={HDR_HORIZON: rfc3339(cut)}, stream=self.stream)
        for subject, below in todo.items():
            await self.js.purge_stream(self.stream, subject=subject, seq=below)
        log.info("history before %s dropped for %d objects", rfc3339(cut), len(todo), extra={"plan": self.plan.key})
        return len(todo)
