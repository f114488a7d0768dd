"""The stream keys as the services read them: from a Secret on a real API server (RBAC on)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from schemas import codec, sealing
from schemas.envelope import Envelope, EventType, ObjectReference
from services.common.keys import StreamKeys, secret_manifest
from services.common.kube import KubeClient
from services.devenv.clusters import LocalCluster
from tests.support import env as h

NAME = "rotation-stream-keys"
PATH = f"/api/v1/namespaces/{h.SYSTEM}/secrets/{NAME}"


def secret_change(value: str) -> Envelope:
    return Envelope(type=EventType.UPSERT, ref=ObjectReference(version="v1", resource="secrets", kind="Secret",
                                                               namespace="app", name="db"),
                    source_uid="u", source_resource_version="7", observed_at=0.0, plan_namespace=h.SYSTEM,
                    plan_name="p", body={"apiVersion": "v1", "kind": "Secret", "data": {"password": value}})


@pytest.fixture
async def kube(registered: LocalCluster) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(registered.kubeconfig) as client:
        await h.delete(client, PATH)
        yield client
        await h.delete(client, PATH)


async def put(kube: KubeClient, keyring: sealing.Keyring) -> None:
    await kube.apply(PATH, secret_manifest(keyring, name=NAME, namespace=h.SYSTEM), field_manager="test")


async def test_a_rotated_key_is_read_when_a_message_needs_it(kube: KubeClient) -> None:
    first = sealing.Keyring("k1", {"k1": sealing.new_key()})
    await put(kube, first)
    keys = StreamKeys(kube, h.SYSTEM, NAME, retry_after=0.0)
    assert await keys.keyring() == first

    rotated = sealing.Keyring("k2", {**first.keys, "k2": sealing.new_key()})
    await put(kube, rotated)
    assert keys.held == first  # not re-read until needed (or max_age)
    opened = await keys.decode(codec.encode(secret_change("new"), keyring=rotated))
    assert opened.body is not None and opened.body["data"]["password"] == "new"
    assert keys.held == rotated
    old = await keys.decode(codec.encode(secret_change("old"), keyring=first))  # old messages still open
    assert old.body is not None and old.body["data"]["password"] == "old"


async def test_a_broken_or_missing_keys_secret_keeps_the_keys_held_and_says_why(kube: KubeClient) -> None:
    ring = sealing.Keyring("k1", {"k1": sealing.new_key()})
    await put(kube, ring)
    keys = StreamKeys(kube, h.SYSTEM, NAME, retry_after=0.0)
    await keys.keyring()
    stranger = codec.encode(secret_change("x"), keyring=sealing.Keyring("k9", {"k9": sealing.new_key()}))

    await kube.request("PUT", PATH, body={"apiVersion": "v1", "kind": "Secret",
                                          "metadata": {"name": NAME, "namespace": h.SYSTEM},
                                          "data": {"active": "azk="}})  # names key 'k9', which it lacks
    with pytest.raises(sealing.UnknownKeyError, match="not a valid stream keyring"):
        await keys.decode(stranger)
    assert keys.held == ring

    await h.delete(kube, PATH)
    with pytest.raises(sealing.UnknownKeyError, match="cannot be read: 404"):
        await keys.decode(stranger)
    assert keys.held == ring
    mine = await keys.decode(codec.encode(secret_change("y"), keyring=ring))
    assert mine.body is not None


async def test_without_the_secret_there_are_no_keys(kube: KubeClient) -> None:
    keys = StreamKeys(kube, h.SYSTEM, NAME)
    assert await keys.keyring() is None
    assert keys.problem is not None and "404" in keys.problem
    with pytest.raises(sealing.UnknownKeyError, match="no stream keys"):
        await keys.decode(codec.encode(secret_change("z"), keyring=sealing.Keyring("k", {"k": sealing.new_key()})))
