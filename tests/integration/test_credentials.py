"""Credentials as real clusters hand them out, against a real API server: an exec credential plugin
whose tokens expire, and a projected token file that is rotated while the client runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import yaml

from services.common.kube import ApiError, KubeClient
from services.devenv.clusters import LocalCluster

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
