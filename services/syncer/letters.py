"""Dead letters in the stream: how a refused change is recorded, and how the syncer reads them back
when a plan's consumer starts (the plan's status keeps listing them across restarts).

A refused change is published, body unchanged, to the dead-letter subject of its object
(:func:`schemas.subjects.dead_letter_subject`) with why in its headers. An object's letter still
stands when the change it refused is still the object's latest in the stream: a later change
(published by the source, or again by ``standby dlq retry``) either applied, and the letter is
moot, or was refused in turn, with a letter of its own."""

from __future__ import annotations

from collections.abc import Mapping

from nats.js import JetStreamContext

from schemas import subjects
from schemas.subjects import ObjectKey
from services.common import streams
from services.syncer.progress import DeadLetter

HDR_DETAIL = "Standby-Detail"
HDR_SUBJECT = "Standby-Subject"
HDR_SEQUENCE = "Standby-Sequence"


def headers(letter: DeadLetter) -> dict[str, str]:
    return {streams.HDR_REASON: letter.reason, HDR_DETAIL: letter.detail, HDR_SUBJECT: letter.subject,
            HDR_SEQUENCE: str(letter.sequence), "Nats-Msg-Id": f"dlq:{letter.sequence}"}


def parse(message: streams.LastMessage) -> DeadLetter:
    h = message.headers
    sequence = h.get(HDR_SEQUENCE, "0")
    return DeadLetter(h.get(streams.HDR_REASON, ""), h.get(HDR_DETAIL, ""), h.get(HDR_SUBJECT, ""),
                      int(sequence) if sequence.isdigit() else 0, message.stored_at)


def standing(letters: Mapping[str, streams.LastMessage], latest: Mapping[str, streams.SubjectState],
             *, prefix: str) -> dict[ObjectKey, DeadLetter]:
    """Pure: the letters (last per dead-letter subject) whose change is still its object's latest."""
    out: dict[ObjectKey, DeadLetter] = {}
    for message in letters.values():
        letter = parse(message)
        state = latest.get(letter.subject)
        if state is None or state.sequence != letter.sequence:
            continue
        try:
            out[subjects.parse_subject(letter.subject, prefix=prefix).key] = letter
        except subjects.SubjectError:
            continue  # a message that named no object of ours: nothing to list it under
    return out


async def read(js: JetStreamContext, stream: str, *, prefix: str, plan_namespace: str,
               plan_name: str) -> dict[ObjectKey, DeadLetter]:
    """The standing dead letters of a plan, from its stream."""
    letters = await streams.last_messages(js, stream, subjects.dead_letter_filter(prefix, plan_namespace, plan_name))
    if not letters:
        return {}
    latest = await streams.last_states(js, stream, subjects.plan_filter(prefix, plan_namespace, plan_name))
    return standing(letters, latest, prefix=prefix)
