"""Pipelined, deduplicated publishing of envelopes to a plan's stream.

Publishes are not awaited one by one (that caps at ~1,200 msg/s here); up to ``window`` are in
flight. A publish that fails is reported to its caller's ``on_failure`` so the resource watch can
re-list: the stream is compared with the source on every list, so nothing is lost. Nothing is
published while this replica may not serve the plan (``until_served``: its Lease lapsed); the
watches wait meanwhile, and go on from where they were once it is renewed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.api import PubAck

from schemas import codec, sealing, subjects
from schemas.envelope import Envelope
from services.common import looping, streams
from services.common.keys import StreamKeys
from services.watcher import metrics

log = logging.getLogger(__name__)


class KeysUnavailableError(Exception):
    """A Secret cannot be published: there is no stream key to seal it with (retried, never sent in clear)."""


class Publisher:
    def __init__(self, js: JetStreamContext, *, stream: str, window: int, keys: StreamKeys,
                 max_payload_bytes: int, compress_over_bytes: int, ack_timeout_seconds: float = 10.0,
                 until_served: Callable[[], Awaitable[None]] = looping.at_once) -> None:
        self.until_served = until_served
        self.ack_timeout_seconds = ack_timeout_seconds
        self.keys = keys
        self.js = js
        self.stream = stream
        self.max_payload_bytes = max_payload_bytes
        self.compress_over_bytes = compress_over_bytes
        self._window = asyncio.Semaphore(window)
        self._pending: set[asyncio.Future[PubAck]] = set()

    async def publish(self, env: Envelope, *, subject: str, on_failure: Callable[[BaseException], None],
                      on_ack: Callable[[PubAck], None] | None = None) -> bool:
        """Queue one envelope. Returns False when it was refused (too large) with a metric and a log;
        raises :class:`KeysUnavailableError` for a Secret when no stream key can be read."""
        plan = f"{env.plan_namespace}/{env.plan_name}"
        sealed = env.body is not None and sealing.sealed_resource(env.ref.group, env.ref.resource)
        keyring = await self.keys.keyring() if sealed else None
        if sealed and keyring is None:
            raise KeysUnavailableError(self.keys.problem or f"no stream keys in {self.keys.where}")
        try:
            data = codec.encode(env, compress_over_bytes=self.compress_over_bytes,
                                max_payload_bytes=self.max_payload_bytes, keyring=keyring)
        except codec.PayloadTooLargeError as exc:
            metrics.refused(plan, env.ref.resource, "too_large")
            log.error("object refused: %s", exc, extra={"plan": plan, "ref": env.ref,
                                                         "rv": env.source_resource_version})
            return False
        message_id = subjects.message_id(source_uid=env.source_uid, resource_version=env.source_resource_version,
                                         event_type=env.type.value)
        headers = {
            "Nats-Msg-Id": message_id,
            streams.HDR_TYPE: env.type.value,
            streams.HDR_RV: env.source_resource_version,
            streams.HDR_UID: env.source_uid,
        }
        if keyring is not None:  # sealed: the same version sealed under another key is a new message
            headers[streams.HDR_KEY] = keyring.active
            headers["Nats-Msg-Id"] = f"{message_id}.{keyring.active}"
        await self.until_served()
        await self._window.acquire()
        started = time.monotonic()
        try:
            future = await self.js.publish_async(subject, data, headers=headers, stream=self.stream)
        except BaseException:
            self._window.release()
            raise

        def done(fut: asyncio.Future[PubAck]) -> None:
            self._pending.discard(fut)
            self._window.release()
            if fut.cancelled():
                on_failure(asyncio.CancelledError())
                return
            exc = fut.exception()
            if exc is not None:
                metrics.error(plan, "publish")
                on_failure(exc)
                return
            metrics.published(plan, env.ref.resource, env.type.value, time.monotonic() - started)
            if on_ack is not None:
                on_ack(fut.result())

        self._pending.add(future)
        future.add_done_callback(done)
        # publish_async never times out by itself: a lost PubAck must not hold the window forever.
        timer = asyncio.get_running_loop().call_later(self.ack_timeout_seconds, future.cancel)
        future.add_done_callback(lambda _: timer.cancel())
        return True

    async def flush(self, timeout: float = 30.0) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)
