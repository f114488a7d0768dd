"""Every recovery metric, with intention-named helpers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACTIVATIONS = Counter("standby_activations_total", "Objects handled by recovery, by outcome", ["plan", "outcome"])
PROGRESS = Gauge("standby_activation_progress_ratio", "Done / total of the running job", ["job"])
DURATION = Histogram("standby_activation_duration_seconds", "Job start to completion",
                     buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600))


def activated(plan: str, outcome: str) -> None:
    ACTIVATIONS.labels(plan, outcome).inc()


def progress(job: str, done: int, total: int) -> None:
    PROGRESS.labels(job).set(done / total if total else 1.0)


def finished(seconds: float) -> None:
    DURATION.observe(seconds)
