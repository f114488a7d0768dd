"""The stream keys, read from a Kubernetes Secret in the service's own cluster.

The watcher seals Secret bodies with the active key; the syncer and recovery open them with any key
the Secret holds. The Secret is read when first needed and again when older than ``max_age``, or,
at most every ``retry_after``, when a reader meets a key it does not hold (the Secret was rotated
after it was read). A failed read keeps the keyring already held: a blip of the API server never
takes the keys away."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from typing import Any

from schemas import codec, sealing
from schemas.envelope import Envelope
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.common.settings import NAMESPACE, STREAM_KEYS_SECRET, NatsSettings

log = logging.getLogger(__name__)
DEFAULT_SECRET = STREAM_KEYS_SECRET  # the settings' default (stream_keys_secret)


def secret_manifest(keyring: sealing.Keyring, *, name: str = DEFAULT_SECRET,
                    namespace: str = NAMESPACE) -> dict[str, Any]:
    """The Secret that holds ``keyring``: an ``active`` entry naming the key to seal with, and one
    entry per key (32 bytes)."""
    data = {sealing.ACTIVE: keyring.active.encode(), **keyring.keys}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "standby"}},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def keyring_of(secret: dict[str, Any]) -> sealing.Keyring:
    """The keyring a Secret holds; :class:`~schemas.sealing.SealingError` if it holds none."""
    try:
        data = {k: base64.b64decode(v, validate=True) for k, v in (secret.get("data") or {}).items()}
    except (binascii.Error, TypeError) as exc:
        raise sealing.SealingError(f"data is not base64: {exc}") from exc
    return sealing.Keyring.from_secret_data(data)


class StreamKeys:
    def __init__(self, client: KubeClient, namespace: str, name: str, *, max_age: float = 60.0,
                 retry_after: float = 2.0) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.max_age = max_age
        self.retry_after = retry_after
        self.problem: str | None = None
        self._keyring: sealing.Keyring | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    @classmethod
    def of_service(cls, client: KubeClient, namespace: str, nats: NatsSettings) -> StreamKeys:
        """The keys Secret a service reads: named and re-read as its NATS settings say."""
        return cls(client, namespace, nats.stream_keys_secret, max_age=nats.stream_keys_refresh_seconds)

    @property
    def where(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    @property
    def held(self) -> sealing.Keyring | None:
        """The keyring as last read, without reading."""
        return self._keyring

    async def keyring(self, *, fresh: bool = False) -> sealing.Keyring | None:
        """The keyring, re-read when stale; ``fresh`` asks for a re-read (rate limited), e.g. after
        meeting an unknown key."""
        async with self._lock:
            age = time.monotonic() - self._read_at
            if age > (self.retry_after if fresh or self._keyring is None else self.max_age):
                await self._read()
            return self._keyring

    async def decode(self, data: bytes) -> Envelope:
        """:func:`schemas.codec.decode` with the keys held, re-read once if the message was sealed
        under a key not held yet; still unknown: :class:`~schemas.sealing.UnknownKeyError`."""
        try:
            return codec.decode(data, keyring=self._keyring)
        except sealing.UnknownKeyError:
            keyring = await self.keyring(fresh=True)
            try:
                return codec.decode(data, keyring=keyring)
            except sealing.UnknownKeyError as exc:
                raise sealing.UnknownKeyError(f"{exc}{f' ({self.problem})' if self.problem else ''}") from None

    async def _read(self) -> None:
        self._read_at = time.monotonic()
        try:
            secret = await self.client.get(f"/api/v1/namespaces/{self.namespace}/secrets/{self.name}")
            keyring = keyring_of(secret)
        except ApiError as exc:
            self._failed(f"{self.where} cannot be read: {exc.status} {exc.reason}")
        except UnreachableError as exc:
            self._failed(f"{self.where} cannot be read: {exc}")
        except sealing.SealingError as exc:
            self._failed(f"{self.where} is not a valid stream keyring: {exc}")
        else:
            if self._keyring is None or self._keyring != keyring:
                log.info("stream keys loaded from %s (active key %s, %d keys)", self.where, keyring.active,
                         len(keyring.keys))
            self._keyring, self.problem = keyring, None

    def _failed(self, problem: str) -> None:
        if problem != self.problem:
            log.error("%s%s", problem, "; keeping the keys read before" if self._keyring else "")
        self.problem = problem
