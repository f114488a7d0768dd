"""The local environment is real: API servers with RBAC and etcd, a scheduler and kwok nodes,
JetStream with authentication and durable storage."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.errors import NoServersError

from services.common.kube import ApiError, KubeClient, wait_for
from services.devenv import environment
from services.devenv.clusters import LocalCluster, RequestError
from services.devenv.natsd import LocalNats

REPO = Path(__file__).resolve().parents[2]


async def test_deployment_becomes_available_on_kwok_nodes(destination: LocalCluster) -> None:
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as kube:
        await kube.apply("/api/v1/namespaces/env-check", {"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": "env-check"}}, field_manager="test")
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello", "namespace": "env-check"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "hello"}},
                         "template": {"metadata": {"labels": {"app": "hello"}},
                                      "spec": {"containers": [{"name": "c", "image": "hello:1"}]}}}}
        path = "/apis/apps/v1/namespaces/env-check/deployments/hello"
        await kube.apply(path, body, field_manager="test")

        async def available() -> bool:
            status = (await kube.get(path)).get("status") or {}
            return any(c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions") or []) \
                and status.get("readyReplicas") == 2

        await wait_for(available, timeout=90, what="Deployment Available")
        pods = (await kube.get("/api/v1/namespaces/env-check/pods"))["items"]
        assert len(pods) == 2
        assert all(p["spec"]["nodeName"].startswith("kwok-") for p in pods)
        await kube.request("DELETE", "/api/v1/namespaces/env-check")


def test_restricted_token_is_refused_outside_its_role(source: LocalCluster) -> None:
    kubeconfig = source.mint_credentials(
        "cm-reader", namespace="rbac-check", rules=[{"apiGroups": [""], "resources": ["configmaps"],
                                                      "verbs": ["get", "list", "watch"]}])
    import yaml

    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    assert "items" in source.request("GET", "/api/v1/namespaces/rbac-check/configmaps", token=token)
    for method, path, body in [
        ("GET", "/api/v1/namespaces/rbac-check/secrets", None),
        ("GET", "/api/v1/namespaces/default/configmaps", None),
        ("POST", "/api/v1/namespaces/rbac-check/configmaps", {"metadata": {"name": "x"}}),
    ]:
        with pytest.raises(RequestError) as err:
            source.request(method, path, body, token=token)
        assert err.value.code == 403


async def test_watch_from_compacted_version_is_gone(source: LocalCluster) -> None:
    async with KubeClient.from_kubeconfig(source.kubeconfig) as kube:
        await kube.apply("/api/v1/namespaces/compaction", {"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": "compaction"}}, field_manager="t")
        created = await kube.request("POST", "/api/v1/namespaces/compaction/configmaps",
                                     body={"metadata": {"name": "c0"}})
        old_rv = created["metadata"]["resourceVersion"]
        for i in range(1, 5):
            await kube.request("POST", "/api/v1/namespaces/compaction/configmaps", body={"metadata": {"name": f"c{i}"}})
        source.compact_etcd()
        with pytest.raises(ApiError) as err:
            async for _ in kube.watch("/api/v1/namespaces/compaction/configmaps", resource_version=old_rv,
                                      timeout_seconds=5):
                pass
        assert err.value.gone


async def test_jetstream_requires_credentials(nats_server: LocalNats) -> None:
    nc = await nats.connect(nats_server.url, user=nats_server.user, password=nats_server.password)
    try:
        js = nc.jetstream()
        await js.add_stream(name="ENVCHECK", subjects=["envcheck.>"])
        ack = await js.publish("envcheck.a", b"hello", headers={"Nats-Msg-Id": "m1"})
        dup = await js.publish("envcheck.a", b"hello", headers={"Nats-Msg-Id": "m1"})
        assert dup.seq == ack.seq and dup.duplicate
        sub = await js.pull_subscribe("envcheck.>", durable="reader")
        [msg] = await sub.fetch(1, timeout=5)
        assert msg.data == b"hello"
        await msg.ack()
        await js.delete_stream("ENVCHECK")
    finally:
        await nc.close()
    refused = NatsClient()
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await refused.connect(nats_server.url, user=nats_server.user, password="wrong", max_reconnect_attempts=0,
                              allow_reconnect=False, connect_timeout=2)
    # A refused connection keeps its socket until closed; close it here, not in some later test's GC.
    with contextlib.suppress(Exception):
        await refused.close()
    transport = getattr(refused, "_transport", None)
    if transport is not None:
        transport.close()
        with contextlib.suppress(Exception):
            await transport.wait_closed()
    gc.collect()


async def test_nats_restart_keeps_the_stream(tmp_path: Path) -> None:
    server = LocalNats(tmp_path).start()
    try:
        nc = await nats.connect(server.url, user=server.user, password=server.password)
        js = nc.jetstream()
        await js.add_stream(name="DURABLE", subjects=["durable.>"])
        for i in range(10):
            await js.publish(f"durable.{i}", str(i).encode())
        await nc.close()
        server.restart()
        nc = await nats.connect(server.url, user=server.user, password=server.password)
        info = await nc.jetstream().stream_info("DURABLE")
        assert info.state.messages == 10
        await nc.close()
    finally:
        server.stop()


def test_dev_up_status_down(tmp_path: Path) -> None:
    """The README's main command, as a user runs it."""
    cli = [sys.executable, "-m", "services.cli", "dev"]
    up = subprocess.run([*cli, "up", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=180, cwd=REPO)
    try:
        assert up.returncode == 0, up.stderr
        assert "ready" in up.stdout
        assert (tmp_path / "source.kubeconfig").exists() and (tmp_path / "destination.kubeconfig").exists()
        assert "STANDBY_NATS_URL" in (tmp_path / "env").read_text()
        state = json.loads(subprocess.run([*cli, "status", "--dir", str(tmp_path)], capture_output=True,
                                          text=True, check=True, cwd=REPO).stdout)
        assert state["running"] and all(state["processes"].values())
        dest = LocalCluster("destination", tmp_path)
        recorded = environment.read_state(tmp_path)
        assert recorded is not None
        pids = environment.recorded_pids(recorded)
    finally:
        down = subprocess.run([*cli, "down", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
                              cwd=REPO)
    assert down.returncode == 0
    from services.devenv.processes import pid_alive

    assert not any(pid_alive(pid) for pid in pids.values())
    del dest


async def test_dev_up_again_in_the_same_directory_starts_afresh(tmp_path: Path) -> None:
    """A second `dev up` (or `make demo`) where an earlier one ran and was stopped: new
    clusters, not the old etcd data under new certificates (with --full its nodes made the start fail)."""
    cli = [sys.executable, "-m", "services.cli", "dev"]
    configmaps = "/api/v1/namespaces/default/configmaps"
    for run in range(2):
        up = await asyncio.to_thread(subprocess.run, [*cli, "up", "--dir", str(tmp_path)], capture_output=True,
                                     text=True, timeout=240, cwd=REPO)
        try:
            assert up.returncode == 0, up.stderr[-2000:]
            async with KubeClient.from_kubeconfig(tmp_path / "destination.kubeconfig") as dest:
                names = {cm["metadata"]["name"] for cm in (await dest.get(configmaps))["items"]}
                assert "left-by-the-first-run" not in names
                if run == 0:
                    await dest.request("POST", configmaps, body={"metadata": {"name": "left-by-the-first-run"}})
        finally:
            await asyncio.to_thread(subprocess.run, [*cli, "down", "--dir", str(tmp_path)], capture_output=True,
                                    timeout=60, cwd=REPO)
