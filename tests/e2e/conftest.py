"""Watcher and syncer running in-process against the session's real clusters and NATS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.common import streams
from services.common.kube import KubeClient
from services.devenv import bootstrap
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.syncer.settings import DeleteSettings, SyncerSettings
from services.syncer.supervisor import Supervisor as SyncSupervisor
from services.watcher.settings import WatcherSettings
from services.watcher.supervisor import Supervisor as WatchSupervisor
from tests.support import env as h


@dataclass
class Pipeline:
    src: KubeClient
    dst: KubeClient
    js: Any
    watcher: WatchSupervisor
    syncer: SyncSupervisor | None


def watcher_settings(nats_server: LocalNats, **kwargs: Any) -> WatcherSettings:
    """``nats`` may be given (the broker through a proxy); else ``nats_server``'s."""
    kwargs = {"backoff_initial_seconds": 0.1, "backoff_max_seconds": 1.0, "nats": h.nats_settings(nats_server)} | kwargs
    return WatcherSettings(plan_resync_seconds=0.3, **kwargs)


def syncer_settings(nats_server: LocalNats, **kwargs: Any) -> SyncerSettings:
    kwargs.setdefault("deletes", DeleteSettings(breaker_min_deletes=1000))  # churn tests delete a lot on purpose
    kwargs.setdefault("nats", h.nats_settings(nats_server))
    # Drift repair's first check comes at a random moment of its first 30 s: it would put back what a
    # test deletes or edits in the stand-by on purpose. test_drift.py turns it on.
    kwargs.setdefault("drift_check_seconds", 0)
    return SyncerSettings(plan_resync_seconds=0.3, status_interval_seconds=0.5, status_progress_seconds=0.5,
                          fence_refresh_seconds=0.2, **kwargs)


@contextlib.asynccontextmanager
async def pipeline(source: LocalCluster, destination: LocalCluster, nats_server: LocalNats, *,
                   with_syncer: bool = True, watcher: dict[str, Any] | None = None,
                   syncer: dict[str, Any] | None = None, keep_plans: bool = False) -> AsyncIterator[Pipeline]:
    """``keep_plans``: the services start again on the plans of an earlier pipeline (a restart)."""
    async with KubeClient.from_kubeconfig(source.kubeconfig) as src, \
            KubeClient.from_kubeconfig(destination.kubeconfig) as dst:
        if not keep_plans:
            await dst.request("DELETE", f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans")
        watching_settings = watcher_settings(nats_server, **(watcher or {}))
        syncing_settings = syncer_settings(nats_server, **(syncer or {}))
        wnc = await streams.connect(watching_settings.nats, name="e2e-watcher")
        snc = await streams.connect(syncing_settings.nats, name="e2e-syncer")
        nc = await streams.connect(h.nats_settings(nats_server), name="e2e-test")
        watching = WatchSupervisor(dst, wnc, watching_settings)
        syncing = SyncSupervisor(dst, snc, syncing_settings) if with_syncer else None
        tasks = [asyncio.create_task(watching.run(), name="watcher")]
        if syncing is not None:
            tasks.append(asyncio.create_task(syncing.run(), name="syncer"))
        try:
            yield Pipeline(src, dst, nc.jetstream(), watching, syncing)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in (wnc, snc, nc):
                await c.close()


@pytest.fixture
async def pipe(source: LocalCluster, registered: LocalCluster, nats_server: LocalNats) -> AsyncIterator[Pipeline]:
    async with pipeline(source, registered, nats_server) as p:
        yield p


@contextlib.contextmanager
def empty_cluster(env_root: Path, registered: LocalCluster, name: str) -> Iterator[LocalCluster]:
    """A new, empty cluster (API server and etcd), registered in the stand-by as ManagedCluster
    ``name`` (its own name: a cluster's store is kept under it)."""
    cluster = LocalCluster(name, env_root).start()
    bootstrap.register_cluster(registered, name, cluster.kubeconfig)
    try:
        yield cluster
    finally:
        cluster.stop()
