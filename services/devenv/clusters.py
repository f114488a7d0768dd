"""One local Kubernetes cluster made of upstream processes on loopback ports.

Light mode runs etcd and kube-apiserver (RBAC on): enough for everything that only stores
objects. Full mode adds kube-controller-manager, kube-scheduler and kwok with a few fake nodes, so
Deployments get Pods that become Ready and the Deployment Available.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.devenv import binaries, certs, ports
from services.devenv.processes import Process

ADMIN_USER = "standby-admin"
SERVICE_CIDR = "10.0.0.0/16"


def control_plane_env() -> dict[str, str]:
    """The Go runtime settings of the local control planes.

    Go's default garbage collector (GOGC=100) starts a cycle each time the heap doubles; under the
    benchmarks' write load each API server collected every ~2.5 s, and on a two-core machine that
    runs two control planes, the broker and the pipeline, that CPU is what the rest waits for. A
    development machine has memory to spare and few cores, so the local clusters trade one for the
    other (GOGC=400: a heap up to five times the live data). ``STANDBY_DEV_GOGC`` overrides it
    (100 is Go's default); production control planes are not configured by Standby."""
    return {"GOGC": os.environ.get("STANDBY_DEV_GOGC", "400")}


class ClusterStartError(RuntimeError):
    pass


class RequestError(Exception):
    """An HTTP error answer from the API server, already read and closed."""

    def __init__(self, code: int, body: str) -> None:
        super().__init__(f"HTTP {code}: {body[:500]}")
        self.code = code
        self.body = body


def write_kubeconfig(path: Path, *, name: str, server: str, ca_pem: bytes, token: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class LocalCluster:
    name: str
    root: Path
    full: bool = False
    nodes: int = 3
    watch_cache: bool = True
    audit_groups: tuple[str, ...] = ()  # log every request of these groups' users (rehearsals: RBAC denials)
    etcd_port: int = 0
    etcd_peer_port: int = 0
    api_port: int = 0
    token: str = ""
    processes: dict[str, Process] = field(default_factory=dict)

    # -- layout ---------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.root / f"{self.name}.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def audit_log(self) -> Path:
        """JSON lines, one audit event (verb, resource, user, response code) per request of
        ``audit_groups``' users."""
        return self.dir / "audit.log"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, *, timeout: float = 60.0) -> LocalCluster:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.api_port:
            self.etcd_port, self.etcd_peer_port, self.api_port = ports.free_ports(3)
        self.token = self.token or secrets.token_hex(24)
        self.pki = certs.generate(self.dir / "pki", cluster=self.name)
        token_file = self.dir / "tokens.csv"
        token_file.write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        token_file.chmod(0o600)
        write_kubeconfig(
            self.kubeconfig, name=self.name, server=self.server,
            ca_pem=self.pki.ca_cert.read_bytes(), token=self.token,
        )
        try:
            self._start_etcd()
            self.start_apiserver(timeout=timeout)
            if self.full:
                self._start_controllers()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self.processes["etcd"] = Process(
            f"{self.name}/etcd",
            [
                str(binaries.kube_binary("etcd")),
                f"--name={self.name}",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={self.name}={peer}",
                "--listen-metrics-urls=",
                # Throwaway clusters: durability across an OS crash buys nothing, fsync costs a lot.
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
            self.logs / f"{self.name}-etcd.log",
            env=control_plane_env(),
        ).start()

    def apiserver_argv(self) -> list[str]:
        issuer = "https://kubernetes.default.svc.cluster.local"
        return [
            str(binaries.kube_binary("kube-apiserver")),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={self.pki.serving_cert}",
            f"--tls-private-key-file={self.pki.serving_key}",
            f"--token-auth-file={self.dir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={issuer}",
            f"--api-audiences={issuer}",
            f"--service-account-key-file={self.pki.sa_pub}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=true",  # /debug/pprof for the admin: benchmarks profile the server's CPU
            f"--watch-cache={'true' if self.watch_cache else 'false'}",
            "--max-requests-inflight=800",
            "--max-mutating-requests-inflight=400",
            "--v=1",
            *self._audit_args(),
        ]

    def _audit_args(self) -> list[str]:
        if not self.audit_groups:
            return []
        policy = self.dir / "audit-policy.yaml"
        rules = [{"level": "Metadata", "userGroups": list(self.audit_groups)}, {"level": "None"}]
        policy.write_text(json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                      "omitStages": ["RequestReceived"], "rules": rules}))
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-maxbackup=1"]

    def start_apiserver(self, *, timeout: float = 60.0) -> None:
        self.processes["kube-apiserver"] = Process(
            f"{self.name}/kube-apiserver", self.apiserver_argv(), self.logs / f"{self.name}-kube-apiserver.log",
            env=control_plane_env(),
        ).start()
        self.wait_ready(timeout=timeout)

    def stop_apiserver(self) -> None:
        """Stop only the API server (fault tests: the destination goes away and comes back)."""
        proc = self.processes.pop("kube-apiserver", None)
        if proc is not None:
            proc.stop()

    def _start_controllers(self) -> None:
        kcm_port, sched_port, kwok_port = ports.free_ports(3)
        kubeconfig = str(self.kubeconfig)
        self.processes["kube-controller-manager"] = Process(
            f"{self.name}/kube-controller-manager",
            [
                str(binaries.kube_binary("kube-controller-manager")),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                "--use-service-account-credentials=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
                "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--v=1",
            ],
            self.logs / f"{self.name}-kube-controller-manager.log",
            env=control_plane_env(),
        ).start()
        self.processes["kube-scheduler"] = Process(
            f"{self.name}/kube-scheduler",
            [
                str(binaries.kube_binary("kube-scheduler")),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--v=1",
            ],
            self.logs / f"{self.name}-kube-scheduler.log",
            env=control_plane_env(),
        ).start()
        self.processes["kwok"] = Process(
            f"{self.name}/kwok",
            [
                str(binaries.kube_binary("kwok")),
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{kwok_port}",
                f"--config={binaries.kwok_stages()}",
            ],
            self.logs / f"{self.name}-kwok.log",
            env=control_plane_env(),
        ).start()
        for i in range(self.nodes):
            self.request("POST", "/api/v1/nodes", _fake_node(f"kwok-{self.name}-{i}"))

    def stop(self) -> None:
        for key in reversed(list(self.processes)):
            self.processes[key].stop()
        self.processes.clear()

    # -- talking to it --------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, token: str | None = None,
        content_type: str = "application/json", timeout: float = 30.0,
    ) -> dict[str, Any]:
        """A plain HTTPS call as the admin (or ``token``); raises :class:`RequestError`."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raise RequestError(exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(payload) if payload else {}

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            for proc in self.processes.values():
                if not proc.alive():
                    raise ClusterStartError(f"{proc.name} exited:\n{proc.tail()}")
            try:
                req = urllib.request.Request(self.server + "/readyz")
                req.add_header("Authorization", f"Bearer {self.token}")
                with urllib.request.urlopen(req, context=self._ssl(), timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        api = self.processes.get("kube-apiserver")
        raise ClusterStartError(
            f"{self.name}: /readyz not ready after {timeout}s ({last})\n{api.tail() if api else ''}"
        )

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (through etcd's JSON gateway); returns the revision.

        With the watch cache off this makes every older resourceVersion answer 410 Gone.
        """
        def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
            req = urllib.request.Request(
                self.etcd_url + path, data=json.dumps(body).encode(), method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]

        status = call("/v3/kv/range", {"key": base64.b64encode(b"/").decode(), "limit": 1})
        revision = int(status["header"]["revision"])
        call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def mint_credentials(
        self, name: str, *, namespace: str = "default", rules: list[dict[str, Any]],
        cluster_scoped: bool = False, expiration_seconds: int = 86400,
    ) -> Path:
        """A ServiceAccount with exactly ``rules`` (a Role, or a ClusterRole when ``cluster_scoped``)
        and a kubeconfig holding a token for it. For RBAC tests and read-only source access."""
        with contextlib.suppress(RequestError):
            self.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        sa = {"metadata": {"name": name, "namespace": namespace}}
        _create_or_replace(self, f"/api/v1/namespaces/{namespace}/serviceaccounts", name, sa)
        subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
        if cluster_scoped:
            base = "/apis/rbac.authorization.k8s.io/v1"
            _create_or_replace(self, f"{base}/clusterroles", name, {"metadata": {"name": name}, "rules": rules})
            _create_or_replace(
                self, f"{base}/clusterrolebindings", name,
                {"metadata": {"name": name}, "subjects": subject,
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}},
            )
        else:
            base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
            meta = {"name": name, "namespace": namespace}
            _create_or_replace(self, f"{base}/roles", name, {"metadata": meta, "rules": rules})
            _create_or_replace(
                self, f"{base}/rolebindings", name,
                {"metadata": meta, "subjects": subject,
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}},
            )
        token = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": expiration_seconds}},
        )["status"]["token"]
        return write_kubeconfig(
            self.root / f"{self.name}-{namespace}-{name}.kubeconfig", name=self.name, server=self.server,
            ca_pem=self.pki.ca_cert.read_bytes(), token=token,
        )

    # -- state for `standby dev` -----------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name, "full": self.full, "nodes": self.nodes, "watch_cache": self.watch_cache,
            "etcd_port": self.etcd_port, "etcd_peer_port": self.etcd_peer_port, "api_port": self.api_port,
            "token": self.token, "pids": {k: p.pid for k, p in self.processes.items()},
        }


def _create_or_replace(cluster: LocalCluster, collection: str, name: str, body: dict[str, Any]) -> None:
    try:
        cluster.request("POST", collection, body)
    except RequestError as exc:
        if exc.code != 409:
            raise
        current = cluster.request("GET", f"{collection}/{name}")
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
        cluster.request("PUT", f"{collection}/{name}", body)


def _fake_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {},
        "status": {
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
            "phase": "Running",
        },
    }
