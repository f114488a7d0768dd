"""Never stop protecting silently: what the pipeline does, and what the plan says, when something it
depends on fails (issue 13)."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

import prometheus_client
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from services.devenv import bootstrap
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.devenv.toxiproxy import LocalToxiproxy
from tests.e2e.conftest import Pipeline, pipeline
from tests.support import crds
from tests.support import env as h

RULES = Path(__file__).resolve().parents[2] / "k8s" / "monitoring" / "rules.yaml"

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def fence_unknown(plan: str) -> float:
    return REGISTRY.get_sample_value("standby_syncer_fence_unknown_total", {"plan": f"{h.SYSTEM}/{plan}"}) or 0.0


def role(cluster: LocalCluster, namespace: str, name: str, sa: str, rules: list[dict[str, Any]]) -> None:
    base = f"{RBAC}/namespaces/{namespace}"
    bootstrap.apply(cluster, f"{base}/roles/{name}", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": namespace}, "rules": rules})
    bootstrap.apply(cluster, f"{base}/rolebindings/{name}", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": h.SYSTEM}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}})


async def test_no_copy_is_written_while_the_fences_cannot_be_read(pipe: Pipeline, registered: LocalCluster) -> None:
    """The syncer may still write copies but no longer list the fences: it writes nothing for the
    plan, says so, and catches up once it can read them again."""
    ns, sa = "fenceless", "fenceless-syncer"
    await h.namespace(pipe.src, ns)
    await h.namespace(pipe.dst, ns)
    writer = registered.mint_credentials(sa, namespace=h.SYSTEM, cluster_scoped=True, rules=[
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch", "delete"]}])
    role(registered, ns, "fenceless-list", sa, [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    role(registered, h.SYSTEM, "fenceless-fences", sa,
         [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    bootstrap.register_cluster(registered, "fenceless", writer)
    await h.configmap(pipe.src, ns, "app", {"v": "1"})
    await h.apply_plan(pipe.dst, h.plan_body(ns, [{"version": "v1", "resource": "configmaps",
                                                   "filters": {"namespaces": [ns]}}],
                                             destinationClusterRef={"name": "fenceless", "namespace": h.SYSTEM}))
    copy = f"/api/v1/namespaces/{ns}/configmaps/app"

    async def copied(value: str) -> None:
        assert (await pipe.dst.get(copy))["data"] == {"v": value}
    await h.eventually(lambda: copied("1"))

    held_before = fence_unknown(ns)
    await h.delete(pipe.dst, f"{RBAC}/namespaces/{h.SYSTEM}/rolebindings/fenceless-fences")

    async def fence_unknown_shown() -> None:
        s = await h.plan_status(pipe.dst, ns)
        assert h.condition(s, "Degraded").get("reason") == "FenceUnknown", s
    await h.eventually(fence_unknown_shown, timeout=20)
    await h.configmap(pipe.src, ns, "app", {"v": "2"})
    await h.eventually(lambda: _more(fence_unknown(ns), held_before), timeout=20)
    await asyncio.sleep(3)  # long enough for the change to have been applied, were it allowed
    await copied("1")

    async def behind() -> None:  # the held change ages in the status; it does not read "in step"
        s = await h.plan_status(pipe.dst, ns)
        assert s["pendingChangeAgeSeconds"] >= 2 and h.condition(s, "Synced").get("status") == "False", s
    await h.eventually(behind, timeout=10)

    role(registered, h.SYSTEM, "fenceless-fences", sa,
         [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    await h.eventually(lambda: copied("2"), timeout=30)

    async def healthy() -> None:
        assert h.condition(await h.plan_status(pipe.dst, ns), "Degraded").get("status") == "False"
    await h.eventually(healthy, timeout=20)


async def _more(now: float, before: float) -> None:
    assert now > before


async def test_objects_up_to_the_api_servers_limits_flow_through_list_watch_stream_and_apply(pipe: Pipeline) -> None:
    """A 1 MB ConfigMap and a 700 KB Secret, created and changed after the watch started: before,
    the first watch event over aiohttp's line limit ended the watch of that resource for good."""
    ns = "large"
    await h.namespace(pipe.src, ns)
    resources = [{"version": "v1", "resource": r, "filters": {"namespaces": [ns]}} for r in ("configmaps", "secrets")]
    await h.apply_plan(pipe.dst, h.plan_body(ns, resources, forceNamespaceCreation=True))
    await h.configmap(pipe.src, ns, "small-before")
    await h.eventually(lambda: pipe.dst.get(f"/api/v1/namespaces/{ns}/configmaps/small-before"))

    big = os.urandom(500_000).hex()  # 1,000,000 characters: incompressible, as real payloads often are
    await h.configmap(pipe.src, ns, "big", {"blob": big})
    secret = base64.b64encode(os.urandom(700_000)).decode()
    await pipe.src.apply(f"/api/v1/namespaces/{ns}/secrets/big", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big", "namespace": ns},
        "data": {"blob": secret}}, field_manager="test")

    async def copied(value: str) -> None:
        assert (await pipe.dst.get(f"/api/v1/namespaces/{ns}/configmaps/big"))["data"]["blob"] == value
        assert (await pipe.dst.get(f"/api/v1/namespaces/{ns}/secrets/big"))["data"]["blob"] == secret
    await h.eventually(lambda: copied(big), timeout=60)

    changed = big[::-1]  # changed after the watch started: the watch is still alive
    await h.configmap(pipe.src, ns, "big", {"blob": changed})
    await h.configmap(pipe.src, ns, "small-after")
    await h.eventually(lambda: copied(changed), timeout=60)
    await h.eventually(lambda: pipe.dst.get(f"/api/v1/namespaces/{ns}/configmaps/small-after"))


async def plan_events(p: Pipeline, plan: str) -> list[tuple[str, str]]:
    listed = await p.dst.get(f"/api/v1/namespaces/{h.SYSTEM}/events",
                             fieldSelector=f"involvedObject.name={plan},involvedObject.kind=RecoveryPlan")
    return [(e["reason"], e["message"]) for e in listed.get("items") or []]


async def test_a_kind_served_after_the_plan_started_is_watched_within_seconds(pipe: Pipeline) -> None:
    """The reproduction of issue 13: Argo CD's applications CRD first, the plan resolves the group,
    then the other two CRDs (an operator upgrade adding kinds to its group). Before, the AppProject
    was never copied while the plan read Synced."""
    ns, plan = "argocd", "argo"
    try:
        await crds.install_argo("applications", "Application", pipe.src, pipe.dst)
        await h.namespace(pipe.src, ns)
        await h.namespace(pipe.dst, ns)
        await h.apply_plan(pipe.dst, h.plan_body(plan, [
            {"group": "argoproj.io", "version": "v1alpha1", "resource": r, "filters": {"namespaces": [ns]}}
            for r in ("applications", "applicationsets", "appprojects")]))
        await pipe.src.apply(f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/applications/guestbook", {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "guestbook", "namespace": ns}, "spec": {"project": "default"}}, field_manager="test")
        await h.eventually(lambda: pipe.dst.get(f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/applications/guestbook"))

        async def not_watched_shown() -> None:
            c = h.condition(await h.plan_status(pipe.dst, plan), "ResourcesWatched")
            assert c.get("status") == "False" and c.get("reason") == "NotServed", c
            assert "appprojects.argoproj.io" in c["message"] and "applicationsets.argoproj.io" in c["message"], c
            reasons = [reason for reason, message in await plan_events(pipe, plan) if "appprojects" in message]
            assert "ResourceNotWatched" in reasons
        await h.eventually(not_watched_shown, timeout=20)

        await crds.install_argo("applicationsets", "ApplicationSet", pipe.src, pipe.dst)
        await crds.install_argo("appprojects", "AppProject", pipe.src, pipe.dst)
        await pipe.src.apply(f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/appprojects/team", {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
            "metadata": {"name": "team", "namespace": ns}, "spec": {"description": "x"}}, field_manager="test")
        await h.eventually(lambda: pipe.dst.get(f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/appprojects/team"),
                           timeout=15)

        async def all_watched() -> None:
            c = h.condition(await h.plan_status(pipe.dst, plan), "ResourcesWatched")
            assert c.get("status") == "True", c
        await h.eventually(all_watched, timeout=20)
    finally:
        for plural in ("applications", "applicationsets", "appprojects"):
            await crds.remove_argo(plural, pipe.src, pipe.dst)


async def test_a_broker_outage_is_shown_while_it_lasts_and_nothing_is_lost(
        source: LocalCluster, registered: LocalCluster, tmp_path: Path) -> None:
    """kill -9 of the broker under a stream of source changes: the plan stops claiming "in sync"
    within seconds, and every change arrives once the broker is back."""
    broker = LocalNats(tmp_path).start()
    ns = "brokerdown"
    try:
        async with pipeline(source, registered, broker) as p:
            await h.protect_configmaps(p.src, p.dst, ns)
            await h.configmap(p.src, ns, "before")
            await h.eventually(lambda: p.dst.get(f"/api/v1/namespaces/{ns}/configmaps/before"))
            broker.kill()
            for i in range(20):
                await h.configmap(p.src, ns, f"during-{i}")

            async def outage_shown() -> None:
                s = await h.plan_status(p.dst, ns)
                assert h.condition(s, "StreamReachable").get("status") == "False", s
                assert h.condition(s, "Synced").get("status") == "Unknown", s
                assert "objectsOutOfSync" not in s and "pendingChangeAgeSeconds" not in s, s
                assert s["phase"] == "Degraded", s
            await h.eventually(outage_shown, timeout=20)

            broker.start()

            async def all_arrived() -> None:
                items = (await p.dst.get(f"/api/v1/namespaces/{ns}/configmaps"))["items"]
                names = {i["metadata"]["name"] for i in items}
                assert {f"during-{i}" for i in range(20)} <= names, sorted(names)
            await h.eventually(all_arrived, timeout=60, interval=1)

            async def in_sync_again() -> None:
                s = await h.plan_status(p.dst, ns)
                assert h.condition(s, "Synced").get("status") == "True" and s["phase"] == "Synced", s
                assert s["objectsOutOfSync"] == 0 and s["pendingChangeAgeSeconds"] == 0, s
            await h.eventually(in_sync_again, timeout=30)
    finally:
        broker.stop()


async def test_a_source_outage_is_shown_and_changes_resume_within_seconds_of_its_return(
        source: LocalCluster, registered: LocalCluster, nats_server: LocalNats) -> None:
    """The source API server stopped for 60 s, with the watcher's default backoff (up to 30 s):
    SourceReachable follows reality, and a change made after the return is copied within seconds."""
    ns = "sourcedown"
    async with pipeline(source, registered, nats_server, watcher={"backoff_max_seconds": 30.0}) as p:
        await h.namespace(p.src, ns)
        await h.apply_plan(p.dst, h.plan_body(ns, [{"version": "v1", "resource": "configmaps",
                                                    "filters": {"namespaces": [ns]}}], forceNamespaceCreation=True))
        await h.configmap(p.src, ns, "before")
        await h.eventually(lambda: p.dst.get(f"/api/v1/namespaces/{ns}/configmaps/before"))
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        await asyncio.to_thread(source.stop_apiserver)  # the services in this process go on meanwhile
        try:
            async def lost() -> dict[str, Any]:
                s = await h.plan_status(p.dst, ns)
                assert h.condition(s, "SourceReachable").get("status") == "False", s
                assert "no answer since" in h.condition(s, "SourceReachable")["message"], s
                return s
            heard = (await h.eventually(lost, timeout=15))["sourceLastHeardTime"]
            assert alerting_on_source(ns), "StandbySourceUnreachable's expression holds on the scraped metrics"
            await asyncio.sleep(max(0.0, 60 - (loop.time() - stopped)))
        finally:
            await asyncio.to_thread(source.start_apiserver)
        back = loop.time()
        await h.configmap(p.src, ns, "after")
        await h.eventually(lambda: p.dst.get(f"/api/v1/namespaces/{ns}/configmaps/after"), timeout=30)
        assert loop.time() - back < 10, "changes waited for the watch's backoff"

        async def reachable() -> None:
            s = await h.plan_status(p.dst, ns)
            assert h.condition(s, "SourceReachable").get("status") == "True", s
            assert s["sourceLastHeardTime"] > heard, s  # RFC 3339 in UTC: ordered as text
        await h.eventually(reachable, timeout=15)
        assert not alerting_on_source(ns)
        reasons = [reason for reason, _ in await plan_events(p, ns)]
        assert "SourceLost" in reasons and "SourceBack" in reasons


def alerting_on_source(ns: str) -> bool:
    """The alert rule's expression (`standby_source_reachable == 0`, k8s/monitoring/rules.yaml)
    evaluated on this plan's sample as a scrape of the watcher's /metrics would read it."""
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r.get("alert") == "StandbySourceUnreachable")
    assert rule["expr"] == "standby_source_reachable == 0"
    scraped = prometheus_client.generate_latest(REGISTRY).decode()
    values = [s.value for family in text_string_to_metric_families(scraped) for s in family.samples
              if s.name == "standby_source_reachable" and s.labels.get("plan") == f"{h.SYSTEM}/{ns}"]
    assert len(values) == 1, values
    return values[0] == 0


def sample(name: str, labels: dict[str, str]) -> float:
    return sum(s.value for metric in REGISTRY.collect() for s in metric.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_responses_cut_mid_body_are_retried_and_nothing_is_lost(pipe: Pipeline, registered: LocalCluster,
                                                                       env_root: Path) -> None:
    """A real fault-injection proxy between the syncer and the destination closes every connection
    after 20 kB: responses end mid-body. Before, such an error escaped the worker, which ended
    silently with its message neither acknowledged nor nak'd (found again only after the ack wait)."""
    ns = "cutoff"
    proxy = LocalToxiproxy(env_root / "toxiproxy").start()
    try:
        port = proxy.proxy("destination", registered.server.removeprefix("https://"))
        through = registered.root / "destination-through-proxy.kubeconfig"
        config = yaml.safe_load(registered.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
        through.write_text(yaml.safe_dump(config))
        bootstrap.register_cluster(registered, "cutoff", through)
        await h.namespace(pipe.src, ns)
        await h.namespace(pipe.dst, ns)
        await h.apply_plan(pipe.dst, h.plan_body(ns, [{"version": "v1", "resource": "configmaps",
                                                       "filters": {"namespaces": [ns]}}],
                                                 destinationClusterRef={"name": "cutoff", "namespace": h.SYSTEM}))
        await h.configmap(pipe.src, ns, "big-0", {"blob": "x" * 100_000})
        await h.eventually(lambda: pipe.dst.get(f"/api/v1/namespaces/{ns}/configmaps/big-0"))
        retries, crashes = sample("standby_syncer_applies_total", {"outcome": "retry"}), sample(
            "standby_task_failures_total", {"component": "syncer"})

        proxy.add_toxic("destination", "cut", "limit_data", bytes=20_000)
        for i in range(40):
            await h.configmap(pipe.src, ns, f"cm-{i}", {"v": "x" * 1000})
        await h.delete(pipe.src, f"/api/v1/namespaces/{ns}/configmaps/big-0")  # the delete reads all 100 kB
        await h.eventually(lambda: _more(sample("standby_syncer_applies_total", {"outcome": "retry"}), retries + 5),
                           timeout=30)
        proxy.remove_toxic("destination", "cut")

        async def converged() -> None:
            listed = await pipe.dst.get(f"/api/v1/namespaces/{ns}/configmaps")
            names = {i["metadata"]["name"] for i in listed["items"]}
            assert names >= {f"cm-{i}" for i in range(40)} and "big-0" not in names, sorted(names)
        await h.eventually(converged, timeout=25)  # well within the 30 s ack wait: nothing was left hanging
        assert sample("standby_task_failures_total", {"component": "syncer"}) == crashes
    finally:
        proxy.stop()
