"""The shipped overlays as a platform team installs them: rendered by the real kubectl (kustomize),
server-side applied for real into an empty cluster with RBAC on, plus the Secrets the docs create
with one `standby` command each; then every object exists and everything a Pod template needs
(ServiceAccount, Secrets, ConfigMaps and their keys) is there."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.devenv.clusters import LocalCluster
from tests.support.kubectl import kubectl

K8S = Path(__file__).resolve().parents[2] / "k8s"
REPO = K8S.parent
OVERLAYS = ["two-cluster", "three-cluster/management", "three-cluster/destination"]
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


@pytest.fixture
def empty(env_root: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A new cluster nothing was installed in, for each overlay."""
    cluster = LocalCluster(f"install-{request.node.callspec.id.replace('/', '-')}", env_root).start()
    yield cluster
    cluster.stop()


def standby(*args: str) -> str:
    """The `standby` command as the docs show it."""
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def needs(doc: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(kind, name, key or None) of what a workload's Pod template refers to, optional or not."""
    pod = doc["spec"]["template"]["spec"]
    out: list[tuple[str, str, str | None]] = [("serviceaccount", pod.get("serviceAccountName", "default"), None)]
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            for ref, kind in (("secretKeyRef", "secret"), ("configMapKeyRef", "configmap")):
                if ref in source:
                    out.append((kind, source[ref]["name"], source[ref]["key"]))
        for env_from in container.get("envFrom") or []:
            for ref, kind in (("secretRef", "secret"), ("configMapRef", "configmap")):
                if ref in env_from:
                    out.append((kind, env_from[ref]["name"], None))
    for volume in pod.get("volumes") or []:
        if "configMap" in volume:
            out.append(("configmap", volume["configMap"]["name"], None))
        if "secret" in volume:
            out.append(("secret", volume["secret"]["secretName"], None))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_installs_into_an_empty_cluster(empty: LocalCluster, overlay: str) -> None:
    rendered = kubectl("kustomize", str(K8S / "overlays" / overlay))
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Namespace"} <= kinds
    # docs/operations.md "Install", as written there.
    kubectl("apply", "--server-side", "-k", str(K8S / "overlays" / overlay), kubeconfig=empty.kubeconfig)
    # The one-time Secrets, as docs/operations.md creates them.
    kubectl("apply", "-f", "-", stdin=standby("stream-keys"), kubeconfig=empty.kubeconfig)
    if any(d["kind"] == "StatefulSet" and d["metadata"]["name"] == "nats" for d in docs):
        kubectl("apply", "-f", "-", stdin=standby("nats-credentials"), kubeconfig=empty.kubeconfig)

    listed = kubectl("get", "-f", "-", "-o", "name", stdin=rendered, kubeconfig=empty.kubeconfig).split()
    assert len(listed) == len(docs), sorted(listed)

    missing = []
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        namespace = doc["metadata"].get("namespace", "default")
        for kind, name, key in needs(doc):
            try:
                found = yaml.safe_load(kubectl("get", kind, name, "-n", namespace, "-o", "yaml",
                                               kubeconfig=empty.kubeconfig))
            except AssertionError:
                missing.append(f"{doc['kind']}/{doc['metadata']['name']} needs {kind}/{name}")
                continue
            if key is not None and key not in (found.get("data") or {}):
                missing.append(f"{doc['kind']}/{doc['metadata']['name']} needs key {key} of {kind}/{name}")
    assert not missing, missing


def test_skaffold_profiles_render_exactly_the_overlays() -> None:
    """Skaffold itself is not built here (its module graph is far larger than kubectl's); its
    profiles' kustomize paths are checked against the overlays that install."""
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    profiles = {p["name"]: p["manifests"]["kustomize"]["paths"] for p in config["profiles"]}
    assert profiles == {"two-cluster": ["k8s/overlays/two-cluster"],
                        "three-cluster-management": ["k8s/overlays/three-cluster/management"],
                        "three-cluster-destination": ["k8s/overlays/three-cluster/destination"]}
    assert config["manifests"]["kustomize"]["paths"] == ["k8s/overlays/two-cluster"]
    assert all((REPO / path / "kustomization.yaml").exists() for paths in profiles.values() for path in paths)
