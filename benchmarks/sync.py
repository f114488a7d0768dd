"""The sync pipeline on local real clusters (watcher and syncer as separate processes).

- bulk: N objects (half ConfigMaps, half Deployments) exist in the source; a plan is created; time
  until all are deactivated in the destination, as objects/s and as a ratio to the raw ceiling: a
  plain concurrent client server-side-applying the same sanitized, deactivated objects straight
  into the same (empty namespace of the) destination, measured in the same run. Target >= 0.7.
- steady: R changes/s for S seconds; replication lag = source write response -> the destination
  copy carrying that source resourceVersion is seen (one process, one clock). Target p50 <= 100 ms,
  p99 <= 500 ms.
- memory: watcher and syncer RSS once 10,000 objects are protected. Target < 300 MiB each.

    .venv/bin/python benchmarks/sync.py [--objects 5000] [--rate 100] [--seconds 60] [--memory-objects 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from common import (
    SYSTEM,
    KubeClient,
    apply_all,
    configmap,
    count_until,
    cpu_seconds,
    deployment,
    namespace,
    paced_updates,
    percentile,
    plan,
    rss_mib,
    run,
    start_env,
)

from schemas import annotations as ann
from schemas import sanitizing, transforms

MANAGED = f"{ann.MANAGED}=true"
RESOURCES = [("", "v1", "configmaps"), ("apps", "v1", "deployments")]


def mixed(ns: str, n: int) -> list[dict[str, Any]]:
    return [configmap(ns, f"cm-{i}") if i % 2 == 0 else deployment(ns, f"dep-{i}") for i in range(n)]


def is_copy(obj: dict[str, Any]) -> bool:
    return (obj["metadata"].get("labels") or {}).get(ann.MANAGED) == "true"


async def bulk(src: KubeClient, dst: KubeClient, n: int, pids: dict[str, int]) -> dict[str, Any]:
    # The raw ceiling: the same objects, sanitized and deactivated, applied straight into the destination.
    # Measured the same way as the pipeline: until a watch on the destination has seen them all.
    await namespace(dst, "raw")
    prov = transforms.Provenance(SYSTEM, "raw", 0, "uid", "1")
    raw = [transforms.deactivate(sanitizing.sanitize(o), prov) for o in mixed("raw", n)]
    seen = asyncio.create_task(count_until(dst, ["/api/v1/namespaces/raw/configmaps",
                                                 "/apis/apps/v1/namespaces/raw/deployments"],
                                           n, timeout=600, predicate=is_copy))
    await asyncio.sleep(0.5)  # the watch is established
    t0 = time.monotonic()
    await apply_all(dst, raw, concurrency=64)
    ceiling = n / (await seen - t0)

    await namespace(src, "bulk")
    await apply_all(src, mixed("bulk", n), concurrency=64)
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    await plan(dst, "bulk", ["bulk"], RESOURCES)
    done = await count_until(dst, ["/api/v1/namespaces/bulk/configmaps", "/apis/apps/v1/namespaces/bulk/deployments"],
                             n, timeout=600, predicate=is_copy)
    rate = n / (done - started)
    return {"objects": n, "pipeline_objects_per_s": round(rate, 1), "raw_ceiling_objects_per_s": round(ceiling, 1),
            "ratio": round(rate / ceiling, 3), "seconds": round(done - started, 2), "target_ratio": 0.7,
            "cpu_seconds": {name: round(cpu_seconds(pid) - cpu_before[name], 2) for name, pid in pids.items()}}


async def steady(src: KubeClient, dst: KubeClient, rate: float, seconds: float) -> dict[str, Any]:
    await namespace(src, "steady")
    keys = 200
    await apply_all(src, [configmap("steady", f"s-{i}") for i in range(keys)])
    await plan(dst, "steady", ["steady"], RESOURCES[:1])
    await count_until(dst, ["/api/v1/namespaces/steady/configmaps"], keys, timeout=120, predicate=is_copy)

    seen: dict[str, float] = {}  # source resourceVersion -> time its copy was seen in the destination

    async def observe() -> None:
        _, rv = await dst.list_all("/api/v1/namespaces/steady/configmaps", label_selector=MANAGED)
        while True:
            async for event in dst.watch("/api/v1/namespaces/steady/configmaps", resource_version=rv,
                                         label_selector=MANAGED, timeout_seconds=120):
                obj = event["object"]
                rv = obj["metadata"].get("resourceVersion", rv)
                source_rv = (obj["metadata"].get("annotations") or {}).get(ann.SOURCE_RESOURCE_VERSION)
                if source_rv:
                    seen.setdefault(source_rv, time.monotonic())

    watcher = asyncio.create_task(observe())
    await asyncio.sleep(1)
    written, achieved = await paced_updates(src, "steady", "s", keys, rate=rate, seconds=seconds)
    count = len(written)
    deadline = time.monotonic() + 30
    while set(written) - set(seen) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    # A copy can become visible before the source's write response is processed: lag ~ 0, not missing.
    lags = [max(0.0, seen[rv] - t) for rv, t in written.items() if rv in seen]
    return {"changes": count, "rate_per_s": rate, "achieved_write_rate_per_s": round(achieved, 1),
            "observed": len(lags), "missing": len(written) - len(lags),
            "lag_p50_ms": round(percentile(lags, 50) * 1000, 1), "lag_p99_ms": round(percentile(lags, 99) * 1000, 1),
            "lag_max_ms": round(max(lags, default=float("nan")) * 1000, 1),
            "target_p50_ms": 100, "target_p99_ms": 500}


async def memory(src: KubeClient, dst: KubeClient, total: int, already: int, pids: dict[str, int]) -> dict[str, Any]:
    more = total - already
    if more > 0:
        await namespace(src, "memory")
        await apply_all(src, [configmap("memory", f"m-{i}") for i in range(more)])
        await plan(dst, "memory", ["memory"], RESOURCES[:1])
        await count_until(dst, ["/api/v1/namespaces/memory/configmaps"], more, timeout=600, predicate=is_copy)
        await asyncio.sleep(3)
    return {"protected_objects": total, **{f"{name}_rss_mib": round(rss_mib(pid), 1) for name, pid in pids.items()},
            "target_mib": 300}


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--memory-objects", type=int, default=10000)
    args = parser.parse_args()
    env = start_env(extra_env={"STANDBY_SYNCER_STATUS_INTERVAL_SECONDS": "1",
                               "STANDBY_WATCHER_PLAN_RESYNC_SECONDS": "0.5",
                               "STANDBY_SYNCER_PLAN_RESYNC_SECONDS": "0.5",
                               "STANDBY_SYNCER_SERVE__LOG_LEVEL": "WARNING",
                               "STANDBY_WATCHER_SERVE__LOG_LEVEL": "WARNING"})
    try:
        async with KubeClient.from_kubeconfig(env.clusters["source"].kubeconfig, connections=64) as src, \
                KubeClient.from_kubeconfig(env.clusters["destination"].kubeconfig, connections=64) as dst:
            result: dict[str, Any] = {"benchmark": "sync"}
            pids = {name: proc.pid for name, proc in env.services.items()}
            pids.update({f"{c}-apiserver": env.clusters[c].processes["kube-apiserver"].pid
                         for c in ("source", "destination")})
            result["bulk"] = await bulk(src, dst, args.objects, pids)
            print("bulk", result["bulk"], flush=True)
            result["steady"] = await steady(src, dst, args.rate, args.seconds)
            print("steady", result["steady"], flush=True)
            pids = {name: proc.pid for name, proc in env.services.items()}
            result["memory"] = await memory(src, dst, args.memory_objects, args.objects + 200, pids)
            print("memory", result["memory"], flush=True)
            b, s, m = result["bulk"], result["steady"], result["memory"]
            result["meets_targets"] = {
                "bulk_ratio": b["ratio"] >= 0.7,
                "steady_lag": s["lag_p50_ms"] <= 100 and s["lag_p99_ms"] <= 500 and s["missing"] == 0,
                "memory": all(v < 300 for k, v in m.items() if k.endswith("_rss_mib")),
            }
            return result
    finally:
        env.stop()


if __name__ == "__main__":
    run(main)
