"""What a rebuild writes and removes, without servers."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from schemas import annotations as ann
from schemas import api, rebuilds
from schemas.subjects import ObjectKey

pytestmark = pytest.mark.unit
PLAN = "standby-system/shop"


def cm(name: str, value: str, *, copy: bool = False, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "web", "labels": dict(labels or {})}
    if copy:
        meta["labels"][ann.MANAGED] = ann.MANAGED_VALUE
        meta["annotations"] = {ann.PLAN: PLAN, ann.STREAM_SEQUENCE: "7"}
        meta["resourceVersion"], meta["uid"] = "99", "u-1"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": value}}


def key(name: str, resource: str = "configmaps", group: str = "", namespace: str = "web") -> ObjectKey:
    return ObjectKey(group, resource, namespace, name)


def test_the_steps_create_update_leave_alone_and_prune_only_the_plans_copies() -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "w"}}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}
    wanted = {key("same"): cm("same", "1", copy=True), key("changed"): cm("changed", "2", copy=True),
              key("new"): cm("new", "1", copy=True),
              key("w", "customresourcedefinitions", "apiextensions.k8s.io", ""): crd,
              key("web", "namespaces", namespace=""): ns}
    present = {key("same"): cm("same", "1", copy=True), key("changed"): cm("changed", "1", copy=True),
               key("stale"): cm("stale", "1", copy=True), key("theirs"): cm("theirs", "1")}
    steps = rebuilds.steps(wanted, present, prune=True, plan_key=PLAN)
    assert [(s.action, s.key.name) for s in steps] == [
        ("create", "w"), ("create", "web"), ("update", "changed"), ("create", "new"), ("unchanged", "same"),
        ("delete", "stale")]  # CRD, namespace, then the rest; "theirs" is no copy of the plan: never removed
    assert steps[2].fields == ("/data/k",)
    assert [s.action for s in rebuilds.steps(wanted, present, prune=False, plan_key=PLAN)].count("delete") == 0
    assert rebuilds.summary(steps) == {"create": 3, "update": 1, "unchanged": 1, "delete": 1}


def test_removals_go_in_the_reverse_order() -> None:
    present = {key("w", "customresourcedefinitions", "apiextensions.k8s.io", ""): {
        "kind": "CustomResourceDefinition", "metadata": {"name": "w", "labels": {ann.MANAGED: ann.MANAGED_VALUE},
                                                         "annotations": {ann.PLAN: PLAN}}},
               key("a", "widgets", "example.com"): {"kind": "Widget", "metadata": {
                   "name": "a", "labels": {ann.MANAGED: ann.MANAGED_VALUE}, "annotations": {ann.PLAN: PLAN}}}}
    assert [s.key.name for s in rebuilds.steps({}, present, prune=True, plan_key=PLAN)] == ["a", "w"]


def test_a_selection_admits_what_every_part_matches() -> None:
    sel = rebuilds.Selection.of(namespaces=["web"], resources=["configmaps", "deployments.apps"],
                                labels=api.LabelSelector(match_labels={"tier": "front"}))
    assert sel.admits(key("a"), cm("a", "1", labels={"tier": "front"}))
    assert not sel.admits(key("a"), cm("a", "1"))
    assert not sel.admits(key("a", namespace="db"), cm("a", "1", labels={"tier": "front"}))
    assert not sel.admits(key("a", "secrets"), cm("a", "1", labels={"tier": "front"}))
    assert rebuilds.Selection.of(namespaces=["web"], resources=["namespaces"]).admits(
        key("web", "namespaces", namespace=""), {"metadata": {"name": "web"}})
    assert rebuilds.Selection.of(names=["a"]).admits(key("a"), {}) and not rebuilds.Selection.of(
        names=["a"]).admits(key("b"), {})
    with pytest.raises(rebuilds.SelectionError):
        rebuilds.Selection.of(resources=[".apps"])


def test_a_moment_is_an_rfc3339_time_or_a_negative_duration_from_now() -> None:
    from services.operate import output, rebuild

    quarter_past = datetime.datetime(2026, 11, 29, 10, 15, tzinfo=datetime.UTC).timestamp()
    now = quarter_past + 3600
    assert rebuild.parse_moment(None, now) is None
    assert rebuild.parse_moment("-15m", now) == now - 900
    assert rebuild.parse_moment("2026-11-29T10:15:00Z", now) == quarter_past
    assert rebuild.parse_moment("2026-11-29T10:15:00.250+01:00", now) == quarter_past - 3600 + 0.25
    for bad in ("yesterday", "-15 minutes", "2026-13-01T00:00:00Z"):
        with pytest.raises(output.CommandError):
            rebuild.parse_moment(bad, now)


def test_a_label_selector_is_key_value_pairs() -> None:
    from services.operate import output, rebuild

    assert rebuild.parse_labels("app=web, tier=front") == api.LabelSelector(match_labels={"app": "web",
                                                                                         "tier": "front"})
    assert rebuild.parse_labels(None) is None
    for bad in ("app", "app!=web", "=web"):
        with pytest.raises(output.CommandError):
            rebuild.parse_labels(bad)
