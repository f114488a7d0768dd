"""Alert rules and the dashboard only name metrics the services really export."""

from __future__ import annotations

from pathlib import Path

import prometheus_client
import pytest
import yaml

import services.common.guarding
import services.common.leasing
import services.recovery.metrics
import services.syncer.metrics
import services.watcher.metrics  # noqa: F401 - registers the collectors
from tests.support.monitoring import referenced

MONITORING = Path(__file__).resolve().parents[2] / "k8s" / "monitoring"


def exported() -> set[str]:
    names = set()
    for metric in prometheus_client.REGISTRY.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
    return names




def test_every_referenced_metric_exists() -> None:
    # Histograms export _bucket/_sum/_count only once observed; declare what the family implies.
    names = exported()
    families = {n + suffix for n in names for suffix in ("", "_bucket", "_sum", "_count", "_total")}
    missing = sorted(referenced() - families)
    assert not missing, missing


@pytest.mark.parametrize("name", ["rules.yaml", "prometheusrule.yaml"])
def test_rules_have_summaries_and_severities(name: str) -> None:
    doc = yaml.safe_load((MONITORING / name).read_text())
    groups = doc["groups"] if "groups" in doc else doc["spec"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 5
    assert all(r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"] for r in rules)
