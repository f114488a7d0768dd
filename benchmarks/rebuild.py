"""Rebuild speed: N objects from a plan's stream into an empty real cluster, against the raw
server-side-apply ceiling measured in the same run.

- rebuild: the whole path (:mod:`services.common.rebuilding`): read every object's state as of now
  from the stream and decode it, list the target and compare, write each object as the syncer
  writes copies (activation's order, missing namespaces created), ``--concurrency`` in flight;
  objects/s over the whole time, and the time of each part.
- raw ceiling: the same bodies applied by the same client with the same concurrency into other
  namespaces of the same cluster (and nothing else: no stream, no comparison), measured before and
  after the rebuild; the ratio is against their mean. Target: >= 0.8.
- memory: the benchmark process's peak RSS (it holds the stream's states and the bodies).

    .venv/bin/python benchmarks/rebuild.py [--objects 10000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import copy
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


def elsewhere(bodies: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    out = []
    for body in bodies:
        moved = copy.deepcopy(body)
        moved["metadata"]["namespace"] = f"{prefix}-{moved['metadata']['namespace']}"
        out.append(moved)
    return out


async def namespaces(client: KubeClient, names: set[str]) -> None:
    for name in sorted(names):
        await client.apply(f"/api/v1/namespaces/{name}", {"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": name}}, field_manager="bench")


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="standby-rbench-"))
    server = LocalNats(root).start()
    target = LocalCluster("target", root).start()
    nc = await nats.connect(server.url, user=server.user, password=server.password)
    try:
        js = nc.jetstream()
        stream = subjects.stream_name(*PLAN)
        await streams.ensure_stream(js, settings.NatsSettings(), *PLAN, api.History())
        await publish_changes(js, stream, [stream_change(i, 0, PLAN) for i in range(args.objects)])
        async with KubeClient.from_kubeconfig(target.kubeconfig, connections=max(64, args.concurrency)) as client:
            req = rebuilding.Request(plan())
            keys = StreamKeys(client, PLAN[0], settings.STREAM_KEYS_SECRET)  # nothing is sealed here

            started = time.perf_counter()
            state = await rebuilding.read_state(js, keys, req)
            read = time.perf_counter() - started
            prepared = await rebuilding.prepare(client, state, req)
            compared = time.perf_counter() - started - read
            bodies = [prepared.bodies[s.key] for s in prepared.steps]

            # The ceiling before: the same bodies, other namespaces, the same client and concurrency.
            raw_before_ns = {f"raw1-{b['metadata']['namespace']}" for b in bodies}
            await namespaces(client, raw_before_ns)
            raw_before = await apply_all(client, elsewhere(bodies, "raw1"), concurrency=args.concurrency, parse=False)

            started = time.perf_counter()
            state = await rebuilding.read_state(js, keys, req)
            prepared = await rebuilding.prepare(client, state, req)
            outcomes = await rebuilding.execute(client, prepared, concurrency=args.concurrency)
            whole = time.perf_counter() - started

            await namespaces(client, {f"raw2-{b['metadata']['namespace']}" for b in bodies})
            raw_after = await apply_all(client, elsewhere(bodies, "raw2"), concurrency=args.concurrency, parse=False)
            again = await rebuilding.prepare(client, await rebuilding.read_state(js, keys, req), req)
    finally:
        await nc.close()
        target.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    failed = [o for o in outcomes if not o.ok]
    rate = args.objects / whole
    ceiling = (raw_before + raw_after) / 2
    result = {
        "benchmark": "rebuild", "objects": args.objects, "concurrency": args.concurrency,
        "rebuild_objects_per_s": round(rate), "rebuild_seconds": round(whole, 2),
        "read_seconds": round(read, 2), "compare_seconds": round(compared, 2),
        "raw_ssa_objects_per_s": [round(raw_before), round(raw_after)], "ratio": round(rate / ceiling, 2),
        "failed": len(failed), "unchanged_after": sum(1 for s in again.steps if s.action == "unchanged"),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    result["ok"] = not failed and result["unchanged_after"] == args.objects and result["ratio"] >= 0.8
    return result


if __name__ == "__main__":
    run(main)
