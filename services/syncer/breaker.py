"""The delete circuit breaker of one plan: the one owner of "may this copy be deleted now".

A source that suddenly loses most of its objects (a wrong context, a half-restored cluster, a
namespace deleted by mistake) must not empty the stand-by. Deletions are counted in a sliding
window; once they reach the limit the breaker opens and stays open, across restarts (its state is
recorded in the plan's status), until an operator sets the plan's reset annotation to a new value.
After a reset it stays quiet for one window so that the deletions it held go through.

No I/O and an injected clock: every transition is unit-tested without waiting."""

from __future__ import annotations

import collections
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas import api


class BreakerOpen(Exception):
    """This deletion is refused; it waits for an operator. ``opened_now``: this deletion opened it."""

    def __init__(self, message: str, *, opened_now: bool = False) -> None:
        super().__init__(message)
        self.opened_now = opened_now


def _wall() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class DeleteBreaker:
    window_seconds: float
    min_deletes: int
    share: float
    reset_token: str | None = None  # the plan's reset annotation as last read
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime.datetime] = _wall
    opened_at: str | None = None
    reset_seen: str | None = None  # the reset annotation when it opened; a new value closes it
    _deletes: collections.deque[float] = field(default_factory=collections.deque)
    _quiet_until: float = 0.0

    @classmethod
    def restored(cls, recorded: api.DeleteBreakerStatus | None, **kwargs: object) -> DeleteBreaker:
        """A breaker that opened before this syncer (re)started stays open."""
        breaker = cls(**kwargs)  # type: ignore[arg-type]
        if recorded is not None and recorded.open:
            breaker.opened_at, breaker.reset_seen = recorded.opened_at or _iso(breaker.wall()), recorded.reset_seen
            breaker.acknowledge(breaker.reset_token)
        return breaker

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def status(self) -> api.DeleteBreakerStatus:
        return api.DeleteBreakerStatus(open=self.open, opened_at=self.opened_at, reset_seen=self.reset_seen)

    def acknowledge(self, reset_token: str | None) -> bool:
        """The plan's reset annotation as last read. Returns True when it closed the breaker."""
        self.reset_token = reset_token
        if not self.open or reset_token == self.reset_seen:
            return False
        self.opened_at, self.reset_seen = None, None
        self._deletes.clear()
        self._quiet_until = self.clock() + self.window_seconds
        return True

    def admit(self, copies: int) -> None:
        """Count one deletion out of a plan of ``copies`` copies, or raise :class:`BreakerOpen`.

        Counted on admission, not when the delete returns: workers deleting in parallel must not
        all pass the check before any of them is counted."""
        if self.open:
            raise BreakerOpen(f"mass deletion refused since {self.opened_at}")
        now = self.clock()
        while self._deletes and now - self._deletes[0] > self.window_seconds:
            self._deletes.popleft()
        if len(self._deletes) >= self.limit(copies) and now >= self._quiet_until:
            self.opened_at, self.reset_seen = _iso(self.wall()), self.reset_token
            raise BreakerOpen(f"{len(self._deletes)} deletions in {self.window_seconds:.0f}s reached the limit "
                              f"of {self.limit(copies)}", opened_now=True)
        self._deletes.append(now)

    def limit(self, copies: int) -> int:
        return max(self.min_deletes, int(self.share * max(copies, 1)))


def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
