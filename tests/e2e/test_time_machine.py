"""The stream as a time machine, proven on the real clusters: a randomized sequence of creates,
updates and deletes over three namespaces and five kinds (ConfigMaps, Secrets, Deployments, a CRD
and its custom resources), one namespace deleted and recreated; at four moments the test records
the source's exact state. A new, empty cluster rebuilt from the stream as of each moment holds
exactly that state: every selected object, deactivated as the syncer writes copies, compared
without server-set fields, and nothing else of the plan. So does one cluster rebuilt from one
moment to another, forwards and backwards in time (``--prune`` between moments).

The sequence is random on purpose; the seed is printed (on a failure, pytest shows it) and
``STANDBY_TIME_MACHINE_SEED`` replays it."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common import plans
from services.common.history import rfc3339
from services.common.kube import ApiError, KubeClient
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.operate import diff
from tests.e2e.conftest import Pipeline, empty_cluster
from tests.e2e.test_operate import broker_credentials, standby
from tests.support import env as h

PLAN = "tm"
NAMESPACES = ("tm-a", "tm-b", "tm-c")
NAMES = ("one", "two", "three")
CRD_NAME = "gadgets.tm.example"
CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": CRD_NAME},
       "spec": {"group": "tm.example", "scope": "Namespaced",
                "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"spec": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}}}]}}
Obj = dict[str, Any]


def _configmap(name: str, rng: random.Random) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"tier": rng.choice("ab")}},
            "data": {"value": str(rng.randrange(10**6))}}


def _secret(name: str, rng: random.Random) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"token": rng.randbytes(8).hex()}}


def _deployment(name: str, rng: random.Random) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": rng.randint(1, 4), "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                         {"name": "main", "image": f"registry.example/{name}:{rng.randint(1, 9)}"}]}}}}


def _gadget(name: str, rng: random.Random) -> Obj:
    return {"apiVersion": "tm.example/v1", "kind": "Gadget", "metadata": {"name": name},
            "spec": {"size": rng.randint(1, 100), "colour": rng.choice(["red", "green", "blue"])}}


KINDS: dict[str, tuple[str, Callable[[str, random.Random], Obj]]] = {
    "configmaps": ("/api/v1/namespaces/{ns}/configmaps", _configmap),
    "secrets": ("/api/v1/namespaces/{ns}/secrets", _secret),
    "deployments": ("/apis/apps/v1/namespaces/{ns}/deployments", _deployment),
    "gadgets": ("/apis/tm.example/v1/namespaces/{ns}/gadgets", _gadget),
}


def plan_body() -> Obj:
    crd = {"group": "apiextensions.k8s.io", "version": "v1", "resource": "customresourcedefinitions",
           "filters": {"nameSelector": {"includeRegex": [r"^gadgets\.tm\.example$"]}}}
    namespaced = [{"group": g, "version": "v1", "resource": r, "filters": {"namespaces": list(NAMESPACES)}}
                  for g, r in (("", "configmaps"), ("", "secrets"), ("apps", "deployments"), ("tm.example", "gadgets"))]
    return h.plan_body(PLAN, [crd, *namespaced], forceNamespaceCreation=True)


async def churn(src: KubeClient, rng: random.Random, namespaces: tuple[str, ...], changes: int) -> list[str]:
    """``changes`` random writes: an object that exists is updated (70 %) or deleted, one that does
    not is created. Returns what was done, for the failure message."""
    done = []
    for _ in range(changes):
        ns, kind, name = rng.choice(namespaces), rng.choice(sorted(KINDS)), rng.choice(NAMES)
        collection, make = KINDS[kind]
        path = f"{collection.format(ns=ns)}/{name}"
        try:
            await src.get(path)
            exists = True
        except ApiError as exc:
            if not exc.not_found:
                raise
            exists = False
        if exists and rng.random() < 0.3:
            await src.request("DELETE", path)
            done.append(f"delete {path}")
            continue
        body = make(name, rng)
        body["metadata"]["namespace"] = ns
        await src.apply(path, body, field_manager="time-machine")
        done.append(f"{'update' if exists else 'create'} {path}")
    return done


async def moment(pipe: Pipeline, plan: plans.Plan) -> tuple[float, list[diff.Selected]]:
    """Once the stand-by holds the source (so the stream holds every change made so far): now, and
    the source's selected objects, exactly."""
    async def in_step() -> None:
        assert await diff.gather(pipe.dst, h.SYSTEM, PLAN) == []
    await h.eventually(in_step, timeout=60, interval=0.5)
    await asyncio.sleep(0.2)
    at = time.time()
    await asyncio.sleep(0.2)  # nothing after this is stamped at or before ``at``
    return at, await diff.select(pipe.src, plan)


async def holds(cluster: KubeClient, state: list[diff.Selected], plan: plans.Plan) -> int:
    """``cluster`` holds ``state`` exactly, as the plan's copies; how many objects."""
    differences: list[diff.Difference] = []
    for chosen in state:
        found = await diff.copies(cluster, chosen, plan.key)
        differences += diff.compare(chosen.info.group, chosen.info.resource, chosen.objects, found, plan,
                                    chosen.selector)
    assert differences == [], differences
    return sum(len(chosen.objects) for chosen in state)


async def test_rebuilt_as_of_each_moment_a_new_cluster_holds_exactly_the_sources_state_then(
        pipe: Pipeline, registered: LocalCluster, nats_server: LocalNats, env_root: Path) -> None:
    seed = int(os.environ.get("STANDBY_TIME_MACHINE_SEED") or random.randrange(2**32))
    print(f"STANDBY_TIME_MACHINE_SEED={seed}")
    rng = random.Random(seed)
    secret_path = await broker_credentials(pipe, nats_server)
    await pipe.src.apply(CRD_PATH, CRD, field_manager="time-machine")
    await h.eventually(lambda: pipe.src.get("/apis/tm.example/v1/gadgets"), timeout=30)
    for ns in NAMESPACES:
        await h.namespace(pipe.src, ns)
    await h.apply_plan(pipe.dst, plan_body())
    plan = plans.parse_plan(await pipe.dst.get(f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/"
                                               f"recoveryplans/{PLAN}"))
    log: list[str] = []
    moments: list[tuple[float, list[diff.Selected]]] = []
    try:
        log += await churn(pipe.src, rng, NAMESPACES, 30)
        moments.append(await moment(pipe, plan))
        log += await churn(pipe.src, rng, NAMESPACES, 30)
        moments.append(await moment(pipe, plan))
        # A namespace deleted (everything in it goes), the others change on.
        await pipe.src.request("DELETE", "/api/v1/namespaces/tm-c")
        await h.eventually(lambda: h.absent(pipe.src, "/api/v1/namespaces/tm-c"), timeout=90)
        log += ["delete namespace tm-c", *await churn(pipe.src, rng, NAMESPACES[:2], 15)]
        moments.append(await moment(pipe, plan))
        # ... and recreated, with new objects of the same names.
        await h.namespace(pipe.src, "tm-c")
        log += ["create namespace tm-c", *await churn(pipe.src, rng, NAMESPACES, 30)]
        moments.append(await moment(pipe, plan))

        url = ["--nats-url", nats_server.url]

        async def rebuilt(index: int, cluster: str, target: KubeClient, *flags: str) -> None:
            at, state = moments[index]
            ran = await standby(registered, "rebuild", "--direct", PLAN, "--at", rfc3339(at), "--target-cluster",
                                cluster, *flags, *url)
            assert ran.code == 0, (seed, index, ran.out, ran.err)
            try:
                assert await holds(target, state, plan) > 0
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}, moment {index}, {cluster}: {exc}\n" + "\n".join(log)) from exc

        # Each moment into a new, empty cluster of its own.
        for index in (1, 2, 3):
            with empty_cluster(env_root, registered, f"tm-new-{index}") as new:
                async with KubeClient.from_kubeconfig(new.kubeconfig) as target:
                    await rebuilt(index, f"tm-new-{index}", target)
        with empty_cluster(env_root, registered, "tm-empty") as fresh:
            async with KubeClient.from_kubeconfig(fresh.kubeconfig) as target:
                # Forwards and backwards: into the empty cluster first, then from one moment's
                # state to another's.
                for index, prune in ((0, False), (2, True), (1, True), (3, True)):
                    await rebuilt(index, "tm-empty", target, *(["--prune"] if prune else []))
                ran = await standby(registered, "rebuild", "--direct", PLAN, "--at", rfc3339(moments[3][0]),
                                    "--target-cluster", "tm-empty", "--prune", "--dry-run", *url)
                assert (ran.code, ran.out) == (0, "Nothing to change: the target holds the rebuilt state.\n"), ran
    finally:
        await h.delete(pipe.dst, secret_path)
        for cluster in ("tm-empty", "tm-new-1", "tm-new-2", "tm-new-3"):
            await h.delete(pipe.dst, f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/managedclusters/{cluster}")
        await h.delete(pipe.dst, f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans/{PLAN}")
        for ns in NAMESPACES:
            await h.delete(pipe.src, f"/api/v1/namespaces/{ns}")
        await h.delete(pipe.src, CRD_PATH)
