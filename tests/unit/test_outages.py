"""One warning per broker outage (with its duration when it ends), not a traceback per attempt."""

from __future__ import annotations

import logging

import pytest

from services.common.streams import BrokerOutages

pytestmark = pytest.mark.unit


async def test_an_outage_is_two_warnings_whatever_the_number_of_failed_attempts(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [10.0]
    outages = BrokerOutages("standby-syncer", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="services.common.streams"):
        await outages.disconnected()
        for _ in range(60):  # a reconnection attempt every 0.5 s for 30 s
            await outages.error(ConnectionRefusedError(111, "Connection refused"))
            await outages.disconnected()
        now[0] = 40.0
        await outages.reconnected()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["standby-syncer lost the broker; reconnecting",
                        "standby-syncer: broker error: ConnectionRefusedError(111, 'Connection refused')",
                        "standby-syncer reached the broker again after 30.0s (60 failed attempts)"]
    assert all(r.exc_info is None for r in caplog.records)  # no tracebacks


async def test_a_connection_closed_on_purpose_was_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    closed = [False]
    outages = BrokerOutages("standby-watcher", closed=lambda: closed[0])
    with caplog.at_level(logging.WARNING, logger="services.common.streams"):
        closed[0] = True  # a stop: nats-py calls the disconnected callback on close as well
        await outages.disconnected()
    assert caplog.records == []
