"""Finding one plan's copies among many plans' on a real API server: the server sends only the
plan's (selected by the plan label), the copies an earlier Standby wrote without that label are
found too, and two plans whose shortened labels coincide are told apart by the annotation. A
failover's listing hands them over rank by rank, page by page."""

from __future__ import annotations

import uuid

import pytest

from schemas import annotations as ann
from schemas import ordering
from services.common.copies import list_copies
from services.common.kube import KubeClient, ResourceInfo
from services.devenv.clusters import LocalCluster
from services.recovery import activating


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


async def test_a_failover_lists_the_copies_rank_by_rank_as_their_pages_arrive(destination: LocalCluster,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    ns = f"listing-{uuid.uuid4().hex[:6]}"
    plan, other = f"apps/{ns}", f"apps/{ns}-other"  # plans of their own: the cluster holds other tests' copies
    configmaps = ResourceInfo("", "v1", "configmaps", "ConfigMap", True)
    secrets = ResourceInfo("", "v1", "secrets", "Secret", True)
    nothing = ResourceInfo("example.com", "v1", "nothings", "Nothing", True)  # not served: 404, skipped
    objects = [configmap(ns, f"cm-{i}", plan) for i in range(5)] + [configmap(ns, "old", plan, labelled=False),
                                                                 configmap(ns, "theirs", other)]
    secret = {**configmap(ns, "s-1", plan), "kind": "Secret"}
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client:
        await client.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}}, parse=False)
        try:
            for obj in objects:
                await client.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body=obj, parse=False)
            await client.request("POST", f"/api/v1/namespaces/{ns}/secrets", body=secret, parse=False)
            async with activating.Listing(client, {plan}, [nothing, configmaps, secrets], metadata_only=True,
                                          page_size=2, first_page_size=1) as listing:
                secret_rank, configmap_rank = (ordering.rank("", kind) for kind in ("Secret", "ConfigMap"))
                assert listing.ranks == [secret_rank, configmap_rank, ordering.rank("example.com", "Nothing")]
                pages = [page async for page in listing.pages(configmap_rank)]
                assert len(pages) >= 4, "pages of 1 then 2 are handed over one by one"
                assert len(pages[0]) == 1, "the first page of a LIST is of first_page_size"
                names = sorted(t.obj["metadata"]["name"] for page in pages for t in page)
                assert names == ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4", "old"]
                assert all(t.obj["kind"] == "ConfigMap" and t.plan == plan for page in pages for t in page)
                # Each wave takes its pages again; a rank with no copies ends at once.
                assert sum(map(len, [page async for page in listing.pages(configmap_rank)])) == 6
                assert [t.ref async for page in listing.pages(secret_rank) for t in page] == [
                    f"secrets.core/{ns}/s-1"]
                assert [page async for page in listing.pages(ordering.rank("example.com", "Nothing"))] == []
                assert [page async for page in listing.pages(-1)] == []
            assert listing.found == {plan: 7} and listing.first_seconds is not None
            assert 0 < listing.first_seconds <= listing.seconds
            assert "cannot list the copies of /apis/example.com/v1/nothings" in caplog.text
        finally:
            await client.request("DELETE", f"/api/v1/namespaces/{ns}", parse=False)
