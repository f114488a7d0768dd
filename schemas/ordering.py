"""The order in which objects are applied and activated, as data with a reason per position
(after Velero's restore priorities). Lower ranks go first; unknown kinds (custom resources) go
with the workloads, after everything they could depend on."""

from __future__ import annotations

from typing import NamedTuple


class Rank(NamedTuple):
    group: str
    kind: str
    reason: str


PRIORITIES: tuple[Rank, ...] = (
    Rank("apiextensions.k8s.io", "CustomResourceDefinition",
         "custom resources cannot be written until their CRD is Established"),
    Rank("", "Namespace", "every namespaced object needs its namespace"),
    Rank("storage.k8s.io", "StorageClass", "PVCs are provisioned through their class"),
    Rank("", "PersistentVolume", "pre-provisioned volumes must exist before claims bind"),
    Rank("rbac.authorization.k8s.io", "ClusterRole", "bindings and workloads need their permissions"),
    Rank("rbac.authorization.k8s.io", "ClusterRoleBinding", "grants before the workloads that use them"),
    Rank("rbac.authorization.k8s.io", "Role", "bindings and workloads need their permissions"),
    Rank("rbac.authorization.k8s.io", "RoleBinding", "grants before the workloads that use them"),
    Rank("", "ServiceAccount", "Pods are refused when their service account is missing"),
    Rank("", "Secret", "Pods mount or reference them at start"),
    Rank("", "ConfigMap", "Pods mount or reference them at start"),
    Rank("", "LimitRange", "admission applies them to Pods as they are created"),
    Rank("", "ResourceQuota", "admission applies them to Pods as they are created"),
    Rank("", "PersistentVolumeClaim", "StatefulSet and Pod volumes bind to them"),
    Rank("", "Service", "workloads find their dependencies through Services at start"),
    Rank("networking.k8s.io", "NetworkPolicy", "traffic rules in force before Pods accept traffic"),
    Rank("apps", "StatefulSet", "stateful tiers (databases) start first among workloads"),
    Rank("apps", "Deployment", "stateless workloads"),
    Rank("apps", "ReplicaSet", "bare ReplicaSets, like Deployments"),
    Rank("apps", "DaemonSet", "node agents"),
    Rank("batch", "Job", "one-off work, once its dependencies run"),
    Rank("batch", "CronJob", "scheduled work, once its dependencies run"),
    Rank("*", "*", "custom resources: operators act on them once workloads run"),
    Rank("autoscaling", "HorizontalPodAutoscaler", "autoscalers released once their targets run"),
    Rank("policy", "PodDisruptionBudget", "budgets once the Pods they guard exist"),
    Rank("networking.k8s.io", "Ingress", "traffic admitted once backends exist"),
    Rank("apiregistration.k8s.io", "APIService", "aggregated APIs registered once their backends run"),
    Rank("admissionregistration.k8s.io", "ValidatingWebhookConfiguration",
         "last: with their backends down they can block every write"),
    Rank("admissionregistration.k8s.io", "MutatingWebhookConfiguration",
         "last: with their backends down they can block every write"),
)

_INDEX = {(r.group, r.kind): i for i, r in enumerate(PRIORITIES)}
_DEFAULT = _INDEX[("*", "*")]


def rank(group: str, kind: str) -> int:
    return _INDEX.get((group, kind), _DEFAULT)


def phases(items: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Group ``(group, kind)`` pairs into ordered phases of equal rank."""
    by_rank: dict[int, list[tuple[str, str]]] = {}
    for item in items:
        by_rank.setdefault(rank(*item), []).append(item)
    return [by_rank[r] for r in sorted(by_rank)]
