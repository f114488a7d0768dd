"""A realistic application for the source: every kind Standby has rules for."""

from __future__ import annotations

from typing import Any


def _template(app: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "main", "image": f"registry.example/{app}:1.0"}]}}


def _workload(kind: str, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": _template(name), **spec}}
    return body


CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.shop.example"
CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "widgets.shop.example"},
       "spec": {"group": "shop.example", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"spec": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}}}]}}


def manifests(ns: str) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, body) in creation order."""
    core, apps = f"/api/v1/namespaces/{ns}", f"/apis/apps/v1/namespaces/{ns}"
    batch, net = f"/apis/batch/v1/namespaces/{ns}", f"/apis/networking.k8s.io/v1/namespaces/{ns}"
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
    job_pod = {**_template("migrate")["spec"], "restartPolicy": "Never"}
    job_spec = {"template": {**_template("migrate"), "spec": job_pod}}
    return [
        (f"{core}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                                "data": {"mode": "production"}}),
        (f"{core}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-credentials"},
                             "stringData": {"password": "s3cret"}}),
        (f"{core}/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop"}}),
        (f"{rbac}/roles", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
                           "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
        (f"{rbac}/rolebindings", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                                  "metadata": {"name": "reader"},
                                  "subjects": [{"kind": "ServiceAccount", "name": "shop", "namespace": ns}],
                                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                              "name": "reader"}}),
        (f"{core}/persistentvolumeclaims", {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                            "metadata": {"name": "data"},
                                            "spec": {"accessModes": ["ReadWriteOnce"],
                                                     "resources": {"requests": {"storage": "1Gi"}}}}),
        (f"{core}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                              "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        (f"{core}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                              "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
        (f"{core}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-nodeport"},
                              "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        (f"{core}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-lb"},
                              "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        (f"{apps}/deployments", _workload("Deployment", ns, "web", replicas=3)),
        (f"{apps}/deployments", _workload("Deployment", ns, "api", replicas=2)),
        (f"{apps}/statefulsets", _workload("StatefulSet", ns, "db", replicas=2, serviceName="db")),
        (f"{apps}/daemonsets", _workload("DaemonSet", ns, "agent")),
        (f"{batch}/cronjobs", {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report"},
                               "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job_spec}}}),
        (f"{batch}/jobs", {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"}, "spec": job_spec}),
        (f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers", {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 3, "maxReplicas": 10}}),
        (f"{net}/ingresses", {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
                              "spec": {"rules": [{"host": "shop.example", "http": {"paths": [{
                                  "path": "/", "pathType": "Prefix",
                                  "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        (f"{net}/networkpolicies", {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                    "metadata": {"name": "deny-all"}, "spec": {"podSelector": {}}}),
        # Custom resources of CRD (created, and Established, before these).
        (f"/apis/shop.example/v1/namespaces/{ns}/widgets", {"apiVersion": "shop.example/v1", "kind": "Widget",
                                                           "metadata": {"name": "blue"}, "spec": {"colour": "blue"}}),
        (f"/apis/shop.example/v1/namespaces/{ns}/widgets", {"apiVersion": "shop.example/v1", "kind": "Widget",
                                                           "metadata": {"name": "red"}, "spec": {"colour": "red"}}),
    ]


RESOURCES = [
    ("", "v1", "configmaps"), ("", "v1", "secrets"), ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"), ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("", "v1", "persistentvolumeclaims"), ("", "v1", "services"), ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"), ("apps", "v1", "daemonsets"), ("batch", "v1", "cronjobs"),
    ("batch", "v1", "jobs"), ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("networking.k8s.io", "v1", "ingresses"), ("networking.k8s.io", "v1", "networkpolicies"),
    ("shop.example", "v1", "widgets"),
]


def plan_resources(namespaces: list[str]) -> list[dict[str, Any]]:
    crd = {"group": "apiextensions.k8s.io", "version": "v1", "resource": "customresourcedefinitions",
           "filters": {"nameSelector": {"includeRegex": [r"^widgets\.shop\.example$"]}}}
    return [crd] + [{"group": g, "version": v, "resource": r, "filters": {"namespaces": namespaces}}
                    for g, v, r in RESOURCES]
