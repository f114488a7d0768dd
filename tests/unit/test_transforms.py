"""Sanitize, skip, deactivate and activate: one row per kind, plus round-trip properties."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import annotations as ann
from schemas import kinds, restoring, sanitizing, transforms
from schemas.envelope import Envelope, EventType, ObjectReference
from tests import builders as b

pytestmark = pytest.mark.unit

PROV = transforms.Provenance("standby-system", "shop", 2, "uid-1", "1234", 77)


def roundtrip(obj: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    clean = sanitizing.sanitize(obj)
    copy_ = transforms.deactivate(clean, PROV, **kwargs)
    return clean, copy_


ALL_KINDS = [
    pytest.param(b.deployment(), id="Deployment"),
    pytest.param(b.deployment(replicas=None), id="Deployment-no-replicas"),
    pytest.param(b.statefulset(), id="StatefulSet"),
    pytest.param(b.replicaset(), id="ReplicaSet"),
    pytest.param(b.daemonset(), id="DaemonSet"),
    pytest.param(b.daemonset(node_selector={"disk": "ssd"}), id="DaemonSet-with-selector"),
    pytest.param(b.cronjob(), id="CronJob"),
    pytest.param(b.cronjob(suspend=None), id="CronJob-no-suspend"),
    pytest.param(b.job(), id="Job"),
    pytest.param(b.hpa(), id="HPA"),
    pytest.param(b.service(), id="Service-ClusterIP"),
    pytest.param(b.service(headless=True), id="Service-headless"),
    pytest.param(b.service(type_="NodePort"), id="Service-NodePort"),
    pytest.param(b.service(type_="LoadBalancer"), id="Service-LoadBalancer"),
    pytest.param(b.secret(), id="Secret"),
    pytest.param(b.secret("manual-token", "kubernetes.io/service-account-token",
                          {"token": "dA==", "ca.crt": "Yw==", "extra": "eA=="}), id="Secret-sa-token-manual"),
    pytest.param(b.service_account(), id="ServiceAccount"),
    pytest.param(b.configmap(), id="ConfigMap"),
    pytest.param(b.pvc(), id="PVC"),
    pytest.param(b.pv(), id="PV"),
    pytest.param(b.ingress(), id="Ingress"),
    pytest.param(b.network_policy(), id="NetworkPolicy"),
    pytest.param(b.webhook(), id="ValidatingWebhookConfiguration"),
    pytest.param(b.webhook("MutatingWebhookConfiguration"), id="MutatingWebhookConfiguration"),
    pytest.param(b.crd(), id="CustomResourceDefinition"),
    pytest.param(b.widget(), id="custom-resource"),
    pytest.param(b.apiservice(), id="APIService"),
]


@pytest.mark.parametrize("obj", ALL_KINDS)
def test_sanitize_strips_server_fields(obj: dict[str, Any]) -> None:
    clean = sanitizing.sanitize(obj)
    meta = clean["metadata"]
    assert set(meta) <= {"name", "namespace", "labels", "annotations", "finalizers"}
    assert "status" not in clean
    assert "kubectl.kubernetes.io/last-applied-configuration" not in meta.get("annotations", {})
    assert obj["metadata"]["uid"], "the input must not be modified"


@pytest.mark.parametrize("obj", ALL_KINDS)
def test_sanitize_of_a_handed_over_object_is_the_same(obj: dict[str, Any]) -> None:
    pristine = copy.deepcopy(obj)
    assert sanitizing.sanitize(copy.deepcopy(obj), owned=True) == sanitizing.sanitize(obj)
    assert obj == pristine


@pytest.mark.parametrize("obj", ALL_KINDS)
def test_activate_undoes_deactivate_exactly(obj: dict[str, Any]) -> None:
    clean, copy_ = roundtrip(obj)
    assert transforms.activate(copy_) == clean


@pytest.mark.parametrize(
    ("obj", "pointer", "deactivated", "original"),
    [
        pytest.param(b.deployment(replicas=3), ("spec", "replicas"), 0, 3, id="Deployment"),
        pytest.param(b.statefulset(replicas=2), ("spec", "replicas"), 0, 2, id="StatefulSet"),
        pytest.param(b.replicaset(replicas=5), ("spec", "replicas"), 0, 5, id="ReplicaSet"),
        pytest.param(b.cronjob(suspend=False), ("spec", "suspend"), True, False, id="CronJob"),
        pytest.param(b.job(), ("spec", "suspend"), True, False, id="Job"),
        pytest.param(b.hpa(), ("spec", "scaleTargetRef", "name"), "standby-held-web", "web", id="HPA"),
        pytest.param(b.daemonset(), ("spec", "template", "spec", "nodeSelector"),
                     {ann.PARKING_NODE_LABEL: "true"}, None, id="DaemonSet"),
    ],
)
def test_deactivation_per_kind(obj: dict[str, Any], pointer: tuple[str, ...], deactivated: Any,
                               original: Any) -> None:
    _, copy_ = roundtrip(obj)

    def at(o: dict[str, Any]) -> Any:
        for key in pointer:
            o = o.get(key) if isinstance(o, dict) else None  # type: ignore[assignment]
        return o

    assert at(copy_) == deactivated
    assert at(transforms.activate(copy_)) == original


def test_webhooks_are_held_until_activation() -> None:
    _, copy_ = roundtrip(b.webhook())
    hook = copy_["webhooks"][0]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["objectSelector"]["matchExpressions"][0]["key"] == ann.HELD_WEBHOOK_LABEL
    assert transforms.activate(copy_)["webhooks"][0]["failurePolicy"] == "Fail"


def test_apiservices_are_held_as_local_until_activation() -> None:
    _, copy_ = roundtrip(b.apiservice())
    assert copy_["spec"] == {"group": "metrics.example.com", "version": "v1beta1", "groupPriorityMinimum": 100,
                             "versionPriority": 10}  # local: no service, no CA (the API server refuses a CA on one)
    restored = transforms.activate(copy_)
    assert restored["spec"]["service"] == {"namespace": "app", "name": "metrics", "port": 443}
    assert restored["spec"]["caBundle"] == "Y2E="


def test_copy_is_stamped_with_provenance() -> None:
    _, copy_ = roundtrip(b.deployment())
    a = copy_["metadata"]["annotations"]
    assert copy_["metadata"]["labels"][ann.MANAGED] == "true"
    assert copy_["metadata"]["labels"][ann.PLAN_LABEL] == "standby-system.shop"
    assert a[ann.PLAN] == "standby-system/shop"
    assert (a[ann.EPOCH], a[ann.SOURCE_UID], a[ann.SOURCE_RESOURCE_VERSION], a[ann.STREAM_SEQUENCE]) == (
        "2", "uid-1", "1234", "77")
    assert json.loads(a[ann.INVERSE]) == [{"op": "replace", "path": "/spec/replicas", "value": 3}]


def test_source_at_zero_keeps_remembered_replicas() -> None:
    _, first = roundtrip(b.deployment(replicas=4))
    remembered = transforms.inverse_of(first)
    _, second = roundtrip(b.deployment(replicas=0), previous_inverse=remembered)
    assert second["spec"]["replicas"] == 0
    assert transforms.activate(second)["spec"]["replicas"] == 4
    # Without anything remembered, a source at 0 activates at 0.
    _, fresh = roundtrip(b.deployment(replicas=0))
    assert transforms.activate(fresh)["spec"]["replicas"] == 0


def test_plan_patch_is_applied_and_undone() -> None:
    patch = [{"op": "replace", "path": "/spec/size", "value": 0},
             {"op": "add", "path": "/metadata/labels/tier", "value": "standby"}]
    clean, copy_ = roundtrip(b.widget(size=5), plan_patch=patch)
    assert copy_["spec"]["size"] == 0
    assert copy_["metadata"]["labels"]["tier"] == "standby"
    assert transforms.activate(copy_) == clean


def test_from_patch_applies_after_inverse() -> None:
    _, copy_ = roundtrip(b.deployment(replicas=3))
    active = transforms.activate(copy_, from_patch=[{"op": "replace", "path": "/spec/replicas", "value": 6}])
    assert active["spec"]["replicas"] == 6


def test_bad_plan_patch_is_a_typed_error() -> None:
    with pytest.raises(transforms.PatchError, match="does not apply"):
        roundtrip(b.deployment(), plan_patch=[{"op": "replace", "path": "/spec/nothing/here", "value": 1}])


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(b.service(), {"type": "ClusterIP"}, id="ClusterIP-drops-ip"),
        pytest.param(b.service(headless=True), {"clusterIP": "None", "clusterIPs": ["None"]}, id="headless-keeps"),
        pytest.param(b.service(type_="LoadBalancer"), {"externalTrafficPolicy": "Local"}, id="LB"),
    ],
)
def test_service_sanitizing(obj: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = sanitizing.sanitize(obj)["spec"]
    for key, value in expected.items():
        assert spec[key] == value
    assert "nodePort" not in spec["ports"][0]
    assert not {"loadBalancerIP", "healthCheckNodePort"} & set(spec)
    if spec.get("clusterIP") != "None":
        assert "clusterIP" not in spec and "clusterIPs" not in spec


def test_per_kind_sanitizing() -> None:
    claim = sanitizing.sanitize(b.pvc())
    assert "volumeName" not in claim["spec"]
    assert not any(k.startswith(("pv.kubernetes.io", "volume.kubernetes.io"))
                   for k in claim["metadata"].get("annotations", {}))
    assert "finalizers" not in claim["metadata"]  # pvc-protection: every API server adds its own
    pv = sanitizing.sanitize(b.pv())
    assert pv["spec"]["claimRef"] == {"namespace": "app", "name": "data"}
    job = sanitizing.sanitize(b.job())
    assert "selector" not in job["spec"]
    assert job["spec"]["template"]["metadata"]["labels"] == {"app": "migrate"}
    sa = sanitizing.sanitize(b.service_account())
    assert sa["secrets"] == [{"name": "registry-creds"}]
    token = sanitizing.sanitize(b.secret("t", "kubernetes.io/service-account-token", {"token": "dA==", "x": "eA=="}))
    assert token["data"] == {"x": "eA=="}
    sts = sanitizing.sanitize(b.statefulset())
    assert "status" not in sts["spec"]["volumeClaimTemplates"][0]
    deployment = sanitizing.sanitize(b.realistic_deployment())
    assert "deployment.kubernetes.io/revision" not in deployment["metadata"].get("annotations", {})


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        pytest.param(b.owned(b.deployment("web-7d9f")), "owned by ReplicaSet", id="controller-owned"),
        pytest.param(b.secret("builder-token-x7k2p", "kubernetes.io/service-account-token"),
                     "auto-generated", id="sa-token"),
        pytest.param(b.configmap("kube-root-ca.crt"), "root CA", id="kube-root-ca"),
        pytest.param(b.apiservice("v1.apps", automanaged=True), "API server itself", id="apiservice-automanaged"),
        pytest.param(b.apiservice(local=True), "local APIService", id="apiservice-local"),
        pytest.param(b.configmap("x", namespace="kube-system"), "excluded", id="kube-system"),
        pytest.param(b.configmap("x", namespace="standby-system"), "excluded", id="own-namespace"),
        pytest.param(b.configmap("x", namespace="dr"), "excluded", id="own-namespace-configured"),
        pytest.param({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "app"}},
                     "pods", id="pod"),
        pytest.param({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "app"}},
                     "events", id="event"),
        pytest.param({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                      "metadata": {"name": "l", "namespace": "app"}}, "leases", id="lease"),
        pytest.param({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}, "nodes", id="node"),
        pytest.param({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                      "metadata": {"name": "s", "namespace": "app"}}, "endpoint", id="endpointslice"),
        pytest.param({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-public"}},
                     "excluded", id="kube-namespace-object"),
        pytest.param({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "c", "namespace": "app", "labels": {"dr.standby.dev/managed": "true"}}},
                     "Standby copy", id="a-copy-is-never-a-source"),
    ],
)
def test_skip_rules(obj: dict[str, Any], reason: str) -> None:
    own = "dr" if obj["metadata"].get("namespace") == "dr" else "standby-system"
    found = kinds.skip_reason(obj, own_namespace=own)
    assert found is not None and reason in found


@pytest.mark.parametrize("obj", [b.deployment(), b.secret(), b.configmap(), b.crd(), b.widget()])
def test_ordinary_objects_are_not_skipped(obj: dict[str, Any]) -> None:
    assert kinds.skip_reason(obj, own_namespace="standby-system") is None


# --- properties ------------------------------------------------------------------------------

label_keys = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
labels = st.dictionaries(label_keys, st.from_regex(r"[a-z0-9]{0,8}", fullmatch=True), max_size=4)
workload_builders = st.sampled_from([b.deployment, b.statefulset, b.replicaset])


@st.composite
def workloads(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["scaled", "daemon", "cron", "job", "hpa", "webhook"]))
    if kind == "scaled":
        obj = draw(workload_builders)("w")
        obj["spec"]["replicas"] = draw(st.integers(min_value=0, max_value=500))
    elif kind == "daemon":
        obj = b.daemonset(node_selector=draw(st.none() | labels))
    elif kind == "cron":
        obj = b.cronjob(suspend=draw(st.none() | st.booleans()))
    elif kind == "job":
        obj = b.job()
        obj["spec"]["suspend"] = draw(st.booleans())
    elif kind == "hpa":
        obj = b.hpa(draw(label_keys))
    else:
        obj = b.webhook()
    obj["metadata"]["labels"] = draw(labels)
    obj["metadata"]["annotations"] = draw(labels)
    return obj


@settings(max_examples=300, deadline=None)
@given(workloads())
def test_property_activate_deactivate_sanitize_is_identity(obj: dict[str, Any]) -> None:
    clean = sanitizing.sanitize(obj)
    before = copy.deepcopy(clean)
    assert transforms.activate(transforms.deactivate(clean, PROV)) == clean
    assert clean == before, "deactivate must not modify its input"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=1000))
def test_property_zero_never_overwrites_memory(replicas: int) -> None:
    first = transforms.deactivate(sanitizing.sanitize(b.deployment(replicas=replicas)), PROV)
    again = transforms.deactivate(
        sanitizing.sanitize(b.deployment(replicas=0)), PROV, previous_inverse=transforms.inverse_of(first)
    )
    third = transforms.deactivate(
        sanitizing.sanitize(b.deployment(replicas=0)), PROV, previous_inverse=transforms.inverse_of(again)
    )
    assert transforms.activate(third)["spec"]["replicas"] == replicas


def test_recovery_instructions_travel_on_the_copy() -> None:
    prov = transforms.Provenance("ns", "p", 1, "u", "5", 0,
                                 ({"op": "replace", "path": "/spec/replicas", "value": 9},), True)
    copy_ = transforms.deactivate(sanitizing.sanitize(b.deployment(replicas=3)), prov)
    assert transforms.wants_original(copy_)
    assert transforms.activate(copy_)["spec"]["replicas"] == 9
    assert transforms.activate(copy_, from_patch=())["spec"]["replicas"] == 3


@pytest.mark.parametrize("obj", ALL_KINDS)
def test_activation_patch_equals_activate(obj: dict[str, Any]) -> None:
    import jsonpatch

    _, copy_ = roundtrip(obj)
    patched = jsonpatch.apply_patch(copy_, transforms.activation_patch(copy_))
    for key in ("labels", "annotations"):  # the API server keeps an emptied map; activate drops it
        if patched["metadata"].get(key) == {}:
            del patched["metadata"][key]
    assert patched == transforms.activate(copy_)


def test_finalizers_are_held_off_the_copy_and_restored_exactly() -> None:
    """An Argo CD Application keeps its cascade-deletion finalizer through failover; the copy in the
    stand-by has none, so deleting a copy never waits for a controller that does not run there."""
    app = b.widget()
    app["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io", "foregroundDeletion"]
    clean, copy_ = roundtrip(app)
    assert clean["metadata"]["finalizers"] == ["resources-finalizer.argocd.argoproj.io"]
    assert "finalizers" not in copy_["metadata"]
    assert transforms.activate(copy_)["metadata"]["finalizers"] == ["resources-finalizer.argocd.argoproj.io"]
    patched = jsonpatch.apply_patch(copy_, transforms.activation_patch(copy_))
    assert patched["metadata"]["finalizers"] == ["resources-finalizer.argocd.argoproj.io"]


@pytest.mark.parametrize("obj", ALL_KINDS)
def test_a_change_written_deactivated_then_activated_is_the_change_written_active(obj: dict[str, Any]) -> None:
    """The one path from the stream to an object: a rebuilt stand-by, once activated, runs what a
    restore (or ``fromOriginal``) writes directly, with the same fromPatch."""
    clean = sanitizing.sanitize(obj)
    meta = clean["metadata"]
    env = Envelope(type=EventType.UPSERT, ref=ObjectReference(
        group=obj["apiVersion"].rpartition("/")[0], version=obj["apiVersion"].rpartition("/")[2], resource="any",
        kind=obj["kind"], namespace=meta.get("namespace", ""), name=meta["name"]), source_uid="u",
        source_resource_version="1", observed_at=0.0, plan_namespace="standby-system", plan_name="shop", body=clean)
    from_patch = [{"op": "add", "path": "/metadata/labels/restored", "value": "yes"}]
    prov = transforms.Provenance("standby-system", "shop", 0, "u", "1", 9, from_patch=tuple(from_patch))
    copy_ = restoring.object_to_write(env, obj["apiVersion"], obj["kind"], restoring.Deactivated(prov))
    active = restoring.object_to_write(env, obj["apiVersion"], obj["kind"], restoring.Active(from_patch))
    assert transforms.activate(copy_) == sanitizing.strip_server_fields(active)
    assert env.body == clean  # not changed


def test_a_deletion_has_nothing_to_write() -> None:
    env = Envelope(type=EventType.DELETE, ref=ObjectReference(version="v1", resource="configmaps", kind="ConfigMap",
                                                               namespace="ns", name="a"),
                   source_uid="u", source_resource_version="2", observed_at=0.0, plan_namespace="s", plan_name="p")
    with pytest.raises(restoring.NothingToWrite, match="deletion"):
        restoring.object_to_write(env, "v1", "ConfigMap", restoring.Active())


def test_plan_label_is_a_valid_label_value_and_one_per_plan() -> None:
    value = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # a label value (apimachinery)
    short = ann.plan_label("standby-system/shop")
    assert short == "standby-system.shop"
    long_a = ann.plan_label("team-" + "a" * 58 + "/" + "web." * 40 + "x")
    long_b = ann.plan_label("team-" + "a" * 58 + "/" + "web." * 40 + "y")
    assert long_a != long_b  # the same first 54 characters: the hash of the whole tells them apart
    for label in (short, long_a, long_b):
        assert len(label) <= 63 and value.match(label)


def test_copies_selectors_select_by_plan_and_find_unlabelled_copies() -> None:
    one, unlabelled = ann.copies_selectors(["ns/b"])
    assert one == "dr.standby.dev/managed=true,dr.standby.dev/plan=ns.b"
    assert unlabelled == "dr.standby.dev/managed=true,!dr.standby.dev/plan"
    many, _ = ann.copies_selectors(["ns/b", "ns/a", "ns/b"])
    assert many == "dr.standby.dev/managed=true,dr.standby.dev/plan in (ns.a,ns.b)"


def test_activation_removes_the_plan_label() -> None:
    _, copy_ = roundtrip(b.deployment())
    removed = {op["path"] for op in transforms.activation_patch(copy_) if op["op"] == "remove"}
    assert "/metadata/labels/dr.standby.dev~1plan" in removed
    assert ann.PLAN_LABEL not in (transforms.activate(copy_)["metadata"].get("labels") or {})
