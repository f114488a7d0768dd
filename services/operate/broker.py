"""The operator commands' way to the broker, for what only the stream holds (an object's history,
a rebuild's dry run): ``--nats-url`` (or ``$STANDBY_NATS_URL``; default ``nats://127.0.0.1:4222``,
where ``kubectl port-forward -n standby-system svc/nats 4222`` puts it; several comma-separated;
with TLS, the CA from ``$STANDBY_NATS_CA``), the user and password from
``$STANDBY_NATS_USER``/``$STANDBY_NATS_PASSWORD`` or else from the ``standby-nats`` Secret the
services read them from."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client

from services.common import settings, streams
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.common.settings import NatsSettings
from services.operate import output

DEFAULT_URL = "nats://127.0.0.1:4222"
PORT_FORWARD = "kubectl port-forward -n standby-system svc/nats 4222"


async def credentials(client: KubeClient, namespace: str) -> tuple[str | None, str | None]:
    user, password = os.environ.get("STANDBY_NATS_USER"), os.environ.get("STANDBY_NATS_PASSWORD")
    if user is not None:
        return user, password
    try:
        secret = await client.get(f"/api/v1/namespaces/{namespace}/secrets/{settings.NATS_CREDENTIALS_SECRET}")
    except ApiError as exc:
        if exc.not_found or exc.status == 403:
            return None, None  # a broker without authentication, or set the environment
        raise
    except UnreachableError:
        return None, None
    data = secret.get("data") or {}

    def value(key: str) -> str | None:
        return base64.b64decode(data[key]).decode() if key in data else None
    return value("NATS_USER"), value("NATS_PASSWORD")


async def connect(client: KubeClient, namespace: str, url: str | None) -> Client:
    """``url``: one or several (comma-separated); a CA for TLS from ``$STANDBY_NATS_CA``."""
    url = url or os.environ.get("STANDBY_NATS_URL") or DEFAULT_URL
    user, password = await credentials(client, namespace)
    ca = os.environ.get("STANDBY_NATS_CA")
    wanted = NatsSettings(url=url, tls_ca=Path(ca) if ca else None)
    try:
        return await nats.connect(wanted.servers, user=user, password=password, name="standby-cli", connect_timeout=5,
                                  allow_reconnect=False, max_reconnect_attempts=0, tls=streams.tls_context(wanted))
    except (nats.errors.Error, OSError) as exc:
        raise output.CommandError(f"the broker at {url} cannot be reached ({exc!r}); give --nats-url, or run "
                                  f"`{PORT_FORWARD}`") from exc
