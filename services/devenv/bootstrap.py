"""What ``standby dev up`` installs into fresh clusters: the CRDs, the ``standby-system``
namespace, the stream keys Secret (sync side and destination) and, in the sync-side cluster,
ManagedClusters ``source`` (read-only credentials) and ``destination`` with their kubeconfig
Secrets."""

from __future__ import annotations

import base64
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from schemas import API_VERSION, crdgen, sealing
from services.common import keys, settings
from services.devenv import binaries, ports
from services.devenv.clusters import LocalCluster
from services.devenv.environment import DevEnvironment
from services.devenv.processes import Process

SYSTEM_NAMESPACE = settings.NAMESPACE
READ_ONLY_RULES = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]
CRD_BASE = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def apply(cluster: LocalCluster, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply as the dev tool."""
    return cluster.request(
        "PATCH", f"{path}?fieldManager=standby-dev&force=true", body, content_type="application/apply-patch+yaml"
    )


def install_crds(cluster: LocalCluster, *, timeout: float = 30.0) -> None:
    crds = crdgen.all_crds()
    for crd in crds:
        apply(cluster, f"{CRD_BASE}/{crd['metadata']['name']}", crd)
    deadline = time.monotonic() + timeout
    for crd in crds:
        while True:
            # A CRD just created may show "conditions": null until the API server has looked at it.
            conditions = (cluster.request("GET", f"{CRD_BASE}/{crd['metadata']['name']}").get("status") or {}).get(
                "conditions") or []
            if {c["type"] for c in conditions if c["status"] == "True"} >= {"Established", "NamesAccepted"}:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{crd['metadata']['name']} not Established after {timeout}s")
            time.sleep(0.1)


FENCE_POLICY = binaries.REPO_ROOT / "k8s" / "base" / "fence" / "policy.yaml"


def install_fence_policy(cluster: LocalCluster) -> None:
    """The fence the API server enforces (the shipped ValidatingAdmissionPolicy and its binding),
    in a cluster copies are written to."""
    for doc in yaml.safe_load_all(FENCE_POLICY.read_text()):
        plural = {"ValidatingAdmissionPolicy": "validatingadmissionpolicies",
                  "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}[doc["kind"]]
        apply(cluster, f"/apis/admissionregistration.k8s.io/v1/{plural}/{doc['metadata']['name']}", doc)


def ensure_namespace(cluster: LocalCluster, name: str) -> None:
    apply(cluster, f"/api/v1/namespaces/{name}", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def register_cluster(sync: LocalCluster, name: str, kubeconfig: Path) -> None:
    secret = f"{name}-kubeconfig"
    apply(sync, f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets/{secret}", {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret, "namespace": SYSTEM_NAMESPACE},
        "data": {"kubeconfig.yaml": base64.b64encode(kubeconfig.read_bytes()).decode()},
    })
    apply(sync, f"/apis/{API_VERSION}/namespaces/{SYSTEM_NAMESPACE}/managedclusters/{name}", {
        "apiVersion": API_VERSION, "kind": "ManagedCluster",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
        "spec": {"secretRef": {"name": secret, "namespace": SYSTEM_NAMESPACE}},
    })


def install_stream_keys(clusters: list[LocalCluster], keyring: sealing.Keyring) -> None:
    """The same keys wherever the stream is read: the sync side (watcher, syncer) and the
    destination (recovery, for ``fromOriginal``)."""
    body = keys.secret_manifest(keyring, namespace=SYSTEM_NAMESPACE)
    for cluster in clusters:
        apply(cluster, f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets/{keys.DEFAULT_SECRET}", body)


def stream_keyring(cluster: LocalCluster) -> sealing.Keyring:
    """The stream keys installed in ``cluster`` (tests read sealed messages with them)."""
    path = f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets/{keys.DEFAULT_SECRET}"
    return keys.keyring_of(cluster.request("GET", path))


def install(env: DevEnvironment) -> None:
    for name, cluster in env.clusters.items():
        if name == "source":
            continue  # the source needs nothing installed
        install_crds(cluster)
        ensure_namespace(cluster, SYSTEM_NAMESPACE)
    install_fence_policy(env.clusters["destination"])
    install_stream_keys([c for n, c in env.clusters.items() if n != "source"],
                        sealing.Keyring("dev-1", {"dev-1": sealing.new_key()}))
    source = env.clusters["source"]
    reader = source.mint_credentials(
        "standby-reader", namespace=SYSTEM_NAMESPACE, rules=READ_ONLY_RULES, cluster_scoped=True
    )
    register_cluster(env.sync_cluster, "source", reader)
    register_cluster(env.sync_cluster, "destination", env.clusters["destination"].kubeconfig)


def service_env(env: DevEnvironment, service: str) -> dict[str, str]:
    """Environment for one service process, in its settings' own prefix."""
    assert env.nats is not None
    prefix = f"STANDBY_{service.upper()}_"
    own = env.clusters["destination"] if service == "recovery" else env.sync_cluster
    return {
        prefix + "NATS__URL": env.nats.url,
        prefix + "NATS__USER": env.nats.user,
        prefix + "NATS__PASSWORD": env.nats.password,
        **({prefix + "NATS__TLS_CA": str(env.nats.pki.ca_cert)} if env.nats.pki else {}),
        prefix + "NATS__STREAM_REPLICAS": str(min(3, len(env.nats.servers))),
        prefix + "KUBE__KUBECONFIG": str(own.kubeconfig),
        prefix + "SERVE__PORT": "0",
        prefix + "SERVE__LOG_FORMAT": "json",
    }


class ServiceStartError(RuntimeError):
    pass


def start_services(env: DevEnvironment, names: tuple[str, ...] = ("watcher", "syncer", "recovery"),
                   *, timeout: float = 60.0) -> None:
    """Run the services as local processes wired to the dev clusters (logs under DIR/logs), and
    return once each one's /healthz answers 200: what is done next (a plan applied, a demo timed)
    does not race their start-up."""
    free = iter(ports.free_ports(len(names)))
    health = {}
    for name in names:
        environ = service_env(env, name)
        port_key = f"STANDBY_{name.upper()}_SERVE__PORT"
        if environ.get(port_key, "0") == "0":
            environ[port_key] = str(next(free))
        health[name] = f"http://127.0.0.1:{environ[port_key]}/healthz"
        env.services[name] = Process(
            name, [sys.executable, "-m", f"services.{name}"], env.root / "logs" / f"{name}.log", env=environ,
        ).start()
    deadline = time.monotonic() + timeout
    for name, url in health.items():
        while True:
            proc = env.services[name]
            if not proc.alive():
                raise ServiceStartError(f"{name} exited:\n{proc.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while it connects
            if time.monotonic() > deadline:
                raise ServiceStartError(f"{name} not healthy after {timeout:.0f}s ({url}):\n{proc.tail()}")
            time.sleep(0.1)

