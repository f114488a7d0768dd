"""What a rebuild refuses before writing anything, against a real API server (RBAC on) and a real
nats-server: a target that cannot take it (resources it does not serve and whose CRD is not
rebuilt with them, writes its credentials may not make: all named in one refusal), and a Secret in
the stream sealed under a key the stand-by does not hold."""

from __future__ import annotations

import time
import uuid

import nats
import pytest

from schemas import codec, sealing, subjects
from schemas.envelope import Envelope, EventType, ObjectReference
from schemas.rebuilds import Step
from schemas.subjects import ObjectKey
from services.common import keys, plans, rebuilding, settings, streams
from services.common.kube import KubeClient
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from tests.support import env as h

CONFIGMAPS_ONLY = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch", "get", "list"]},
                   {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}]
CRD = ObjectKey("apiextensions.k8s.io", "customresourcedefinitions", "", "gadgets.rights.example")
GADGET = ObjectKey("rights.example", "gadgets", "rights-new", "g")
SETTINGS = ObjectKey("", "configmaps", "rights-new", "settings")


async def prepared(client: KubeClient, keys: list[ObjectKey]) -> rebuilding.Plan:
    """A rebuild's plan creating ``keys`` (the gadgets are not served by the target yet)."""
    kinds = {CRD: "CustomResourceDefinition", GADGET: "Gadget", SETTINGS: "ConfigMap"}
    infos = {k: None if k == GADGET else await client.resolve(k.group, "v1", k.resource) for k in keys}
    return rebuilding.Plan(rebuilding.State(time.time(), None, {}), [Step("create", k, kinds[k]) for k in keys], {},
                           infos)


@pytest.fixture(scope="module")
def configmaps_only(destination: LocalCluster) -> KubeClient:
    path = destination.mint_credentials("rebuild-configmaps-only", namespace="standby-rights", rules=CONFIGMAPS_ONLY,
                                        cluster_scoped=True)
    return KubeClient.from_kubeconfig(path)


async def test_a_target_that_cannot_take_the_rebuild_is_refused_naming_every_reason(
        destination: LocalCluster, configmaps_only: KubeClient) -> None:
    async with configmaps_only as client:
        with pytest.raises(rebuilding.RebuildError) as refused:
            await rebuilding.refuse_unwritable(client, await prepared(client, [CRD, GADGET, SETTINGS]), "the target")
    assert str(refused.value) == (
        "the target cannot take this rebuild, so nothing was written: its credentials may not create namespaces, "
        "create customresourcedefinitions.apiextensions.k8s.io, create gadgets.rights.example in rights-new, "
        "patch customresourcedefinitions.apiextensions.k8s.io, "
        "patch gadgets.rights.example in rights-new")


async def test_custom_resources_without_their_crd_in_the_target_or_the_rebuild_are_refused(
        destination: LocalCluster) -> None:
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as admin:
        with pytest.raises(rebuilding.RebuildError) as refused:
            await rebuilding.refuse_unwritable(admin, await prepared(admin, [GADGET, SETTINGS]), "the target")
        assert str(refused.value).endswith(": gadgets.rights.example is not served there and its "
                                           "CustomResourceDefinition is not among the objects rebuilt")
        # With the CRD rebuilt too, and every right: nothing to refuse.
        await rebuilding.refuse_unwritable(admin, await prepared(admin, [CRD, GADGET, SETTINGS]), "the target")


async def test_a_secret_sealed_under_a_key_not_held_stops_the_rebuild_before_anything_is_written(
        destination: LocalCluster, nats_server: LocalNats) -> None:
    plan = plans.parse_plan(h.plan_body(f"sealed-{uuid.uuid4().hex[:6]}", [{"version": "v1", "resource": "secrets"}]))
    sealed_with = sealing.Keyring("gone", {"gone": sealing.new_key()})
    held = sealing.Keyring("kept", {"kept": sealing.new_key()})
    env = Envelope(type=EventType.UPSERT, ref=ObjectReference(version="v1", resource="secrets", kind="Secret",
                                                              namespace="app", name="db"),
                   source_uid="u-1", source_resource_version="7", observed_at=time.time(),
                   plan_namespace=plan.namespace, plan_name=plan.name,
                   body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "app"},
                         "data": {"password": "aHVudGVyMg=="}})
    nc = await nats.connect(nats_server.url, user=nats_server.user, password=nats_server.password)
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as own:
        secret = keys.secret_manifest(held, name=f"keys-{plan.name}", namespace="default")
        await own.request("POST", "/api/v1/namespaces/default/secrets", body=secret)
        try:
            js = nc.jetstream()
            stream = subjects.stream_name(plan.namespace, plan.name)
            await streams.ensure_stream(js, settings.NatsSettings(), plan.namespace, plan.name, plan.spec.history)
            await js.publish(subjects.object_subject(
                prefix="standby", plan_namespace=plan.namespace, plan_name=plan.name, group="", version="v1",
                resource="secrets", namespace="app", name="db"), codec.encode(env, keyring=sealed_with), stream=stream,
                headers={streams.HDR_TYPE: "UPSERT", streams.HDR_RV: "7", streams.HDR_UID: "u-1"})
            with pytest.raises(rebuilding.RebuildError) as refused:
                await rebuilding.read_state(js, keys.StreamKeys(own, "default", f"keys-{plan.name}"),
                                            rebuilding.Request(plan))
            assert "secrets.core/app/db is sealed under a key not held" in str(refused.value)
            assert "apply the stream keys Secret first" in str(refused.value)
            await js.delete_stream(stream)
        finally:
            await own.request("DELETE", f"/api/v1/namespaces/default/secrets/keys-{plan.name}")
            await nc.close()
