"""Shared pieces of the benchmarks: a local environment with the services as processes, object
factories, concurrent writers, percentiles."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import nats
import nats.js.errors
from prometheus_client.parser import text_string_to_metric_families

from schemas import API_VERSION, codec, subjects
from schemas import annotations as ann
from schemas.envelope import Envelope, EventType, ObjectReference
from services.common import streams
from services.common.kube import METADATA_LIST, METADATA_ONLY, KubeClient, follow
from services.common.settings import NatsSettings
from services.devenv import bootstrap, environment
from services.devenv.natsd import LocalNats

SYSTEM = bootstrap.SYSTEM_NAMESPACE


def configmap(ns: str, name: str, value: str = "1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns,
                                                                  "labels": {"app": "bench"}},
            "data": {"value": value, "config.yaml": "key: value\n" * 20}}


def secret(ns: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
            "data": {"username": "YWRtaW4=", "password": base64.b64encode(name.encode() * 4).decode()}}


def deployment(ns: str, name: str, replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns,
                                                                        "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                         "name": "main", "image": f"registry.example/{name}:1.0",
                         "env": [{"name": f"SETTING_{i}", "value": "x" * 20} for i in range(10)],
                         "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


def stream_change(i: int, version: int, plan: tuple[str, str]) -> tuple[str, bytes, dict[str, str]]:
    """Object ``i`` (ConfigMaps and Deployments in 20 namespaces) at ``version``, as the watcher
    publishes it to ``plan``'s stream: (subject, data, headers)."""
    ns = f"ns-{i % 20}"
    if i % 2:
        body, group, resource_, kind = deployment(ns, f"d-{i}"), "apps", "deployments", "Deployment"
        body["spec"]["template"]["spec"]["containers"][0]["image"] = f"registry.example/d-{i}:{version}"
    else:
        body, group, resource_, kind = configmap(ns, f"c-{i}", str(version)), "", "configmaps", "ConfigMap"
    meta = body["metadata"]
    rv = str(1000 + i * 100 + version)
    env = Envelope(type=EventType.UPSERT, ref=ObjectReference(group=group, version="v1", resource=resource_,
                                                              kind=kind, namespace=ns, name=meta["name"]),
                   source_uid=f"uid-{i}", source_resource_version=rv, observed_at=time.time(),
                   plan_namespace=plan[0], plan_name=plan[1], body=body)
    subject = subjects.object_subject(prefix="standby", plan_namespace=plan[0], plan_name=plan[1], group=group,
                                      version="v1", resource=resource_, namespace=ns, name=meta["name"])
    return subject, codec.encode(env), {streams.HDR_TYPE: "UPSERT", streams.HDR_RV: rv, streams.HDR_UID: f"uid-{i}",
                                        "Nats-Msg-Id": f"uid-{i}:{rv}:UPSERT"}


async def publish_changes(js: Any, stream: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> None:
    for start in range(0, len(messages), 1000):
        await asyncio.gather(*(js.publish(s, d, headers=h, stream=stream) for s, d, h in messages[start:start + 1000]))


def path_of(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    if obj["kind"] in ("ConfigMap", "Secret"):
        return f"/api/v1/namespaces/{meta['namespace']}/{obj['kind'].lower()}s/{meta['name']}"
    return f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}"


KINDS = {"configmaps": "ConfigMap", "secrets": "Secret", "deployments": "Deployment"}


async def as_read_from(src: KubeClient, ns: str, resources: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """The objects of ``resources`` (group, version, plural; see :data:`KINDS`) in ``ns`` as the
    source API server returns them, with its defaults filled in: what the watcher reads, sanitizes
    and publishes."""
    out = []
    for group, version, plural in resources:
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        items, _ = await src.list_all(f"{base}/namespaces/{ns}/{plural}")
        out.extend({**obj, "apiVersion": f"{group}/{version}" if group else version, "kind": KINDS[plural]}
                   for obj in items)
    return out


async def apply_all(client: KubeClient, objects: Iterable[dict[str, Any]], *, concurrency: int = 64,
                    manager: str = "bench", parse: bool = True) -> float:
    """Server-side apply every object with ``concurrency`` in flight; returns objects/s.
    ``parse=False``: ask for (and skip reading) only each object's metadata, as the syncer does."""
    items = list(objects)
    sem = asyncio.Semaphore(concurrency)

    async def one(obj: dict[str, Any]) -> None:
        async with sem:
            await client.apply(path_of(obj), obj, field_manager=manager, parse=parse)

    start = time.perf_counter()
    await asyncio.gather(*(one(o) for o in items))
    return len(items) / (time.perf_counter() - start)


async def namespace(client: KubeClient, name: str) -> None:
    await client.apply(f"/api/v1/namespaces/{name}", {"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": name}}, field_manager="bench")


async def plan(client: KubeClient, name: str, namespaces: list[str], resources: list[tuple[str, str, str]]) -> None:
    await client.apply(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryplans/{name}", {
        "apiVersion": API_VERSION, "kind": "RecoveryPlan", "metadata": {"name": name, "namespace": SYSTEM},
        "spec": {"forceNamespaceCreation": True, "sourceClusterRef": {"name": "source", "namespace": SYSTEM},
                 "resources": [{"group": g, "version": v, "resource": r, "filters": {"namespaces": namespaces}}
                               for g, v, r in resources]}}, field_manager="bench")


async def paced_updates(client: KubeClient, ns: str | list[str], prefix: str, keys: int, *, rate: float,
                        seconds: float, latencies: list[float] | None = None) -> tuple[dict[str, float], float]:
    """Update ConfigMaps ``<prefix>-<i % keys>`` at ``rate`` per second for ``seconds`` without
    waiting for one write before starting the next (several namespaces: each in turn, the same
    ``keys`` names in each). Returns {resourceVersion: time the write returned} and the write rate
    achieved; ``latencies`` gets each write's duration."""
    written: dict[str, float] = {}
    interval, count = 1 / rate, int(rate * seconds)
    pending: set[asyncio.Task[None]] = set()
    spaces = [ns] if isinstance(ns, str) else ns

    async def write(i: int) -> None:
        ns = spaces[i % len(spaces)]
        name = f"{prefix}-{i // len(spaces) % keys}"
        # Never the value the object was created with: a write that changes nothing is a no-op
        # (same resourceVersion), and its copy would be reported missing.
        started = time.monotonic()
        result = await client.request("PATCH", f"/api/v1/namespaces/{ns}/configmaps/{name}",
                                      params={"fieldManager": "bench", "force": "true"},
                                      body=configmap(ns, name, f"write-{i}"),
                                      content_type="application/apply-patch+yaml", accept=METADATA_ONLY)
        written[result["metadata"]["resourceVersion"]] = returned = time.monotonic()
        if latencies is not None:
            latencies.append(returned - started)

    start = time.monotonic()
    for i in range(count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(write(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return written, count / (time.monotonic() - start)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Run every thread of process ``pid`` on ``cpus`` only (a thread made later inherits its
    maker's CPUs: a Go runtime's new threads stay there too)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


CPUS = sorted(os.sched_getaffinity(0))  # this machine's, as the benchmark found them (before any pin)


def split_cpus(standby: int) -> tuple[set[int], set[int]]:
    """(the stand-by's CPUs, everyone else's): the last ``standby`` of this machine's, the rest."""
    cpus = CPUS
    if not 0 < standby < len(cpus):
        raise SystemExit(f"--standby-cpus {standby}: this machine has {len(cpus)} CPUs; leave at least one to the rest")
    return set(cpus[-standby:]), set(cpus[:-standby])


class CpuMeter:
    """CPU seconds each process spent between ``__init__`` and :meth:`spent`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def spent(self) -> dict[str, float]:
        spent = {name: round(cpu_seconds(pid) - self.start[name], 2) for name, pid in self.pids.items()}
        return {name: seconds for name, seconds in spent.items() if seconds >= 0.05}


class SpeedProbe:
    """How fast the machine runs, apart from how loaded it is: the CPU time (not the wall time) of a
    fixed piece of work, hashing 4 MiB in a thread of its own every ``interval`` seconds, while the
    block runs. On a shared virtual machine the same instructions take longer when the host is
    busy, and every process's CPU seconds grow with them: a phase whose probe took 1.3 times as long
    ran on a machine 1.3 times slower. hashlib releases the GIL, so the benchmark's own loop does
    not hold the probe up (and the probe costs ~1 % of a core)."""

    BLOCK = os.urandom(4 << 20)

    def __init__(self, interval: float = 0.5, cpus: set[int] | None = None) -> None:
        self.interval, self.cpus = interval, cpus  # ``cpus``: the probe runs there (the stand-by's own)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speed-probe", daemon=True)

    def _run(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)  # this thread only
        while not self._stop.wait(self.interval):
            started = time.thread_time()
            hashlib.sha256(self.BLOCK).digest()
            self.samples.append(time.thread_time() - started)

    def start(self) -> SpeedProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> SpeedProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ms(self) -> float | None:
        """The median CPU time of one probe, milliseconds."""
        return round(1000 * statistics.median(self.samples), 2) if self.samples else None


def start_env(full: bool = False, services: tuple[str, ...] = ("watcher", "syncer"),
              extra_env: dict[str, str] | None = None, nats_nodes: int = 1) -> environment.DevEnvironment:
    """``nats_nodes`` > 1: NATS as a TLS JetStream cluster, the services' streams with 3 replicas."""
    root = Path(tempfile.mkdtemp(prefix="standby-bench-"))
    env = environment.DevEnvironment(root, topology="two", full=full, nats_nodes=nats_nodes,
                                     nats_tls=nats_nodes > 1)
    env.start()
    bootstrap.install(env)
    if services:
        original = bootstrap.service_env

        def with_extra(e: environment.DevEnvironment, service: str) -> dict[str, str]:
            return {**original(e, service), **(extra_env or {})}

        bootstrap.service_env = with_extra  # type: ignore[assignment]
        try:
            bootstrap.start_services(env, services)
        finally:
            bootstrap.service_env = original  # type: ignore[assignment]
    return env


def stop_env(env: environment.DevEnvironment) -> None:
    """Stop everything ``start_env`` started and remove its directory (etcd data, logs) unless
    STANDBY_BENCH_KEEP is set."""
    env.stop()
    if not os.environ.get("STANDBY_BENCH_KEEP"):
        shutil.rmtree(env.root, ignore_errors=True)


async def count_until(client: KubeClient, paths: list[str], target: int, *, timeout: float,
                      predicate: Callable[[dict[str, Any]], bool], milestones: dict[int, float] | None = None,
                      metadata_only: bool = False) -> float:
    """Watch ``paths`` from now; returns the monotonic time when ``target`` distinct objects matching
    ``predicate`` have been seen (ADDED/MODIFIED). ``milestones`` gets the time each tenth was reached.
    ``metadata_only``: the objects' metadata is all ``predicate`` reads (less for this process to decode)."""
    seen: set[str] = set()
    tenth = max(1, target // 10)
    done = asyncio.Event()
    finished_at = 0.0

    async def watch(path: str) -> None:
        nonlocal finished_at
        items, rv = await client.list_all(path, accept=METADATA_LIST if metadata_only else None)
        for obj in items:
            if predicate(obj):
                seen.add(path + obj["metadata"]["name"])
        while not done.is_set():
            async for event in client.watch(path, resource_version=rv, timeout_seconds=60,
                                            accept=METADATA_ONLY if metadata_only else None):
                obj = event["object"]
                rv = obj["metadata"].get("resourceVersion", rv)
                if event["type"] in ("ADDED", "MODIFIED") and predicate(obj):
                    seen.add(path + obj["metadata"]["name"])
                    if milestones is not None and len(seen) % tenth == 0:
                        milestones.setdefault(len(seen), time.monotonic())
                    if len(seen) >= target and not done.is_set():
                        finished_at = time.monotonic()
                        done.set()
                        return

    tasks = [asyncio.create_task(watch(p)) for p in paths]
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return finished_at


@contextlib.asynccontextmanager
async def copies_seen(client: KubeClient, path: str, *, timeout: float = 300) -> AsyncIterator[dict[str, float]]:
    """Within the block: when each source resourceVersion was first seen on a copy under ``path``
    (source resourceVersion -> monotonic time), by a watch on the copies that lists again after 410
    Gone. The block starts once the first LIST is done: a change made while it still lists (40,000
    copies take seconds) is only seen when the watch that follows replays it, late by the rest of the
    LIST, and would be counted as the pipeline's lag."""
    seen: dict[str, float] = {}
    ready = asyncio.Event()

    def note(obj: dict[str, Any]) -> None:
        source_rv = (obj["metadata"].get("annotations") or {}).get(ann.SOURCE_RESOURCE_VERSION)
        if source_rv:
            seen.setdefault(source_rv, time.monotonic())

    def listed(items: list[dict[str, Any]]) -> None:
        for obj in items:
            note(obj)
        ready.set()

    task = asyncio.create_task(follow(client, path, listed=listed, changed=lambda _, obj: note(obj),
                                      retry_seconds=1.0, what="the copies", label_selector=f"{ann.MANAGED}=true"))
    try:
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiting], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()  # raises what ended it
        if not ready.is_set():
            raise TimeoutError(f"the copies under {path} were not listed within {timeout:.0f}s")
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def connect_broker(server: LocalNats) -> Any:
    """A connection to ``server``, one node or a TLS cluster, as the services make it."""
    return await streams.connect(NatsSettings.model_validate({
        "url": server.url, "user": server.user, "password": server.password,
        "tls_ca": server.pki.ca_cert if server.pki else None}), name="benchmark")


async def stream_holds(server: LocalNats, plan_name: str, target: int, *, timeout: float = 600) -> float:
    """The monotonic time at which the plan's stream first holds ``target`` objects' messages (polled;
    the watcher records the plan itself in the stream first)."""
    nc = await connect_broker(server)
    try:
        js, stream = nc.jetstream(), subjects.stream_name(SYSTEM, plan_name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                if (await js.stream_info(stream)).state.messages >= target + 1:  # and the plan's record
                    return time.monotonic()
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{stream} did not reach {target} messages")
    finally:
        await nc.close()


async def cpu_profile(client: KubeClient, into: Path, *, after: float, seconds: float) -> None:
    """A CPU profile of an API server (Go's pprof, served for its admins), ``after`` seconds from now
    and ``seconds`` long, written to ``into``: `go tool pprof -top FILE` reads it."""
    await asyncio.sleep(after)
    async with client.session.get("/debug/pprof/profile", params={"seconds": str(max(1, round(seconds)))},
                                  timeout=aiohttp.ClientTimeout(total=seconds + 60)) as response:
        response.raise_for_status()
        data = await response.read()

    def write() -> None:
        into.parent.mkdir(parents=True, exist_ok=True)
        into.write_bytes(data)
    await asyncio.to_thread(write)


async def _metrics_text(url: str | KubeClient) -> str:
    if isinstance(url, KubeClient):
        async with url.session.get("/metrics") as response:
            return await response.text()
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


async def histograms(url: str | KubeClient, **match: str) -> dict[str, list[tuple[float, float]]]:
    """Every histogram a service's /metrics (or an API server's) shows, the label sets that have the
    labels in ``match`` summed: name -> [(le, cumulative count)]."""
    text = await _metrics_text(url)
    out: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket") and all(sample.labels.get(k) == v for k, v in match.items()):
                buckets = out.setdefault(family.name, {})
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return {name: sorted(buckets.items()) for name, buckets in out.items()}


def histogram_change(before: dict[str, list[tuple[float, float]]], after: dict[str, list[tuple[float, float]]],
                     name: str) -> dict[str, Any]:
    """What one histogram recorded between two scrapes: the count, the bucket bound the 50th and
    99th percentiles fall in, and how many observations exceeded 100 and 250 ms."""
    old = dict(before.get(name, []))
    change = [(le, count - old.get(le, 0.0)) for le, count in after.get(name, [])]
    total = change[-1][1] if change else 0.0

    def bound(q: float) -> float | None:
        return next((le for le, count in change if count >= q * total), None) if total else None

    def over(limit: float) -> int:
        return int(total - max((count for le, count in change if le <= limit), default=0.0))
    return {"count": int(total), "p50_le_s": bound(0.5), "p99_le_s": bound(0.99),
            "over_100ms": over(0.1), "over_250ms": over(0.25)}


Match = dict[str, str | tuple[str, ...]]


def _matches(labels: dict[str, str], match: Match) -> bool:
    return all(labels.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in match.items())


async def metric_sums(url: str | KubeClient, wanted: dict[str, tuple[str, Match]]) -> dict[str, float]:
    """Several sums from one scrape: for each key, the sum of the samples (a counter's or gauge's,
    by sample name: ``x_sum`` and ``x_count`` for a histogram) of one name whose labels are those of
    its match (a tuple: any of its values)."""
    text = await _metrics_text(url)
    out = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for key, (name, match) in wanted.items():
                if sample.name == name and _matches(sample.labels, match):
                    out[key] += sample.value
    return out


async def metric_sum(url: str | KubeClient, name: str, **match: str | tuple[str, ...]) -> float:
    """The sum of one metric's samples whose labels are those in ``match``, from a service's /metrics
    or an API server's."""
    return (await metric_sums(url, {name: (name, match)}))[name]


async def metric_by(url: str | KubeClient, name: str, *labels: str) -> collections.Counter[str]:
    """One metric's samples summed by the values of some of its labels (joined by a space)."""
    text = await _metrics_text(url)
    out: collections.Counter[str] = collections.Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[" ".join(sample.labels.get(label, "") for label in labels)] += int(sample.value)
    return out


async def requests_by_kind(client: KubeClient) -> collections.Counter[str]:
    """An API server's own count of the requests it served, by verb and resource."""
    return await metric_by(client, "apiserver_request_total", "verb", "resource")


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def run(main: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    result = asyncio.run(main())
    emit(result)
    os._exit(0 if result.get("ok", True) else 1)

