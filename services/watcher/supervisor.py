"""Starts, restarts and stops the per-plan, per-resource watches as plans come and go.

Plans are re-read every ``plan_resync_seconds``; a plan whose generation or suspension changed has
its watches restarted. A plan that cannot run (missing ManagedCluster, bad kubeconfig, invalid
filter) gets a condition with the reason; the others keep running."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from schemas import selection
from services.common import looping, plans, records, streams
from services.common.guarding import Guard
from services.common.keys import StreamKeys
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.common.leasing import PlanLeases
from services.watcher.clusters import ClusterProber
from services.watcher.health import PlanHealth
from services.watcher.history import HistoryKeeper
from services.watcher.publishing import Publisher
from services.watcher.settings import WatcherSettings
from services.watcher.watching import NamespaceLabels, ResourceWatch

log = logging.getLogger(__name__)


@dataclass
class PlanRunner:
    plan: plans.Plan
    own: KubeClient
    js: JetStreamContext
    settings: WatcherSettings
    keys: StreamKeys
    guard: Guard
    leases: PlanLeases
    watches: list[ResourceWatch] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    source: KubeClient | None = None

    async def start(self) -> None:
        plan = self.plan
        try:
            for r in plan.spec.resources:
                selection.compile_filters(r.filters)
            self.source = await plans.cluster_client(self.own, plan.spec.source_cluster_ref, plan.namespace,
                                                     user_agent="standby-watcher")
            version = await self.source.server_version()
        except selection.InvalidFilterError as exc:
            log.error("plan is invalid: %s", exc, extra={"plan": plan.key, "reason": "InvalidFilter"})
            await plans.set_plan_conditions(
                self.own, plan, [plans.condition("Valid", False, "InvalidFilter", str(exc))], phase="Degraded")
            raise
        except plans.PlanError as exc:
            log.error("plan cannot run: %s", exc, extra={"plan": plan.key, "reason": exc.reason})
            await plans.set_plan_conditions(
                self.own, plan, [plans.condition("SourceReachable", False, exc.reason, exc.message)], phase="Degraded")
            raise
        except (ApiError, UnreachableError) as exc:
            await plans.set_plan_conditions(self.own, plan, [plans.condition("SourceReachable", False,
                                                                             "Unreachable", str(exc))],
                                            phase="Degraded")
            raise
        info = await streams.ensure_stream(self.js, self.settings.nats, plan.namespace, plan.name, plan.spec.history)
        await records.publish(self.js, self.settings.nats.subject_prefix, plan)
        publisher = Publisher(self.js, stream=info.config.name or "", keys=self.keys,
                              window=self.settings.publish_window,
                              max_payload_bytes=self.settings.nats.max_payload_bytes,
                              compress_over_bytes=self.settings.compress_over_bytes,
                              until_served=functools.partial(self.leases.until_held, plan.key))
        namespaces = NamespaceLabels(self.source, backoff_seconds=self.settings.backoff_max_seconds)
        for r in plan.spec.resources:
            scopes = r.filters.namespaces or [""]
            for i, scope in enumerate(scopes):
                watch = ResourceWatch(plan, r, self.source, self.js, publisher, self.settings, namespaces, scope=scope,
                                      sweep_outside=tuple(r.filters.namespaces) if i == 0 else ())
                self.watches.append(watch)
                self.tasks.append(self.guard.start(f"watch {watch.name}", watch.run, kind="watch", plan=plan.key))
        health = PlanHealth(plan, self.own, self.source, self.watches, self.settings)
        for kind, run in (("probe", health.probe), ("report", health.report), ("crds", health.follow_crds)):
            self.tasks.append(self.guard.start(f"{kind} {plan.key}", run, kind=kind, plan=plan.key))
        if self.settings.history_compact_seconds:
            keeper = HistoryKeeper(plan, self.js, self.settings.nats.subject_prefix)
            self.tasks.append(self.guard.start(f"history {plan.key}", lambda: keeper.run(
                self.settings.history_compact_seconds), kind="history", plan=plan.key))
        if namespaces.listeners:  # some filter has a namespaceSelector
            self.tasks.append(self.guard.start(f"namespaces {plan.key}", namespaces.follow, kind="namespaces",
                                               plan=plan.key))
        # SourceReachable=True (with the version) is written by the source probe's first answer.
        log.info("watching %d resources of a source at %s", len(self.watches), version, extra={"plan": plan.key})

    async def stop(self) -> None:
        await looping.cancel_all(self.tasks)
        self.tasks.clear()
        if self.source is not None:
            await self.source.close()


@dataclass
class Supervisor:
    own: KubeClient
    nc: Client
    settings: WatcherSettings
    runners: dict[str, tuple[tuple[int, bool], PlanRunner | None]] = field(default_factory=dict)
    healthy: bool = False

    def __post_init__(self) -> None:
        self.keys = StreamKeys.of_service(self.own, self.settings.kube.namespace, self.settings.nats)
        self.guard = Guard("watcher", self.settings.tasks)
        self.leases = PlanLeases(self.own, self.settings.kube.namespace, "watcher", self.settings.leases)

    async def sync_once(self) -> None:
        seen: set[str] = set()
        await looping.for_each(self.leases.mine(await plans.list_plans(self.own)),
                               lambda obj: self._sync_plan(obj, seen))
        for key in set(self.runners) - seen:
            _, gone = self.runners.pop(key)
            if gone is not None:
                log.info("plan deleted or served elsewhere; stopping its watches", extra={"plan": key})
                await gone.stop()
        self.leases.serving(key for key, (_, runner) in self.runners.items() if runner is not None)

    async def _sync_plan(self, obj: dict[str, Any], seen: set[str]) -> None:
        """Start, restart or leave alone the watches of one plan (the plans side by side)."""
        try:
            plan = plans.parse_plan(obj)
        except plans.PlanError as exc:
            await plans.set_plan_conditions(
                self.own, obj, [plans.condition("Valid", False, exc.reason, exc.message)])
            return
        seen.add(plan.key)
        signature = (plan.generation, plan.spec.suspend)
        current = self.runners.get(plan.key)
        if current is not None and current[0] == signature and current[1] is not None:
            return
        if current is not None and current[1] is not None:
            await current[1].stop()
        if plan.spec.suspend:
            if current is None or current[0] != signature:
                log.info("Recovery plan is suspended", extra={"plan": plan.key})
                await plans.set_plan_conditions(self.own, plan, [plans.condition("Suspended", True, "Suspended")],
                                                phase="Suspended")
            self.runners[plan.key] = (signature, None)
            return
        runner = PlanRunner(plan, self.own, self.nc.jetstream(), self.settings, self.keys, self.guard, self.leases)
        try:
            await runner.start()
        except (plans.PlanError, selection.InvalidFilterError, ApiError, UnreachableError):
            await runner.stop()
            self.runners.pop(plan.key, None)  # retried at the next resync
            return
        except Exception as exc:  # the broker, the keys, or a defect: this plan only, retried
            log.exception("plan cannot start; retrying at the next pass", extra={"plan": plan.key})
            await runner.stop()
            self.runners.pop(plan.key, None)
            await plans.set_plan_conditions(self.own, plan, [plans.condition(
                "ResourcesWatched", False, "CannotStart", f"{exc!r}")])
            return
        if current is not None and current[0][1]:
            await plans.set_plan_conditions(self.own, plan, [plans.condition("Suspended", False, "Resumed")])
        self.runners[plan.key] = (signature, runner)

    async def run(self) -> None:
        prober = ClusterProber(self.own, self.settings.kube.namespace,
                               probe_seconds=self.settings.cluster_probe_seconds, leases=self.leases)
        clusters = self.guard.start("managed clusters", prober.run, kind="clusters")
        try:
            await looping.supervise(self, interval_seconds=self.settings.plan_resync_seconds, plans_from=self.own,
                                    guard=self.guard, leases=self.leases)
        finally:
            await looping.cancel_all([clusters])

    async def stop(self) -> None:
        for _, runner in list(self.runners.values()):
            if runner is not None:
                await runner.stop()
        self.runners.clear()

