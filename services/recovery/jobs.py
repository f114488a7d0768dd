"""One RecoveryExecutionJob, as a resumable state machine: Pending -> Fencing -> Activating ->
Completed | PartiallyFailed | Failed.

Every step is idempotent and the progress lives in the job's status, so killing the operator at
any point and starting it again finishes the job without redoing or undoing work: fences are
re-written with the same epoch, and activated objects no longer look like copies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from schemas import API_VERSION, api
from schemas import annotations as ann
from services.common import fencing, plans
from services.common.kube import ApiError, KubeClient, ResourceInfo
from services.recovery import activating, metrics, status
from services.recovery.settings import RecoverySettings

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Notify = Callable[[str, str, str], None]  # (type, reason, message) -> a Kubernetes event


def now() -> str:
    return plans.now_iso()


@dataclass
class JobRun:
    client: KubeClient
    job: Obj
    settings: RecoverySettings
    stream: activating.StreamReader
    notify: Notify = lambda type_, reason, message: None
    status: api.RecoveryExecutionJobStatus = field(default_factory=api.RecoveryExecutionJobStatus)

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.job["metadata"]["namespace"])

    async def save(self, **fields: Any) -> None:
        """Set ``fields`` (the typed model's own attribute names and types) and write the status."""
        self.status = self.status.model_copy(update=fields)
        await plans.patch_status(self.client, "recoveryexecutionjobs", self.namespace, self.name,
                                 self.status.model_dump(by_alias=True, exclude_none=True, mode="json"))

    async def fail(self, reason: str, message: str) -> None:
        log.error("job failed: %s", message, extra={"job": self.name, "reason": reason})
        self.notify("Warning", reason, message)
        await self.save(phase="Failed", message=message, completion_time=now(),
                        conditions=[status.complete(False, reason, message)])

    async def run(self) -> None:
        self.status = status.recorded(self.job.get("status"))
        if self.status.phase in api.TERMINAL_PHASES:
            return
        started = time.monotonic()
        try:
            spec = api.RecoveryExecutionJobSpec.model_validate(self.job.get("spec") or {})
        except ValidationError as exc:
            await self.fail("InvalidSpec", str(exc))
            return
        ref = spec.recovery_execution_plan_ref
        try:
            rep_obj = await self.client.get(
                f"/apis/{API_VERSION}/namespaces/{ref.namespace or self.namespace}/recoveryexecutionplans/{ref.name}")
            rep = api.RecoveryExecutionPlanSpec.model_validate(rep_obj.get("spec") or {})
        except ApiError as exc:
            await self.fail("PlanNotFound", f"RecoveryExecutionPlan {ref.namespace or self.namespace}/{ref.name}: "
                                            f"{exc.message}")
            return
        except ValidationError as exc:
            await self.fail("InvalidPlan", str(exc))
            return
        if not self.status.start_time:
            self.notify("Normal", "Started", f"{'dry run' if spec.dry_run else 'failover'} of {ref.name}")
            await self.save(phase="Pending", start_time=now(), waves=[api.WaveResult(name=w.name) for w in rep.waves])
        plan_keys = [[f"{p.namespace or self.namespace}/{p.name}" for p in w.recovery_plans] for w in rep.waves]
        # Discovery runs while the fence settles; the copies are listed only once every syncer
        # honours the fence (a copy written or changed before that would otherwise be missed).
        discovery = asyncio.create_task(self.discover())
        try:
            if not spec.dry_run:
                await self.fence({k for keys in plan_keys for k in keys})
            resources = await discovery
        finally:
            discovery.cancel()
        await self.activate(rep, plan_keys, resources, dry_run=spec.dry_run)
        metrics.finished(time.monotonic() - started)
        if not spec.dry_run:
            metrics.failed_over([k for keys in plan_keys for k in keys])

    async def discover(self) -> list[ResourceInfo]:
        started = time.monotonic()
        resources = await activating.listable_resources(self.client)
        self.timed("discovery", started)
        return resources

    def timed(self, step: str, since: float, *, seconds: float | None = None) -> None:
        """Record how long a step took (status.timings: ``seconds``, or since ``since``) and log it."""
        seconds = round(time.monotonic() - since if seconds is None else seconds, 3)
        self.status = self.status.model_copy(update={"timings": {**self.status.timings, step: seconds}})
        log.info("%s took %.2fs", step, seconds, extra={"job": self.name})

    async def fence(self, plan_keys: set[str]) -> None:
        """Write every plan's fence and bind the fence policy to its copies, all plans at once, at
        one epoch recorded before any of them (a restarted operator writes the same again)."""
        started = time.monotonic()
        epoch = self.status.epoch
        if not epoch:
            existing = await self.client.list_all(f"/api/v1/namespaces/{self.settings.kube.namespace}/configmaps",
                                                  label_selector=f"{ann.FENCE_LABEL}=true")
            epoch = 1 + max((f.epoch for f in map(fencing.parse, existing[0]) if f is not None), default=0)
        await self.save(phase="Fencing", epoch=epoch)
        await asyncio.gather(*(fencing.write(self.client, self.settings.kube.namespace, key, epoch=epoch,
                                             job=self.name) for key in sorted(plan_keys)))
        self.timed("fence", started)
        self.notify("Normal", "Fenced", f"sync fenced for {len(plan_keys)} plans at epoch {epoch}")
        await self.in_force(plan_keys)

    async def in_force(self, plan_keys: set[str]) -> None:
        """Until no late change of the sync side can deactivate what is activated: the API server's
        fence policy refuses copies of every fenced plan (proven at once where it is installed), or
        else every syncer has seen the fence (``fence_settle_seconds``, longer than its staleness
        bound)."""
        started = time.monotonic()
        settle = self.settings.fence_settle_seconds
        if await fencing.enforced(self.client, self.settings.kube.namespace, plan_keys, timeout=settle):
            self.timed("fenceEnforced", started)
            return
        await asyncio.sleep(max(0.0, settle - (time.monotonic() - started)))
        self.timed("fenceSettled", started)

    async def activate(self, rep: api.RecoveryExecutionPlanSpec, plan_keys: list[list[str]],
                       resources: list[ResourceInfo], *, dry_run: bool) -> None:
        """Wave by wave, rank by rank, each rank's copies in parallel as their LIST pages arrive. The
        totals grow as the copies are found and are exact once the listing is complete."""
        started = time.monotonic()
        resumed = self.status.phase == "Activating"  # activated objects are no longer copies: not found again
        done_before = self.status.progress.done if resumed else 0
        results: list[api.ObjectResult] = list(self.status.objects) if resumed else []
        waves = status.waves_of(rep, self.status.waves)
        failed_total = sum(1 for r in results if r.outcome == "Failed")
        done = done_before
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def one(t: activating.Target) -> tuple[activating.Target, activating.Result]:
            async with gate:
                return t, await activating.activate_one(self.client, t, dry_run=dry_run, stream=self.stream)

        async with activating.Listing(self.client, {k for keys in plan_keys for k in keys}, resources,
                                      metadata_only=not dry_run) as listing:

            def totals(index: int, keys: list[str]) -> None:
                """The job's and the wave's totals as found so far (each wave's totals are its own)."""
                waves[index] = waves[index].model_copy(update={"total": waves[index].done + sum(
                    listing.found[k] for k in keys)})
                self.status = self.status.model_copy(update={"progress": status.progress(
                    done, done_before + sum(listing.found.values()))})

            await self.save(phase="Activating", progress=status.progress(done_before, done_before))
            for index, (wave, keys) in enumerate(zip(rep.waves, plan_keys, strict=True)):
                wave_started = time.monotonic()
                waves[index] = waves[index].model_copy(update={"phase": "Running"})
                mine: list[activating.Target] = []
                failed = 0
                for rank in listing.ranks:  # priority order, each rank in parallel
                    running: list[asyncio.Task[tuple[activating.Target, activating.Result]]] = []
                    try:
                        async for page in listing.pages(rank):
                            running += [asyncio.create_task(one(t)) for t in page if t.plan in keys]
                        outcomes = await asyncio.gather(*running)
                    finally:  # the listing failed: nothing goes on switching copies on unsupervised
                        for task in running:
                            task.cancel()
                    if not running:
                        continue
                    for t, r in outcomes:
                        mine.append(t)
                        metrics.activated(t.plan, r.outcome)
                        if r.outcome == "Failed":
                            failed += 1
                        results.append(api.ObjectResult(plan=t.plan, ref=t.ref, outcome=r.outcome,
                                                        reason=r.reason[:500], changes=list(r.changes)))
                    done += len(running)
                    totals(index, keys)
                    metrics.progress(self.name, done, self.status.progress.total)
                    await self.save(waves=list(waves),
                                    objects=status.reported(results, self.settings.max_reported_objects))
                self.timed(f"wave {wave.name} activated", wave_started)
                message = ""
                if wave.wait_for_ready and not dry_run:
                    failed_refs = {r.ref for r in results if r.outcome == "Failed"}
                    late = await activating.wait_ready(self.client, [t for t in mine if t.ref not in failed_refs],
                                                       timeout=wave.timeout_seconds,
                                                       poll=self.settings.ready_poll_seconds)
                    self.timed(f"wave {wave.name} ready", wave_started)
                    if late:
                        failed += len(late)
                        message = f"not ready after {wave.timeout_seconds}s: {', '.join(late[:10])}"
                failed_total += failed
                totals(index, keys)
                waves[index] = waves[index].model_copy(update={
                    "phase": "Completed" if not failed else "PartiallyFailed", "done": waves[index].done + len(mine),
                    "failed": failed, "message": message})
                if index < len(rep.waves) - 1:  # the last wave's result goes with the job's own
                    await self.save(waves=list(waves))
                self.notify("Normal" if not failed else "Warning", "WaveDone",
                            f"wave {wave.name}: {len(mine)} objects, {failed} failed {message}".strip())
        if listing.first_seconds is not None:
            self.timed("firstCopies", started, seconds=listing.first_seconds)
        self.timed("findCopies", started, seconds=listing.seconds)
        total = done_before + sum(listing.found.values())
        phase, summary = status.outcome(failed=failed_total, total=total, dry_run=dry_run)
        await self.save(phase=phase, completion_time=now(), message=summary, waves=list(waves),
                        conditions=[status.complete(phase == "Completed", phase, summary)])
        self.notify("Normal" if phase == "Completed" else "Warning", phase, summary)
