"""kopf wiring: handlers for RecoveryExecutionJobs (new ones and, after a restart, unfinished ones).

kopf talks to the destination only; the state of a job lives in its status, written as it goes,
which is what makes a restarted operator resume instead of starting over."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from schemas import GROUP, VERSION, api
from services.common.kube import KubeClient, proxy_for
from services.recovery import activating, jobs
from services.recovery.settings import RecoverySettings

log = logging.getLogger(__name__)


def build_registry(client: KubeClient) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        """kopf's own connection, with the same credentials as ours. kopf logs in at start and
        again after a 401, so the token is read afresh each time: a pod's projected token file
        is rotated by the kubelet, an exec plugin's token expires."""
        creds = client.creds
        token = await client.bearer_token(fresh=True)
        return kopf.ConnectionInfo(server=creds.server, ca_data=creds.ca_pem, token=token,
                                   scheme="Bearer" if token else None, proxy_url=proxy_for(creds),
                                   certificate_data=creds.client_cert_pem, private_key_data=creds.client_key_pem,
                                   insecure=creds.insecure)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="recovery.dr.standby.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="recovery.dr.standby.dev")
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 60

    @kopf.on.resume(GROUP, VERSION, "recoveryexecutionjobs", registry=registry)
    @kopf.on.create(GROUP, VERSION, "recoveryexecutionjobs", registry=registry)
    async def run_job(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if (body.get("status") or {}).get("phase") in api.TERMINAL_PHASES:
            return

        def notify(type_: str, reason: str, message: str) -> None:
            kopf.event(body, type=type_, reason=reason, message=message)

        run = jobs.JobRun(memo.client, dict(body), memo.settings, memo.stream, notify)
        await run.run()

    return registry


def memo_for(client: KubeClient, settings: RecoverySettings, stream: activating.StreamReader) -> kopf.Memo:
    return kopf.Memo(client=client, settings=settings, stream=stream)
