"""Labels and annotations Standby stamps on every copy in the destination.

They make a copy self-describing: recovery needs nothing but the destination to activate it (the
plan, the epoch, the source version and the exact inverse of every deactivating change travel on
the object itself)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

PREFIX = "dr.standby.dev/"

# Label (selectable): this object was written by Standby and may be updated or deleted by it.
MANAGED = PREFIX + "managed"
MANAGED_VALUE = "true"
MANAGED_SELECTOR = f"{MANAGED}={MANAGED_VALUE}"
# Label (selectable): the plan of a copy, in a form a label value can hold (see plan_label; the
# annotation PLAN holds it exactly and decides). The API server then returns one plan's copies
# instead of every plan's, which a stand-by serving many plans would otherwise send each time.
PLAN_LABEL = PREFIX + "plan"
# Copies written before the plan label existed carry none: what finds them.
UNLABELLED_SELECTOR = f"{MANAGED_SELECTOR},!{PLAN_LABEL}"
LABEL_VALUE_MAX = 63

# Annotations.
PLAN = PREFIX + "plan"  # "<namespace>/<name>" of the RecoveryPlan
EPOCH = PREFIX + "epoch"
SOURCE_UID = PREFIX + "source-uid"
SOURCE_RESOURCE_VERSION = PREFIX + "source-resource-version"
STREAM_SEQUENCE = PREFIX + "stream-sequence"
INVERSE = PREFIX + "inverse"  # JSON list of RFC 6902 operations that undo deactivation
FROM_PATCH = PREFIX + "from-patch"  # the plan's recoveryProcess.fromPatch, so recovery needs no plan
FROM_ORIGINAL = PREFIX + "from-original"  # "true": restore the original from the stream

# A node label no node carries: DaemonSets are parked on it.
PARKING_NODE_LABEL = PREFIX + "deactivated"
# A name no autoscaler target carries: autoscalers are pointed at it.
HELD_TARGET_PREFIX = "standby-held-"
# A label no object carries: held admission webhooks select on it.
HELD_WEBHOOK_LABEL = PREFIX + "held-webhook"

FIELD_MANAGER = "standby"


def is_managed(metadata: Mapping[str, Any]) -> bool:
    """Whether the object with this metadata is a copy Standby wrote (and may update or delete)."""
    return (metadata.get("labels") or {}).get(MANAGED) == MANAGED_VALUE


def is_bookkeeping(key: str) -> bool:
    return key.startswith(PREFIX)


def plan_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def plan_label(key: str) -> str:
    """The plan label's value for the plan ``key`` ("<namespace>/<name>"): "<namespace>.<name>" (a
    namespace has no dots), or, longer than a label value may be, its first 54 characters and a hash
    of the whole (as Velero shortens names in labels). Two plans may then share a value: a selector
    can also match the other's copies (the annotation tells them apart), never miss one."""
    value = key.replace("/", ".", 1)
    if len(value) <= LABEL_VALUE_MAX:
        return value
    return f"{value[:54]}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def copies_selectors(plan_keys: Iterable[str]) -> tuple[str, str]:
    """The two label selectors that together match every copy of ``plan_keys``: by the plan label,
    and the copies without one (written by a Standby before the label existed; each is labelled at
    its next write). Both also match others' copies in rare cases: filter by the annotation."""
    values = sorted({plan_label(k) for k in plan_keys})
    by_plan = f"{PLAN_LABEL}={values[0]}" if len(values) == 1 else f"{PLAN_LABEL} in ({','.join(values)})"
    return f"{MANAGED_SELECTOR},{by_plan}", UNLABELLED_SELECTOR

# Fences: ConfigMaps in the destination's Standby namespace, one per activated plan. The syncer
# refuses to write any copy of a fenced plan; recovery writes the fence before it changes anything.
# On a RecoveryPlan: a new value (any) closes the plan's open delete breaker (operator acknowledgement).
DELETE_BREAKER_RESET = PREFIX + "delete-breaker-reset"
RETRY_DEAD_LETTERS = PREFIX + "retry-dead-letters"  # on a plan: a new value publishes the failed changes again
PURGE_DEAD_LETTERS = PREFIX + "purge-dead-letters"  # on a plan: a new value forgets the dead letters

FENCE_LABEL = PREFIX + "fence"
FENCE_PREFIX = "standby-fence."


def fence_name(plan_namespace: str, plan_name: str) -> str:
    return f"{FENCE_PREFIX}{plan_namespace}.{plan_name}"
