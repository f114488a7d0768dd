"""Every watcher metric, with intention-named helpers; business code never touches collectors."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("standby_watcher_events_observed_total", "Source watch events observed",
                 ["plan", "resource", "type"])
PUBLISHED = Counter("standby_watcher_events_published_total", "Events published to the stream",
                    ["plan", "resource", "type"])
REFUSED = Counter("standby_watcher_objects_refused_total", "Objects not published, by reason",
                  ["plan", "resource", "reason"])
RELISTS = Counter("standby_watcher_relists_total", "LISTs of a resource, by reason", ["plan", "resource", "reason"])
WATCHED = Gauge("standby_watcher_objects_watched", "Selected source objects", ["plan", "resource"])
PUBLISH_SECONDS = Histogram("standby_watcher_publish_seconds", "Observed to PubAck",
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
UNWATCHED = Gauge("standby_watcher_resource_unwatched",
                  "1 while a selected resource cannot be watched (not served, forbidden)", ["plan", "resource"])
CLUSTER_READY = Gauge("standby_managed_cluster_ready",
                      "1 while a ManagedCluster answers with working credentials, 0 while not", ["cluster"])
ERRORS = Counter("standby_watcher_errors_total", "Errors by kind", ["plan", "kind"])
SOURCE_REACHABLE = Gauge("standby_source_reachable", "1 while the plan's source answers the watcher, 0 while not",
                         ["plan"])


def source_reachable(plan: str, reachable: bool) -> None:
    SOURCE_REACHABLE.labels(plan).set(1 if reachable else 0)


def observed(plan: str, resource: str, type_: str) -> None:
    EVENTS.labels(plan, resource, type_).inc()


def published(plan: str, resource: str, type_: str, seconds: float) -> None:
    PUBLISHED.labels(plan, resource, type_).inc()
    PUBLISH_SECONDS.observe(seconds)


def refused(plan: str, resource: str, reason: str) -> None:
    REFUSED.labels(plan, resource, reason).inc()


def relisted(plan: str, resource: str, reason: str, count: int) -> None:
    RELISTS.labels(plan, resource, reason).inc()
    WATCHED.labels(plan, resource).set(count)


def error(plan: str, kind: str) -> None:
    ERRORS.labels(plan, kind).inc()


def unwatched(plan: str, resource: str, cannot: bool) -> None:
    UNWATCHED.labels(plan, resource).set(1 if cannot else 0)


def cluster_ready(cluster: str, ready: bool | None) -> None:
    """``None``: the ManagedCluster is gone."""
    if ready is None:
        CLUSTER_READY.remove(cluster)
    else:
        CLUSTER_READY.labels(cluster).set(1 if ready else 0)
