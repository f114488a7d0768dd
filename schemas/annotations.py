"""Labels and annotations Standby stamps on every copy in the destination.

They make a copy self-describing: recovery needs nothing but the destination to activate it (the
plan, the epoch, the source version and the exact inverse of every deactivating change travel on
the object itself)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PREFIX = "dr.standby.dev/"

# Label (selectable): this object was written by Standby and may be updated or deleted by it.
MANAGED = PREFIX + "managed"
MANAGED_VALUE = "true"
MANAGED_SELECTOR = f"{MANAGED}={MANAGED_VALUE}"

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
