"""Builders for Kubernetes objects as the API server returns them (server fields included)."""

from __future__ import annotations

import copy
import itertools
from typing import Any

_rv = itertools.count(1000)


def server_meta(name: str, namespace: str | None = "app", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "resourceVersion": str(next(_rv)),
        "generation": 3,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "labels": {"app": name},
    }
    if namespace:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def pod_template(name: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": name}, "creationTimestamp": None},
        "spec": {"containers": [{"name": "main", "image": f"registry.example/{name}:1.0",
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }


def deployment(name: str = "web", replicas: int | None = 3, **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": pod_template(name)}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": server_meta(name, **meta),
            "spec": spec, "status": {"replicas": replicas, "readyReplicas": replicas}}


def statefulset(name: str = "db", replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": server_meta(name),
            "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                     "template": pod_template(name),
                     "volumeClaimTemplates": [{"metadata": {"name": "data", "creationTimestamp": None},
                                               "spec": {"accessModes": ["ReadWriteOnce"],
                                                        "resources": {"requests": {"storage": "1Gi"}}},
                                               "status": {"phase": "Pending"}}]},
            "status": {"replicas": replicas}}


def replicaset(name: str = "rs", replicas: int = 2) -> dict[str, Any]:
    d = deployment(name, replicas)
    d["kind"] = "ReplicaSet"
    return d


def daemonset(name: str = "agent", node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    template = pod_template(name)
    if node_selector is not None:
        template["spec"]["nodeSelector"] = node_selector
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": server_meta(name),
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": template},
            "status": {"numberReady": 3}}


def cronjob(name: str = "report", suspend: bool | None = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"schedule": "*/5 * * * *",
                            "jobTemplate": {"spec": {"template": {**pod_template(name),
                                                                  "spec": {**pod_template(name)["spec"],
                                                                           "restartPolicy": "Never"}}}}}
    if suspend is not None:
        spec["suspend"] = suspend
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": server_meta(name), "spec": spec}


def job(name: str = "migrate") -> dict[str, Any]:
    template = pod_template(name)
    template["metadata"]["labels"].update({"controller-uid": "abc", "batch.kubernetes.io/controller-uid": "abc",
                                           "job-name": name, "batch.kubernetes.io/job-name": name})
    template["spec"]["restartPolicy"] = "Never"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": server_meta(name),
            "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}},
                     "template": template, "backoffLimit": 2, "suspend": False},
            "status": {"succeeded": 1}}


def hpa(name: str = "web") -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": server_meta(name),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 2, "maxReplicas": 10},
            "status": {"currentReplicas": 3}}


def service(name: str = "web", type_: str = "ClusterIP", headless: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_, "selector": {"app": name},
                            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    if headless:
        spec["clusterIP"] = "None"
        spec["clusterIPs"] = ["None"]
    else:
        spec["clusterIP"] = "10.0.0.17"
        spec["clusterIPs"] = ["10.0.0.17"]
    if type_ in ("NodePort", "LoadBalancer"):
        spec["ports"][0]["nodePort"] = 31234
    if type_ == "LoadBalancer":
        spec["loadBalancerIP"] = "203.0.113.9"
        spec["externalTrafficPolicy"] = "Local"
        spec["healthCheckNodePort"] = 32000
    return {"apiVersion": "v1", "kind": "Service", "metadata": server_meta(name), "spec": spec,
            "status": {"loadBalancer": {}}}


def secret(name: str = "creds", type_: str = "Opaque", data: dict[str, str] | None = None) -> dict[str, Any]:
    meta = server_meta(name)
    if type_ == "kubernetes.io/service-account-token":
        meta["annotations"].update({"kubernetes.io/service-account.name": "builder",
                                    "kubernetes.io/service-account.uid": "sa-uid"})
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": type_,
            "data": data if data is not None else {"password": "c2VjcmV0"}}


def service_account(name: str = "builder") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": server_meta(name),
            "secrets": [{"name": f"{name}-token-x7k2p"}, {"name": "registry-creds"}]}


def configmap(name: str = "settings", data: dict[str, str] | None = None, namespace: str = "app") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": server_meta(name, namespace=namespace),
            "data": data if data is not None else {"mode": "production"}}


def pvc(name: str = "data") -> dict[str, Any]:
    meta = server_meta(name)
    meta["annotations"].update({"pv.kubernetes.io/bind-completed": "yes",
                                "pv.kubernetes.io/bound-by-controller": "yes",
                                "volume.kubernetes.io/selected-node": "node-1"})
    meta["finalizers"] = ["kubernetes.io/pvc-protection"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "standard", "volumeName": "pvc-1234"},
            "status": {"phase": "Bound"}}


def pv(name: str = "pv-1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": server_meta(name, namespace=None),
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": "/data"},
                     "claimRef": {"namespace": "app", "name": "data", "uid": "x", "resourceVersion": "9"}},
            "status": {"phase": "Bound"}}


def ingress(name: str = "web") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": server_meta(name),
            "spec": {"rules": [{"host": "web.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": name, "port": {"number": 80}}}}]}}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}}


def network_policy(name: str = "deny") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": server_meta(name),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}


def webhook(kind: str = "ValidatingWebhookConfiguration", name: str = "policy") -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": server_meta(name, namespace=None),
            "webhooks": [{"name": "check.policy.example", "failurePolicy": "Fail",
                          "clientConfig": {"service": {"namespace": "app", "name": "policy", "path": "/v"}},
                          "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                     "resources": ["pods"]}],
                          "sideEffects": "None", "admissionReviewVersions": ["v1"]}]}


def apiservice(name: str = "v1beta1.metrics.example.com", *, automanaged: bool = False,
               local: bool = False) -> dict[str, Any]:
    group, version = name.split(".", 1)[1], name.split(".", 1)[0]
    spec: dict[str, Any] = {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 10}
    if not local:
        spec |= {"service": {"namespace": "app", "name": "metrics", "port": 443}, "caBundle": "Y2E="}
    meta = server_meta(name, namespace=None)
    if automanaged:
        meta["labels"]["kube-aggregator.kubernetes.io/automanaged"] = "onstart"
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": meta, "spec": spec,
            "status": {"conditions": [{"type": "Available", "status": "True"}]}}


def crd(name: str = "widgets.example.com") -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": server_meta(name, namespace=None),
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}}


def widget(name: str = "w1", size: int = 3) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": server_meta(name),
            "spec": {"size": size, "enabled": True}}


def owned(obj: dict[str, Any], kind: str = "ReplicaSet") -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": kind, "name": "parent",
                                           "uid": "p", "controller": True}]
    return out


def realistic_deployment(name: str = "checkout") -> dict[str, Any]:
    """A ~3 KB Deployment as the API server returns it: the benchmark's unit of work."""
    d = deployment(name, replicas=4)
    d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "7"
    d["metadata"]["labels"].update({"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop",
                                    "app.kubernetes.io/version": "2.4.1", "team": "payments"})
    container = d["spec"]["template"]["spec"]["containers"][0]
    container.update({
        "env": [{"name": f"SETTING_{i}", "value": f"value-{i}-" + "x" * 20} for i in range(20)],
        "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 9090, "name": "metrics"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}, "periodSeconds": 10},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
    })
    d["spec"]["template"]["spec"]["volumes"] = [{"name": "config", "configMap": {"name": f"{name}-config"}}]
    d["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    d["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                                       "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}}] * 3
    return d
