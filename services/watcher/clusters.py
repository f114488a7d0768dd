"""Keeps every ManagedCluster's status true: can the cluster be reached, do its credentials work,
and may they do what the plans using the cluster need?

Every ``cluster_probe_seconds`` each ManagedCluster's Secret is read and its kubeconfig used for
one SelfSubjectReview (it needs authentication, unlike ``/version``), then one
SelfSubjectAccessReview per access the plans need of it (``needs``: list and watch of each selected
resource in a source; create, patch and delete of it, namespaces when the plan creates them, and
reading the fences in a destination). ``Ready`` says whether all of that worked and, when not,
which step failed (``SecretNotFound``, ``KubeconfigMissing``, ``KubeconfigInvalid``,
``Unreachable``, ``Unauthorized``, ``CredentialsUnavailable`` for an exec plugin that failed,
``Forbidden`` naming each verb and resource refused). A change of ``Ready`` is an Event;
``standby_managed_cluster_ready`` is 1 or 0 per cluster, from the one replica that probes it
(:class:`ClusterProber`). A broken cluster is reported, never a crash, and nothing is written to it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from schemas import API_VERSION, api
from services.common import access, events, plans, settings
from services.common.access import Access
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.common.leasing import PlanLeases
from services.watcher import metrics

log = logging.getLogger(__name__)
Obj = dict[str, Any]
REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
SOURCE_VERBS = ("list", "watch")
DESTINATION_VERBS = ("create", "patch", "delete")


def needs(plan: plans.Plan, *, fence_namespace: str) -> dict[str, set[Access]]:
    """What ``plan`` needs of each ManagedCluster it names ("namespace/name" -> accesses)."""
    spec = plan.spec
    out: dict[str, set[Access]] = {}
    source = f"{spec.source_cluster_ref.namespace or plan.namespace}/{spec.source_cluster_ref.name}"
    for r in spec.resources:
        for ns in r.filters.namespaces or [""]:
            out.setdefault(source, set()).update(Access(v, r.group, r.resource, ns) for v in SOURCE_VERBS)
    if spec.destination_cluster_ref is not None:
        ref = spec.destination_cluster_ref
        wanted = out.setdefault(f"{ref.namespace or plan.namespace}/{ref.name}", set())
        for r in spec.resources:
            for ns in r.filters.namespaces or [""]:
                wanted.update(Access(v, r.group, r.resource, ns) for v in DESTINATION_VERBS)
        if spec.force_namespace_creation:
            wanted.add(Access("create", "", "namespaces"))
        wanted.add(Access("list", "", "configmaps", fence_namespace))
    return out


@dataclass(frozen=True)
class Probe:
    ready: bool
    reason: str
    message: str
    version: str | None = None


async def probe(own: KubeClient, mc: Obj, *, timeout_seconds: float, wanted: set[Access] | None = None) -> Probe:
    """One ManagedCluster, from its Secret to an authenticated request and the ``wanted``
    accesses. No write to the cluster (access reviews are questions, not changes)."""
    try:
        client = await plans.managed_cluster_client(own, mc, connections=1, user_agent="standby-cluster-probe",
                                                   timeout_seconds=timeout_seconds)
    except plans.PlanError as exc:
        return Probe(False, exc.reason, exc.message)
    try:
        async with client:
            version = await client.server_version()
            review = await client.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=REVIEW)
            refused = await access.refused(client, wanted or ())
    except UnreachableError as exc:
        return Probe(False, "Unreachable", str(exc))
    except ApiError as exc:
        reason = {401: "Unauthorized", 403: "Forbidden"}.get(exc.status, f"Http{exc.status}")
        if exc.reason == "CredentialsUnavailable":
            reason = "CredentialsUnavailable"
        return Probe(False, reason, exc.message or str(exc))
    user = ((review.get("status") or {}).get("userInfo") or {}).get("username", "?")
    if refused:
        return Probe(False, "Forbidden", f"{user} may not: {', '.join(map(str, refused))}", version)
    return Probe(True, "Connected", f"authenticated as {user}" + (
        f", allowed the {len(wanted)} accesses its plans need" if wanted else ""), version)


def reported(mc: Obj) -> Probe | None:
    """What the ManagedCluster's status says of its last probe (another replica's); None before any."""
    status = mc.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None:
        return None
    return Probe(ready.get("status") == "True", str(ready.get("reason") or ""), str(ready.get("message") or ""),
                 status.get("serverVersion"))


def status_of(result: Probe, now: str) -> api.ManagedClusterStatus:
    return api.ManagedClusterStatus(
        conditions=[api.Condition(type="Ready", status="True" if result.ready else "False", reason=result.reason,
                                  message=result.message[:1000])],
        server_version=result.version, last_probe_time=now, error=None if result.ready else result.message[:1000])


@dataclass
class ClusterProber:
    """Probes the ManagedClusters and tells the plans. With ``leases``, of the watcher's replicas
    one probes each cluster and writes its status, events and metric (the live replica that most
    wants it, :meth:`PlanLeases.owns`), and a plan's ``ClustersReady`` is written by the replica
    serving the plan, from the clusters' statuses: every piece of state has one writer, and
    replicas that see a cluster differently (one of them cut off) cannot make its status flap."""

    own: KubeClient
    fence_namespace: str = settings.NAMESPACE
    probe_seconds: float = 30.0
    timeout_seconds: float = 10.0
    leases: PlanLeases | None = None
    seen: dict[str, Probe] = field(default_factory=dict)  # namespace/name -> this replica's last probe
    told: dict[str, tuple[str, ...]] = field(default_factory=dict)  # plan -> the not-Ready clusters it was told of

    async def run(self) -> None:
        """Until cancelled; a cluster that cannot be probed is a status, not a failure."""
        if self.leases is not None:
            await self.leases.surveyed.wait()  # until then, this replica does not know its share
        while True:
            try:
                await self.probe_all()
            except (ApiError, UnreachableError) as exc:  # its own cluster: the plans' loop says so too
                log.warning("cannot read the ManagedClusters: %s", exc)
            await asyncio.sleep(self.probe_seconds)

    async def probe_all(self) -> None:
        items, _ = await self.own.list_all(f"/apis/{API_VERSION}/managedclusters")
        valid = await self._plans()
        wanted: dict[str, set[Access]] = {}
        for plan in valid:
            for key, accesses in needs(plan, fence_namespace=self.fence_namespace).items():
                wanted.setdefault(key, set()).update(accesses)
        known: dict[str, Probe | None] = {}  # every cluster: the last probe, this replica's or another's
        mine = set()
        for mc in items:
            meta = mc["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            if self.leases is None or self.leases.owns(key):
                mine.add(key)
                result = await probe(self.own, mc, timeout_seconds=self.timeout_seconds, wanted=wanted.get(key))
                await self._report(mc, key, result)
                known[key] = result
            else:
                known[key] = reported(mc)
        for gone in self.seen.keys() - mine:
            del self.seen[gone]  # deleted, or another replica's now
            metrics.cluster_ready(gone, None)
        await self._tell_plans(valid, known)

    async def _plans(self) -> list[plans.Plan]:
        valid = []
        for obj in await plans.list_plans(self.own):
            try:
                valid.append(plans.parse_plan(obj))
            except plans.PlanError:
                continue  # the plan loop reports it
        return valid

    async def _tell_plans(self, valid: list[plans.Plan], known: dict[str, Probe | None]) -> None:
        """Each plan this replica serves says whether the clusters it uses are Ready
        (``ClustersReady``), when that changes; not before each of them was probed once."""
        told: dict[str, tuple[str, ...]] = {}
        for plan in valid:
            refs = [plan.spec.source_cluster_ref] + ([plan.spec.destination_cluster_ref]
                                                     if plan.spec.destination_cluster_ref else [])
            names = [f"{r.namespace or plan.namespace}/{r.name}" for r in refs]
            if (self.leases is not None and not self.leases.holds(plan.key)) or any(
                    n in known and known[n] is None for n in names):
                continue
            not_ready = tuple(f"{n} ({probed.reason})" if probed else f"{n} (NotFound)"
                              for n in names if not (probed := known.get(n)) or not probed.ready)
            told[plan.key] = not_ready
            if self.told.get(plan.key) != not_ready:
                await plans.set_plan_conditions(self.own, plan, [plans.condition(
                    "ClustersReady", not not_ready, "NotReady" if not_ready else "Ready",
                    f"not Ready: {', '.join(not_ready)}" if not_ready else f"Ready: {', '.join(names)}")])
        self.told = told  # deleted plans are forgotten

    async def _report(self, mc: Obj, key: str, result: Probe) -> None:
        before = self.seen.get(key)
        self.seen[key] = result
        metrics.cluster_ready(key, result.ready)
        meta = mc["metadata"]
        current = (mc.get("status") or {}).get("conditions") or []
        status = status_of(result, plans.now_iso())
        dumped = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        dumped["conditions"] = plans.merge_conditions(current, [
            {**c, "lastTransitionTime": plans.now_iso()} for c in dumped["conditions"]])
        await plans.patch_status(self.own, "managedclusters", meta["namespace"], meta["name"],
                                 {**dumped, "serverVersion": result.version, "error": dumped.get("error")})
        if before is None or (before.ready, before.reason) != (result.ready, result.reason):
            (log.info if result.ready else log.warning)("ManagedCluster %s: %s (%s)", key, result.reason,
                                                        result.message)
            if before is not None or not result.ready:
                about = events.Involved("ManagedCluster", meta["namespace"], meta["name"], str(meta.get("uid", "")))
                await events.record(self.own, about, type_="Normal" if result.ready else "Warning",
                                    reason="ClusterReady" if result.ready else f"Cluster{result.reason}",
                                    message=result.message, component="standby-watcher")

