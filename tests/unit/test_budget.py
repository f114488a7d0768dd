"""The syncer's budget: one window and one bound on writes for every plan it serves."""

from __future__ import annotations

import asyncio

import pytest

from services.syncer.budget import Budget, next_pull

pytestmark = pytest.mark.unit


async def test_the_window_is_shared_by_every_plan_and_reserved_per_pull() -> None:
    budget = Budget(writes=2, window=4, batch=256)  # low water: 1 slot
    assert await budget.reserve(3) == 3, "a pull reserves what it asks for"
    assert await budget.reserve(256) == 1, "another plan's pull gets what is left, not the same room again"
    waiting = asyncio.create_task(budget.reserve(256))
    await asyncio.sleep(0.01)
    assert not waiting.done(), "a pull waits while the window is full"
    budget.give(2)  # two messages settled, or a request ended with two unused
    assert await asyncio.wait_for(waiting, 1) == 2
    assert budget.held == 4
    budget.overdraw()  # a late delivery beyond every reservation still counts
    assert budget.free == -1


async def test_writes_are_bounded_over_all_plans() -> None:
    budget = Budget(writes=3, window=100, batch=10)
    busy, most = 0, 0

    async def write() -> None:
        nonlocal busy, most
        async with budget.writes:
            busy += 1
            most = max(most, busy)
            await asyncio.sleep(0.01)
            busy -= 1

    await asyncio.gather(*(write() for _ in range(20)))  # as if from several plans' workers
    assert most == 3


async def test_a_pull_waits_for_room_for_a_batch_not_for_one_message() -> None:
    budget = Budget(writes=8, window=64, batch=16)  # low water: 64 / 8 = 8 slots
    assert await budget.reserve(60) == 60  # 4 free
    pull = asyncio.create_task(budget.reserve(16))
    for _ in range(3):  # 7 free
        budget.give()
        await asyncio.sleep(0)
    assert not pull.done(), "a pull of one message at a time would cost a request per message"
    budget.give()  # 8 free
    assert await asyncio.wait_for(pull, 1) == 8


def test_a_plan_asks_for_what_it_used_so_quiet_plans_leave_the_window_to_busy_ones() -> None:
    assert next_pull(256, last=None, used=0, share=4096) == 256, "a first pull: a first copy is a burst"
    assert next_pull(256, last=256, used=256, share=4096) == 256, "used up: a full batch again"
    assert next_pull(256, last=256, used=5, share=204) == 16, "a trickle: a sixteenth of a batch"
    assert next_pull(256, last=16, used=16, share=204) == 32, "a burst starts: doubled at each pull"
    assert next_pull(256, last=64, used=64, share=204) == 128
    assert next_pull(256, last=16, used=0, share=4) == 4, "a thousand plans: their even share of the window"
    # Twenty quiet plans hold 320 of a window of 4,096; twenty asking for full batches wanted 5,120.
    assert 20 * next_pull(256, last=256, used=3, share=4096 // 20) < 4096 // 8


async def test_the_plans_pulling_share_the_window_evenly() -> None:
    budget = Budget(writes=8, window=4096, batch=256)
    with budget.pulls():
        assert budget.share == 4096
        with budget.pulls():
            assert budget.share == 2048
        assert budget.share == 4096


def test_no_pull_asks_for_more_than_its_plans_even_share() -> None:
    # Twenty plans at 5 changes/s each: a pull of 30 s delivers 150 and the next wants a full batch.
    budget = Budget(writes=128, window=4096, batch=256)
    budget.plans = 20
    assert budget.share == 204
    asks = [next_pull(256, last=256, used=150, share=budget.share) for _ in range(20)]
    assert asks == [204] * 20 and sum(asks) <= 4096, "every plan has room at once: none waits for another's expiry"
    assert next_pull(256, last=None, used=0, share=204) == 204, "a first pull too: the plans that start first"
    assert next_pull(256, last=None, used=0, share=4096) == 256


async def test_the_share_counts_the_plans_served_before_they_pull() -> None:
    budget = Budget(writes=8, window=4096, batch=256)
    budget.plans = 20  # the supervisor's pass, before their consumers start
    with budget.pulls():
        assert budget.share == 204, "the first plan to pull does not take the window of twenty"
    budget.plans = 2
    with budget.pulls(), budget.pulls(), budget.pulls():
        assert budget.share == 4096 // 3, "more pulling than counted (a pass behind): the larger count"
