"""Every syncer metric, with intention-named helpers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

APPLIES = Counter("standby_syncer_applies_total", "Messages handled, by outcome", ["plan", "resource", "outcome"])
APPLY_SECONDS = Histogram("standby_syncer_apply_seconds", "Destination write latency",
                          buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
LAG_SECONDS = Histogram("standby_replication_lag_seconds", "Source observed to applied in the destination",
                        ["plan"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
DELIVERY_SECONDS = Histogram("standby_syncer_delivery_seconds", "Stored in the stream to fetched by the syncer",
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30))
QUEUE_SECONDS = Histogram("standby_syncer_queue_seconds", "Fetched to taken by a worker",
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
LAG_GAUGE = Gauge("standby_replication_lag_last_seconds", "Lag of the last applied change", ["plan"])
BEHIND = Gauge("standby_pending_change_age_seconds",
               "Age of the oldest change not yet applied (0 when in step; NaN while unknown)", ["plan"])
BACKLOG = Gauge("standby_consumer_backlog", "Messages not yet delivered to the syncer", ["plan"])
DEAD_LETTERS = Counter("standby_dead_letters_total", "Messages sent to the dead-letter subject", ["plan", "reason"])
IN_SYNC = Gauge("standby_objects_in_sync", "Copies applied and current", ["plan"])
OUT_OF_SYNC = Gauge("standby_objects_out_of_sync", "Changes not yet applied", ["plan"])
BREAKER = Gauge("standby_delete_breaker_open", "1 while mass deletion is being refused", ["plan"])
FENCE_UNKNOWN = Counter("standby_syncer_fence_unknown_total",
                        "Writes held back because the fences could not be read freshly", ["plan"])
DRIFT = Counter("standby_drift_repaired_total", "Copies changed by someone else and put back", ["plan", "kind"])
RECREATES = Counter("standby_recreates_total", "Delete-and-recreate for immutable fields", ["plan", "resource"])


def handled(plan: str, resource: str, outcome: str) -> None:
    APPLIES.labels(plan, resource, outcome).inc()


def wrote(seconds: float) -> None:
    APPLY_SECONDS.observe(seconds)


def fetched(seconds_since_stored: float) -> None:
    DELIVERY_SECONDS.observe(max(0.0, seconds_since_stored))


def queued(seconds: float) -> None:
    QUEUE_SECONDS.observe(seconds)


def lag(plan: str, seconds: float) -> None:
    LAG_SECONDS.labels(plan).observe(seconds)
    LAG_GAUGE.labels(plan).set(seconds)


def dead_letter(plan: str, reason: str) -> None:
    DEAD_LETTERS.labels(plan, reason).inc()


def plan_counts(plan: str, *, in_sync: int, out_of_sync: int | None, backlog: int,
                behind_seconds: float | None) -> None:
    """``None``: unknown (the stream cannot be read), shown as NaN rather than a reassuring 0."""
    IN_SYNC.labels(plan).set(in_sync)
    OUT_OF_SYNC.labels(plan).set(float("nan") if out_of_sync is None else out_of_sync)
    BACKLOG.labels(plan).set(backlog)
    BEHIND.labels(plan).set(float("nan") if behind_seconds is None else behind_seconds)


def breaker(plan: str, open_: bool) -> None:
    BREAKER.labels(plan).set(1 if open_ else 0)


def recreated(plan: str, resource: str) -> None:
    RECREATES.labels(plan, resource).inc()


def fence_unknown(plan: str) -> None:
    FENCE_UNKNOWN.labels(plan).inc()


def drift_repaired(plan: str, kind: str) -> None:
    DRIFT.labels(plan, kind).inc()
