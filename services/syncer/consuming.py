"""Durable consumption of one plan's stream with a bounded in-flight window.

Messages are pulled continuously (:mod:`services.syncer.pulling`) from a durable pull consumer
(explicit acks, ``max_ack_pending`` set) into a queue keyed by subject (:class:`KeyedQueue`): the
changes of one object apply in order, one at a time, while ``workers`` apply different objects in
parallel. A message is acknowledged only after its write succeeded (:meth:`PlanConsumer.settle`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from schemas import api, codec, sealing, subjects
from schemas.envelope import Envelope
from services.common import events, fencing, looping, plans, streams
from services.common.guarding import Guard
from services.common.keys import StreamKeys
from services.common.kube import KubeClient
from services.syncer import letters, metrics
from services.syncer.applying import PlanApplier
from services.syncer.budget import Budget, next_pull
from services.syncer.drift import DriftRepair
from services.syncer.keyed import KeyedQueue
from services.syncer.outcomes import PermanentError, TemporaryError, backoff
from services.syncer.progress import DeadLetter
from services.syncer.pulling import ConsumerGone, Pull, PullRefused
from services.syncer.requests import OperatorRequests
from services.syncer.settings import SyncerSettings
from services.syncer.status import Observed, due, plan_status, status_events

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
    guard: Guard
    budget: Budget  # shared by every plan of this syncer (services.syncer.budget)
    until_served: Callable[[], Awaitable[None]] = looping.at_once  # the plan's Lease (services.common.leasing)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    in_flight: int = 0  # this plan's share of the budget's window
    pending: int = 0  # in the stream, not yet delivered (as the last delivery said)
    unsettled: dict[int, Msg] = field(default_factory=dict)  # delivered, neither acked nor nakked yet

    def __post_init__(self) -> None:
        self.js: JetStreamContext = self.nc.jetstream()
        self.requests = OperatorRequests(self.plan, self.js, self.own, self.applier.progress,
                                         self.settings.nats.subject_prefix)

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
            num_replicas=self.settings.nats.consumer_replicas or None,
        )

    async def start(self) -> None:
        await streams.ensure_stream(self.js, self.settings.nats, self.plan.namespace, self.plan.name,
                                    self.plan.spec.history)
        # The API server's guard for this plan's copies, in place before any failover needs it.
        await fencing.bind(self.applier.dest, self.applier.fences.namespace, self.plan.key)
        await self.applier.warm()
        standing = await letters.read(self.js, self.stream, prefix=self.settings.nats.subject_prefix,
                                      plan_namespace=self.plan.namespace, plan_name=self.plan.name)
        for object_key, letter in standing.items():
            self.applier.progress.dead_lettered(object_key, letter)
        queue: KeyedQueue[Fetched] = KeyedQueue()
        key = self.plan.key
        self.tasks = [self.guard.start(f"apply {key} #{i}", lambda: self._worker(queue), kind="apply", plan=key)
                      for i in range(self.settings.consumer.workers)]
        self.tasks.append(self.guard.start(f"fetch {key}", lambda: self._fetch(queue), kind="fetch", plan=key))
        self.tasks.append(self.guard.start(f"status {key}", self._report, kind="status", plan=key))
        if self.settings.drift_check_seconds:
            repair = DriftRepair(self.applier, self.js, self.keys, self.own, self.settings.nats.subject_prefix,
                                 catching_up=lambda: self.pending > 0 or bool(self.applier.progress.unapplied))
            first_copy = not await streams.consumer_settled(self.js, self.stream,
                                                            self.settings.consumer.durable_name)
            self.tasks.append(self.guard.start(
                f"drift {key}", lambda: repair.run(self.settings.drift_check_seconds, first_copy=first_copy),
                kind="drift", plan=key))

    async def stop(self) -> None:
        """Stop, and hand back what was delivered and not settled: the replica that serves the plan
        next gets it at once rather than after the ack wait (a cancelled write is done again)."""
        await looping.cancel_all(self.tasks)
        self.tasks.clear()
        self.budget.give(self.in_flight)  # what waited in the queue: its room goes back to the other plans
        self.in_flight = 0
        unsettled, self.unsettled = list(self.unsettled.values()), {}
        try:
            for msg in unsettled:
                with contextlib.suppress(nats.errors.MsgAlreadyAckdError):  # its ack was cut short by the stop
                    await msg.nak()
            if unsettled:
                await self.nc.flush(timeout=2)
        except (nats.errors.Error, OSError) as exc:  # not connected: redelivered after the ack wait instead
            log.warning("could not hand back %d messages: %r", len(unsettled), exc, extra={"plan": self.plan.key})

    async def _fetch(self, queue: KeyedQueue[Fetched]) -> None:
        """Pull continuously into ``queue``, each request for room reserved in the budget's window;
        a deleted consumer is created again, any other failure retried after a pause."""
        pull = Pull(self.nc, self.stream, self.settings.consumer.durable_name)
        reserved = 0  # of the current request, not delivered yet
        asked: int | None = None  # by the current request

        async def room() -> int:
            nonlocal reserved, asked
            self.budget.give(reserved)  # what the request before did not use
            want = next_pull(self.settings.consumer.fetch_batch, last=asked,
                             used=(asked or 0) - reserved, share=self.budget.share)
            reserved = 0
            await self.until_served()  # nothing more is asked for while the plan's Lease lapsed
            reserved = asked = await self.budget.reserve(want)
            return reserved

        async def deliver(msg: Msg) -> None:
            nonlocal reserved
            if reserved:
                reserved -= 1
            else:
                self.budget.overdraw()
            self.in_flight += 1
            self.pending = msg.metadata.num_pending
            stored_at = msg.metadata.timestamp.timestamp()
            self.applier.progress.delivered(msg.metadata.sequence.stream, stored_at)
            self.unsettled[msg.metadata.sequence.stream] = msg
            metrics.fetched(time.time() - stored_at)
            queue.put(msg.subject, Fetched(msg, time.monotonic()))

        try:
            with self.budget.pulls():
                await self._pull(pull, room, deliver)
        finally:
            self.budget.give(reserved)

    async def _pull(self, pull: Pull, room: Callable[[], Awaitable[int]],
                    deliver: Callable[[Msg], Awaitable[None]]) -> None:
        while True:
            try:
                # Created, or its configuration kept current.
                await self.js.add_consumer(self.stream, self.consumer_config())
                await pull.run(room, deliver)
            except ConsumerGone as exc:
                log.warning("consumer gone, creating it again: %s", exc, extra={"plan": self.plan.key})
            except (PullRefused, nats.errors.Error, OSError) as exc:
                log.warning("cannot pull: %r; retrying", exc, extra={"plan": self.plan.key})
                await asyncio.sleep(self.settings.retry.initial_seconds)

    async def _worker(self, queue: KeyedQueue[Fetched]) -> None:
        while True:
            subject, item = await queue.get()
            try:
                async with self.budget.writes:
                    metrics.queued(time.monotonic() - item.at)
                    await self.settle(item.msg)
                self.unsettled.pop(item.msg.metadata.sequence.stream, None)
            finally:
                queue.done(subject)
                self.in_flight -= 1
                self.budget.give()

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
            delay = exc.delay if exc.delay is not None else self._retry_delay(deliveries)
            metrics.handled(self.plan.key, resource, "retry")
            log.info("retrying in %.1fs: %s", delay, exc.reason, extra={"plan": self.plan.key, "seq": seq})
            await msg.nak(delay=delay)
            return
        except (PermanentError, codec.DecodeError) as exc:
            reason = exc.reason if isinstance(exc, PermanentError) else "Undecodable"
            await self.dead_letter(msg, reason, str(exc))
            metrics.handled(self.plan.key, resource, "dead_letter")
            await msg.ack()
            self.applier.progress.settled(seq)
            return
        except Exception:  # a defect of ours, not the message's: never lost, never acknowledged
            delay = self._retry_delay(deliveries)
            metrics.handled(self.plan.key, resource, "error")
            log.exception("handling failed unexpectedly; retrying in %.1fs", delay,
                          extra={"plan": self.plan.key, "seq": seq})
            await msg.nak(delay=delay)
            return
        metrics.handled(self.plan.key, resource, done.outcome)
        await msg.ack()
        self.applier.progress.settled(seq)

    def _retry_delay(self, deliveries: int) -> float:
        return backoff(deliveries, initial=self.settings.retry.initial_seconds, cap=self.settings.retry.max_seconds)

    async def decode(self, data: bytes) -> Envelope:
        try:
            return await self.keys.decode(data)
        except sealing.UnknownKeyError as exc:  # the keys may yet be created or rotated in
            raise TemporaryError(f"cannot open a sealed Secret: {exc}", delay=10.0) from exc

    async def dead_letter(self, msg: Msg, reason: str, detail: str) -> None:
        prefix = self.settings.nats.subject_prefix
        try:
            key = subjects.parse_subject(msg.subject, prefix=prefix).key
        except subjects.SubjectError:
            key = None
        letter = DeadLetter(reason, detail[:2000], msg.subject, msg.metadata.sequence.stream, time.time())
        self.applier.progress.dead_lettered(key, letter)
        metrics.dead_letter(self.plan.key, reason)
        log.error("dead-lettered: %s", detail[:500], extra={"plan": self.plan.key, "reason": reason,
                                                            "seq": msg.metadata.sequence.stream})
        await self.js.publish(subjects.dead_letter_subject(prefix, msg.subject), msg.data,
                              headers=letters.headers(letter), stream=self.stream)

    async def _report(self) -> None:
        """Write the plan's status when what it shows changed (:func:`~services.syncer.status.due`),
        looking every ``status_interval_seconds``."""
        last: api.RecoveryPlanStatus | None = None
        written_at = 0.0
        while True:
            await asyncio.sleep(self.settings.status_interval_seconds)
            progress = self.applier.progress
            status = plan_status(progress, Observed(
                generation=self.plan.generation, stream_reachable=self.nc.is_connected, undelivered=self.pending,
                breaker=self.applier.breaker.status(),
                fenced=self.applier.fences.fenced(self.plan.key) is not None,
                fence_fresh=self.applier.fences.fresh(), now=time.time()))
            metrics.plan_counts(self.plan.key, in_sync=status.objects_in_sync, out_of_sync=status.objects_out_of_sync,
                                backlog=self.pending, behind_seconds=status.pending_change_age_seconds)
            if due(last, status, since_written=time.monotonic() - written_at,
                   progress_every=self.settings.status_progress_seconds) and await plans.write_plan_status(
                    self.own, self.plan, status,
                    conditions_written=last is not None and status.conditions == last.conditions):
                for type_, reason, message in status_events(last, status):
                    await events.record(self.own, events.Involved.plan(self.plan), type_=type_, reason=reason,
                                        message=message, component="standby-syncer")
                last, written_at = status, time.monotonic()
