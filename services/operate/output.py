"""What the operator commands print and how they exit.

Exit codes, the same for every command (docs/operations.md lists them, scripts rely on them):

- ``OK`` (0): done, nothing to report;
- ``NOT_MET`` (1): a difference, a plan or cluster not healthy, a failover that did not complete;
- ``ERROR`` (2): bad input or a cluster that cannot be used: a one-line message on stderr;
- ``TIMEOUT`` (3): ``--timeout`` passed before the command's condition was met.

Tables follow kubectl's look (upper-case headers, columns padded by three spaces); ``-o json`` and
``-o yaml`` print the same facts as data. Lines about progress go to stderr, so stdout stays data."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import yaml

OK, NOT_MET, ERROR, TIMEOUT = 0, 1, 2, 3
FORMATS = ("table", "json", "yaml")


class CommandError(Exception):
    """Bad input or an unusable cluster: printed as one line, exit code ERROR."""


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """kubectl's plain table: upper-case headers, each column as wide as its widest cell."""
    cells = [[c.upper() for c in columns]] + [["" if r.get(c) is None else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells) + "\n"


def listed(items: Sequence[str], shown: int = 6) -> str:
    """A table cell of many items: the first ``shown``, and how many more."""
    more = f" (+{len(items) - shown})" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def data(value: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(value, indent=2) + "\n"
    return yaml.safe_dump(value, sort_keys=False, width=1_000_000)  # a message stays on its line


def age(seconds: float | None) -> str:
    """kubectl's short age: 45s, 3m12s, 2h5m, 3d4h."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 120:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs and minutes < 10 else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes and hours < 10 else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours and days < 10 else f"{days}d"


@dataclass
class Stages:
    """One line per stage with the time since the command started, on stderr; a progress bar
    (rewritten in place) only when stderr is a terminal."""

    out: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Any = time.monotonic
    started: float = field(default=0.0)
    _bar: bool = False

    def __post_init__(self) -> None:
        self.started = self.started or self.clock()

    def line(self, text: str) -> None:
        self._clear()
        self.out.write(f"[{self.clock() - self.started:6.1f}s] {text}\n")
        self.out.flush()

    def progress(self, done: int, total: int, label: str) -> None:
        if not self.out.isatty() or total <= 0:
            return
        width = 30
        filled = int(width * done / total)
        self.out.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        self.out.flush()
        self._bar = True

    def _clear(self) -> None:
        if self._bar:
            self.out.write("\r\033[K")
            self._bar = False
