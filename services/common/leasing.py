"""One Lease per plan: which replica of a service serves which plan, and until when it may.

client-go's leader election, once per plan. The Leases (coordination.k8s.io/v1) live in the
service's namespace, labelled with the component; each replica also renews a Lease of its own, its
membership, from which every replica counts the live ones and so its fair share of the plans
(:mod:`services.common.sharing` decides which to take and which to give back), and knows which
work that needs no Lease of its own is its (:meth:`PlanLeases.owns`: probing a ManagedCluster).

Time, as in client-go: a Lease has expired when its record has not changed for its
``leaseDurationSeconds`` *as this replica saw it* (from the moment it saw the last change, on its
own monotonic clock), never by comparing ``renewTime`` with this replica's wall clock, so the
replicas' clocks need not agree. The holder stops serving a plan when its last successful renewal
was *sent* more than ``renew_deadline_seconds`` ago: :meth:`PlanLeases.holds` turns False before
any other replica can see the Lease expire, and the syncer checks it before every write.

A lapse is a pause, not an end. A plan whose renewals were late (a saturated API server) keeps its
work, which waits (:meth:`PlanLeases.until_held`) without writing: if the next renewal succeeds,
no other replica held the Lease in between (the renewal is an update at the resourceVersion this
replica last wrote or saw, refused if anyone changed it since), and the work goes on from where it
was, nothing listed or read again; once the Lease shows another holder, the plan is no longer this
replica's and its work is stopped. Stopping on every lapse made each one a restart (a list of the
plan's resources, a read of its stream), more load on the server that was too slow already. A plan
given back (above the fair share, or deleted) is released only after the supervisor has stopped
its work (:meth:`PlanLeases.serving`): its Lease is deleted, and the replica that takes it over
does so at once.

The Leases are followed with a watch, and the keeper wakes when one is deleted or changes hands
and when the first one it waits for expires: a dead replica's plans are taken over within the
Lease duration of its last renewal."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import prometheus_client

from schemas import annotations as ann
from services.common import kube, sharing
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.common.settings import LeaseSettings

log = logging.getLogger(__name__)
Obj = dict[str, Any]

LEASE_OF = ann.PREFIX + "lease-of"  # label: the component whose replicas share the plans
LEASE_ROLE = ann.PREFIX + "lease-role"  # label: MEMBER (a replica's own) or PLAN
MEMBER, PLAN = "member", "plan"

SERVED = prometheus_client.Gauge("standby_plans_served", "Plans whose Lease this replica holds", ["component"])
PAUSED = prometheus_client.Gauge("standby_plans_paused",
                                 "Plans whose Lease this replica renewed too late: their work waits for a renewal",
                                 ["component"])
MOVES = prometheus_client.Counter("standby_plan_lease_moves_total",
                                  "Plans this replica took (acquired) or gave back (released)",
                                  ["component", "move"])


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def micro_time() -> str:
    """A Lease's MicroTime: RFC 3339 with microseconds, UTC."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def plan_lease_name(component: str, uid: str) -> str:
    """The Lease of a plan among ``component``'s replicas: by the plan's uid, not its name, so a
    re-created plan starts afresh."""
    return f"standby-{component}-{uid}"


def _holder(lease: Obj) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def _record(obj: Obj) -> tuple[Any, ...]:
    spec = obj.get("spec") or {}
    return spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions")


@dataclass
class _Seen:
    obj: Obj
    at: float  # when this replica saw the record change (its monotonic clock)


@dataclass
class PlanLeases:
    client: KubeClient
    namespace: str
    component: str
    settings: LeaseSettings = field(default_factory=LeaseSettings)
    clock: Callable[[], float] = time.monotonic
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # the plans held changed: a supervisor pass

    def __post_init__(self) -> None:
        self.identity = self.settings.identity or default_identity()
        # Connections of their own: behind a burst of writes through the service's client, renewals
        # would queue past the renew deadline (the watch holds one of them).
        self.api = KubeClient(self.client.creds, connections=8, user_agent=f"standby-{self.component}-leases")
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        self.selector = f"{LEASE_OF}={self.component}"
        self._seen: dict[str, _Seen] = {}
        self._synced = asyncio.Event()
        self._wake = asyncio.Event()
        self._wanted: dict[str, str] = {}  # plan key -> uid
        self._known = False  # _wanted was set by a pass over the plans
        self._serving: set[str] = set()  # plans whose work runs here (the supervisor says)
        self._held: dict[str, float] = {}  # plan key -> until when it may be served (monotonic)
        self._paused: set[str] = set()  # of those, lapsed and still this replica's as last seen
        self._renewal = asyncio.Event()  # set and replaced at every renewal that may end a pause
        self._renewed: dict[str, float] = {}  # lease name -> when its last renewal was sent
        self._releasing: set[str] = set()
        self._live: frozenset[str] = frozenset()  # the live replicas, as the last round saw them
        self.surveyed = asyncio.Event()  # set once a round has counted the live replicas

    # -- what the supervisor asks and tells ----------------------------------------------------
    def holds(self, plan: str) -> bool:
        """Whether this replica may serve ``plan`` now (checked before each write)."""
        until = self._held.get(plan)
        return until is not None and self.clock() < until and plan not in self._releasing

    def held(self) -> frozenset[str]:
        return frozenset(plan for plan in self._held if self.holds(plan))

    def assigned(self) -> frozenset[str]:
        """The plans whose work runs here: held, or paused until their Lease is renewed."""
        return frozenset(plan for plan in self._held if plan not in self._releasing)

    async def until_held(self, plan: str) -> None:
        """Return once this replica may serve ``plan``: at once while it holds the Lease, after a
        pause once it is renewed. A plan lost to another replica has its work stopped meanwhile."""
        while not self.holds(plan):
            await self._renewal.wait()

    def want(self, plans: Mapping[str, str]) -> None:
        """The plans that exist (key -> uid), from the supervisor's last pass."""
        if not self._known or plans != self._wanted:
            for plan in [p for p in self._held if self._wanted.get(p) != plans.get(p)]:
                del self._held[plan]  # deleted, or deleted and created again (a Lease of its own)
            self._wanted, self._known = dict(plans), True
            self._wake.set()

    def mine(self, listed: list[Obj]) -> list[Obj]:
        """Of the RecoveryPlans a supervisor listed (all of them: they are wanted), the ones this
        replica serves."""
        keys = {f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o for o in listed}
        self.want({key: str(o["metadata"].get("uid", "")) for key, o in keys.items()})
        assigned = self.assigned()
        return [o for key, o in keys.items() if key in assigned]

    def serving(self, plans: Iterable[str]) -> None:
        """The plans whose work runs here now: a plan given back is released once it is not."""
        self._serving = set(plans)
        if self._releasing - self._serving:
            self._wake.set()

    def owns(self, key: str) -> bool:
        """Whether this replica is the one of the live replicas that does ``key``'s work, for work
        any of them could do but only one should (:func:`sharing.owner`); none before the first
        round has counted them (:attr:`surveyed`)."""
        return sharing.owner(self._live, key) == self.identity

    @property
    def renew_every(self) -> float:
        """A third of the renew deadline (every Lease is a write to etcd: many plans, many writes),
        tried again every ``retry_seconds`` when a renewal fails."""
        return max(0.9 * self.settings.retry_seconds, self.settings.renew_deadline_seconds / 3)

    # -- names -------------------------------------------------------------------------------
    def plan_lease(self, uid: str) -> str:
        return plan_lease_name(self.component, uid)

    @property
    def member_lease(self) -> str:
        return f"standby-{self.component}-member-{hashlib.sha256(self.identity.encode()).hexdigest()[:16]}"

    # -- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Follow the Leases and keep this replica's share, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(kube.follow(self.api, self.path, label_selector=self.selector, listed=self._listed,
                                          changed=self._event, retry_seconds=self.settings.retry_seconds,
                                          what=f"{self.component} leases"))
            await self._synced.wait()
            while True:
                self._wake.clear()
                try:
                    await self.tick()
                except (ApiError, UnreachableError) as exc:
                    log.warning("cannot keep the %s leases: %s", self.component, exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_wake()):
                        await self._wake.wait()

    def _next_wake(self) -> float:
        """Seconds until the next renewal is due or the first Lease of another replica expires."""
        now = self.clock()
        soonest = now + self.settings.retry_seconds
        for seen in self._seen.values():
            holder = _holder(seen.obj)
            expiry = seen.at + self.settings.duration_seconds + 0.01
            if holder and holder != self.identity and expiry > now:
                soonest = min(soonest, expiry)
        return max(0.01, soonest - now)

    def _listed(self, items: list[Obj]) -> None:
        now = self.clock()
        before, self._seen = self._seen, {}
        for obj in items:
            name = obj["metadata"]["name"]
            old = before.get(name)
            self._seen[name] = _Seen(obj, old.at if old is not None and _record(old.obj) == _record(obj) else now)
        self._synced.set()
        self._wake.set()

    def _event(self, type_: str, obj: Obj) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if type_ == "DELETED":
            if self._seen.pop(name, None) is not None:
                self._wake.set()
            return
        old = self._seen.get(name)
        self._observe(obj)
        if old is None or _holder(old.obj) != _holder(obj):
            self._wake.set()

    def _observe(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        old = self._seen.get(name)
        changed = old is None or _record(old.obj) != _record(obj)
        self._seen[name] = _Seen(obj, self.clock() if changed else old.at)  # type: ignore[union-attr]

    # -- one round ---------------------------------------------------------------------------
    async def tick(self) -> None:
        now = self.clock()
        self._lapses(now)
        try:
            await self._keep_membership(now)
        except (ApiError, UnreachableError) as late:  # the others count one replica fewer; the plans come first
            log.warning("cannot renew this %s replica's membership: %s", self.component, late)
        live, holders, leases = await self._survey(now)
        self._live = frozenset(live)
        self.surveyed.set()
        if not self._known:
            return  # nothing is taken before the plans are known
        wanted = set(self._wanted) - self._releasing
        decided = sharing.moves(self.identity, wanted, holders, len(live))
        for plan in decided.release:
            self._releasing.add(plan)
            self._held.pop(plan, None)
            self.changed.set()
            MOVES.labels(self.component, "released").inc()
            log.info("giving the plan back (%d replicas share %d plans)", len(live), len(wanted),
                     extra={"plan": plan})
        failed = await asyncio.gather(*(
            self._renew(plan, leases[plan], now) for plan, holder in holders.items()
            if holder == self.identity and plan not in self._releasing),
            *(self._release(plan, leases.get(plan)) for plan in list(self._releasing - self._serving)),
            *(self._acquire(plan, leases.get(plan)) for plan in decided.acquire), return_exceptions=True)
        self._lapses(self.clock())
        SERVED.labels(self.component).set(len(self.held()))
        PAUSED.labels(self.component).set(len(self._paused))
        for exc in failed:
            if isinstance(exc, BaseException):
                if not isinstance(exc, (ApiError, UnreachableError)):
                    raise exc
                log.warning("cannot keep a %s lease: %s", self.component, exc)

    def _lapses(self, now: float) -> None:
        """Pause the plans not renewed in time (holds() is False already: nothing is written before
        anyone may take them over); stop the ones whose Lease another replica holds now."""
        self._paused.intersection_update(self._held)  # given back or gone meanwhile
        for plan, until in list(self._held.items()):
            if now < until:
                continue
            if not self._ours(plan):
                self._stop(plan, "its lease is gone or another replica holds it")
            elif plan not in self._paused:
                self._paused.add(plan)
                log.warning("paused the plan: its lease could not be renewed for %.0fs; it resumes when the "
                            "lease is renewed", self.settings.renew_deadline_seconds, extra={"plan": plan})

    def _ours(self, plan: str) -> bool:
        """Whether ``plan``'s Lease, as last seen, is held by this replica."""
        uid = self._wanted.get(plan)
        seen = self._seen.get(self.plan_lease(uid)) if uid is not None else None
        return seen is not None and _holder(seen.obj) == self.identity

    def _stop(self, plan: str, why: str) -> None:
        del self._held[plan]
        self._paused.discard(plan)
        self.changed.set()
        log.warning("stopped serving the plan: %s", why, extra={"plan": plan})

    def _renewed_until(self, plan: str, until: float) -> None:
        fresh = plan not in self._held
        self._held[plan] = until
        if plan in self._paused:
            self._paused.discard(plan)
            log.info("resumed the plan: its lease was renewed", extra={"plan": plan})
        renewal, self._renewal = self._renewal, asyncio.Event()
        renewal.set()
        if fresh:  # acquired, or held by this identity before (a restart): a supervisor pass starts it
            self.changed.set()

    async def _survey(self, now: float) -> tuple[set[str], dict[str, str], dict[str, Obj]]:
        """From the Leases seen: the live replicas, each wanted plan's live holder (expired ones
        left out: free) and each plan's Lease; Leases of replicas gone for good and of plans gone
        (or re-created) are deleted on the way."""
        live, holders, leases = {self.identity}, {}, {}
        for name, seen in list(self._seen.items()):
            meta, holder = seen.obj["metadata"], _holder(seen.obj)
            expired = now - seen.at > self.settings.duration_seconds
            if (meta.get("labels") or {}).get(LEASE_ROLE) == MEMBER:
                if holder and not expired:
                    live.add(holder)
                elif name != self.member_lease and now - seen.at > 2 * self.settings.duration_seconds:
                    await self._delete(seen.obj)  # a replica gone for good
                continue
            plan = (meta.get("annotations") or {}).get(ann.PLAN, "")
            if plan in self._releasing:
                leases[plan] = seen.obj
                continue
            if self._known and (plan not in self._wanted or name != self.plan_lease(self._wanted[plan])):
                if self._held.pop(plan, None) is not None:
                    self.changed.set()
                if (holder == self.identity and plan not in self._serving) or (holder != self.identity and expired):
                    await self._delete(seen.obj)  # the plan is gone (or was re-created)
                continue
            leases[plan] = seen.obj
            if holder == self.identity or not expired:
                holders[plan] = holder
        return live, holders, leases

    async def _keep_membership(self, now: float) -> None:
        seen = self._seen.get(self.member_lease)
        if seen is not None and now - self._renewed.get(self.member_lease, -1e9) < self.renew_every:
            return
        labels = {LEASE_OF: self.component, LEASE_ROLE: MEMBER}
        if await self._write(self.member_lease, seen.obj if seen else None, labels, {}):
            self._renewed[self.member_lease] = now

    async def _renew(self, plan: str, lease: Obj, now: float) -> None:
        """Renew a Lease this replica holds when a third of the renew deadline has passed since the
        last renewal (and at every round after that until one succeeds)."""
        name = lease["metadata"]["name"]
        if plan in self._held and now - self._renewed.get(name, -1e9) < self.renew_every:
            return
        sent = self.clock()
        if await self._write(name, lease, {}, {}):
            self._renewed[name] = sent
            self._renewed_until(plan, sent + self.settings.renew_deadline_seconds)
            return
        if plan in self._held and not self._ours(plan):
            self._stop(plan, "its lease is gone or another replica holds it")

    async def _acquire(self, plan: str, lease: Obj | None) -> None:
        name = self.plan_lease(self._wanted[plan])
        sent = self.clock()
        labels = {LEASE_OF: self.component, LEASE_ROLE: PLAN}
        if await self._write(name, lease, labels, {ann.PLAN: plan}, acquire=True):
            self._renewed[name] = sent
            self._renewed_until(plan, sent + self.settings.renew_deadline_seconds)
            MOVES.labels(self.component, "acquired").inc()
            log.info("serving the plan (lease acquired)", extra={"plan": plan})
        else:  # another replica was faster: look again now, with the Lease as it is (its event may not wake us)
            self._wake.set()

    async def _release(self, plan: str, lease: Obj | None) -> None:
        if lease is not None and _holder(lease) == self.identity:
            await self._delete(lease)
        self._releasing.discard(plan)

    async def _write(self, name: str, lease: Obj | None, labels: Mapping[str, str], annotations: Mapping[str, str],
                     *, acquire: bool = False) -> bool:
        """Create or update the Lease ``name`` as held by this replica, renewed now; False when
        another replica got there first (a conflict: the next round sees who)."""
        stamp = micro_time()
        timeout = self.settings.renew_deadline_seconds  # a slow API server is no reason to give a plan up early
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": self.namespace, "labels": dict(labels),
                                 "annotations": dict(annotations)},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.settings.duration_seconds,
                             "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}}
            method, path = "POST", self.path
        else:
            spec = dict(lease.get("spec") or {})
            if acquire or _holder(lease) != self.identity:
                taken = _holder(lease) not in ("", self.identity)
                spec.update(acquireTime=stamp, leaseTransitions=int(spec.get("leaseTransitions") or 0) + taken)
            spec.update(holderIdentity=self.identity, renewTime=stamp,
                        leaseDurationSeconds=self.settings.duration_seconds)
            body, method, path = {**lease, "spec": spec}, "PUT", f"{self.path}/{name}"
        try:
            self._observe(await self.api.request(method, path, body=body, timeout=timeout))
            return True
        except ApiError as exc:
            if exc.status == 409:  # taken, or our view of it is behind: read it for the next round
                with contextlib.suppress(ApiError, UnreachableError):
                    self._observe(await self.api.get(f"{self.path}/{name}"))
                return False
            if exc.not_found:
                self._seen.pop(name, None)
                return False
            raise

    async def _delete(self, lease: Obj) -> None:
        meta = lease["metadata"]
        try:
            await self.api.request("DELETE", f"{self.path}/{meta['name']}",
                                   timeout=self.settings.renew_deadline_seconds,
                                   body={"preconditions": {"resourceVersion": meta.get("resourceVersion")}})
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
        self._seen.pop(meta["name"], None)

    async def release_all(self) -> None:
        """On a clean stop, after the plans' work stopped: give every Lease back at once (the
        other replicas take the plans over without waiting for them to expire)."""
        self._held.clear()
        self._paused.clear()
        SERVED.labels(self.component).set(0)
        PAUSED.labels(self.component).set(0)
        mine = [seen.obj for seen in self._seen.values() if _holder(seen.obj) == self.identity]
        for lease in mine:
            try:
                await self._delete(lease)
            except (ApiError, UnreachableError) as exc:
                log.warning("could not release lease %s: %s", lease["metadata"]["name"], exc)
        await self.close()

    async def close(self) -> None:
        await self.api.close()
