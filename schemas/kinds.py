"""The per-kind rule table: what to skip, how to sanitize, how to deactivate.

One small function per concern and kind, found by ``(group, kind)``; a kind not in the table gets
the generic rules (strip server fields, no deactivation). Deactivators change the object in place
and return the RFC 6902 operations that undo exactly what they changed (the *inverse*), which the
copy carries so that activation needs nothing but the destination."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas import annotations as ann
from schemas.jsondata import clone
from schemas.pointers import path

Obj = dict[str, Any]
Op = dict[str, Any]
Sanitizer = Callable[[Obj], None]
Deactivator = Callable[[Obj, "list[Op] | None"], "list[Op]"]
Skipper = Callable[[Obj], "str | None"]
Readiness = Callable[[Obj], bool]


@dataclass(frozen=True)
class KindRules:
    sanitize: Sanitizer | None = None
    deactivate: Deactivator | None = None
    skip: Skipper | None = None
    keep_status: bool = False
    # After activation, a wave with waitForReady waits until this says the live object is ready.
    ready: Readiness | None = None
    never_copied: bool = False  # skipped whatever the object: no copy of the kind exists anywhere


# --- helpers -----------------------------------------------------------------------------------


def _restore(obj: Obj, *keys: str) -> Op:
    """The operation that puts back the current value at ``keys`` (or removes what will be added)."""
    node: Any = obj
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return {"op": "remove", "path": path(*keys)}
        node = node[key]
    value = clone(node) if isinstance(node, (dict, list)) else node
    return {"op": "replace", "path": path(*keys), "value": value}


def fresh(obj: Obj, *keys: str) -> Obj:
    """The dict at ``keys``, shallow-copied on the way down (created where missing).

    Deactivators receive a shallow copy of the object and must not mutate anything they did not
    copy: this copies exactly the path they change, so the untouched rest can be shared with the
    input (the deep copy of every object was the transforms' dominant cost)."""
    node = obj
    for key in keys:
        child = node.get(key)
        child = dict(child) if isinstance(child, dict) else {}
        node[key] = child
        node = child
    return node


def _remembered(previous: list[Op] | None, pointer: str) -> Any:
    for op in previous or ():
        if op.get("path") == pointer and op.get("op") == "replace":
            return op.get("value")
    return None


def _pop_path(obj: Obj, *keys: str) -> None:
    node: Any = obj
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(keys[-1], None)


# --- deactivators ------------------------------------------------------------------------------


def scale_to_zero(obj: Obj, previous: list[Op] | None) -> list[Op]:
    """Deployment, StatefulSet, ReplicaSet: ``spec.replicas`` 0.

    When the source itself shows 0 (often: someone drained the old primary during a failover),
    the value remembered from an earlier copy is kept, so activation does not start nothing."""
    inverse = _restore(obj, "spec", "replicas")
    spec = fresh(obj, "spec")
    if spec.get("replicas") == 0:
        earlier = _remembered(previous, "/spec/replicas")
        if isinstance(earlier, int) and earlier > 0:
            inverse = {"op": "replace", "path": "/spec/replicas", "value": earlier}
    spec["replicas"] = 0
    return [inverse]


def suspend(obj: Obj, previous: list[Op] | None) -> list[Op]:
    """CronJob, Job: ``spec.suspend`` true."""
    inverse = _restore(obj, "spec", "suspend")
    fresh(obj, "spec")["suspend"] = True
    return [inverse]


def park_on_no_node(obj: Obj, previous: list[Op] | None) -> list[Op]:
    """DaemonSet: no replicas field, so a node selector that matches no node."""
    pod_spec = fresh(obj, "spec", "template", "spec")
    if isinstance(pod_spec.get("nodeSelector"), dict):
        inverse = _restore(obj, "spec", "template", "spec", "nodeSelector", ann.PARKING_NODE_LABEL)
    else:
        inverse = {"op": "remove", "path": "/spec/template/spec/nodeSelector"}
    fresh(pod_spec, "nodeSelector")[ann.PARKING_NODE_LABEL] = "true"
    return [inverse]


def hold_autoscaler(obj: Obj, previous: list[Op] | None) -> list[Op]:
    """HorizontalPodAutoscaler: point it at a target that does not exist, so it can never scale a
    workload up in the stand-by (recent releases can scale from zero)."""
    inverse = _restore(obj, "spec", "scaleTargetRef", "name")
    target = fresh(obj, "spec", "scaleTargetRef")
    target["name"] = ann.HELD_TARGET_PREFIX + str(target.get("name", ""))
    return [inverse]


def hold_webhooks(obj: Obj, previous: list[Op] | None) -> list[Op]:
    """Admission webhooks: their backends are off in the stand-by, and a failing webhook can block
    every write (Standby's own included). Held: ignore failures and select no object."""
    inverse = _restore(obj, "webhooks")
    obj["webhooks"] = clone(obj.get("webhooks") or [])
    for hook in obj["webhooks"]:
        hook["failurePolicy"] = "Ignore"
        hook["objectSelector"] = {
            "matchExpressions": [{"key": ann.HELD_WEBHOOK_LABEL, "operator": "Exists"}]
        }
    return [inverse] if obj.get("webhooks") else []


APISERVICE_HELD_FIELDS = ("service", "caBundle", "insecureSkipTLSVerify")


def hold_apiservice(obj: Obj, previous: list[Op] | None) -> list[Op]:
    """APIService: its backend is off in the stand-by, and an unavailable APIService fails the
    discovery of its group (namespace deletion and garbage collection wait on that). Held as a
    local APIService (no service, no CA): always available and absent from aggregated discovery.
    Activation adds the service back."""
    spec = fresh(obj, "spec")
    inverse = [{"op": "add", "path": path("spec", key), "value": clone(spec[key])}
               for key in APISERVICE_HELD_FIELDS if key in spec]
    for key in APISERVICE_HELD_FIELDS:
        spec.pop(key, None)
    return inverse


def hold_finalizers(obj: Obj) -> list[Op]:
    """Every kind: the copy carries no finalizers (deleting a copy must never wait for a controller
    that does not run in the stand-by); activation puts the original ones back exactly."""
    finalizers = (obj.get("metadata") or {}).get("finalizers")
    if not finalizers:
        return []
    del fresh(obj, "metadata")["finalizers"]
    return [{"op": "add", "path": "/metadata/finalizers", "value": list(finalizers)}]


# --- sanitizers --------------------------------------------------------------------------------


def sanitize_service(obj: Obj) -> None:
    spec = obj.get("spec") or {}
    if spec.get("clusterIP") != "None":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    spec.pop("loadBalancerIP", None)
    spec.pop("healthCheckNodePort", None)
    for port in spec.get("ports") or []:
        port.pop("nodePort", None)


def sanitize_pvc(obj: Obj) -> None:
    (obj.get("spec") or {}).pop("volumeName", None)


def sanitize_pv(obj: Obj) -> None:
    claim = (obj.get("spec") or {}).get("claimRef")
    if isinstance(claim, dict):
        for key in ("uid", "resourceVersion"):
            claim.pop(key, None)


JOB_CONTROLLER_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid", "job-name",
                         "batch.kubernetes.io/job-name")


def sanitize_job(obj: Obj) -> None:
    spec = obj.get("spec") or {}
    if not spec.get("manualSelector"):
        spec.pop("selector", None)
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    for key in JOB_CONTROLLER_LABELS:
        labels.pop(key, None)
    if not labels:
        _pop_path(spec, "template", "metadata", "labels")
    _pop_template_timestamp(obj)


def _pop_template_timestamp(obj: Obj) -> None:
    _pop_path(obj, "spec", "template", "metadata", "creationTimestamp")
    _pop_path(obj, "spec", "jobTemplate", "metadata", "creationTimestamp")
    _pop_path(obj, "spec", "jobTemplate", "spec", "template", "metadata", "creationTimestamp")


def sanitize_workload(obj: Obj) -> None:
    _pop_template_timestamp(obj)


def sanitize_statefulset(obj: Obj) -> None:
    _pop_template_timestamp(obj)
    for template in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
        template.pop("status", None)
        (template.get("metadata") or {}).pop("creationTimestamp", None)


def sanitize_service_account(obj: Obj) -> None:
    name = (obj.get("metadata") or {}).get("name", "")
    secrets = [s for s in obj.get("secrets") or [] if not str(s.get("name", "")).startswith(f"{name}-token-")]
    if secrets:
        obj["secrets"] = secrets
    else:
        obj.pop("secrets", None)


SA_TOKEN_DATA = ("token", "ca.crt", "namespace")


def sanitize_secret(obj: Obj) -> None:
    if obj.get("type") == "kubernetes.io/service-account-token":
        # The destination's token controller fills these for the destination's own issuer.
        data = obj.get("data") or {}
        for key in SA_TOKEN_DATA:
            data.pop(key, None)
        if not data:
            obj.pop("data", None)


# --- readiness ----------------------------------------------------------------------------------


def _current(obj: Obj) -> bool:
    """The controller has seen the object's latest spec."""
    status = obj.get("status") or {}
    return bool(status.get("observedGeneration", 0) >= (obj.get("metadata") or {}).get("generation", 0))


def deployment_ready(obj: Obj) -> bool:
    want, status = (obj.get("spec") or {}).get("replicas", 1), obj.get("status") or {}
    return _current(obj) and status.get("availableReplicas", 0) >= want and status.get("updatedReplicas", 0) >= want


def replicas_ready(obj: Obj) -> bool:
    want, status = (obj.get("spec") or {}).get("replicas", 1), obj.get("status") or {}
    return _current(obj) and status.get("readyReplicas", 0) >= want


# --- skippers ----------------------------------------------------------------------------------

_AUTO_TOKEN = re.compile(r"^.+-token-[a-z0-9]{5}$")


def skip_secret(obj: Obj) -> str | None:
    if obj.get("type") != "kubernetes.io/service-account-token":
        return None
    name = (obj.get("metadata") or {}).get("name", "")
    return "auto-generated service-account token" if _AUTO_TOKEN.match(name) else None


def skip_configmap(obj: Obj) -> str | None:
    name = (obj.get("metadata") or {}).get("name")
    return "per-cluster root CA bundle" if name == "kube-root-ca.crt" else None


AUTOMANAGED_APISERVICE = "kube-aggregator.kubernetes.io/automanaged"


def skip_apiservice(obj: Obj) -> str | None:
    if AUTOMANAGED_APISERVICE in ((obj.get("metadata") or {}).get("labels") or {}):
        return "registered by the API server itself (a built-in or CRD group)"
    if not (obj.get("spec") or {}).get("service"):
        return "a local APIService belongs to its own API server"
    return None


def _never(reason: str) -> KindRules:
    """A kind never copied: every object of it is skipped for ``reason`` (and recovery need not look
    for copies of it)."""
    return KindRules(skip=lambda obj: reason, never_copied=True)


# --- the table ---------------------------------------------------------------------------------

RULES: dict[tuple[str, str], KindRules] = {
    ("apps", "Deployment"): KindRules(sanitize_workload, scale_to_zero, ready=deployment_ready),
    ("apps", "StatefulSet"): KindRules(sanitize_statefulset, scale_to_zero, ready=replicas_ready),
    ("apps", "ReplicaSet"): KindRules(sanitize_workload, scale_to_zero),
    ("apps", "DaemonSet"): KindRules(sanitize_workload, park_on_no_node),
    ("batch", "CronJob"): KindRules(sanitize_workload, suspend),
    ("batch", "Job"): KindRules(sanitize_job, suspend),
    ("autoscaling", "HorizontalPodAutoscaler"): KindRules(None, hold_autoscaler),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): KindRules(None, hold_webhooks),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): KindRules(None, hold_webhooks),
    ("apiregistration.k8s.io", "APIService"): KindRules(None, hold_apiservice, skip=skip_apiservice),
    ("", "Service"): KindRules(sanitize_service),
    ("", "PersistentVolumeClaim"): KindRules(sanitize_pvc),
    ("", "PersistentVolume"): KindRules(sanitize_pv),
    ("", "ServiceAccount"): KindRules(sanitize_service_account),
    ("", "Secret"): KindRules(sanitize_secret, skip=skip_secret),
    ("", "ConfigMap"): KindRules(skip=skip_configmap),
    ("", "Pod"): _never("pods are created by their controllers"),
    ("", "Event"): _never("events are per-cluster history"),
    ("events.k8s.io", "Event"): _never("events are per-cluster history"),
    ("", "Node"): _never("nodes belong to their cluster"),
    ("", "Endpoints"): _never("endpoints are derived from Services"),
    ("discovery.k8s.io", "EndpointSlice"): _never("endpoint slices are derived from Services"),
    ("apps", "ControllerRevision"): _never("controller revisions are controller history"),
    ("coordination.k8s.io", "Lease"): _never("leases are per-cluster leadership"),
}

GENERIC = KindRules()


def never_copied(group: str, kind: str) -> bool:
    return RULES.get((group, kind), GENERIC).never_copied

# The cluster's own namespaces; Standby's own namespace (a setting) is excluded beside them.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def group_of(obj: Obj) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def rules_for(obj: Obj) -> KindRules:
    return RULES.get((group_of(obj), str(obj.get("kind", ""))), GENERIC)


def skip_reason(obj: Obj, *, own_namespace: str) -> str | None:
    """Why this source object is never copied, or None. Applied to the raw (unsanitized) object.
    ``own_namespace``: Standby's own namespace, never protected."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or (meta.get("name") if obj.get("kind") == "Namespace" else None)
    if namespace and (namespace in SYSTEM_NAMESPACES or namespace == own_namespace or namespace.startswith("kube-")):
        return f"namespace {namespace} is excluded"
    if ann.is_managed(meta):
        return "a Standby copy (never a source object: no loops between clusters)"
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller"):
            return f"owned by {owner.get('kind')}/{owner.get('name')}"
    rules = rules_for(obj)
    return rules.skip(obj) if rules.skip is not None else None
