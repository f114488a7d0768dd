"""``standby history PLAN REF``: the states the plan's stream holds of one object, oldest first.

Each state: when the stream stored it, the event, the source's resourceVersion, its stream sequence
and the fields (JSON pointers) that changed since the state before. The values of a Secret are
never printed: ``-o json|yaml`` shows each value as a fingerprint (an HMAC under a key made for
this one run), so two states can be seen to hold the same value or not, and nothing can be
guessed from it across runs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas import codec, sealing
from schemas.comparing import changed_paths
from schemas.envelope import Envelope
from services.common import streams
from services.common.history import rfc3339
from services.operate import output

COLUMNS = ("time", "event", "resourceVersion", "sequence", "changed")
Obj = dict[str, Any]


@dataclass(frozen=True)
class State:
    time: str
    event: str
    resource_version: str
    sequence: int
    changed: tuple[str, ...]
    body: Obj | None  # masked; None for a deletion or a state that cannot be read
    problem: str = ""


def masker() -> Callable[[Obj], Obj]:
    """Hides a Secret's values behind fingerprints keyed for this run."""
    key = secrets.token_bytes(32)

    def fingerprint(value: Any) -> str:
        return "masked:" + hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:12]

    def mask(obj: Obj) -> Obj:
        if obj.get("kind") != "Secret":
            return obj
        out = dict(obj)
        for field in ("data", "stringData"):
            if isinstance(out.get(field), dict):
                out[field] = {k: fingerprint(v) for k, v in out[field].items()}
        return out

    return mask


async def states(scanned: Sequence[streams.Scanned], decode: Callable[[bytes], Awaitable[Envelope]]) -> list[State]:
    mask = masker()
    out: list[State] = []
    previous: Obj | None = None
    for msg in scanned:
        h = msg.headers
        body, problem = None, ""
        try:
            env = await decode(msg.data)
            body = env.body
        except sealing.UnknownKeyError as exc:
            problem = f"sealed under a key not held: {exc}"
        except codec.DecodeError as exc:
            problem = f"cannot be read: {exc}"
        event = h.get(streams.HDR_TYPE, "?")
        if problem:
            changed: tuple[str, ...] = ()
        elif body is None:
            changed, previous = (), None
        else:
            changed = tuple(changed_paths(previous or {}, body)) if previous is not None else ("(created)",)
            previous = body
        out.append(State(rfc3339(msg.stored_at), event, h.get(streams.HDR_RV, ""), msg.sequence, changed,
                         mask(body) if body is not None else None, problem))
    return out


def render(found: Sequence[State], fmt: str) -> str:
    if fmt != "table":
        return output.data([{"time": s.time, "event": s.event, "resourceVersion": s.resource_version,
                             "sequence": s.sequence, "changed": list(s.changed),
                             **({"object": s.body} if s.body is not None else {}),
                             **({"problem": s.problem} if s.problem else {})} for s in found], fmt)
    rows = [{"time": s.time, "event": s.event, "resourceVersion": s.resource_version, "sequence": s.sequence,
             "changed": s.problem or output.listed(s.changed)}
            for s in found]
    return output.table(rows, COLUMNS)
