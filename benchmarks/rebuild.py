"""Rebuild speed: N objects from a plan's stream into an empty real cluster, against the raw
server-side-apply ceiling measured in the same run.

- rebuild: the whole path (:mod:`services.common.rebuilding`): read every object's state as of now
  from the stream and decode it, list the target and compare, write each object as the syncer
  writes copies (activation's order, missing namespaces created), ``--concurrency`` in flight;
  objects/s over the whole time, and the time of each part.
- raw ceiling: the same bodies applied by the same client with the same concurrency (and nothing
  else: no stream, no comparison). Each rebuild and each raw run writes into a new, empty cluster
  (a cluster already holding 10,000 objects is measurably slower), and the rounds alternate which
  goes first; the ratio is of the means. Target: >= 0.8.
- memory: what the first rebuild adds to the benchmark process's peak RSS (measured before it and
  after it, before any raw run holds bodies of its own), and the process's peak over the run.

    .venv/bin/python benchmarks/rebuild.py [--objects 10000] [--concurrency 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from common import apply_all, publish_changes, run, stream_change

from schemas import api, subjects
from services.common import plans, rebuilding, settings, streams
from services.common.keys import StreamKeys
from services.common.kube import KubeClient
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats

PLAN = ("standby-system", "rbench")


def plan() -> plans.Plan:
    resources = [{"version": "v1", "resource": "configmaps"},
                 {"group": "apps", "version": "v1", "resource": "deployments"}]
    return plans.parse_plan({"metadata": {"namespace": PLAN[0], "name": PLAN[1]},
                             "spec": {"sourceClusterRef": {"name": "source"}, "resources": resources}})


async def namespaces(client: KubeClient, names: set[str]) -> None:
    for name in sorted(names):
        await client.apply(f"/api/v1/namespaces/{name}", {"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": name}}, field_manager="bench")


async def rebuild_into(root: Path, name: str, js: Any, req: rebuilding.Request, concurrency: int) -> dict[str, Any]:
    """The whole rebuild into a new, empty cluster; its figures."""
    target = LocalCluster(name, root).start()
    try:
        async with KubeClient.from_kubeconfig(target.kubeconfig, connections=max(64, concurrency)) as client:
            keys = StreamKeys(client, PLAN[0], settings.STREAM_KEYS_SECRET)  # nothing is sealed here
            started = time.perf_counter()
            state = await rebuilding.read_state(js, keys, req)
            read = time.perf_counter() - started
            prepared = await rebuilding.prepare(client, state, req)
            compared = time.perf_counter() - started - read
            outcomes = await rebuilding.execute(client, prepared, concurrency=concurrency)
            whole = time.perf_counter() - started
            again = await rebuilding.prepare(client, await rebuilding.read_state(js, keys, req), req)
            bodies = [prepared.bodies[s.key] for s in prepared.steps]
    finally:
        target.stop()
    return {"rate": len(bodies) / whole, "seconds": whole, "read": read, "compare": compared, "bodies": bodies,
            "failed": sum(1 for o in outcomes if not o.ok),
            "unchanged_after": sum(1 for s in again.steps if s.action == "unchanged")}


async def raw_into(root: Path, name: str, bodies: list[dict[str, Any]], concurrency: int) -> float:
    """The same bodies, applied by the same client with the same concurrency into a new, empty
    cluster (namespaces made first, as the rebuild makes them first)."""
    target = LocalCluster(name, root).start()
    try:
        async with KubeClient.from_kubeconfig(target.kubeconfig, connections=max(64, concurrency)) as client:
            await namespaces(client, {b["metadata"]["namespace"] for b in bodies})
            return await apply_all(client, bodies, concurrency=concurrency, parse=False)
    finally:
        target.stop()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="each: a rebuild and a raw run, alternating which "
                                                              "goes first, each into a new empty cluster")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="standby-rbench-"))
    server = LocalNats(root).start()
    nc = await nats.connect(server.url, user=server.user, password=server.password)
    rebuilt: list[dict[str, Any]] = []
    raw: list[float] = []
    rebuild_growth = 0.0
    try:
        js = nc.jetstream()
        stream = subjects.stream_name(*PLAN)
        await streams.ensure_stream(js, settings.NatsSettings(), *PLAN, api.History())
        await publish_changes(js, stream, [stream_change(i, 0, PLAN) for i in range(args.objects)])
        req = rebuilding.Request(plan())
        before = peak_rss_mib()
        for round_ in range(args.rounds):
            if round_ % 2 == 0:
                rebuilt.append(await rebuild_into(root, f"rebuild-{round_}", js, req, args.concurrency))
                if round_ == 0:
                    rebuild_growth = peak_rss_mib() - before
                raw.append(await raw_into(root, f"raw-{round_}", rebuilt[-1]["bodies"], args.concurrency))
            else:
                raw.append(await raw_into(root, f"raw-{round_}", rebuilt[-1]["bodies"], args.concurrency))
                rebuilt.append(await rebuild_into(root, f"rebuild-{round_}", js, req, args.concurrency))
    finally:
        await nc.close()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    rate = sum(r["rate"] for r in rebuilt) / len(rebuilt)
    ceiling = sum(raw) / len(raw)
    result = {
        "benchmark": "rebuild", "objects": args.objects, "concurrency": args.concurrency, "rounds": args.rounds,
        "rebuild_objects_per_s": [round(r["rate"]) for r in rebuilt],
        "rebuild_seconds": [round(r["seconds"], 2) for r in rebuilt],
        "read_seconds": [round(r["read"], 2) for r in rebuilt], "compare_seconds": [round(r["compare"], 2)
                                                                                   for r in rebuilt],
        "raw_ssa_objects_per_s": [round(r) for r in raw], "ratio": round(rate / ceiling, 2),
        "failed": sum(r["failed"] for r in rebuilt),
        "unchanged_after": min(r["unchanged_after"] for r in rebuilt),
        "rebuild_rss_growth_mib": round(rebuild_growth), "peak_rss_mib": round(peak_rss_mib()),
    }
    result["ok"] = not result["failed"] and result["unchanged_after"] == args.objects and result["ratio"] >= 0.8
    return result


if __name__ == "__main__":
    run(main)
