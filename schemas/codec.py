"""msgpack encoding of :class:`~schemas.envelope.Envelope`, with optional zlib compression of
large bodies so that objects near Kubernetes' 1.5 MB limit still fit the broker's payload limit.

Frame: one msgpack map ``{"schema": 1, "type": ..., ..., "body": <map> | None, "z": <bytes>?}``.
When ``z`` is present it holds the zlib-compressed msgpack of the body. Anything that does not
decode into a valid envelope raises :class:`DecodeError`; nothing is silently repaired."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
from pydantic import ValidationError

from schemas.envelope import SCHEMA_VERSION, Envelope

DEFAULT_COMPRESS_OVER_BYTES = 64 * 1024


class DecodeError(ValueError):
    """The bytes are not a Standby envelope this reader understands."""


class PayloadTooLargeError(ValueError):
    """Even compressed, the message exceeds the broker's payload limit."""


def encode(
    envelope: Envelope, *, compress_over_bytes: int = DEFAULT_COMPRESS_OVER_BYTES,
    max_payload_bytes: int | None = None,
) -> bytes:
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
    data: bytes = msgpack.packb(frame, use_bin_type=True)
    if envelope.body is not None and len(data) > compress_over_bytes:
        frame["body"] = None
        frame["z"] = zlib.compress(msgpack.packb(envelope.body, use_bin_type=True), 6)
        data = msgpack.packb(frame, use_bin_type=True)
    if max_payload_bytes is not None and len(data) > max_payload_bytes:
        raise PayloadTooLargeError(
            f"{envelope.ref}: {len(data)} bytes after compression exceeds the {max_payload_bytes}-byte limit"
        )
    return data


def decode(data: bytes) -> Envelope:
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
    try:
        return Envelope.model_validate(frame)
    except ValidationError as exc:
        raise DecodeError(f"invalid envelope: {exc.error_count()} errors: {exc.errors()[0]['msg']} "
                          f"at {'.'.join(map(str, exc.errors()[0]['loc']))}") from exc
