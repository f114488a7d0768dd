"""What one syncer holds at once, over every plan it serves: writes in flight and messages
delivered but not yet settled.

Both bounds used to be per plan. For one plan, 128 writers and a window of 4,096 messages keep the
destination busy; for twenty plans they made 2,560 writers queueing for 128 connections and up to
80,000 messages waiting, most longer than the ack wait: the server delivered them again, and the
syncer applied or skipped every object about twice (100,000 objects, docs/benchmarks.md "Scale").
A process has one destination budget, whatever the number of plans: the plans share it, each pull
asks for what is free, and writers take turns in the order they asked."""

from __future__ import annotations

import asyncio


class Budget:
    def __init__(self, *, writes: int, window: int, batch: int) -> None:
        self.writes = asyncio.Semaphore(writes)  # held around each message's handling
        self.window = window
        self.held = 0  # delivered and not yet settled, all plans
        self._slots = asyncio.Semaphore(window)
        # A pull waits for this much room: with the window full, a pull for whatever was free
        # asked for one message at a time (a request, its answer and its end per message: at
        # 100,000 objects the broker and the syncer spent twice the CPU per object).
        self.low_water = max(1, min(batch, window // 8))
        self._roomy = asyncio.Event()
        self._roomy.set()

    @property
    def free(self) -> int:
        return self.window - self.held

    async def room(self, batch: int) -> int:
        """How many messages a pull may ask for, at most ``batch``: waits until the window has
        ``low_water`` free slots (or ``batch``, if smaller)."""
        while self.free < min(batch, self.low_water):
            self._roomy.clear()
            await self._roomy.wait()
        return max(1, min(batch, self.free))

    async def take(self) -> None:
        """One delivered message: waits for its slot."""
        await self._slots.acquire()
        self.held += 1

    def give(self) -> None:
        """One message settled (acked, nakked, dead-lettered or handed back)."""
        self.held -= 1
        self._slots.release()
        if self.free >= self.low_water:
            self._roomy.set()
