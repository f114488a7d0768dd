"""What the stream's history costs and how fast it is read, on a real nats-server (file store).

- disk: a plan's stream holding the latest state of N objects (half ConfigMaps, half Deployments,
  encoded as the watcher publishes them): bytes of messages and bytes on disk, per 10,000 objects;
  then C changes of those objects: bytes per change, and what 100 changes/s cost per hour and per
  day of ``spec.history.maxAge``.
- as of a moment: the stream grown to N x S messages (S states per object); the time to compute,
  and the message bytes held by, every object's state as of the middle of that history (``history.as_of``), beside
  the baseline in the same run: reading only the latest state of every object (what a rebuild as
  of now, the syncer's drift check and the watcher's start read). Target: under 5 s for 100,000
  messages.

    .venv/bin/python benchmarks/history.py [--objects 10000] [--states 10] [--changes 6000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from common import publish_changes, run, stream_change

from schemas import api, subjects
from services.common import history, settings, streams
from services.devenv.natsd import LocalNats

PLAN = ("standby-system", "hbench")


def disk_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--states", type=int, default=10, help="states per object in the as-of stream")
    parser.add_argument("--changes", type=int, default=6_000, help="changes measured for bytes per change")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="standby-hbench-"))
    server = LocalNats(root).start()
    nc = await nats.connect(server.url, user=server.user, password=server.password)
    try:
        js = nc.jetstream()
        stream = subjects.stream_name(*PLAN)
        await streams.ensure_stream(js, settings.NatsSettings(), *PLAN, api.History(states_per_object=args.states))
        n = args.objects
        await publish_changes(js, stream, [stream_change(i, 0, PLAN) for i in range(n)])
        state = (await js.stream_info(stream)).state
        latest_bytes, latest_disk = state.bytes, disk_bytes(server.store_dir)
        changes = [stream_change(i % n, 1 + i // n, PLAN) for i in range(args.changes)]
        await publish_changes(js, stream, changes)
        per_change = ((await js.stream_info(stream)).state.bytes - latest_bytes) / max(1, args.changes)

        # Grow to `states` states per object; the moment asked for is the middle of that history.
        version = 1 + (args.changes - 1) // n + 1 if args.changes else 1
        middle = None
        for v in range(version, version + args.states):
            await publish_changes(js, stream, [stream_change(i, v, PLAN) for i in range(n)])
            if v == version + args.states // 2 - 1:
                middle = time.time()
        held = (await js.stream_info(stream)).state.messages
        everything = subjects.plan_filter("standby", *PLAN)

        started = time.perf_counter()
        then = await history.as_of(js, stream, everything, middle)
        as_of_seconds = time.perf_counter() - started
        found = len(then.present())
        held_mib = sum(len(m.data) for m in then.states.values()) / 2**20
        del then
        started = time.perf_counter()
        latest = await streams.last_messages(js, stream, everything, headers_only=False, timeout=120)
        latest_seconds = time.perf_counter() - started
        del latest
    finally:
        await nc.close()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    per_10k = 10_000 / n
    result = {
        "benchmark": "history", "objects": n, "stream_messages": held,
        "latest_mib_per_10k_objects": round(latest_bytes * per_10k / 2**20, 1),
        "disk_mib_per_10k_objects": round(latest_disk * per_10k / 2**20, 1),
        "bytes_per_change": round(per_change),
        "mib_per_hour_at_100_changes_s": round(per_change * 100 * 3600 / 2**20),
        "gib_per_day_at_100_changes_s": round(per_change * 100 * 86400 / 2**30, 1),
        "as_of_seconds": round(as_of_seconds, 2), "as_of_objects": found, "as_of_held_mib": round(held_mib, 1),
        "latest_only_seconds": round(latest_seconds, 2),
    }
    result["ok"] = found == n and (held < 100_000 or as_of_seconds < 5.0 * held / 100_000)
    return result


if __name__ == "__main__":
    run(main)
