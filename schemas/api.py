"""The Standby API, ``dr.standby.dev/v1alpha1``: pydantic models from which the CRDs are generated.

Field names follow the operator Standby was modelled on, so its users can move by changing
``apiVersion``. Python attributes are snake_case; the wire (and the CRD) is camelCase."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from schemas import durations


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )


def cel(rule: str, message: str) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


# --- shared --------------------------------------------------------------------------------------


class ObjectRef(Model):
    name: str = Field(min_length=1, max_length=253, description="Name of the referenced object.")
    namespace: str = Field(
        default="", max_length=63, description="Namespace of the referenced object (default: the referrer's)."
    )


class Condition(Model):
    type: str = Field(description="Condition type, e.g. Ready, Synced.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", description="CamelCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, description="RFC 3339 time of the last change.")


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(Model):
    """An ordinary Kubernetes label selector; all parts must match."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class PatchOperation(Model):
    """One RFC 6902 operation."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!(self.op in ['move', 'copy']) || has(self.from)",
                 "message": "from is required for move and copy"},
            ],
            # add, replace and test need a value. CEL cannot read an untyped field, so this is a
            # structural value validation: without a value, only the ops that take none pass
            # (refused naming the op: 'op: Unsupported value: "replace"').
            "anyOf": [{"required": ["value"]}, {"properties": {"op": {"enum": ["remove", "move", "copy"]}}}],
        },
    )

    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: str = Field(pattern=r"^(/([^~/]|~[01])*)*$", description="JSON Pointer (RFC 6901).")
    value: Any = Field(default=None, description="Value for add, replace and test.")
    from_: str | None = Field(default=None, alias="from", description="Source pointer for move and copy.")

    @model_validator(mode="after")
    def _value_present(self) -> PatchOperation:
        # The same rule as the CRD's anyOf above, for models built in Python.
        if self.op in ("add", "replace", "test") and "value" not in self.model_fields_set:
            raise ValueError(f"value is required for op {self.op}")
        return self

    def as_operation(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, exclude_unset=True) | (
            {"value": self.value} if self.op in ("add", "replace", "test") else {}
        )


# --- ManagedCluster ------------------------------------------------------------------------------


class SecretRef(Model):
    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=63)


class ManagedClusterSpec(Model):
    secret_ref: SecretRef = Field(description="Secret whose key kubeconfig.yaml holds a kubeconfig.")


class ManagedClusterStatus(Model):
    conditions: list[Condition] = Field(default_factory=list)
    server_version: str | None = None
    last_probe_time: str | None = None
    error: str | None = None


class ManagedCluster(Model):
    spec: ManagedClusterSpec
    status: ManagedClusterStatus | None = None


# --- RecoveryPlan --------------------------------------------------------------------------------


class NameSelector(Model):
    include_regex: list[str] = Field(default_factory=list, description="Names must match one of these.")
    exclude_regex: list[str] = Field(default_factory=list, description="Names must match none of these.")


class Filters(Model):
    """All given parts must match (AND)."""

    selector: LabelSelector | None = Field(default=None, description="Label selector on the object.")
    namespace_selector: LabelSelector | None = Field(default=None, description="Label selector on its namespace.")
    namespaces: list[str] = Field(default_factory=list, description="Only these namespaces.")
    name_selector: NameSelector | None = None


class Transformation(Model):
    patch: list[PatchOperation] = Field(default_factory=list, description="Applied to the copy in the destination.")


class FromOriginal(Model):
    enabled: bool = False


class RecoveryProcess(Model):
    from_patch: list[PatchOperation] = Field(default_factory=list, description="Applied at activation.")
    from_original: FromOriginal = Field(
        default_factory=FromOriginal, description="Restore the original object from the stream."
    )


class ResourceSelector(Model):
    group: str = Field(default="", description='API group; "" for the core group.')
    version: str = Field(min_length=1)
    resource: str = Field(min_length=1, description="Plural resource name, e.g. deployments.")
    filters: Filters = Field(default_factory=Filters)
    transformation: Transformation = Field(default_factory=Transformation)
    recovery_process: RecoveryProcess = Field(default_factory=RecoveryProcess)


DURATION = r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)$"  # Go's time.ParseDuration, as kubectl


class History(Model):
    """What the plan's stream keeps for rebuilds as of a moment (``standby rebuild --at``). Every
    object's latest state is always kept, whatever these say."""

    max_age: str = Field(
        default="72h", pattern=DURATION,
        description="How far back a rebuild can reach (a duration, e.g. 168h): older states are dropped, except the "
                    "one each object had at that moment. \"0\": no limit by age.")
    states_per_object: int = Field(
        default=100, ge=0, le=1_000_000,
        description="At most this many states per object, the latest among them; 0: no limit by count.")

    @property
    def max_age_seconds(self) -> float:
        return durations.parse(self.max_age)


class RecoveryPlanSpec(Model):
    suspend: bool = Field(default=False, description="Stop publishing and applying while true.")
    force_namespace_creation: bool = Field(default=False, description="Create missing namespaces in the destination.")
    source_cluster_ref: ObjectRef = Field(description="ManagedCluster of the source.")
    destination_cluster_ref: ObjectRef | None = Field(
        default=None, description="ManagedCluster of the destination; omitted: the cluster the plan lives in."
    )
    resources: list[ResourceSelector] = Field(min_length=1, max_length=200)
    history: History = Field(default_factory=History, description="What the stream keeps for rebuilds.")


class DeadLetterStatus(Model):
    ref: str = Field(description='The object, as "resource.group/namespace/name".')
    reason: str
    message: str = ""
    sequence: int = Field(default=0, description="Stream sequence of the change that failed.")
    time: str | None = Field(default=None, description="When it failed (RFC 3339).")


class DeleteBreakerStatus(Model):
    open: bool = False
    opened_at: str | None = Field(default=None, description="When it opened (RFC 3339).")
    reset_seen: str | None = Field(
        default=None, description="The plan's delete-breaker-reset annotation when it opened; a different value "
                                  "closes it.")


class RecoveryPlanStatus(Model):
    phase: Literal["Pending", "Syncing", "Synced", "Suspended", "Degraded", "Activated"] | None = None
    conditions: list[Condition] = Field(default_factory=list)
    objects_in_sync: int = Field(default=0, description="Copies in the destination that reflect their source.")
    objects_out_of_sync: int | None = Field(
        default=None, description="Changes in the stream not yet applied; absent while the stream cannot be read.")
    objects_failed: int = Field(default=0, description="Objects whose last change was dead-lettered.")
    last_event_time: str | None = Field(default=None, description="When a change was last applied (RFC 3339).")
    replication_lag_seconds: float | None = Field(
        default=None, description="Source observed to applied, of the last change applied (history, not now).")
    source_last_heard_time: str | None = Field(
        default=None, description="When the source last answered the watcher (RFC 3339; refreshed every 30 s "
                                  "while it answers, exact when it stops).")
    pending_change_age_seconds: float | None = Field(
        default=None, description="Age of the oldest change not yet applied: 0 when in step; absent while the "
                                  "stream cannot be read.")
    stream_sequence: int = 0
    epoch: int = 0
    observed_generation: int = 0
    delete_breaker: DeleteBreakerStatus | None = Field(
        default=None,
        description="Set by the syncer: open while mass deletion is refused, until an operator resets it.")
    dead_letters: list[DeadLetterStatus] = Field(
        default_factory=list, description="The newest objects whose last change failed (all: objectsFailed).")


class RecoveryPlan(Model):
    spec: RecoveryPlanSpec
    status: RecoveryPlanStatus | None = None


# --- RecoveryExecutionPlan ----------------------------------------------------------------------


class Wave(Model):
    name: str = Field(min_length=1, max_length=63)
    recovery_plans: list[ObjectRef] = Field(min_length=1)
    wait_for_ready: bool = False
    timeout_seconds: int = Field(default=300, ge=1, le=86400)


class RecoveryExecutionPlanSpec(Model):
    waves: list[Wave] = Field(min_length=1, max_length=50)


class RecoveryExecutionPlan(Model):
    spec: RecoveryExecutionPlanSpec


# --- RecoveryExecutionJob -----------------------------------------------------------------------

JobPhase = Literal["Pending", "Fencing", "Activating", "Completed", "PartiallyFailed", "Failed"]
TERMINAL_PHASES = frozenset({"Completed", "PartiallyFailed", "Failed"})


class Progress(Model):
    done: int = 0
    total: int = 0
    summary: str = Field(default="", description='"done/total", for printer columns.')


ObjectOutcome = Literal["Activated", "Unchanged", "WouldChange", "Failed", "Skipped"]


class ObjectResult(Model):
    plan: str
    ref: str
    outcome: ObjectOutcome
    reason: str = ""
    changes: list[str] = Field(default_factory=list)


class WaveResult(Model):
    name: str
    phase: Literal["Pending", "Running", "Completed", "PartiallyFailed", "Failed"] = "Pending"
    done: int = 0
    total: int = 0
    failed: int = 0
    message: str = ""


class RecoveryExecutionJobSpec(Model):
    recovery_execution_plan_ref: ObjectRef
    dry_run: bool = Field(default=False, description="Report what would change; change nothing.")


class RecoveryExecutionJobStatus(Model):
    phase: JobPhase = "Pending"
    progress: Progress = Field(default_factory=Progress)
    waves: list[WaveResult] = Field(default_factory=list)
    objects: list[ObjectResult] = Field(default_factory=list)
    start_time: str | None = None
    completion_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    epoch: int = 0
    message: str = ""
    timings: dict[str, float] = Field(default_factory=dict,
                                      description="Seconds each step took (fence, findCopies, each wave).")


class RecoveryExecutionJob(Model):
    spec: RecoveryExecutionJobSpec
    status: RecoveryExecutionJobStatus | None = None


# --- Rebuild ------------------------------------------------------------------------------------

RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
RebuildPhase = Literal["Pending", "Running", "Completed", "PartiallyFailed", "Failed"]


class RebuildSelection(Model):
    """The part of the plan to rebuild; every given part must match (empty: the whole plan)."""

    namespaces: list[str] = Field(default_factory=list, max_length=500)
    resources: list[str] = Field(default_factory=list, max_length=200,
                                 description='As "deployments.apps", "configmaps" (the core group).')
    names: list[str] = Field(default_factory=list, max_length=1000)
    selector: LabelSelector | None = None


class RebuildSpec(Model):
    recovery_plan_ref: ObjectRef = Field(description="The plan whose stream is read.")
    at: str | None = Field(default=None, pattern=RFC3339,
                           description="The moment (RFC 3339, inclusive); absent: when the rebuild starts.")
    target_cluster_ref: ObjectRef | None = Field(
        default=None, description="A ManagedCluster to write into; absent: the plan's stand-by.")
    mode: Literal["Deactivated", "Active"] = Field(
        default="Deactivated", description="Deactivated: copies, as the syncer writes them (a stand-by). Active: the "
                                           "objects as they run (a restore).")
    selection: RebuildSelection = Field(default_factory=RebuildSelection)
    prune: bool = Field(default=False, description="Remove the plan's copies the rebuilt state does not hold.")
    dry_run: bool = Field(default=False, description="Report what would be created, changed and deleted.")


class RebuildCounts(Model):
    create: int = 0
    update: int = 0
    unchanged: int = 0
    delete: int = 0
    failed: int = 0


class RebuildResult(Model):
    ref: str
    action: Literal["create", "update", "unchanged", "delete"]
    outcome: Literal["Done", "Failed", "WouldChange"]
    message: str = ""
    fields: list[str] = Field(default_factory=list)


class RebuildStatus(Model):
    phase: RebuildPhase = "Pending"
    at: str | None = Field(default=None, description="The moment rebuilt (RFC 3339).")
    earliest_available: str | None = Field(default=None, description="The earliest moment the stream can rebuild.")
    target: str = ""
    total: int = 0
    done: int = 0
    counts: RebuildCounts = Field(default_factory=RebuildCounts, description="Steps taken, by action.")
    results: list[RebuildResult] = Field(
        default_factory=list, description="The failed steps (a dry run: the steps that would change something); "
                                          "the first 200.")
    paused_plan: bool = Field(default=False, description="The rebuild paused the plan (spec.suspend).")
    start_time: str | None = None
    completion_time: str | None = None
    message: str = ""
    summary: str = Field(default="", description='"done/total", for printer columns.')


class Rebuild(Model):
    spec: RebuildSpec
    status: RebuildStatus | None = None
