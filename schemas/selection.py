"""Which source objects a plan's ``filters`` select. Pure: the caller supplies namespace labels.

All given parts must match (AND). A regex that does not compile is an :class:`InvalidFilterError`
the watcher reports as a condition on the plan."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas import api


class InvalidFilterError(ValueError):
    pass


def _requirement_matches(req: api.LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = req.key in labels
    if req.operator == "Exists":
        return present
    if req.operator == "DoesNotExist":
        return not present
    if req.operator == "In":
        return present and labels[req.key] in req.values
    return not present or labels[req.key] not in req.values  # NotIn


def selector_matches(selector: api.LabelSelector | None, labels: Mapping[str, str] | None) -> bool:
    if selector is None:
        return True
    labels = labels or {}
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    return all(_requirement_matches(r, labels) for r in selector.match_expressions)


def to_query(selector: api.LabelSelector | None) -> str:
    """The selector as a ``labelSelector`` query string, so the API server filters for us."""
    if selector is None:
        return ""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for req in selector.match_expressions:
        if req.operator == "Exists":
            parts.append(req.key)
        elif req.operator == "DoesNotExist":
            parts.append(f"!{req.key}")
        else:
            op = "in" if req.operator == "In" else "notin"
            parts.append(f"{req.key} {op} ({','.join(req.values)})")
    return ",".join(parts)


@dataclass(frozen=True)
class CompiledFilters:
    filters: api.Filters
    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]

    @property
    def needs_namespace_labels(self) -> bool:
        return self.filters.namespace_selector is not None

    def matches(self, obj: Mapping[str, Any], namespace_labels: Mapping[str, str] | None = None) -> bool:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        namespace = meta.get("namespace", "")
        f = self.filters
        if f.namespaces and namespace not in f.namespaces:
            return False
        if not selector_matches(f.selector, meta.get("labels")):
            return False
        if f.namespace_selector is not None and namespace \
                and not selector_matches(f.namespace_selector, namespace_labels):
            return False
        if self.include and not any(p.search(name) for p in self.include):
            return False
        return not any(p.search(name) for p in self.exclude)


def compile_filters(filters: api.Filters) -> CompiledFilters:
    def compile_all(patterns: list[str], what: str) -> tuple[re.Pattern[str], ...]:
        compiled = []
        for pattern in patterns:
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise InvalidFilterError(f"nameSelector.{what} {pattern!r} does not compile: {exc}") from exc
        return tuple(compiled)

    names = filters.name_selector or api.NameSelector()
    return CompiledFilters(
        filters, compile_all(names.include_regex, "includeRegex"), compile_all(names.exclude_regex, "excludeRegex")
    )
