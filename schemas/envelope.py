"""The message that travels on the stream: one change of one source object.

The envelope is versioned (``schema``); a reader refuses versions it does not know rather than
guessing. The body is the *sanitized original* (never the deactivated copy): the stream is the
durable copy of the source and the basis for rebuilds and ``fromOriginal`` recovery."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.subjects import ObjectKey

SCHEMA_VERSION = 1


class EventType(StrEnum):
    UPSERT = "UPSERT"
    DELETE = "DELETE"


class ObjectReference(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str = ""
    version: str
    resource: str
    kind: str
    namespace: str = ""
    name: str = Field(min_length=1)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.group, self.resource, self.namespace, self.name)

    def __str__(self) -> str:
        return str(self.key)


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    type: EventType
    ref: ObjectReference
    source_uid: str
    source_resource_version: str
    observed_at: float = Field(description="Unix time (s) the watcher observed the change")
    plan_namespace: str
    plan_name: str
    epoch: int = Field(default=0, ge=0)
    body: dict[str, Any] | None = None
