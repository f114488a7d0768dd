"""Reading RecoveryPlans and ManagedClusters from the service's own cluster, reaching the clusters
they name, and writing their status. A broken ManagedCluster or an invalid plan becomes a
condition with a reason; it never stops the other plans."""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from schemas import API_VERSION, api
from services.common import kube
from services.common.kube import ApiError, ConfigError, KubeClient, UnreachableError

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Plan:
    namespace: str
    name: str
    generation: int
    spec: api.RecoveryPlanSpec
    annotations: Mapping[str, str] = field(default_factory=dict)
    delete_breaker: api.DeleteBreakerStatus | None = None  # as the syncer last recorded it
    uid: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class PlanError(Exception):
    """A plan or cluster reference that cannot be used; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_plan(obj: Obj) -> Plan:
    meta = obj.get("metadata") or {}
    try:
        spec = api.RecoveryPlanSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        raise PlanError("InvalidSpec", str(exc)) from exc
    try:
        breaker = api.DeleteBreakerStatus.model_validate((obj.get("status") or {}).get("deleteBreaker") or {})
    except ValidationError:
        breaker = None
    return Plan(meta.get("namespace", ""), meta["name"], int(meta.get("generation", 0)), spec,
                meta.get("annotations") or {}, breaker, str(meta.get("uid", "")))


ALL_PLANS = f"/apis/{API_VERSION}/recoveryplans"


async def list_plans(client: KubeClient, namespace: str = "") -> list[Obj]:
    path = f"/apis/{API_VERSION}/namespaces/{namespace}/recoveryplans" if namespace else ALL_PLANS
    items, _ = await client.list_all(path)
    return items


def _what_supervisors_read(meta: Obj) -> tuple[Any, ...]:
    """The part of a plan the supervisors act on: its spec (generation), its annotations (the
    breaker reset) and its deletion. Status writes, several a second while a plan syncs, are not."""
    return meta.get("generation"), meta.get("annotations"), meta.get("deletionTimestamp")


async def follow_changes(client: KubeClient, changed: asyncio.Event, *, retry_seconds: float = 5.0) -> None:
    """Set ``changed`` whenever a RecoveryPlan is created, deleted, or changed in what the
    supervisors read (list + watch), until cancelled. The supervisors re-read the plans on a timer
    anyway; this makes them act on a new plan, a suspension or a breaker reset at once rather than
    at the next tick. Failures are retried after ``retry_seconds`` and never reach the caller: the
    timer still covers them."""
    known: dict[str, tuple[Any, ...] | None] = {}

    def listed(items: list[Obj]) -> None:
        known.clear()
        known.update({m.get("uid", ""): _what_supervisors_read(m) for m in (i.get("metadata") or {} for i in items)})
        changed.set()  # whatever happened before this LIST

    def event(type_: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        read = None if type_ == "DELETED" else _what_supervisors_read(meta)
        if known.get(meta.get("uid", "")) != read:
            known[meta.get("uid", "")] = read
            changed.set()

    await kube.follow(client, ALL_PLANS, listed=listed, changed=event, retry_seconds=retry_seconds,
                      what="plans (relying on the timer)", level=logging.INFO)


async def cluster_client(own: KubeClient, ref: api.ObjectRef, default_namespace: str, **kwargs: Any) -> KubeClient:
    """A client for the cluster a ManagedCluster points to (kubeconfig from its Secret)."""
    ns = ref.namespace or default_namespace
    try:
        mc = await own.get(f"/apis/{API_VERSION}/namespaces/{ns}/managedclusters/{ref.name}")
    except ApiError as exc:
        if exc.status == 404:
            raise PlanError("ClusterNotFound", f"ManagedCluster {ns}/{ref.name}: {exc.message}") from exc
        raise PlanError("ClusterUnreadable", str(exc)) from exc
    return await managed_cluster_client(own, mc, **kwargs)


async def managed_cluster_client(own: KubeClient, mc: Obj, **kwargs: Any) -> KubeClient:
    """A client for the cluster of the ManagedCluster ``mc``; :class:`PlanError` with the reason
    (SecretNotFound, KubeconfigMissing, KubeconfigInvalid, ...) when its Secret cannot serve."""
    try:
        spec = api.ManagedClusterSpec.model_validate(mc.get("spec") or {})
    except ValidationError as exc:
        raise PlanError("InvalidManagedCluster", str(exc)) from exc
    where = f"Secret {spec.secret_ref.namespace}/{spec.secret_ref.name}"
    try:
        secret = await own.get(f"/api/v1/namespaces/{spec.secret_ref.namespace}/secrets/{spec.secret_ref.name}")
    except ApiError as exc:
        if exc.status == 404:
            raise PlanError("SecretNotFound", f"{where} does not exist") from exc
        raise PlanError("SecretUnreadable", f"{where}: {exc}") from exc
    except UnreachableError as exc:
        raise PlanError("SecretUnreadable", f"{where}: {exc}") from exc
    raw = (secret.get("data") or {}).get("kubeconfig.yaml")
    if not raw:
        raise PlanError("KubeconfigMissing", f"{where} has no key kubeconfig.yaml")
    try:
        return KubeClient.from_kubeconfig(base64.b64decode(raw).decode(), **kwargs)
    except (ConfigError, ValueError) as exc:
        raise PlanError("KubeconfigInvalid", f"{where}: {exc}") from exc


def condition(type_: str, ok: bool, reason: str, message: str = "") -> Obj:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message[:1000],
            "lastTransitionTime": now_iso()}


def merge_conditions(current: list[Obj], updates: list[Obj]) -> list[Obj]:
    """Keep lastTransitionTime when the status of a condition did not change."""
    by_type = {c.get("type"): c for c in current}
    out = {c.get("type"): c for c in current}
    for new in updates:
        old = by_type.get(new["type"])
        if old is not None and old.get("status") == new["status"]:
            new = {**new, "lastTransitionTime": old.get("lastTransitionTime", new["lastTransitionTime"])}
        out[new["type"]] = new
    return list(out.values())


async def patch_status(client: KubeClient, plural: str, namespace: str, name: str, status: Obj) -> bool:
    """A merge patch of ``status``, unread first; whether it was written (failures are logged)."""
    try:
        await client.request(
            "PATCH", f"/apis/{API_VERSION}/namespaces/{namespace}/{plural}/{name}/status",
            body={"status": status}, content_type="application/merge-patch+json",
        )
        return True
    except (ApiError, UnreachableError) as exc:
        log.warning("could not update status of %s %s/%s: %s", plural, namespace, name, exc)
        return False


async def write_plan_status(client: KubeClient, plan: Plan, status: api.RecoveryPlanStatus, *,
                            conditions_written: bool = False) -> bool:
    """Write the fields of ``status`` that were set (None clears a field), merging its conditions
    with the ones other services wrote; whether it was written.

    ``conditions_written``: its conditions are the ones this writer last wrote (successfully), so
    only the other fields, the writer's own, are sent: one merge patch, no read first (the
    conditions, one list shared with the other service, need the read and the resourceVersion)."""
    fields = status.model_dump(by_alias=True, exclude_unset=True, mode="json")
    conditions = fields.pop("conditions", [])
    if conditions_written:
        return await patch_status(client, "recoveryplans", plan.namespace, plan.name, fields)
    for c in conditions:
        c["lastTransitionTime"] = c.get("lastTransitionTime") or now_iso()
    return await set_plan_conditions(client, plan, conditions, **fields)


async def set_plan_conditions(client: KubeClient, plan: Plan | Obj, conditions: list[Obj], **fields: Any) -> bool:
    """Merge ``conditions`` into the plan's (other services write theirs) and set ``fields``.

    The watcher and the syncer both write a plan's conditions, which travel as one list: the
    write carries the resourceVersion it read, and a conflict (409) reads and merges again, so
    neither overwrites what the other just wrote. Whether it was written (failures are logged)."""
    if isinstance(plan, Plan):
        ns, name = plan.namespace, plan.name
    else:
        ns, name = plan["metadata"]["namespace"], plan["metadata"]["name"]
    path = f"/apis/{API_VERSION}/namespaces/{ns}/recoveryplans/{name}"
    for _ in range(5):
        try:
            current = await client.get(path)
            status = dict(current.get("status") or {})
            status["conditions"] = merge_conditions(status.get("conditions") or [], conditions)
            status.update(fields)
            await client.request("PATCH", f"{path}/status", content_type="application/merge-patch+json", body={
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "status": status})
            return True
        except ApiError as exc:
            if exc.status == 409:
                continue
            log.warning("could not update status of recoveryplans %s/%s: %s", ns, name, exc)
            return False
        except UnreachableError as exc:
            log.warning("could not update status of recoveryplans %s/%s: %s", ns, name, exc)
            return False
    log.warning("could not update status of recoveryplans %s/%s: it kept changing", ns, name)
    return False
