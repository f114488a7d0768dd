"""The time machine's pure parts: what the history keeper drops, and reading a delivery's position."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import nats.errors
import pytest

from schemas import subjects
from services.common import streams
from services.watcher.history import RETRY_SECONDS, Before, HistoryKeeper, purges, states_before

pytestmark = pytest.mark.unit


def scanned(subject: str, sequence: int, type_: str) -> streams.Scanned:
    return streams.Scanned(subject, sequence, 0.0, {streams.HDR_TYPE: type_})


def test_each_object_keeps_its_state_at_the_cut_and_a_tombstone_goes_with_what_it_ends() -> None:
    before = states_before([scanned("a", 1, "UPSERT"), scanned("b", 2, "UPSERT"), scanned("a", 3, "UPSERT"),
                            scanned("c", 4, "UPSERT"), scanned("c", 5, "DELETE"), scanned("d", 6, "DELETE")])
    assert before["a"] == Before(2, 3, "UPSERT")
    assert purges(before) == {"a": 3, "c": 6, "d": 7}  # b: its only state, kept


@pytest.mark.parametrize(("reply", "position"), [
    ("$JS.ACK.S.C.1.42.7.1764000000123456789.3", (42, 1764000000123456789, 3)),
    ("$JS.ACK.hub.ACCHASH.S.C.1.42.7.1764000000123456789.0.r4nd0m", (42, 1764000000123456789, 0)),
])
def test_a_deliverys_position_is_read_from_its_reply_subject(reply: str, position: tuple[int, int, int]) -> None:
    assert streams.delivery_position(reply) == position


def test_a_reply_that_is_not_a_delivery_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JetStream delivery"):
        streams.delivery_position("_INBOX.abc")


@pytest.mark.parametrize("ref", ["configmaps.core/shop/settings", "deployments.apps/shop/web", "namespaces.core/shop",
                                 "widgets.example.com/ns/w-1"])
def test_an_object_reference_reads_back_as_printed(ref: str) -> None:
    assert str(subjects.parse_ref(ref)) == ref


@pytest.mark.parametrize("ref", ["configmaps/shop/settings", "configmaps.core", "configmaps.core/a/b/c", ".core/x",
                                 "configmaps.core//x"])
def test_a_reference_that_names_no_object_is_refused(ref: str) -> None:
    with pytest.raises(subjects.SubjectError, match="is not an object"):
        subjects.parse_ref(ref)


def test_an_objects_filter_matches_its_subject_in_every_version() -> None:
    key = subjects.parse_ref("deployments.apps/shop/web")
    subject = subjects.object_subject(prefix="standby", plan_namespace="sys", plan_name="p", group="apps",
                                      version="v1", resource="deployments", namespace="shop", name="web")
    assert subjects.object_filter("standby", "sys", "p", key) == subject.replace(".v1.", ".*.")


async def test_a_pass_the_broker_does_not_answer_is_retried_soon_and_the_keeper_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: list[BaseException | int] = [TimeoutError(), nats.errors.NoRespondersError(), 3]
    slept: list[float] = []

    async def compact() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if not outcomes:
            raise asyncio.CancelledError

    keeper = HistoryKeeper(plan=SimpleNamespace(key="standby-system/web"), js=None,  # type: ignore[arg-type]
                           prefix="standby")
    monkeypatch.setattr(keeper, "compact", compact)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        await keeper.run(3600)
    assert slept == [RETRY_SECONDS, RETRY_SECONDS, 3600]
