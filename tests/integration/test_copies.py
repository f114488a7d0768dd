"""Finding one plan's copies among many plans' on a real API server: the server sends only the
plan's (selected by the plan label), the copies an earlier Standby wrote without that label are
found too, and two plans whose shortened labels coincide are told apart by the annotation."""

from __future__ import annotations

import uuid

from schemas import annotations as ann
from services.common.copies import list_copies
from services.common.kube import KubeClient
from services.devenv.clusters import LocalCluster


def configmap(ns: str, name: str, plan: str, *, labelled: bool = True, managed: bool = True) -> dict[str, object]:
    labels = {ann.MANAGED: ann.MANAGED_VALUE} if managed else {}
    if labelled:
        labels[ann.PLAN_LABEL] = ann.plan_label(plan)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": {ann.PLAN: plan}}}


async def test_one_plans_copies_are_selected_by_the_server(destination: LocalCluster) -> None:
    ns = f"copies-{uuid.uuid4().hex[:6]}"
    collection = f"/api/v1/namespaces/{ns}/configmaps"
    long_a = "team/" + "a" * 54 + "-1"  # the same first 54 characters: one shortened label, two plans
    long_b = "team/" + "a" * 54 + "-2"
    assert ann.plan_label(long_a)[:54] == ann.plan_label(long_b)[:54]
    objects = [configmap(ns, "a-1", "apps/a"), configmap(ns, "a-2", "apps/a"),
               configmap(ns, "a-old", "apps/a", labelled=False),  # an earlier Standby's copy
               configmap(ns, "b-1", "apps/b"), configmap(ns, "b-old", "apps/b", labelled=False),
               configmap(ns, "not-a-copy", "apps/a", managed=False),
               configmap(ns, "long-a", long_a), configmap(ns, "long-b", long_b)]
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client:
        await client.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}}, parse=False)
        try:
            for obj in objects:
                await client.request("POST", collection, body=obj, parse=False)

            def names(items: list[dict[str, object]]) -> set[str]:
                return {i["metadata"]["name"] for i in items}  # type: ignore[index]

            assert names(await list_copies(client, collection, {"apps/a"})) == {"a-1", "a-2", "a-old"}
            assert names(await list_copies(client, collection, {"apps/a", "apps/b"})) == {
                "a-1", "a-2", "a-old", "b-1", "b-old"}
            assert names(await list_copies(client, collection, {long_a})) == {"long-a"}
            assert await list_copies(client, collection, set()) == []
            # What the server sends for plan a: its labelled copies, and the unlabelled ones of any plan.
            by_plan, unlabelled = ann.copies_selectors({"apps/a"})
            assert names((await client.list_all(collection, label_selector=by_plan))[0]) == {"a-1", "a-2"}
            assert names((await client.list_all(collection, label_selector=unlabelled))[0]) == {"a-old", "b-old"}
        finally:
            await client.request("DELETE", f"/api/v1/namespaces/{ns}", parse=False)
