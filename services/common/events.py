"""Kubernetes Events on a plan, so that ``kubectl describe rp`` tells what happened to it.

Events are a record for people, never a dependency: a failure to write one is logged and dropped."""

from __future__ import annotations

import datetime
import logging
import secrets
from dataclasses import dataclass
from typing import Literal

from schemas import API_VERSION
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.common.plans import Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Involved:
    """The Standby object an Event is about."""

    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def plan(cls, plan: Plan) -> Involved:
        return cls("RecoveryPlan", plan.namespace, plan.name, plan.uid)


async def record(client: KubeClient, about: Involved, *, type_: Literal["Normal", "Warning"], reason: str,
                 message: str, component: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{about.name}.{now.strftime('%Y%m%d%H%M%S')}{secrets.token_hex(4)}",
                     "namespace": about.namespace},
        "involvedObject": {"apiVersion": API_VERSION, "kind": about.kind, "namespace": about.namespace,
                           "name": about.name, "uid": about.uid},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": component}, "reportingComponent": component, "reportingInstance": component,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }
    try:
        await client.request("POST", f"/api/v1/namespaces/{about.namespace}/events", body=body)
    except (ApiError, UnreachableError) as exc:
        log.warning("could not record event %s on %s %s/%s: %s", reason, about.kind, about.namespace, about.name, exc)
