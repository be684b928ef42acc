"""``Client`` and ``Session``: every query and mutation a session user needs."""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import BadInput, Unavailable
from .models import EVENT_FIELDS, INSTANCE_FIELDS, Event, FireResult, Instance
from ._transport import Transport

__all__ = ["Client", "Session", "InstanceRef", "STATUSES"]

log = logging.getLogger("triggers_client")

#: Instance statuses, lower-case as the client spells them.
STATUSES = ("unstarted", "scheduled", "running", "finished", "failed", "skipped", "replayed", "abandoned")

#: An instance argument: its name or the :class:`Instance` itself.
InstanceRef = Union[str, Instance]

#: Largest page the server serves.
_PAGE = 1000


def require_object(value: Any, what: str, allow_none: bool = True) -> Optional[Dict[str, Any]]:
    """``value`` if it is a dict (or None when allowed), else :class:`BadInput`,
    raised before any request is made."""
    if value is None and allow_none:
        return None
    if not isinstance(value, Mapping):
        raise BadInput(f"{what} must be a dict (a JSON object), got {type(value).__name__}")
    return dict(value)


def _name(instance: InstanceRef) -> str:
    return instance.name if isinstance(instance, Instance) else instance


def _statuses(status: Optional[Sequence[str]]) -> Optional[List[str]]:
    if status is None:
        return None
    if isinstance(status, str):
        status = [status]
    out = []
    for s in status:
        if s.lower() not in STATUSES:
            raise BadInput(f"unknown instance status {s!r}; expected one of {', '.join(STATUSES)}")
        out.append(s.upper())
    return out


class Client:
    """A connection to a triggers server.

    >>> client = Client("http://127.0.0.1:8080", token=None)
    >>> session = client.session("questionnaire:1")

    ``fire_retries`` bounds how often a fire that carries an idempotency key is
    retried when the server answers ``UNAVAILABLE`` (or cannot be reached).
    """

    def __init__(self, url: str = "http://127.0.0.1:8080", token: Optional[str] = None,
                 timeout: float = 10.0, fire_retries: int = 5) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.fire_retries = fire_retries
        self._transport = Transport(self.url, token, timeout)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection pool."""
        self._transport.close()

    def session(self, uid: str) -> "Session":
        """The session named ``uid`` (a uid never used is an empty session)."""
        return Session(self, uid)

    def execute(self, query: str, variables: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Runs a raw GraphQL document; returns its ``data``."""
        return self._transport.execute(query, variables)[0]

    def execute_with_extensions(self, query: str, variables: Optional[Dict[str, Any]] = None
                                ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Runs a raw GraphQL document; returns its `data` and the response `extensions`."""
        return self._transport.execute(query, variables)

    def health(self) -> bool:
        """Whether ``GET /health`` answers 200."""
        import httpx

        try:
            return httpx.get(self.url + "/health", timeout=self.timeout).status_code == 200
        except httpx.HTTPError:
            return False

    # Worker protocol (used by triggers_client.worker; public for custom workers).

    def claim_tasks(self, worker: str, queue: Optional[str] = None, max: int = 1,
                    lease_seconds: Optional[int] = None) -> List[Dict[str, Any]]:
        """Claims up to ``max`` scheduled instances of ``queue``; returns the claims."""
        data = self.execute(
            "mutation($w: String!, $q: String, $m: Int, $l: Int) { claimTasks(worker: $w, queue: $q, max: $m, leaseSeconds: $l)"
            " { leaseToken session instance run kwargs attempt leaseExpiresAt } }",
            {"w": worker, "q": queue, "m": max, "l": lease_seconds},
        )
        return list(data["claimTasks"])

    def heartbeat(self, lease_token: str, lease_seconds: Optional[int] = None) -> str:
        """Extends a lease; returns its new expiry. :class:`Conflict` if it was lost."""
        data = self.execute("mutation($t: String!, $l: Int) { heartbeat(leaseToken: $t, leaseSeconds: $l) }",
                            {"t": lease_token, "l": lease_seconds})
        return str(data["heartbeat"])

    def complete_task(self, lease_token: str, result: Optional[Mapping[str, Any]] = None,
                      log_level: Optional[int] = None) -> Instance:
        result = require_object(result, "result")
        data = self.execute(
            f"mutation($t: String!, $r: JSON, $l: Int) {{ completeTask(leaseToken: $t, result: $r, logLevel: $l) {{ {INSTANCE_FIELDS} }} }}",
            {"t": lease_token, "r": result, "l": log_level},
        )
        return Instance.from_graphql(data["completeTask"])

    def fail_task(self, lease_token: str, error: str, error_type: Optional[str] = None,
                  context: Optional[Mapping[str, Any]] = None, log_level: Optional[int] = None,
                  retry: bool = False, cooldown_seconds: Optional[int] = None,
                  replacement_kwargs: Optional[Mapping[str, Any]] = None) -> Instance:
        context = require_object(context, "context")
        replacement_kwargs = require_object(replacement_kwargs, "replacement_kwargs")
        data = self.execute(
            "mutation($t: String!, $e: String!, $et: String, $c: JSON, $l: Int, $r: Boolean, $cd: Int, $rk: JSON) {"
            " failTask(leaseToken: $t, error: $e, errorType: $et, context: $c, logLevel: $l, retry: $r,"
            f" cooldownSeconds: $cd, replacementKwargs: $rk) {{ {INSTANCE_FIELDS} }} }}",
            {"t": lease_token, "e": error, "et": error_type, "c": context, "l": log_level,
             "r": retry, "cd": cooldown_seconds, "rk": replacement_kwargs},
        )
        return Instance.from_graphql(data["failTask"])

    def skip_task(self, lease_token: str, metadata: Optional[Mapping[str, Any]] = None) -> Instance:
        metadata = require_object(metadata, "metadata")
        data = self.execute(
            f"mutation($t: String!, $m: JSON) {{ skipTask(leaseToken: $t, metadata: $m) {{ {INSTANCE_FIELDS} }} }}",
            {"t": lease_token, "m": metadata},
        )
        return Instance.from_graphql(data["skipTask"])


class Session:
    """One session of a server: configure it, fire triggers, read its state and log."""

    def __init__(self, client: Client, uid: str) -> None:
        self.client = client
        self.uid = uid
        #: The warnings of the last :meth:`configure` (``{"task", "directive", "message"}``).
        self.last_warnings: List[Dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"Session({self.uid!r}, {self.client.url!r})"

    def _query(self, selection: str, variables: Optional[Dict[str, Any]] = None, args: str = "") -> Dict[str, Any]:
        data = self.client.execute(
            f"query($uid: String!{args}) {{ session(uid: $uid) {{ {selection} }} }}",
            dict(variables or {}, uid=self.uid),
        )
        session: Dict[str, Any] = data["session"]
        return session

    def _mutate(self, field: str, args: Dict[str, Any], types: Dict[str, str], selection: str) -> Any:
        decl = "".join(f", ${k}: {t}" for k, t in types.items())
        call = ", ".join(["session: $uid"] + [f"{k}: ${k}" for k in types])
        data = self.client.execute(
            f"mutation($uid: String!{decl}) {{ {field}({call}) {{ {selection} }} }}", dict(args, uid=self.uid)
        )
        return data[field]

    # Configuration and firing.

    def configure(self, tasks: Mapping[str, Any], strict: bool = False) -> int:
        """Adds or replaces tasks (name -> directives); returns the new version.

        With ``strict=True`` unknown directives are refused (``BadConfiguration``)
        instead of being kept as extras; a server too old to know ``strict``
        raises :class:`BadInput` saying so.
        """
        tasks = require_object(tasks, "tasks", allow_none=False)  # type: ignore[assignment]
        args: Dict[str, Any] = {"tasks": tasks}
        types = {"tasks": "JSON!"}
        if strict:
            args["strict"] = True
            types["strict"] = "Boolean"
        decl = "".join(f", ${k}: {t}" for k, t in types.items())
        call = ", ".join(["session: $uid"] + [f"{k}: ${k}" for k in types])
        query = f"mutation($uid: String!{decl}) {{ configure({call}) {{ version }} }}"
        try:
            data, extensions = self.client.execute_with_extensions(query, dict(args, uid=self.uid))
        except BadInput as exc:
            if strict and "strict" in exc.message and "nknown argument" in exc.message:
                raise BadInput(f"the triggers server at {self.client.url} does not support configure(strict=True)"
                               f" ({exc.message})", code=exc.code, extensions=exc.extensions) from exc
            raise
        self.last_warnings = list(extensions.get("warnings") or [])
        for warning in self.last_warnings:
            log.warning("configure %s: task %s, %s: %s", self.uid, warning.get("task"),
                        warning.get("directive"), warning.get("message"))
        return int(data["configure"]["version"])

    def fire(self, trigger: str, kwargs: Optional[Mapping[str, Any]] = None,
             idempotency_key: Optional[str] = None) -> FireResult:
        """Fires ``trigger`` with ``kwargs`` (a dict).

        With an ``idempotency_key``, a fire that fails as ``Unavailable`` is
        retried (at most ``client.fire_retries`` times, backing off): the key
        makes sure it is applied exactly once.
        """
        kwargs = require_object(kwargs, "kwargs")
        query = (
            "mutation($uid: String!, $t: String!, $k: JSON, $key: String) {"
            " fire(session: $uid, trigger: $t, kwargs: $k, idempotencyKey: $key) {"
            f" session {{ version }} event {{ {EVENT_FIELDS} }} scheduled {{ name }} abandoned {{ name }} duplicate }} }}"
        )
        variables = {"uid": self.uid, "t": trigger, "k": kwargs, "key": idempotency_key}
        attempt = 0
        while True:
            try:
                data = self.client.execute(query, variables)["fire"]
                break
            except Unavailable as exc:
                if idempotency_key is None or attempt >= self.client.fire_retries:
                    raise
                delay = min(0.1 * (2 ** attempt), 2.0)
                attempt += 1
                log.warning("fire %s/%s unavailable (%s); retry %d in %.1f s", self.uid, trigger,
                            exc.message, attempt, delay)
                time.sleep(delay)
        event = Event.from_graphql(data["event"])
        return FireResult(
            seq=event.seq,
            scheduled=[i["name"] for i in data["scheduled"]],
            abandoned=[i["name"] for i in data["abandoned"]],
            duplicate=bool(data["duplicate"]),
            version=int(data["session"]["version"]),
            event=event,
        )

    # Reading.

    @property
    def version(self) -> int:
        """The session's current version (0 for a session never used)."""
        return int(self._query("version")["version"])

    def tasks(self) -> Dict[str, Dict[str, Any]]:
        """The configured tasks: name -> their directives as the server holds them."""
        rows = self._query("tasks { name after andEvery unless run using withParams maxRetries extras }")["tasks"]
        return {row.pop("name"): row for row in rows}

    def latest_kwargs(self) -> Dict[str, Any]:
        """The most recent kwargs of every trigger fired, by trigger name."""
        return dict(self._query("latestKwargs")["latestKwargs"])

    def instance(self, name: str) -> Optional[Instance]:
        """One instance by name (``t_x#0``), or None."""
        row = self._query(f"instance(name: $name) {{ {INSTANCE_FIELDS} }}", {"name": name}, ", $name: String!")["instance"]
        return Instance.from_graphql(row) if row else None

    def instances(self, status: Optional[Sequence[str]] = None, task: Optional[str] = None) -> List[Instance]:
        """Instances in creation order, optionally only ``task``'s and/or those with
        one of the ``status`` names (lower-case, e.g. ``["failed"]``)."""
        rows = self._query(f"instances(status: $status, task: $task) {{ {INSTANCE_FIELDS} }}",
                           {"status": _statuses(status), "task": task},
                           ", $status: [InstanceStatus!], $task: String")["instances"]
        return [Instance.from_graphql(r) for r in rows]

    def unresolved_tasks(self) -> List[str]:
        """Names of the tasks with no instance yet or with an unresolved one."""
        return [t["name"] for t in self._query("unresolvedTasks { name }")["unresolvedTasks"]]

    def unresolved_instances(self) -> List[Instance]:
        """Instances not finished, skipped, replayed or abandoned."""
        rows = self._query(f"unresolvedInstances {{ {INSTANCE_FIELDS} }}")["unresolvedInstances"]
        return [Instance.from_graphql(r) for r in rows]

    def instances_with_unresolved_logs(self) -> List[Instance]:
        """Instances that logged at ERROR or worse and nobody marked resolved."""
        rows = self._query(f"instancesWithUnresolvedLogs {{ {INSTANCE_FIELDS} }}")["instancesWithUnresolvedLogs"]
        return [Instance.from_graphql(r) for r in rows]

    def events(self, after: int = 0) -> Iterator[Event]:
        """The log from seq ``after`` (exclusive), paging through all of it."""
        while True:
            rows = self._query(f"events(after: $after, first: {_PAGE}) {{ {EVENT_FIELDS} }}",
                               {"after": after}, ", $after: Int")["events"]
            for row in rows:
                event = Event.from_graphql(row)
                after = event.seq
                yield event
            if len(rows) < _PAGE:
                return

    def watch(self, after_version: Optional[int] = None, reconnect_delay: float = 0.2,
              max_reconnect_delay: float = 5.0) -> Iterator[Event]:
        """The live timeline: events after ``after_version`` (default: from now
        on), then each new one as it commits. When the connection drops it
        reconnects (backing off) from the last event it yielded, so no event is
        skipped or repeated. Stop by breaking out of the loop."""
        last = self.version if after_version is None else after_version
        delay = reconnect_delay
        query = f"subscription($uid: String!, $after: Int) {{ sessionEvents(session: $uid, afterVersion: $after) {{ {EVENT_FIELDS} }} }}"
        while True:
            try:
                for data in self.client._transport.subscribe(query, {"uid": self.uid, "after": last}):
                    event = Event.from_graphql(data["sessionEvents"])
                    if event.seq <= last:
                        continue
                    last = event.seq
                    delay = reconnect_delay
                    yield event
                return
            except Unavailable as exc:
                log.warning("watch %s: %s; reconnecting after seq %d in %.1f s", self.uid, exc.message, last, delay)
                time.sleep(delay)
                delay = min(delay * 2, max_reconnect_delay)

    def settle(self, timeout: float = 30.0, interval: float = 0.05) -> None:
        """Waits until no instance is ``scheduled`` or ``running``; raises
        :class:`TimeoutError` past ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            busy = self.instances(status=["scheduled", "running"])
            if not busy:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(f"{i.name} ({i.status})" for i in busy)
                raise TimeoutError(f"session {self.uid} did not settle in {timeout} s: {names}")
            time.sleep(interval)

    # Recovery and manual changes.

    def replay_failed_instance(self, name: InstanceRef,
                               replacement_kwargs: Optional[Mapping[str, Any]] = None) -> Instance:
        """Replays a failed instance; returns the clone (scheduled at once)."""
        replacement_kwargs = require_object(replacement_kwargs, "replacement_kwargs")
        return Instance.from_graphql(self._mutate(
            "replayFailedInstance", {"instance": _name(name), "replacementKwargs": replacement_kwargs},
            {"instance": "String!", "replacementKwargs": "JSON"}, INSTANCE_FIELDS))

    def skip_failed_instance(self, name: InstanceRef, cascade: bool = False,
                             result: Optional[Mapping[str, Any]] = None) -> Instance:
        """Skips a failed instance; with ``cascade`` fires the task name with ``result``."""
        result = require_object(result, "result")
        return Instance.from_graphql(self._mutate(
            "skipFailedInstance", {"instance": _name(name), "cascade": cascade, "result": result},
            {"instance": "String!", "cascade": "Boolean", "result": "JSON"}, INSTANCE_FIELDS))

    def update_instance_status(self, name: InstanceRef, status: str,
                               metadata: Optional[Mapping[str, Any]] = None, cascade: bool = False,
                               cascade_kwargs: Optional[Mapping[str, Any]] = None) -> Instance:
        """Sets any status (lower-case name), merging ``metadata``; optionally cascades."""
        metadata = require_object(metadata, "metadata")
        cascade_kwargs = require_object(cascade_kwargs, "cascade_kwargs")
        (gql_status,) = _statuses([status]) or [status]
        return Instance.from_graphql(self._mutate(
            "updateInstanceStatus",
            {"instance": _name(name), "status": gql_status, "metadata": metadata, "cascade": cascade,
             "cascadeKwargs": cascade_kwargs},
            {"instance": "String!", "status": "InstanceStatus!", "metadata": "JSON", "cascade": "Boolean",
             "cascadeKwargs": "JSON"}, INSTANCE_FIELDS))

    def update_instance_metadata(self, name: InstanceRef, metadata: Mapping[str, Any]) -> Instance:
        """Merges ``metadata`` into the instance's."""
        metadata = require_object(metadata, "metadata", allow_none=False)  # type: ignore[assignment]
        return Instance.from_graphql(self._mutate(
            "updateInstanceMetadata", {"instance": _name(name), "metadata": metadata},
            {"instance": "String!", "metadata": "JSON!"}, INSTANCE_FIELDS))

    def mark_instance_logs_resolved(self, name: InstanceRef) -> Instance:
        """Sets metadata ``logsResolved: true``."""
        return Instance.from_graphql(self._mutate(
            "markInstanceLogsResolved", {"instance": _name(name)}, {"instance": "String!"}, INSTANCE_FIELDS))


