"""Generate the CustomResourceDefinitions from the models in :mod:`schemas.api`.

pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 subset: no ``$ref``, no
``anyOf`` with types, no ``title``; ``Any`` becomes ``x-kubernetes-preserve-unknown-fields``.
``standby crds`` writes the result into ``k8s/crds/``; a unit test fails when the checked-in files
differ from what the models generate."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from schemas import GROUP, VERSION, api


@dataclass(frozen=True)
class CrdSpec:
    kind: str
    plural: str
    short_names: list[str]
    spec_model: type[BaseModel]
    status_model: type[BaseModel] | None
    columns: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

CRDS: tuple[CrdSpec, ...] = (
    CrdSpec(
        "ManagedCluster", "managedclusters", ["mc"], api.ManagedClusterSpec, api.ManagedClusterStatus,
        [
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Version", "type": "string", "jsonPath": ".status.serverVersion"},
            {"name": "Probed", "type": "date", "jsonPath": ".status.lastProbeTime"},
            {"name": "Error", "type": "string", "jsonPath": ".status.error", "priority": 1},
            AGE,
        ],
        "How to reach another cluster: a Secret holding a kubeconfig.",
    ),
    CrdSpec(
        "RecoveryPlan", "recoveryplans", ["rp"], api.RecoveryPlanSpec, api.RecoveryPlanStatus,
        [
            {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Behind", "type": "number", "jsonPath": ".status.pendingChangeAgeSeconds"},
            {"name": "In-Sync", "type": "integer", "jsonPath": ".status.objectsInSync"},
            {"name": "Source", "type": "string",
             "jsonPath": '.status.conditions[?(@.type=="SourceReachable")].status'},
            {"name": "Source-Heard", "type": "date", "jsonPath": ".status.sourceLastHeardTime", "priority": 1},
            {"name": "Out-Of-Sync", "type": "integer", "jsonPath": ".status.objectsOutOfSync", "priority": 1},
            {"name": "Failed", "type": "integer", "jsonPath": ".status.objectsFailed", "priority": 1},
            AGE,
        ],
        "Which source objects to protect, and how to deactivate and re-activate their copies.",
    ),
    CrdSpec(
        "RecoveryExecutionPlan", "recoveryexecutionplans", ["rep"], api.RecoveryExecutionPlanSpec, None,
        [{"name": "Waves", "type": "integer", "jsonPath": ".spec.waves[*].name", "priority": 1}, AGE],
        "The order of a failover: waves of recovery plans, each optionally gated on readiness.",
    ),
    CrdSpec(
        "RecoveryExecutionJob", "recoveryexecutionjobs", ["rej"], api.RecoveryExecutionJobSpec,
        api.RecoveryExecutionJobStatus,
        [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
            {"name": "Dry-Run", "type": "boolean", "jsonPath": ".spec.dryRun"},
            AGE,
        ],
        "One failover run: fences the sync, then activates the copies wave by wave.",
    ),
    CrdSpec(
        "Rebuild", "rebuilds", ["rb"], api.RebuildSpec, api.RebuildStatus,
        [
            {"name": "Plan", "type": "string", "jsonPath": ".spec.recoveryPlanRef.name"},
            {"name": "At", "type": "string", "jsonPath": ".status.at"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.summary"},
            {"name": "Target", "type": "string", "jsonPath": ".status.target", "priority": 1},
            {"name": "Dry-Run", "type": "boolean", "jsonPath": ".spec.dryRun"},
            AGE,
        ],
        "A plan's objects as of a moment, from its stream into a cluster (a stand-by, or a restore).",
    ),
)
# "Waves" as a count is not expressible in JSONPath; keep the column honest: names, wide output only.
CRDS[2].columns[0].update({"name": "Waves", "type": "string"})


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node and all("type" not in o and "$ref" not in o for o in node["anyOf"]):
        # Value validations only (no types): structural as they are.
        rest = _resolve({k: v for k, v in node.items() if k != "anyOf"}, defs)
        return {**rest, "anyOf": copy.deepcopy(node["anyOf"])}  # copied: no YAML anchors
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _resolve({**options[0], **rest}, defs)
        raise ValueError(f"cannot express anyOf {options} structurally")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "properties":
            out[key] = {k: _resolve(v, defs) for k, v in value.items()}
        elif key == "default" and value is None:
            continue
        elif key == "x-kubernetes-validations":
            out[key] = [dict(rule) for rule in value]  # rules, not schemas (copied: no YAML anchors)
        else:
            out[key] = _resolve(value, defs)
    if "type" not in out and "properties" not in out and "items" not in out and "enum" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "properties" in out:
        out.pop("additionalProperties", None)
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _resolve(raw, raw.get("$defs", {}))  # type: ignore[no-any-return]


def crd(spec: CrdSpec) -> dict[str, Any]:
    properties: dict[str, Any] = {"spec": openapi_schema(spec.spec_model)}
    if spec.status_model is not None:
        properties["status"] = openapi_schema(spec.status_model)
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "description": spec.description,
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    **properties,
                },
            }
        },
        "additionalPrinterColumns": spec.columns,
    }
    if spec.status_model is not None:
        version["subresources"] = {"status": {}}
    singular = spec.kind.lower()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{spec.plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "standby"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": spec.kind,
                "listKind": f"{spec.kind}List",
                "plural": spec.plural,
                "singular": singular,
                "shortNames": spec.short_names,
                "categories": ["standby"],
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd(s) for s in CRDS]


def render(doc: dict[str, Any]) -> str:
    return "# Generated by `standby crds` from schemas/api.py. Do not edit.\n" + yaml.safe_dump(
        doc, sort_keys=False, width=100
    )


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in all_crds():
        path = directory / f"{doc['metadata']['name']}.yaml"
        path.write_text(render(doc))
        written.append(path)
    return written
