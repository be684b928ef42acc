"""The values the client returns: instances, events and fire results."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["Instance", "Event", "FireResult", "INSTANCE_FIELDS", "EVENT_FIELDS"]

#: The GraphQL selection behind :class:`Instance`.
INSTANCE_FIELDS = "session name task status kwargs abandonState metadata result logLevel parent depth"
#: The GraphQL selection behind :class:`Event`.
EVENT_FIELDS = "seq kind at data causedBy instance trigger"


def parse_datetime(value: str) -> datetime:
    """An RFC 3339 timestamp (``...Z`` included, which Python 3.9 cannot read)."""
    if value.endswith("Z") or value.endswith("z"):
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value)


@dataclass(frozen=True)
class Instance:
    """One execution of a task, ``<task>#<n>``; ``status`` is lower-case (``"finished"``)."""

    name: str
    task: str
    status: str
    kwargs: Dict[str, Any]
    metadata: Dict[str, Any]
    result: Optional[Dict[str, Any]]
    depth: int
    parent: Optional[str]
    log_level: int
    session: str = ""
    abandon_state: List[str] = field(default_factory=list)

    @property
    def is_resolved(self) -> bool:
        """Finished, skipped, replayed or abandoned."""
        return self.status in ("finished", "skipped", "replayed", "abandoned")

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any]) -> "Instance":
        return cls(
            name=data["name"],
            task=data["task"],
            status=str(data["status"]).lower(),
            kwargs=data.get("kwargs") or {},
            metadata=data.get("metadata") or {},
            result=data.get("result"),
            depth=int(data.get("depth") or 0),
            parent=data.get("parent"),
            log_level=int(data.get("logLevel") or 0),
            session=data.get("session") or "",
            abandon_state=list(data.get("abandonState") or []),
        )


@dataclass(frozen=True)
class Event:
    """A fact of a session's log; ``seq`` is the session's version after it."""

    seq: int
    kind: str
    at: datetime
    data: Any
    caused_by: Optional[int]
    instance: Optional[str]
    trigger: Optional[str]

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any]) -> "Event":
        return cls(
            seq=int(data["seq"]),
            kind=data["kind"],
            at=parse_datetime(data["at"]),
            data=data.get("data"),
            caused_by=data.get("causedBy"),
            instance=data.get("instance"),
            trigger=data.get("trigger"),
        )


@dataclass(frozen=True)
class FireResult:
    """What a fire did: the ``TriggerFired`` event's ``seq``, the instances this
    fire scheduled and abandoned (names), and whether the idempotency key had
    been used before (then nothing was appended)."""

    seq: int
    scheduled: List[str]
    abandoned: List[str]
    duplicate: bool
    version: int
    event: Event
