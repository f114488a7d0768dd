"""The syncer's state owners, without servers: the delete breaker (injected clock), the per-object
progress, and the plan status computed from them."""

from __future__ import annotations

import datetime

import pytest

from schemas import api, subjects
from schemas.subjects import ObjectKey, parse_subject
from services.common import streams
from services.syncer import letters
from services.syncer.breaker import BreakerOpen, DeleteBreaker
from services.syncer.progress import Copy, DeadLetter, PlanProgress
from services.syncer.status import Observed, due, plan_status

pytestmark = pytest.mark.unit

NOON = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kwargs: object) -> DeleteBreaker:
    kwargs = {"window_seconds": 60.0, "min_deletes": 3, "share": 0.5, "clock": clock, "wall": lambda: NOON} | kwargs
    return DeleteBreaker(**kwargs)  # type: ignore[arg-type]


def test_breaker_opens_at_the_limit_and_stays_open_until_a_new_reset_value() -> None:
    clock = Clock()
    b = breaker(clock, reset_token="r1")
    for _ in range(3):
        b.admit(copies=4)  # limit: max(3, 0.5 * 4) = 3
    with pytest.raises(BreakerOpen) as opened:
        b.admit(copies=4)
    assert opened.value.opened_now
    assert b.status() == api.DeleteBreakerStatus(open=True, opened_at="2026-11-29T12:00:00Z", reset_seen="r1")
    clock.now += 3600  # time alone never closes it
    with pytest.raises(BreakerOpen) as still:
        b.admit(copies=4)
    assert not still.value.opened_now
    assert not b.acknowledge("r1")  # the value it opened under
    assert b.acknowledge("r2")
    assert not b.open
    for _ in range(10):  # quiet for one window: the held deletions go through
        b.admit(copies=4)
    clock.now += 61
    for _ in range(3):
        b.admit(copies=4)
    with pytest.raises(BreakerOpen):
        b.admit(copies=4)


def test_breaker_counts_only_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(10):
        b.admit(copies=100)  # limit 50
        clock.now += 10  # never more than 7 in 60 s
    assert not b.open


@pytest.mark.parametrize(("recorded", "token", "open_"), [
    pytest.param(api.DeleteBreakerStatus(open=True, opened_at="t", reset_seen="a"), "a", True, id="still-open"),
    pytest.param(api.DeleteBreakerStatus(open=True, opened_at="t", reset_seen="a"), "b", False, id="reset-meanwhile"),
    pytest.param(api.DeleteBreakerStatus(open=False), None, False, id="closed"),
    pytest.param(None, None, False, id="never-recorded"),
])
def test_breaker_restored_from_the_plan_status(recorded: api.DeleteBreakerStatus | None, token: str | None,
                                               open_: bool) -> None:
    b = DeleteBreaker.restored(recorded, window_seconds=60.0, min_deletes=3, share=0.5, reset_token=token)
    assert b.open is open_


A = ObjectKey("", "configmaps", "shop", "a")
B = ObjectKey("apps", "deployments", "shop", "b")


def test_a_dead_letter_is_cleared_by_the_next_write_of_the_same_object() -> None:
    """The subject a dead letter names and the envelope a later write carries map to one key."""
    subject = "standby.standby-system:p.core.v1.configmaps.shop.a"
    progress = PlanProgress()
    progress.dead_lettered(parse_subject(subject, prefix="standby").key, DeadLetter("Undecodable"))
    progress.dead_lettered(B, DeadLetter("Invalid"))
    assert set(progress.failed) == {A, B}
    progress.wrote(A, Copy(7, []), observed_at=10.0, now=10.5)
    assert set(progress.failed) == {B}
    progress.wrote(B, None, observed_at=11.0, now=11.25)  # deleted in the source: nothing left to fail
    assert progress.failed == {}
    assert progress.last_lag_seconds == 0.25


def test_the_oldest_unapplied_change_ages_until_settled_also_across_naks() -> None:
    progress = PlanProgress()
    assert progress.oldest_unapplied_age(now=50.0) == 0.0
    progress.delivered(1, stored_at=10.0)
    progress.delivered(2, stored_at=12.0)
    progress.delivered(1, stored_at=10.0)  # redelivered after a nak: still the oldest
    assert progress.oldest_unapplied_age(now=50.0) == 40.0
    progress.settled(1)
    assert progress.oldest_unapplied_age(now=50.0) == 38.0
    progress.settled(2)
    assert progress.oldest_unapplied_age(now=50.0) == 0.0
    assert progress.last_sequence == 2


def seen(**kwargs: object) -> Observed:
    values: dict[str, object] = {"generation": 3, "stream_reachable": True, "undelivered": 0,
                                 "breaker": api.DeleteBreakerStatus(), "fenced": False, "now": 100.0}
    return Observed(**(values | kwargs))  # type: ignore[arg-type]


def conditions(status: api.RecoveryPlanStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def in_step() -> PlanProgress:
    progress = PlanProgress()
    progress.wrote(A, Copy(1, []), observed_at=90.0, now=90.5)
    progress.wrote(B, Copy(2, []), observed_at=91.0, now=91.5)
    return progress


@pytest.mark.parametrize(("setup", "observed", "phase", "synced", "degraded"), [
    pytest.param(lambda p: None, seen(), "Synced", ("True", "UpToDate"), ("False", "Healthy"), id="in-step"),
    pytest.param(lambda p: p.delivered(9, 95.0), seen(undelivered=4), "Syncing",
                 ("False", "CatchingUp"), ("False", "Healthy"), id="catching-up"),
    pytest.param(lambda p: p.dead_lettered(A, DeadLetter("Invalid")), seen(), "Degraded", ("False", "DeadLetters"),
                 ("True", "DeadLetters"), id="dead-letter"),
    pytest.param(lambda p: None, seen(stream_reachable=False, undelivered=0), "Degraded",
                 ("Unknown", "StreamUnreachable"), ("True", "StreamUnreachable"), id="stream-down"),
    pytest.param(lambda p: None, seen(breaker=api.DeleteBreakerStatus(open=True, opened_at="t")), "Degraded",
                 ("True", "UpToDate"), ("True", "DeleteBreakerOpen"), id="breaker-open"),
    pytest.param(lambda p: None, seen(fenced=True), "Activated", ("True", "UpToDate"), ("False", "Healthy"),
                 id="activated"),
])
def test_plan_status(setup: object, observed: Observed, phase: str, synced: tuple[str, str],
                     degraded: tuple[str, str]) -> None:
    progress = in_step()
    setup(progress)  # type: ignore[operator]
    status = plan_status(progress, observed)
    assert status.phase == phase
    assert conditions(status)["Synced"] == synced
    assert conditions(status)["Degraded"] == degraded
    assert status.observed_generation == 3


def test_progress_alone_is_written_at_most_every_progress_interval() -> None:
    progress = in_step()
    progress.delivered(9, 95.0)
    catching_up = plan_status(progress, seen(undelivered=400))
    assert due(None, catching_up, since_written=0.0, progress_every=10.0)  # the first is always written
    assert not due(catching_up, catching_up, since_written=60.0, progress_every=10.0)  # nothing changed
    further = plan_status(progress, seen(undelivered=250))
    # The count changes with every change applied; the condition's message does not, so writing
    # it needs no read of the plan first.
    assert further.conditions == catching_up.conditions
    assert further.objects_out_of_sync != catching_up.objects_out_of_sync
    assert not due(catching_up, further, since_written=2.0, progress_every=10.0)
    assert due(catching_up, further, since_written=10.0, progress_every=10.0)
    progress.settled(9)
    caught_up = plan_status(progress, seen(undelivered=0))
    assert caught_up.phase == "Synced" and due(catching_up, caught_up, since_written=0.1, progress_every=10.0)
    progress.dead_lettered(A, DeadLetter("Invalid"))
    failed = plan_status(progress, seen(undelivered=0))
    assert due(caught_up, failed, since_written=0.1, progress_every=10.0)  # a dead letter: at once


def test_status_claims_nothing_it_does_not_know() -> None:
    progress = in_step()
    progress.delivered(9, 40.0)
    down = plan_status(progress, seen(stream_reachable=False, undelivered=0))
    assert down.objects_out_of_sync is None and down.pending_change_age_seconds is None
    # Dumped for the API server, "unknown" clears the field rather than showing a stale figure.
    dumped = down.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert dumped["objectsOutOfSync"] is None and dumped["pendingChangeAgeSeconds"] is None
    up = plan_status(progress, seen())  # delivered, not settled (in a worker, or nak'd): it counts
    assert up.objects_out_of_sync == 1 and up.pending_change_age_seconds == 60.0
    assert up.replication_lag_seconds == 0.5 and up.objects_in_sync == 2


def test_a_failed_object_is_not_counted_in_sync() -> None:
    progress = in_step()
    progress.dead_lettered(A, DeadLetter("Invalid", "422: denied by policy", "standby.x.a", 7, 1_764_000_000.0))
    status = plan_status(progress, seen())
    assert status.objects_in_sync == 1 and status.objects_failed == 1
    assert "configmaps.core/shop/a (Invalid)" in next(c.message for c in status.conditions if c.type == "Degraded")
    assert [d.model_dump(exclude_none=True) for d in status.dead_letters] == [{
        "ref": "configmaps.core/shop/a", "reason": "Invalid", "message": "422: denied by policy", "sequence": 7,
        "time": "2025-11-24T16:00:00Z"}]
    assert progress.forget_dead_letters() == 1 and not plan_status(progress, seen()).dead_letters


def test_the_breaker_and_new_dead_letters_are_told_once_as_events() -> None:
    from schemas import api
    from services.syncer.status import status_events

    quiet = api.RecoveryPlanStatus(phase="Synced")
    opened = api.RecoveryPlanStatus(phase="Degraded", delete_breaker=api.DeleteBreakerStatus(
        open=True, opened_at="2026-11-29T10:00:00Z"))
    assert [e[1] for e in status_events(quiet, opened)] == ["DeleteBreakerOpened"]
    assert status_events(opened, opened) == []
    assert status_events(opened, quiet) == [("Normal", "DeleteBreakerReset", "the held deletions go through")]
    letter = api.DeadLetterStatus(ref="configmaps.core/a/x", reason="Invalid", time="2026-11-29T10:00:01Z")
    failing = api.RecoveryPlanStatus(phase="Degraded", dead_letters=[letter])
    (told,) = status_events(quiet, failing)
    assert told[:2] == ("Warning", "DeadLettered") and "configmaps.core/a/x (Invalid)" in told[2]
    assert status_events(failing, failing) == []
    later = letter.model_copy(update={"time": "2026-11-29T10:05:00Z"})
    again = api.RecoveryPlanStatus(phase="Degraded", dead_letters=[later])
    assert [e[1] for e in status_events(failing, again)] == ["DeadLettered"]  # failed again, later


def test_a_dead_letter_read_back_stands_only_while_its_change_is_the_objects_latest() -> None:
    def subject(name: str) -> str:
        return f"standby.{subjects.plan_token('sys', 'p')}.core.v1.configmaps.ns.{name}"

    def letter(name: str, sequence: int) -> streams.LastMessage:
        refused = DeadLetter("Invalid", "denied", subject(name), sequence, 0.0)
        return streams.LastMessage(subjects.dead_letter_subject("standby", subject(name)), letters.headers(refused),
                                   100 + sequence, 1_764_000_000.0)

    def latest(sequence: int) -> streams.SubjectState:
        return streams.SubjectState("ADDED", "1", "u", sequence)

    found = [letter("stands", 3), letter("superseded", 4), letter("purged-object", 5),
             streams.LastMessage("standby-dlq.x", {}, 9, 0.0)]  # names no object
    standing = letters.standing({m.subject: m for m in found},
                                {subject("stands"): latest(3), subject("superseded"): latest(8)}, prefix="standby")
    assert standing == {ObjectKey("", "configmaps", "ns", "stands"):
                        DeadLetter("Invalid", "denied", subject("stands"), 3, 1_764_000_000.0)}


def test_dead_letters_have_a_subject_per_object_under_the_plans_filter() -> None:
    subject = subjects.object_subject(prefix="standby", plan_namespace="sys", plan_name="p", group="apps",
                                      version="v1", resource="deployments", namespace="ns", name="web")
    dlq = subjects.dead_letter_subject("standby", subject)
    assert dlq == "standby-dlq" + subject.removeprefix("standby")
    assert dlq.startswith(subjects.dead_letter_filter("standby", "sys", "p")[:-1])
    with pytest.raises(subjects.SubjectError):
        subjects.dead_letter_subject("standby", "other.x.y")


def test_a_plan_with_several_dead_letters_is_reported() -> None:  # ObjectKeys sort (they did not: a crash)
    progress = PlanProgress()
    for name in ("b", "a", "c"):
        progress.dead_lettered(ObjectKey("", "configmaps", "ns", name), DeadLetter("Invalid"))
    status = plan_status(progress, seen())
    assert status.objects_failed == 3 and "configmaps.core/ns/a (Invalid)" in str(status.conditions)
