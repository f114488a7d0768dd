"""Kubernetes Events on a plan, so that ``kubectl describe rp`` tells what happened to it.

Events are a record for people, never a dependency: a failure to write one is logged and dropped."""

from __future__ import annotations

import datetime
import logging
import secrets
from typing import Literal

from schemas import API_VERSION
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.common.plans import Plan

log = logging.getLogger(__name__)


async def record(client: KubeClient, plan: Plan, *, type_: Literal["Normal", "Warning"], reason: str, message: str,
                 component: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{plan.name}.{now.strftime('%Y%m%d%H%M%S')}{secrets.token_hex(4)}",
                     "namespace": plan.namespace},
        "involvedObject": {"apiVersion": API_VERSION, "kind": "RecoveryPlan", "namespace": plan.namespace,
                           "name": plan.name, "uid": plan.uid},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": component}, "reportingComponent": component, "reportingInstance": component,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }
    try:
        await client.request("POST", f"/api/v1/namespaces/{plan.namespace}/events", body=body)
    except (ApiError, UnreachableError) as exc:
        log.warning("could not record event %s on %s: %s", reason, plan.key, exc)
