"""Failover speed: N deactivated Deployments in a full stand-by (scheduler, controllers, kwok
nodes); time from creating the RecoveryExecutionJob to all specs restored and to all Available;
and, in the same run, on identical sets, each after the cluster has settled from the one before:
the baseline (a plain concurrent client merge-patching the replicas back) and the same client
sending the job's own JSON patches (what the patch costs, without the operator, fence or listing).

    .venv/bin/python benchmarks/activation.py [--deployments 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from common import SYSTEM, KubeClient, apply_all, count_until, deployment, namespace, run, start_env, stop_env

from schemas import API_VERSION, sanitizing, transforms
from services.common.kube import ApiError

WORKLOADS = "/apis/apps/v1/namespaces/{ns}/deployments"


def copies(ns: str, n: int, plan: str) -> list[dict[str, Any]]:
    prov = transforms.Provenance(SYSTEM, plan, 0, "uid", "1")
    return [transforms.deactivate(sanitizing.sanitize(deployment(ns, f"app-{i}", replicas=1)), prov)
            for i in range(n)]


def restored(d: dict[str, Any]) -> bool:
    return bool(d["spec"].get("replicas") == 1)


def available(d: dict[str, Any]) -> bool:
    return bool((d.get("status") or {}).get("availableReplicas", 0) >= 1)


async def patched(dst: KubeClient, ns: str, n: int,
                  patch: Callable[[dict[str, Any]], tuple[Any, str]]) -> tuple[float, float]:
    """A plain client, 64 in flight, patching every copy of ``ns``: seconds to the last response,
    and to all Available (seen by a watch)."""
    items, _ = await dst.list_all(WORKLOADS.format(ns=ns))
    sem = asyncio.Semaphore(64)

    async def one(obj: dict[str, Any]) -> None:
        body, content_type = patch(obj)
        async with sem:
            await dst.request("PATCH", f"{WORKLOADS.format(ns=ns)}/{obj['metadata']['name']}", body=body,
                              content_type=content_type, parse=False)
    available_seen = asyncio.create_task(count_until(dst, [WORKLOADS.format(ns=ns)], n, timeout=900,
                                                     predicate=available))
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    await asyncio.gather(*(one(obj) for obj in items))
    specs = time.monotonic() - t0
    return specs, await available_seen - t0


async def gone(dst: KubeClient, path: str, timeout: float = 600) -> None:
    """Delete ``path`` and wait until it is gone (a namespace: everything in it too)."""
    await dst.request("DELETE", path, parse=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await dst.get(path)
        except ApiError as exc:
            if exc.not_found:
                return
            raise
        await asyncio.sleep(1)
    raise TimeoutError(f"{path} still there after {timeout}s")


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=1000)
    args = parser.parse_args()
    n = args.deployments
    env = start_env(full=True, services=("recovery",), extra_env={"STANDBY_RECOVERY_SERVE__LOG_LEVEL": "WARNING"})
    try:
        async with KubeClient.from_kubeconfig(env.clusters["destination"].kubeconfig, connections=64) as dst:
            for ns in ("act", "base", "jsonpatch", "after"):
                await namespace(dst, ns)
                await apply_all(dst, copies(ns, n, ns))

            # Baseline: a plain concurrent client patching replicas back.
            base_specs, base_available = await patched(dst, "base", n, lambda obj: (
                {"spec": {"replicas": 1}}, "application/merge-patch+json"))
            # The job's own patches, sent by the same plain client.
            json_specs, json_available = await patched(dst, "jsonpatch", n, lambda obj: (
                transforms.activation_patch(obj), "application/json-patch+json"))

            await dst.apply(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryexecutionplans/act", {
                "apiVersion": API_VERSION, "kind": "RecoveryExecutionPlan",
                "metadata": {"name": "act", "namespace": SYSTEM},
                "spec": {"waves": [{"name": "all", "recoveryPlans": [{"name": "act", "namespace": SYSTEM}]}]}},
                field_manager="bench")
            # Watches (not polled LISTs, which lag by a second under this load) see each change.
            paths = [WORKLOADS.format(ns="act")]
            specs_seen = asyncio.create_task(count_until(dst, paths, n, timeout=300, predicate=restored))
            available_seen = asyncio.create_task(count_until(dst, paths, n, timeout=900, predicate=available))
            await asyncio.sleep(0.5)  # the watches are established
            t0 = time.monotonic()
            job = await dst.request("POST", f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryexecutionjobs", body={
                "apiVersion": API_VERSION, "kind": "RecoveryExecutionJob",
                "metadata": {"generateName": "act-", "namespace": SYSTEM},
                "spec": {"recoveryExecutionPlanRef": {"name": "act", "namespace": SYSTEM}}})
            specs_at = await specs_seen
            act_available = await available_seen - t0
            status = (await dst.get(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryexecutionjobs/"
                                    f"{job['metadata']['name']}")).get("status") or {}
            specs = specs_at - t0
            # The plain client's JSON patches once more, after the job: what running later (more
            # Deployments, ReplicaSets and Pods in the cluster) costs by itself. The baseline's set
            # goes first: the kwok nodes hold 3,000 pods.
            await gone(dst, "/api/v1/namespaces/base")
            after_specs, _ = await patched(dst, "after", n, lambda obj: (
                transforms.activation_patch(obj), "application/json-patch+json"))
            result = {
                "benchmark": "activation", "deployments": n, "job_phase": status.get("phase"),
                "specs_restored_seconds": round(specs, 2), "all_available_seconds": round(act_available, 2),
                "baseline_patch_seconds": round(base_specs, 2), "baseline_available_seconds": round(base_available, 2),
                "json_patches_seconds": round(json_specs, 2),
                "json_patches_available_seconds": round(json_available, 2),
                "json_patches_after_the_job_seconds": round(after_specs, 2),
                "ratio_specs_vs_baseline": round(specs / base_specs, 2),
                "ratio_available_vs_baseline": round(act_available / base_available, 2),
                "target_specs_seconds": 10, "meets_target": specs <= 10,
                "job_timings_seconds": status.get("timings"),
                "note": "job timings: fenceEnforced (the API server enforces the fence) or fenceSettled (waited "
                        "fence_settle_seconds)",
            }
            print(result, flush=True)
            return result
    finally:
        stop_env(env)


if __name__ == "__main__":
    run(main)
