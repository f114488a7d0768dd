"""``standby rebuild PLAN``: what the command parses and prints (the rebuild itself is
:mod:`services.common.rebuilding`, run by the command with ``--direct`` or by the recovery
operator for a Rebuild resource)."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import api, durations, rebuilds
from services.common import history, rebuilding
from services.operate import output

COLUMNS = ("action", "object", "fields")


def parse_moment(text: str | None, now: float) -> float | None:
    """``--at``: RFC 3339 (``2026-11-29T10:15:00Z``) or a negative duration from now (``-15m``)."""
    if not text:
        return None
    if text.startswith("-"):
        try:
            return now + durations.parse(text)
        except ValueError as exc:
            raise output.CommandError(f"--at {text}: {exc}") from exc
    try:
        return history.parse_rfc3339(text)
    except ValueError as exc:
        raise output.CommandError(f"--at {text!r}: give an RFC 3339 time (2026-11-29T10:15:00Z) or a negative "
                                  f"duration (-15m)") from exc


def parse_labels(text: str | None) -> api.LabelSelector | None:
    """``-l``: ``key=value`` pairs, comma-separated, all to match."""
    if not text:
        return None
    pairs = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or "!" in key:
            raise output.CommandError(f"-l {text!r}: give key=value pairs, comma-separated")
        pairs[key.strip()] = value.strip().lstrip("=")
    return api.LabelSelector(match_labels=pairs)


def render_steps(steps: Sequence[rebuilds.Step], fmt: str) -> str:
    shown = [s for s in steps if s.action != "unchanged"]
    if fmt != "table":
        return output.data([{"action": s.action, "object": str(s.key), "fields": list(s.fields)} for s in steps], fmt)
    if not shown:
        return "Nothing to change: the target holds the rebuilt state.\n"
    rows = [{"action": s.action, "object": str(s.key),
             "fields": ", ".join(s.fields[:6]) + (f" (+{len(s.fields) - 6})" if len(s.fields) > 6 else "")}
            for s in shown]
    return output.table(rows, COLUMNS)


def render_outcomes(outcomes: Sequence[rebuilding.Outcome]) -> str:
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return ""
    return output.table([{"object": str(o.step.key), "action": o.step.action, "error": o.message} for o in failed],
                        ("object", "action", "error"))
