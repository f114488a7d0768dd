"""``standby rebuild PLAN``: what the command parses and prints (the rebuild itself is
:mod:`services.common.rebuilding`, run by the command with ``--direct`` or by the recovery
operator for a Rebuild resource)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from schemas import API_VERSION, api, durations, rebuilds
from services.common import history, rebuilding
from services.common.kube import KubeClient
from services.operate import output

COLUMNS = ("action", "object", "fields")


def parse_moment(text: str | None, now: float) -> float | None:
    """``--at``: RFC 3339 (``2026-11-29T10:15:00Z``) or a negative duration from now (``-15m``)."""
    if not text:
        return None
    if text.startswith("-"):
        try:
            return now + durations.parse(text)
        except ValueError as exc:
            raise output.CommandError(f"--at {text}: {exc}") from exc
    try:
        return history.parse_rfc3339(text)
    except ValueError as exc:
        raise output.CommandError(f"--at {text!r}: give an RFC 3339 time (2026-11-29T10:15:00Z) or a negative "
                                  f"duration (-15m)") from exc


def parse_labels(text: str | None) -> api.LabelSelector | None:
    """``-l``: ``key=value`` pairs, comma-separated, all to match."""
    if not text:
        return None
    pairs = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or "!" in key:
            raise output.CommandError(f"-l {text!r}: give key=value pairs, comma-separated")
        pairs[key.strip()] = value.strip().lstrip("=")
    return api.LabelSelector(match_labels=pairs)


def render_steps(steps: Sequence[rebuilds.Step], fmt: str) -> str:
    shown = [s for s in steps if s.action != "unchanged"]
    if fmt != "table":
        return output.data([{"action": s.action, "object": str(s.key), "fields": list(s.fields)} for s in steps], fmt)
    if not shown:
        return "Nothing to change: the target holds the rebuilt state.\n"
    rows = [{"action": s.action, "object": str(s.key),
             "fields": output.listed(s.fields)}
            for s in shown]
    return output.table(rows, COLUMNS)


def render_outcomes(outcomes: Sequence[rebuilding.Outcome]) -> str:
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return ""
    return output.table([{"object": str(o.step.key), "action": o.step.action, "error": o.message} for o in failed],
                        ("object", "action", "error"))


def resource(plan: str, *, at: float | None, target_cluster: str | None, active: bool,
             selection: rebuilds.Selection, prune: bool, dry_run: bool) -> dict[str, Any]:
    """The Rebuild the command creates (the syncer runs it)."""
    sel: dict[str, Any] = {k: sorted(v) for k, v in (("namespaces", selection.namespaces),
                                                     ("resources", selection.resources),
                                                     ("names", selection.names)) if v}
    if selection.labels is not None:
        sel["selector"] = selection.labels.model_dump(by_alias=True, exclude_defaults=True)
    spec = api.RebuildSpec.model_validate({
        "recoveryPlanRef": {"name": plan}, "at": history.rfc3339(at) if at is not None else None,
        "targetClusterRef": {"name": target_cluster} if target_cluster else None,
        "mode": "Active" if active else "Deactivated", "selection": sel, "prune": prune, "dryRun": dry_run})
    return {"apiVersion": API_VERSION, "kind": "Rebuild", "metadata": {"generateName": f"{plan}-"},
            "spec": spec.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")
            | {"recoveryPlanRef": {"name": plan}}}


async def follow(client: KubeClient, namespace: str, name: str, *, timeout: float,
                 stages: output.Stages) -> tuple[int, api.RebuildStatus | None]:
    """Until the Rebuild ends: a line per stage, a progress bar in a terminal; the exit code."""
    path = f"/apis/{API_VERSION}/namespaces/{namespace}/rebuilds/{name}"
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        status = api.RebuildStatus.model_validate((await client.get(path)).get("status") or {})
        if status.message and status.message != said:
            stages.line(status.message)
            said = status.message
        stages.progress(status.done, status.total, "rebuilding")
        if status.phase in api.TERMINAL_PHASES:
            return {"Completed": output.OK, "PartiallyFailed": output.NOT_MET}.get(status.phase, output.ERROR), status
        if time.monotonic() > deadline:
            stages.line(f"timed out after {timeout:.0f}s; the rebuild goes on (kubectl get rebuild {name})")
            return output.TIMEOUT, status
        await asyncio.sleep(0.5)


def render_results(status: api.RebuildStatus, fmt: str) -> str:
    if fmt != "table":
        return output.data(status.model_dump(by_alias=True, exclude_none=True, mode="json"), fmt)
    counts = status.counts
    lines = [f"{counts.create} created, {counts.update} updated, {counts.unchanged} unchanged, "
             f"{counts.delete} deleted, {counts.failed} failed\n"]
    if status.results:
        lines.append(output.table([{"action": r.action, "object": r.ref, "outcome": r.outcome,
                                    "detail": r.message or output.listed(r.fields)} for r in status.results],
                                  ("action", "object", "outcome", "detail")))
    return "".join(lines)
