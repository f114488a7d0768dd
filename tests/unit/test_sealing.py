"""Secret bodies are sealed in the stream: never in clear, bound to their message, rotatable."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest
import yaml

from schemas import codec, sealing
from schemas.envelope import Envelope, EventType, ObjectReference
from services import cli
from services.common import keys

OLD, NEW = sealing.new_key(), sealing.new_key()
RING = sealing.Keyring("k2", {"k1": OLD, "k2": NEW})


def secret(value: str = "hunter2", *, name: str = "db", rv: str = "42") -> Envelope:
    return Envelope(
        type=EventType.UPSERT, ref=ObjectReference(version="v1", resource="secrets", kind="Secret",
                                                   namespace="app", name=name),
        source_uid="u-1", source_resource_version=rv, observed_at=1764000000.5,
        plan_namespace="standby-system", plan_name="shop",
        body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "app"},
              "type": "Opaque", "data": {"password": value}, "stringData": {"token": value + "-token"}})


def test_a_secret_round_trips_and_its_values_are_not_in_the_frame() -> None:
    env = secret()
    data = codec.encode(env, keyring=RING)
    assert b"hunter2" not in data
    assert msgpack.unpackb(data)["sealed"]["k"] == "k2"  # sealed with the active key
    assert codec.decode(data, keyring=RING) == env


def test_large_secrets_are_compressed_then_sealed() -> None:
    env = secret("x" * 200_000)
    data = codec.encode(env, keyring=RING)
    assert len(data) < 10_000
    assert codec.decode(data, keyring=RING) == env


def test_a_secret_without_a_keyring_is_refused_not_sent_in_clear() -> None:
    with pytest.raises(sealing.SealingError, match="not publishing it in clear"):
        codec.encode(secret())


def test_other_objects_and_deletions_are_not_sealed() -> None:
    config = secret().model_copy(update={"ref": ObjectReference(version="v1", resource="configmaps", kind="ConfigMap",
                                                                namespace="app", name="db")})
    assert "sealed" not in msgpack.unpackb(codec.encode(config, keyring=RING))
    gone = secret().model_copy(update={"type": EventType.DELETE, "body": None})
    assert codec.decode(codec.encode(gone)) == gone  # nothing secret in a deletion: no key needed


def test_rotation_old_bodies_open_while_their_key_is_kept() -> None:
    before = codec.encode(secret(), keyring=sealing.Keyring("k1", {"k1": OLD}))
    assert codec.decode(before, keyring=RING) == secret()
    with pytest.raises(sealing.UnknownKeyError, match="'k1'"):
        codec.decode(before, keyring=sealing.Keyring("k2", {"k2": NEW}))
    with pytest.raises(sealing.UnknownKeyError, match="no stream keys"):
        codec.decode(before)


def test_a_sealed_body_cannot_be_moved_to_another_message() -> None:
    """The sealed body of one object replayed in another object's (or version's) frame fails."""
    victim = msgpack.unpackb(codec.encode(secret(name="db"), keyring=RING))
    for field, value in (("ref", {**victim["ref"], "name": "other"}), ("source_resource_version", "43"),
                         ("plan_name", "elsewhere"), ("type", "DELETE")):
        forged = msgpack.packb({**victim, field: value}, use_bin_type=True)
        with pytest.raises(codec.DecodeError, match="does not authenticate"):
            codec.decode(forged, keyring=RING)


def test_altered_ciphertext_and_flags_are_decode_errors() -> None:
    frame = msgpack.unpackb(codec.encode(secret(), keyring=RING))
    flipped = bytearray(frame["sealed"]["c"])
    flipped[0] ^= 1
    for sealed in ({**frame["sealed"], "c": bytes(flipped)}, {**frame["sealed"], "z": True}, "garbage",
                   {"k": "k2"}):
        with pytest.raises(codec.DecodeError):
            codec.decode(msgpack.packb({**frame, "sealed": sealed}, use_bin_type=True), keyring=RING)


@pytest.mark.parametrize(("data", "message"), [
    ({"k1": OLD}, "no 'active' entry"),
    ({"active": b"k9", "k1": OLD}, "active key 'k9' is not in the keyring"),
    ({"active": b"k1", "k1": b"short"}, "needs 32"),
    ({"active": b"k1", "k1": OLD, "bad/id": NEW}, "invalid key id"),
])
def test_bad_key_secrets_are_clear_errors(data: dict[str, bytes], message: str) -> None:
    with pytest.raises(sealing.SealingError, match=message):
        sealing.Keyring.from_secret_data(data)


def test_keyring_from_secret_data() -> None:
    ring = sealing.Keyring.from_secret_data({"active": b"k2\n", "k1": OLD, "k2": NEW})
    assert ring.active == "k2" and set(ring.keys) == {"k1", "k2"}
    assert repr(OLD) not in repr(ring) and repr(NEW) not in repr(ring)  # a logged keyring shows no key


def test_the_cli_prints_a_keys_secret_and_rotates_one(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["stream-keys", "--id", "a"]) == 0
    first = json.loads(capsys.readouterr().out)
    ring = keys.keyring_of(first)
    assert ring.active == "a" and first["metadata"] == {"name": "standby-stream-keys", "namespace": "standby-system",
                                                        "labels": {"app.kubernetes.io/part-of": "standby"}}
    existing = tmp_path / "secret.yaml"
    existing.write_text(yaml.safe_dump(first))  # as `kubectl get secret -o yaml` prints it
    assert cli.main(["stream-keys", "--id", "b", "--rotate", str(existing)]) == 0
    rotated = keys.keyring_of(json.loads(capsys.readouterr().out))
    assert rotated.active == "b" and rotated.keys["a"] == ring.keys["a"] and len(rotated.keys["b"]) == 32
    assert cli.main(["stream-keys", "--id", "a", "--rotate", str(existing)]) == 2  # never replaces a key
