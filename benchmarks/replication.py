"""What replication costs: the sync benchmark's bulk and steady phases with each plan's stream on one
NATS server (R1) and on a 3-node JetStream cluster with TLS (R3), in the same run.

Each round starts a new environment per broker (two light clusters, the broker, the watcher and
syncer as processes), alternating which broker goes first, and runs in it the bulk phase (N objects
into an empty stand-by, as objects/s and as a ratio to the raw server-side-apply ceiling measured
in the same environment) and the steady phase (R changes/s for S seconds: replication lag p50/p99,
source write to copy seen), then the broker alone (a stream of the same replicas, a durable
consumer read the syncer's way, 100 messages/s: publish to acknowledgement, and publish to
delivery). Reported: the medians per broker and R3's cost against R1 (bulk rate ratio; steady lag
difference; broker latency difference).

    cd benchmarks && ../.venv/bin/python replication.py [--objects 2000] [--rate 100] [--seconds 30] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from common import KubeClient, connect_broker, percentile, run, stop_env
from nats.js import api as js_api
from sync import bulk, service_pids, services_env, steady

from services.devenv.natsd import LocalNats
from services.syncer.pulling import Pull
from services.syncer.settings import SyncerSettings

BROKERS = {"R1": 1, "R3": 3}  # replicas -> NATS nodes


async def broker_latency(server: LocalNats, *, replicas: int, messages: int = 500,
                         rate: float = 100) -> dict[str, Any]:
    """The broker alone: publish to acknowledgement, and publish to delivery to a durable consumer
    of ``replicas`` read as the syncer reads it (one pull request kept outstanding), in ms."""
    nc = await connect_broker(server)
    try:
        js = nc.jetstream()
        await js.add_stream(name="LATENCY", subjects=["latency.>"], num_replicas=replicas)
        await js.add_consumer("LATENCY", durable_name="reader", ack_policy=js_api.AckPolicy.EXPLICIT,
                              num_replicas=replicas, max_ack_pending=1000)
        sent: dict[int, float] = {}
        acked: list[float] = []
        delivered: list[float] = []
        done = asyncio.Event()

        async def deliver(msg: Any) -> None:
            delivered.append(time.perf_counter() - sent[int(msg.data)])
            await msg.ack()
            if len(delivered) == messages:
                done.set()

        async def room() -> int:
            return 100
        reader = asyncio.create_task(Pull(nc, "LATENCY", "reader").run(room, deliver))
        await asyncio.sleep(0.5)
        for i in range(messages):
            sent[i] = time.perf_counter()
            await js.publish(f"latency.{i % 10}", str(i).encode())
            acked.append(time.perf_counter() - sent[i])
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(done.wait(), 30)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await js.delete_stream("LATENCY")
    finally:
        await nc.close()
    return {"broker_publish_ack_p50_p99_ms": [round(percentile(acked, q) * 1000, 2) for q in (50, 99)],
            "broker_delivery_p50_p99_ms": [round(percentile(delivered, q) * 1000, 2) for q in (50, 99)]}


async def one(nodes: int, objects: int, rate: float, seconds: float) -> dict[str, Any]:
    env, metrics = services_env(nodes)
    try:
        async with KubeClient.from_kubeconfig(env.clusters["source"].kubeconfig, connections=64) as src, \
                KubeClient.from_kubeconfig(env.clusters["destination"].kubeconfig,
                                           connections=SyncerSettings().destination_connections) as dst:
            pids = service_pids(env)
            assert env.nats is not None
            b = await bulk(src, dst, env.nats, objects, 1, pids)
            s = await steady(src, dst, env.nats, rate, seconds, metrics, pids)
            alone = await broker_latency(env.nats, replicas=min(3, nodes))
    finally:
        stop_env(env)
    return {"bulk_objects_per_s": round(b["pipeline_objects_per_s"], 1), "bulk_ratio": b["ratio"],
            "raw_ceiling_objects_per_s": round(b["raw_ceiling_objects_per_s"], 1),
            "lag_p50_ms": s["lag_p50_ms"], "lag_p99_ms": s["lag_p99_ms"], "missing": s["missing"],
            "source_to_stream_p50_p99_ms": s["source_to_stream_p50_p99_ms"],
            "stream_to_copy_p50_p99_ms": s["stream_to_copy_p50_p99_ms"],
            "stages": s["stages"], "cpu_seconds": s["cpu_seconds"], **alone}


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rounds", type=int, default=1, help="each: both brokers, alternating which goes first")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in BROKERS}
    for round_ in range(args.rounds):
        order = list(BROKERS) if round_ % 2 == 0 else list(reversed(BROKERS))
        for name in order:
            runs[name].append(await one(BROKERS[name], args.objects, args.rate, args.seconds))
            print(name, runs[name][-1], flush=True)

    def median(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[name]))
    summary = {name: {key: median(name, key) for key in ("bulk_objects_per_s", "bulk_ratio", "lag_p50_ms",
                                                         "lag_p99_ms")} for name in BROKERS}
    return {"benchmark": "replication", "objects": args.objects, "rate_per_s": args.rate, "seconds": args.seconds,
            "rounds": args.rounds, "runs": runs, "medians": summary,
            "r3_bulk_rate_vs_r1": round(summary["R3"]["bulk_objects_per_s"] / summary["R1"]["bulk_objects_per_s"], 3),
            "r3_extra_lag_p50_ms": round(summary["R3"]["lag_p50_ms"] - summary["R1"]["lag_p50_ms"], 1),
            "r3_extra_lag_p99_ms": round(summary["R3"]["lag_p99_ms"] - summary["R1"]["lag_p99_ms"], 1),
            "missing": sum(r["missing"] for rs in runs.values() for r in rs)}


if __name__ == "__main__":
    run(main)
