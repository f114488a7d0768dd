"""Sanitize: make a source object safe to store and to copy.

Server-populated fields (uid, resourceVersion, managedFields, ...) would turn an apply into a
precondition or be refused; ownerReferences would let the destination's garbage collector delete
the copy (the owners' uids differ there, and controller-owned children are not copied at all);
allocated addresses and ports belong to the source cluster. Finalizers stay in the stream (the
original keeps them: a failed-over Argo CD Application must still cascade its deletion), except
the ones every API server manages itself; deactivation holds them off the copy. Per-kind rules
live in :mod:`schemas.kinds`."""

from __future__ import annotations

from typing import Any

from schemas import kinds
from schemas.jsondata import clone

METADATA_KEPT = ("name", "namespace", "labels", "annotations", "finalizers")

# Finalizers the API server and its built-in controllers add and remove themselves, in any cluster.
SYSTEM_FINALIZERS = frozenset({
    "kubernetes.io/pvc-protection",
    "kubernetes.io/pv-protection",
    "foregroundDeletion",
    "orphan",
})

CONTROLLER_PRIVATE_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "deployment.kubernetes.io/revision",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.daemonset.template.generation",
        "control-plane.alpha.kubernetes.io/leader",
        "endpoints.kubernetes.io/last-change-trigger-time",
        "pv.kubernetes.io/bind-completed",
        "pv.kubernetes.io/bound-by-controller",
        "pv.kubernetes.io/provisioned-by",
        "volume.kubernetes.io/selected-node",
        "volume.kubernetes.io/storage-provisioner",
        "volume.beta.kubernetes.io/storage-provisioner",
        "kubernetes.io/service-account.uid",
        "batch.kubernetes.io/job-tracking",
    }
)


def strip_server_fields(obj: dict[str, Any], *, owned: bool = False) -> dict[str, Any]:
    """Keep apiVersion, kind, the user-owned part of metadata, and everything but status.

    One deep copy (the transforms' dominant cost), made of exactly what is kept; none when the
    caller hands ``obj`` over (``owned``)."""
    meta = obj.get("metadata") or {}
    shallow = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    shallow["metadata"] = {k: meta[k] for k in METADATA_KEPT if meta.get(k)}
    out: dict[str, Any] = shallow if owned else clone(shallow)
    kept = out["metadata"]
    annotations = kept.get("annotations")
    if annotations:
        for key in CONTROLLER_PRIVATE_ANNOTATIONS.intersection(annotations):
            del annotations[key]
        if not annotations:
            del kept["annotations"]
    finalizers = kept.get("finalizers")
    if finalizers and SYSTEM_FINALIZERS.intersection(finalizers):
        kept["finalizers"] = [f for f in finalizers if f not in SYSTEM_FINALIZERS]
        if not kept["finalizers"]:
            del kept["finalizers"]
    return out


def sanitize(obj: dict[str, Any], *, owned: bool = False) -> dict[str, Any]:
    """The sanitized original: what the stream stores. Pure; ``obj`` is not modified, unless the
    caller hands it over (``owned=True``: no copy is made, and ``obj`` must not be used again)."""
    rules = kinds.rules_for(obj)
    out = strip_server_fields(obj, owned=owned)
    if rules.keep_status and "status" in obj:
        out["status"] = obj["status"] if owned else clone(obj["status"])
    if rules.sanitize is not None:
        rules.sanitize(out)
    return out
