"""Durations as Kubernetes and kubectl spell them (Go's ``time.ParseDuration``): ``90s``, ``15m``,
``1h30m``, ``8760h``, ``1.5h``. Units: ns, us (or µs), ms, s, m, h. No days: Go has none, and a
day is not always 24 hours."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse(text: str) -> float:
    """Seconds in ``text``; ``ValueError`` naming the input when it is not a duration."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    if body[:1] in "+-":
        body = body[1:]
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 15m, 1h30m, 8760h)")
    return sign * total


def format_seconds(seconds: float) -> str:
    """The shortest whole-unit spelling kubectl would show: ``8760h``, ``1h30m``, ``45s``."""
    whole = round(seconds)
    hours, rest = divmod(abs(whole), 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v) or "0s"
    return ("-" if whole < 0 else "") + text
