"""What fences cost the stand-by's API server: N deactivated Deployments of one plan switched on
(the job's own patches, 64 in flight) while F plans are fenced, that plan among them, in a
light stand-by (API server and etcd only; the fence policy installed as shipped).

The API server evaluates a ValidatingAdmissionPolicy once per parameter object of each binding
that matches a write, and each evaluation first turns the whole object, before and after the write,
into CEL's form. Two ways of binding the fences, measured in the same run, rounds interleaved:

- **per plan** (shipped): recovery binds the policy to each fenced plan's copies (selected by
  their plan label) with that plan's fence as the only parameter; a write is evaluated once, against
  its own plan's fence, however many plans are fenced;
- **one binding** (before session 18): a single binding whose parameters are every fence (a
  selector); each write of a copy is evaluated against all F of them.

    .venv/bin/python benchmarks/fences.py [--deployments 1000] [--fences 1,20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from activation import activation_patch, copies
from common import SYSTEM, CpuMeter, KubeClient, apply_all, namespace, run, start_env, stop_env

from schemas import annotations as ann
from services.common import fencing

ONE_BINDING = f"{fencing.ADMISSION}/validatingadmissionpolicybindings/standby-fence-every-fence"


async def unfence(dst: KubeClient) -> None:
    """No fence, no binding of the benchmark's (the binding shipped for unlabelled copies stays)."""
    selector = {"labelSelector": f"{ann.FENCE_LABEL}=true"}
    await dst.request("DELETE", f"/api/v1/namespaces/{SYSTEM}/configmaps", params=selector, parse=False)
    await dst.request("DELETE", f"{fencing.ADMISSION}/validatingadmissionpolicybindings", params=selector, parse=False)


async def fence(dst: KubeClient, plans: list[str], layout: str) -> None:
    for plan in plans:
        if layout == "per_plan":
            assert await fencing.write(dst, SYSTEM, f"{SYSTEM}/{plan}", epoch=1, job="bench")
        else:
            await dst.apply(f"/api/v1/namespaces/{SYSTEM}/configmaps/{ann.fence_name(SYSTEM, plan)}",
                            fencing.fence_body(SYSTEM, SYSTEM, plan, epoch=1, job="bench"), field_manager="bench")
    if layout == "one_binding":
        await dst.apply(ONE_BINDING, {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": ONE_BINDING.rsplit("/", 1)[1], "labels": {ann.FENCE_LABEL: "true"}},
            "spec": {"policyName": fencing.POLICY, "validationActions": ["Deny"],
                     "paramRef": {"namespace": SYSTEM, "selector": {"matchLabels": {ann.FENCE_LABEL: "true"}},
                                  "parameterNotFoundAction": "Allow"}}}, field_manager="bench")


async def round_of(dst: KubeClient, apiserver: int, ns: str, n: int, fences: int, layout: str,
                   patch: Callable[[dict[str, Any]], tuple[Any, str]] = activation_patch) -> dict[str, float]:
    """Switch on the N copies of plan ``ns`` with ``fences`` plans fenced (``ns`` and others), each
    with what ``patch`` gives for it (a body and its content type: by default the job's)."""
    await namespace(dst, ns)
    await apply_all(dst, copies(ns, n, ns))
    await unfence(dst)
    if fences:
        await fence(dst, [ns] + [f"{ns}-other-{i}" for i in range(fences - 1)], layout)
        if not await fencing.enforced(dst, SYSTEM, {f"{SYSTEM}/{ns}"}, timeout=10):
            raise RuntimeError(f"the fence of {ns} is not in force ({layout})")
    items, _ = await dst.list_all(f"/apis/apps/v1/namespaces/{ns}/deployments")
    gate = asyncio.Semaphore(64)

    async def one(obj: dict[str, Any]) -> None:
        body, content_type = patch(obj)
        async with gate:
            await dst.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{obj['metadata']['name']}",
                              body=body, content_type=content_type, parse=False)
    await asyncio.sleep(2)  # the copies' own writes settled
    cpu = CpuMeter({"apiserver": apiserver})
    started = time.monotonic()
    await asyncio.gather(*(one(obj) for obj in items))
    seconds = time.monotonic() - started
    spent = cpu.spent().get("apiserver", 0.0)  # under 0.05 s is not reported
    await unfence(dst)
    await dst.request("DELETE", f"/api/v1/namespaces/{ns}", parse=False)
    return {"seconds": seconds, "apiserver_cpu_seconds": spent}


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--fences", default="1,20", help="numbers of fenced plans, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [0] + [int(f) for f in args.fences.split(",")]
    env = start_env(full=False, services=())
    try:
        async with KubeClient.from_kubeconfig(env.clusters["destination"].kubeconfig, connections=64) as dst:
            apiserver = env.clusters["destination"].processes["kube-apiserver"].pid
            measured: dict[str, list[dict[str, float]]] = {}
            for r in range(args.rounds):
                for fences in counts:
                    for layout in (["per_plan", "one_binding"] if fences else ["none"]):
                        name = f"{layout}_{fences}" if fences else "no_fence"
                        measured.setdefault(name, []).append(
                            await round_of(dst, apiserver, f"f{r}-{fences}-{layout.replace('_', '')}",
                                           args.deployments, fences, layout))
    finally:
        stop_env(env)
    result: dict[str, Any] = {"benchmark": "fences", "deployments": args.deployments, "rounds": args.rounds}
    for name, rounds in measured.items():
        result[name] = {key: round(statistics.median(r[key] for r in rounds), 2) for key in rounds[0]}
    worst = max(counts)
    if worst and result["per_plan_1"]["apiserver_cpu_seconds"] and result["one_binding_1"]["apiserver_cpu_seconds"]:
        # Per plan, the cost must not grow with the number of fences (within the noise of the machine).
        result["per_plan_cpu_ratio_most_to_one_fence"] = round(
            result[f"per_plan_{worst}"]["apiserver_cpu_seconds"] / result["per_plan_1"]["apiserver_cpu_seconds"], 2)
        result["one_binding_cpu_ratio_most_to_one_fence"] = round(
            result[f"one_binding_{worst}"]["apiserver_cpu_seconds"]
            / result["one_binding_1"]["apiserver_cpu_seconds"], 2)
    return result


if __name__ == "__main__":
    run(main)
