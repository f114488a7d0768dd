"""What one syncer holds at once, over every plan it serves: writes in flight and messages
delivered but not yet settled.

Both bounds used to be per plan. For one plan, 128 writers and a window of 4,096 messages keep the
destination busy; for twenty plans they made 2,560 writers queueing for 128 connections and up to
80,000 messages waiting, most longer than the ack wait: the server delivered them again, and the
syncer applied or skipped every object about twice (100,000 objects, docs/benchmarks.md "Scale").
A process has one destination budget, whatever the number of plans: the plans share it, and writers
take turns in the order they asked.

A pull's reservation is held until the pull is used up or expires (30 s). Twenty plans asking for a
batch of 256 each wanted more than a window of 4,096: at a steady trickle, the plans without room
waited for the others' pulls to expire, and their changes were applied seconds to tens of seconds
late (docs/benchmarks.md "Scale"). So a plan asks for what it used: twice what its last pull
delivered, at least a sixteenth of a batch (or its even share of the window, if smaller: many
plans), at most a batch (:func:`next_pull`). A quiet plan holds little; a plan in a burst doubles
its pulls back to a full batch in four of them.

And no pull asks for more than its plan's even share of the window, a first pull neither: at a
steady 5 changes/s per plan (100/s over twenty plans) a pull of 30 s delivers 150, so every plan
asked for a full batch again, twenty of them 5,120 of 4,096, and the plans left waiting for room
were served in whatever order they woke, the last up to a pull's expiry later (changes applied
28 s late, docs/benchmarks.md "Scale"). The share counts every plan the syncer serves, known before
any of them pulls (:attr:`Budget.plans`): at a start, the plans that pulled first took full
batches and the last ones waited out the first pulls' 30 s."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Budget:
    def __init__(self, *, writes: int, window: int, batch: int) -> None:
        self.writes = asyncio.Semaphore(writes)  # held around each message's handling
        self.window = window
        self.held = 0  # asked for and not yet delivered, or delivered and not yet settled: all plans
        # A pull waits for this much room: with the window full, a pull for whatever was free
        # asked for one message at a time (a request, its answer and its end per message: at
        # 100,000 objects the broker and the syncer spent twice the CPU per object).
        self.low_water = max(1, min(batch, window // 8))
        self.pulling = 0  # plans pulling now
        self.plans = 0  # plans this syncer serves (the supervisor says, before they start)
        self._roomy = asyncio.Event()
        self._roomy.set()

    @property
    def free(self) -> int:
        return self.window - self.held

    @property
    def share(self) -> int:
        """The window shared evenly by the plans served (or pulling, if more)."""
        return max(1, self.window // max(1, self.plans, self.pulling))

    @contextlib.contextmanager
    def pulls(self) -> Iterator[None]:
        """While a plan pulls: it counts in the shares."""
        self.pulling += 1
        try:
            yield
        finally:
            self.pulling -= 1

    async def reserve(self, batch: int) -> int:
        """Room for one pull, at most ``batch`` messages, taken from the window at once (twenty
        plans told the same free room each asked for it: thousands of messages then waited for a
        slot with their ack wait running, and came again). Waits until ``low_water`` slots (or
        ``batch``, if smaller) are free."""
        while self.free < min(batch, self.low_water):
            self._roomy.clear()
            await self._roomy.wait()
        granted = min(batch, self.free)
        self.held += granted
        return granted

    def overdraw(self) -> None:
        """A message delivered beyond what was reserved (a late answer to a request given up as lost)."""
        self.held += 1

    def give(self, count: int = 1) -> None:
        """Messages settled (acked, nakked, dead-lettered or handed back), or room reserved and not used."""
        self.held -= count
        if self.free >= self.low_water:
            self._roomy.set()


def next_pull(batch: int, *, last: int | None, used: int, share: int) -> int:
    """How many messages a plan's next pull asks for: a full ``batch`` at first (``last`` None: a
    first copy is a burst), then twice what the last pull (of ``last``) delivered, at least a
    sixteenth of a batch; never more than ``share``, the plan's even share of the window."""
    wanted = batch if last is None else max(batch // 16, 2 * used)
    return max(1, min(batch, share, wanted))
