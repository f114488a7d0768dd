"""The plan recorded in its own stream (``<prefix>-plan.<plan>``): the stream describes itself, so a
rebuild from it, or from the stand-by's mirror of it, needs nothing of the cluster the plan lived
in. The watcher records each generation of a plan it starts watching; readers take the last."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from schemas import API_VERSION, subjects
from services.common import plans


def record(plan: plans.Plan) -> bytes:
    """The plan as a RecoveryPlan object (metadata and spec; no status)."""
    return json.dumps({
        "apiVersion": API_VERSION, "kind": "RecoveryPlan",
        "metadata": {"name": plan.name, "namespace": plan.namespace, "uid": plan.uid, "generation": plan.generation},
        "spec": plan.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }, separators=(",", ":")).encode()


async def publish(js: JetStreamContext, prefix: str, plan: plans.Plan) -> None:
    """Record ``plan`` once per generation: not again when the stream's last record is of this one
    (a restarted watcher publishes nothing; the message id alone deduplicates only within the
    stream's duplicate window, two minutes), and the message id keeps two replicas starting the plan
    at once from recording it twice."""
    try:
        last = await recorded(js, prefix, plan.namespace, plan.name)
    except plans.PlanError:
        last = None  # unreadable: recorded again, readable
    if last is not None and (last.plan.uid, last.plan.generation) == (plan.uid, plan.generation):
        return
    await js.publish(subjects.plan_record_subject(prefix, plan.namespace, plan.name), record(plan),
                     stream=subjects.stream_name(plan.namespace, plan.name),
                     headers={"Nats-Msg-Id": f"plan:{plan.uid}:{plan.generation}"})


@dataclass(frozen=True)
class Recorded:
    plan: plans.Plan
    recorded_at: datetime.datetime


async def recorded(js: JetStreamContext, prefix: str, namespace: str, name: str) -> Recorded | None:
    """The last plan the stream of ``namespace/name`` recorded; None: the stream records none (or
    does not exist). :class:`plans.PlanError` if the record cannot be read as a plan."""
    try:
        msg = await js.get_last_msg(subjects.stream_name(namespace, name),
                                    subjects.plan_record_subject(prefix, namespace, name))
    except NotFoundError:
        return None
    try:
        obj = json.loads(msg.data or b"")
    except ValueError as exc:
        raise plans.PlanError("InvalidRecord", f"the plan recorded in the stream is not JSON: {exc}") from exc
    return Recorded(plans.parse_plan(obj), msg.time or datetime.datetime.now(datetime.UTC))
