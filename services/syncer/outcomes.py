"""What happened to a message, and the one function that turns it into ack / nak / dead letter.

Retry semantics live in the types (after kopf's TemporaryError/PermanentError): a handler raises
or returns, :func:`settle` decides."""

from __future__ import annotations

from dataclasses import dataclass


class TemporaryError(Exception):
    """Retry later: timeouts, 429, 5xx, missing namespace, kind not served yet, open breaker."""

    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class PermanentError(Exception):
    """Retrying cannot help: invalid object, unfixable immutable change, undecodable message."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Done:
    outcome: str  # applied | deleted | skipped_stale | skipped_fenced | skipped_unmanaged | absent


def backoff(deliveries: int, *, initial: float, cap: float) -> float:
    return float(min(cap, initial * 2 ** max(0, deliveries - 1)))
