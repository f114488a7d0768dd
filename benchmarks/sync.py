"""The sync pipeline on local real clusters (watcher and syncer as separate processes).

- bulk: N objects (half ConfigMaps, half Deployments) exist in the source; a plan is created; time
  until all are deactivated in the destination, as objects/s and as a ratio to the raw ceiling: a
  plain concurrent client server-side-applying the same objects (read from the source, sanitized,
  deactivated) straight into an empty namespace of the same destination, measured in the same run.
  Raw and pipeline rounds alternate (--rounds, default 3) and the ratio is of the medians. Target >= 0.7.
- steady: R changes/s for S seconds; replication lag = source write response -> the destination
  copy carrying that source resourceVersion is seen (one process, one clock). Target p50 <= 100 ms,
  p99 <= 500 ms. Also printed: the same writes straight into the destination first (its own write
  latency, the floor under the lag), and where the time went (the services' histograms: stream
  delivery, queue wait, destination write, event-loop lag).
- memory: watcher and syncer RSS once 10,000 objects are protected. Target < 300 MiB each.

    cd benchmarks && ../.venv/bin/python sync.py [--objects 5000] [--rounds 3] [--rate 100] [--seconds 60]
                                                 [--memory-objects 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import time
from typing import Any

from common import (
    SYSTEM,
    CpuMeter,
    KubeClient,
    apply_all,
    as_read_from,
    configmap,
    connect_broker,
    copies_seen,
    count_until,
    deployment,
    histogram_change,
    histograms,
    namespace,
    paced_updates,
    percentile,
    plan,
    rss_mib,
    run,
    start_env,
    stop_env,
    stream_holds,
)

from schemas import annotations as ann
from schemas import sanitizing, subjects, transforms
from services.common import streams
from services.devenv import ports
from services.devenv.natsd import LocalNats
from services.syncer.settings import SyncerSettings

RESOURCES = [("", "v1", "configmaps"), ("apps", "v1", "deployments")]


def mixed(ns: str, n: int) -> list[dict[str, Any]]:
    return [configmap(ns, f"cm-{i}") if i % 2 == 0 else deployment(ns, f"dep-{i}") for i in range(n)]


def is_copy(obj: dict[str, Any]) -> bool:
    return (obj["metadata"].get("labels") or {}).get(ann.MANAGED) == "true"


def _paths(ns: str) -> list[str]:
    return [f"/api/v1/namespaces/{ns}/configmaps", f"/apis/apps/v1/namespaces/{ns}/deployments"]


async def raw_round(src: KubeClient, dst: KubeClient, source_ns: str, n: int, ns: str,
                    pids: dict[str, int]) -> dict[str, Any]:
    """The raw ceiling: the pipeline's objects (as the source holds them), sanitized and
    deactivated, applied by a plain concurrent client straight into an empty namespace of the
    destination, with the syncer's own request shape (server-side apply, metadata-only answers,
    as many in flight as the syncer has workers); timed the same way as the pipeline (until a
    watch on the destination has seen them all)."""
    await namespace(dst, ns)
    prov = transforms.Provenance(SYSTEM, ns, 0, "uid", "1")
    raw = []
    for obj in await as_read_from(src, source_ns, RESOURCES):
        copy = transforms.deactivate(sanitizing.sanitize(obj), prov)
        copy["metadata"]["namespace"] = ns
        raw.append(copy)
    assert len(raw) == n, f"{source_ns} holds {len(raw)} objects, not {n}"
    progress: dict[int, float] = {}
    seen = asyncio.create_task(count_until(dst, _paths(ns), n, timeout=600, predicate=is_copy, milestones=progress))
    await asyncio.sleep(0.5)  # the watch is established
    cpu = CpuMeter(pids)
    started = time.monotonic()
    await apply_all(dst, raw, concurrency=SyncerSettings().consumer.workers, parse=False)
    done = await seen
    return {"objects_per_s": round(n / (done - started), 1), "seconds": round(done - started, 2),
            "cpu_seconds": cpu.spent(), "tenths_after_s": [round(t - started, 1) for _, t in sorted(progress.items())]}


async def pipeline_round(src: KubeClient, dst: KubeClient, server: LocalNats, n: int, ns: str,
                         pids: dict[str, int]) -> dict[str, Any]:
    """N objects exist in the source namespace ``ns``; a plan is created; until all are deactivated
    in the destination."""
    cpu = CpuMeter(pids)
    started = time.monotonic()
    await plan(dst, ns, [ns], RESOURCES)
    published = asyncio.create_task(stream_holds(server, ns, n))
    progress: dict[int, float] = {}
    done = await count_until(dst, _paths(ns), n, timeout=600, predicate=is_copy, milestones=progress)
    return {"objects_per_s": round(n / (done - started), 1), "seconds": round(done - started, 2),
            "all_published_after_s": round(await published - started, 2), "cpu_seconds": cpu.spent(),
            "tenths_after_s": [round(t - started, 1) for _, t in sorted(progress.items())]}


async def bulk(src: KubeClient, dst: KubeClient, server: LocalNats, n: int, rounds: int,
               pids: dict[str, int]) -> dict[str, Any]:
    """Each round creates N objects in the source, then times the raw client and the pipeline on
    those same objects; raw and pipeline alternate, so drift of the machine affects both alike. The
    ratio is of the medians."""
    raw, pipeline = [], []
    for r in range(rounds):
        ns = f"bulk-{r}"
        await namespace(src, ns)
        await apply_all(src, mixed(ns, n), concurrency=64)
        raw.append(await raw_round(src, dst, ns, n, f"raw-{r}", pids))
        print("bulk raw", r, raw[-1], flush=True)
        pipeline.append(await pipeline_round(src, dst, server, n, ns, pids))
        print("bulk pipeline", r, pipeline[-1], flush=True)
    ceiling = statistics.median(x["objects_per_s"] for x in raw)
    rate = statistics.median(x["objects_per_s"] for x in pipeline)
    return {"objects": n, "rounds": rounds, "pipeline_objects_per_s": rate, "raw_ceiling_objects_per_s": ceiling,
            "ratio": round(rate / ceiling, 3), "ratio_per_round": [
                round(p["objects_per_s"] / r["objects_per_s"], 3) for r, p in zip(raw, pipeline, strict=True)],
            "target_ratio": 0.7, "raw": raw, "pipeline": pipeline}


# Where a slow change spent its time, from the services' own histograms over the steady phase.
STAGES = {"syncer": ("standby_syncer_delivery_seconds", "standby_syncer_queue_seconds",
                     "standby_syncer_apply_seconds", "standby_event_loop_lag_seconds"),
          "watcher": ("standby_watcher_publish_seconds", "standby_event_loop_lag_seconds"),
          # The stand-by's etcd: its disk, which it shares with everything else on this machine.
          "destination-etcd": ("etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds")}


async def destination_alone(dst: KubeClient, keys: int, rate: float, seconds: float,
                            pids: dict[str, int]) -> tuple[list[float], dict[str, float]]:
    """The floor under the lag: the same writes at the same rate, straight into the destination by a
    plain client (no Standby in the path); returns each write's latency and the CPU spent."""
    await namespace(dst, "steady-raw")
    await apply_all(dst, [configmap("steady-raw", f"r-{i}") for i in range(keys)])
    latencies: list[float] = []
    cpu = CpuMeter(pids)
    await paced_updates(dst, "steady-raw", "r", keys, rate=rate, seconds=seconds, latencies=latencies)
    return latencies, cpu.spent()


async def destination_server(dst: KubeClient) -> dict[str, list[tuple[float, float]]]:
    """The destination API server's own view of the ConfigMap writes: request and etcd latency."""
    requests = await histograms(dst, resource="configmaps", verb="APPLY")
    etcd = await histograms(dst, resource="configmaps", operation="update")
    return {"apiserver_request_duration_seconds": requests.get("apiserver_request_duration_seconds", []),
            "etcd_request_duration_seconds": etcd.get("etcd_request_duration_seconds", [])}


async def steady(src: KubeClient, dst: KubeClient, server: LocalNats, rate: float, seconds: float,
                 metrics: dict[str, str], pids: dict[str, int]) -> dict[str, Any]:
    keys = 200
    alone, alone_cpu = await destination_alone(dst, keys, rate, seconds, pids)
    await namespace(src, "steady")
    await apply_all(src, [configmap("steady", f"s-{i}") for i in range(keys)])
    await plan(dst, "steady", ["steady"], RESOURCES[:1])
    await count_until(dst, ["/api/v1/namespaces/steady/configmaps"], keys, timeout=120, predicate=is_copy)


    # Where the time goes: when each source version reached the stream (a plain subscription on the
    # plan's subjects sees what the watcher publishes).
    in_stream: dict[str, float] = {}
    nc = await connect_broker(server)

    async def on_message(msg: Any) -> None:
        in_stream.setdefault((msg.headers or {}).get(streams.HDR_RV, ""), time.monotonic())
    await nc.subscribe(subjects.plan_filter("standby", SYSTEM, "steady"), cb=on_message)

    async with copies_seen(dst, "/api/v1/namespaces/steady/configmaps") as seen:
        await asyncio.sleep(1)
        before = {service: await histograms(url) for service, url in metrics.items()}
        server_before = await destination_server(dst)
        cpu = CpuMeter(pids)
        source_writes: list[float] = []
        written, achieved = await paced_updates(src, "steady", "s", keys, rate=rate, seconds=seconds,
                                                latencies=source_writes)
        count = len(written)
        deadline = time.monotonic() + 30
        while set(written) - set(seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    await nc.close()
    spent = cpu.spent()
    server_after = await destination_server(dst)
    stages = {f"destination-apiserver:{name}": histogram_change(server_before, server_after, name)
              for name in server_after}
    for service, url in metrics.items():
        after = await histograms(url)
        stages.update({f"{service}:{name.removeprefix('standby_')}": histogram_change(before[service], after, name)
                       for name in STAGES[service]})
    to_stream = [max(0.0, in_stream[rv] - t) for rv, t in written.items() if rv in in_stream]
    stream_to_copy = [max(0.0, seen[rv] - in_stream[rv]) for rv in written if rv in seen and rv in in_stream]
    # A copy can become visible before the source's write response is processed: lag ~ 0, not missing.
    lags = [max(0.0, seen[rv] - t) for rv, t in written.items() if rv in seen]
    first = min(written.values(), default=0.0)
    slow = collections.Counter(int(t - first) for rv, t in written.items() if rv in seen and seen[rv] - t > 0.25)
    return {"slow_over_250ms_per_second_written": dict(sorted(slow.items())),
            "changes": count, "rate_per_s": rate, "achieved_write_rate_per_s": round(achieved, 1),
            "observed": len(lags), "missing": len(written) - len(lags),
            "lag_p50_ms": round(percentile(lags, 50) * 1000, 1), "lag_p99_ms": round(percentile(lags, 99) * 1000, 1),
            "lag_max_ms": round(max(lags, default=float("nan")) * 1000, 1),
            "source_to_stream_p50_p99_ms": [round(percentile(to_stream, q) * 1000, 1) for q in (50, 99)],
            "stream_to_copy_p50_p99_ms": [round(percentile(stream_to_copy, q) * 1000, 1) for q in (50, 99)],
            "target_p50_ms": 100, "target_p99_ms": 500,
            "destination_alone_write_p50_p99_ms": [round(percentile(alone, q) * 1000, 1) for q in (50, 99)],
            "source_write_p50_p99_ms": [round(percentile(source_writes, q) * 1000, 1) for q in (50, 99)],
            "cpu_seconds": spent, "destination_alone_cpu_seconds": alone_cpu,
            "control_plane_rss_mib": {name: round(rss_mib(pid), 1) for name, pid in pids.items()
                                      if name.endswith(("apiserver", "etcd"))},
            "stages": stages}


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


def services_env(nats_nodes: int = 1, *, quick: bool = True) -> tuple[Any, dict[str, str]]:
    """Two light clusters, NATS (one server, or a TLS cluster of ``nats_nodes`` with R3 streams) and
    the watcher and syncer as processes; the services' metrics URLs. ``quick``: plans re-read every
    0.5 s and statuses written every second (a new plan is picked up at once); else the shipped
    defaults."""
    syncer_port, watcher_port = ports.free_ports(2)
    metrics = {"syncer": f"http://127.0.0.1:{syncer_port}/metrics",
               "watcher": f"http://127.0.0.1:{watcher_port}/metrics"}
    quicker = {"STANDBY_SYNCER_STATUS_INTERVAL_SECONDS": "1", "STANDBY_WATCHER_PLAN_RESYNC_SECONDS": "0.5",
               "STANDBY_SYNCER_PLAN_RESYNC_SECONDS": "0.5"} if quick else {}
    env = start_env(nats_nodes=nats_nodes, extra_env={
        **quicker, "STANDBY_SYNCER_SERVE__PORT": str(syncer_port), "STANDBY_WATCHER_SERVE__PORT": str(watcher_port),
        "STANDBY_SYNCER_SERVE__LOG_LEVEL": os.environ.get("BENCH_LOG", "WARNING"),
        "STANDBY_WATCHER_SERVE__LOG_LEVEL": os.environ.get("BENCH_LOG", "WARNING")})
    metrics["destination-etcd"] = f"{env.clusters['destination'].etcd_url}/metrics"
    return env, metrics


def service_pids(env: Any) -> dict[str, int]:
    """The processes whose CPU and memory the phases report."""
    pids = {name: proc.pid for name, proc in env.services.items()}
    for c in ("source", "destination"):
        pids[f"{c}-apiserver"] = env.clusters[c].processes["kube-apiserver"].pid
        pids[f"{c}-etcd"] = env.clusters[c].processes["etcd"].pid
    pids.update({f"nats-{n.name}" if len(env.nats.servers) > 1 else "nats-server": n.process.pid
                 for n in env.nats.servers if n.process is not None})
    return pids | {"benchmark": os.getpid()}


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="bulk: raw and pipeline rounds, alternating")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--memory-objects", type=int, default=10000)
    parser.add_argument("--phases", default="bulk,steady,memory", help="comma-separated subset to run")
    parser.add_argument("--nats-cluster", type=int, default=1, help="NATS nodes (more: TLS cluster, R3 streams)")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    env, metrics = services_env(args.nats_cluster)
    try:
        async with KubeClient.from_kubeconfig(env.clusters["source"].kubeconfig, connections=64) as src, \
                KubeClient.from_kubeconfig(env.clusters["destination"].kubeconfig,
                                           connections=SyncerSettings().destination_connections) as dst:
            result: dict[str, Any] = {"benchmark": "sync", "nats_nodes": args.nats_cluster}
            pids = service_pids(env)
            already = 0
            meets: dict[str, bool] = {}
            if "bulk" in phases:
                result["bulk"] = b = await bulk(src, dst, env.nats, args.objects, args.rounds, pids)
                meets["bulk_ratio"] = b["ratio"] >= 0.7
                already += args.objects * args.rounds
            if "steady" in phases:
                result["steady"] = s = await steady(src, dst, env.nats, args.rate, args.seconds, metrics, pids)
                print("steady", s, flush=True)
                meets["steady_lag"] = s["lag_p50_ms"] <= 100 and s["lag_p99_ms"] <= 500 and s["missing"] == 0
                already += 200
            if "memory" in phases:
                pids = {name: proc.pid for name, proc in env.services.items()}
                result["memory"] = m = await memory(src, dst, args.memory_objects, already, pids)
                print("memory", m, flush=True)
                meets["memory"] = all(v < 300 for k, v in m.items() if k.endswith("_rss_mib"))
            result["meets_targets"] = meets
            return result
    finally:
        stop_env(env)


if __name__ == "__main__":
    run(main)
