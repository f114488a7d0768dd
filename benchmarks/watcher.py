"""Watcher speed on a real source and a real nats-server (watcher as its own process).

- steady: R changes/s for S seconds; delay from the source write response to the change being
  stored in the stream and delivered on its subject (one process, one clock; the subject
  subscription sees a message when JetStream has stored it, i.e. at PubAck time), p50/p99.
  Target: p99 < 50 ms at 200 changes/s.
- burst: B objects written as fast as the source takes them; events/s published.

    .venv/bin/python benchmarks/watcher.py [--rate 200] [--seconds 30] [--burst 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import nats
from common import (
    KubeClient,
    apply_all,
    configmap,
    namespace,
    paced_updates,
    percentile,
    plan,
    run,
    start_env,
    stop_env,
)

from schemas import subjects


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--burst", type=int, default=5000)
    args = parser.parse_args()
    env = start_env(services=("watcher",), extra_env={"STANDBY_WATCHER_PLAN_RESYNC_SECONDS": "0.5",
                                                       "STANDBY_WATCHER_SERVE__LOG_LEVEL": "WARNING"})
    assert env.nats is not None
    nc = await nats.connect(env.nats.url, user=env.nats.user, password=env.nats.password)
    arrived: dict[str, float] = {}
    count = 0

    async def on_msg(msg: Any) -> None:
        nonlocal count
        count += 1
        rv = (msg.headers or {}).get("Standby-Rv")
        if rv:
            arrived.setdefault(rv, time.monotonic())

    try:
        async with KubeClient.from_kubeconfig(env.clusters["source"].kubeconfig, connections=64) as src, \
                KubeClient.from_kubeconfig(env.clusters["destination"].kubeconfig) as dst:
            await nc.subscribe(subjects.plan_filter("standby", "standby-system", "wbench"), cb=on_msg)
            await namespace(src, "wbench")
            keys = 200
            await apply_all(src, [configmap("wbench", f"k-{i}") for i in range(keys)])
            await plan(dst, "wbench", ["wbench"], [("", "v1", "configmaps")])
            deadline = time.monotonic() + 60
            while count < keys and time.monotonic() < deadline:
                await asyncio.sleep(0.1)

            written, achieved = await paced_updates(src, "wbench", "k", keys, rate=args.rate, seconds=args.seconds)
            total = len(written)
            await asyncio.sleep(2)
            delays = [max(0.0, arrived[rv] - t) for rv, t in written.items() if rv in arrived]
            steady = {"changes": total, "rate_per_s": args.rate, "achieved_write_rate_per_s": round(achieved, 1),
                      "published": len(delays), "missing": total - len(delays),
                      "publish_delay_p50_ms": round(percentile(delays, 50) * 1000, 2),
                      "publish_delay_p99_ms": round(percentile(delays, 99) * 1000, 2), "target_p99_ms": 50}
            print("steady", steady, flush=True)

            before = count
            t0 = time.monotonic()
            write_rate = await apply_all(src, [configmap("wbench", f"b-{i}") for i in range(args.burst)])
            deadline = time.monotonic() + 120
            while count - before < args.burst and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            elapsed = time.monotonic() - t0
            burst = {"objects": args.burst, "source_write_rate_per_s": round(write_rate, 1),
                     "published_per_s": round((count - before) / elapsed, 1), "published": count - before,
                     "seconds": round(elapsed, 2)}
            print("burst", burst, flush=True)
            return {"benchmark": "watcher", "steady": steady, "burst": burst,
                    "meets_target": steady["publish_delay_p99_ms"] < 50 and steady["missing"] == 0}
    finally:
        await nc.close()
        stop_env(env)


if __name__ == "__main__":
    run(main)
