"""The CRDs generated from the models, installed in a real API server: good input is accepted,
bad input is refused by the server with a message that names the field."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas import API_VERSION
from services.common.kube import ApiError, KubeClient
from services.devenv.clusters import LocalCluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NS = "standby-system"
PLURALS = {"ManagedCluster": "managedclusters", "RecoveryPlan": "recoveryplans",
           "RecoveryExecutionPlan": "recoveryexecutionplans", "RecoveryExecutionJob": "recoveryexecutionjobs",
           "Rebuild": "rebuilds"}


def examples() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


@pytest.fixture
async def dst(destination: LocalCluster) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client:
        yield client


async def create(client: KubeClient, doc: dict[str, Any], *, dry_run: bool = True) -> dict[str, Any]:
    params = {"dryRun": "All"} if dry_run else None
    return await client.request("POST", f"/apis/{API_VERSION}/namespaces/{NS}/{PLURALS[doc['kind']]}",
                                params=params, body=doc)


@pytest.mark.parametrize("kind", sorted(PLURALS))
async def test_examples_are_accepted(dst: KubeClient, kind: str) -> None:
    doc = copy.deepcopy(examples()[kind])
    if "name" in doc["metadata"]:  # other tests may hold the example's name already
        doc["metadata"]["name"] = f"example-{kind.lower()}"
    created = await create(dst, doc)
    assert created["kind"] == kind


def mutate(kind: str, change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(examples()[kind])
    change(doc["spec"])
    return doc


BAD = [
    pytest.param("RecoveryPlan", lambda s: s.update(resources=[]), "spec.resources", id="empty-resources"),
    pytest.param("RecoveryPlan", lambda s: s["resources"][0].pop("version"), "version", id="missing-version"),
    pytest.param("RecoveryPlan", lambda s: s.update(suspend="yes"), "spec.suspend", id="wrong-type"),
    pytest.param("RecoveryPlan", lambda s: s["resources"][4]["recoveryProcess"]["fromPatch"][0].update(op="explode"),
                 "op", id="unknown-op"),
    pytest.param("RecoveryPlan", lambda s: s["resources"][4]["recoveryProcess"]["fromPatch"][0].update(path="x"),
                 "path", id="bad-pointer"),
    pytest.param("RecoveryPlan", lambda s: s["resources"][4]["recoveryProcess"]["fromPatch"].append(
        {"op": "move", "path": "/a"}), "from is required", id="move-without-from"),
    pytest.param("RecoveryPlan", lambda s: s["resources"][4]["recoveryProcess"]["fromPatch"].append(
        {"op": "replace", "path": "/spec/replicas"}), 'op: Unsupported value: "replace"', id="replace-without-value"),
    pytest.param("RecoveryPlan", lambda s: s["resources"][0].setdefault("transformation", {}).setdefault(
        "patch", []).append({"op": "add", "path": "/metadata/labels/x"}), 'Unsupported value: "add"',
        id="add-without-value"),
    pytest.param("RecoveryPlan", lambda s: s["resources"][0].setdefault("transformation", {}).setdefault(
        "patch", []).append({"op": "test", "path": "/a"}), 'Unsupported value: "test"', id="test-without-value"),
    pytest.param("RecoveryPlan", lambda s: s["resources"][1]["filters"]["namespaceSelector"].update(
        matchExpressions=[{"key": "a", "operator": "Like"}]), "operator", id="bad-selector-operator"),
    pytest.param("RecoveryPlan", lambda s: s.pop("sourceClusterRef"), "sourceClusterRef", id="missing-source"),
    pytest.param("RecoveryExecutionPlan", lambda s: s["waves"][0].update(timeoutSeconds=-5), "timeoutSeconds",
                 id="negative-timeout"),
    pytest.param("RecoveryExecutionPlan", lambda s: s.update(waves=[]), "spec.waves", id="no-waves"),
    pytest.param("RecoveryExecutionPlan", lambda s: s["waves"][0].pop("recoveryPlans"), "recoveryPlans",
                 id="wave-without-plans"),
    pytest.param("ManagedCluster", lambda s: s["secretRef"].pop("namespace"), "secretRef.namespace",
                 id="secret-without-namespace"),
    pytest.param("RecoveryExecutionJob", lambda s: s.pop("recoveryExecutionPlanRef"), "recoveryExecutionPlanRef",
                 id="job-without-plan"),
    pytest.param("RecoveryExecutionJob", lambda s: s.update(dryRun="maybe"), "spec.dryRun", id="bad-bool"),
]


@pytest.mark.parametrize(("kind", "change", "field"), BAD)
async def test_bad_input_is_refused_naming_the_field(dst: KubeClient, kind: str, change: Any, field: str) -> None:
    with pytest.raises(ApiError) as err:
        await create(dst, mutate(kind, change))
    assert err.value.status == 422, err.value
    assert field in err.value.message, err.value.message


async def test_status_subresource_and_printer_columns(dst: KubeClient) -> None:
    doc = copy.deepcopy(examples()["RecoveryPlan"])
    doc["metadata"] = {"name": "columns", "namespace": NS}
    await create(dst, doc, dry_run=False)
    path = f"/apis/{API_VERSION}/namespaces/{NS}/recoveryplans/columns"
    await dst.request("PATCH", f"{path}/status", body={"status": {"phase": "Synced", "objectsInSync": 3,
                                                                  "replicationLagSeconds": 0.12}},
                      content_type="application/merge-patch+json")
    table = await dst.request("GET", path, params={}, body=None)
    assert table["status"]["objectsInSync"] == 3
    crd = await dst.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/recoveryplans.dr.standby.dev")
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:5] == ["Suspended", "Status", "Behind", "In-Sync", "Source"]
    assert "rp" in crd["spec"]["names"]["shortNames"]
    await dst.request("DELETE", path)
