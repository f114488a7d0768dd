"""Subjects, message ids and the msgpack envelope: reversible, deterministic, pinned by goldens."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec, subjects
from schemas.envelope import Envelope, EventType, ObjectReference

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).parent / "golden"

dns_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
dns_subdomain = st.lists(dns_label, min_size=1, max_size=4).map(".".join)
rbac_name = st.text(st.characters(blacklist_characters="/%", blacklist_categories=("Cs",)), min_size=1, max_size=40)
group = st.just("") | dns_subdomain


@settings(max_examples=300)
@given(plan_ns=dns_label, plan=dns_subdomain, group=group, version=dns_label, resource=dns_label,
       namespace=st.just("") | dns_label, name=dns_subdomain | rbac_name)
def test_subject_round_trip(plan_ns: str, plan: str, group: str, version: str, resource: str,
                            namespace: str, name: str) -> None:
    subject = subjects.object_subject(prefix="standby", plan_namespace=plan_ns, plan_name=plan, group=group,
                                      version=version, resource=resource, namespace=namespace, name=name)
    tokens = subject.split(".")
    assert len(tokens) == 7
    assert all(t and not set(t) & set("*> \t\r\n") for t in tokens)
    parts = subjects.parse_subject(subject, prefix="standby")
    assert (parts.plan_namespace, parts.plan_name, parts.group, parts.version, parts.resource,
            parts.namespace, parts.name) == (plan_ns, plan, group, version, resource, namespace, name)


def test_subject_examples() -> None:
    assert subjects.object_subject(prefix="standby", plan_namespace="ops", plan_name="shop", group="",
                                   version="v1", resource="configmaps", namespace="app",
                                   name="web.config") == "standby.ops:shop.core.v1.configmaps.app.web_config"
    assert subjects.object_subject(prefix="standby", plan_namespace="ops", plan_name="shop",
                                   group="rbac.authorization.k8s.io", version="v1", resource="clusterroles",
                                   namespace="", name="system:aggregate-to-view") == (
        "standby.ops:shop.rbac_authorization_k8s_io.v1.clusterroles._.system:aggregate-to-view")


@given(dns_label, dns_subdomain)
def test_stream_names_are_distinct_and_valid(ns: str, name: str) -> None:
    stream = subjects.stream_name(ns, name)
    assert not set(stream) & set(". *>/\\")


def test_message_id_is_deterministic() -> None:
    a = subjects.message_id(source_uid="u", resource_version="7", event_type="UPSERT")
    assert a == subjects.message_id(source_uid="u", resource_version="7", event_type="UPSERT")
    assert a != subjects.message_id(source_uid="u", resource_version="7", event_type="DELETE")


def envelope(body: dict[str, object] | None = None, type_: EventType = EventType.UPSERT) -> Envelope:
    return Envelope(
        type=type_, ref=ObjectReference(group="apps", version="v1", resource="deployments", kind="Deployment",
                                        namespace="app", name="web"),
        source_uid="4f1c", source_resource_version="1234", observed_at=1764000000.25,
        plan_namespace="standby-system", plan_name="shop", epoch=1, body=body,
    )


GOLDENS = {
    "upsert-v1.msgpack": envelope({"apiVersion": "apps/v1", "kind": "Deployment",
                                   "metadata": {"name": "web", "namespace": "app"}, "spec": {"replicas": 3}}),
    "delete-v1.msgpack": envelope(None, EventType.DELETE),
}


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_golden_frames_pin_the_format(name: str) -> None:
    data = (GOLDEN / name).read_bytes()
    assert codec.decode(data) == GOLDENS[name]
    assert codec.encode(GOLDENS[name]) == data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200)
@given(body=st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=6),
       compress=st.sampled_from([0, 64 * 1024]))
def test_codec_round_trip(body: dict[str, object] | None, compress: int) -> None:
    e = envelope(body)
    assert codec.decode(codec.encode(e, compress_over_bytes=compress)) == e


def test_large_bodies_are_compressed_and_oversize_refused() -> None:
    big = envelope({"data": {f"k{i}": "x" * 1000 for i in range(1500)}})
    data = codec.encode(big)
    assert len(data) < 200_000
    assert codec.decode(data) == big
    import os

    random_blob = envelope({"data": os.urandom(3_000_000).hex()})
    with pytest.raises(codec.PayloadTooLargeError, match="exceeds"):
        codec.encode(random_blob, max_payload_bytes=1024 * 1024)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1\xc1\xc1", id="not-msgpack"),
        pytest.param(msgpack.packb([1, 2, 3]), id="not-a-map"),
        pytest.param(msgpack.packb({"schema": 99}), id="future-schema"),
        pytest.param(msgpack.packb({"schema": 1, "type": "UPSERT"}), id="missing-fields"),
        pytest.param(msgpack.packb({"schema": 1, "type": "EXPLODE", "ref": {}}), id="bad-type"),
        pytest.param(msgpack.packb({"schema": 1, "z": b"not zlib"}), id="corrupt-compression"),
    ],
)
def test_garbage_is_a_typed_error(garbage: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode(garbage)


if __name__ == "__main__":  # regenerate goldens deliberately, never from a test run
    for file, env in GOLDENS.items():
        (GOLDEN / file).write_bytes(codec.encode(env))


def test_resource_filter_matches_the_subjects_of_that_resource_only() -> None:
    f = subjects.resource_filter(prefix="standby", plan_namespace="ops", plan_name="shop", group="apps",
                                 version="v1", resource="deployments")
    assert f == "standby.ops:shop.apps.v1.deployments.>"
    assert subjects.object_subject(prefix="standby", plan_namespace="ops", plan_name="shop", group="apps",
                                   version="v1", resource="deployments", namespace="a", name="b").startswith(f[:-1])
    scoped = subjects.resource_filter(prefix="standby", plan_namespace="ops", plan_name="shop", group="apps",
                                      version="v1", resource="deployments", namespace="web.prod")
    assert scoped == "standby.ops:shop.apps.v1.deployments.web_prod.>"
