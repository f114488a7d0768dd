"""Credentials and networks as real clusters hand them out, against a real API server: an exec
credential plugin whose tokens expire, a projected token file that is rotated while the client
runs, and an HTTPS proxy (a real one, proxy.py) from the environment or the kubeconfig."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from services.common import kube
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.devenv import ports
from services.devenv.clusters import LocalCluster
from services.devenv.processes import Process

PLUGIN = Path(__file__).resolve().parents[1] / "support" / "exec_plugin.py"
NAMESPACES = [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]


def exec_kubeconfig(cluster: LocalCluster, path: Path, sa: str, **env: str) -> Path:
    variables = {"STANDBY_TEST_SERVER": cluster.server, "STANDBY_TEST_ADMIN_TOKEN": cluster.token,
                 "STANDBY_TEST_CA": str(cluster.pki.ca_cert), "STANDBY_TEST_SA": sa,
                 "STANDBY_TEST_COUNT_FILE": str(path.with_suffix(".count")), **env}
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": cluster.server,
                                               "certificate-authority": str(cluster.pki.ca_cert)}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable, "args": [str(PLUGIN)],
            "env": [{"name": k, "value": v} for k, v in variables.items()], "interactiveMode": "Never"}}}]}))
    return path


def runs(kubeconfig: Path) -> int:
    return int(kubeconfig.with_suffix(".count").read_text())


async def test_an_exec_plugin_token_is_used_until_it_expires_then_asked_for_again(source: LocalCluster,
                                                                                   tmp_path: Path) -> None:
    source.mint_credentials("exec-user", namespace="default", rules=NAMESPACES, cluster_scoped=True)
    config = exec_kubeconfig(source, tmp_path / "exec.kubeconfig", "default/exec-user",
                             STANDBY_TEST_EXPIRES_SECONDS="3")
    async with KubeClient.from_kubeconfig(config) as client:
        await asyncio.gather(*(client.get("/api/v1/namespaces/default") for _ in range(5)))
        assert runs(config) == 1  # one run serves every request until the expiry
        await asyncio.sleep(3.5)
        await client.get("/api/v1/namespaces/default")
        assert runs(config) == 2


async def test_a_refused_plugin_token_is_asked_for_again_once(source: LocalCluster, tmp_path: Path) -> None:
    source.mint_credentials("exec-user", namespace="default", rules=NAMESPACES, cluster_scoped=True)
    config = exec_kubeconfig(source, tmp_path / "bad.kubeconfig", "default/exec-user", STANDBY_TEST_FIRST_BAD="1")
    async with KubeClient.from_kubeconfig(config) as client:
        await client.get("/api/v1/namespaces/default")  # 401 with the first token, then a good one
        assert runs(config) == 2


async def test_a_rotated_token_file_is_read_again(source: LocalCluster, tmp_path: Path) -> None:
    """The file holds a token the API server no longer accepts; the kubelet then writes a new one:
    the same client uses it at its next request, without a restart."""
    source.mint_credentials("file-user", namespace="default", rules=NAMESPACES, cluster_scoped=True)
    token_file = tmp_path / "token"
    token_file.write_text("an-expired-token")
    config = tmp_path / "file.kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": source.server,
                                               "certificate-authority": str(source.pki.ca_cert)}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"tokenFile": str(token_file)}}]}))
    async with KubeClient.from_kubeconfig(config) as client:
        with pytest.raises(ApiError) as refused:
            await client.get("/api/v1/namespaces/default")
        assert refused.value.status == 401
        token_file.write_text(str(source.request("POST", "/api/v1/namespaces/default/serviceaccounts/file-user/token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600}})["status"]["token"]))
        assert (await client.get("/api/v1/namespaces/default"))["metadata"]["name"] == "default"


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP(S) proxy (proxy.py) that alone resolves ``kubernetes.default.svc`` (to the
    loopback): like a corporate proxy in front of a private API endpoint, a client reaches the API
    server by that name only through it."""
    port = ports.free_ports(1)[0]
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost kubernetes.default.svc\n")
    script = (f"mount --bind {hosts} /etc/hosts && exec {sys.executable} -m proxy --hostname 127.0.0.1 "
              f"--port {port} --num-workers 1 --num-acceptors 1 --log-level INFO")
    process = Process("https-proxy", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                      tmp_path / "proxy.log").start()
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline and process.alive(), process.tail()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process.log_path
    finally:
        process.stop()


async def test_an_https_proxy_from_the_environment_or_the_kubeconfig_is_used(
        source: LocalCluster, proxy: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, log = proxy
    private = source.server.replace("127.0.0.1", "kubernetes.default.svc")
    config = yaml.safe_load(source.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = private
    monkeypatch.setenv("HTTPS_PROXY", url)
    async with KubeClient.from_kubeconfig(config) as client:
        assert await client.server_version() == "v1.36.3"  # the name resolves only at the proxy
    await kube.wait_for(lambda: logged(log, f"CONNECT kubernetes.default.svc:{source.api_port}"), timeout=10,
                        what="the proxy's access log line")  # written when the tunnel closes

    monkeypatch.setenv("NO_PROXY", ".svc")  # honoured: the name does not resolve here without the proxy
    async with KubeClient.from_kubeconfig(config) as client:
        with pytest.raises(UnreachableError):
            await client.server_version()

    config["clusters"][0]["cluster"]["proxy-url"] = url  # a kubeconfig's own proxy wins over NO_PROXY
    monkeypatch.delenv("HTTPS_PROXY")
    async with KubeClient.from_kubeconfig(config) as client:
        assert await client.server_version() == "v1.36.3"


async def logged(log: Path, line: str) -> bool:
    return line in await asyncio.to_thread(log.read_text)
