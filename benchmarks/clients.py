"""Which Kubernetes client the services use: our own (services/common/kube.py, raw JSON over
aiohttp) against the maintained async client, kubernetes_asyncio (generated from the OpenAPI spec,
typed models), on the operations the pipeline lives on, against one real local API server, in the
same run, rounds interleaved:

- server-side apply of N ConfigMaps with 64 in flight (what the syncer does per change);
- a paged LIST of those N (what the watcher and a syncer start do).

kubernetes_asyncio is measured as people use it (typed models in and out) and with its raw
responses (``_preload_content=False``, no models: the least it can cost). Every apply asks the
server not to look for unknown fields (``fieldValidation=Ignore``, as the services do); ours is
measured with the server's default too (``ours_field_validation_warn``: it parses each body twice),
which is what that costs. Prints one JSON line.

    ../.venv/bin/python clients.py [--objects 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import configmap
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from services.common.kube import KubeClient
from services.devenv.clusters import LocalCluster

CONCURRENCY = 64
APPLY = "application/apply-patch+yaml"


async def bounded(items: list[Any], one: Callable[[Any], Awaitable[None]]) -> float:
    """Run ``one`` over ``items`` with CONCURRENCY in flight; items/s."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(item: Any) -> None:
        async with gate:
            await one(item)

    start = time.perf_counter()
    await asyncio.gather(*(run(i) for i in items))
    return len(items) / (time.perf_counter() - start)


async def ours(kubeconfig: Path, ns: str, objects: list[dict[str, Any]], *,
               field_validation: str = "Ignore") -> dict[str, float]:
    async with KubeClient.from_kubeconfig(kubeconfig, connections=CONCURRENCY) as client:
        applies = await bounded(objects, lambda o: client.apply(
            f"/api/v1/namespaces/{ns}/configmaps/{o['metadata']['name']}", o, field_manager="bench",
            field_validation=field_validation))
        start = time.perf_counter()
        items, _ = await client.list_all(f"/api/v1/namespaces/{ns}/configmaps", page_size=500)
        lists = len(items) / (time.perf_counter() - start)
    return {"apply_per_s": applies, "list_per_s": lists}


async def theirs(kubeconfig: Path, ns: str, objects: list[dict[str, Any]], *, models: bool) -> dict[str, float]:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = CONCURRENCY
    async with k8s.ApiClient(configuration) as api:
        core = k8s.CoreV1Api(api)

        async def apply(o: dict[str, Any]) -> None:
            answer = await core.patch_namespaced_config_map(
                o["metadata"]["name"], ns, o, field_manager="bench", force=True, field_validation="Ignore",
                _content_type=APPLY,
                _preload_content=models)
            if not models:
                await answer.read()
                answer.release()

        applies = await bounded(objects, apply)
        start = time.perf_counter()
        count, token = 0, None
        while True:
            page = await core.list_namespaced_config_map(ns, limit=500, _continue=token, _preload_content=models)
            if models:
                count, token = count + len(page.items), page.metadata._continue
            else:
                body = json.loads(await page.read())
                page.release()
                count, token = count + len(body["items"]), body["metadata"].get("continue")
            if not token:
                break
        lists = count / (time.perf_counter() - start)
    return {"apply_per_s": applies, "list_per_s": lists}


async def main(objects: int, rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="standby-bench-clients-"))
    cluster = LocalCluster("clients", root).start()
    results: dict[str, list[dict[str, float]]] = {"ours": [], "ours_field_validation_warn": [],
                                                  "kubernetes_asyncio": [], "kubernetes_asyncio_raw": []}
    try:
        for r in range(rounds):
            for name in results:  # interleaved: every client sees the same server in each round
                ns = f"{name.replace('_', '-')}-{r}"
                cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
                batch = [configmap(ns, f"cm-{i}", value=str(r)) for i in range(objects)]
                if name.startswith("ours"):
                    results[name].append(await ours(cluster.kubeconfig, ns, batch,
                                                    field_validation="Warn" if name.endswith("warn") else "Ignore"))
                else:
                    results[name].append(await theirs(cluster.kubeconfig, ns, batch,
                                                      models=name == "kubernetes_asyncio"))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    best = {name: {k: round(max(r[k] for r in runs), 1) for k in runs[0]} for name, runs in results.items()}
    return {"benchmark": "clients", "objects": objects, "rounds": rounds, "concurrency": CONCURRENCY, **best,
            "apply_ratio_ours_to_models": round(best["ours"]["apply_per_s"]
                                                / best["kubernetes_asyncio"]["apply_per_s"], 2),
            "apply_ratio_ignore_to_warn": round(best["ours"]["apply_per_s"]
                                                / best["ours_field_validation_warn"]["apply_per_s"], 2),
            "list_ratio_ours_to_models": round(best["ours"]["list_per_s"]
                                               / best["kubernetes_asyncio"]["list_per_s"], 2)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.objects, args.rounds))))
