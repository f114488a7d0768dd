"""Starts and stops one consumer per active plan as plans come and go (polling the plans; a plan
whose spec changed gets a fresh consumer with the new patches)."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client

from schemas import annotations as ann
from services.common import looping, plans
from services.common.fencing import FenceCache
from services.common.guarding import Guard
from services.common.keys import StreamKeys
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.common.leasing import PlanLeases
from services.syncer.applying import PlanApplier
from services.syncer.budget import Budget
from services.syncer.consuming import PlanConsumer
from services.syncer.rebuilds import RebuildRunner
from services.syncer.settings import SyncerSettings

log = logging.getLogger(__name__)


@dataclass
class Destination:
    client: KubeClient
    fences: FenceCache
    task: asyncio.Task[None]


@dataclass
class Supervisor:
    own: KubeClient
    nc: Client
    settings: SyncerSettings
    consumers: dict[str, tuple[tuple[int, bool], PlanConsumer | None]] = field(default_factory=dict)
    destinations: dict[str, Destination] = field(default_factory=dict)
    healthy: bool = False

    def __post_init__(self) -> None:
        self._destinations_made = asyncio.Lock()
        self.keys = StreamKeys.of_service(self.own, self.settings.kube.namespace, self.settings.nats)
        self.guard = Guard("syncer", self.settings.tasks)
        self.leases = PlanLeases(self.own, self.settings.kube.namespace, "syncer", self.settings.leases)
        c = self.settings.consumer
        self.budget = Budget(writes=c.workers, window=c.max_ack_pending, batch=c.fetch_batch)
        self.rebuilds = RebuildRunner(self.own, self.nc.jetstream(), self.keys, self.guard,
                                      self.settings.nats.subject_prefix)

    async def destination(self, plan: plans.Plan) -> Destination:
        ref = plan.spec.destination_cluster_ref
        key = f"{ref.namespace or plan.namespace}/{ref.name}" if ref else ""
        async with self._destinations_made:  # plans start side by side: one client per cluster
            return await self._destination(plan, key)

    async def _destination(self, plan: plans.Plan, key: str) -> Destination:
        ref = plan.spec.destination_cluster_ref
        if key not in self.destinations:
            client = self.own if ref is None else await plans.cluster_client(
                self.own, ref, plan.namespace, connections=self.settings.destination_connections,
                user_agent="standby-syncer")
            # The fences are read on a connection of their own: behind the writes' connections (all busy
            # in a burst) the reads would age past fence_max_age_seconds and hold every write back.
            fences = FenceCache(KubeClient(client.creds, connections=1, user_agent="standby-syncer-fences"),
                                self.settings.kube.namespace, self.settings.fence_refresh_seconds,
                                self.settings.fence_max_age_seconds)
            await fences.refresh()
            task = self.guard.start(f"fences {key or 'local'}", fences.run, kind="fences")
            self.destinations[key] = Destination(client, fences, task)
        return self.destinations[key]

    async def sync_once(self) -> None:
        seen: set[str] = set()
        mine = self.leases.mine(await plans.list_plans(self.own))
        self.budget.plans = len(mine)  # before any of them pulls: each pull's share of the window
        await looping.for_each(mine, lambda obj: self._sync_plan(obj, seen))
        for key in set(self.consumers) - seen:
            _, gone = self.consumers.pop(key)
            if gone is not None:
                await gone.stop()
        self.leases.serving(key for key, (_, consumer) in self.consumers.items() if consumer is not None)
        await self.rebuilds.sync_once(self.leases.holds)

    async def _sync_plan(self, obj: dict[str, Any], seen: set[str]) -> None:
        """Start, restart or leave alone the consumer of one plan (the plans side by side)."""
        try:
            plan = plans.parse_plan(obj)
        except plans.PlanError:
            return  # the watcher reports invalid plans
        seen.add(plan.key)
        signature = (plan.generation, plan.spec.suspend)
        current = self.consumers.get(plan.key)
        if current is not None and current[0] == signature:
            if current[1] is not None:
                current[1].applier.acknowledge(plan.annotations.get(ann.DELETE_BREAKER_RESET))
                await current[1].requests.acknowledge(plan.annotations)
            return
        if current is not None and current[1] is not None:
            await current[1].stop()
        if plan.spec.suspend:
            self.consumers[plan.key] = (signature, None)
            return
        consumer: PlanConsumer | None = None
        try:
            dest = await self.destination(plan)
            applier = PlanApplier(plan, dest.client, dest.fences, self.settings,
                                  serving=functools.partial(self.leases.holds, plan.key))
            consumer = PlanConsumer(plan, applier, self.nc, self.own, self.settings, self.keys, self.guard,
                                    self.budget, until_served=functools.partial(self.leases.until_held, plan.key))
            await consumer.start()
        except plans.PlanError as exc:
            await plans.set_plan_conditions(self.own, plan, [plans.condition(
                "DestinationReachable", False, exc.reason, exc.message)], phase="Degraded")
            return
        except (ApiError, UnreachableError) as exc:
            log.warning("cannot start consumer: %s", exc, extra={"plan": plan.key})
            await plans.set_plan_conditions(self.own, plan, [plans.condition(
                "Degraded", True, "CannotStart", str(exc))], phase="Degraded")
            return
        except Exception as exc:  # the broker, or a defect: this plan only, retried at the next pass
            log.exception("cannot start consumer; retrying at the next pass", extra={"plan": plan.key})
            if consumer is not None:
                await consumer.stop()
            await plans.set_plan_conditions(self.own, plan, [plans.condition(
                "Degraded", True, "CannotStart", f"{exc!r}")], phase="Degraded")
            return
        log.info("consuming", extra={"plan": plan.key})
        await consumer.requests.acknowledge(plan.annotations)  # remembered: a restart repeats nothing
        self.consumers[plan.key] = (signature, consumer)

    async def run(self) -> None:
        await looping.supervise(self, interval_seconds=self.settings.plan_resync_seconds, plans_from=self.own,
                                guard=self.guard, leases=self.leases)

    async def stop(self) -> None:
        await self.rebuilds.stop()
        for _, consumer in list(self.consumers.values()):
            if consumer is not None:
                await consumer.stop()
        self.consumers.clear()
        for key, dest in list(self.destinations.items()):
            dest.task.cancel()
            await asyncio.gather(dest.task, return_exceptions=True)
            await dest.fences.client.close()
            if dest.client is not self.own:
                await dest.client.close()
            del self.destinations[key]
