"""Failover speed: N deactivated Deployments in a full stand-by (scheduler, controllers, kwok
nodes); time from creating the RecoveryExecutionJob to all specs restored and to all Available;
and, in the same run, on identical sets: the baseline (a plain concurrent client merge-patching the
replicas back) before the job and again after it, and the same client sending the job's own JSON
patches (what the patch costs, without the operator, fence or listing), once with the job's fence
still in place (what the fence policy costs) and once without. Each measurement reports the
stand-by's own view of it too: its API server's latency per patch, time in admission, in the fence
policy, in queues and on etcd, the other writes it served meanwhile, and each process's CPU. Every
"specs restored" and "all Available" is seen by watches, for the job and the plain client alike
(the plain client's last response is reported too: the watch sees the last change up to a second
later under this load).

How fast a plain client patches depends on what the stand-by holds and does: in one run the same
baseline took 3.7 s in a fresh stand-by and 8.4 s after the job (its set on, its fence there). So each
measurement runs alone, in a settled stand-by: the set before it is deleted (and gone) first, and
the API server serves fewer than 5 writes/s. The baseline runs twice, first in the fresh stand-by
and again after the job, in the job's own conditions; the job is compared with that second
baseline and with the mean of the two.

    .venv/bin/python benchmarks/activation.py [--deployments 1000] [--profile-into DIR] [--profile-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    SYSTEM,
    CpuMeter,
    KubeClient,
    SpeedProbe,
    apply_all,
    count_until,
    cpu_profile,
    deployment,
    metric_sum,
    metric_sums,
    namespace,
    requests_by_kind,
    run,
    start_env,
    stop_env,
)

from schemas import API_VERSION, api, sanitizing, transforms
from schemas import annotations as ann
from services.common import fencing
from services.common.kube import ApiError

WORKLOADS = "/apis/apps/v1/namespaces/{ns}/deployments"
JOBS = f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryexecutionjobs"


# The stand-by's own view of one measurement: what its API server spent on the Deployment patches
# (their latency summed over the requests), in admission and in the fence policy, waiting in its
# priority-and-fairness queues and on etcd, and how many writes it served in all (the controllers',
# the scheduler's and kwok's besides the patches).
SERVER_VIEW: dict[str, tuple[str, dict[str, str | tuple[str, ...]]]] = {
    "patches": ("apiserver_request_duration_seconds_count", {"verb": "PATCH", "resource": "deployments"}),
    "patch_seconds": ("apiserver_request_duration_seconds_sum", {"verb": "PATCH", "resource": "deployments"}),
    "writes": ("apiserver_request_total", {"verb": ("POST", "PUT", "PATCH", "DELETE")}),
    "admission_seconds": ("apiserver_admission_step_admission_duration_seconds_sum", {}),
    "fence_policy_seconds": ("apiserver_admission_controller_admission_duration_seconds_sum",
                             {"name": "ValidatingAdmissionPolicy"}),
    "queue_wait_seconds": ("apiserver_flowcontrol_request_wait_duration_seconds_sum", {}),
    "etcd_seconds": ("etcd_request_duration_seconds_sum", {}),
}
PROCESSES = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")


class Meter:
    """What the stand-by did during one measurement: its API server's view (and the requests it
    served, by verb and resource), each process's CPU and the machine's speed (common.SpeedProbe)."""

    def __init__(self, dst: KubeClient, pids: dict[str, int], *, profile_into: Path | None = None,
                 profile_seconds: float = 5) -> None:
        self.dst, self.pids = dst, pids
        self.profile_into, self.profile_seconds = profile_into, profile_seconds

    async def start(self, name: str) -> None:
        """Before measurement ``name``; with ``profile_into``, a CPU profile of the API server from
        here (``profile_into``/NAME.pprof, ``profile_seconds`` long)."""
        self.before, self.cpu = await metric_sums(self.dst, SERVER_VIEW), CpuMeter(self.pids)
        self.requests = await requests_by_kind(self.dst)
        self.probe = SpeedProbe(interval=0.2).start()
        self.profile = None if self.profile_into is None else asyncio.create_task(cpu_profile(
            self.dst, self.profile_into / f"{name}.pprof", after=0, seconds=self.profile_seconds))

    async def read(self, seconds: float) -> dict[str, Any]:
        cpu = self.cpu.spent()
        self.probe.stop()
        if self.profile is not None:
            await self.profile
        after = await metric_sums(self.dst, SERVER_VIEW)
        requests = await requests_by_kind(self.dst) - self.requests
        change = {key: after[key] - self.before[key] for key in SERVER_VIEW}
        patches = max(1.0, change["patches"])
        return {"patches": int(change["patches"]),
                "patch_latency_mean_ms": round(1000 * change["patch_seconds"] / patches, 1),
                "patches_in_flight_mean": round(change["patch_seconds"] / seconds, 1) if seconds else None,
                "other_writes": int(change["writes"] - change["patches"]),
                **{key: round(change[key], 2) for key in ("admission_seconds", "fence_policy_seconds",
                                                          "queue_wait_seconds", "etcd_seconds")},
                "cpu_seconds": cpu, "speed_probe_ms": self.probe.ms(),
                "requests": dict(requests.most_common(12))}


def copies(ns: str, n: int, plan: str) -> list[dict[str, Any]]:
    prov = transforms.Provenance(SYSTEM, plan, 0, "uid", "1")
    return [transforms.deactivate(sanitizing.sanitize(deployment(ns, f"app-{i}", replicas=1)), prov)
            for i in range(n)]


def merge_replicas(obj: dict[str, Any]) -> tuple[Any, str]:
    return {"spec": {"replicas": 1}}, "application/merge-patch+json"


def activation_patch(obj: dict[str, Any]) -> tuple[Any, str]:
    return transforms.activation_patch(obj), "application/json-patch+json"


def restored(d: dict[str, Any]) -> bool:
    return bool(d["spec"].get("replicas") == 1)


def available(d: dict[str, Any]) -> bool:
    return bool((d.get("status") or {}).get("availableReplicas", 0) >= 1)


async def quiet(dst: KubeClient, *, writes_per_second: float = 5, window: float = 3, timeout: float = 300) -> float:
    """Wait until the stand-by is settled: its API server serving fewer than ``writes_per_second``
    writes (the controllers, scheduler and kwok done with what came before); the seconds waited."""
    started = time.monotonic()
    writes = ("POST", "PUT", "PATCH", "DELETE")
    last = await metric_sum(dst, "apiserver_request_total", verb=writes)
    while time.monotonic() - started < timeout:
        await asyncio.sleep(window)
        now = await metric_sum(dst, "apiserver_request_total", verb=writes)
        if now - last < writes_per_second * window:
            return time.monotonic() - started
        last = now
    raise TimeoutError(f"the stand-by still serves >= {writes_per_second} writes/s after {timeout}s")


@dataclass(frozen=True)
class Patched:
    specs: float  # to every spec restored, seen by a watch (as the job's is)
    responses: float  # to the last response
    available: float  # to all Available, seen by a watch
    server: dict[str, Any]  # the stand-by's view, to every spec restored


async def patched(dst: KubeClient, meter: Meter, ns: str, n: int,
                  patch: Callable[[dict[str, Any]], tuple[Any, str]]) -> Patched:
    """A plain client, 64 in flight, patching every copy of ``ns``, in a settled stand-by."""
    path = WORKLOADS.format(ns=ns)
    items, _ = await dst.list_all(path)
    sem = asyncio.Semaphore(64)

    async def one(obj: dict[str, Any]) -> None:
        body, content_type = patch(obj)
        async with sem:
            await dst.request("PATCH", f"{path}/{obj['metadata']['name']}", body=body, content_type=content_type,
                              parse=False)
    await quiet(dst)
    specs_seen = asyncio.create_task(count_until(dst, [path], n, timeout=300, predicate=restored))
    available_seen = asyncio.create_task(count_until(dst, [path], n, timeout=900, predicate=available))
    await asyncio.sleep(0.5)
    await meter.start(ns)
    t0 = time.monotonic()
    await asyncio.gather(*(one(obj) for obj in items))
    responses = time.monotonic() - t0
    specs = await specs_seen - t0
    server = await meter.read(specs)
    return Patched(specs, responses, await available_seen - t0, server)


async def phases_seen(dst: KubeClient, path: str, seen: dict[str, float]) -> None:
    """Watch the jobs of ``path`` (a collection holding only the one to come): the monotonic time each
    phase of its status was first seen, into ``seen``, until it is terminal."""
    _, rv = await dst.list_all(path)
    while True:
        async for event in dst.watch(path, resource_version=rv, timeout_seconds=60):
            rv = event["object"]["metadata"].get("resourceVersion", rv)
            phase = (event["object"].get("status") or {}).get("phase")
            if phase:
                seen.setdefault(phase, time.monotonic())
            if phase in api.TERMINAL_PHASES:
                return


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
    parser.add_argument("--profile-into", type=Path, default=None,
                        help="a directory: a CPU profile of the stand-by's API server from the start of each "
                             "measurement (job.pprof, base.pprof, fenced.pprof, again.pprof, jsonpatch.pprof)")
    parser.add_argument("--profile-seconds", type=float, default=5, help="each profile's length")
    args = parser.parse_args()
    n = args.deployments
    env = start_env(full=True, services=("recovery",), extra_env={"STANDBY_RECOVERY_SERVE__LOG_LEVEL": "WARNING"})
    try:
        async with KubeClient.from_kubeconfig(env.clusters["destination"].kubeconfig, connections=64) as dst:
            stand_by = env.clusters["destination"].processes
            meter = Meter(dst, {name: stand_by[name].pid for name in PROCESSES}
                          | {"recovery": env.services["recovery"].pid, "benchmark": os.getpid()},
                          profile_into=args.profile_into, profile_seconds=args.profile_seconds)
            for ns in ("base", "act", "fenced", "again", "jsonpatch"):
                await namespace(dst, ns)
                await apply_all(dst, copies(ns, n, ns))
            for plan in ("act", "fenced"):  # the fence policy bound to them, as the syncer does when it starts a plan
                assert await fencing.bind(dst, SYSTEM, f"{SYSTEM}/{plan}")

            # Baseline: a plain concurrent client patching replicas back, in the fresh stand-by.
            base = await patched(dst, meter, "base", n, merge_replicas)
            await gone(dst, "/api/v1/namespaces/base")

            await dst.apply(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryexecutionplans/act", {
                "apiVersion": API_VERSION, "kind": "RecoveryExecutionPlan",
                "metadata": {"name": "act", "namespace": SYSTEM},
                "spec": {"waves": [{"name": "all", "recoveryPlans": [{"name": "act", "namespace": SYSTEM}]}]}},
                field_manager="bench")
            await quiet(dst)
            # Watches (not polled LISTs, which lag by a second under this load) see each change.
            paths = [WORKLOADS.format(ns="act")]
            specs_seen = asyncio.create_task(count_until(dst, paths, n, timeout=300, predicate=restored))
            phases: dict[str, float] = {}
            following = asyncio.create_task(phases_seen(dst, JOBS, phases))
            available_seen = asyncio.create_task(count_until(dst, paths, n, timeout=900, predicate=available))
            await asyncio.sleep(0.5)  # the watches are established
            await meter.start("job")
            t0 = time.monotonic()
            job = await dst.request("POST", JOBS, body={
                "apiVersion": API_VERSION, "kind": "RecoveryExecutionJob",
                "metadata": {"generateName": "act-", "namespace": SYSTEM},
                "spec": {"recoveryExecutionPlanRef": {"name": "act", "namespace": SYSTEM}}})
            specs_at = await specs_seen
            job_server = await meter.read(specs_at - t0)
            act_available = await available_seen - t0
            await asyncio.wait_for(following, 60)
            status = (await dst.get(f"{JOBS}/{job['metadata']['name']}")).get("status") or {}
            specs = specs_at - t0
            # The job's own JSON patches from the plain client with a fence in place, as in the job
            # (the API server evaluates the fence policy for every write of a fenced plan's copy);
            # then, the fences gone, the baseline again and the same JSON patches, each alone.
            await gone(dst, "/api/v1/namespaces/act")
            # The plain client's set fenced like the job's (its own plan's fence, in force).
            assert await fencing.write(dst, SYSTEM, f"{SYSTEM}/fenced", epoch=1, job="bench")
            assert await fencing.enforced(dst, SYSTEM, {f"{SYSTEM}/fenced"}, timeout=10)
            fenced = await patched(dst, meter, "fenced", n, activation_patch)
            await gone(dst, "/api/v1/namespaces/fenced")
            for fences in (f"/api/v1/namespaces/{SYSTEM}/configmaps",
                           f"{fencing.ADMISSION}/validatingadmissionpolicybindings"):  # and their bindings
                await dst.request("DELETE", fences, params={"labelSelector": f"{ann.FENCE_LABEL}=true"}, parse=False)
            again = await patched(dst, meter, "again", n, merge_replicas)
            await gone(dst, "/api/v1/namespaces/again")
            json_patches = await patched(dst, meter, "jsonpatch", n, activation_patch)
            like_for_like = (base.specs + again.specs) / 2
            result = {
                "benchmark": "activation", "deployments": n, "job_phase": status.get("phase"),
                "specs_restored_seconds": round(specs, 2), "all_available_seconds": round(act_available, 2),
                "baseline_patch_seconds": round(base.specs, 2),
                "baseline_last_response_seconds": round(base.responses, 2),
                "baseline_available_seconds": round(base.available, 2),
                "baseline_after_the_job_seconds": round(again.specs, 2),
                "baseline_after_the_job_last_response_seconds": round(again.responses, 2),
                "baseline_after_the_job_available_seconds": round(again.available, 2),
                "json_patches_seconds": round(json_patches.specs, 2),
                "json_patches_last_response_seconds": round(json_patches.responses, 2),
                "json_patches_available_seconds": round(json_patches.available, 2),
                "json_patches_fenced_seconds": round(fenced.specs, 2),
                "json_patches_fenced_last_response_seconds": round(fenced.responses, 2),
                "ratio_specs_vs_baseline": round(specs / base.specs, 2),
                "ratio_specs_vs_baseline_after": round(specs / again.specs, 2),
                "ratio_specs_vs_baselines_mean": round(specs / like_for_like, 2),
                "ratio_available_vs_baseline": round(act_available / base.available, 2),
                "target_specs_seconds": 5, "target_ratio": 1.1,
                "meets_target": specs <= 5 and specs <= 1.1 * like_for_like,
                "job_timings_seconds": status.get("timings"),
                "job_phase_first_seen_seconds": {phase: round(at - t0, 2) for phase, at in phases.items()},
                "stand_by_to_specs_restored": {"job": job_server, "baseline": base.server,
                                               "json_patches_fenced": fenced.server,
                                               "baseline_after_the_job": again.server,
                                               "json_patches": json_patches.server},
                "note": "job timings: fenceEnforced (the API server enforces the fence) or fenceSettled (waited "
                        "fence_settle_seconds); the target ratio is against the mean of the baseline before the "
                        "job (in the fresh stand-by) and after it (as the job ran: alone, the set before it deleted)",
            }
            print(result, flush=True)
            return result
    finally:
        stop_env(env)


if __name__ == "__main__":
    run(main)
