"""The shipped overlays as a platform team installs them: rendered by the real kubectl (kustomize),
server-side applied for real into an empty cluster with RBAC on, plus the Secrets the docs create
with one `standby` command each; then every object exists, everything a Pod template needs
(ServiceAccount, Secrets, ConfigMaps and their keys) is there, and each component's ServiceAccount
may do what it needs in that topology and nothing else that matters (least privilege, asked of the
real authorizer with `kubectl auth can-i`)."""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.devenv import binaries
from services.devenv.clusters import LocalCluster
from tests.support.kubectl import kubectl

K8S = Path(__file__).resolve().parents[2] / "k8s"
REPO = K8S.parent
OVERLAYS = ["two-cluster", "three-cluster/management", "three-cluster/destination"]
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
SYSTEM = "standby-system"

# (service account, verb, resource, namespace or "", allowed) per overlay.
WRITES_COPIES = [("patch", "deployments.apps", "default", True), ("create", "secrets", "default", True),
                 ("delete", "configmaps", "default", True), ("patch", "apiservices.apiregistration.k8s.io", "", True),
                 ("create", "namespaces", "", True), ("list", "configmaps", SYSTEM, True),  # fences
                 ("create", "pods", "default", False), ("get", "nodes", "", False), ("delete", "nodes", "", False),
                 ("get", "pods", "default", False)]
RECOVERY = [("list", "deployments.apps", "", True), ("patch", "deployments.apps", "default", True),
            ("patch", "apiservices.apiregistration.k8s.io", "", True), ("patch", "namespaces", "", True),
            ("patch", "recoveryexecutionjobs.dr.standby.dev/status", SYSTEM, True),
            ("create", "configmaps", SYSTEM, True),  # fences
            ("delete", "deployments.apps", "default", False), ("delete", "secrets", "default", False),
            ("delete", "namespaces", "", False),
            ("create", "pods", "default", False), ("create", "configmaps", "default", False)]
LEASES = [("update", "leases.coordination.k8s.io", SYSTEM, True),  # the replicas share the plans
          ("watch", "leases.coordination.k8s.io", SYSTEM, True),
          ("update", "leases.coordination.k8s.io", "default", False)]
WATCHER = [*LEASES, ("list", "recoveryplans.dr.standby.dev", "", True), ("create", "events", SYSTEM, True),
           ("patch", "managedclusters.dr.standby.dev/status", SYSTEM, True), ("get", "secrets", SYSTEM, True),
           ("create", "configmaps", "default", False), ("get", "secrets", "default", False),
           ("patch", "deployments.apps", "default", False)]
SYNC_SIDE = [*LEASES, ("watch", "recoveryplans.dr.standby.dev", "", True),
             ("patch", "recoveryplans.dr.standby.dev/status", SYSTEM, True), ("get", "secrets", SYSTEM, True),
             ("create", "events", SYSTEM, True), ("patch", "rebuilds.dr.standby.dev/status", SYSTEM, True),
             ("patch", "recoveryplans.dr.standby.dev", SYSTEM, True),
             ("delete", "rebuilds.dr.standby.dev", SYSTEM, False)]
EXPECTED: dict[str, list[tuple[str, str, str, str, bool]]] = {
    "two-cluster": [("standby-syncer", *r) for r in SYNC_SIDE + WRITES_COPIES]
    + [("standby-watcher", *r) for r in WATCHER] + [("standby-recovery", *r) for r in RECOVERY],
    "three-cluster/management": [("standby-syncer", *r) for r in SYNC_SIDE]
    + [("standby-syncer", "patch", "deployments.apps", "default", False),  # writes only in the stand-by
       ("standby-syncer", "list", "configmaps", SYSTEM, False)]
    + [("standby-watcher", *r) for r in WATCHER],
    "three-cluster/destination": [("standby-writer", *r) for r in WRITES_COPIES]
    + [("standby-writer", "list", "recoveryplans.dr.standby.dev", "", False)]
    + [("standby-recovery", *r) for r in RECOVERY],
}


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

    wrong = [f"{account} {'is refused' if allowed else 'is allowed'} {verb} {resource}" + (f" in {ns}" if ns else "")
             for account, verb, resource, ns, allowed in EXPECTED[overlay]
             if can_i(empty, account, verb, resource, ns) is not allowed]
    assert not wrong, wrong

    # The services that share plans run as several replicas, each named in the Leases by its pod,
    # rolled one at a time and drained one at a time.
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for name in ("standby-watcher", "standby-syncer"):
        if ("Deployment", name) not in by:
            continue
        spec = by[("Deployment", name)]["spec"]
        assert spec["replicas"] >= 2 and spec["strategy"]["type"] == "RollingUpdate"
        env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        budget = by[("PodDisruptionBudget", name)]["spec"]
        assert budget["maxUnavailable"] == 1
        assert budget["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        # Their Lease renewals are queued as a leader election's, the rest of their requests as any
        # workload's (the real API server's priority and fairness, as it classifies them).
        lease = f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/standby-anything"
        assert priority_level(empty, name, lease) == "leader-election"
        assert priority_level(empty, name, "/api/v1/namespaces/default/configmaps") == "workload-low"


def priority_level(cluster: LocalCluster, account: str, path: str) -> str:
    """The priority level the API server puts a GET of ``path`` by the ServiceAccount in (named by
    the response header priority and fairness adds to every request it classifies)."""
    req = urllib.request.Request(cluster.server + path, headers={
        "Authorization": f"Bearer {cluster.token}", "Impersonate-User": f"system:serviceaccount:{SYSTEM}:{account}"})
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(cluster.pki.ca_cert)),
                                    timeout=30) as resp:
            uid = resp.headers["X-Kubernetes-PF-PriorityLevel-UID"]
    except urllib.error.HTTPError as exc:  # a 404 or a 403 is classified too
        with exc:
            uid = exc.headers["X-Kubernetes-PF-PriorityLevel-UID"]
    levels = cluster.request("GET", "/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations")["items"]
    return next(level["metadata"]["name"] for level in levels if level["metadata"]["uid"] == uid)


def can_i(cluster: LocalCluster, account: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i` as the ServiceAccount (the real authorizer: RBAC as installed)."""
    resource, _, sub = resource.partition("/")
    cmd = [str(binaries.kube_binary("kubectl")), "--kubeconfig", str(cluster.kubeconfig), "auth", "can-i", verb,
           resource, f"--as=system:serviceaccount:{SYSTEM}:{account}",
           *([f"--subresource={sub}"] if sub else []), *(["-n", namespace] if namespace else ["--all-namespaces"])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


def test_skaffold_profiles_render_exactly_the_overlays() -> None:
    """Skaffold itself cannot be built here: the Go module proxy this machine reaches refuses
    github.com/GoogleContainerTools/skaffold/v2 (403, "not available"), so `skaffold render` is
    out of reach; its profiles' kustomize paths are checked against the overlays that install."""
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    profiles = {p["name"]: p["manifests"]["kustomize"]["paths"] for p in config["profiles"]}
    assert profiles == {"two-cluster": ["k8s/overlays/two-cluster"],
                        "three-cluster-management": ["k8s/overlays/three-cluster/management"],
                        "three-cluster-destination": ["k8s/overlays/three-cluster/destination"]}
    assert config["manifests"]["kustomize"]["paths"] == ["k8s/overlays/two-cluster"]
    assert all((REPO / path / "kustomization.yaml").exists() for paths in profiles.values() for path in paths)


def test_a_cluster_is_registered_with_one_command(source: LocalCluster, tmp_path: Path) -> None:
    """docs/install.md: the source's read-only RBAC, then `standby managed-cluster` prints the
    Secret and ManagedCluster for the sync side; the kubeconfig in it reads and cannot write."""
    kubectl("apply", "--server-side", "-k", str(K8S / "source"), kubeconfig=source.kubeconfig)
    out = standby("managed-cluster", "source", "--service-account", "standby-system/standby-reader",
                  "--kubeconfig", str(source.kubeconfig), "--duration", "2h")
    secret, cluster = json.loads(out)["items"]
    assert cluster["kind"] == "ManagedCluster" and cluster["spec"]["secretRef"]["name"] == secret["metadata"]["name"]
    minted = tmp_path / "reader.kubeconfig"
    minted.write_bytes(base64.b64decode(secret["data"]["kubeconfig.yaml"]))
    assert yaml.safe_load(kubectl("auth", "whoami", "-o", "yaml", kubeconfig=minted))["status"]["userInfo"][
        "username"] == "system:serviceaccount:standby-system:standby-reader"
    kubectl("get", "deployments", "-A", kubeconfig=minted)
    with pytest.raises(AssertionError, match="forbidden"):
        kubectl("create", "configmap", "nope", "-n", "default", kubeconfig=minted)

    refused = subprocess.run([sys.executable, "-m", "services.cli", "managed-cluster", "x", "--service-account",
                              "standby-system/nobody", "--kubeconfig", str(source.kubeconfig)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "serviceaccount standby-system/nobody not found" in refused.stderr
    assert not refused.stdout


def test_the_monitoring_component_installs_and_selects_every_component(
        env_root: Path, tmp_path: Path) -> None:
    """docs/install.md "Monitoring": the component on top of an overlay, against the Prometheus
    Operator's own CRDs (from its Go module, cached by hack/build-kube.sh), into a real API server.
    Each metrics Service selects a component's pods and a named container port, the
    ServiceMonitor selects the Services and names the job as the alert rules expect, and the
    dashboard is a ConfigMap with valid JSON."""
    cluster = LocalCluster("install-monitoring", env_root).start()
    try:
        for crd in binaries.monitoring_crds():
            kubectl("apply", "--server-side", "-f", str(crd), kubeconfig=cluster.kubeconfig)
        kubectl("wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com",
                "crd/prometheusrules.monitoring.coreos.com", kubeconfig=cluster.kubeconfig)
        mine = tmp_path / "mine"
        mine.mkdir()
        overlay, component = (os.path.relpath(K8S / part, mine) for part in ("overlays/two-cluster", "monitoring"))
        (mine / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [overlay], "components": [component]}))
        kubectl("apply", "--server-side", "-k", str(mine), kubeconfig=cluster.kubeconfig)
        docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(mine))) if d]
    finally:
        cluster.stop()

    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics")]
    assert {s["spec"]["selector"]["app.kubernetes.io/name"] for s in services} == set(deployments)
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    for service in services:
        (target,) = [d for d in deployments.values()
                     if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        ports = {p["name"]: p["containerPort"] for p in target["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert ports[service["spec"]["ports"][0]["targetPort"]] == service["spec"]["ports"][0]["port"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
        job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        assert re.fullmatch(r"standby-(watcher|syncer|recovery)", job), job  # the up{job=~...} alert's jobs
    (dashboard,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "standby-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["standby.json"])["panels"]
    assert any(d["kind"] == "PrometheusRule" for d in docs)


def compose(folder: Path, overlay: str, *components: str) -> Path:
    """A kustomization of a user's own: the overlay with the components, as docs/install.md shows."""
    folder.mkdir(parents=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S / "overlays" / overlay, folder)],
        "components": [os.path.relpath(K8S / c, folder) for c in components]}))
    return folder


def nats_config_is_valid(config: str, env: dict[str, str], files: dict[str, Path], tmp_path: Path) -> None:
    """The real nats-server parses ``config`` (``-t``) with the pod's environment and the files it
    names moved to where they are here."""
    for mounted, here in files.items():
        config = config.replace(mounted, str(here))
    path = tmp_path / "nats.conf"
    path.write_text(config)
    done = subprocess.run([str(binaries.nats_server()), "-c", str(path), "-t"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=30, check=False)
    assert done.returncode == 0, done.stderr + done.stdout


def test_the_generated_broker_password_is_read_as_a_string_by_the_real_nats_server(tmp_path: Path) -> None:
    """`standby nats-credentials`: nats-server parses `$NATS_PASSWORD`'s value, and one beginning
    with a digit can be refused (the broker never starts); the generated ones begin with a letter."""
    from services.cli import broker_password

    config = "authorization { users: [ { user: $NATS_USER, password: $NATS_PASSWORD } ] }\n"
    with pytest.raises(AssertionError, match="could not be parsed"):
        nats_config_is_valid(config, {"NATS_USER": "u", "NATS_PASSWORD": "12-rXk2"}, {}, tmp_path)
    for _ in range(20):
        password = broker_password()
        assert password[0].isalpha() and password.isalnum() and len(password) == 43, password
        nats_config_is_valid(config, {"NATS_USER": "u", "NATS_PASSWORD": password}, {}, tmp_path)


@pytest.mark.parametrize("overlay", ["two-cluster", "three-cluster/management"])
def test_the_broker_cluster_components_install_on_the_overlays_that_run_the_broker(
        overlay: str, env_root: Path, tmp_path: Path) -> None:
    """docs/install.md "The broker as a cluster": k8s/nats-cluster and k8s/nats-cert-manager on an
    overlay, server-side applied into a real API server with cert-manager's CRDs. Three nodes whose
    routes name each node through the headless Service, a PDB keeping the quorum, spread, TLS from
    the Secret the Certificate makes (its names cover the routes and the Service the services use),
    the services on R3 streams over TLS; the configuration accepted by the real nats-server."""
    from services.devenv import certs

    mine = compose(tmp_path / "mine", overlay, "nats-cluster", "nats-cert-manager")
    cluster = LocalCluster(f"install-nats-{overlay.replace('/', '-')}", env_root).start()
    try:
        for crd in binaries.certmanager_crds():
            kubectl("apply", "--server-side", "-f", str(crd), kubeconfig=cluster.kubeconfig)
        kubectl("wait", "--for=condition=Established", "crd/certificates.cert-manager.io",
                "crd/issuers.cert-manager.io", kubeconfig=cluster.kubeconfig)
        kubectl("apply", "--server-side", "-k", str(mine), kubeconfig=cluster.kubeconfig)
    finally:
        cluster.stop()
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(mine))) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}

    nats = by[("StatefulSet", "nats")]["spec"]
    assert nats["replicas"] == 3 and nats["podManagementPolicy"] == "Parallel"
    headless = by[("Service", nats["serviceName"])]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"]
    assert headless["selector"].items() <= nats["template"]["metadata"]["labels"].items()
    pdb = by[("PodDisruptionBudget", "nats")]["spec"]
    assert pdb["minAvailable"] == 2 and pdb["selector"]["matchLabels"].items() <= nats["template"]["metadata"][
        "labels"].items()
    assert {c["topologyKey"] for c in nats["template"]["spec"]["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname", "topology.kubernetes.io/zone"}

    config = by[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    routes = re.findall(r"nats-route://([\w.-]+):6222", config)
    assert routes == [f"nats-{i}.{nats['serviceName']}.{SYSTEM}.svc" for i in range(3)]
    certificate = by[("Certificate", "standby-nats-tls")]["spec"]
    tls = next(v for v in nats["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == certificate["secretName"]
    names = certificate["dnsNames"]
    assert all(any(re.fullmatch(n.replace(".", r"\.").replace("*", r"[\w-]+"), r) for n in names) for r in routes)
    assert "client auth" in certificate["usages"]  # the routes' mutual TLS

    for name, prefix in (("standby-watcher", "STANDBY_WATCHER"), ("standby-syncer", "STANDBY_SYNCER")):
        pod = by[("Deployment", name)]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env[f"{prefix}_NATS__STREAM_REPLICAS"] == "3"
        host = re.fullmatch(r"tls://([\w.-]+):4222", env[f"{prefix}_NATS__URL"])
        assert host and host.group(1) in names
        (volume,) = [v for v in pod["volumes"] if v["name"] == "nats-ca"]
        assert volume["secret"]["secretName"] == certificate["secretName"]
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "nats-ca"]
        assert env[f"{prefix}_NATS__TLS_CA"] == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"

    pki = certs.generate_nats(tmp_path / "pki")
    mounts = nats["template"]["spec"]["containers"][0]["volumeMounts"]
    mount = next(m["mountPath"] for m in mounts if m["name"] == "tls")
    nats_config_is_valid(config, {"POD_NAME": "nats-0", "NATS_USER": "u", "NATS_PASSWORD": "p"},
                         {f"{mount}/tls.crt": pki.server_cert, f"{mount}/tls.key": pki.server_key,
                          f"{mount}/ca.crt": pki.ca_cert, "/data": tmp_path / "data"}, tmp_path)


def test_the_broker_cluster_component_is_refused_where_no_broker_runs(tmp_path: Path) -> None:
    """The stand-by of three clusters has no broker: the component says so when rendered."""
    mine = compose(tmp_path / "mine", "three-cluster/destination", "nats-cluster")
    with pytest.raises(AssertionError, match=re.escape("StatefulSet.v1.apps/nats")):
        kubectl("kustomize", str(mine))
