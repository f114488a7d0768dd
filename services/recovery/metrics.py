"""Every recovery metric, with intention-named helpers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACTIVATIONS = Counter("standby_activations_total", "Objects handled by recovery, by outcome", ["plan", "outcome"])
PROGRESS = Gauge("standby_activation_progress_ratio", "Done / total of the running job", ["job"])
LAST_FAILOVER = Gauge("standby_last_failover_timestamp_seconds",
                      "When a failover (not a dry run) of the plan last ended, unix time", ["plan"])
MIRROR_LAG = Gauge("standby_mirror_lag_messages", "Messages the stand-by's mirror of a stream is behind its origin, "
                   "as last known", ["stream"])
MIRROR_CONTACT = Gauge("standby_mirror_last_contact_seconds",
                       "Seconds since the stand-by's mirror of a stream last heard from its origin", ["stream"])
DURATION = Histogram("standby_activation_duration_seconds", "Job start to completion",
                     buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600))


def activated(plan: str, outcome: str) -> None:
    ACTIVATIONS.labels(plan, outcome).inc()


def progress(job: str, done: int, total: int) -> None:
    PROGRESS.labels(job).set(done / total if total else 1.0)


def finished(seconds: float) -> None:
    DURATION.observe(seconds)


def failed_over(plans: list[str]) -> None:
    for plan in plans:
        LAST_FAILOVER.labels(plan).set_to_current_time()


def mirror_state(stream: str, lag: int | None, last_contact_seconds: float | None) -> None:
    if lag is not None:
        MIRROR_LAG.labels(stream).set(lag)
    if last_contact_seconds is not None:
        MIRROR_CONTACT.labels(stream).set(last_contact_seconds)
