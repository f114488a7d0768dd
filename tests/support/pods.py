"""A rendered workload's container, run as a local process the way the kubelet would start it.

There is no container runtime on this machine, so the deployment rehearsal does the kubelet's part
with the machine's own tools (``unshare`` for a private mount namespace, ``mount``, ``setpriv``):

- command and args from the manifest, else the image's entrypoint (``IMAGES``: ``standby`` is this
  checkout's environment with the Dockerfile's PATH and ENV; the broker's image is the nats-server
  the tests use);
- ``env`` and ``envFrom`` resolved from the cluster's Secrets and ConfigMaps as the kubelet reads
  them (a missing one fails the start unless ``optional``), plus ``KUBERNETES_SERVICE_HOST``/``PORT``
  and nothing of this machine's environment;
- the ServiceAccount token (TokenRequest for the pod's own ServiceAccount, unless
  ``automountServiceAccountToken`` is false), ``ca.crt`` and ``namespace``, read-only at
  ``/var/run/secrets/kubernetes.io/serviceaccount``; configMap and secret volumes as files (their
  ``items`` only, if listed), other volumes
  (emptyDir, claim templates) as empty directories, at their ``mountPath``;
- Service names resolved to loopback through the pod's own ``/etc/hosts`` (the cluster DNS);
- ``securityContext``: ``runAsUser``/``runAsGroup``/``fsGroup``, ``readOnlyRootFilesystem``, no new
  privileges, all capabilities dropped.

Ports are the manifest's, on loopback. Mount points that do not exist on this machine are created
for the run and removed afterwards; nothing else outside the pod's own folder is changed."""

from __future__ import annotations

import base64
import contextlib
import os
import shlex
import shutil
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.devenv import binaries
from services.devenv.clusters import LocalCluster, RequestError
from services.devenv.processes import Process

REPO = Path(__file__).resolve().parents[2]
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class Image:
    entrypoint: tuple[str, ...]
    env: Mapping[str, str]
    needs: tuple[Path, ...]  # what the image's files are here: exposed to the pod's user


def _images() -> dict[str, Image]:
    venv_bin = Path(sys.executable).parent
    standby = Image((), {"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
                         "PYTHONUNBUFFERED": "1", "HOME": "/"},
                    (Path(sys.base_prefix), Path(sys.prefix), REPO))
    nats = binaries.nats_server()
    return {"standby": standby,
            "nats": Image((str(nats),), {"PATH": "/usr/local/bin:/usr/bin:/bin"}, (nats.resolve().parent,))}


class PodError(AssertionError):
    """The pod cannot start as its manifest says (a missing Secret, key or ServiceAccount)."""


@dataclass
class Pod:
    name: str
    process: Process
    ready: str | None  # the readiness probe's URL
    created: list[Path] = field(default_factory=list)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ready is not None:
            if not self.process.alive():
                raise PodError(f"{self.name} exited before it was ready:\n{self.process.tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.ready, timeout=2) as answer:
                if answer.status == 200:
                    return
            if time.monotonic() > deadline:
                raise PodError(f"{self.name} not ready after {timeout}s ({self.ready}):\n{self.process.tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.stop()
        for path in reversed(self.created):
            with contextlib.suppress(OSError):
                path.rmdir()


def _get(cluster: LocalCluster, kind: str, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
    try:
        found = cluster.request("GET", f"/api/v1/namespaces/{namespace}/{kind}/{name}")
    except RequestError as exc:
        if exc.code == 404 and optional:
            return None
        raise PodError(f"{kind}/{name} in {namespace}: {exc}") from exc
    data = found.get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()} if kind == "secrets" else dict(data)


def _environment(container: dict[str, Any], cluster: LocalCluster, namespace: str, pod: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for ref, kind in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
            if ref in source:
                data = _get(cluster, kind, namespace, source[ref]["name"], source[ref].get("optional", False))
                env.update({source.get("prefix", "") + k: v for k, v in (data or {}).items()})
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        source = item.get("valueFrom") or {}
        field_path = (source.get("fieldRef") or {}).get("fieldPath")
        if field_path in ("metadata.name", "metadata.namespace"):
            env[item["name"]] = pod if field_path == "metadata.name" else namespace
            continue
        for ref, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if ref in source:
                key = source[ref]
                data = _get(cluster, kind, namespace, key["name"], key.get("optional", False))
                if data is not None and key["key"] in data:
                    env[item["name"]] = data[key["key"]]
                elif not key.get("optional", False):
                    raise PodError(f"{kind}/{key['name']} in {namespace} has no key {key['key']}")
                break
        else:
            raise PodError(f"env {item['name']}: only value, secretKeyRef, configMapKeyRef and the pod's name and "
                           "namespace are rehearsed")
    return env


def _token(cluster: LocalCluster, namespace: str, account: str, into: Path) -> None:
    try:
        token = cluster.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                 "spec": {"expirationSeconds": 3607}})["status"]["token"]
    except RequestError as exc:
        raise PodError(f"serviceaccount {namespace}/{account}: {exc}") from exc
    into.mkdir(parents=True)
    (into / "token").write_text(token)
    (into / "ca.crt").write_bytes(cluster.pki.ca_cert.read_bytes())
    (into / "namespace").write_text(namespace)


def _hidden_ancestor(path: Path) -> Path | None:
    """The topmost folder above ``path`` that other users cannot pass through."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


def _expose(paths: tuple[Path, ...]) -> Iterator[str]:
    """Shell lines making ``paths`` reachable for a non-root user inside the namespace: each folder
    that hides one is covered by a tmpfs into which the needed paths are moved back."""
    staged: dict[Path, list[Path]] = {}
    for path in paths:
        hidden = _hidden_ancestor(path)
        if hidden is not None:
            staged.setdefault(hidden, []).append(path)
    for n, (hidden, inside) in enumerate(staged.items()):
        for m, path in enumerate(inside):
            yield f"mkdir -p /run/.stage/{n}-{m} && mount --bind {shlex.quote(str(path))} /run/.stage/{n}-{m}"
        yield f"mount -t tmpfs -o mode=755,size=1m pod-hide {shlex.quote(str(hidden))}"
        for m, path in enumerate(inside):
            yield f"mkdir -p {shlex.quote(str(path))} && mount --move /run/.stage/{n}-{m} {shlex.quote(str(path))}"
        yield f"mount -o remount,bind,ro {shlex.quote(str(hidden))}"


def start(workload: dict[str, Any], cluster: LocalCluster, root: Path, *,
          services: Mapping[str, str] | None = None) -> Pod:
    """Start the first container of ``workload`` (a rendered Deployment or StatefulSet) as its
    pod would run in ``cluster``; ``services`` names the Service hosts the pod resolves (to
    127.0.0.1). Its folder is ``root/<name>``; its output the log there."""
    name = workload["metadata"]["name"]
    namespace = workload["metadata"].get("namespace", "default")
    spec = workload["spec"]["template"]["spec"]
    container = spec["containers"][0]
    image = _images()[container["image"].split(":")[0]]
    pod_dir = root / name
    shutil.rmtree(pod_dir, ignore_errors=True)
    pod_dir.mkdir(parents=True)

    env = {**image.env, **_environment(container, cluster, namespace, f"{name}-rehearsed"),
           "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(cluster.api_port)}
    pod_security = spec.get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    user, group = security.get("runAsUser", 0), security.get("runAsGroup", security.get("runAsUser", 0))

    mounts: list[tuple[Path, str, bool]] = []  # (here, in the pod, read-only)
    if spec.get("automountServiceAccountToken", True):
        _token(cluster, namespace, spec.get("serviceAccountName", "default"), pod_dir / "serviceaccount")
        mounts.append((pod_dir / "serviceaccount", TOKEN_DIR, True))
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        here = pod_dir / "volumes" / mount["name"]
        here.mkdir(parents=True)
        volume = volumes.get(mount["name"], {})
        if "configMap" in volume or "secret" in volume:
            kind, ref = ("configmaps", volume["configMap"]) if "configMap" in volume else ("secrets", volume["secret"])
            data = _get(cluster, kind, namespace, ref.get("name") or ref.get("secretName"),
                        ref.get("optional", False)) or {}
            items = {i["key"]: i["path"] for i in ref.get("items") or []} or {k: k for k in data}
            for key, path in items.items():
                if key not in data:
                    raise PodError(f"{kind}/{ref.get('name') or ref.get('secretName')} in {namespace} has no key {key}")
                (here / path).write_text(data[key])
        elif "fsGroup" in pod_security:
            os.chown(here, user, pod_security["fsGroup"])
        mounts.append((here, mount["mountPath"], bool(mount.get("readOnly")) or "configMap" in volume
                       or "secret" in volume))
    hosts = pod_dir / "hosts"
    hosts.write_text("127.0.0.1 localhost " + " ".join(
        f"{s} {s}.svc {s}.svc.cluster.local" for s in services or {}) + "\n")

    created: list[Path] = []
    lines = ["set -e", "mount -t tmpfs -o mode=755,size=4m pod-run /run", *_expose(image.needs),
             f"mount --bind {shlex.quote(str(hosts))} /etc/hosts"]
    for here, there, read_only in mounts:
        target = Path(there)
        if not target.is_relative_to("/run") and not target.exists():
            missing = [p for p in (target, *target.parents) if not p.exists()]
            target.mkdir(parents=True)
            created.extend(reversed(missing))
        lines.append(f"mkdir -p {shlex.quote(there)} && mount --bind {'-o ro ' if read_only else ''}"
                     f"{shlex.quote(str(here))} {shlex.quote(there)}")
    lines.append("mount -o remount,bind,ro /run")
    if security.get("readOnlyRootFilesystem"):
        lines.append("mount -o remount,bind,ro /")
    argv = [*(container.get("command") or image.entrypoint), *(container.get("args") or [])]
    if argv and "/" not in argv[0]:
        found = shutil.which(argv[0], path=env["PATH"])
        if found is None:
            raise PodError(f"{name}: {argv[0]} is not on the image's PATH {env['PATH']}")
        argv[0] = found
    drop = ["--no-new-privs"] if security.get("allowPrivilegeEscalation") is False else []
    caps = ["--inh-caps=-all", "--bounding-set=-all"] if "ALL" in (security.get("capabilities") or {}).get(
        "drop", []) else []
    lines.append(f"exec setpriv --reuid={user} --regid={group} --clear-groups {' '.join(drop + caps)} -- "
                 + shlex.join(argv))
    process = Process(f"pod-{name}", ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                      "\n".join(lines)], pod_dir / f"{name}.log", env=env, inherit_env=False)
    probe = (container.get("readinessProbe") or {}).get("httpGet")
    ready = None
    if probe:
        port = probe["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port)
        ready = f"http://127.0.0.1:{port}{probe.get('path', '/')}"
    return Pod(name, process.start(), ready, created)
