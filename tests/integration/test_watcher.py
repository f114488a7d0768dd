"""The watcher against a real source API server and a real nats-server."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import nats
import pytest

from schemas import api, codec, sanitizing, sealing, subjects
from schemas.envelope import EventType
from services.common import keys, plans, streams
from services.common.keys import StreamKeys
from services.common.kube import KubeClient
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.watcher.publishing import Publisher
from services.watcher.settings import WatcherSettings
from services.watcher.supervisor import Supervisor
from services.watcher.watching import NamespaceLabels, ResourceWatch
from tests.support import env as h
from tests.support.streams import messages, raw_messages

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.fixture
def settings(nats_server: LocalNats, registered: LocalCluster) -> WatcherSettings:
    return WatcherSettings(nats=h.nats_settings(nats_server), plan_resync_seconds=0.3,
                           backoff_initial_seconds=0.1, backoff_max_seconds=1.0)


@pytest.fixture
async def kube(source: LocalCluster, registered: LocalCluster) -> AsyncIterator[tuple[KubeClient, KubeClient]]:
    async with KubeClient.from_kubeconfig(source.kubeconfig) as src, \
            KubeClient.from_kubeconfig(registered.kubeconfig) as dst:
        yield src, dst


@pytest.fixture(autouse=True)
async def fresh_plans(registered: LocalCluster) -> None:
    """Each test sees only its own plans (a watcher runs every plan it finds)."""
    async with KubeClient.from_kubeconfig(registered.kubeconfig) as dst:
        await dst.request("DELETE", f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans")


@pytest.fixture
async def js(nats_server: LocalNats) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_server.url, user=nats_server.user, password=nats_server.password)
    yield nc.jetstream()
    await nc.close()


async def run_watcher(dst: KubeClient, settings: WatcherSettings) -> tuple[Supervisor, Any]:
    nc = await streams.connect(settings.nats, name="test-watcher")
    return Supervisor(dst, nc, settings), nc


async def listed(supervisor: Supervisor, plan: str) -> None:
    """Wait until every watch of ``plan`` has listed (changes after this are seen by the watch)."""
    async def check() -> None:
        runner = supervisor.runners[f"{h.SYSTEM}/{plan}"][1]
        assert runner is not None and runner.watches and all(w.listed.is_set() for w in runner.watches)
    await h.eventually(check, timeout=30)


def by_object(msgs: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for _, subject, env in msgs:
        out.setdefault(subject, []).append(env)
    return out


async def test_changes_of_several_kinds_appear_in_order(kube: Any, js: Any, settings: WatcherSettings) -> None:
    src, dst = kube
    await h.namespace(src, "w-order")
    await src.apply("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com", WIDGET_CRD,
                    field_manager="test")
    await h.apply_plan(dst, h.plan_body("order", [
        {"version": "v1", "resource": "configmaps", "filters": {"namespaces": ["w-order"]}},
        {"group": "example.com", "version": "v1", "resource": "widgets"},
        {"group": "rbac.authorization.k8s.io", "version": "v1", "resource": "clusterroles",
         "filters": {"nameSelector": {"includeRegex": ["^w-order-"]}}},
    ]))
    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        await h.eventually(lambda: _resource_listed(src, "/apis/example.com/v1"), what="CRD served")
        await listed(supervisor, "order")
        cm = await h.configmap(src, "w-order", "app.settings", {"v": "1"})
        cm2 = await h.configmap(src, "w-order", "app.settings", {"v": "2"})
        await src.request("DELETE", "/api/v1/namespaces/w-order/configmaps/app.settings")
        await src.apply("/apis/example.com/v1/namespaces/w-order/widgets/gear", {
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "gear", "namespace": "w-order"},
            "spec": {"size": 3}}, field_manager="test")
        await src.apply("/apis/rbac.authorization.k8s.io/v1/clusterroles/w-order-reader", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "w-order-reader"}, "rules": []}, field_manager="test")
        stream = subjects.stream_name(h.SYSTEM, "order")

        async def check() -> dict[str, list[Any]]:
            got = by_object(await messages(js, stream))
            [cm_subject] = [s for s in got if s.endswith(".configmaps.w-order.app_settings")]
            assert [(e.type, e.source_resource_version) for e in got[cm_subject]] == [
                (EventType.UPSERT, cm["metadata"]["resourceVersion"]),
                (EventType.UPSERT, cm2["metadata"]["resourceVersion"]),
                (EventType.DELETE, got[cm_subject][2].source_resource_version)]
            assert got[cm_subject][1].body["data"] == {"v": "2"}
            assert "resourceVersion" not in got[cm_subject][1].body["metadata"]
            widget = got["standby.standby-system:order.example_com.v1.widgets.w-order.gear"][-1]
            assert widget.body["spec"] == {"size": 3}
            role = got["standby.standby-system:order.rbac_authorization_k8s_io.v1.clusterroles._.w-order-reader"]
            assert role[-1].ref.namespace == ""
            assert not any(s.rsplit(".", 1)[1].startswith("system:") for s in got), "name filter must exclude others"
            return got

        await h.eventually(check, timeout=30)
    await supervisor.stop()
    await nc.close()


async def _resource_listed(src: KubeClient, path: str) -> None:
    assert (await src.get(path))["resources"]


async def test_filters_select_exactly(kube: Any, js: Any, settings: WatcherSettings) -> None:
    src, dst = kube
    await h.namespace(src, "f-in", {"dr": "on"})
    await h.namespace(src, "f-out", {"dr": "off"})
    await h.apply_plan(dst, h.plan_body("filters", [{"version": "v1", "resource": "configmaps", "filters": {
        "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "db"]}]},
        "namespaceSelector": {"matchLabels": {"dr": "on"}},
        "nameSelector": {"excludeRegex": ["-tmp$"]}}}]))
    await h.configmap(src, "f-in", "yes-web", labels={"tier": "web"})
    await h.configmap(src, "f-in", "yes-db", labels={"tier": "db"})
    await h.configmap(src, "f-in", "no-label")
    await h.configmap(src, "f-in", "no-cache", labels={"tier": "cache"})
    await h.configmap(src, "f-in", "no-tmp", labels={"tier": "web"})
    await h.configmap(src, "f-out", "no-ns", labels={"tier": "web"})
    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        await listed(supervisor, "filters")
        await h.configmap(src, "f-in", "yes-later", labels={"tier": "web"})

        async def check() -> None:
            got = by_object(await messages(js, subjects.stream_name(h.SYSTEM, "filters")))
            names = sorted(s.rsplit(".", 1)[1] for s in got)
            assert names == ["yes-db", "yes-later", "yes-web"]
        await h.eventually(check)
    await supervisor.stop()
    await nc.close()


async def test_named_namespaces_are_watched_one_by_one_and_one_dropped_leaves_protection(
        kube: Any, js: Any, settings: WatcherSettings) -> None:
    src, dst = kube
    for ns in ("scope-a", "scope-b", "scope-c"):
        await h.namespace(src, ns)
        await h.configmap(src, ns, "cm")
    body = h.plan_body("scoped", [{"version": "v1", "resource": "configmaps",
                                   "filters": {"namespaces": ["scope-a", "scope-b"]}}])
    await h.apply_plan(dst, body)
    stream = subjects.stream_name(h.SYSTEM, "scoped")
    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        await listed(supervisor, "scoped")
        runner = supervisor.runners[f"{h.SYSTEM}/scoped"][1]
        assert runner is not None and sorted(w.scope for w in runner.watches) == ["scope-a", "scope-b"]
        await h.configmap(src, "scope-b", "later")
        await h.configmap(src, "scope-c", "later")

        async def published() -> None:
            got = by_object(await messages(js, stream))
            assert sorted(s.split(".", 5)[5] for s in got) == ["scope-a.cm", "scope-b.cm", "scope-b.later"]
        await h.eventually(published)

        body["spec"]["resources"][0]["filters"]["namespaces"] = ["scope-a"]
        await h.apply_plan(dst, body)

        async def dropped() -> None:
            got = by_object(await messages(js, stream))
            last = {s.split(".", 5)[5]: envs[-1].type for s, envs in got.items()}
            assert last == {"scope-a.cm": EventType.UPSERT, "scope-b.cm": EventType.DELETE,
                            "scope-b.later": EventType.DELETE}
        await h.eventually(dropped)
        await asyncio.sleep(1)  # and nothing else follows
        await dropped()
    await supervisor.stop()
    await nc.close()


async def test_restart_publishes_exactly_the_missed_changes(kube: Any, js: Any, settings: WatcherSettings) -> None:
    src, dst = kube
    await h.namespace(src, "w-restart")
    await asyncio.gather(*(h.configmap(src, "w-restart", f"old-{i}") for i in range(100)))
    await h.apply_plan(dst, h.plan_body("restart", [{"version": "v1", "resource": "configmaps",
                                                     "filters": {"namespaces": ["w-restart"]}}]))
    stream = subjects.stream_name(h.SYSTEM, "restart")
    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        async def all_published() -> None:
            assert len(await messages(js, stream)) == 100
        await h.eventually(all_published)
    await supervisor.stop()
    await nc.close()
    before = len(await messages(js, stream))

    await asyncio.gather(*(src.request("DELETE", f"/api/v1/namespaces/w-restart/configmaps/old-{i}")
                           for i in range(50)))
    await asyncio.gather(*(h.configmap(src, "w-restart", f"new-{i}") for i in range(50)))

    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        async def caught_up() -> list[Any]:
            new = (await messages(js, stream))[before:]
            assert len(new) == 100
            return new
        new = await h.eventually(caught_up)
        await asyncio.sleep(1)  # nothing more may follow
        assert len(await messages(js, stream)) == before + 100
    await supervisor.stop()
    await nc.close()
    tombstones = sorted(s.rsplit(".", 1)[1] for _, s, e in new if e.type is EventType.DELETE)
    upserts = sorted(s.rsplit(".", 1)[1] for _, s, e in new if e.type is EventType.UPSERT)
    assert tombstones == sorted(f"old-{i}" for i in range(50))
    assert upserts == sorted(f"new-{i}" for i in range(50))


async def one_watch(kube: Any, settings: WatcherSettings, plan_name: str,
                    ns: str) -> tuple[Any, Any, Publisher, Callable[[], ResourceWatch]]:
    """A plan of ``ns``'s ConfigMaps, its stream and publisher, and a way to make its watch (after
    the test has changed what it needs to): (connection, stream info, publisher, make the watch)."""
    src, dst = kube
    await h.apply_plan(dst, h.plan_body(plan_name, [{"version": "v1", "resource": "configmaps",
                                                     "filters": {"namespaces": [ns]}}]))
    plan = plans.parse_plan(await dst.get(f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans/"
                                          f"{plan_name}"))
    nc = await streams.connect(settings.nats, name="test")
    jsc = nc.jetstream()
    info = await streams.ensure_stream(jsc, settings.nats, h.SYSTEM, plan_name, api.History())
    publisher = Publisher(jsc, stream=info.config.name or "", window=100,
                          keys=StreamKeys(dst, h.SYSTEM, settings.nats.stream_keys_secret),
                          max_payload_bytes=1 << 20, compress_over_bytes=1 << 16)
    return nc, info, publisher, lambda: ResourceWatch(plan, plan.spec.resources[0], src, jsc, publisher, settings,
                                                      NamespaceLabels(src))


async def test_gone_leads_to_relist_and_no_lost_change(source: LocalCluster, kube: Any, js: Any,
                                                       settings: WatcherSettings) -> None:
    src, _ = kube
    await h.namespace(src, "w-gone")
    nc, info, _, make_watch = await one_watch(kube, settings, "gone", "w-gone")
    watch = make_watch()
    stale_rv = (await src.get("/api/v1/namespaces/w-gone/configmaps"))["metadata"]["resourceVersion"]
    for i in range(5):
        await h.configmap(src, "w-gone", f"c{i}")
    source.compact_etcd()

    real_relist, reasons = watch.relist, []

    async def relist(reason: str) -> str:
        reasons.append(reason)
        rv = await real_relist(reason)
        return stale_rv if len(reasons) == 1 else rv  # the first watch starts from an expired version

    watch.relist = relist  # type: ignore[method-assign]
    async with h.running(watch.run(), "watch"):
        await h.eventually(lambda: _assert(reasons == ["start", "gone"]), timeout=20)
        await h.configmap(src, "w-gone", "after")

        async def check() -> None:
            names = {s.rsplit(".", 1)[1] for _, s, _ in await messages(js, info.config.name or "")}
            assert names == {"c0", "c1", "c2", "c3", "c4", "after"}
        await h.eventually(check)
    await nc.close()


async def test_a_lost_acknowledgement_is_published_again_without_waiting_for_another_change(
        kube: Any, js: Any, settings: WatcherSettings) -> None:
    """The broker never acknowledged a change (a cluster in the middle of an election, a route not
    up yet): the watch re-lists at once and publishes it again, instead of waiting for the next
    event of that resource, which may never come."""
    src, _ = kube
    await h.namespace(src, "w-lost")
    await h.configmap(src, "w-lost", "quiet")
    nc, info, publisher, make_watch = await one_watch(kube, settings, "lost", "w-lost")
    real_publish, calls = publisher.publish, []

    async def first_one_lost(env: Any, *, subject: str, on_failure: Any, on_ack: Any = None) -> bool:
        calls.append(subject)
        if len(calls) == 1:  # sent, and no acknowledgement ever came
            asyncio.get_running_loop().call_later(0.2, on_failure, TimeoutError("no acknowledgement"))
            return True
        return await real_publish(env, subject=subject, on_failure=on_failure, on_ack=on_ack)

    publisher.publish = first_one_lost  # type: ignore[method-assign]
    watch = make_watch()
    async with h.running(watch.run(), "watch"):
        async def published() -> None:
            names = {s.rsplit(".", 1)[1] for _, s, _ in await messages(js, info.config.name or "")}
            assert names == {"quiet"}
        await h.eventually(published, timeout=10)
    assert len(calls) == 2
    await nc.close()


async def _assert(ok: bool) -> None:
    assert ok


async def test_forbidden_or_unreachable_source_publishes_no_tombstone(
        source: LocalCluster, kube: Any, js: Any, settings: WatcherSettings) -> None:
    src, dst = kube
    await h.namespace(src, "w-rbac")
    for i in range(5):
        await h.configmap(src, "w-rbac", f"c{i}")
    await h.apply_plan(dst, h.plan_body("rbac", [{"version": "v1", "resource": "configmaps",
                                                  "filters": {"namespaces": ["w-rbac"]}}]))
    stream = subjects.stream_name(h.SYSTEM, "rbac")
    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        await h.eventually(lambda: _count(js, stream, 5))
    await supervisor.stop()
    await nc.close()

    binding = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/standby-reader"
    saved = await src.get(binding)
    await src.request("DELETE", binding)
    try:
        supervisor, nc = await run_watcher(dst, settings)
        async with h.running(supervisor.run(), "watcher"):
            await asyncio.sleep(3)  # several failed LISTs (403) with backoff
            reader = supervisor.runners["standby-system/rbac"][1]
            assert reader is not None and not reader.watches[0].listed.is_set()
        await supervisor.stop()
        await nc.close()
    finally:
        saved["metadata"] = {"name": "standby-reader"}
        await src.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body=saved)
    msgs = await messages(js, stream)
    assert [e.type for _, _, e in msgs] == [EventType.UPSERT] * 5

    # An unreachable source: a ManagedCluster pointing at a closed port.
    import base64

    import yaml
    config = yaml.safe_load(source.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    await dst.apply(f"/api/v1/namespaces/{h.SYSTEM}/secrets/dead-kubeconfig", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dead-kubeconfig", "namespace": h.SYSTEM},
        "data": {"kubeconfig.yaml": base64.b64encode(yaml.safe_dump(config).encode()).decode()}}, field_manager="t")
    await dst.apply(f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/managedclusters/dead", {
        "apiVersion": "dr.standby.dev/v1alpha1", "kind": "ManagedCluster",
        "metadata": {"name": "dead", "namespace": h.SYSTEM},
        "spec": {"secretRef": {"name": "dead-kubeconfig", "namespace": h.SYSTEM}}}, field_manager="t")
    body = h.plan_body("rbac", [{"version": "v1", "resource": "configmaps", "filters": {"namespaces": ["w-rbac"]}}])
    body["spec"]["sourceClusterRef"]["name"] = "dead"
    await h.apply_plan(dst, body)
    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        async def degraded() -> None:
            plan = await dst.get(f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans/rbac")
            status = plan["status"]
            cond = {c["type"]: c for c in status["conditions"]}["SourceReachable"]
            assert cond["status"] == "False" and cond["reason"] == "Unreachable"
        await h.eventually(degraded)
    await supervisor.stop()
    await nc.close()
    assert [e.type for _, _, e in await messages(js, stream)] == [EventType.UPSERT] * 5


async def _count(js: Any, stream: str, n: int) -> None:
    assert len(await messages(js, stream)) == n


async def test_suspend_stops_publishing_and_resume_catches_up(kube: Any, js: Any, settings: WatcherSettings) -> None:
    src, dst = kube
    await h.namespace(src, "w-suspend")
    body = h.plan_body("suspend", [{"version": "v1", "resource": "configmaps",
                                    "filters": {"namespaces": ["w-suspend"]}}])
    await h.apply_plan(dst, body)
    stream = subjects.stream_name(h.SYSTEM, "suspend")
    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        await listed(supervisor, "suspend")
        await h.configmap(src, "w-suspend", "before")
        await h.eventually(lambda: _count(js, stream, 1))
        body["spec"]["suspend"] = True
        await h.apply_plan(dst, body)
        await h.eventually(lambda: _assert(supervisor.runners["standby-system/suspend"][1] is None))
        await h.configmap(src, "w-suspend", "during")
        await asyncio.sleep(1.5)
        assert len(await messages(js, stream)) == 1
        body["spec"]["suspend"] = False
        await h.apply_plan(dst, body)
        await h.eventually(lambda: _count(js, stream, 2))
    await supervisor.stop()
    await nc.close()


async def test_invalid_regex_is_a_condition_not_a_crash(kube: Any, js: Any, settings: WatcherSettings) -> None:
    src, dst = kube
    await h.apply_plan(dst, h.plan_body("badregex", [{"version": "v1", "resource": "configmaps",
                                                      "filters": {"nameSelector": {"includeRegex": ["("]}}}]))
    await h.apply_plan(dst, h.plan_body("goodregex", [{"version": "v1", "resource": "configmaps",
                                                       "filters": {"namespaces": ["w-good"]}}]))
    await h.namespace(src, "w-good")
    await h.configmap(src, "w-good", "fine")
    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        async def reported() -> None:
            plan = await dst.get(f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans/badregex")
            cond = {c["type"]: c for c in plan["status"]["conditions"]}["Valid"]
            assert cond["status"] == "False" and "does not compile" in cond["message"]
        await h.eventually(reported)
        await h.eventually(lambda: _count(js, subjects.stream_name(h.SYSTEM, "goodregex"), 1))
    await supervisor.stop()
    await nc.close()


async def test_secrets_are_sealed_and_wait_for_the_stream_keys(kube: Any, js: Any, settings: WatcherSettings,
                                                                registered: LocalCluster) -> None:
    """No stream keys: ConfigMaps flow, the Secret is held back (never published in clear); once the
    keys Secret exists, the Secret is published sealed, and only those keys open it."""
    src, dst = kube
    await h.namespace(src, "w-sealed")
    await h.configmap(src, "w-sealed", "settings", {"mode": "blue"})
    await src.apply("/api/v1/namespaces/w-sealed/secrets/db", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "w-sealed"},
        "stringData": {"password": "correct-horse"}}, field_manager="test")
    await h.apply_plan(dst, h.plan_body("sealed", [
        {"version": "v1", "resource": resource, "filters": {"namespaces": ["w-sealed"]}}
        for resource in ("configmaps", "secrets")]))
    keys_secret = "w-sealed-stream-keys"
    await h.delete(dst, f"/api/v1/namespaces/{h.SYSTEM}/secrets/{keys_secret}")
    settings = settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"stream_keys_secret": keys_secret})})
    stream = subjects.stream_name(h.SYSTEM, "sealed")
    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        async def configmap_published() -> None:
            assert [s for _, s, _ in await raw_messages(js, stream) if ".configmaps." in s]
        await h.eventually(configmap_published)
        await asyncio.sleep(1.5)  # several relist attempts of the secrets watch meanwhile
        assert not [s for _, s, _ in await raw_messages(js, stream) if ".secrets." in s]

        keyring = sealing.Keyring("k1", {"k1": sealing.new_key()})
        body = keys.secret_manifest(keyring, name=keys_secret, namespace=h.SYSTEM)
        await dst.apply(f"/api/v1/namespaces/{h.SYSTEM}/secrets/{keys_secret}", body, field_manager="test")

        async def secret_published() -> bytes:
            sealed = [data for _, s, data in await raw_messages(js, stream) if ".secrets." in s]
            assert sealed
            return sealed[-1]
        data = await h.eventually(secret_published, timeout=30)
    await nc.close()
    assert b"correct-horse" not in data and base64.b64encode(b"correct-horse") not in data
    env = codec.decode(data, keyring=keyring)
    assert env.body is not None and env.body["data"]["password"] == base64.b64encode(b"correct-horse").decode()
    with pytest.raises(sealing.UnknownKeyError):
        codec.decode(data, keyring=sealing.Keyring("k2", {"k2": sealing.new_key()}))


async def test_relabelling_a_namespace_brings_its_objects_in_and_out(kube: Any, js: Any,
                                                                      settings: WatcherSettings) -> None:
    """namespaceSelector follows the namespace's labels as they change, not only at the next LIST:
    objects already in a namespace that gains the label are published, and get tombstones when
    it loses it, without any change to the objects themselves."""
    src, dst = kube
    await h.namespace(src, "relabel", {"dr": "off"})
    await h.configmap(src, "relabel", "settings")
    await h.apply_plan(dst, h.plan_body("relabel", [{"version": "v1", "resource": "configmaps", "filters": {
        "namespaceSelector": {"matchLabels": {"dr": "on"}}}}]))
    stream = subjects.stream_name(h.SYSTEM, "relabel")

    async def states() -> list[str]:
        return [e.type.value for _, s, e in await messages(js, stream) if s.endswith(".relabel.settings")]

    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        await listed(supervisor, "relabel")
        assert await states() == []
        await h.namespace(src, "relabel", {"dr": "on"})

        async def published() -> None:
            assert await states() == ["UPSERT"]
        await h.eventually(published, timeout=15)
        await h.namespace(src, "relabel", {"dr": "off"})

        async def tombstoned() -> None:
            assert await states() == ["UPSERT", "DELETE"]
        await h.eventually(tombstoned, timeout=15)
    await supervisor.stop()
    await nc.close()


async def test_secrets_in_clear_or_under_an_old_key_are_sealed_again_at_relist(
        kube: Any, js: Any, settings: WatcherSettings) -> None:
    """A Secret's state published before sealing (in clear), or sealed under a key that is no longer
    active, is published again at the next LIST, sealed under the active key."""
    src, dst = kube
    await h.namespace(src, "w-reseal")
    source = await src.apply("/api/v1/namespaces/w-reseal/secrets/db", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "w-reseal"},
        "stringData": {"password": "old-release"}}, field_manager="test")
    await h.apply_plan(dst, h.plan_body("reseal", [{"version": "v1", "resource": "secrets",
                                                    "filters": {"namespaces": ["w-reseal"]}}]))
    keys_secret = "w-reseal-stream-keys"
    first = sealing.Keyring("k1", {"k1": sealing.new_key()})
    await dst.apply(f"/api/v1/namespaces/{h.SYSTEM}/secrets/{keys_secret}",
                    keys.secret_manifest(first, name=keys_secret, namespace=h.SYSTEM), field_manager="test")
    settings = settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"stream_keys_secret": keys_secret})})
    await streams.ensure_stream(js, settings.nats, h.SYSTEM, "reseal", api.History())
    stream = subjects.stream_name(h.SYSTEM, "reseal")
    subject = subjects.object_subject(prefix="standby", plan_namespace=h.SYSTEM, plan_name="reseal", group="",
                                      version="v1", resource="secrets", namespace="w-reseal", name="db")
    meta = source["metadata"]
    in_clear = msgpack.packb({  # as a release before sealing published it
        "schema": 1, "type": "UPSERT", "ref": {"group": "", "version": "v1", "resource": "secrets", "kind": "Secret",
                                               "namespace": "w-reseal", "name": "db"},
        "source_uid": meta["uid"], "source_resource_version": meta["resourceVersion"], "observed_at": 0.0,
        "plan_namespace": h.SYSTEM, "plan_name": "reseal", "epoch": 0, "body": {"data": source["data"]}})
    await js.publish(subject, in_clear, stream=stream, headers={
        streams.HDR_TYPE: "UPSERT", streams.HDR_RV: meta["resourceVersion"], streams.HDR_UID: meta["uid"]})

    async def sealed_under(kid: str) -> None:
        last = await js.get_last_msg(stream, subject)
        assert (last.headers or {}).get(streams.HDR_KEY) == kid
        assert b"old-release" not in last.data and source["data"]["password"].encode() not in last.data
        assert codec.decode(last.data, keyring=rotated).body == sanitizing.sanitize(source)

    rotated = sealing.Keyring("k2", {**first.keys, "k2": sealing.new_key()})
    for keyring in (first, rotated):
        await dst.apply(f"/api/v1/namespaces/{h.SYSTEM}/secrets/{keys_secret}",
                        keys.secret_manifest(keyring, name=keys_secret, namespace=h.SYSTEM), field_manager="test")
        supervisor, nc = await run_watcher(dst, settings)  # a watcher (re)started: it LISTs
        async with h.running(supervisor.run(), "watcher"):
            await h.eventually(lambda kid=keyring.active: sealed_under(kid), timeout=15)  # type: ignore[misc]
        await supervisor.stop()
        await nc.close()


async def test_a_key_rotation_seals_the_stream_again_while_the_watcher_runs(
        kube: Any, js: Any, settings: WatcherSettings) -> None:
    """The operator rotates the stream keys (a new active key): within the keys' refresh interval the
    running watcher re-lists and publishes each Secret again under the new key, so the old key can
    be retired without restarting anything. Other kinds are not re-listed."""
    src, dst = kube
    await h.namespace(src, "w-rotate")
    source = await src.apply("/api/v1/namespaces/w-rotate/secrets/db", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "w-rotate"},
        "stringData": {"password": "rotate-me"}}, field_manager="test")
    await h.configmap(src, "w-rotate", "settings")
    keys_secret = "w-rotate-stream-keys"
    first = sealing.Keyring("r1", {"r1": sealing.new_key()})
    rotated = sealing.Keyring("r2", {**first.keys, "r2": sealing.new_key()})
    await dst.apply(f"/api/v1/namespaces/{h.SYSTEM}/secrets/{keys_secret}",
                    keys.secret_manifest(first, name=keys_secret, namespace=h.SYSTEM), field_manager="test")
    settings = settings.model_copy(update={"nats": settings.nats.model_copy(
        update={"stream_keys_secret": keys_secret, "stream_keys_refresh_seconds": 0.5})})
    await h.apply_plan(dst, h.plan_body("rotate", [{"version": "v1", "resource": r,
                                                    "filters": {"namespaces": ["w-rotate"]}}
                                                   for r in ("secrets", "configmaps")]))
    stream = subjects.stream_name(h.SYSTEM, "rotate")
    secret_subject, configmap_subject = (subjects.object_subject(
        prefix="standby", plan_namespace=h.SYSTEM, plan_name="rotate", group="", version="v1", resource=r,
        namespace="w-rotate", name=n) for r, n in (("secrets", "db"), ("configmaps", "settings")))

    async def sealed_under(kid: str) -> None:
        last = await js.get_last_msg(stream, secret_subject)
        assert (last.headers or {}).get(streams.HDR_KEY) == kid
        assert codec.decode(last.data, keyring=rotated).body == sanitizing.sanitize(source)

    supervisor, nc = await run_watcher(dst, settings)
    async with h.running(supervisor.run(), "watcher"):
        await h.eventually(lambda: sealed_under("r1"), timeout=15)
        configmap_seq = (await js.get_last_msg(stream, configmap_subject)).seq
        await dst.apply(f"/api/v1/namespaces/{h.SYSTEM}/secrets/{keys_secret}",
                        keys.secret_manifest(rotated, name=keys_secret, namespace=h.SYSTEM), field_manager="test")
        await h.eventually(lambda: sealed_under("r2"), timeout=15)
        assert (await js.get_last_msg(stream, configmap_subject)).seq == configmap_seq
    await supervisor.stop()
    await nc.close()


async def test_a_new_plan_is_acted_on_at_once_not_at_the_next_resync(
        kube: Any, js: Any, settings: WatcherSettings) -> None:
    """Plans are watched: a plan created while the watcher waits a minute for its next timed
    re-read starts at once."""
    src, dst = kube
    await h.namespace(src, "w-prompt")
    await h.configmap(src, "w-prompt", "cm")
    supervisor, nc = await run_watcher(dst, settings.model_copy(update={"plan_resync_seconds": 60.0}))
    async with h.running(supervisor.run(), "watcher"):
        await asyncio.sleep(1.0)  # the first pass is over; the next timed one is a minute away
        await h.apply_plan(dst, h.plan_body("prompt", [{"version": "v1", "resource": "configmaps",
                                                        "filters": {"namespaces": ["w-prompt"]}}]))
        subject = subjects.object_subject(prefix="standby", plan_namespace=h.SYSTEM, plan_name="prompt", group="",
                                          version="v1", resource="configmaps", namespace="w-prompt", name="cm")
        await h.eventually(lambda: js.get_last_msg(subjects.stream_name(h.SYSTEM, "prompt"), subject), timeout=10)
    await supervisor.stop()
    await nc.close()


async def test_a_scheduled_relist_publishes_what_the_stream_lost_and_nothing_else(
        kube: Any, js: Any, settings: WatcherSettings) -> None:
    """A missed watch event cannot stay missed: with the last state of one object gone from the
    stream (as if its event had never been published), the next scheduled LIST publishes it
    again, and only it."""
    src, dst = kube
    await h.namespace(src, "w-relist")
    await asyncio.gather(*(h.configmap(src, "w-relist", f"cm-{i}") for i in range(20)))
    await h.apply_plan(dst, h.plan_body("relist", [{"version": "v1", "resource": "configmaps",
                                                    "filters": {"namespaces": ["w-relist"]}}]))
    stream = subjects.stream_name(h.SYSTEM, "relist")
    # A short duplicate window: the republished state has the message id of the purged one.
    nats_settings = settings.nats.model_copy(update={"duplicate_window_seconds": 1.0})
    supervisor, nc = await run_watcher(dst, settings.model_copy(update={"relist_seconds": 3.0, "nats": nats_settings}))
    async with h.running(supervisor.run(), "watcher"):
        async def all_published() -> list[Any]:
            msgs = await messages(js, stream)
            assert len(msgs) == 20
            return msgs
        msgs = await h.eventually(all_published)
        lost = next(subject for _, subject, _ in msgs if subject.endswith(".cm-7"))
        await js.purge_stream(stream, subject=lost)
        assert len(await messages(js, stream)) == 19

        async def published_again() -> None:
            assert lost in {subject for _, subject, _ in await messages(js, stream)}
        await h.eventually(published_again, timeout=15)
        await asyncio.sleep(3.5)  # one more scheduled LIST: nothing differs, nothing is published
        assert len(await messages(js, stream)) == 20
    await supervisor.stop()
    await nc.close()
