"""Kubeconfigs for a ServiceAccount, and the ManagedCluster that uses one.

How a platform team registers a cluster with Standby (``standby managed-cluster``): apply the
shipped RBAC for the cluster's role (``k8s/source/reader.yaml``: read-only; ``k8s/destination/
writer.yaml``: what the syncer writes in a stand-by it does not run in), mint a token for that
ServiceAccount with the TokenRequest API (bounded lifetime; the ManagedCluster turns not Ready with
reason ``Unauthorized`` when it has expired, and running the command again rotates it), and put a
kubeconfig holding it into a Secret next to a ManagedCluster on the sync side."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import yaml

from schemas import API_VERSION
from services.common.kube import ApiError, KubeClient

KUBECONFIG_KEY = "kubeconfig.yaml"


class MintError(Exception):
    """A token could not be minted (the ServiceAccount is missing, the caller may not)."""


async def mint_token(client: KubeClient, namespace: str, service_account: str, *,
                     seconds: int) -> tuple[str, datetime.datetime]:
    """A token for ``namespace/service_account`` valid ``seconds`` (the API server may shorten
    it: its ``--service-account-max-token-expiration``), and when it expires."""
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds}}
    try:
        status = (await client.request("POST", path, body=body))["status"]
    except ApiError as exc:
        if exc.not_found:
            raise MintError(f"serviceaccount {namespace}/{service_account} not found in {client.creds.server}: "
                            "apply its RBAC first (k8s/source/reader.yaml, k8s/destination/writer.yaml)") from exc
        raise MintError(f"cannot create serviceaccounts/token for {namespace}/{service_account} in "
                        f"{client.creds.server}: {exc.status} {exc.reason}: {exc.message}") from exc
    expires = datetime.datetime.fromisoformat(status["expirationTimestamp"].replace("Z", "+00:00"))
    return status["token"], expires


def for_token(name: str, *, server: str, ca_pem: bytes | None, token: str, namespace: str = "default",
              insecure: bool = False) -> dict[str, Any]:
    """A one-context kubeconfig named ``name`` with a bearer token."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
    }


def managed_cluster(name: str, kubeconfig: dict[str, Any], *, namespace: str,
                    annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The Secret holding ``kubeconfig`` and the ManagedCluster ``name`` referring to it."""
    secret = f"{name}-kubeconfig"
    labels = {"app.kubernetes.io/part-of": "standby"}
    text = yaml.safe_dump(kubeconfig, sort_keys=False)
    return [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": secret, "namespace": namespace, "labels": labels, "annotations": annotations or {}},
         "data": {KUBECONFIG_KEY: base64.b64encode(text.encode()).decode()}},
        {"apiVersion": API_VERSION, "kind": "ManagedCluster",
         "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "spec": {"secretRef": {"name": secret, "namespace": namespace}}},
    ]
