"""Which plans a replica takes and gives back (services.common.sharing): at most its fair share,
every plan served, deleted plans given back first, and preferences spread evenly and stable."""

from __future__ import annotations

from collections import Counter

from services.common import sharing

PLANS = [f"ns/plan-{i}" for i in range(30)]


def settle(replicas: list[str], holders: dict[str, str], wanted: list[str], rounds: int = 5) -> dict[str, str]:
    """Each replica in turn releases and acquires as decided (a conflict-free simulation of the keepers)."""
    holders = dict(holders)
    for _ in range(rounds):
        for me in replicas:
            moves = sharing.moves(me, wanted, holders, len(replicas))
            for plan in moves.release:
                holders.pop(plan)
            for plan in moves.acquire:
                assert not holders.get(plan), f"{me} took {plan}, held by {holders[plan]}"
                holders[plan] = me
    return holders


def test_a_lone_replica_serves_every_plan() -> None:
    assert sorted(sharing.moves("a", PLANS, {}, 1).acquire) == sorted(PLANS)


def test_replicas_take_their_fair_share_and_every_plan_is_served() -> None:
    assert len(sharing.moves("a", PLANS, {}, 3).acquire) == 10
    assert Counter(settle(["a", "b", "c"], {}, PLANS).values()) == {"a": 10, "b": 10, "c": 10}
    uneven = settle(["a", "b", "c", "d"], {}, PLANS)
    assert len(uneven) == 30 and max(Counter(uneven.values()).values()) == 8


def test_a_replica_that_joins_gets_its_share_from_the_others() -> None:
    alone = settle(["a"], {}, PLANS)
    joined = settle(["a", "b", "c"], alone, PLANS)
    assert Counter(joined.values()) == {"a": 10, "b": 10, "c": 10}
    moved = sum(1 for plan in PLANS if joined[plan] != alone[plan])
    assert moved == 20  # only what had to move


def test_the_plans_of_a_replica_gone_are_taken_by_the_others() -> None:
    three = settle(["a", "b", "c"], {}, PLANS)
    left = {plan: holder for plan, holder in three.items() if holder != "c"}  # c's Leases expired
    two = settle(["a", "b"], left, PLANS)
    assert Counter(two.values()) == {"a": 15, "b": 15}
    assert all(two[plan] == holder for plan, holder in left.items())  # nothing else moved


def test_deleted_plans_are_given_back_first_then_the_least_wanted() -> None:
    holders = {plan: "a" for plan in PLANS} | {"ns/deleted": "a"}
    moves = sharing.moves("a", PLANS, holders, 2)
    assert moves.release[0] == "ns/deleted" and len(moves.release) == 16 and moves.acquire == ()
    kept = set(PLANS) - set(moves.release)
    assert min(sharing.preference("a", p) for p in kept) > max(sharing.preference("a", p) for p in moves.release[1:])


def test_preferences_spread_evenly_and_do_not_depend_on_the_other_replicas() -> None:
    plans = [f"ns/p{i}" for i in range(3000)]
    first = Counter(max("abc", key=lambda r: sharing.preference(r, p)) for p in plans)
    assert all(850 < n < 1150 for n in first.values()), first
    assert sharing.preference("a", "ns/p1") == sharing.preference("a", "ns/p1")
    assert sharing.fair_share(30, 4) == 8 and sharing.fair_share(0, 3) == 0 and sharing.fair_share(5, 0) == 5


def test_each_key_has_one_owner_and_only_a_leaving_members_keys_move() -> None:
    keys = [f"ns/cluster-{i}" for i in range(300)]
    three = {key: sharing.owner(["a", "b", "c"], key) for key in keys}
    assert set(Counter(three.values())) == {"a", "b", "c"}
    assert all(n > 60 for n in Counter(three.values()).values())
    two = {key: sharing.owner(["a", "b"], key) for key in keys}  # c left
    assert {key for key in keys if two[key] != three[key]} == {key for key in keys if three[key] == "c"}
    assert sharing.owner(["b", "a"], keys[0]) == two[keys[0]]  # the order of the members does not matter
    assert sharing.owner(["a"], keys[0]) == "a" and sharing.owner([], keys[0]) is None
