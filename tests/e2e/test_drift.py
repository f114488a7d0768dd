"""Drift repair and the scheduled re-list, with the real pipeline: a copy deleted or edited in the
stand-by by someone else is put back from the stream (metric, Event); a fenced plan's copies are
left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from schemas import annotations as ann
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.syncer import metrics
from tests.e2e.conftest import Pipeline, pipeline
from tests.support import env as h

NS = "drift"
WEB = f"/apis/apps/v1/namespaces/{NS}/deployments/web"
SETTINGS = f"/api/v1/namespaces/{NS}/configmaps/settings"
FLAGS = f"/api/v1/namespaces/{NS}/configmaps/flags"


@pytest.fixture
async def pipe(source: LocalCluster, registered: LocalCluster, nats_server: LocalNats) -> AsyncIterator[Pipeline]:
    async with pipeline(source, registered, nats_server, syncer={"drift_check_seconds": 1.0}) as p:
        yield p


def repaired(kind: str) -> float:
    return metrics.DRIFT.labels(f"{h.SYSTEM}/{NS}", kind)._value.get()


async def test_copies_deleted_or_edited_by_someone_else_are_put_back(pipe: Pipeline) -> None:
    await h.namespace(pipe.src, NS)
    await h.namespace(pipe.dst, NS)
    await pipe.src.apply(WEB, {"apiVersion": "apps/v1", "kind": "Deployment",
                               "metadata": {"name": "web", "namespace": NS},
                               "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                                        "template": {"metadata": {"labels": {"app": "web"}},
                                                     "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}},
                         field_manager="test")
    for path, name in ((SETTINGS, "settings"), (FLAGS, "flags")):
        await pipe.src.apply(path, {"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": name, "namespace": NS}, "data": {"mode": "prod"}},
                             field_manager="test")
    await h.apply_plan(pipe.dst, h.plan_body(NS, [
        {"group": "apps", "version": "v1", "resource": "deployments", "filters": {"namespaces": [NS]}},
        {"version": "v1", "resource": "configmaps", "filters": {"namespaces": [NS]}}]))

    async def copied() -> None:
        # The source's controllers are done with the Deployment (its last change is copied): from
        # here on only someone else changes the copy.
        web = await pipe.src.get(WEB)
        assert (web.get("status") or {}).get("availableReplicas") == 3, web.get("status")
        copy = await pipe.dst.get(WEB)
        assert copy["spec"]["replicas"] == 0
        assert copy["metadata"]["annotations"][ann.SOURCE_RESOURCE_VERSION] == web["metadata"]["resourceVersion"]
        assert (await pipe.dst.get(SETTINGS))["data"] == (await pipe.dst.get(FLAGS))["data"] == {"mode": "prod"}
    await h.eventually(copied, timeout=60)
    deleted, edited = repaired("deleted"), repaired("edited")

    await h.delete(pipe.dst, SETTINGS)  # a cleanup that went too far
    await pipe.dst.request("PATCH", FLAGS, body={"data": {"mode": "debug"}},  # a "quick fix" in the stand-by
                           content_type="application/merge-patch+json", params={"fieldManager": "kubectl-edit"})
    await pipe.dst.request("PATCH", WEB, body={"spec": {"replicas": 2}},  # someone "starts" the stand-by by hand
                           content_type="application/merge-patch+json", params={"fieldManager": "kubectl-edit"})

    async def put_back() -> None:
        assert (await pipe.dst.get(SETTINGS))["data"] == (await pipe.dst.get(FLAGS))["data"] == {"mode": "prod"}
        web = await pipe.dst.get(WEB)  # put back by the drift check, or by a later change of the source
        assert web["spec"]["replicas"] == 0 and web["metadata"]["labels"][ann.MANAGED] == "true"
    await h.eventually(put_back, timeout=20)
    assert repaired("deleted") == deleted + 1 and repaired("edited") >= edited + 1
    listed = await pipe.dst.get(f"/api/v1/namespaces/{h.SYSTEM}/events", fieldSelector=f"involvedObject.name={NS}")
    messages = [e["message"] for e in listed["items"] if e["reason"] == "DriftRepaired"]
    assert any(f"configmaps.core/{NS}/settings" in m for m in messages), messages
    assert any(f"configmaps.core/{NS}/flags" in m for m in messages), messages
