"""Watcher settings, from ``STANDBY_WATCHER_*`` environment variables (nested with ``__``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import KubeSettings, LeaseSettings, NatsSettings, ServeSettings, TaskSettings


class WatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STANDBY_WATCHER_", env_nested_delimiter="__", extra="ignore")

    nats: NatsSettings = Field(default_factory=NatsSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    serve: ServeSettings = Field(default_factory=lambda: ServeSettings(port=9101))
    tasks: TaskSettings = Field(default_factory=TaskSettings)
    leases: LeaseSettings = Field(default_factory=LeaseSettings)
    page_size: int = Field(default=500, ge=1, description="LIST page size.")
    watch_timeout_seconds: int = Field(default=300, ge=5, description="Server-side watch timeout; then re-watch.")
    relist_seconds: float = Field(
        default=1800, ge=0, description="Re-list each watched resource this often and publish what differs from "
                                        "the stream, so that a missed watch event cannot stay missed; 0: never.")
    history_compact_seconds: float = Field(
        default=600, ge=0, description="Drop states older than each plan's spec.history.maxAge this often (keeping "
                                       "each object's state at that moment); 0: never (the stream keeps more).")
    backoff_initial_seconds: float = Field(default=0.5, gt=0, description="First reconnect delay.")
    backoff_max_seconds: float = Field(default=30.0, gt=0, description="Cap of the reconnect delay.")
    not_served_retry_seconds: float = Field(
        default=5.0, gt=0, description="Look again this often for a selected resource the source does not serve "
                                       "(a CRD change in the source looks at once).")
    source_probe_seconds: float = Field(
        default=2.0, gt=0, description="Ask the source whether it answers this often (SourceReachable).")
    source_heard_write_seconds: float = Field(
        default=30.0, gt=0, description="While the source answers, record when it was last heard from this often.")
    cluster_probe_seconds: float = Field(
        default=30.0, gt=0, description="Probe every ManagedCluster (reachable, credentials work) this often.")
    plan_resync_seconds: float = Field(default=30.0, gt=0, description="Re-read plans even without events.")
    publish_window: int = Field(default=2048, ge=1, description="Publishes in flight before waiting for acks.")
    compress_over_bytes: int = Field(default=64 * 1024, ge=0, description="Compress bodies above this size.")
