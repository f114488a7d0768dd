"""Settings shared by every service (each service's settings class nests these)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator

STREAM_KEYS_SECRET = "standby-stream-keys"
NAMESPACE = "standby-system"  # the default of every service's kube.namespace
NATS_CREDENTIALS_SECRET = "standby-nats"  # the shipped manifests read the NATS user and password from it


class NatsSettings(BaseModel):
    url: str = Field(default="nats://127.0.0.1:4222",
                     description="NATS server URLs, comma-separated (the nodes of a cluster); tls:// for TLS.")
    user: str | None = Field(default=None, description="NATS user (the broker requires authentication).")
    password: SecretStr | None = Field(default=None, description="NATS password.")
    credentials_file: Path | None = Field(
        default=None, description="A NATS credentials file (.creds: a user JWT and its seed), instead of user and "
                                  "password.")
    tls_ca: Path | None = Field(default=None, description="CA bundle that signed the servers' certificates "
                                                          "(set: connect with TLS).")
    tls_cert: Path | None = Field(default=None, description="Client certificate, when the servers ask for one.")
    tls_key: Path | None = Field(default=None, description="Its private key.")
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="Copies of each plan's stream in a JetStream cluster (3 in production: "
                                           "one node lost loses nothing); a change updates existing streams.")
    consumer_replicas: int = Field(default=0, ge=0, le=5,
                                   description="Copies of the syncer's durable consumers; 0: as the stream.")
    subject_prefix: str = Field(default="standby", description="First token of every object subject.")
    max_payload_bytes: int = Field(default=8 * 1024 * 1024, description="Broker payload limit we stay under.")
    duplicate_window_seconds: float = Field(default=120, gt=0, description="Nats-Msg-Id dedupe window.")
    stream_keys_secret: str = Field(
        default=STREAM_KEYS_SECRET,
        description="Secret (in the service's namespace) with the keys that seal Secret bodies in the stream.")
    stream_keys_refresh_seconds: float = Field(
        default=60.0, gt=0, description="Re-read the stream keys Secret at least this often (a rotation takes effect).")


    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @model_validator(mode="after")
    def _tls_pairs(self) -> NatsSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.credentials_file is not None and self.user is not None:
            raise ValueError("give a credentials file or a user and password, not both")
        return self


class TaskSettings(BaseModel):
    """How long-running tasks are restarted, and when their failures make /healthz fail."""

    backoff_initial_seconds: float = Field(default=0.5, gt=0, description="First pause before a restart.")
    backoff_max_seconds: float = Field(default=30.0, gt=0, description="Cap of the pause between restarts.")
    recovered_after_seconds: float = Field(
        default=30.0, gt=0, description="A restarted task that runs this long without failing is up again.")
    unhealthy_after_seconds: float = Field(
        default=60.0, ge=0, description="/healthz fails while a task has been down longer than this grace.")


class LeaseSettings(BaseModel):
    """How the replicas of a service share the plans: one Lease per plan (coordination.k8s.io/v1) in
    the service's namespace, held by one replica at a time (:mod:`services.common.leasing`)."""

    identity: str = Field(
        default="", description="This replica's name in the Leases, unique among the live replicas; empty: the "
                                "pod's name (POD_NAME) or, outside a pod, the host, process id and a random suffix.")
    duration_seconds: int = Field(
        default=15, ge=1, description="A Lease not renewed for this long (as its observers see it) is taken over.")
    renew_deadline_seconds: float = Field(
        default=10.0, gt=0, description="A replica that could not renew a plan's Lease for this long stops serving "
                                        "the plan, before anyone may take it over.")
    retry_seconds: float = Field(default=2.0, gt=0, description="Renew the Leases and look for free plans this often.")

    @model_validator(mode="after")
    def _ordered(self) -> LeaseSettings:
        if not self.retry_seconds < self.renew_deadline_seconds < self.duration_seconds:
            raise ValueError("retry_seconds < renew_deadline_seconds < duration_seconds, or a replica could still be "
                             "serving a plan its Lease has lost")
        return self


class KubeSettings(BaseModel):
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig of the cluster the service lives in; None: in-cluster."
    )
    namespace: str = Field(default=NAMESPACE, description="Namespace of Standby's own objects (fences, keys, "
                                                         "plans by convention); never protected.")


class ServeSettings(BaseModel):
    port: int = Field(default=9100, description="Port for /metrics and /healthz; 0 picks a free one.")
    host: str = Field(default="127.0.0.1", description="Address to serve on.")
    log_format: str = Field(default="auto", pattern="^(auto|json|text)$", description="auto: JSON unless a TTY.")
    log_level: str = Field(default="INFO")
