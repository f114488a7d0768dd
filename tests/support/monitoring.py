"""The metric names the alert rules and the dashboard use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "k8s" / "monitoring"


def referenced() -> set[str]:
    texts = [json.dumps(json.loads((MONITORING / "dashboard.json").read_text()))]
    for group in yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]:
        texts += [rule["expr"] for rule in group["rules"]]
    return {m for t in texts for m in re.findall(r"\bstandby_[a-z_]+", t)}


def families(exposition: str) -> set[str]:
    """Every sample name a /metrics page can carry for its families (# TYPE lines)."""
    names = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}
    return {n + suffix for n in names for suffix in ("", "_bucket", "_sum", "_count", "_total", "_created")}
