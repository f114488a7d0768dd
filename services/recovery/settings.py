"""Recovery settings, from ``STANDBY_RECOVERY_*`` environment variables (nested with ``__``)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import KubeSettings, NatsSettings, ServeSettings, TaskSettings


class MirrorSettings(BaseModel):
    """The stand-by's mirror of the record (:mod:`services.recovery.mirroring`); needs ``nats``: the
    stand-by's own server, joined to the sync side's as a leaf node."""

    domain: str | None = Field(default=None, description="JetStream domain of the sync side's server (the streams' "
                                                          "origin); set: mirror every plan's stream from there.")
    interval_seconds: float = Field(default=30.0, gt=0, description="How often new streams are looked for and the "
                                                                    "mirrors' lag is read.")
    replicas: int = Field(default=1, ge=1, le=5, description="Copies of each mirror in the stand-by's JetStream.")


class RecoverySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STANDBY_RECOVERY_", env_nested_delimiter="__", extra="ignore")

    kube: KubeSettings = Field(default_factory=KubeSettings)
    nats: NatsSettings | None = Field(default=None, description="Only for fromOriginal; recovery works without it.")
    serve: ServeSettings = Field(default_factory=lambda: ServeSettings(port=9103))
    mirror: MirrorSettings = Field(default_factory=MirrorSettings)
    tasks: TaskSettings = Field(default_factory=TaskSettings)
    fence_settle_seconds: float = Field(
        default=1.0, ge=0, description="Wait after fencing: longer than the syncer's fence_max_age_seconds (0.75 s), "
                                "so every write that did not see the fence has landed.")
    concurrency: int = Field(default=64, ge=1, description="Objects activated in parallel.")
    ready_poll_seconds: float = Field(default=0.5, gt=0, description="Readiness gate poll period.")
    max_reported_objects: int = Field(default=200, ge=0, description="Per-object results kept in status.")
