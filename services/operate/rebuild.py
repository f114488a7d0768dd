"""``standby rebuild PLAN``, run directly by the command: the plan's objects as of a moment, from its
stream into the live stand-by or another cluster.

Safety first, before anything is written: a moment in the future or out of the stream's reach, a
sealed Secret whose key is not held, a deactivated rebuild into the plan's source (the same cluster
by its kube-system namespace's uid, whatever the kubeconfig calls it), or into a stand-by where the
plan has failed over (its copies run: deactivating them would take the application down) are
refused with the reason. Rebuilding the live stand-by pauses the plan (``spec.suspend``) and
resumes it as it was, so the syncer does not write the same copies meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from schemas import annotations as ann
from schemas import api, durations, rebuilds
from services.common import history, plans, rebuilding, settings
from services.common.kube import ApiError, KubeClient
from services.operate import output, requests

COLUMNS = ("action", "object", "fields")


def parse_moment(text: str | None, now: float) -> float | None:
    """``--at``: RFC 3339 (``2026-11-29T10:15:00Z``) or a negative duration from now (``-15m``)."""
    if not text:
        return None
    if text.startswith("-"):
        try:
            return now + durations.parse(text)
        except ValueError as exc:
            raise output.CommandError(f"--at {text}: {exc}") from exc
    try:
        return history.parse_rfc3339(text)
    except ValueError as exc:
        raise output.CommandError(f"--at {text!r}: give an RFC 3339 time (2026-11-29T10:15:00Z) or a negative "
                                  f"duration (-15m)") from exc


def parse_labels(text: str | None) -> api.LabelSelector | None:
    """``-l``: ``key=value`` pairs, comma-separated, all to match."""
    if not text:
        return None
    pairs = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or "!" in key:
            raise output.CommandError(f"-l {text!r}: give key=value pairs, comma-separated")
        pairs[key.strip()] = value.strip().lstrip("=")
    return api.LabelSelector(match_labels=pairs)


@dataclass(frozen=True)
class Target:
    client: KubeClient
    name: str  # what the output calls it
    live_standby: bool  # the plan's own destination


async def cluster_uid(client: KubeClient) -> str:
    return str((await client.get("/api/v1/namespaces/kube-system"))["metadata"]["uid"])


async def target(own: KubeClient, plan: plans.Plan, cluster: str | None) -> Target:
    if cluster is None:
        if plan.spec.destination_cluster_ref is None:
            return Target(own, "the stand-by (this cluster)", True)
        ref = plan.spec.destination_cluster_ref
        live = True
    else:
        ref = api.ObjectRef(name=cluster, namespace=plan.namespace)
        destination = plan.spec.destination_cluster_ref
        live = destination is not None and destination.name == cluster
    try:
        client = await plans.cluster_client(own, ref, plan.namespace, user_agent="standby-cli")
    except plans.PlanError as exc:
        raise output.CommandError(f"{exc.reason}: {exc.message}") from exc
    return Target(client, f"managedcluster {ref.name}", live)


async def refuse_unsafe(own: KubeClient, plan: plans.Plan, where: Target, mode: str) -> None:
    if mode != "Deactivated":
        return
    try:
        source = await plans.cluster_client(own, plan.spec.source_cluster_ref, plan.namespace, user_agent="standby-cli")
    except plans.PlanError:
        source = None
    if source is not None:
        try:
            if await cluster_uid(source) == await cluster_uid(where.client):
                raise output.CommandError(f"{where.name} is the plan's source cluster: a deactivated rebuild there "
                                          f"would switch the application off (--active restores into a source)")
        except ApiError:
            pass  # the source is gone: it cannot be the target either
        finally:
            await source.close()
    fence = f"/api/v1/namespaces/{settings.NAMESPACE}/configmaps/{ann.fence_name(plan.namespace, plan.name)}"
    try:
        await where.client.get(fence)
    except ApiError as exc:
        if exc.not_found:
            return
        raise
    raise output.CommandError(f"{plan.key} has failed over in {where.name} (its copies run): a deactivated rebuild "
                              f"would switch them off; rebuild into another cluster, or --active")


async def set_suspended(own: KubeClient, plan: plans.Plan, suspend: bool) -> None:
    await own.request("PATCH", requests.plan_path(plan.namespace, plan.name),
                      body={"spec": {"suspend": suspend}}, content_type="application/merge-patch+json")


async def wait_suspended(own: KubeClient, plan: plans.Plan, timeout: float = 30.0) -> None:
    """Until the plan's status says Suspended (the watcher's answer), and a moment for the syncer,
    which reads the same change of the plan."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = await own.get(requests.plan_path(plan.namespace, plan.name))
        if (obj.get("status") or {}).get("phase") == "Suspended":
            await asyncio.sleep(1.0)
            return
        await asyncio.sleep(0.5)
    raise output.CommandError(f"{plan.key} did not report Suspended within {timeout:.0f}s; nothing was written")


def render_steps(steps: Sequence[rebuilds.Step], fmt: str) -> str:
    shown = [s for s in steps if s.action != "unchanged"]
    if fmt != "table":
        return output.data([{"action": s.action, "object": str(s.key), "fields": list(s.fields)} for s in steps], fmt)
    if not shown:
        return "Nothing to change: the target holds the rebuilt state.\n"
    rows = [{"action": s.action, "object": str(s.key),
             "fields": ", ".join(s.fields[:6]) + (f" (+{len(s.fields) - 6})" if len(s.fields) > 6 else "")}
            for s in shown]
    return output.table(rows, COLUMNS)


def render_outcomes(outcomes: Sequence[rebuilding.Outcome]) -> str:
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return ""
    return output.table([{"object": str(o.step.key), "action": o.step.action, "error": o.message} for o in failed],
                        ("object", "action", "error"))
