"""The shipped least-privilege RBAC (k8s/base/*/rbac.yaml), applied to a real API server with RBAC
on: each service can do what it needs and is refused what it does not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.devenv import bootstrap
from services.devenv.clusters import LocalCluster, RequestError

K8S = Path(__file__).resolve().parents[2] / "k8s"
NS = bootstrap.SYSTEM_NAMESPACE
PROBE = "/apis/apps/v1/namespaces/default/deployments/rbac-probe"
APISERVICE = "/apis/apiregistration.k8s.io/v1/apiservices/v1.probe.example.com"
COLLECTIONS = {
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles",
    "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings",
}


def install_rbac(cluster: LocalCluster, service: str) -> str:
    """Apply the service's RBAC and ServiceAccount as shipped; return a token for it."""
    for doc in yaml.safe_load_all((K8S / "base" / service / "rbac.yaml").read_text()):
        doc["metadata"].setdefault("namespace", NS) if doc["kind"] in ("Role", "RoleBinding") else None
        bootstrap.apply(cluster, f"{COLLECTIONS[doc['kind']]}/{doc['metadata']['name']}",
                        {"apiVersion": "rbac.authorization.k8s.io/v1", **doc})
    sa = f"standby-{service}"
    bootstrap.apply(cluster, f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": NS}})
    return str(cluster.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token",
                               {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"expirationSeconds": 3600}})["status"]["token"])


def allowed(cluster: LocalCluster, token: str, method: str, path: str, body: dict | None = None) -> bool:  # type: ignore[type-arg]
    try:
        cluster.request(method, path, body, token=token,
                        content_type="application/apply-patch+yaml" if method == "PATCH" else "application/json")
    except RequestError as exc:
        return exc.code != 403  # anything but 403 reached the resource: authorized
    return True


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rbac-probe", "namespace": "default"},
              "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c",
                                                                                                   "image": "x"}]}}}}


@pytest.mark.parametrize(
    ("service", "method", "path", "expected"),
    [
        pytest.param("syncer", "PATCH", f"{PROBE}?fieldManager=standby",
                     True, id="syncer-writes-copies"),
        pytest.param("syncer", "GET", f"/api/v1/namespaces/{NS}/configmaps", True, id="syncer-reads-fences"),
        pytest.param("syncer", "PATCH", f"{APISERVICE}?fieldManager=standby", True, id="syncer-holds-apiservices"),
        pytest.param("syncer", "GET", "/api/v1/namespaces/default/pods", False, id="syncer-no-pods"),
        pytest.param("syncer", "DELETE", "/api/v1/nodes/any", False, id="syncer-no-nodes"),
        pytest.param("syncer", "POST", "/api/v1/namespaces/default/pods", False, id="syncer-never-creates-pods"),
        pytest.param("syncer", "GET", "/api/v1/nodes", False, id="syncer-no-node-read"),
        pytest.param("watcher", "GET", "/apis/dr.standby.dev/v1alpha1/recoveryplans", True,
                     id="watcher-reads-plans"),
        pytest.param("watcher", "POST", "/api/v1/namespaces/default/configmaps", False, id="watcher-writes-nothing"),
        pytest.param("watcher", "POST", f"/api/v1/namespaces/{NS}/events", True, id="watcher-records-plan-events"),
        pytest.param("watcher", "PATCH", f"/apis/dr.standby.dev/v1alpha1/namespaces/{NS}/managedclusters/x/status",
                     True, id="watcher-writes-managed-cluster-status"),
        pytest.param("recovery", "GET", "/apis/apps/v1/deployments", True, id="recovery-finds-copies"),
        pytest.param("recovery", "PATCH", f"{PROBE}?fieldManager=standby",
                     True, id="recovery-activates"),
        pytest.param("recovery", "PATCH", f"{APISERVICE}?fieldManager=standby", True,
                     id="recovery-activates-apiservices"),
        pytest.param("recovery", "DELETE", PROBE, False,
                     id="recovery-never-deletes"),
        pytest.param("recovery", "DELETE", "/api/v1/namespaces/default/secrets/any", False,
                     id="recovery-never-deletes-secrets"),
        pytest.param("recovery", "POST", "/api/v1/namespaces/default/pods", False, id="recovery-never-creates-pods"),
    ],
)
def test_shipped_rbac(destination: LocalCluster, service: str, method: str, path: str, expected: bool) -> None:
    token = install_rbac(destination, service)
    assert allowed(destination, token, method, path, DEPLOYMENT if method == "PATCH" else None) is expected
