"""What a plan's status says about its source, kept true within seconds.

- ``SourceReachable`` follows a probe of the source every ``source_probe_seconds``: an outage is
  one warning when it starts and one when it ends (with its duration), an Event each, and the
  plan's watches retry at once when the source is back instead of waiting out their backoff.
- ``ResourcesWatched`` names every selected resource that cannot be watched and why (not served,
  forbidden), with an Event when a resource stops or starts being watched.
- A CRD created or changed in the source wakes the watches of resources it does not serve yet, so
  a kind is watched within seconds of being served."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas import api
from services.common import events, kube, plans
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.watcher import metrics
from services.watcher.settings import WatcherSettings
from services.watcher.watching import ResourceWatch

log = logging.getLogger(__name__)
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def watches_condition(problems: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """The ``ResourcesWatched`` condition for the problems of a plan's watches (name -> (reason, message))."""
    if not problems:
        return plans.condition("ResourcesWatched", True, "AllWatched", "every selected resource is watched")
    reasons = sorted({reason for reason, _ in problems.values()})
    detail = "; ".join(f"{name}: {message}" for name, (_, message) in sorted(problems.items()))
    return plans.condition("ResourcesWatched", False, reasons[0] if len(reasons) == 1 else "Several",
                           f"{len(problems)} selected resources are not watched: {detail}")


@dataclass
class PlanHealth:
    plan: plans.Plan
    own: KubeClient
    source: KubeClient
    watches: Sequence[ResourceWatch]
    settings: WatcherSettings
    reachable: bool = True
    lost_at: float | None = None  # monotonic
    heard_at: str | None = None  # RFC 3339: the last answer
    heard_written: float = float("-inf")  # monotonic: when heard_at was last written
    reported: dict[str, tuple[str, str]] = field(default_factory=dict)

    async def _emit(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        await events.record(self.own, events.Involved.plan(self.plan), type_=type_, reason=reason, message=message,
                            component="standby-watcher")

    # -- the source -----------------------------------------------------------------------------
    async def probe(self) -> None:
        """Until cancelled: ask the source whether it answers, and say so when that changes; while
        it answers, record when it was last heard from every ``source_heard_write_seconds``."""
        while True:
            try:
                answer = await self.source.request("GET", "/version", timeout=self.settings.source_probe_seconds * 2)
            except (ApiError, UnreachableError) as exc:
                await self._lost(exc)
            else:
                await self._answered(str(answer.get("gitVersion", "")))
            await asyncio.sleep(self.settings.source_probe_seconds)

    async def _lost(self, exc: Exception) -> None:
        metrics.source_reachable(self.plan.key, False)
        if not self.reachable:
            return
        self.reachable, self.lost_at = False, time.monotonic()
        log.warning("source %s does not answer: %s", self.source.creds.server, exc, extra={"plan": self.plan.key})
        await self._write(False, "Unreachable", f"no answer since {self.heard_at or 'the start'}: {exc}")
        await self._emit("Warning", "SourceLost", f"the source {self.source.creds.server} does not answer: {exc}")

    async def _answered(self, version: str) -> None:
        metrics.source_reachable(self.plan.key, True)
        now = time.monotonic()
        self.heard_at = plans.now_iso()
        if self.reachable:
            if now - self.heard_written >= self.settings.source_heard_write_seconds:
                await self._write(True, "Connected", f"source {version}")
            return
        lasted = now - (self.lost_at or now)
        self.reachable, self.lost_at = True, None
        log.warning("source %s answers again after %.1fs", self.source.creds.server, lasted,
                    extra={"plan": self.plan.key})
        for watch in self.watches:
            watch.wake.set()  # retry now, not after the backoff
        await self._write(True, "Connected", f"source {version}")
        await self._emit("Normal", "SourceBack", f"the source answers again after {lasted:.0f}s")

    async def _write(self, reachable: bool, reason: str, message: str) -> None:
        await plans.write_plan_status(self.own, self.plan, api.RecoveryPlanStatus(
            conditions=[api.Condition(type="SourceReachable", status="True" if reachable else "False", reason=reason,
                                      message=message[:1000])],
            source_last_heard_time=self.heard_at))
        self.heard_written = time.monotonic()

    # -- the watches ----------------------------------------------------------------------------
    async def report(self, interval_seconds: float = 1.0) -> None:
        """Until cancelled: keep ``ResourcesWatched`` and the Events in step with the watches."""
        await plans.set_plan_conditions(self.own, self.plan, [watches_condition({})])
        while True:
            await asyncio.sleep(interval_seconds)
            problems = {w.name: w.problem for w in self.watches if w.problem is not None}
            if problems == self.reported:
                continue
            for name, (reason, message) in problems.items():
                if self.reported.get(name) != (reason, message):
                    await self._emit("Warning", "ResourceNotWatched", f"{name}: {message}")
            for name in self.reported.keys() - problems.keys():
                await self._emit("Normal", "ResourceWatched", f"{name} is watched")
            await plans.set_plan_conditions(self.own, self.plan, [watches_condition(problems)])
            self.reported = problems

    async def follow_crds(self) -> None:
        """Until cancelled: wake the watches of resources not served yet whenever a CRD changes."""
        def changed(type_: str, obj: dict[str, Any]) -> None:
            for watch in self.watches:
                if watch.problem is not None and watch.problem[0] == "NotServed":
                    watch.wake.set()

        await kube.follow(self.source, CRDS, listed=lambda items: None, changed=changed,
                          retry_seconds=self.settings.backoff_max_seconds, what="CRDs in the source",
                          level=logging.INFO)
