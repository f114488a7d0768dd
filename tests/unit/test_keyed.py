"""The syncer's keyed work queue: order per key, any free worker takes any ready key."""

from __future__ import annotations

import asyncio
import random

import pytest

from services.syncer.keyed import KeyedQueue

pytestmark = pytest.mark.unit


async def test_one_key_is_never_in_two_workers_and_keeps_its_order() -> None:
    rng = random.Random(3)
    queue: KeyedQueue[tuple[str, int]] = KeyedQueue()
    sent = [(f"k{rng.randrange(20)}", i) for i in range(500)]
    for key, i in sent:
        queue.put(key, (key, i))
    busy: set[str] = set()
    applied: list[tuple[str, int]] = []
    most_in_flight = 0

    async def worker() -> None:
        nonlocal most_in_flight
        while len(queue):
            try:
                key, item = await asyncio.wait_for(queue.get(), 0.05)
            except TimeoutError:
                continue
            assert key not in busy, "a key is in two workers at once"
            busy.add(key)
            most_in_flight = max(most_in_flight, len(busy))
            await asyncio.sleep(rng.random() / 1000)
            applied.append(item)
            busy.discard(key)
            queue.done(key)

    await asyncio.gather(*(worker() for _ in range(8)))
    assert sorted(applied) == sorted(sent)
    for key in {k for k, _ in sent}:
        assert [i for k, i in applied if k == key] == [i for k, i in sent if k == key]
    assert most_in_flight == 8, "different keys proceed in parallel"


async def test_a_slow_key_does_not_hold_back_the_others() -> None:
    queue: KeyedQueue[int] = KeyedQueue()
    queue.put("slow", 0)
    queue.put("slow", 1)
    for i in range(10):
        queue.put(f"fast-{i}", i)
    key, _ = await queue.get()
    assert key == "slow"  # taken by one worker and not finished
    others = [(await queue.get())[0] for _ in range(10)]
    assert others == [f"fast-{i}" for i in range(10)], "the other keys are all ready meanwhile"
    for k in others:
        queue.done(k)
    queue.done("slow")
    assert await queue.get() == ("slow", 1)
    queue.done("slow")
    assert len(queue) == 0
