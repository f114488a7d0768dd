"""What an operator asks of one plan's syncer, through annotations on the plan (as
``kubectl rollout restart`` asks a Deployment): a new value of

- ``dr.standby.dev/retry-dead-letters``: the failed change of each dead-lettered object is
  published again (its subject's last state, under a message id of its own), so it goes through
  the one way every change goes: applied, or dead-lettered again with the reason of now;
- ``dr.standby.dev/purge-dead-letters``: the dead letters are accepted: forgotten by the syncer and
  removed from the stream's dead-letter subject (the objects keep the copies they have).

A value present when the consumer starts is remembered, not acted on: a restart repeats nothing.
Each action is an Event on the plan (``standby dlq retry``/``purge`` set the annotations)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from schemas import annotations as ann
from schemas import subjects
from services.common import events, plans
from services.common.kube import KubeClient
from services.syncer.progress import PlanProgress

log = logging.getLogger(__name__)


@dataclass
class OperatorRequests:
    plan: plans.Plan
    js: JetStreamContext
    own: KubeClient
    progress: PlanProgress
    subject_prefix: str
    seen: dict[str, str | None] = field(default_factory=dict)

    @property
    def stream(self) -> str:
        return subjects.stream_name(self.plan.namespace, self.plan.name)

    async def acknowledge(self, annotations: Mapping[str, str]) -> None:
        """The plan's annotations as last read: act on each request whose value is new."""
        actions: dict[str, Callable[[str], Awaitable[str]]] = {
            ann.RETRY_DEAD_LETTERS: self.retry, ann.PURGE_DEAD_LETTERS: self.purge}
        for name, act in actions.items():
            token = annotations.get(name)
            first = name not in self.seen
            if first or token == self.seen[name] or token is None:
                self.seen[name] = token
                continue
            self.seen[name] = token
            reason, message = "DeadLettersRetried" if name == ann.RETRY_DEAD_LETTERS else "DeadLettersPurged", \
                await act(token)
            log.warning("%s (%s=%s)", message, name, token, extra={"plan": self.plan.key})
            await events.record(self.own, events.Involved.plan(self.plan), type_="Normal", reason=reason,
                                message=message, component="standby-syncer")

    async def retry(self, token: str) -> str:
        again, missing = 0, []
        for key, letter in sorted(self.progress.failed.items()):
            try:
                raw = await self.js.get_last_msg(self.stream, letter.subject)
            except (nats.js.errors.NotFoundError, nats.errors.Error, ValueError):
                missing.append(str(key))
                continue
            headers = {k: v for k, v in (raw.headers or {}).items() if k != "Nats-Msg-Id"}
            headers["Nats-Msg-Id"] = f"retry.{token}.{raw.seq}"
            await self.js.publish(raw.subject or letter.subject, raw.data or b"", headers=headers, stream=self.stream)
            again += 1
        gone = f"; not in the stream any more: {', '.join(missing[:5])}" if missing else ""
        return f"{again} dead-lettered changes published again{gone}"

    async def purge(self, token: str) -> str:
        count = self.progress.forget_dead_letters()
        dlq = subjects.dead_letter_filter(self.subject_prefix, self.plan.namespace, self.plan.name)
        try:
            await self.js.purge_stream(self.stream, subject=dlq)
        except (nats.js.errors.Error, nats.errors.Error) as exc:
            return f"{count} dead letters forgotten; the dead-letter subject could not be purged: {exc!r}"
        return f"{count} dead letters forgotten and removed from the stream"
