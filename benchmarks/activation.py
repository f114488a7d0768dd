"""Failover speed: N deactivated Deployments in a full stand-by (scheduler, controllers, kwok
nodes); time from creating the RecoveryExecutionJob to all specs restored and to all Available;
and, in the same run, on identical sets: the baseline (a plain concurrent client merge-patching the
replicas back), and the same client sending the job's own patches (what the patch costs, without
the operator, fence or listing), once with a fence in force (what the fence policy costs) and once
without. Each measurement reports the stand-by's own view of it too: its API server's
latency per patch, time in admission, in the fence policy, in queues and on etcd, the other writes
it served meanwhile, and each process's CPU. Every "specs restored" and "all Available" is seen by
watches, for the job and the plain client alike (the plain client's last response is reported
too: the watch sees the last change up to a second later under this load).

How fast a plain client patches depends on what the stand-by holds and does, and on the hour: the
same baseline took 3.0 to 9.9 s between runs, and up to 60 % apart within one. So each measurement
runs alone, in a settled stand-by, on a set of its own: the one before it is deleted (and gone)
with its fences, and the API server serves fewer than 5 writes/s. The baseline and the job run in
rounds, one after the other, and their medians are compared (each round's figures reported too).

    .venv/bin/python benchmarks/activation.py [--deployments 1000] [--rounds 3] [--profile-into DIR]
        [--profile-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
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
from services.recovery import activating

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
    """What the job sends to switch ``obj`` on."""
    return activating.operations(obj), "application/json-patch+json"


def activation_operations(obj: dict[str, Any]) -> tuple[Any, str]:
    """The same without handing the object over (keeping its managedFields: the job until session 21)."""
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


async def phases_seen(dst: KubeClient, path: str, name: str, seen: dict[str, float]) -> None:
    """Watch the job ``name`` of ``path`` (a collection of jobs): the monotonic time each phase of
    its status was first seen, into ``seen``, until it is terminal."""
    _, rv = await dst.list_all(path)
    while True:
        async for event in dst.watch(path, resource_version=rv, timeout_seconds=60):
            rv = event["object"]["metadata"].get("resourceVersion", rv)
            if event["object"]["metadata"].get("name") != name:
                continue
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


@dataclass(frozen=True)
class Failover:
    specs: float  # from creating the job to every spec restored, seen by a watch
    available: float  # to all Available, seen by a watch
    phase: str | None
    timings: dict[str, float]  # the job's status.timings
    phases_seen: dict[str, float]  # when each phase was first seen, from creating the job
    server: dict[str, Any]  # the stand-by's view, to every spec restored


async def failover(dst: KubeClient, meter: Meter, plan: str, n: int) -> Failover:
    """A RecoveryExecutionJob switching on the set of plan (and namespace) ``plan``, in a settled stand-by."""
    await dst.apply(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryexecutionplans/{plan}", {
        "apiVersion": API_VERSION, "kind": "RecoveryExecutionPlan", "metadata": {"name": plan, "namespace": SYSTEM},
        "spec": {"waves": [{"name": "all", "recoveryPlans": [{"name": plan, "namespace": SYSTEM}]}]}},
        field_manager="bench")
    await quiet(dst)
    # Watches (not polled LISTs, which lag by a second under this load) see each change.
    paths = [WORKLOADS.format(ns=plan)]
    specs_seen = asyncio.create_task(count_until(dst, paths, n, timeout=300, predicate=restored))
    phases: dict[str, float] = {}
    following = asyncio.create_task(phases_seen(dst, JOBS, plan, phases))
    available_seen = asyncio.create_task(count_until(dst, paths, n, timeout=900, predicate=available))
    await asyncio.sleep(0.5)  # the watches are established
    await meter.start(plan)
    t0 = time.monotonic()
    await dst.request("POST", JOBS, body={
        "apiVersion": API_VERSION, "kind": "RecoveryExecutionJob", "metadata": {"name": plan, "namespace": SYSTEM},
        "spec": {"recoveryExecutionPlanRef": {"name": plan, "namespace": SYSTEM}}}, parse=False)
    specs = await specs_seen - t0
    server = await meter.read(specs)
    available_at = await available_seen - t0
    await asyncio.wait_for(following, 60)
    status = (await dst.get(f"{JOBS}/{plan}")).get("status") or {}
    return Failover(specs, available_at, status.get("phase"), status.get("timings") or {},
                    {phase: round(at - t0, 2) for phase, at in phases.items()}, server)


async def fresh_set(dst: KubeClient, name: str, n: int) -> None:
    """The namespace ``name`` with ``n`` deactivated copies of plan ``name``, the fence policy bound
    to their plan (as the syncer does when it starts a plan); no fence yet."""
    await namespace(dst, name)
    await apply_all(dst, copies(name, n, name))
    assert await fencing.bind(dst, SYSTEM, f"{SYSTEM}/{name}")


async def cleared(dst: KubeClient, name: str) -> None:
    """The set ``name`` gone, and every fence and fence binding with it: the next measurement runs
    in the same stand-by as the first."""
    await gone(dst, f"/api/v1/namespaces/{name}")
    for fences in (f"/api/v1/namespaces/{SYSTEM}/configmaps", f"{fencing.ADMISSION}/validatingadmissionpolicybindings"):
        await dst.request("DELETE", fences, params={"labelSelector": f"{ann.FENCE_LABEL}=true"}, parse=False)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the baseline and the job, one after the other, each on a set of its own; "
                             "the medians are compared")
    parser.add_argument("--profile-into", type=Path, default=None,
                        help="a directory: a CPU profile of the stand-by's API server from the start of each "
                             "measurement (base-0.pprof, act-0.pprof, ... fenced.pprof, unfenced.pprof)")
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
            bases: list[Patched] = []
            jobs: list[Failover] = []
            for i in range(args.rounds):
                # The baseline: a plain concurrent client patching replicas back; then the job.
                await fresh_set(dst, f"base-{i}", n)
                bases.append(await patched(dst, meter, f"base-{i}", n, merge_replicas))
                await cleared(dst, f"base-{i}")
                await fresh_set(dst, f"act-{i}", n)
                jobs.append(await failover(dst, meter, f"act-{i}", n))
                await cleared(dst, f"act-{i}")
            # The job's own patches from the plain client, with a fence in force as in the job
            # (the API server evaluates the fence policy for every write of a fenced plan's copy),
            # and without.
            await fresh_set(dst, "fenced", n)
            assert await fencing.write(dst, SYSTEM, f"{SYSTEM}/fenced", epoch=1, job="bench")
            assert await fencing.enforced(dst, SYSTEM, {f"{SYSTEM}/fenced"}, timeout=10)
            fenced = await patched(dst, meter, "fenced", n, activation_patch)
            await cleared(dst, "fenced")
            await fresh_set(dst, "unfenced", n)
            unfenced = await patched(dst, meter, "unfenced", n, activation_patch)
            job_specs, base_specs = median([j.specs for j in jobs]), median([b.specs for b in bases])
            result = {
                "benchmark": "activation", "deployments": n, "rounds": args.rounds,
                "job_phases": [j.phase for j in jobs],
                "specs_restored_seconds": job_specs,
                "specs_restored_each_round": [round(j.specs, 2) for j in jobs],
                "all_available_seconds": median([j.available for j in jobs]),
                "baseline_patch_seconds": base_specs,
                "baseline_each_round": [round(b.specs, 2) for b in bases],
                "baseline_last_response_seconds": median([b.responses for b in bases]),
                "baseline_available_seconds": median([b.available for b in bases]),
                "job_patches_seconds": round(unfenced.specs, 2),
                "job_patches_last_response_seconds": round(unfenced.responses, 2),
                "job_patches_available_seconds": round(unfenced.available, 2),
                "job_patches_fenced_seconds": round(fenced.specs, 2),
                "job_patches_fenced_last_response_seconds": round(fenced.responses, 2),
                "ratio_specs_vs_baseline": round(job_specs / base_specs, 2),
                "ratio_each_round": [round(j.specs / b.specs, 2) for j, b in zip(jobs, bases, strict=True)],
                "ratio_available_vs_baseline": round(median([j.available for j in jobs])
                                                     / median([b.available for b in bases]), 2),
                "target_specs_seconds": 5, "target_ratio": 1.1,
                "meets_target": job_specs <= 5 and job_specs <= 1.1 * base_specs,
                "job_timings_seconds": [j.timings for j in jobs],
                "job_phase_first_seen_seconds": [j.phases_seen for j in jobs],
                "stand_by_to_specs_restored": {"job": [j.server for j in jobs], "baseline": [b.server for b in bases],
                                               "job_patches_fenced": fenced.server,
                                               "job_patches": unfenced.server},
                "note": "medians of the rounds (each round: the baseline, then the job, each on a fresh set in a "
                        "settled stand-by); job timings: fenceEnforced (the API server enforces the fence) or "
                        "fenceSettled (waited fence_settle_seconds), firstCopies and findCopies (the first copies "
                        "found, all found: the listing runs beside the patches)",
            }
            print(result, flush=True)
            return result
    finally:
        stop_env(env)


if __name__ == "__main__":
    run(main)
