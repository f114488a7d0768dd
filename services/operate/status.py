"""``standby status [PLAN]``: is each plan protecting, and can each cluster be used?

Everything comes from the statuses the services write (the plans' and the ManagedClusters') and
the Leases their replicas hold, read with the caller's credentials: no broker access, nothing
written. A plan is *protecting* when it is ``Synced``, its source answers, its clusters are Ready,
no change was dead-lettered, its delete breaker is closed and a live replica of the watcher and of
the syncer each holds its Lease (a plan whose replicas are all gone keeps its last status, however
good); the command exits ``NOT_MET`` when a plan or cluster shown is not. Leases the caller may not
read are not held against a plan (``servedBy`` is null)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas import API_VERSION
from services.common import leasing
from services.common.kube import ApiError, KubeClient
from services.operate import output, requests

PLAN_COLUMNS = ("name", "phase", "source", "heard", "behind", "in-sync", "out-of-sync", "failed", "breaker",
                "fence", "served-by", "protecting")
SERVICES = ("watcher", "syncer")
# A Lease counts as held while its renewal is younger than its duration and this much more: the
# caller's clock is compared with the replicas' (the replicas themselves never do that).
CLOCK_SKEW_SECONDS = 10.0
CLUSTER_COLUMNS = ("cluster", "ready", "reason", "version", "probed")


def _since(stamp: str | None, now: datetime.datetime) -> float | None:
    if not stamp:
        return None
    return (now - datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def served_by(plan: Mapping[str, Any], leases: Mapping[str, Mapping[str, Any]] | None,
              now: datetime.datetime) -> dict[str, str | None] | None:
    """The replica of each service that serves ``plan`` (its Lease's live holder; None: none does),
    from the Leases by name; None when they could not be read."""
    if leases is None:
        return None
    uid = str(plan["metadata"].get("uid", ""))
    out: dict[str, str | None] = {}
    for component in SERVICES:
        spec = (leases.get(leasing.plan_lease_name(component, uid)) or {}).get("spec") or {}
        renewed = _since(spec.get("renewTime"), now)
        live = renewed is not None and renewed <= int(spec.get("leaseDurationSeconds") or 0) + CLOCK_SKEW_SECONDS
        out[component] = str(spec["holderIdentity"]) if live and spec.get("holderIdentity") else None
    return out


def plan_facts(plan: Mapping[str, Any], now: datetime.datetime,
               leases: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """What ``status`` says of one plan, as data (``-o json``), from its object and the Leases of
    the services' replicas (by name; None: not readable)."""
    status = plan.get("status") or {}
    meta = plan["metadata"]
    source = _condition(status, "SourceReachable").get("status")
    clusters = _condition(status, "ClustersReady")
    breaker_open = bool((status.get("deleteBreaker") or {}).get("open"))
    facts = {
        "name": meta["name"], "namespace": meta.get("namespace", ""),
        "phase": "Suspended" if (plan.get("spec") or {}).get("suspend") else status.get("phase") or "Pending",
        "sourceReachable": {"True": True, "False": False}.get(str(source)),
        "sourceLastHeardSeconds": _since(status.get("sourceLastHeardTime"), now),
        "pendingChangeAgeSeconds": status.get("pendingChangeAgeSeconds"),
        "objectsInSync": status.get("objectsInSync", 0),
        "objectsOutOfSync": status.get("objectsOutOfSync"),
        "deadLetters": status.get("objectsFailed", 0),
        "deleteBreakerOpen": breaker_open,
        "fenced": status.get("phase") == "Activated",
        "clustersReady": clusters.get("status") != "False",
        "clustersMessage": clusters.get("message", ""),
        "servedBy": served_by(plan, leases, now),
    }
    served = facts["servedBy"] is None or all(facts["servedBy"].values())
    facts["protecting"] = (facts["phase"] == "Synced" and facts["sourceReachable"] is True
                           and facts["clustersReady"] and not facts["deadLetters"] and not breaker_open and served)
    return facts


def plan_row(facts: Mapping[str, Any]) -> dict[str, Any]:
    behind = facts["pendingChangeAgeSeconds"]
    return {
        "name": facts["name"], "phase": facts["phase"],
        "source": {True: "Reachable", False: "Unreachable"}.get(facts["sourceReachable"], "Unknown"),
        "heard": output.age(facts["sourceLastHeardSeconds"]) + (" ago" if facts["sourceLastHeardSeconds"] else ""),
        "behind": "-" if behind is None else output.age(behind),
        "in-sync": facts["objectsInSync"],
        "out-of-sync": "-" if facts["objectsOutOfSync"] is None else facts["objectsOutOfSync"],
        "failed": facts["deadLetters"], "breaker": "Open" if facts["deleteBreakerOpen"] else "Closed",
        "fence": "Fenced" if facts["fenced"] else "-", "served-by": _served_column(facts["servedBy"]),
        "protecting": "Yes" if facts["protecting"] else "No",
    }


def _served_column(served: Mapping[str, str | None] | None) -> str:
    if served is None:
        return "?"
    return ",".join(served[component] or "-" for component in SERVICES)


def unserved(facts: Mapping[str, Any]) -> str:
    """Why the plan is not served, or ''."""
    missing = [component for component, holder in (facts["servedBy"] or {}).items() if not holder]
    if not missing:
        return ""
    return f"{facts['name']}: no live {' or '.join(missing)} replica holds its Lease: nothing is " + (
        "recording its source's changes" if "watcher" in missing else "writing its copies")


def cluster_facts(mc: Mapping[str, Any], now: datetime.datetime) -> dict[str, Any]:
    status = mc.get("status") or {}
    ready = _condition(status, "Ready")
    return {"name": mc["metadata"]["name"], "namespace": mc["metadata"].get("namespace", ""),
            "ready": ready.get("status") == "True", "reason": ready.get("reason") or "NotProbed",
            "message": ready.get("message", ""), "serverVersion": status.get("serverVersion"),
            "lastProbeSeconds": _since(status.get("lastProbeTime"), now)}


def cluster_row(facts: Mapping[str, Any]) -> dict[str, Any]:
    probed = facts["lastProbeSeconds"]
    return {"cluster": facts["name"], "ready": "True" if facts["ready"] else "False", "reason": facts["reason"],
            "version": facts["serverVersion"] or "-", "probed": output.age(probed) + " ago" if probed else "never"}


@dataclass
class Report:
    plans: list[dict[str, Any]]
    clusters: list[dict[str, Any]]

    @property
    def exit_code(self) -> int:
        healthy = all(p["protecting"] for p in self.plans) and all(c["ready"] for c in self.clusters)
        return output.OK if healthy else output.NOT_MET

    def render(self, fmt: str) -> str:
        if fmt != "table":
            return output.data({"plans": self.plans, "clusters": self.clusters}, fmt)
        text = output.table([plan_row(p) for p in self.plans], PLAN_COLUMNS) if self.plans else "No plans.\n"
        for p in self.plans:
            if why := unserved(p):
                text += f"\n{why}"
        if self.clusters:
            text += "\n" + output.table([cluster_row(c) for c in self.clusters], CLUSTER_COLUMNS)
        for c in self.clusters:
            if not c["ready"] and c["message"]:
                text += f"\n{c['name']}: {c['message']}"
        return text if text.endswith("\n") else text + "\n"


async def plan_leases(client: KubeClient, namespace: str) -> dict[str, dict[str, Any]] | None:
    """The plans' Leases of the services running in ``namespace``, by name; None when the caller
    may not read them."""
    try:
        items, _ = await client.list_all(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
                                         label_selector=f"{leasing.LEASE_ROLE}={leasing.PLAN}")
    except ApiError as exc:
        if exc.status in (401, 403):
            return None
        raise
    return {lease["metadata"]["name"]: lease for lease in items}


async def gather(client: KubeClient, namespace: str, plan: str | None = None, *,
                 services_namespace: str | None = None) -> Report:
    """The plans in ``namespace`` (or the one named), who serves them (the Leases in
    ``services_namespace``, by default ``namespace``) and the ManagedClusters they use."""
    base = f"/apis/{API_VERSION}/namespaces/{namespace}"
    now = datetime.datetime.now(datetime.UTC)
    if plan:
        plans = [await requests.get_plan(client, namespace, plan)]
    else:
        plans, _ = await client.list_all(f"{base}/recoveryplans")
    clusters, _ = await client.list_all(f"{base}/managedclusters")
    leases = await plan_leases(client, services_namespace or namespace)
    used = {ref["name"] for p in plans for ref in (p["spec"].get("sourceClusterRef"),
                                                   p["spec"].get("destinationClusterRef")) if ref}
    if plan:
        clusters = [mc for mc in clusters if mc["metadata"]["name"] in used]
    return Report([plan_facts(p, now, leases) for p in sorted(plans, key=lambda p: p["metadata"]["name"])],
                  [cluster_facts(mc, now) for mc in sorted(clusters, key=lambda m: m["metadata"]["name"])])
