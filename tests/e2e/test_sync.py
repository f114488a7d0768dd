"""Source to stand-by, end to end: real watcher, real syncer, real clusters, real NATS."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from typing import Any

import nats.js.errors
import pytest
from prometheus_client import REGISTRY

from schemas import annotations as ann
from schemas import codec, sealing, subjects, transforms
from schemas.envelope import Envelope, EventType, ObjectReference
from services.common import keys
from services.common.kube import ApiError, KubeClient
from services.devenv import bootstrap
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.devenv.processes import Process
from tests.e2e.conftest import Pipeline, pipeline
from tests.support import app
from tests.support import env as h
from tests.support.streams import raw_messages

DEPLOY = "/apis/apps/v1/namespaces/{ns}/deployments/{name}"


async def create_app(p: Pipeline, ns: str) -> None:
    await h.namespace(p.src, ns, {"dr": "enabled"})
    await p.src.apply(app.CRD_PATH, app.CRD, field_manager="test")
    await h.eventually(lambda: p.src.get(f"/apis/shop.example/v1/namespaces/{ns}/widgets"))
    for path, body in app.manifests(ns):
        body = json.loads(json.dumps(body))
        body["metadata"]["namespace"] = ns
        await p.src.request("POST", path, body=body)


async def test_realistic_application_is_copied_deactivated(pipe: Pipeline) -> None:
    ns = "shop"
    await create_app(pipe, ns)
    await h.apply_plan(pipe.dst, h.plan_body("shop", app.plan_resources([ns]), forceNamespaceCreation=True))

    async def copied() -> None:
        web = await pipe.dst.get(DEPLOY.format(ns=ns, name="web"))
        assert web["spec"]["replicas"] == 0
        assert json.loads(web["metadata"]["annotations"][ann.INVERSE]) == [
            {"op": "replace", "path": "/spec/replicas", "value": 3}]
        db = await pipe.dst.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/db")
        assert db["spec"]["replicas"] == 0
        agent = await pipe.dst.get(f"/apis/apps/v1/namespaces/{ns}/daemonsets/agent")
        assert agent["spec"]["template"]["spec"]["nodeSelector"] == {ann.PARKING_NODE_LABEL: "true"}
        assert (await pipe.dst.get(f"/apis/batch/v1/namespaces/{ns}/cronjobs/report"))["spec"]["suspend"] is True
        assert (await pipe.dst.get(f"/apis/batch/v1/namespaces/{ns}/jobs/migrate"))["spec"]["suspend"] is True
        hpa = await pipe.dst.get(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/web")
        assert hpa["spec"]["scaleTargetRef"]["name"] == "standby-held-web"
        secret = await pipe.dst.get(f"/api/v1/namespaces/{ns}/secrets/db-credentials")
        assert base64.b64decode(secret["data"]["password"]) == b"s3cret"
        for name in ("web", "db", "web-nodeport", "web-lb"):
            await pipe.dst.get(f"/api/v1/namespaces/{ns}/services/{name}")
        for path in (f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/web",
                     f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/deny-all",
                     f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/reader",
                     f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data",
                     f"/api/v1/namespaces/{ns}/serviceaccounts/shop"):
            await pipe.dst.get(path)
        crd = await pipe.dst.get(app.CRD_PATH)
        assert (crd["metadata"].get("labels") or {}).get(ann.MANAGED) == ann.MANAGED_VALUE
        widget = await pipe.dst.get(f"/apis/shop.example/v1/namespaces/{ns}/widgets/blue")
        assert widget["spec"] == {"colour": "blue"}

    await h.eventually(copied, timeout=30)
    # The Secret reached the stand-by through the stream, and its value was never in the stream.
    sealed = [data for _, subject, data in await raw_messages(pipe.js, subjects.stream_name(h.SYSTEM, "shop"))
              if ".secrets." in subject]
    assert sealed and not [d for d in sealed if b"s3cret" in d or base64.b64encode(b"s3cret") in d]
    src_lb = await pipe.src.get(f"/api/v1/namespaces/{ns}/services/web-lb")
    dst_lb = await pipe.dst.get(f"/api/v1/namespaces/{ns}/services/web-lb")
    assert dst_lb["spec"]["type"] == "LoadBalancer"
    assert src_lb["metadata"]["uid"] != dst_lb["metadata"]["uid"]

    async def status() -> None:
        plan = await pipe.dst.get(f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans/shop")
        s = plan["status"]
        assert s["phase"] == "Synced" and s["objectsInSync"] >= 22 and s["replicationLagSeconds"] is not None
    await h.eventually(status, timeout=15)

    # The stand-by is full (scheduler, controllers, kwok nodes): still no Pod may appear.
    await asyncio.sleep(3)
    pods = (await pipe.dst.get(f"/api/v1/namespaces/{ns}/pods"))["items"]
    assert pods == [], [p["metadata"]["name"] for p in pods]

    # A change in the source follows within seconds, and keeps the copy deactivated.
    await pipe.src.request("PATCH", DEPLOY.format(ns=ns, name="web"), body={"spec": {"replicas": 5}},
                           content_type="application/merge-patch+json")

    async def followed() -> None:
        web = await pipe.dst.get(DEPLOY.format(ns=ns, name="web"))
        assert web["spec"]["replicas"] == 0
        assert json.loads(web["metadata"]["annotations"][ann.INVERSE])[0]["value"] == 5
    await h.eventually(followed, timeout=15)


async def test_churn_converges_with_no_extra_objects(pipe: Pipeline) -> None:
    rng = random.Random(7)
    namespaces = ["churn-a", "churn-b"]
    for ns in namespaces:
        await h.namespace(pipe.src, ns)
    await h.apply_plan(pipe.dst, h.plan_body("churn", [{"version": "v1", "resource": "configmaps",
                                                        "filters": {"namespaces": namespaces}}],
                                             forceNamespaceCreation=True))
    live: dict[tuple[str, str], str] = {}
    for step in range(300):
        ns, name = rng.choice(namespaces), f"cm-{rng.randrange(40)}"
        if (ns, name) in live and rng.random() < 0.35:
            await pipe.src.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps/{name}")
            del live[(ns, name)]
        else:
            live[(ns, name)] = str(step)
            await h.configmap(pipe.src, ns, name, {"v": str(step)})
    await pipe.src.request("DELETE", "/api/v1/namespaces/churn-b")  # a whole namespace goes
    live = {k: v for k, v in live.items() if k[0] != "churn-b"}

    async def converged() -> None:
        got = {}
        for ns in namespaces:
            try:
                items = (await pipe.dst.get(f"/api/v1/namespaces/{ns}/configmaps"))["items"]
            except Exception:
                items = []
            for cm in items:
                if (cm["metadata"].get("labels") or {}).get(ann.MANAGED):
                    got[(ns, cm["metadata"]["name"])] = cm["data"]["v"]
        assert got == live
    await h.eventually(converged, timeout=60, interval=1)


async def configmaps_synced(p: Pipeline, ns: str) -> None:
    """A plan named ``ns`` protecting the ConfigMaps of namespace ``ns``, whose ConfigMap "before"
    has been copied."""
    await h.namespace(p.src, ns)
    await h.apply_plan(p.dst, h.plan_body(ns, [{"version": "v1", "resource": "configmaps",
                                                "filters": {"namespaces": [ns]}}], forceNamespaceCreation=True))
    await h.configmap(p.src, ns, "before")
    await h.eventually(lambda: p.dst.get(f"/api/v1/namespaces/{ns}/configmaps/before"))


async def test_poison_message_is_dead_lettered_while_the_rest_flows(pipe: Pipeline) -> None:
    await configmaps_synced(pipe, "poison")
    subject = subjects.object_subject(prefix="standby", plan_namespace=h.SYSTEM, plan_name="poison", group="",
                                      version="v1", resource="configmaps", namespace="poison", name="garbage")
    await pipe.js.publish(subject, b"\x00not an envelope")
    await h.configmap(pipe.src, "poison", "after")
    await h.eventually(lambda: pipe.dst.get("/api/v1/namespaces/poison/configmaps/after"))
    dlq = subjects.dead_letter_subject("standby", subject)
    msg = await pipe.js.get_last_msg(subjects.stream_name(h.SYSTEM, "poison"), dlq)
    assert msg.headers["Standby-Reason"] == "Undecodable"
    assert msg.headers["Standby-Subject"] == subject

    async def degraded() -> None:
        s = await h.plan_status(pipe.dst, "poison")
        assert s["phase"] == "Degraded" and s["objectsFailed"] == 1, s
        assert "configmaps.core/poison/garbage (Undecodable)" in h.condition(s, "Degraded")["message"], s
    await h.eventually(degraded)
    # The cause fixed: the object the poison message named gets a good change. The plan is healthy
    # again without a restart.
    await h.configmap(pipe.src, "poison", "garbage")
    await h.eventually(lambda: pipe.dst.get("/api/v1/namespaces/poison/configmaps/garbage"))

    async def healthy() -> None:
        s = await h.plan_status(pipe.dst, "poison")
        assert s["phase"] == "Synced" and s["objectsFailed"] == 0, s
        assert h.condition(s, "Degraded")["status"] == "False" and h.condition(s, "Synced")["status"] == "True", s
    await h.eventually(healthy)

async def test_dead_letters_stand_across_a_restart_of_the_syncer(
        source: LocalCluster, registered: LocalCluster, nats_server: LocalNats) -> None:
    """The plan's status lists the standing dead letters after a restart (they are read back from
    the stream); a letter whose object got a later change since does not stand any more. More
    letters than the stream keeps per subject are all kept (one dead-letter subject per object)."""
    ns = "undead"

    def subject(name: str) -> str:
        return subjects.object_subject(prefix="standby", plan_namespace=h.SYSTEM, plan_name=ns, group="",
                                       version="v1", resource="configmaps", namespace=ns, name=name)
    poisoned = [f"garbage-{i}" for i in range(7)]  # more than history_per_subject (5)
    async with pipeline(source, registered, nats_server) as p:
        await configmaps_synced(p, ns)
        for name in poisoned:
            await p.js.publish(subject(name), b"\x00not an envelope")

        async def failed(count: int) -> None:
            s = await h.plan_status(p.dst, ns)
            assert s.get("objectsFailed") == count, s
        await h.eventually(lambda: failed(7))
        await h.configmap(p.src, ns, "garbage-0")  # its cause fixed by a later change
        await h.eventually(lambda: failed(6))
        before = {d["ref"]: d for d in (await h.plan_status(p.dst, ns))["deadLetters"]}
    async with KubeClient.from_kubeconfig(registered.kubeconfig) as dst:  # nobody writes the status meanwhile
        await dst.request("PATCH", f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans/{ns}/status",
                          body={"status": None}, content_type="application/merge-patch+json")
    async with pipeline(source, registered, nats_server, keep_plans=True) as p:
        async def restored() -> None:
            s = await h.plan_status(p.dst, ns)
            assert s.get("phase") == "Degraded" and s.get("objectsFailed") == 6, s
            after = {d["ref"]: d for d in s["deadLetters"]}
            assert after.keys() == {f"configmaps.core/{ns}/{n}" for n in poisoned[1:]}, after
            for ref, letter in after.items():  # the same letters: reason, the change's sequence
                assert (letter["reason"], letter["sequence"]) == (before[ref]["reason"], before[ref]["sequence"])
        await h.eventually(restored)


async def test_a_deleted_consumer_is_created_again_and_catches_up(pipe: Pipeline) -> None:
    """Someone deletes the syncer's durable consumer while it waits for changes: the syncer
    creates it again (from the start of the stream; the copies' versions fence the replay)."""
    await configmaps_synced(pipe, "regone")
    stream = subjects.stream_name(h.SYSTEM, "regone")
    await pipe.js.delete_consumer(stream, "standby-syncer")
    await h.configmap(pipe.src, "regone", "after")
    await h.eventually(lambda: pipe.dst.get("/api/v1/namespaces/regone/configmaps/after"), timeout=15)
    assert (await pipe.js.consumer_info(stream, "standby-syncer")).config.durable_name == "standby-syncer"


async def test_rebuild_by_the_runbook_restores_deleted_copies(pipe: Pipeline) -> None:
    """Replaying the stream from its start: suspend the plan, delete the copies and the durable
    consumer, resume. Nothing changed in the source, so the copies come back from the stream alone."""
    ns = "rebuild"
    await h.namespace(pipe.src, ns)
    for i in range(3):
        await h.configmap(pipe.src, ns, f"cm-{i}", {"v": str(i)})
    plan = h.plan_body("rebuild", [{"version": "v1", "resource": "configmaps", "filters": {"namespaces": [ns]}}],
                       forceNamespaceCreation=True)
    await h.apply_plan(pipe.dst, plan)
    copies = f"/api/v1/namespaces/{ns}/configmaps"

    async def all_copied() -> None:
        items, _ = await pipe.dst.list_all(copies, label_selector=f"{ann.MANAGED}=true")
        assert sorted(c["metadata"]["name"] for c in items) == ["cm-0", "cm-1", "cm-2"]
    await h.eventually(all_copied)

    plan["spec"]["suspend"] = True
    await h.apply_plan(pipe.dst, plan)
    await asyncio.sleep(1.5)  # both services see the suspension (plan resync is 0.3 s in these tests)
    await pipe.dst.request("DELETE", copies, params={"labelSelector": f"{ann.MANAGED}=true"})
    await pipe.js.delete_consumer(subjects.stream_name(h.SYSTEM, "rebuild"), "standby-syncer")
    assert (await pipe.dst.list_all(copies, label_selector=f"{ann.MANAGED}=true"))[0] == []
    plan["spec"]["suspend"] = False
    await h.apply_plan(pipe.dst, plan)
    await h.eventually(all_copied)


async def test_a_secret_sealed_under_a_key_the_syncer_lacks_waits_for_it(pipe: Pipeline,
                                                                          registered: LocalCluster) -> None:
    """Keys rotated on the watcher's side before the syncer's: the message is retried, never
    dead-lettered, and applied once the key is in the syncer's keys Secret."""
    await h.namespace(pipe.src, "keyskew")
    await h.apply_plan(pipe.dst, h.plan_body("keyskew", [{"version": "v1", "resource": "secrets",
                                                          "filters": {"namespaces": ["keyskew"]}}],
                                             forceNamespaceCreation=True))
    stream = subjects.stream_name(h.SYSTEM, "keyskew")
    await h.eventually(lambda: pipe.js.stream_info(stream))
    future = sealing.Keyring("k-future", {"k-future": sealing.new_key()})
    change = Envelope(type=EventType.UPSERT, ref=ObjectReference(version="v1", resource="secrets", kind="Secret",
                                                                 namespace="keyskew", name="db"),
                      source_uid="skew-uid", source_resource_version="7", observed_at=time.time(),
                      plan_namespace=h.SYSTEM, plan_name="keyskew",
                      body={"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                            "metadata": {"name": "db", "namespace": "keyskew"},
                            "data": {"password": base64.b64encode(b"rotated").decode()}})
    subject = subjects.object_subject(prefix="standby", plan_namespace=h.SYSTEM, plan_name="keyskew", group="",
                                      version="v1", resource="secrets", namespace="keyskew", name="db")
    await pipe.js.publish(subject, codec.encode(change, keyring=future), stream=stream)
    await asyncio.sleep(3)
    with pytest.raises(ApiError):
        await pipe.dst.get("/api/v1/namespaces/keyskew/secrets/db")
    dlq = subjects.dead_letter_subject("standby", subject)
    with pytest.raises(nats.js.errors.NotFoundError):
        await pipe.js.get_last_msg(stream, dlq)

    held = bootstrap.stream_keyring(registered)
    both = sealing.Keyring(held.active, {**held.keys, **future.keys})
    await pipe.dst.apply(f"/api/v1/namespaces/{h.SYSTEM}/secrets/{keys.DEFAULT_SECRET}",
                         keys.secret_manifest(both, namespace=h.SYSTEM), field_manager="standby-dev")

    async def applied() -> None:
        copy = await pipe.dst.get("/api/v1/namespaces/keyskew/secrets/db")
        assert base64.b64decode(copy["data"]["password"]) == b"rotated"
    await h.eventually(applied, timeout=30)


async def test_apiservices_are_held_as_local_and_activation_restores_them(pipe: Pipeline) -> None:
    """An aggregated API's APIService is copied as a local one: the stand-by's API server accepts it,
    reports it available and leaves its group out of discovery (its backend is off there); the
    activation patch puts the service back. The API server's own APIServices are never copied."""
    base = "/apis/apiregistration.k8s.io/v1/apiservices"
    await pipe.src.apply(f"{base}/v1beta1.held.example.com", {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1beta1.held.example.com"},
        "spec": {"group": "held.example.com", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 10,
                 "insecureSkipTLSVerify": True, "service": {"namespace": "held", "name": "api", "port": 443}}},
        field_manager="test")
    await h.apply_plan(pipe.dst, h.plan_body("aggregated", [{"group": "apiregistration.k8s.io", "version": "v1",
                                                             "resource": "apiservices"}]))

    async def held() -> dict[str, Any]:
        copy_ = await pipe.dst.get(f"{base}/v1beta1.held.example.com")
        assert "service" not in copy_["spec"] and "insecureSkipTLSVerify" not in copy_["spec"]
        assert {c["type"]: c["status"] for c in copy_["status"]["conditions"]} == {"Available": "True"}
        return copy_
    copy_ = await h.eventually(held, timeout=30)
    discovery = await pipe.dst.request("GET", "/apis", accept="application/json;g=apidiscovery.k8s.io;v=v2;"
                                                              "as=APIGroupDiscoveryList,application/json")
    assert "held.example.com" not in {g["metadata"]["name"] for g in discovery["items"]}
    builtin = await pipe.dst.get(f"{base}/v1.apps")
    assert ann.MANAGED not in (builtin["metadata"].get("labels") or {})

    await pipe.dst.request("PATCH", f"{base}/v1beta1.held.example.com", body=transforms.activation_patch(copy_),
                           content_type="application/json-patch+json")
    active = await pipe.dst.get(f"{base}/v1beta1.held.example.com")
    assert active["spec"]["service"] == {"namespace": "held", "name": "api", "port": 443}
    assert active["spec"]["insecureSkipTLSVerify"] is True
    await pipe.dst.request("DELETE", f"{base}/v1beta1.held.example.com")  # its backend does not exist here
    await pipe.src.request("DELETE", f"{base}/v1beta1.held.example.com")


def syncer_process(nats_server: LocalNats, destination: LocalCluster, name: str) -> Process:
    return h.service_process("syncer", nats_server, destination, name)


async def test_syncer_killed_mid_burst_converges(source: LocalCluster, registered: LocalCluster,
                                                 nats_server: LocalNats) -> None:
    async with pipeline(source, registered, nats_server, with_syncer=False) as p:
        await h.namespace(p.src, "burst")
        await h.apply_plan(p.dst, h.plan_body("burst", [{"version": "v1", "resource": "configmaps",
                                                         "filters": {"namespaces": ["burst"]}}],
                                              forceNamespaceCreation=True))
        proc = syncer_process(nats_server, registered, "syncer-kill").start()
        try:
            sem = asyncio.Semaphore(32)

            async def put(i: int) -> None:
                async with sem:
                    await h.configmap(p.src, "burst", f"cm-{i}", {"v": "1"})
            burst = asyncio.gather(*(put(i) for i in range(600)))

            async def some_applied() -> None:
                items = (await p.dst.get("/api/v1/namespaces/burst/configmaps"))["items"]
                assert len(items) > 50
            await h.eventually(some_applied, timeout=60)
            proc.kill()
            await burst
            proc = syncer_process(nats_server, registered, "syncer-kill-2").start()

            async def converged() -> None:
                items = (await p.dst.get("/api/v1/namespaces/burst/configmaps"))["items"]
                names = {i["metadata"]["name"] for i in items if (i["metadata"].get("labels") or {}).get(ann.MANAGED)}
                assert names == {f"cm-{i}" for i in range(600)}
            await h.eventually(converged, timeout=90, interval=1)
            # No duplicate side effects: every copy was written for its one source version.
            items = (await p.dst.get("/api/v1/namespaces/burst/configmaps"))["items"]
            assert all(i["data"] == {"v": "1"} for i in items if i["metadata"]["name"].startswith("cm-"))
        finally:
            proc.stop()


@pytest.mark.parametrize("outage_seconds", [30])
async def test_destination_outage_converges(source: LocalCluster, registered: LocalCluster, nats_server: LocalNats,
                                            outage_seconds: int) -> None:
    async with pipeline(source, registered, nats_server) as p:
        await h.namespace(p.src, "outage")
        await h.apply_plan(p.dst, h.plan_body("outage", [{"version": "v1", "resource": "configmaps",
                                                          "filters": {"namespaces": ["outage"]}}],
                                              forceNamespaceCreation=True))
        await h.configmap(p.src, "outage", "before")
        await h.eventually(lambda: p.dst.get("/api/v1/namespaces/outage/configmaps/before"))
        await asyncio.to_thread(registered.stop_apiserver)
        try:
            for i in range(20):
                await h.configmap(p.src, "outage", f"during-{i}")
            await asyncio.sleep(outage_seconds)
        finally:
            await asyncio.to_thread(registered.start_apiserver)

        async def converged() -> None:
            items = (await p.dst.get("/api/v1/namespaces/outage/configmaps"))["items"]
            names = {i["metadata"]["name"] for i in items}
            assert {f"during-{i}" for i in range(20)} <= names
        await h.eventually(converged, timeout=90, interval=1)




def _deployment(name: str, labels: dict[str, str], replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "registry.example/api:1"}]}}}}


def _job(name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": image}]}}}}


async def test_immutable_field_change_is_deleted_and_recreated(pipe: Pipeline) -> None:
    """The source object was deleted and re-created with a different immutable field while the
    plan was suspended: on resume the stream holds only the new object, the destination refuses the
    update (422 immutable), and the syncer deletes its copy and writes it again, deactivated."""
    ns = "recreate"
    core, apps, batch = f"/api/v1/namespaces/{ns}", f"/apis/apps/v1/namespaces/{ns}", f"/apis/batch/v1/namespaces/{ns}"
    await h.namespace(pipe.src, ns)
    # Someone else's object in the stand-by, immutable and different: Standby must not delete it.
    await h.namespace(pipe.dst, ns)
    theirs = await pipe.dst.request("POST", f"{core}/configmaps", body={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs"}, "immutable": True,
        "data": {"owner": "someone else"}})
    await pipe.src.request("POST", f"{core}/configmaps", body={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs"}, "immutable": True, "data": {"v": "1"}})
    originals = [(f"{apps}/deployments", _deployment("api", {"app": "api"}, 2)),
                 (f"{batch}/jobs", _job("migrate", "registry.example/migrate:1")),
                 (f"{core}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frozen"},
                                         "immutable": True, "data": {"v": "1"}})]
    for path, body in originals:
        await pipe.src.request("POST", path, body=body)
    resources = [{"group": "apps", "version": "v1", "resource": "deployments"},
                 {"group": "batch", "version": "v1", "resource": "jobs"},
                 {"version": "v1", "resource": "configmaps"}]
    plan = h.plan_body("recreate", [{**r, "filters": {"namespaces": [ns]}} for r in resources],
                       forceNamespaceCreation=True)
    await h.apply_plan(pipe.dst, plan)

    async def copied() -> dict[str, str]:
        cm = await pipe.dst.get(f"{core}/configmaps/frozen")
        api = await pipe.dst.get(f"{apps}/deployments/api")
        job = await pipe.dst.get(f"{batch}/jobs/migrate")
        assert cm["data"] == {"v": "1"} and job["spec"]["suspend"] is True and api["spec"]["replicas"] == 0
        return {"cm": cm["metadata"]["uid"], "api": api["metadata"]["uid"], "job": job["metadata"]["uid"]}
    before = await h.eventually(copied, timeout=30)

    plan["spec"]["suspend"] = True
    await h.apply_plan(pipe.dst, plan)
    await asyncio.sleep(1.5)  # both services see the suspension (plan resync is 0.3 s in these tests)
    for path, name in ((f"{apps}/deployments", "api"), (f"{batch}/jobs", "migrate"), (f"{core}/configmaps", "frozen")):
        await pipe.src.request("DELETE", f"{path}/{name}", params={"propagationPolicy": "Background"})
    changed = [(f"{apps}/deployments", _deployment("api", {"app": "api", "track": "v2"}, 4)),
               (f"{batch}/jobs", _job("migrate", "registry.example/migrate:2")),
               (f"{core}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frozen"},
                                       "immutable": True, "data": {"v": "2"}})]
    for path, body in changed:
        await h.eventually(lambda path=path, body=body: pipe.src.request("POST", path, body=body), timeout=15)
    plan["spec"]["suspend"] = False
    await h.apply_plan(pipe.dst, plan)

    async def recreated() -> None:
        cm = await pipe.dst.get(f"{core}/configmaps/frozen")
        assert cm["data"] == {"v": "2"} and cm["immutable"] is True
        api = await pipe.dst.get(f"{apps}/deployments/api")
        assert api["spec"]["selector"]["matchLabels"] == {"app": "api", "track": "v2"}
        assert api["spec"]["replicas"] == 0
        assert json.loads(api["metadata"]["annotations"][ann.INVERSE]) == [
            {"op": "replace", "path": "/spec/replicas", "value": 4}]
        job = await pipe.dst.get(f"{batch}/jobs/migrate")
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/migrate:2"
        assert job["spec"]["suspend"] is True
        uids = {"cm": cm["metadata"]["uid"], "api": api["metadata"]["uid"], "job": job["metadata"]["uid"]}
        assert all(uids[k] != before[k] for k in uids), "each copy is a new object"
    await h.eventually(recreated, timeout=45, interval=0.5)
    for resource in ("deployments", "jobs", "configmaps"):
        assert REGISTRY.get_sample_value("standby_recreates_total",
                                         {"plan": f"{h.SYSTEM}/recreate", "resource": resource}) == 1
    stream = subjects.stream_name(h.SYSTEM, "recreate")
    theirs_subject = subjects.object_subject(prefix="standby", plan_namespace=h.SYSTEM, plan_name="recreate", group="",
                                             version="v1", resource="configmaps", namespace=ns, name="theirs")
    dead = await pipe.js.get_last_msg(stream, subjects.dead_letter_subject("standby", theirs_subject))
    assert dead.headers["Standby-Reason"] == "ImmutableFieldConflict"
    assert dead.headers["Standby-Subject"].endswith(".theirs")
    still = await pipe.dst.get(f"{core}/configmaps/theirs")
    assert still["metadata"]["uid"] == theirs["metadata"]["uid"] and still["data"] == {"owner": "someone else"}
    pods = (await pipe.dst.get(f"{core}/pods"))["items"]
    assert pods == [], [p["metadata"]["name"] for p in pods]
