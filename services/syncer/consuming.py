"""Durable consumption of one plan's stream with a bounded in-flight window.

Messages are pulled continuously (:mod:`services.syncer.pulling`) from a durable pull consumer
(explicit acks, ``max_ack_pending`` set) into a queue keyed by subject (:class:`KeyedQueue`): the
changes of one object apply in order, one at a time, while ``workers`` apply different objects in
parallel. A message is acknowledged only after its write succeeded (:meth:`PlanConsumer.settle`)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from schemas import annotations as ann
from schemas import codec, sealing, subjects
from schemas.envelope import Envelope
from services.common import looping, plans, streams
from services.common.keys import StreamKeys
from services.common.kube import KubeClient
from services.syncer import metrics
from services.syncer.applying import PlanApplier
from services.syncer.keyed import KeyedQueue
from services.syncer.outcomes import PermanentError, TemporaryError, backoff
from services.syncer.pulling import ConsumerGone, Pull, PullRefused
from services.syncer.settings import SyncerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fetched:
    msg: Msg
    at: float  # monotonic time the fetch returned it


@dataclass
class PlanConsumer:
    plan: plans.Plan
    applier: PlanApplier
    nc: Client
    own: KubeClient
    settings: SyncerSettings
    keys: StreamKeys
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    in_flight: int = 0
    last_sequence: int = 0
    pending: int = 0

    def __post_init__(self) -> None:
        self.js: JetStreamContext = self.nc.jetstream()

    @property
    def stream(self) -> str:
        return subjects.stream_name(self.plan.namespace, self.plan.name)

    def consumer_config(self) -> js_api.ConsumerConfig:
        c = self.settings.consumer
        return js_api.ConsumerConfig(
            durable_name=c.durable_name, ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL, ack_wait=c.ack_wait_seconds,
            max_ack_pending=c.max_ack_pending, max_deliver=c.max_deliver,
            filter_subject=subjects.plan_filter(self.settings.nats.subject_prefix, self.plan.namespace, self.plan.name),
        )

    async def start(self) -> None:
        await streams.ensure_stream(self.js, self.settings.nats, self.plan.namespace, self.plan.name)
        await self.applier.warm()
        queue: KeyedQueue[Fetched] = KeyedQueue()
        window = asyncio.Semaphore(self.settings.consumer.max_ack_pending)
        self.tasks = [asyncio.create_task(self._worker(queue, window), name=f"apply {self.plan.key} #{i}")
                      for i in range(self.settings.consumer.workers)]
        self.tasks.append(asyncio.create_task(self._fetch(queue, window), name=f"fetch {self.plan.key}"))
        self.tasks.append(asyncio.create_task(self._report(), name=f"status {self.plan.key}"))

    async def stop(self) -> None:
        await looping.cancel_all(self.tasks)
        self.tasks.clear()

    async def _fetch(self, queue: KeyedQueue[Fetched], window: asyncio.Semaphore) -> None:
        """Pull continuously into ``queue``, never holding more than the window; a deleted consumer
        is created again, any other failure retried after a pause."""
        pull = Pull(self.nc, self.stream, self.settings.consumer.durable_name)

        async def room() -> int:
            await window.acquire()  # at least one slot is free
            window.release()
            free = self.settings.consumer.max_ack_pending - self.in_flight
            return max(1, min(self.settings.consumer.fetch_batch, free))

        async def deliver(msg: Msg) -> None:
            await window.acquire()
            self.in_flight += 1
            self.pending = msg.metadata.num_pending
            metrics.fetched(time.time() - msg.metadata.timestamp.timestamp())
            queue.put(msg.subject, Fetched(msg, time.monotonic()))

        while True:
            try:
                await self.js.add_consumer(self.stream, self.consumer_config())  # created, or its config kept current
                await pull.run(room, deliver)
            except ConsumerGone as exc:
                log.warning("consumer gone, creating it again: %s", exc, extra={"plan": self.plan.key})
            except (PullRefused, nats.errors.Error, OSError) as exc:
                log.warning("cannot pull: %r; retrying", exc, extra={"plan": self.plan.key})
                await asyncio.sleep(self.settings.retry.initial_seconds)

    async def _worker(self, queue: KeyedQueue[Fetched], window: asyncio.Semaphore) -> None:
        while True:
            subject, item = await queue.get()
            metrics.queued(time.monotonic() - item.at)
            try:
                await self.settle(item.msg)
            finally:
                queue.done(subject)
                self.in_flight -= 1
                window.release()

    async def settle(self, msg: Msg) -> None:
        """The one place a message's fate is decided: ack, nak with delay, or dead letter."""
        seq = msg.metadata.sequence.stream
        deliveries = msg.metadata.num_delivered
        resource = "unknown"
        try:
            env = await self.decode(msg.data)
            resource = env.ref.resource
            done = await self.applier.handle(env, seq)
        except TemporaryError as exc:
            delay = exc.delay if exc.delay is not None else backoff(
                deliveries, initial=self.settings.retry.initial_seconds, cap=self.settings.retry.max_seconds)
            metrics.handled(self.plan.key, resource, "retry")
            log.info("retrying in %.1fs: %s", delay, exc.reason, extra={"plan": self.plan.key, "seq": seq})
            await msg.nak(delay=delay)
            return
        except (PermanentError, codec.DecodeError) as exc:
            reason = exc.reason if isinstance(exc, PermanentError) else "Undecodable"
            await self.dead_letter(msg, reason, str(exc))
            metrics.handled(self.plan.key, resource, "dead_letter")
            await msg.ack()
            return
        metrics.handled(self.plan.key, resource, done.outcome)
        self.last_sequence = max(self.last_sequence, seq)
        await msg.ack()

    async def decode(self, data: bytes) -> Envelope:
        try:
            return await self.keys.decode(data)
        except sealing.UnknownKeyError as exc:  # the keys may yet be created or rotated in
            raise TemporaryError(f"cannot open a sealed Secret: {exc}", delay=10.0) from exc

    async def dead_letter(self, msg: Msg, reason: str, detail: str) -> None:
        subject = subjects.dead_letter_subject(self.settings.nats.subject_prefix, self.plan.namespace,
                                               self.plan.name)
        self.applier.failed.add(msg.subject)
        metrics.dead_letter(self.plan.key, reason)
        log.error("dead-lettered: %s", detail[:500], extra={"plan": self.plan.key, "reason": reason,
                                                            "seq": msg.metadata.sequence.stream})
        await self.js.publish(subject, msg.data, headers={
            streams.HDR_REASON: reason, "Standby-Detail": detail[:2000], "Standby-Subject": msg.subject,
            "Standby-Sequence": str(msg.metadata.sequence.stream),
            "Nats-Msg-Id": f"dlq:{msg.metadata.sequence.stream}"})

    async def _report(self) -> None:
        last: dict[str, Any] = {}
        while True:
            await asyncio.sleep(self.settings.status_interval_seconds)
            a = self.applier
            out_of_sync = self.pending + self.in_flight
            metrics.plan_counts(self.plan.key, in_sync=len(a.cache), out_of_sync=out_of_sync, backlog=self.pending)
            conditions = [
                plans.condition("Synced", out_of_sync == 0 and not a.failed,
                                "UpToDate" if out_of_sync == 0 else "CatchingUp",
                                f"{out_of_sync} changes pending, {len(a.failed)} failed"),
                plans.condition("Degraded", bool(a.failed) or a.breaker_open,
                                "DeleteBreakerOpen" if a.breaker_open else ("DeadLetters" if a.failed else "Healthy"),
                                f"mass deletion refused since {a.breaker_opened_at}; check the source, then set the "
                                f"annotation {ann.DELETE_BREAKER_RESET} on this plan to a new value to let the "
                                f"deletions through" if a.breaker_open else ""),
            ]
            if self.applier.fences.fenced(self.plan.key):
                phase = "Activated"
            elif a.breaker_open or a.failed:
                phase = "Degraded"
            else:
                phase = "Synced" if out_of_sync == 0 else "Syncing"
            status = {
                "phase": phase, "objectsInSync": len(a.cache), "objectsOutOfSync": out_of_sync,
                "objectsFailed": len(a.failed), "streamSequence": self.last_sequence,
                "replicationLagSeconds": round(a.last_lag_seconds, 3) if a.last_lag_seconds is not None else None,
                "lastEventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a.last_applied_at))
                if a.last_applied_at else None,
                "observedGeneration": self.plan.generation,
                "deleteBreaker": {"open": a.breaker_open, "openedAt": a.breaker_opened_at,
                                  "resetSeen": a.breaker_reset_seen},
            }
            if status != last:
                await plans.set_plan_conditions(self.own, self.plan, conditions, **status)
                last = status
