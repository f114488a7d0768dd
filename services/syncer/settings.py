"""Syncer settings, from ``STANDBY_SYNCER_*`` environment variables (nested with ``__``)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import KubeSettings, LeaseSettings, NatsSettings, ServeSettings, TaskSettings


class ConsumerSettings(BaseModel):
    durable_name: str = Field(default="standby-syncer", description="Durable consumer name per plan stream.")
    max_ack_pending: int = Field(default=4096, ge=1, description="Messages delivered and not yet acknowledged: the "
                                                                 "server's bound per plan, and this syncer's over all "
                                                                 "the plans it serves.")
    ack_wait_seconds: float = Field(default=30.0, gt=0, description="Redelivery after this without an ack.")
    fetch_batch: int = Field(default=256, ge=1, description="Messages per pull.")
    # A write's latency, not the syncer's CPU, bounds a burst: workers / latency writes per second
    # (the bulk benchmark: 64 workers ~360/s, 128 ~440/s against the same destination). The
    # destination's priority and fairness queues any excess, answering 429 when full.
    workers: int = Field(default=128, ge=1,
                         description="Writes in flight at once, over all the plans this syncer serves; one object "
                                     "is in one at a time.")
    max_deliver: int = Field(default=-1, description="Deliveries before giving up; -1: never.")


class RetrySettings(BaseModel):
    initial_seconds: float = Field(default=0.5, gt=0, description="First nak delay for a transient failure.")
    max_seconds: float = Field(default=30.0, gt=0, description="Cap of the nak delay.")


class DeleteSettings(BaseModel):
    breaker_share: float = Field(default=0.5, gt=0, le=1,
                                 description="Trip when deletes in the window exceed this share of a plan's copies.")
    breaker_min_deletes: int = Field(default=50, ge=1, description="Never trip below this many deletes.")
    breaker_window_seconds: float = Field(default=60.0, gt=0, description="Window for counting deletes.")
    recreates_per_minute: int = Field(default=60, ge=1, description="Delete-and-recreate rate limit per plan.")


class SyncerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STANDBY_SYNCER_", env_nested_delimiter="__", extra="ignore")

    nats: NatsSettings = Field(default_factory=NatsSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    serve: ServeSettings = Field(default_factory=lambda: ServeSettings(port=9102))
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    deletes: DeleteSettings = Field(default_factory=DeleteSettings)
    tasks: TaskSettings = Field(default_factory=TaskSettings)
    leases: LeaseSettings = Field(default_factory=LeaseSettings)
    plan_resync_seconds: float = Field(default=5.0, gt=0, description="Re-read plans at least this often.")
    status_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often a plan's status is computed; a change of its conditions, phase or "
                                       "dead letters is written at once.")
    status_progress_seconds: float = Field(
        default=10.0, ge=0, description="A change of the progress alone (objects in sync and pending, stream "
                                        "sequence, lag) is written at most this often.")
    fence_refresh_seconds: float = Field(default=0.25, gt=0, description="Fence cache refresh period.")
    fence_max_age_seconds: float = Field(
        default=0.75, gt=0, description="No copy is written unless the fences were read within this (fail "
                                        "closed); keep it below recovery's fence_settle_seconds.")
    drift_check_seconds: float = Field(
        default=300, ge=0, description="Compare the copies with the stream's latest states this often (and when a "
                                       "plan's consumer starts) and put back what someone else deleted or edited; "
                                       "0: never.")
    destination_connections: int = Field(default=128, ge=1, description="HTTP connections to the destination.")
