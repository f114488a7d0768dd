"""Comparing two states of an object: what is compared (no server-set fields, no Standby
bookkeeping, no status) and which fields differ, as JSON pointers. Shared by ``standby diff``,
``standby history`` and a rebuild's dry run."""

from __future__ import annotations

from typing import Any

from schemas import sanitizing, transforms
from schemas.jsondata import clone

Obj = dict[str, Any]


def comparable(obj: Obj) -> Obj:
    """What is compared: no server-set fields, no Standby bookkeeping, no status."""
    out = transforms.strip_bookkeeping(sanitizing.sanitize(clone(obj)))
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in ("labels", "annotations"):
        if key in meta and not meta[key]:
            del meta[key]
    return out


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def changed_paths(have: Any, want: Any, at: str = "") -> list[str]:
    """JSON pointers of every leaf that differs (a key on one side only is a leaf too); lists of
    the same length are compared item by item, others as a whole."""
    if isinstance(have, dict) and isinstance(want, dict):
        out = []
        for key in sorted(set(have) | set(want)):
            here = f"{at}/{_escape(key)}"
            one = have.get(key, want.get(key))
            if (key not in have or key not in want) and not (isinstance(one, dict) and one):
                out.append(here)
            else:  # a map on one side only: its leaves
                out += changed_paths(have.get(key, {}), want.get(key, {}), here)
        return out
    if isinstance(have, list) and isinstance(want, list) and len(have) == len(want):
        return [p for i, (a, b) in enumerate(zip(have, want, strict=True)) for p in changed_paths(a, b, f"{at}/{i}")]
    return [] if have == want else [at or "/"]
