"""msgpack encoding of :class:`~schemas.envelope.Envelope`, with optional zlib compression of
large bodies so that objects near Kubernetes' 1.5 MB limit still fit the broker's payload limit.

Frame: one msgpack map ``{"schema": 1, "type": ..., ..., "body": <map> | None, "z": <bytes>?,
"sealed": <map>?}``. When ``z`` is present it holds the zlib-compressed msgpack of the body. The
bodies of Secrets are never in clear: ``sealed`` holds them encrypted (:mod:`schemas.sealing`),
compressed first when large (``sealed["z"]``). Anything that does not decode into a valid envelope
raises :class:`DecodeError`; nothing is silently repaired. A sealed body whose key the reader does
not hold raises :class:`~schemas.sealing.UnknownKeyError` instead (the reader can wait for it)."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
from pydantic import ValidationError

from schemas import sealing
from schemas.envelope import SCHEMA_VERSION, Envelope

DEFAULT_COMPRESS_OVER_BYTES = 64 * 1024


class DecodeError(ValueError):
    """The bytes are not a Standby envelope this reader understands."""


class PayloadTooLargeError(ValueError):
    """Even compressed, the message exceeds the broker's payload limit."""


def _associated(frame: dict[str, Any], compressed: bool) -> bytes:
    """What a sealed body is bound to: the object, version, event and plan of its message."""
    ref = frame["ref"]
    associated: bytes = msgpack.packb(
        ["standby-sealed-1", frame["plan_namespace"], frame["plan_name"], frame["type"], ref["group"], ref["resource"],
         ref["namespace"], ref["name"], frame["source_uid"], frame["source_resource_version"], compressed],
        use_bin_type=True)
    return associated


def encode(
    envelope: Envelope, *, compress_over_bytes: int = DEFAULT_COMPRESS_OVER_BYTES,
    max_payload_bytes: int | None = None, keyring: sealing.Keyring | None = None,
) -> bytes:
    """``keyring`` is required for the bodies of Secrets (:func:`schemas.sealing.sealed_resource`):
    without it they are refused with :class:`~schemas.sealing.SealingError`, never sent in clear."""
    frame: dict[str, Any] = {
        "schema": envelope.schema_version,
        "type": envelope.type.value,
        "ref": {
            "group": envelope.ref.group,
            "version": envelope.ref.version,
            "resource": envelope.ref.resource,
            "kind": envelope.ref.kind,
            "namespace": envelope.ref.namespace,
            "name": envelope.ref.name,
        },
        "source_uid": envelope.source_uid,
        "source_resource_version": envelope.source_resource_version,
        "observed_at": envelope.observed_at,
        "plan_namespace": envelope.plan_namespace,
        "plan_name": envelope.plan_name,
        "epoch": envelope.epoch,
        "body": envelope.body,
    }
    if envelope.body is not None and sealing.sealed_resource(envelope.ref.group, envelope.ref.resource):
        if keyring is None:
            raise sealing.SealingError(
                f"{envelope.ref}: no stream key to seal a Secret with; not publishing it in clear")
        plaintext = msgpack.packb(envelope.body, use_bin_type=True)
        compressed = len(plaintext) > compress_over_bytes
        if compressed:
            plaintext = zlib.compress(plaintext, 6)
        frame["body"] = None
        frame["sealed"] = keyring.seal(plaintext, _associated(frame, compressed)) | {"z": compressed}
    data: bytes = msgpack.packb(frame, use_bin_type=True)
    if frame["body"] is not None and len(data) > compress_over_bytes:
        frame["body"] = None
        frame["z"] = zlib.compress(msgpack.packb(envelope.body, use_bin_type=True), 6)
        data = msgpack.packb(frame, use_bin_type=True)
    if max_payload_bytes is not None and len(data) > max_payload_bytes:
        raise PayloadTooLargeError(
            f"{envelope.ref}: {len(data)} bytes after compression exceeds the {max_payload_bytes}-byte limit"
        )
    return data


def decode(data: bytes, *, keyring: sealing.Keyring | None = None) -> Envelope:
    """``keyring`` opens sealed bodies; without it, or without the key a body was sealed under,
    :class:`~schemas.sealing.UnknownKeyError`. A sealed body that does not authenticate is a
    :class:`DecodeError`."""
    try:
        frame = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise DecodeError(f"not msgpack: {exc}") from exc
    if not isinstance(frame, dict):
        raise DecodeError(f"expected a map, got {type(frame).__name__}")
    version = frame.get("schema")
    if version != SCHEMA_VERSION:
        raise DecodeError(f"unsupported envelope schema {version!r} (this reader knows {SCHEMA_VERSION})")
    compressed = frame.pop("z", None)
    if compressed is not None:
        try:
            frame["body"] = msgpack.unpackb(zlib.decompress(compressed), raw=False)
        except Exception as exc:
            raise DecodeError(f"corrupt compressed body: {exc}") from exc
    sealed = frame.pop("sealed", None)
    if sealed is not None:
        frame["body"] = _open(frame, sealed, keyring)
    try:
        return Envelope.model_validate(frame)
    except ValidationError as exc:
        raise DecodeError(f"invalid envelope: {exc.error_count()} errors: {exc.errors()[0]['msg']} "
                          f"at {'.'.join(map(str, exc.errors()[0]['loc']))}") from exc


def _open(frame: dict[str, Any], sealed: Any, keyring: sealing.Keyring | None) -> Any:
    if not isinstance(sealed, dict) or not isinstance(frame.get("ref"), dict):
        raise DecodeError("malformed sealed body")
    if keyring is None:
        raise sealing.UnknownKeyError(f"sealed under key {sealed.get('k')!r}, and this reader has no stream keys")
    compressed = sealed.get("z") is True
    try:
        plaintext = keyring.open(sealed, _associated(frame, compressed))
    except sealing.TamperedError as exc:
        raise DecodeError(str(exc)) from exc
    except (KeyError, TypeError) as exc:
        raise DecodeError(f"malformed sealed envelope: {exc!r}") from exc
    try:
        return msgpack.unpackb(zlib.decompress(plaintext) if compressed else plaintext, raw=False)
    except Exception as exc:
        raise DecodeError(f"corrupt sealed body: {exc}") from exc
