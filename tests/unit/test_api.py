"""The API models, generated CRDs, filters and the priority table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from schemas import api, crdgen, ordering, selection

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_checked_in_crds_match_the_models() -> None:
    for doc in crdgen.all_crds():
        path = REPO / "k8s" / "crds" / f"{doc['metadata']['name']}.yaml"
        assert path.read_text() == crdgen.render(doc), f"{path.name} is stale: run `standby crds`"


def test_crds_are_structural() -> None:
    def types(node: object) -> bool:
        if isinstance(node, dict):
            return "type" in node or "$ref" in node or any(types(v) for v in node.values())
        return isinstance(node, list) and any(types(v) for v in node)

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "title" not in node, where
            # anyOf only as a value validation: no types inside (Kubernetes' structural rule).
            assert not types(node.get("anyOf")), where
            if "properties" in node or "items" in node:
                assert node.get("type") in ("object", "array"), where
            for k, v in node.items():
                if k != "anyOf":
                    walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    for doc in crdgen.all_crds():
        walk(doc["spec"]["versions"][0]["schema"], doc["metadata"]["name"])


def test_examples_validate_against_the_models() -> None:
    models = {"RecoveryPlan": api.RecoveryPlan, "ManagedCluster": api.ManagedCluster,
              "RecoveryExecutionPlan": api.RecoveryExecutionPlan, "RecoveryExecutionJob": api.RecoveryExecutionJob,
              "Rebuild": api.Rebuild}
    seen = set()
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in models:
                models[doc["kind"]].model_validate({"spec": doc["spec"]})
                seen.add(doc["kind"])
    assert seen == set(models)


def plan_filters(**kwargs: object) -> selection.CompiledFilters:
    return selection.compile_filters(api.Filters.model_validate(kwargs))


def obj(name: str, namespace: str = "app", **labels: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


@pytest.mark.parametrize(
    ("filters", "target", "ns_labels", "expected"),
    [
        pytest.param({}, obj("a"), None, True, id="empty-matches-all"),
        pytest.param({"selector": {"matchLabels": {"tier": "web"}}}, obj("a", tier="web"), None, True, id="label"),
        pytest.param({"selector": {"matchLabels": {"tier": "web"}}}, obj("a", tier="db"), None, False, id="label-no"),
        pytest.param({"selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
                     obj("x", tier="b"), None, True, id="in"),
        pytest.param({"selector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}},
                     obj("x", tier="a"), None, False, id="notin"),
        pytest.param({"selector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]}},
                     obj("x", skip="1"), None, False, id="doesnotexist"),
        pytest.param({"namespaces": ["app", "web"]}, obj("a", "other"), None, False, id="namespace-list"),
        pytest.param({"namespaceSelector": {"matchLabels": {"dr": "on"}}}, obj("a"), {"dr": "on"}, True, id="ns-sel"),
        pytest.param({"namespaceSelector": {"matchLabels": {"dr": "on"}}}, obj("a"), {}, False, id="ns-sel-no"),
        pytest.param({"nameSelector": {"includeRegex": ["^web-"]}}, obj("web-1"), None, True, id="include"),
        pytest.param({"nameSelector": {"includeRegex": ["^web-"]}}, obj("db-1"), None, False, id="include-no"),
        pytest.param({"nameSelector": {"excludeRegex": ["-tmp$"]}}, obj("x-tmp"), None, False, id="exclude"),
        pytest.param({"namespaces": ["app"], "selector": {"matchLabels": {"t": "1"}},
                      "nameSelector": {"includeRegex": ["a"]}}, obj("a", t="1"), None, True, id="and-all"),
        pytest.param({"namespaces": ["app"], "selector": {"matchLabels": {"t": "1"}}}, obj("a", t="2"), None,
                     False, id="and-one-fails"),
    ],
)
def test_filters(filters: dict[str, object], target: dict[str, object], ns_labels: dict[str, str] | None,
                 expected: bool) -> None:
    assert plan_filters(**filters).matches(target, ns_labels) is expected


def test_bad_regex_is_a_clear_error() -> None:
    with pytest.raises(selection.InvalidFilterError, match=r"includeRegex '\(' does not compile"):
        plan_filters(nameSelector={"includeRegex": ["("]})


def test_selector_query_string() -> None:
    sel = api.LabelSelector.model_validate({"matchLabels": {"a": "1"}, "matchExpressions": [
        {"key": "b", "operator": "In", "values": ["x", "y"]}, {"key": "c", "operator": "DoesNotExist"}]})
    assert selection.to_query(sel) == "a=1,b in (x,y),!c"


def test_priority_order() -> None:
    order = ["Deployment", "ConfigMap", "CustomResourceDefinition", "ValidatingWebhookConfiguration",
             "Namespace", "Service", "Widget", "HorizontalPodAutoscaler"]
    groups = {"Deployment": "apps", "CustomResourceDefinition": "apiextensions.k8s.io",
              "ValidatingWebhookConfiguration": "admissionregistration.k8s.io", "Widget": "example.com",
              "HorizontalPodAutoscaler": "autoscaling"}
    ranked = sorted(order, key=lambda k: ordering.rank(groups.get(k, ""), k))
    assert ranked == ["CustomResourceDefinition", "Namespace", "ConfigMap", "Service", "Deployment", "Widget",
                      "HorizontalPodAutoscaler", "ValidatingWebhookConfiguration"]
    assert all(r.reason for r in ordering.PRIORITIES)
