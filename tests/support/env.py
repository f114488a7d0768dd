"""Helpers the integration and e2e tests share: plans, objects in the source, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from schemas import API_VERSION
from services.common.kube import ApiError, KubeClient
from services.common.settings import NatsSettings
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.devenv.processes import Process

T = TypeVar("T")
SYSTEM = "standby-system"


def nats_settings(server: LocalNats, **kwargs: Any) -> NatsSettings:
    """The services' settings for ``server``: one node, or a cluster (every URL, its CA, R3 streams)."""
    cluster = {"tls_ca": server.pki.ca_cert if server.pki else None,
               "stream_replicas": min(3, len(server.servers))}
    return NatsSettings.model_validate({"url": server.url, "user": server.user, "password": server.password,
                                        **cluster, **kwargs})


def plan_body(name: str, resources: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "RecoveryPlan", "metadata": {"name": name, "namespace": SYSTEM},
            "spec": {"sourceClusterRef": {"name": "source", "namespace": SYSTEM}, "resources": resources, **spec}}


async def apply_plan(kube: KubeClient, body: dict[str, Any]) -> None:
    await kube.apply(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryplans/{body['metadata']['name']}", body,
                     field_manager="test")


async def namespace(kube: KubeClient, name: str, labels: dict[str, str] | None = None) -> None:
    await kube.apply(f"/api/v1/namespaces/{name}", {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": name, "labels": labels or {}}},
                     field_manager="test")


async def protect_configmaps(src: KubeClient, dst: KubeClient, ns: str) -> None:
    """Namespace ``ns`` in the source, and a plan named after it protecting its ConfigMaps (the
    stand-by's namespace created by the syncer)."""
    await namespace(src, ns)
    await apply_plan(dst, plan_body(ns, [{"version": "v1", "resource": "configmaps", "filters": {"namespaces": [ns]}}],
                                    forceNamespaceCreation=True))


async def configmap(kube: KubeClient, ns: str, name: str, data: dict[str, str] | None = None,
                    labels: dict[str, str] | None = None) -> dict[str, Any]:
    return await kube.apply(f"/api/v1/namespaces/{ns}/configmaps/{name}", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "data": data or {"v": "1"}}, field_manager="test")


async def delete(kube: KubeClient, path: str) -> None:
    with contextlib.suppress(ApiError):
        await kube.request("DELETE", path)


async def absent(kube: KubeClient, path: str) -> None:
    """An assertion (for :func:`eventually`): ``path`` is not found."""
    try:
        await kube.get(path)
    except ApiError as exc:
        if exc.not_found:
            return
        raise
    raise AssertionError(f"{path} still exists")


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 30.0, interval: float = 0.2,
                     what: str = "condition") -> T:
    """Retry ``check`` (which asserts) until it passes; re-raise its last failure at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await check()
        except Exception:  # the check asserts; anything it raises means "not yet"
            if loop.time() > deadline:
                raise
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running(coro: Awaitable[Any], name: str) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.ensure_future(coro)
    task.set_name(name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def plan_status(kube: KubeClient, name: str) -> dict[str, Any]:
    """The status of the RecoveryPlan ``name`` in the system namespace."""
    plan = await kube.get(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryplans/{name}")
    return dict(plan.get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    """The condition ``type_`` of a status ({} when there is none)."""
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def service_process(service: str, nats_server: LocalNats, own: LocalCluster, name: str, **settings: str) -> Process:
    """``python -m services.<service>`` as its own process against ``own`` (where the plans are),
    with ``settings`` as its STANDBY_<SERVICE>_* variables (``PLAN_RESYNC_SECONDS="1"``)."""
    prefix = f"STANDBY_{service.upper()}_"
    env = {"NATS__URL": nats_server.url, "NATS__USER": nats_server.user, "NATS__PASSWORD": nats_server.password,
           "KUBE__KUBECONFIG": str(own.kubeconfig), "SERVE__PORT": "0", "PLAN_RESYNC_SECONDS": "0.3",
           "SERVE__LOG_FORMAT": "json"} | settings
    return Process(name, [sys.executable, "-m", f"services.{service}"], own.root / "logs" / f"{name}.log",
                   env={prefix + key: value for key, value in env.items()})
