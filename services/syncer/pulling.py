"""Reading a durable pull consumer continuously: one pull request kept outstanding, its messages
handed over as they arrive, the next request sent when it is used up or ends.

nats-py's ``fetch`` is a request that returns a finished batch. Low latency at a low rate then
takes a ``fetch(1)`` per message plus a no-wait ``fetch`` for whatever else is there: three
messages from the syncer and two from the server per change, on top of the change and its ack.
Here the server is asked once per batch; each change costs its delivery and its ack.

The server ends a request when its batch is delivered, when it expires (status 408) or when it
cannot serve it (409, e.g. the consumer was deleted). While a request waits, the server sends a
heartbeat (status 100) every ``heartbeat_seconds``; hearing nothing for two of them, or a
reconnection to the server, means the request is lost and another is sent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

log = logging.getLogger(__name__)

STATUS = "Status"
DESCRIPTION = "Description"
HEARTBEAT = "100"
NO_MESSAGES = "404"
EXPIRED = "408"
CONFLICT = "409"
# 409s that say the consumer to pull from is not (or no longer) a pull consumer that exists.
GONE = ("consumer deleted", "consumer is push based")


class ConsumerGone(Exception):
    """The consumer was deleted (or replaced by one that cannot be pulled): create it again."""


class PullRefused(Exception):
    """The server refused the pull request itself (bad request, limits of the consumer)."""


def status_of(msg: Msg) -> tuple[str, str] | None:
    """(code, description) of a status message from the server; None for a stream message."""
    if msg.headers is None or STATUS not in msg.headers:
        return None
    return msg.headers[STATUS], msg.headers.get(DESCRIPTION, "")


@dataclass
class Pull:
    nc: Client
    stream: str
    consumer: str
    expires_seconds: float = 30.0
    heartbeat_seconds: float = 2.0
    pause_seconds: float = 0.5  # before asking again after a 409 that passes (leadership change)

    @property
    def next_subject(self) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}"

    async def run(self, room: Callable[[], Awaitable[int]], deliver: Callable[[Msg], Awaitable[None]]) -> None:
        """Forever: ask for ``await room()`` messages, ``await deliver(msg)`` each as it arrives.

        Raises :class:`ConsumerGone` or :class:`PullRefused`; connection errors propagate."""
        arrivals: asyncio.Queue[Msg] = asyncio.Queue()
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=arrivals.put)
        try:
            while True:
                wanted = await room()
                await self._ask(inbox, wanted)
                await self._take(arrivals, wanted, deliver)
        finally:
            with contextlib.suppress(nats.errors.Error):  # closed or reconnecting: nothing to undo
                await sub.unsubscribe()

    async def _ask(self, inbox: str, batch: int) -> None:
        request = {"batch": batch, "expires": _nanoseconds(self.expires_seconds),
                   "idle_heartbeat": _nanoseconds(self.heartbeat_seconds)}
        await self.nc.publish(self.next_subject, orjson.dumps(request), reply=inbox)

    async def _take(self, arrivals: asyncio.Queue[Msg], wanted: int,
                    deliver: Callable[[Msg], Awaitable[None]]) -> None:
        """Until the request is used up, has ended, or is lost."""
        loop = asyncio.get_running_loop()
        reconnects = self.nc.stats["reconnects"]
        heard = loop.time()
        while wanted > 0:
            try:
                async with asyncio.timeout(self.heartbeat_seconds):
                    msg = await arrivals.get()
            except TimeoutError:
                if self.nc.stats["reconnects"] != reconnects or loop.time() - heard > 2 * self.heartbeat_seconds:
                    log.debug("pull request on %s/%s lost; asking again", self.stream, self.consumer)
                    return
                continue
            heard = loop.time()
            status = status_of(msg)
            if status is None:
                wanted -= 1
                await deliver(msg)
                heard = loop.time()  # the time ``deliver`` waited for room is not silence
                continue
            code, description = status
            if code == HEARTBEAT:
                continue
            if code in (EXPIRED, NO_MESSAGES):
                return
            if code == CONFLICT and description.lower().startswith(GONE):
                raise ConsumerGone(f"{self.stream}/{self.consumer}: {description}")
            if code == CONFLICT and description.lower().startswith("exceeded"):
                raise PullRefused(f"{self.stream}/{self.consumer}: {code} {description}")
            if code == CONFLICT:  # leadership change, server shutdown: the request ended
                log.info("pull request on %s/%s ended: %s", self.stream, self.consumer, description)
                await asyncio.sleep(self.pause_seconds)
                return
            raise PullRefused(f"{self.stream}/{self.consumer}: {code} {description}")


def _nanoseconds(seconds: float) -> int:
    return int(seconds * 1_000_000_000)
