"""Runs Rebuild resources: the syncer has what a rebuild needs (the plans, the stream, the stand-by's
write credentials), so a rebuild also runs from GitOps or ``kubectl create``.

Each Rebuild not yet finished is run once, in a supervised task (:func:`services.common.rebuilding.rebuild`);
its status is written from :class:`schemas.api.RebuildStatus` as it goes (phase, the moment, the
earliest moment available, progress, counts, the failed steps) and each stage is an Event. A
syncer that restarts finds a Rebuild still Running and runs it again: a rebuild is idempotent (what
was written compares unchanged), and a plan the interrupted run paused is resumed as the run
would have."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext

from schemas import API_VERSION, api, rebuilds
from services.common import events, history, plans, rebuilding
from services.common.guarding import Guard
from services.common.keys import StreamKeys
from services.common.kube import ApiError, KubeClient, UnreachableError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MAX_RESULTS = 200
STATUS_EVERY_SECONDS = 1.0


def involved(obj: Obj) -> events.Involved:
    meta = obj["metadata"]
    return events.Involved("Rebuild", meta["namespace"], meta["name"], meta.get("uid", ""))


def request_of(obj: Obj, plan: plans.Plan, prefix: str) -> rebuilding.Request:
    spec = api.RebuildSpec.model_validate(obj.get("spec") or {})
    sel = spec.selection
    selection = rebuilds.Selection.of(namespaces=sel.namespaces, resources=sel.resources, names=sel.names,
                                      labels=sel.selector)
    at = history.parse_rfc3339(spec.at) if spec.at else None
    return rebuilding.Request(plan, at, spec.mode, selection, spec.prune, prefix)


def results(done: rebuilding.Done) -> list[api.RebuildResult]:
    if done.outcomes is None:
        return [api.RebuildResult(ref=str(s.key), action=s.action, outcome="WouldChange", fields=list(s.fields[:20]))
                for s in done.prepared.steps if s.action != "unchanged"][:MAX_RESULTS]
    return [api.RebuildResult(ref=str(o.step.key), action=o.step.action, outcome="Failed", message=o.message)
            for o in done.outcomes if not o.ok][:MAX_RESULTS]


@dataclass
class RebuildRunner:
    own: KubeClient
    js: JetStreamContext
    keys: StreamKeys
    guard: Guard
    prefix: str
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def sync_once(self, serves: Callable[[str], bool]) -> None:
        """Run the unfinished Rebuilds of the plans ``serves`` says this replica serves."""
        try:
            listed = (await self.own.get(f"/apis/{API_VERSION}/rebuilds"))["items"]
        except ApiError as exc:
            if exc.not_found:  # the Rebuild CRD is not installed (an older install)
                return
            raise
        for obj in listed:
            meta = obj["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            phase = (obj.get("status") or {}).get("phase", "Pending")
            ref = (obj.get("spec") or {}).get("recoveryPlanRef") or {}
            plan = f"{ref.get('namespace') or meta['namespace']}/{ref.get('name', '')}"
            if phase in api.TERMINAL_PHASES or key in self.running or not serves(plan):
                continue
            self.running[key] = self.guard.start(f"rebuild {key}", functools.partial(self._run_once, obj, key),
                                                 kind="rebuild", plan=key, until_done=True)

    async def _run_once(self, obj: Obj, key: str) -> None:
        try:
            await self.run(obj)
        finally:
            self.running.pop(key, None)

    async def stop(self) -> None:
        for task in self.running.values():
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)
        self.running.clear()

    async def run(self, obj: Obj) -> None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        earlier = api.RebuildStatus.model_validate(obj.get("status") or {})
        status = earlier.model_copy(update={"phase": "Running", "start_time": earlier.start_time or plans.now_iso()})
        await self._write(namespace, name, status)
        if earlier.phase == "Running":  # this syncer, or another, stopped in the middle of it
            await events.record(self.own, involved(obj), type_="Normal", reason="RebuildResumed", message=(
                f"run again after an interruption at {earlier.done}/{earlier.total} steps; what the interrupted run "
                f"wrote compares unchanged now"), component="standby-syncer")
        last_write = time.monotonic()
        taken = api.RebuildCounts()
        failures: list[api.RebuildResult] = []

        async def say(text: str) -> None:
            nonlocal status
            status = status.model_copy(update={"message": text[:1000]})
            await events.record(self.own, involved(obj), type_="Normal", reason="Rebuilding", message=text[:1000],
                                component="standby-syncer")
            await self._write(namespace, name, status)

        async def step_done(outcome: rebuilding.Outcome, done: int, total: int) -> None:
            """The status follows the steps taken (written at most every STATUS_EVERY_SECONDS): an
            interrupted rebuild's status says how far it got and what it did until then."""
            nonlocal status, last_write, taken
            if outcome.ok:
                taken = taken.model_copy(update={outcome.step.action: getattr(taken, outcome.step.action) + 1})
            else:
                taken = taken.model_copy(update={"failed": taken.failed + 1})
                if len(failures) < MAX_RESULTS:
                    failures.append(api.RebuildResult(ref=str(outcome.step.key), action=outcome.step.action,
                                                      outcome="Failed", message=outcome.message))
            status = status.model_copy(update={"done": done, "total": total, "summary": f"{done}/{total}",
                                               "counts": taken, "results": list(failures)})
            if time.monotonic() - last_write >= STATUS_EVERY_SECONDS or done == total:
                last_write = time.monotonic()
                await self._write(namespace, name, status)

        try:
            spec = api.RebuildSpec.model_validate(obj.get("spec") or {})
            ref = spec.recovery_plan_ref
            plan = plans.parse_plan(await self.own.get(rebuilding.plan_path(ref.namespace or namespace, ref.name)))
            if earlier.paused_plan:
                status = status.model_copy(update={"paused_plan": True})
            done = await rebuilding.rebuild(
                self.own, self.js, self.keys, request_of(obj, plan, self.prefix),
                target_cluster=spec.target_cluster_ref.name if spec.target_cluster_ref else None,
                dry_run=spec.dry_run, say=say, step_done=step_done, was_paused=earlier.paused_plan)
        except (rebuilding.RebuildError, plans.PlanError, ApiError, UnreachableError, ValueError) as exc:
            message = exc.message if isinstance(exc, plans.PlanError) else str(exc)
            status = status.model_copy(update={"phase": "Failed", "message": message[:1000],
                                               "completion_time": plans.now_iso()})
            await self._write(namespace, name, status)
            await events.record(self.own, involved(obj), type_="Warning", reason="RebuildFailed",
                                message=message[:1000], component="standby-syncer")
            return
        counted = rebuilding.counts(done.outcomes) if done.outcomes is not None else rebuilds.summary(
            done.prepared.steps)
        failed = int(counted.get("failed", 0))
        status = status.model_copy(update={
            "phase": "PartiallyFailed" if failed else "Completed",
            "at": history.rfc3339(done.state.at),
            "earliest_available": history.rfc3339(done.state.earliest) if done.state.earliest is not None else None,
            "target": done.target, "total": len(done.prepared.steps),
            "done": len(done.prepared.steps) if done.outcomes is not None else 0,
            "summary": f"{len(done.prepared.steps) if done.outcomes is not None else 0}/{len(done.prepared.steps)}",
            "counts": api.RebuildCounts(**{k: int(v) for k, v in counted.items()}),
            "results": results(done), "paused_plan": done.left_suspended,
            "completion_time": plans.now_iso()})
        await self._write(namespace, name, status)
        verdict = ", ".join(f"{n} {what}" for what, n in counted.items())
        await events.record(self.own, involved(obj), type_="Warning" if failed else "Normal",
                            reason="RebuildPartiallyFailed" if failed else "RebuildCompleted", message=verdict,
                            component="standby-syncer")

    async def _write(self, namespace: str, name: str, status: api.RebuildStatus) -> None:
        await plans.patch_status(self.own, "rebuilds", namespace, name,
                                 status.model_dump(by_alias=True, exclude_none=True, mode="json"))
