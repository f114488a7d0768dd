"""The fence the API server enforces (k8s/base/fence/policy.yaml, a ValidatingAdmissionPolicy that
recovery binds to each fenced plan's copies, with the plan's fence ConfigMap as parameter), on a
real API server: once a plan is fenced, no copy of it is written or deleted and no object is turned
back into one, whoever writes, labelled as today or as before the plan label; activation, other
plans' copies and everything else pass. Recovery's proof that it is in force (fencing.enforced) answers
at once, and says no where the policy is not installed."""

from __future__ import annotations

import time
import uuid

import pytest

from schemas import annotations as ann
from services.common import fencing
from services.common.kube import ApiError, KubeClient
from services.devenv.clusters import LocalCluster
from tests.support import env as h

NS = "fence-policy"


def copy(name: str, plan: str, *, labelled: bool = True) -> dict[str, object]:
    """A copy as the syncer writes it (``labelled=False``: as a Standby before the plan label)."""
    labels = {ann.MANAGED: ann.MANAGED_VALUE} | ({ann.PLAN_LABEL: ann.plan_label(plan)} if labelled else {})
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS, "labels": labels,
                         "annotations": {ann.PLAN: plan}}, "data": {"k": "v"}}


def path(name: str) -> str:
    return f"/api/v1/namespaces/{NS}/configmaps/{name}"


async def write(client: KubeClient, name: str, plan: str, *, labelled: bool = True) -> None:
    await client.apply(path(name), copy(name, plan, labelled=labelled), field_manager=ann.FIELD_MANAGER)


async def test_a_fenced_plans_copies_are_refused_by_the_api_server(destination: LocalCluster) -> None:
    plan, other = f"{h.SYSTEM}/fp-{uuid.uuid4().hex[:6]}", f"{h.SYSTEM}/fp-other"
    fence = f"/api/v1/namespaces/{h.SYSTEM}/configmaps/{ann.fence_name(*plan.split('/'))}"
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client:
        await h.namespace(client, NS)
        await write(client, "waiting", plan)  # a copy, before the failover
        await write(client, "activated", plan)
        await write(client, "legacy", plan, labelled=False)  # an earlier Standby's copy
        await write(client, "legacy-other", other, labelled=False)
        assert not await fencing.enforced(client, h.SYSTEM, {plan}, timeout=0.2)

        assert await fencing.write(client, h.SYSTEM, plan, epoch=7, job="j")  # the fence, and the policy bound
        try:
            started = time.monotonic()
            assert await fencing.enforced(client, h.SYSTEM, {plan}, timeout=5)
            print(f"fence in force {1000 * (time.monotonic() - started):.0f} ms after it was written")

            with pytest.raises(ApiError, match=f"plan {plan} has failed over \\(fence epoch 7\\)") as refused:
                await write(client, "new", plan)  # a copy created late
            assert fencing.refused_by_fence(refused.value)
            with pytest.raises(ApiError, match="standby-fence"):
                await write(client, "waiting", plan)  # a copy changed between reading and activating it
            with pytest.raises(ApiError, match="standby-fence"):
                await client.request("DELETE", path("waiting"), parse=False)  # or deleted
            await client.request("PATCH", path("activated"), content_type="application/json-patch+json",
                                 body=[{"op": "remove", "path": "/metadata/labels/dr.standby.dev~1managed"}])
            with pytest.raises(ApiError, match="standby-fence"):
                await write(client, "activated", plan)  # a late change switching it off again
            # Copies written before the plan label existed: refused by the binding shipped for them.
            with pytest.raises(ApiError, match="standby-fence"):
                await write(client, "legacy", plan, labelled=False)
            with pytest.raises(ApiError, match="standby-fence"):
                await client.request("DELETE", path("legacy"), parse=False)
            await write(client, "others", other)  # another plan's copies
            await write(client, "legacy-other", other, labelled=False)
            await client.apply(path("plain"), {"apiVersion": "v1", "kind": "ConfigMap",
                                               "metadata": {"name": "plain", "namespace": NS}},
                               field_manager="anyone")
        finally:
            await client.request("DELETE", fence, parse=False)
            await client.request("DELETE", fencing.binding_path(*plan.split("/")), parse=False)

        async def lifted() -> None:
            try:
                await write(client, "new", plan)
            except ApiError as exc:  # until the policy sees the fence gone
                raise AssertionError(exc) from exc
        await h.eventually(lifted, timeout=10)


async def test_without_the_policy_the_fence_is_not_proven(source: LocalCluster) -> None:
    async with KubeClient.from_kubeconfig(source.kubeconfig) as client:
        started = time.monotonic()
        assert not await fencing.enforced(client, h.SYSTEM, {f"{h.SYSTEM}/any"}, timeout=5)
        assert time.monotonic() - started < 1  # at once: recovery then waits out the settle
