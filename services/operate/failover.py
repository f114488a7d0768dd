"""``standby failover (PLAN... | --execution-plan NAME) [--dry-run] [--wait] [--timeout]``.

Creates (or reuses) the RecoveryExecutionPlan, creates a RecoveryExecutionJob for it and, with
``--wait``, follows the job the recovery operator runs: one line per stage and per wave with the
time since the command started, then every object that failed with its reason (with
``--dry-run``: what would change). Exit ``OK`` only when the job Completed, ``NOT_MET`` when it
ended PartiallyFailed or Failed, ``TIMEOUT`` when ``--timeout`` passed first (the job goes on in
the cluster: the operator owns it). Refused, with nothing created: an unknown plan or execution
plan, and a job of the same execution plan still running."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from schemas import API_VERSION, api
from services.common.kube import ApiError, KubeClient
from services.operate import output

POLL_SECONDS = 0.5


def execution_plan_for(plans: Sequence[str], namespace: str, *, wait_seconds: int) -> dict[str, Any]:
    """One wave with ``plans``, waiting for readiness: what ``standby failover PLAN...`` runs."""
    joined = "-".join(sorted(plans))
    name = f"failover-{joined}"
    if len(name) > 63:
        name = f"failover-{joined[:40]}-{hashlib.sha256(joined.encode()).hexdigest()[:10]}"
    return {"apiVersion": API_VERSION, "kind": "RecoveryExecutionPlan",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "standby"}},
            "spec": {"waves": [{"name": "failover", "waitForReady": True, "timeoutSeconds": wait_seconds,
                                "recoveryPlans": [{"name": p, "namespace": namespace} for p in sorted(plans)]}]}}


async def _exists(client: KubeClient, path: str) -> dict[str, Any] | None:
    try:
        return await client.get(path)
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


async def start(client: KubeClient, namespace: str, *, plans: Sequence[str], execution_plan: str | None,
                dry_run: bool, wait_seconds: int, stages: output.Stages) -> str:
    """Create what the failover needs and the job; the job's name. ``CommandError`` (nothing
    created) for bad input."""
    base = f"/apis/{API_VERSION}/namespaces/{namespace}"
    if execution_plan is None:
        for plan in plans:
            if await _exists(client, f"{base}/recoveryplans/{plan}") is None:
                raise output.CommandError(
                    f"recoveryplan {namespace}/{plan} not found in this cluster (3 clusters: plans live in the "
                    "management cluster; fail over with --execution-plan NAME in the stand-by)")
        body = execution_plan_for(plans, namespace, wait_seconds=wait_seconds)
        execution_plan = body["metadata"]["name"]
        create_plan: dict[str, Any] | None = body
    else:
        if await _exists(client, f"{base}/recoveryexecutionplans/{execution_plan}") is None:
            raise output.CommandError(f"recoveryexecutionplan {namespace}/{execution_plan} not found")
        create_plan = None
    jobs, _ = await client.list_all(f"{base}/recoveryexecutionjobs")
    running = [j["metadata"]["name"] for j in jobs
               if (j["spec"].get("recoveryExecutionPlanRef") or {}).get("name") == execution_plan
               and (j.get("status") or {}).get("phase") not in api.TERMINAL_PHASES]
    if running:
        raise output.CommandError(f"recoveryexecutionjob {namespace}/{running[0]} of {execution_plan} is still "
                                  "running: follow it, or wait until it ends")
    if create_plan is not None:
        await client.apply(f"{base}/recoveryexecutionplans/{execution_plan}", create_plan, field_manager="standby-cli")
        stages.line(f"recoveryexecutionplan {execution_plan} ready (one wave: {', '.join(sorted(plans))})")
    job = await client.request("POST", f"{base}/recoveryexecutionjobs", body={
        "apiVersion": API_VERSION, "kind": "RecoveryExecutionJob",
        "metadata": {"generateName": f"{execution_plan}-", "namespace": namespace},
        "spec": {"recoveryExecutionPlanRef": {"name": execution_plan, "namespace": namespace}, "dryRun": dry_run}})
    name = str(job["metadata"]["name"])
    stages.line(f"recoveryexecutionjob {name} created" + (" (dry run: nothing is changed)" if dry_run else ""))
    return name


def _wave_line(wave: api.WaveResult) -> str:
    failed = f", {wave.failed} failed" if wave.failed else ""
    return f"wave {wave.name}: {wave.phase} {wave.done}/{wave.total}{failed}" + (
        f" ({wave.message})" if wave.message and wave.phase != "Running" else "")


async def follow(client: KubeClient, namespace: str, name: str, *, timeout: float,
                 stages: output.Stages) -> tuple[int, api.RecoveryExecutionJobStatus | None]:
    """Print the job's stages until it ends or ``timeout``; the exit code and its last status."""
    path = f"/apis/{API_VERSION}/namespaces/{namespace}/recoveryexecutionjobs/{name}"
    seen_phase, seen_waves = "", dict[str, str]()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    status: api.RecoveryExecutionJobStatus | None = None
    while True:
        raw = (await client.get(path)).get("status")
        if raw:
            status = api.RecoveryExecutionJobStatus.model_validate(raw)
            terminal = status.phase in api.TERMINAL_PHASES
            if status.phase != seen_phase and not terminal:
                seen_phase = status.phase
                stages.line(f"job {status.phase}" + (f": {status.message}" if status.message else ""))
            for wave in status.waves:
                line = _wave_line(wave)
                if seen_waves.get(wave.name) != line and wave.phase != "Pending":
                    seen_waves[wave.name] = line
                    stages.line(line)
            if terminal:  # after the waves' last lines, so the story reads in order
                stages.line(f"job {status.phase}" + (f": {status.message}" if status.message else ""))
            stages.progress(status.progress.done, status.progress.total, "objects")
            if terminal:
                return (output.OK if status.phase == "Completed" else output.NOT_MET), status
        if loop.time() > deadline:
            stages.line(f"timed out after {timeout:.0f}s; the job goes on: kubectl get rej {name} -n {namespace}")
            return output.TIMEOUT, status
        await asyncio.sleep(POLL_SECONDS)


def results(status: api.RecoveryExecutionJobStatus) -> str:
    """Every object that failed (with why), or with a dry run what would change; then the timings."""
    lines = []
    for obj in status.objects:
        if obj.outcome == "Failed":
            lines.append(f"FAILED  {obj.ref} ({obj.plan}): {obj.reason}")
        elif obj.outcome == "WouldChange":
            lines.append(f"WOULD CHANGE  {obj.ref} ({obj.plan}): {', '.join(obj.changes)}")
    if status.timings:
        lines.append("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in status.timings.items()))
    return "\n".join(lines) + ("\n" if lines else "")
