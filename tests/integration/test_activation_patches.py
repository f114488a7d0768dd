"""Activation hands each copy over on a real API server: the object recovery switches on is the one
the recorded operations alone give (for each kind whose deactivation is built in, and with a
plan's fromPatch), without the syncer's record of owning its fields (managedFields), which the
API server then no longer keeps for the writes that follow (the controllers' own)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from schemas import annotations as ann
from schemas import sanitizing, transforms
from services.common.keys import StreamKeys
from services.common.kube import KubeClient, ResourceInfo
from services.devenv.clusters import LocalCluster
from services.recovery import activating
from tests import builders as b
from tests.support import env as h

FROM_PATCH = ({"op": "add", "path": "/metadata/labels/restored~1by", "value": "standby"},
              {"op": "replace", "path": "/spec/replicas", "value": 5})


def harmless_webhook(name: str) -> dict[str, Any]:
    """A webhook configuration whose rules match nothing the other tests write, once switched on."""
    hook = b.webhook(name=name)
    hook["webhooks"][0]["rules"][0]["apiGroups"] = ["activation-patches.example"]
    return hook


CASES = [
    pytest.param(b.deployment, (), id="Deployment"),
    pytest.param(lambda name: b.deployment(name, replicas=None), (), id="Deployment-no-replicas"),
    pytest.param(b.deployment, FROM_PATCH, id="Deployment-fromPatch"),
    pytest.param(b.statefulset, (), id="StatefulSet"),
    pytest.param(b.daemonset, (), id="DaemonSet"),
    pytest.param(lambda name: b.daemonset(name, node_selector={"disk": "ssd"}), (), id="DaemonSet-with-selector"),
    pytest.param(b.cronjob, (), id="CronJob"),
    pytest.param(b.hpa, (), id="HPA"),
    pytest.param(harmless_webhook, (), id="ValidatingWebhookConfiguration"),
]
RESOURCES = {
    "Deployment": ResourceInfo("apps", "v1", "deployments", "Deployment", True),
    "StatefulSet": ResourceInfo("apps", "v1", "statefulsets", "StatefulSet", True),
    "DaemonSet": ResourceInfo("apps", "v1", "daemonsets", "DaemonSet", True),
    "CronJob": ResourceInfo("batch", "v1", "cronjobs", "CronJob", True),
    "HorizontalPodAutoscaler": ResourceInfo("autoscaling", "v2", "horizontalpodautoscalers",
                                            "HorizontalPodAutoscaler", True),
    "ValidatingWebhookConfiguration": ResourceInfo("admissionregistration.k8s.io", "v1",
                                                   "validatingwebhookconfigurations",
                                                   "ValidatingWebhookConfiguration", False),
}


def stored(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server keeps of an object that is the user's, but its name."""
    out = sanitizing.strip_server_fields(obj)
    del out["metadata"]["name"]
    return out


@pytest.mark.parametrize(("build", "from_patch"), CASES)
async def test_activation_hands_the_copy_over(destination: LocalCluster, build: Any,
                                              from_patch: tuple[dict[str, Any], ...]) -> None:
    ns, suffix = "activation-patches", uuid.uuid4().hex[:6]
    provenance = transforms.Provenance(h.SYSTEM, "patches", 1, "uid", "1", from_patch=from_patch)
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client:
        await h.namespace(client, ns)
        paths: list[str] = []
        try:
            copies: dict[str, tuple[ResourceInfo, dict[str, Any]]] = {}
            for name in ("recovered", "by-operations"):
                original = sanitizing.sanitize(build("activated"))  # the same labels and selectors
                original["metadata"]["name"] = f"{name}-{suffix}"
                info = RESOURCES[original["kind"]]
                if info.namespaced:
                    original["metadata"]["namespace"] = ns
                path = info.item(ns if info.namespaced else "", original["metadata"]["name"])
                paths.append(path)
                # Written as the syncer writes a copy: server-side apply under its field manager.
                await client.apply(path, transforms.deactivate(original, provenance), field_manager=ann.FIELD_MANAGER)
                copies[name] = info, await client.get(path)
            assert {m["manager"] for m in copies["recovered"][1]["metadata"]["managedFields"]} == {ann.FIELD_MANAGER}

            info, copy_ = copies["recovered"]
            no_stream = activating.StreamReader(None, "", StreamKeys(client, h.SYSTEM, "unused"))  # no fromOriginal
            result = await activating.activate_one(client, activating.Target(info, copy_), dry_run=False,
                                                   stream=no_stream)
            assert result.outcome == "Activated", result.reason
            _, twin = copies["by-operations"]
            await client.request("PATCH", paths[1], body=transforms.activation_patch(twin),
                                 content_type="application/json-patch+json",
                                 params={"fieldManager": "standby-recovery"}, parse=False)

            recovered, by_operations = await client.get(paths[0]), await client.get(paths[1])
            assert stored(recovered) == stored(by_operations)
            assert "managedFields" not in recovered["metadata"]
            assert by_operations["metadata"]["managedFields"]
            assert not any(ann.is_bookkeeping(k) for k in recovered["metadata"].get("annotations", {}))
            assert not any(ann.is_bookkeeping(k) for k in recovered["metadata"].get("labels", {}))
            if from_patch:
                assert recovered["metadata"]["labels"]["restored/by"] == "standby"
                assert recovered["spec"]["replicas"] == 5
            # A later write (a controller's, a user's) is no longer tracked field by field.
            later = await client.request("PATCH", paths[0], body={"metadata": {"labels": {"later": "yes"}}},
                                         content_type="application/merge-patch+json",
                                         params={"fieldManager": "someone"})
            assert not later["metadata"].get("managedFields")
        finally:
            for path in paths:
                await h.delete(client, path)
