"""Drift repair: the stand-by's copies are put back when someone else deleted or edited them.

When a plan's consumer starts and every ``drift_check_seconds``, the copies of each resource of
the plan are listed (metadata only, as the warm-up does) and compared with what the syncer wrote:

- *deleted*: a copy the syncer holds is gone;
- *edited*: a copy has a field outside ``metadata`` and ``status`` owned by another field manager
  (server-side apply records who set what: ``kubectl edit``, ``kubectl scale``, a patch). Each such
  change is repaired once (a manager that keeps extra fields of its own, which an apply of ours
  cannot remove, is not fought over again and again).

Each is written again from its latest state in the stream, through the applier's normal write
path (fence checked first, deactivated as every copy is). A fenced plan (failed over) is never
repaired: its copies are the live workloads now. Metric ``standby_drift_repaired_total``; an
Event ``DriftRepaired`` on the plan names the objects."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from schemas import annotations as ann
from schemas import subjects
from schemas.envelope import EventType
from schemas.subjects import ObjectKey
from services.common import events, streams
from services.common.keys import StreamKeys
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.syncer import metrics
from services.syncer.applying import PlanApplier
from services.syncer.outcomes import PermanentError, TemporaryError

log = logging.getLogger(__name__)

CATCHING_UP_POLL_SECONDS = 5.0
# A plan's first check comes at a random moment within this share of the interval after its
# consumer starts (30 s of the default 300 s): a syncer started again with twenty plans of 5,000
# objects ran twenty checks at once (every copy listed and every stream read, right after the
# warm-up had listed the same copies). Its memory after a restart did not change with the spread
# (the warm-up's own peak, docs/benchmarks.md "Scale", session 15).
FIRST_CHECK_SPREAD = 0.1
IGNORED_SUBRESOURCES = ("status",)  # a controller writing status is not drift; "scale" is (kubectl scale)
# The cluster's own controllers complete objects (a PVC's volumeName when it binds): not someone else.
IGNORED_MANAGERS = ("kube-controller-manager", "kube-scheduler")


def edited_by(meta: dict[str, Any]) -> tuple[str, str] | None:
    """(manager, time) of the newest foreign ownership of a field outside metadata and status."""
    found: tuple[str, str] | None = None
    for entry in meta.get("managedFields") or []:
        if entry.get("manager") in (ann.FIELD_MANAGER, *IGNORED_MANAGERS) \
                or entry.get("subresource", "") in IGNORED_SUBRESOURCES:
            continue
        owned = set((entry.get("fieldsV1") or {}).keys()) - {"f:metadata", "f:status", "f:apiVersion", "f:kind"}
        if owned and (found is None or entry.get("time", "") > found[1]):
            found = (str(entry.get("manager", "?")), str(entry.get("time", "")))
    return found


def first_check_delay(interval_seconds: float, draw: Callable[[], float] = random.random) -> float:
    """Seconds from a consumer's start to its plan's first check: within the first tenth of the
    interval, at a point drawn at random (``draw`` in [0, 1)), so the checks of plans started
    together are spread out and stay apart."""
    return interval_seconds * FIRST_CHECK_SPREAD * draw()


@dataclass
class DriftRepair:
    applier: PlanApplier
    js: JetStreamContext
    keys: StreamKeys
    own: KubeClient
    subject_prefix: str
    repaired_edits: set[tuple[ObjectKey, str, str]] = field(default_factory=set)
    catching_up: Callable[[], bool] = lambda: False

    @property
    def plan(self) -> Any:
        return self.applier.plan

    async def run(self, interval_seconds: float, *, first_copy: bool = False) -> None:
        """Until cancelled: check soon (:func:`first_check_delay`), then every ``interval_seconds``;
        while the plan catches up (changes delivered or waiting in the stream), a check waits until
        it has. Reading every state and every copy in the middle of a first copy of 100,000 objects
        slowed it down, and what it would find are copies about to be written anyway.

        ``first_copy``: the plan's consumer had never settled a message (it is new), so every state
        in the stream is on its way and nothing was there to drift while the syncer was away: the
        first check comes after a whole interval."""
        await asyncio.sleep(interval_seconds if first_copy else first_check_delay(interval_seconds))
        while True:
            if self.catching_up():
                await asyncio.sleep(CATCHING_UP_POLL_SECONDS)
                continue
            await self.check()
            await asyncio.sleep(interval_seconds)

    async def check(self) -> dict[str, list[str]]:
        """One comparison of the copies with the stream's latest states; what was repaired, by kind."""
        if self.applier.fences.fenced(self.plan.key) is not None:
            return {}
        progress = self.applier.progress
        stream = subjects.stream_name(self.plan.namespace, self.plan.name)
        filter_subject = subjects.plan_filter(self.subject_prefix, self.plan.namespace, self.plan.name)
        try:
            states = await streams.last_states(self.js, stream, filter_subject)
        except (nats.errors.Error, TimeoutError) as exc:
            log.info("drift check skipped: the stream cannot be read (%r)", exc, extra={"plan": self.plan.key})
            return {}
        # What the copies should be: the objects whose latest state is an upsert the consumer has
        # already settled (a later one is on its way through the normal path), not dead-lettered.
        expected: dict[ObjectKey, str] = {}
        for subject, state in states.items():
            parts = subjects.parse_subject(subject, prefix=self.subject_prefix)
            if state.type == EventType.UPSERT.value and state.sequence <= progress.last_sequence \
                    and state.sequence not in progress.unapplied and parts.key not in progress.failed:
                expected[parts.key] = parts.version
        repaired: dict[str, list[str]] = {"deleted": [], "edited": []}
        for selector in self.plan.spec.resources:
            try:
                info = await self.applier.dest.resolve(selector.group, selector.version, selector.resource)
                present = {k: obj["metadata"] for k, obj in
                           (await self.applier.copies(info, selector.filters.namespaces)).items()}
            except (ApiError, UnreachableError) as exc:
                log.info("drift check of %s skipped: %s", selector.resource, exc, extra={"plan": self.plan.key})
                continue
            for key, version in expected.items():
                if (key.group, key.resource) != (info.group, info.resource):
                    continue
                meta = present.get(key)
                drift = None
                if meta is None:
                    drift = "deleted"
                else:
                    editor = edited_by(meta)
                    if editor is not None and (key, *editor) not in self.repaired_edits:
                        self.repaired_edits.add((key, *editor))
                        drift = "edited"
                if drift and await self._rewrite(version, key):
                    repaired[drift].append(str(key))
                    metrics.drift_repaired(self.plan.key, drift)
        if repaired["deleted"] or repaired["edited"]:
            message = "; ".join(f"{kind}: {', '.join(refs[:5])}" + (f" and {len(refs) - 5} more" if len(refs) > 5
                                                                   else "")
                                for kind, refs in repaired.items() if refs)
            log.warning("copies changed by someone else, put back: %s", message, extra={"plan": self.plan.key})
            await events.record(self.own, events.Involved.plan(self.plan), type_="Warning", reason="DriftRepaired",
                                message=f"copies changed by someone else, put back ({message})",
                                component="standby-syncer")
        return repaired

    async def _rewrite(self, version: str, key: ObjectKey) -> bool:
        """Write ``key``'s copy again from its latest state in the stream; True when written."""
        subject = subjects.object_subject(prefix=self.subject_prefix, plan_namespace=self.plan.namespace,
                                          plan_name=self.plan.name, group=key.group, version=version,
                                          resource=key.resource, namespace=key.namespace, name=key.name)
        stream = subjects.stream_name(self.plan.namespace, self.plan.name)
        try:
            raw = await self.js.get_last_msg(stream, subject)
            env = await self.keys.decode(raw.data or b"")
        except (nats.js.errors.NotFoundError, nats.errors.Error, ValueError) as exc:
            log.info("drift of %s not repaired: no state in the stream (%r)", key, exc, extra={"plan": self.plan.key})
            return False
        if env.type is not EventType.UPSERT:
            return False  # deleted at the source: the tombstone's own handling removes the copy
        try:
            await self.applier.rewrite(env, raw.seq or 0)
        except (TemporaryError, PermanentError) as exc:
            log.warning("drift of %s not repaired now: %s", key, exc, extra={"plan": self.plan.key})
            return False
        return True
