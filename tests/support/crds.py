"""Third-party CRDs as real applications ship them (Argo CD's argoproj.io kinds), minimal schemas."""

from __future__ import annotations

from typing import Any

from services.common.kube import ApiError, KubeClient
from tests.support import env as h

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ARGO = "/apis/argoproj.io/v1alpha1"


def argo_crd(plural: str, kind: str) -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.argoproj.io"},
            "spec": {"group": "argoproj.io", "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                     "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {"spec": {"type": "object",
                                                                   "x-kubernetes-preserve-unknown-fields": True}}}}}]}}


async def install_argo(plural: str, kind: str, *clients: KubeClient) -> None:
    for client in clients:
        await client.apply(f"{CRDS}/{plural}.argoproj.io", argo_crd(plural, kind), field_manager="test")
        await h.eventually(lambda c=client: c.get(f"{ARGO}/namespaces/default/{plural}"))  # type: ignore[misc]


async def remove_argo(plural: str, *clients: KubeClient) -> None:
    """Release what finalizers still hold (no Argo CD runs here), then delete the CRD."""
    for client in clients:
        try:
            listed = await client.get(f"{ARGO}/{plural}")
        except ApiError:  # not installed
            continue
        for item in listed.get("items") or []:
            meta = item["metadata"]
            if meta.get("finalizers"):
                await client.request("PATCH", f"{ARGO}/namespaces/{meta['namespace']}/{plural}/{meta['name']}",
                                     body={"metadata": {"finalizers": None}},
                                     content_type="application/merge-patch+json")
        await h.delete(client, f"{CRDS}/{plural}.argoproj.io")
