"""JetStream plumbing shared by watcher, syncer and recovery: connecting, the per-plan stream
(created and reconfigured idempotently), and reading the last state of every subject.

One stream per plan: a plan's history, limits and deletion are then independent of the others,
and a rebuild or a ``fromOriginal`` reads only its own plan. The stream is limits-retention with a
bounded per-subject history, so it compacts itself and always holds the latest state of every
protected object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from schemas import api, subjects
from services.common.settings import NatsSettings

log = logging.getLogger(__name__)

HDR_TYPE = "Standby-Type"
HDR_RV = "Standby-Rv"
HDR_UID = "Standby-Uid"
HDR_KEY = "Standby-Key"  # the stream key a sealed body was sealed with (absent: not sealed)
HDR_REASON = "Standby-Reason"


@dataclass
class BrokerOutages:
    """Says one thing per broker outage: a warning when the connection is lost, one when it is back
    (with how long it lasted), and the first error of an outage. nats-py's default logs a traceback
    for every failed reconnection attempt (every ``reconnect_time_wait``)."""

    name: str
    clock: Callable[[], float] = time.monotonic
    closed: Callable[[], bool] = lambda: False  # the connection was closed on purpose (a stop)
    lost_at: float | None = None
    errors: int = 0

    async def disconnected(self) -> None:
        if self.closed():  # nats-py says "disconnected" on a close too: nothing was lost
            return
        if self.lost_at is None:
            self.lost_at = self.clock()
            log.warning("%s lost the broker; reconnecting", self.name)

    async def reconnected(self) -> None:
        if self.lost_at is not None:
            log.warning("%s reached the broker again after %.1fs (%d failed attempts)", self.name,
                        self.clock() - self.lost_at, self.errors)
        self.lost_at, self.errors = None, 0

    async def error(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1:
            log.warning("%s: broker error: %r", self.name, exc)
        else:
            log.debug("%s: broker error: %r", self.name, exc)


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """TLS to the servers when a CA is given or a URL says tls:// (then the system's CAs)."""
    if settings.tls_ca is None and not any(u.startswith("tls://") for u in settings.servers):
        return None
    context = ssl.create_default_context(cafile=str(settings.tls_ca) if settings.tls_ca else None)
    if settings.tls_cert is not None and settings.tls_key is not None:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return context


async def connect(settings: NatsSettings, *, name: str) -> Client:
    """A connection that reconnects for ever, to any of the servers (a cluster's nodes and the ones
    they announce)."""
    nc = Client()
    outages = BrokerOutages(name, closed=lambda: nc.is_closed)
    await nc.connect(
        settings.servers,
        user=settings.user,
        password=settings.password.get_secret_value() if settings.password else None,
        user_credentials=str(settings.credentials_file) if settings.credentials_file else None,
        tls=tls_context(settings),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # annotated int; a float of seconds works (it sleeps)
        connect_timeout=5,
        allow_reconnect=True,
        error_cb=outages.error,
        disconnected_cb=outages.disconnected,
        reconnected_cb=outages.reconnected,
    )
    return nc


def stream_config(settings: NatsSettings, plan_namespace: str, plan_name: str,
                  history: api.History) -> js_api.StreamConfig:
    """No ``max_age``: the server would drop an object's latest state once it is older than that, and
    a rebuild would silently miss every object that has not changed for as long. The plan's
    ``history.maxAge`` is kept by :mod:`services.watcher.history` instead, which never does."""
    prefix = settings.subject_prefix
    return js_api.StreamConfig(
        name=subjects.stream_name(plan_namespace, plan_name),
        subjects=[
            subjects.plan_filter(prefix, plan_namespace, plan_name),
            subjects.dead_letter_filter(prefix, plan_namespace, plan_name),
            subjects.horizon_subject(prefix, plan_namespace, plan_name),
            subjects.plan_record_subject(prefix, plan_namespace, plan_name),
        ],
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        max_msgs_per_subject=history.states_per_object or -1,
        max_msg_size=settings.max_payload_bytes,
        max_age=0,
        duplicate_window=settings.duplicate_window_seconds,
        discard=js_api.DiscardPolicy.OLD,
        allow_direct=True,
        num_replicas=settings.stream_replicas,
        description=f"Standby plan {plan_namespace}/{plan_name}",
    )


async def ensure_stream(js: JetStreamContext, settings: NatsSettings, plan_namespace: str, plan_name: str,
                        history: api.History) -> js_api.StreamInfo:
    """Create the plan's stream, or bring an existing one to the plan's configuration (a changed
    ``spec.history`` updates it; states beyond a lowered ``statesPerObject`` are dropped then)."""
    config = stream_config(settings, plan_namespace, plan_name, history)
    try:
        info = await js.stream_info(config.name)  # type: ignore[arg-type]
    except NotFoundError:
        return await js.add_stream(config)
    if not differs(info.config, config):
        return info
    return await js.update_stream(config)


# What ensure_stream sets (the rest is the server's defaults).
_ENSURED = ("retention", "storage", "max_msgs_per_subject", "max_msg_size", "max_age", "duplicate_window",
            "discard", "allow_direct", "num_replicas")


def differs(have: js_api.StreamConfig, want: js_api.StreamConfig) -> bool:
    """Whether the stream must be updated to ``want``. Updated only then: the watcher and the syncer
    both ensure a plan's stream when they start it, and on a JetStream cluster an update goes
    through the meta leader (an update racing the stream's creation by the other waited out its
    whole request timeout: every new plan started 5 s late)."""
    return set(have.subjects or []) != set(want.subjects or []) or any(
        getattr(have, f) != getattr(want, f) for f in _ENSURED)


@dataclass(frozen=True, slots=True)
class SubjectState:
    type: str
    resource_version: str
    uid: str
    sequence: int
    key: str = ""


@dataclass(frozen=True, slots=True)
class LastMessage:
    """The last message of one subject: its headers (and body, unless only headers were asked)."""

    subject: str
    headers: dict[str, str]
    sequence: int
    stored_at: float  # unix time
    data: bytes = b""


async def consumer_settled(js: JetStreamContext, stream: str, durable: str) -> bool:
    """Whether the durable consumer exists and has acknowledged a message: a consumer that has not
    delivers every state in the stream from the first. True when it cannot be told (the broker does
    not answer): the caller then acts as for a consumer that has."""
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        return False
    except (nats.errors.Error, TimeoutError):
        return True
    return bool(info.ack_floor and info.ack_floor.stream_seq)


async def last_states(js: JetStreamContext, stream: str, filter_subject: str,
                      *, timeout: float = 10.0) -> dict[str, SubjectState]:
    """The last message of every subject under ``filter_subject``, headers only (cheap)."""
    last = await last_messages(js, stream, filter_subject, timeout=timeout)
    return {subject: SubjectState(m.headers.get(HDR_TYPE, ""), m.headers.get(HDR_RV, ""), m.headers.get(HDR_UID, ""),
                                  m.sequence, m.headers.get(HDR_KEY, ""))
            for subject, m in last.items()}


async def last_messages(js: JetStreamContext, stream: str, filter_subject: str, *, headers_only: bool = True,
                        timeout: float = 10.0) -> dict[str, LastMessage]:
    """The last message of every subject under ``filter_subject``, read by an ephemeral consumer
    that delivers the last message per subject."""
    info = await js.stream_info(stream, subjects_filter=filter_subject)
    # The server leaves the subjects out when none matches the filter (and sends at most the first
    # 100,000 of a larger set): nothing to read then, and no reason to wait for a fetch to time out.
    expected = len(info.state.subjects or {})
    found: dict[str, LastMessage] = {}
    if expected == 0:
        return found
    sub = await js.pull_subscribe(
        filter_subject, stream=stream,
        config=js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT, ack_policy=js_api.AckPolicy.NONE,
            headers_only=headers_only, inactive_threshold=30, mem_storage=True,
        ),
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                batch = await sub.fetch(1000, timeout=1.0)
            except TimeoutError:
                batch = []
            for msg in batch:
                found[msg.subject] = LastMessage(msg.subject, dict(msg.headers or {}), msg.metadata.sequence.stream,
                                                 msg.metadata.timestamp.timestamp(),
                                                 b"" if headers_only else msg.data)
                if msg.metadata.num_pending == 0:
                    return found
            if not batch and len(found) >= expected:
                return found
            if loop.time() > deadline:
                raise TimeoutError(f"reading last messages of {filter_subject} took over {timeout}s")
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


@dataclass(frozen=True, slots=True)
class Scanned:
    """One message of a scan, in stream order."""

    subject: str
    sequence: int
    stored_at: float  # unix time
    headers: dict[str, str]
    data: bytes = b""


def delivery_position(reply: str) -> tuple[int, int, int]:
    """(stream sequence, stored time in ns, pending) from a JetStream delivery's reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``, or the form with a
    domain and account hash (two tokens more after ``$JS.ACK``, one random token at the end).
    Parsed here rather than through ``Msg.metadata``: a scan reads every message of a stream."""
    tokens = reply.split(".")
    shift = 0 if len(tokens) == 9 else 2
    if len(tokens) not in (9, 11, 12) or tokens[:2] != ["$JS", "ACK"]:
        raise ValueError(f"not a JetStream delivery: {reply!r}")
    return int(tokens[5 + shift]), int(tokens[7 + shift]), int(tokens[8 + shift])


async def scan(js: JetStreamContext, stream: str, filter_subject: str, *, headers_only: bool = False,
               until: float | None = None, queue_size: int = 10_000) -> AsyncIterator[Scanned]:
    """Every message under ``filter_subject`` in stream order, up to the last one stored at or before
    ``until`` (unix time; None: all of them now), read by an ordered push consumer (flow-controlled,
    recreated by the client on a gap). The consumer goes when the iteration ends."""
    info = await js.stream_info(stream, subjects_filter=filter_subject)
    if not info.state.subjects:
        return
    queue: asyncio.Queue[Scanned | None] = asyncio.Queue(maxsize=queue_size)

    async def delivered(msg: Msg) -> None:
        sequence, stamp, pending = delivery_position(msg.reply)
        stored_at = stamp / 1e9
        if until is not None and stored_at > until:
            await queue.put(None)
            return
        await queue.put(Scanned(msg.subject, sequence, stored_at, dict(msg.headers or {}),
                                b"" if headers_only else msg.data))
        if pending == 0:
            await queue.put(None)

    sub = await js.subscribe(filter_subject, stream=stream, cb=delivered, ordered_consumer=True,
                             headers_only=headers_only or None, pending_msgs_limit=-1, pending_bytes_limit=-1)
    try:
        while (item := await queue.get()) is not None:
            yield item
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
