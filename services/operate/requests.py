"""``standby dlq list|show|retry|purge PLAN`` and ``standby breaker reset PLAN``.

The syncer owns a plan's dead letters and its delete breaker; the operator reads them from the
plan's status and asks for an action with an annotation on the plan (a new value each time, as
``kubectl rollout restart`` does), then, with ``--wait``, watches the status answer. No broker
access is needed: the `nats` CLI is in no runbook step."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

import nats.errors
from nats.js import JetStreamContext

from schemas import API_VERSION
from schemas import annotations as ann
from services.common import plans, records
from services.common.kube import ApiError, KubeClient
from services.operate import output

POLL_SECONDS = 0.5
DEAD_LETTER_COLUMNS = ("ref", "reason", "sequence", "failed")


def plan_path(namespace: str, plan: str) -> str:
    return f"/apis/{API_VERSION}/namespaces/{namespace}/recoveryplans/{plan}"


async def get_plan(client: KubeClient, namespace: str, plan: str) -> dict[str, Any]:
    try:
        return await client.get(plan_path(namespace, plan))
    except ApiError as exc:
        if exc.not_found:
            raise output.CommandError(f"recoveryplan {namespace}/{plan} not found") from exc
        raise


async def parsed_plan(client: KubeClient, namespace: str, plan: str) -> plans.Plan:
    try:
        return plans.parse_plan(await get_plan(client, namespace, plan))
    except plans.PlanError as exc:
        raise output.CommandError(f"recoveryplan {namespace}/{plan}: {exc.message}") from exc


async def plan_or_record(client: KubeClient, js: JetStreamContext, namespace: str, plan: str,
                         prefix: str) -> tuple[plans.Plan, records.Recorded | None]:
    """The plan from the cluster; when the cluster has none (the stand-by of a three-cluster
    topology, the management cluster gone), the plan as its stream recorded it, to be rebuilt into
    the cluster the command talks to (its destination reference is dropped). The record, if used."""
    try:
        obj = await client.get(plan_path(namespace, plan))
    except ApiError as exc:
        if not exc.not_found:
            raise
    else:  # the plan is there: used as it is, or refused (never the record instead)
        try:
            return plans.parse_plan(obj), None
        except plans.PlanError as exc:
            raise output.CommandError(f"recoveryplan {namespace}/{plan}: {exc.message}") from exc
    try:
        found = await records.recorded(js, prefix, namespace, plan)
    except plans.PlanError as exc:
        raise output.CommandError(f"recoveryplan {namespace}/{plan}: {exc.message}") from exc
    except nats.errors.Error as exc:
        raise output.CommandError(f"recoveryplan {namespace}/{plan} is not in this cluster, and its stream "
                                  f"cannot be read ({exc!r})") from exc
    if found is None:
        raise output.CommandError(f"recoveryplan {namespace}/{plan} not found, neither in this cluster nor "
                                  f"recorded in the stream")
    spec = found.plan.spec.model_copy(update={"destination_cluster_ref": None})
    return dataclasses.replace(found.plan, spec=spec), found


def dead_letters(plan: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The dead letters the status lists (the newest) and how many there are in all."""
    status = plan.get("status") or {}
    return list(status.get("deadLetters") or []), int(status.get("objectsFailed") or 0)


def dead_letter_table(plan: Mapping[str, Any], fmt: str, now: datetime.datetime) -> str:
    shown, total = dead_letters(plan)
    if fmt != "table":
        return output.data({"deadLetters": shown, "total": total}, fmt)
    if not total:
        return "No dead letters.\n"
    rows = [{**d, "failed": output.age((now - datetime.datetime.fromisoformat(d["time"].replace("Z", "+00:00")))
                                       .total_seconds()) + " ago" if d.get("time") else "-"} for d in shown]
    more = f"\n(the {len(shown)} newest of {total})\n" if total > len(shown) else ""
    return output.table(rows, DEAD_LETTER_COLUMNS) + more


def show(plan: Mapping[str, Any], ref: str) -> str:
    shown, _ = dead_letters(plan)
    for letter in shown:
        if letter["ref"] == ref:
            return output.data(letter, "yaml")
    raise output.CommandError(f"no dead letter for {ref} in {plan['metadata']['name']} "
                              f"(standby dlq list {plan['metadata']['name']})")


async def request(client: KubeClient, namespace: str, plan: str, annotation: str) -> tuple[str, dict[str, Any]]:
    """Set ``annotation`` on the plan to a new value (the time, to the microsecond); the value and
    the plan as it was just before."""
    before = await get_plan(client, namespace, plan)
    token = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await client.request("PATCH", plan_path(namespace, plan), content_type="application/merge-patch+json",
                         body={"metadata": {"annotations": {annotation: token}}})
    return token, before


async def wait_for(client: KubeClient, namespace: str, plan: str, done: Callable[[dict[str, Any]], bool | None], *,
                   timeout: float) -> int:
    """Poll the plan until ``done`` says True (OK) or False (NOT_MET), or ``timeout`` (TIMEOUT)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        verdict = done(await get_plan(client, namespace, plan))
        if verdict is not None:
            return output.OK if verdict else output.NOT_MET
        if loop.time() > deadline:
            return output.TIMEOUT
        await asyncio.sleep(POLL_SECONDS)


def retried(since_sequence: int) -> Callable[[dict[str, Any]], bool | None]:
    """After a retry asked when the plan had settled the stream up to ``since_sequence``: True when
    no dead letter is left; False when every one left failed again (its change, published again,
    has a later sequence; the reason of now is in the list); None while changes are still going.
    Sequences, not times: a letter of the second before the request is not one of the retry."""
    def verdict(plan: dict[str, Any]) -> bool | None:
        shown, total = dead_letters(plan)
        if not total:
            return True
        if shown and all(int(d.get("sequence") or 0) > since_sequence for d in shown):
            return False
        return None
    return verdict


def purged(plan: dict[str, Any]) -> bool | None:
    return True if not dead_letters(plan)[1] else None


def breaker_closed(plan: dict[str, Any]) -> bool | None:
    return True if not ((plan.get("status") or {}).get("deleteBreaker") or {}).get("open") else None


ANNOTATIONS = {"retry": ann.RETRY_DEAD_LETTERS, "purge": ann.PURGE_DEAD_LETTERS,
               "reset": ann.DELETE_BREAKER_RESET}
