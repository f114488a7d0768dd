"""The history keeper against a real nats-server: a plan's stream held to ``spec.history.maxAge``
without losing any object's state at the cut (the stream has no ``max_age`` of its own)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from schemas import api, subjects
from services.common import history, plans, settings, streams
from services.common.history import HDR_HORIZON, recorded_horizon, rfc3339
from services.devenv.natsd import LocalNats
from services.watcher.history import HistoryKeeper
from tests.support import env as h

NATS = settings.NatsSettings()


def plan(max_age: str = "1h", states: int = 100) -> plans.Plan:
    name = f"hist-{uuid.uuid4().hex[:6]}"
    return plans.parse_plan(h.plan_body(name, [{"version": "v1", "resource": "configmaps"}],
                                        history={"maxAge": max_age, "statesPerObject": states}))


@pytest.fixture
async def js(nats_server: LocalNats) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url, user=nats_server.user, password=nats_server.password)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


def subject(p: plans.Plan, name: str) -> str:
    return subjects.object_subject(prefix="standby", plan_namespace=p.namespace, plan_name=p.name, group="",
                                   version="v1", resource="configmaps", namespace="ns", name=name)


async def publish(js: JetStreamContext, p: plans.Plan, name: str, type_: str, rv: int) -> int:
    ack = await js.publish(subject(p, name), f"{name}@{rv}".encode(), stream=subjects.stream_name(p.namespace, p.name),
                           headers={streams.HDR_TYPE: type_, streams.HDR_RV: str(rv), streams.HDR_UID: name})
    return ack.seq


async def a_moment() -> float:
    """A moment between two changes stored before and after it."""
    await asyncio.sleep(0.02)
    at = time.time()
    await asyncio.sleep(0.02)
    return at


async def remaining(js: JetStreamContext, p: plans.Plan) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    async for m in streams.scan(js, subjects.stream_name(p.namespace, p.name),
                                subjects.plan_filter("standby", p.namespace, p.name)):
        out.setdefault(m.subject.rsplit(".", 1)[1], []).append(m.data)
    return out


async def test_states_before_the_cut_go_except_each_objects_state_at_the_cut(js: JetStreamContext) -> None:
    p = plan()
    await streams.ensure_stream(js, NATS, p.namespace, p.name, p.spec.history)
    for rv, (name, type_) in enumerate([("idle", "UPSERT"), ("busy", "UPSERT"), ("busy", "UPSERT"),
                                        ("gone", "UPSERT"), ("gone", "DELETE"), ("back", "UPSERT"),
                                        ("back", "DELETE")], start=1):
        await publish(js, p, name, type_, rv)
    await asyncio.sleep(0.05)
    cut = time.time()
    await asyncio.sleep(0.05)
    await publish(js, p, "busy", "UPSERT", 8)
    await publish(js, p, "back", "UPSERT", 9)

    keeper = HistoryKeeper(p, js, "standby", clock=lambda: cut + 3600)
    assert await keeper.compact() == 3  # busy (an older state), gone (deleted), back (its tombstone)

    assert await remaining(js, p) == {
        "idle": [b"idle@1"],                 # its latest state: never dropped, however old
        "busy": [b"busy@3", b"busy@8"],      # its state at the cut, and the later one
        "back": [b"back@9"],                 # absent at the cut: created again since
    }
    stream = subjects.stream_name(p.namespace, p.name)
    horizon = await recorded_horizon(js, stream, subjects.horizon_subject("standby", p.namespace, p.name))
    assert horizon == pytest.approx(cut, abs=0.002)
    assert await keeper.compact() == 0  # nothing more to drop


async def test_the_horizon_never_moves_back(js: JetStreamContext) -> None:
    """A later cut that would be earlier than the recorded horizon (maxAge grew, or a keeper stopped
    after recording its cut) does not move the horizon back: states before it may be gone."""
    p = plan("1h")
    stream = subjects.stream_name(p.namespace, p.name)
    horizon_subject = subjects.horizon_subject("standby", p.namespace, p.name)
    await streams.ensure_stream(js, NATS, p.namespace, p.name, p.spec.history)
    await publish(js, p, "a", "UPSERT", 1)
    await publish(js, p, "a", "UPSERT", 2)
    recorded = time.time() + 100  # as a keeper stopped between recording its cut and dropping left it
    await js.publish(horizon_subject, b"", headers={HDR_HORIZON: rfc3339(recorded)}, stream=stream)
    assert await HistoryKeeper(p, js, "standby", clock=lambda: time.time() + 3600).compact() == 1
    assert await recorded_horizon(js, stream, horizon_subject) == pytest.approx(recorded, abs=0.002)


async def test_an_existing_stream_takes_a_changed_history(js: JetStreamContext) -> None:
    """A plan's changed spec.history updates its stream: never a max_age, and the count limit."""
    p = plan(states=100)
    info = await streams.ensure_stream(js, NATS, p.namespace, p.name, p.spec.history)
    assert (info.config.max_msgs_per_subject, info.config.max_age) == (100, 0)
    for rv in range(1, 6):
        await publish(js, p, "a", "UPSERT", rv)
    info = await streams.ensure_stream(js, NATS, p.namespace, p.name, api.History(max_age="0", states_per_object=2))
    assert (info.config.max_msgs_per_subject, info.config.max_age) == (2, 0)
    assert await remaining(js, p) == {"a": [b"a@4", b"a@5"]}
    info = await streams.ensure_stream(js, NATS, p.namespace, p.name, api.History(states_per_object=0))
    assert info.config.max_msgs_per_subject == -1


async def test_the_state_as_of_a_moment_is_each_objects_last_change_at_or_before_it(js: JetStreamContext) -> None:
    p = plan()
    stream = subjects.stream_name(p.namespace, p.name)
    everything = subjects.plan_filter("standby", p.namespace, p.name)
    await streams.ensure_stream(js, NATS, p.namespace, p.name, p.spec.history)
    await publish(js, p, "a", "UPSERT", 1)
    await publish(js, p, "b", "UPSERT", 2)
    t1 = await a_moment()
    for name, type_, rv in (("a", "UPSERT", 3), ("b", "DELETE", 4), ("c", "UPSERT", 5)):
        await publish(js, p, name, type_, rv)
    t2 = await a_moment()
    await publish(js, p, "a", "UPSERT", 6)

    def bodies(states: dict[str, streams.Scanned]) -> dict[str, bytes]:
        return {s.rsplit(".", 1)[1]: m.data for s, m in states.items()}

    assert bodies((await history.as_of(js, stream, everything, t1)).present()) == {"a": b"a@1", "b": b"b@2"}
    assert bodies((await history.as_of(js, stream, everything, t2)).present()) == {"a": b"a@3", "c": b"c@5"}
    assert bodies((await history.as_of(js, stream, everything, None)).present()) == {"a": b"a@6", "c": b"c@5"}
    states = await history.object_states(js, stream, subject(p, "a"))
    assert [m.data for m in states] == [b"a@1", b"a@3", b"a@6"]
    exactly = await history.as_of(js, stream, everything, states[1].stored_at)  # inclusive
    assert bodies(exactly.present())["a"] == b"a@3"

    reach = await history.reach(js, stream, prefix="standby", plan_namespace=p.namespace, plan_name=p.name)
    assert reach.horizon is None and reach.capped == frozenset()
    assert reach.first_change == pytest.approx(states[0].stored_at, abs=0.001)
    assert reach.missing(t1, {}) is None
    assert "no change that early" in (reach.missing(states[0].stored_at - 1, {}) or "")


async def test_a_moment_before_an_objects_oldest_kept_state_is_out_of_reach(js: JetStreamContext) -> None:
    """statesPerObject dropped an object's older states: the state as of a moment before its
    oldest kept one cannot be told, and the earliest moment says how far back it can."""
    p = plan(states=2)
    stream = subjects.stream_name(p.namespace, p.name)
    everything = subjects.plan_filter("standby", p.namespace, p.name)
    await streams.ensure_stream(js, NATS, p.namespace, p.name, p.spec.history)
    await publish(js, p, "quiet", "UPSERT", 1)
    await asyncio.sleep(0.02)
    early = time.time()
    for rv in (2, 3, 4):
        await publish(js, p, "hot", "UPSERT", rv)
        await asyncio.sleep(0.02)
    reach = await history.reach(js, stream, prefix="standby", plan_namespace=p.namespace, plan_name=p.name)
    assert reach.capped == frozenset({subject(p, "hot")})
    state = await history.as_of(js, stream, everything, early)
    assert "kept only later states" in (reach.missing(early, state.first_at) or "")
    kept = await history.object_states(js, stream, subject(p, "hot"))
    assert [m.data for m in kept] == [b"hot@3", b"hot@4"]
    assert await history.earliest_moment(js, stream, reach, everything) == pytest.approx(kept[0].stored_at, abs=1e-6)
    assert reach.missing(kept[0].stored_at, (await history.as_of(js, stream, everything, kept[0].stored_at)).first_at
                         ) is None
