"""Which plans a replica serves: the decisions of :mod:`services.common.leasing`, without I/O.

Every replica holds at most its fair share of the plans, ``ceil(plans / live replicas)``: the
shares add up to at least every plan, so no plan is left without a replica, and a replica above
its share (one just joined, or plans were deleted) gives its least preferred plans back. Which
free plans a replica takes first, and which it gives back, follows rendezvous hashing of (replica,
plan): replicas racing for free plans mostly want different ones, and a plan's preferred replica
does not change when other replicas come and go."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass


def preference(identity: str, plan: str) -> int:
    """How much the replica ``identity`` wants ``plan`` (rendezvous hashing: stable, evenly spread)."""
    return int.from_bytes(hashlib.sha256(f"{identity}\x00{plan}".encode()).digest()[:8], "big")


def owner(members: Collection[str], key: str) -> str | None:
    """The one of ``members`` that most wants ``key``: work every replica could do but only one
    should (probing a ManagedCluster), with no Lease of its own. When a member comes or goes, only
    the keys that member owned, or will own, move."""
    return max(members, key=lambda member: preference(member, key), default=None)


def fair_share(plans: int, replicas: int) -> int:
    return -(-plans // max(1, replicas))


@dataclass(frozen=True)
class Moves:
    acquire: tuple[str, ...]  # free plans to take, most wanted first
    release: tuple[str, ...]  # held plans to give back: deleted ones, then those above the fair share


def moves(me: str, wanted: Collection[str], holders: Mapping[str, str], replicas: int) -> Moves:
    """What the replica ``me`` does next. ``wanted``: the plans that exist; ``holders``: each plan's
    live holder (absent or empty: free, an expired Lease included); ``replicas``: how many are live,
    ``me`` included."""
    mine = [plan for plan, holder in holders.items() if holder == me]
    gone = sorted(plan for plan in mine if plan not in wanted)
    kept = sorted((plan for plan in mine if plan in wanted), key=lambda plan: preference(me, plan), reverse=True)
    share = fair_share(len(wanted), replicas)
    free = sorted((plan for plan in wanted if not holders.get(plan)), key=lambda plan: preference(me, plan),
                  reverse=True)
    return Moves(acquire=tuple(free[:max(0, share - len(kept))]), release=tuple(gone + kept[share:]))
