"""The per-kind rule table's own facts."""

from __future__ import annotations

from schemas import kinds


def test_kinds_never_copied_are_skipped_whatever_the_object_and_not_searched_for_copies() -> None:
    never = {key for key, rules in kinds.RULES.items() if rules.never_copied}
    assert {("", "Pod"), ("", "Event"), ("coordination.k8s.io", "Lease")} <= never
    for group, kind in never:
        assert kinds.never_copied(group, kind)
        assert kinds.skip_reason({"apiVersion": f"{group}/v1" if group else "v1", "kind": kind,
                                  "metadata": {"name": "x", "namespace": "app"}}, own_namespace="standby-system")
    assert not kinds.never_copied("apps", "Deployment") and not kinds.never_copied("", "ConfigMap")
    assert not kinds.never_copied("example.com", "Widget")  # a custom resource: copied like any other
