"""`standby dev up --nats-cluster 3 --services`: the services run against a 3-node JetStream cluster
over TLS (several URLs, the CA), each plan's stream has three replicas, and a node killed, its
store deleted and started again with `standby dev nats` costs the pipeline nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import nats

from schemas import subjects
from services.common import streams
from services.common.kube import KubeClient
from services.common.settings import NatsSettings
from services.devenv import environment
from tests.support import env as h

REPO = Path(__file__).resolve().parents[2]
DEV = [sys.executable, "-m", "services.cli", "dev"]
NS = "nc-app"


def dev(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEV, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          stdin=subprocess.DEVNULL)


async def test_the_pipeline_on_a_tls_nats_cluster_loses_nothing_to_a_node_lost_with_its_store(
        tmp_path: Path) -> None:
    root = str(tmp_path)
    up = await asyncio.to_thread(dev, "up", "--nats-cluster", "3", "--services", "--dir", root)
    try:
        assert up.returncode == 0, (up.stdout, up.stderr)
        assert "3 nodes, TLS" in up.stdout, up.stdout
        recorded = environment.read_state(tmp_path)
        assert recorded is not None
        nats_state = recorded["nats"]
        urls = ",".join(f"tls://127.0.0.1:{n['client_port']}" for n in nats_state["nodes"].values())
        settings = NatsSettings.model_validate({"url": urls, "user": nats_state["user"],
                                                "password": nats_state["password"], "tls_ca": nats_state["ca"]})
        async with KubeClient.from_kubeconfig(tmp_path / "source.kubeconfig") as src, \
                KubeClient.from_kubeconfig(tmp_path / "destination.kubeconfig") as dst:
            await h.protect_configmaps(src, dst, NS)

            async def copy_holds(value: str) -> None:
                try:
                    copy = await dst.get(f"/api/v1/namespaces/{NS}/configmaps/settings")
                except Exception as exc:  # not there yet
                    raise AssertionError(repr(exc)) from exc
                assert copy["data"] == {"v": value}

            await h.configmap(src, NS, "settings", {"v": "1"})
            await h.eventually(lambda: copy_holds("1"), timeout=60, interval=0.5)
            nc = await streams.connect(settings, name="test-nats-cluster")
            try:
                info = await nc.jetstream().stream_info(subjects.stream_name(h.SYSTEM, NS))
                assert info.config.num_replicas == 3, info.config
            finally:
                await nc.close()

            for action in ("kill", "wipe"):
                ran = await asyncio.to_thread(dev, "nats", action, "n1", "--dir", root)
                assert ran.returncode == 0, ran.stderr
            assert json.loads(dev("status", "--dir", root).stdout)["processes"]["nats/n1"] is False
            for i in range(2, 12):  # changes while a node and its store are gone
                await h.configmap(src, NS, "settings", {"v": str(i)})
            await h.eventually(lambda: copy_holds("11"), timeout=60, interval=0.5)
            ran = await asyncio.to_thread(dev, "nats", "start", "n1", "--dir", root)
            assert ran.returncode == 0 and "ready" in ran.stdout, ran.stderr
            assert all(json.loads(dev("status", "--dir", root).stdout)["processes"].values())

            nc = await nats.connect(settings.servers, user=settings.user, tls=streams.tls_context(settings),
                                    password=settings.password.get_secret_value() if settings.password else None)
            try:
                async def caught_up() -> None:
                    info = await nc.jetstream().stream_info(subjects.stream_name(h.SYSTEM, NS))
                    assert info.cluster is not None and all(r.current for r in info.cluster.replicas or [])
                    assert len(info.cluster.replicas or []) == 2, info.cluster
                await h.eventually(caught_up, timeout=60, interval=0.5)
            finally:
                await nc.close()
            ran = await asyncio.to_thread(dev, "nats", "wipe", "n2", "--dir", root)
            assert ran.returncode == 1 and "is running; stop or kill it first" in ran.stderr, ran.stderr
    finally:
        down = await asyncio.to_thread(dev, "down", "--dir", root)
        assert down.returncode == 0, down.stderr
