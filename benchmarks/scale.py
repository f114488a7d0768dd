"""Scale: many protected objects (ConfigMaps, Secrets and Deployments) in many namespaces, one plan
per namespace, watcher and syncer processes on local real clusters.

- first copy: the objects exist in the source. First the raw ceiling: a plain client reads them
  from the source, sanitizes and deactivates them and server-side-applies them into empty
  namespaces of the destination with the syncer's request shape (metadata-only answers, as many in
  flight as the syncer has workers). Then every plan is created at once; time until every copy
  exists. Target: >= 0.7 of the raw rate. The time of each tenth is printed for both: a tenth that
  takes longer than the ones before is growth worse than linear. Each phase reports the machine's
  speed too (``speed_probe_ms``, common.SpeedProbe: the CPU time of a fixed piece of work; on a
  shared machine it changes from one phase to the next, and every process's CPU seconds with it).
- memory: watcher and syncer RSS idle (no plan), sampled through the copy, and with everything
  protected; reported per 10,000 objects. Target: no more than ~100 MiB per 10,000.
- restart: the watcher and the syncer are stopped (SIGTERM) and started again, nothing changed in
  between: time until the watcher has listed every plan's resources and the syncer reports every
  copy in sync, and what they published (the streams' sequences) and wrote (the destination API
  server's own count of writes to the copied resources) until 10 s after that. Target: ready
  within 60 s, nothing published, nothing written.
- steady: R changes/s to ConfigMaps spread over all the plans' namespaces for S seconds, with
  everything held: source write response -> the copy carrying that source version seen.

- ``--standby-cpus N``: the stand-by's API server and etcd run on N CPUs of their own and every other
  process (the source cluster, the broker, the services, this benchmark) on the rest, in every
  phase, the raw client's included: as where the stand-by is a cluster of its own and the pipeline
  runs elsewhere. Without it all share every CPU, and whatever CPU the pipeline's own processes
  spend is taken from the stand-by's API server, which the raw client's round does not pay.

    cd benchmarks && ../.venv/bin/python scale.py [--objects 100000] [--plans 20] [--rate 100] [--seconds 60]
        [--profile-into DIR] [--profile-seconds 30] [--first-copy-only] [--standby-cpus 1]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from common import (
    SYSTEM,
    CpuMeter,
    KubeClient,
    SpeedProbe,
    apply_all,
    as_read_from,
    configmap,
    connect_broker,
    copies_seen,
    count_until,
    cpu_profile,
    deployment,
    metric_by,
    metric_sum,
    namespace,
    paced_updates,
    percentile,
    pin,
    plan,
    requests_by_kind,
    rss_mib,
    run,
    secret,
    split_cpus,
    stop_env,
)
from sync import is_copy, service_pids, services_env

from schemas import sanitizing, subjects, transforms
from services.common import streams
from services.syncer.settings import SyncerSettings

RESOURCES = [("", "v1", "configmaps"), ("", "v1", "secrets"), ("apps", "v1", "deployments")]
# Of every ten objects: four ConfigMaps, two Secrets, four Deployments.
MIX = ("cm", "cm", "cm", "cm", "secret", "secret", "dep", "dep", "dep", "dep")
MAKE = {"cm": configmap, "secret": secret, "dep": deployment}
WRITES = ("POST", "PUT", "PATCH", "APPLY", "DELETE")


def objects(ns: str, n: int) -> list[dict[str, Any]]:
    """``n`` objects of the mix, each kind's names numbered from 0 (``cm-0``, ``cm-1``...)."""
    counts = dict.fromkeys(MAKE, 0)
    out = []
    for i in range(n):
        kind = MIX[i % len(MIX)]
        out.append(MAKE[kind](ns, f"{kind}-{counts[kind]}"))
        counts[kind] += 1
    return out


def paths(ns: str) -> list[str]:
    return [f"/api/v1/namespaces/{ns}/configmaps", f"/api/v1/namespaces/{ns}/secrets",
            f"/apis/apps/v1/namespaces/{ns}/deployments"]


class RssSampler:
    """The RSS of some processes every ``interval`` seconds, in the background."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        self.pids, self.interval = pids, interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.samples.append((time.monotonic(), {name: rss_mib(pid) for name, pid in self.pids.items()}))
            await asyncio.sleep(self.interval)

    def at(self, when: float) -> dict[str, float]:
        """The last sample taken at or before ``when``."""
        before = [rss for t, rss in self.samples if t <= when] or [self.samples[0][1]]
        return {name: round(mib, 1) for name, mib in before[-1].items()}

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def tenths(progress: dict[int, float], started: float) -> list[float]:
    return [round(t - started, 1) for _, t in sorted(progress.items())]


async def raw_copy(src: KubeClient, dst: KubeClient, spaces: list[str], n: int,
                   pids: dict[str, int], probe_cpus: set[int] | None) -> dict[str, Any]:
    """The ceiling: the same objects straight into the destination by a plain client."""
    prov = transforms.Provenance(SYSTEM, "raw", 0, "uid", "1")
    raw = []
    for ns in spaces:
        await namespace(dst, f"raw-{ns}")
        for obj in await as_read_from(src, ns, RESOURCES):
            copy = transforms.deactivate(sanitizing.sanitize(obj), prov)
            copy["metadata"]["namespace"] = f"raw-{ns}"
            raw.append(copy)
    assert len(raw) == n, f"the source holds {len(raw)} objects, not {n}"
    progress: dict[int, float] = {}
    seen = asyncio.create_task(count_until(dst, [p for ns in spaces for p in paths(f"raw-{ns}")], n, timeout=3600,
                                           predicate=is_copy, milestones=progress, metadata_only=True))
    await asyncio.sleep(1)  # the watches are established
    cpu = CpuMeter(pids)
    started = time.monotonic()
    with SpeedProbe(cpus=probe_cpus) as probe:
        await apply_all(dst, raw, concurrency=SyncerSettings().consumer.workers, parse=False)
        done = await seen
    spent = cpu.spent()
    # The pipeline then writes into a destination as empty as the raw client found it: a cluster
    # holding 100,000 more objects costs its API server more per write (a larger heap to collect).
    cleared = time.monotonic()
    await clear(dst, [p for ns in spaces for p in paths(f"raw-{ns}")])
    return {"objects_per_s": round(n / (done - started), 1), "seconds": round(done - started, 1),
            "speed_probe_ms": probe.ms(),
            "cpu_seconds": spent, "tenths_after_s": tenths(progress, started),
            "deleted_again_in_s": round(time.monotonic() - cleared, 1)}


async def clear(client: KubeClient, collections: list[str]) -> None:
    """Delete everything in ``collections`` (a few at a time) and wait until it is gone."""
    gate = asyncio.Semaphore(4)

    async def one(path: str) -> None:
        async with gate:
            await client.request("DELETE", path, parse=False, timeout=600)
        while (await client.request("GET", path, params={"limit": "1"}))["items"]:
            await asyncio.sleep(1)

    await asyncio.gather(*(one(path) for path in collections))


async def handled(metrics: dict[str, str]) -> collections.Counter[str]:
    """The syncer's count of the messages it handled, by outcome (applied, skipped_stale, retry...):
    more than one per object is work done twice (a redelivery, a retry)."""
    return await metric_by(metrics["syncer"], "standby_syncer_applies_total", "outcome")


async def first_copy(dst: KubeClient, spaces: list[str], n: int, pids: dict[str, int], services: dict[str, int],
                     metrics: dict[str, str], probe_cpus: set[int] | None) -> dict[str, Any]:
    """Every plan created at once; until every copy exists. The services' memory along the way."""
    progress: dict[int, float] = {}
    seen = asyncio.create_task(count_until(dst, [p for ns in spaces for p in paths(ns)], n, timeout=3600,
                                           predicate=is_copy, milestones=progress, metadata_only=True))
    await asyncio.sleep(1)
    idle = {name: round(rss_mib(pid), 1) for name, pid in services.items()}
    sampler = RssSampler(services)
    cpu = CpuMeter(pids)
    requests, outcomes = await requests_by_kind(dst), await handled(metrics)
    started = time.monotonic()
    with SpeedProbe(cpus=probe_cpus) as probe:
        await asyncio.gather(*(plan(dst, ns, [ns], RESOURCES) for ns in spaces))
        done = await seen
    spent = cpu.spent()
    requests, outcomes = await requests_by_kind(dst) - requests, await handled(metrics) - outcomes
    await asyncio.sleep(5)  # the syncer's last progress and status
    held = {name: round(rss_mib(pid), 1) for name, pid in services.items()}
    await sampler.stop()
    return {"objects_per_s": round(n / (done - started), 1), "seconds": round(done - started, 1),
            "speed_probe_ms": probe.ms(),
            "cpu_seconds": spent, "tenths_after_s": tenths(progress, started),
            "destination_requests": dict(requests.most_common(10)), "syncer_handled": dict(outcomes),
            "rss_mib_idle": idle, "rss_mib_held": held,
            "rss_mib_at_each_tenth": {name: [sampler.at(t)[name] for _, t in sorted(progress.items())]
                                      for name in services},
            "rss_mib_per_10000": {name: round((held[name] - idle[name]) * 10000 / n, 1) for name in services}}


async def stream_sequences(server: Any, spaces: list[str]) -> int:
    """The sum of the plans' streams' last sequence numbers: anything published moves it."""
    nc = await connect_broker(server)
    try:
        js = nc.jetstream()
        return sum([(await js.stream_info(subjects.stream_name(SYSTEM, ns))).state.last_seq for ns in spaces])
    finally:
        await nc.close()


async def copy_writes(dst: KubeClient) -> float:
    """The destination API server's count of write requests to the copied resources."""
    return await metric_sum(dst, "apiserver_request_total", verb=WRITES,
                            resource=tuple(r for _, _, r in RESOURCES))


async def ready_after_restart(metrics: dict[str, str], n: int, plans: int, timeout: float) -> dict[str, float]:
    """Seconds (from now) until the watcher has listed all it watches and the syncer reports every
    copy in sync with nothing pending, each by its own metrics."""
    started = time.monotonic()
    ready: dict[str, float] = {}
    checks = {
        "watcher": lambda url: asyncio.gather(
            metric_sum(url, "standby_watcher_relists_total"), metric_sum(url, "standby_watcher_objects_watched")),
        "syncer": lambda url: asyncio.gather(
            metric_sum(url, "standby_objects_in_sync"), metric_sum(url, "standby_objects_out_of_sync")),
    }
    while len(ready) < len(checks) and time.monotonic() - started < timeout:
        for service, check in checks.items():
            if service in ready:
                continue
            try:
                first, second = await check(metrics[service])
            except OSError:  # not listening yet
                continue
            if (service == "watcher" and first >= plans * len(RESOURCES) and second == n) or (
                    service == "syncer" and first == n and second == 0):
                ready[service] = round(time.monotonic() - started, 1)
        await asyncio.sleep(0.25)
    return ready


def isolate(env: Any, standby_cpus: int) -> dict[str, list[int]]:
    """Every process on its CPUs (``--standby-cpus``): the stand-by cluster's on ``standby_cpus`` of
    their own, the others on the rest; nothing with 0."""
    if not standby_cpus:
        return {}
    mine, rest = split_cpus(standby_cpus)
    standby = {proc.pid for proc in env.clusters["destination"].processes.values()}
    for pid in standby:
        pin(pid, mine)
    for pid in set(service_pids(env).values()) - standby:
        pin(pid, rest)
    # As the kernel has them now: the stand-by's API server's and the syncer's.
    return {"standby": sorted(os.sched_getaffinity(env.clusters["destination"].processes["kube-apiserver"].pid)),
            "others": sorted(os.sched_getaffinity(env.services["syncer"].pid))}


async def restart(env: Any, dst: KubeClient, metrics: dict[str, str], spaces: list[str], n: int,
                  standby_cpus: int) -> dict[str, Any]:
    published_before, written_before = await stream_sequences(env.nats, spaces), await copy_writes(dst)
    for name in ("watcher", "syncer"):
        env.services[name].stop()
    for name in ("watcher", "syncer"):
        env.services[name].start()
    isolate(env, standby_cpus)
    ready = await ready_after_restart(metrics, n, len(spaces), timeout=300)
    await asyncio.sleep(10)
    return {"ready_after_s": ready, "published": await stream_sequences(env.nats, spaces) - published_before,
            "written": int(await copy_writes(dst) - written_before), "target_ready_s": 60,
            "watcher_rss_mib": round(rss_mib(env.services["watcher"].pid), 1),
            "syncer_rss_mib": round(rss_mib(env.services["syncer"].pid), 1)}


async def steady(src: KubeClient, dst: KubeClient, server: Any, spaces: list[str], keys: int, rate: float,
                 seconds: float, pids: dict[str, int], metrics: dict[str, str]) -> dict[str, Any]:
    # When each source version reached the stream: a plain subscription sees what the watcher publishes.
    in_stream: dict[str, float] = {}
    nc = await connect_broker(server)

    async def on_message(msg: Any) -> None:
        in_stream.setdefault((msg.headers or {}).get(streams.HDR_RV, ""), time.monotonic())
    for ns in spaces:
        await nc.subscribe(subjects.plan_filter("standby", SYSTEM, ns), cb=on_message)
    listing = time.monotonic()
    async with copies_seen(dst, "/api/v1/configmaps") as seen:
        listed_in = time.monotonic() - listing
        await asyncio.sleep(2)
        cpu, outcomes = CpuMeter(pids), await handled(metrics)
        written, achieved = await paced_updates(src, spaces, "cm", keys, rate=rate, seconds=seconds)
        deadline = time.monotonic() + 30
        while set(written) - set(seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    await nc.close()
    lags = [max(0.0, seen[rv] - t) for rv, t in written.items() if rv in seen]
    # When in the phase the late ones were: the p99 of each 10 s (right after a restart, or all along).
    began = min(written.values(), default=0.0)
    windows: dict[int, list[float]] = {}
    for rv, t in written.items():
        if rv in seen:
            windows.setdefault(int((t - began) // 10), []).append(max(0.0, seen[rv] - t))
    to_stream = [max(0.0, in_stream[rv] - t) for rv, t in written.items() if rv in in_stream]
    stream_to_copy = [max(0.0, seen[rv] - in_stream[rv]) for rv in written if rv in seen and rv in in_stream]
    return {"changes": len(written), "achieved_write_rate_per_s": round(achieved, 1),
            "copies_listed_in_s": round(listed_in, 1), "missing": len(written) - len(lags),
            "lag_p50_ms": round(percentile(lags, 50) * 1000, 1), "lag_p99_ms": round(percentile(lags, 99) * 1000, 1),
            "lag_max_ms": round(max(lags, default=float("nan")) * 1000, 1),
            "lag_p99_ms_each_10s": [round(percentile(w, 99) * 1000, 1) for _, w in sorted(windows.items())],
            "source_to_stream_p50_p99_ms": [round(percentile(to_stream, q) * 1000, 1) for q in (50, 99)],
            "stream_to_copy_p50_p99_ms": [round(percentile(stream_to_copy, q) * 1000, 1) for q in (50, 99)],
            "syncer_handled": dict(await handled(metrics) - outcomes), "cpu_seconds": cpu.spent()}


@contextlib.asynccontextmanager
async def profiled(dst: KubeClient, into: Path | None, phase: str, seconds: float) -> AsyncIterator[None]:
    """Within the block, a CPU profile of the stand-by's API server (``into``/PHASE.pprof), if asked:
    ``seconds`` long, from a third of that into the phase; a phase that ends first waits for it."""
    if into is None:
        yield
        return
    task = asyncio.create_task(cpu_profile(dst, into / f"{phase}.pprof", after=seconds / 3, seconds=seconds))
    try:
        yield
    finally:
        await task


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--profile-into", type=Path, default=None,
                        help="a directory: a CPU profile of the stand-by's API server in the raw round and in the "
                             "first copy, raw.pprof and first_copy.pprof")
    parser.add_argument("--profile-seconds", type=float, default=30, help="each profile's length")
    parser.add_argument("--first-copy-only", action="store_true", help="stop after the first copy")
    parser.add_argument("--standby-cpus", type=int, default=0,
                        help="CPUs of their own for the stand-by's API server and etcd, the rest for every other "
                             "process; 0: all share every CPU")
    args = parser.parse_args()
    per_plan = args.objects // args.plans
    n = per_plan * args.plans
    spaces = [f"scale-{p}" for p in range(args.plans)]
    env, metrics = services_env(quick=False)  # the shipped settings
    try:
        async with KubeClient.from_kubeconfig(env.clusters["source"].kubeconfig, connections=64) as src, \
                KubeClient.from_kubeconfig(env.clusters["destination"].kubeconfig,
                                           connections=SyncerSettings().destination_connections) as dst:
            cpus = isolate(env, args.standby_cpus)
            # With --standby-cpus, the speed that matters is that of the stand-by's CPUs: the probe runs there.
            probe_cpus = set(cpus["standby"]) if cpus else None
            pids = service_pids(env)
            services = {name: proc.pid for name, proc in env.services.items()}
            with SpeedProbe(cpus=probe_cpus) as idle:  # the speed with nothing to do: to compare the phases' with
                await asyncio.sleep(5)
            started = time.monotonic()
            for ns in spaces:
                await namespace(src, ns)
                await apply_all(src, objects(ns, per_plan), concurrency=64, parse=False)
            result: dict[str, Any] = {"benchmark": "scale", "objects": n, "plans": args.plans,
                                      "source_written_in_s": round(time.monotonic() - started, 1),
                                      "speed_probe_idle_ms": idle.ms(), "cpus": cpus or "shared"}
            async with profiled(dst, args.profile_into, "raw", args.profile_seconds):
                result["raw"] = raw = await raw_copy(src, dst, spaces, n, pids, probe_cpus)
            print("raw", raw, flush=True)
            async with profiled(dst, args.profile_into, "first_copy", args.profile_seconds):
                result["first_copy"] = first = await first_copy(dst, spaces, n, pids, services, metrics, probe_cpus)
            print("first copy", first, flush=True)
            result["ratio"] = round(first["objects_per_s"] / raw["objects_per_s"], 3)
            # The same ratio had both phases run on a machine of the same speed (the speed probe's
            # CPU time per piece of work scales a phase's rate): an estimate, printed beside it.
            if first["speed_probe_ms"] and raw["speed_probe_ms"]:
                result["ratio_at_equal_speed"] = round(result["ratio"] * first["speed_probe_ms"]
                                                       / raw["speed_probe_ms"], 3)
            if args.first_copy_only:
                return result
            result["restart"] = again = await restart(env, dst, metrics, spaces, n, args.standby_cpus)
            print("restart", again, flush=True)
            pids = service_pids(env)  # the restarted services
            keys = min(200, sum(1 for kind in MIX if kind == "cm") * per_plan // len(MIX))
            result["steady"] = s = await steady(src, dst, env.nats, spaces, keys, args.rate, args.seconds, pids,
                                                metrics)
            print("steady", s, flush=True)
            per_10k = first["rss_mib_per_10000"]
            result["meets_targets"] = {
                "first_copy_ratio": result["ratio"] >= 0.7,
                "restart": (len(again["ready_after_s"]) == 2 and max(again["ready_after_s"].values()) <= 60
                            and again["published"] == 0 and again["written"] == 0),
                "memory_per_10000": all(mib <= 100 for mib in per_10k.values()),
                "steady_lag": s["lag_p50_ms"] <= 100 and s["lag_p99_ms"] <= 500 and s["missing"] == 0,
            }
            return result
    finally:
        stop_env(env)


if __name__ == "__main__":
    run(main)
