"""What the watcher reads back from a plan's stream before it lists: the last message of each
subject (headers only), against a real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext
from nats.js import api as js_api

from schemas import subjects
from services.common import plans, records, streams
from services.devenv.natsd import LocalNats
from tests.support import env as h


@pytest.fixture
async def js(nats_server: LocalNats) -> AsyncIterator[tuple[JetStreamContext, str]]:
    nc = await nats.connect(nats_server.url, user=nats_server.user, password=nats_server.password)
    js = nc.jetstream()
    name = f"STATES-{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    try:
        yield js, name
    finally:
        await js.delete_stream(name)
        await nc.close()


async def publish(js: JetStreamContext, subject: str, type_: str, rv: str, key: str = "") -> int:
    headers = {streams.HDR_TYPE: type_, streams.HDR_RV: rv, streams.HDR_UID: f"uid-{subject}"}
    if key:
        headers[streams.HDR_KEY] = key
    return (await js.publish(subject, b"body", headers=headers)).seq


async def consumers(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.consumer_count


async def test_the_last_message_of_each_subject_under_the_filter(js: tuple[JetStreamContext, str]) -> None:
    js_, s = js
    await publish(js_, f"{s}.cm.a", "UPSERT", "1")
    last_a = await publish(js_, f"{s}.cm.a", "UPSERT", "2", key="k2")
    last_b = await publish(js_, f"{s}.cm.b", "DELETE", "3")
    await publish(js_, f"{s}.deploy.c", "UPSERT", "4")

    states = await streams.last_states(js_, s, f"{s}.cm.>")

    assert states == {f"{s}.cm.a": streams.SubjectState("UPSERT", "2", f"uid-{s}.cm.a", last_a, "k2"),
                      f"{s}.cm.b": streams.SubjectState("DELETE", "3", f"uid-{s}.cm.b", last_b, "")}


async def test_nothing_under_the_filter_is_answered_without_reading(js: tuple[JetStreamContext, str]) -> None:
    """An empty stream, or one holding only other resources (a new plan's first LIST), is answered
    from the stream's info: no consumer, no fetch waiting for its timeout."""
    js_, s = js
    assert await streams.last_states(js_, s, f"{s}.cm.>") == {}
    await publish(js_, f"{s}.deploy.c", "UPSERT", "4")
    assert await streams.last_states(js_, s, f"{s}.cm.>") == {}
    assert await consumers(js_, s) == 0
    assert set(await streams.last_states(js_, s, f"{s}.deploy.>")) == {f"{s}.deploy.c"}


async def test_a_plan_is_recorded_once_per_generation_even_after_the_duplicate_window(
        nats_server: LocalNats) -> None:
    """A restarted watcher records the plan again; the message id deduplicates that only within the
    stream's duplicate window (the scale benchmark's restart published one message per plan)."""
    ns, name = "standby-system", f"rec-{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(nats_server.url, user=nats_server.user, password=nats_server.password)
    js = nc.jetstream()
    stream = subjects.stream_name(ns, name)
    await js.add_stream(name=stream, subjects=[subjects.plan_record_subject("standby", ns, name)],
                        duplicate_window=0.2)
    try:
        def plan(generation: int) -> plans.Plan:
            return plans.parse_plan(h.plan_body(name, [{"version": "v1", "resource": "configmaps"}]) | {
                "metadata": {"name": name, "namespace": ns, "uid": "uid-1", "generation": generation}})

        await records.publish(js, "standby", plan(1))
        await asyncio.sleep(0.5)  # past the duplicate window
        await records.publish(js, "standby", plan(1))
        assert (await js.stream_info(stream)).state.messages == 1
        await records.publish(js, "standby", plan(2))
        assert (await js.stream_info(stream)).state.messages == 2
        recorded = await records.recorded(js, "standby", ns, name)
        assert recorded is not None and recorded.plan.generation == 2
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_a_consumer_has_settled_once_it_acknowledged_a_message(js: tuple[JetStreamContext, str]) -> None:
    """Drift repair's first check waits a whole interval for a plan whose consumer never settled
    anything (a first copy: every state in the stream is on its way)."""
    js_, s = js
    await publish(js_, f"{s}.cm.a", "UPSERT", "1")
    assert not await streams.consumer_settled(js_, s, "syncer")  # no consumer yet
    await js_.add_consumer(s, js_api.ConsumerConfig(durable_name="syncer", ack_policy=js_api.AckPolicy.EXPLICIT))
    assert not await streams.consumer_settled(js_, s, "syncer")  # created, nothing acknowledged
    sub = await js_.pull_subscribe_bind("syncer", stream=s)
    [msg] = await sub.fetch(1, timeout=5)
    await msg.ack_sync()
    assert await streams.consumer_settled(js_, s, "syncer")
