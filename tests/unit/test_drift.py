"""Who edited a copy, read from its managedFields (server-side apply's record of who set what)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from schemas import annotations as ann
from services.syncer.drift import DriftRepair, edited_by, first_check_delay


def entry(manager: str, time: str, fields: dict[str, object], subresource: str = "") -> dict[str, object]:
    out: dict[str, object] = {"manager": manager, "operation": "Update", "time": time, "fieldsV1": fields}
    if subresource:
        out["subresource"] = subresource
    return out


def test_only_a_foreign_owner_of_a_field_outside_metadata_and_status_is_an_edit() -> None:
    ours = entry(ann.FIELD_MANAGER, "2026-11-29T10:00:00Z", {"f:spec": {}, "f:metadata": {}})
    controller = entry("kube-controller-manager", "2026-11-29T10:00:01Z", {"f:spec": {"f:volumeName": {}}})
    status = entry("kube-controller-manager", "2026-11-29T10:00:02Z", {"f:status": {}}, subresource="status")
    assert edited_by({"managedFields": [ours, controller, status]}) is None
    scaled = entry("kubectl", "2026-11-29T10:05:00Z", {"f:spec": {"f:replicas": {}}}, subresource="scale")
    edited = entry("kubectl-edit", "2026-11-29T10:06:00Z", {"f:data": {}})
    assert edited_by({"managedFields": [ours, controller, scaled]}) == ("kubectl", "2026-11-29T10:05:00Z")
    assert edited_by({"managedFields": [ours, scaled, edited]}) == ("kubectl-edit", "2026-11-29T10:06:00Z")


def test_a_plans_first_check_comes_within_the_first_tenth_of_the_interval() -> None:
    assert first_check_delay(300, draw=lambda: 0.0) == 0.0
    assert first_check_delay(300, draw=lambda: 0.5) == 15.0
    assert 29.9 < first_check_delay(300, draw=lambda: 0.999) < 30.0
    delays = [first_check_delay(1.0) for _ in range(200)]  # the e2e tests check every second
    assert all(0 <= d < 0.1 for d in delays) and len(set(delays)) > 1  # spread, not one moment


@pytest.mark.parametrize(("first_copy", "checked_soon"), [(False, True), (True, False)])
async def test_a_new_consumers_first_check_waits_a_whole_interval(first_copy: bool, checked_soon: bool) -> None:
    """After a restart drift is looked for soon (copies may have been changed while the syncer was
    away); a consumer that never settled anything delivers every state anyway, so its plan's first
    check comes after a whole interval."""
    checks: list[float] = []
    repair = DriftRepair(applier=None, js=None, keys=None, own=None, subject_prefix="standby")  # type: ignore[arg-type]

    async def check() -> dict[str, Any]:
        checks.append(asyncio.get_running_loop().time())
        return {}

    repair.check = check  # type: ignore[method-assign]
    task = asyncio.create_task(repair.run(2.0, first_copy=first_copy))
    await asyncio.sleep(0.5)  # past the first tenth of the interval
    task.cancel()
    assert bool(checks) is checked_soon
