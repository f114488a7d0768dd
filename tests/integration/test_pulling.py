"""Continuous pulling from a durable consumer, against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api as js_api

from services.devenv.natsd import LocalNats
from services.syncer.pulling import ConsumerGone, Pull

STREAM, CONSUMER = "PULLING", "reader"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LocalNats]:
    server = LocalNats(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


async def connect(server: LocalNats) -> Client:
    return await nats.connect(server.url, user=server.user, password=server.password, max_reconnect_attempts=-1,
                              reconnect_time_wait=0.2)


async def prepared(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["pulling.>"])
    await js.add_consumer(STREAM, js_api.ConsumerConfig(durable_name=CONSUMER, ack_policy=js_api.AckPolicy.EXPLICIT,
                                                        max_ack_pending=1000))


class Reader:
    """Runs a Pull in the background; ``room`` is what it asks for each time."""

    def __init__(self, nc: Client, room: int = 256, **pull: float) -> None:
        self.pull = Pull(nc, STREAM, CONSUMER, **pull)
        self.room, self.got = room, asyncio.Queue[Msg]()
        self.task: asyncio.Task[None] | None = None

    async def _room(self) -> int:
        return self.room

    async def _deliver(self, msg: Msg) -> None:
        await msg.ack()
        await self.got.put(msg)

    def start(self) -> Reader:
        self.task = asyncio.create_task(self.pull.run(self._room, self._deliver))
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def nc(server: LocalNats) -> AsyncIterator[Client]:
    """A connection to a server holding the stream and its durable consumer."""
    nc = await connect(server)
    try:
        await prepared(nc)
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def requests(server: LocalNats, nc: Client) -> AsyncIterator[list[bytes]]:
    """Every pull request sent to the consumer, as the server sees them (a plain subscription on a
    connection of its own)."""
    spy = await connect(server)
    seen: list[bytes] = []

    async def count(msg: Msg) -> None:
        seen.append(msg.data)
    try:
        await spy.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{CONSUMER}", cb=count)
        await spy.flush()
        yield seen
    finally:
        await spy.close()


async def test_changes_arrive_one_by_one_under_a_single_request(nc: Client, requests: list[bytes]) -> None:
    reader = Reader(nc).start()
    js = nc.jetstream()
    for i in range(20):
        await js.publish(f"pulling.{i}", str(i).encode())
        # Each change is handed over as it arrives, not when a batch fills or a timeout ends.
        msg = await asyncio.wait_for(reader.got.get(), 1.0)
        assert msg.data == str(i).encode()
    await reader.stop()
    assert len(requests) == 1, requests


async def test_never_asks_for_more_than_there_is_room_for(nc: Client) -> None:
    js = nc.jetstream()
    for i in range(10):
        await js.publish(f"pulling.{i}", b"x")
    room = asyncio.Event()
    delivered: list[Msg] = []

    async def three() -> int:
        if delivered:
            await room.wait()  # full: the caller has no room until it says so
        return 3

    async def deliver(msg: Msg) -> None:
        delivered.append(msg)

    task = asyncio.create_task(Pull(nc, STREAM, CONSUMER).run(three, deliver))
    await asyncio.sleep(1.0)
    assert len(delivered) == 3
    info = await js.consumer_info(STREAM, CONSUMER)
    assert info.num_ack_pending == 3 and info.num_pending == 7
    room.set()
    for _ in range(50):
        if len(delivered) == 10:
            break
        await asyncio.sleep(0.1)
    assert [m.metadata.sequence.stream for m in delivered] == list(range(1, 11))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_an_expired_request_is_renewed(nc: Client, requests: list[bytes]) -> None:
    reader = Reader(nc, expires_seconds=1.0, heartbeat_seconds=0.25).start()
    await asyncio.sleep(2.6)
    assert len(requests) >= 2  # renewed after each 408
    await nc.jetstream().publish("pulling.late", b"late")
    assert (await asyncio.wait_for(reader.got.get(), 1.0)).data == b"late"
    await reader.stop()


async def test_a_restarted_server_is_pulled_from_again(server: LocalNats, nc: Client) -> None:
    reader = Reader(nc, heartbeat_seconds=0.5).start()
    js = nc.jetstream()
    await js.publish("pulling.before", b"before")
    assert (await asyncio.wait_for(reader.got.get(), 1.0)).data == b"before"
    server.restart()  # the waiting request is lost with the server
    for _ in range(100):
        if nc.stats["reconnects"] and nc.is_connected:
            break
        await asyncio.sleep(0.1)
    await js.publish("pulling.after", b"after")
    assert (await asyncio.wait_for(reader.got.get(), 5.0)).data == b"after"
    await reader.stop()


async def test_a_deleted_consumer_is_reported(nc: Client) -> None:
    reader = Reader(nc).start()
    await asyncio.sleep(0.3)  # the request waits on the server
    await nc.jetstream().delete_consumer(STREAM, CONSUMER)
    assert reader.task is not None
    with pytest.raises(ConsumerGone):
        await asyncio.wait_for(reader.task, 5.0)
