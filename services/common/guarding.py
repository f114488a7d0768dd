"""The one way a service starts a long-running task: named, guarded, restarted, and known to /healthz.

After kopf's ``guard()``: a task that crashes is logged with its traceback, counted in a metric,
and started again after a capped exponential backoff; a task that returns although it should run
forever is treated the same way. A task counts as *down* from its first failure until it has run
again for ``recovered_after_seconds`` without failing; ``/healthz`` fails while any task has been
down for longer than ``unhealthy_after_seconds``, so a pipeline that keeps crashing is never
reported healthy. Cancellation is never swallowed: it stops the task for good."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import prometheus_client

from services.common.settings import TaskSettings

log = logging.getLogger(__name__)

CRASHES = prometheus_client.Counter(
    "standby_task_failures_total", "Long-running tasks that crashed or ended unexpectedly (and were restarted)",
    ["component", "task", "plan"])
DOWN = prometheus_client.Gauge(
    "standby_tasks_down", "Long-running tasks failing right now (crashed and not yet running steadily again)",
    ["component"])


@dataclass
class _State:
    running_since: float | None  # None while waiting to be started again
    down_since: float | None = None


@dataclass
class Guard:
    component: str
    settings: TaskSettings = field(default_factory=TaskSettings)
    clock: Callable[[], float] = time.monotonic
    _states: dict[str, _State] = field(default_factory=dict)

    def start(self, name: str, run: Callable[[], Awaitable[None]], *, kind: str, plan: str = "",
              until_done: bool = False) -> asyncio.Task[None]:
        """Run ``run()`` as the task ``name`` until cancelled, starting it again whenever it fails or
        returns (``until_done``: until it returns, a piece of work with an end). ``kind`` and
        ``plan`` label the failure metric (``name`` is for people)."""
        if name in self._states:
            raise ValueError(f"a task named {name!r} is already guarded")
        self._states[name] = _State(self.clock())
        return asyncio.create_task(self._guarded(name, run, kind, plan, until_done), name=name)

    async def _guarded(self, name: str, run: Callable[[], Awaitable[None]], kind: str, plan: str,
                       until_done: bool) -> None:
        delay = self.settings.backoff_initial_seconds
        state = self._states[name]
        extra = {"plan": plan} if plan else None
        try:
            while True:
                started = state.running_since = self.clock()
                failure: Exception | None = None
                try:
                    await run()
                except Exception as exc:
                    failure = exc
                else:
                    if until_done:
                        return
                now = self.clock()
                state.running_since = None
                if now - started >= self.settings.recovered_after_seconds:  # it ran fine meanwhile
                    delay, state.down_since = self.settings.backoff_initial_seconds, None
                if state.down_since is None:
                    state.down_since = now
                CRASHES.labels(self.component, kind, plan).inc()
                self.down()  # the gauge
                if failure is None:
                    log.error("task %s ended although it should run until stopped; starting it again in %.1fs",
                              name, delay, extra=extra)
                else:
                    log.error("task %s crashed; starting it again in %.1fs", name, delay, exc_info=failure,
                              extra=extra)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.backoff_max_seconds)
        finally:
            self._states.pop(name, None)
            self.down()

    def down(self) -> dict[str, float]:
        """Tasks failing right now, with the seconds since each went down."""
        now = self.clock()
        out = {}
        for name, state in self._states.items():
            if state.down_since is None:
                continue
            if state.running_since is not None and now - state.running_since >= self.settings.recovered_after_seconds:
                state.down_since = None  # running steadily again
                continue
            out[name] = now - state.down_since
        DOWN.labels(self.component).set(len(out))
        return out

    def healthy(self) -> bool:
        return all(seconds <= self.settings.unhealthy_after_seconds for seconds in self.down().values())

