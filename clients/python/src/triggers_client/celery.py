"""Celery support: ``TriggerTask``, running an app's tasks in the worker process,
and dispatching claimed tasks to the app's broker.

In-process (``worker --celery-app MODULE:ATTR``): the tasks of the app run by
their Celery names in the triggers worker's threads.

Dispatch (``worker --celery-app MODULE:ATTR --dispatch``): the triggers worker
claims tasks and sends each to the app's broker as the Celery task
``triggers_client.execute`` with the lease it holds. The Celery worker (whose
app called :func:`install`) renews that lease first (a delivery whose lease
expired or was claimed again is refused and not run), runs the task by its
name, heartbeats while it runs and reports the outcome with that lease.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from celery import Celery, Task

from .client import Client
from .errors import Conflict, TriggersError
from .worker import Context, Heartbeater, Resolver, Retry, Skip, TaskFunction, default_worker_name, run_claim

__all__ = ["TriggerTask", "TriggerContext", "resolver", "install", "Dispatcher", "EXECUTE"]

log = logging.getLogger("triggers_client.celery")

#: The Celery name of the task that runs a dispatched triggers task.
EXECUTE = "triggers_client.execute"


class TriggerContext:
    """What ``TriggerTask._run`` receives, as in the original library."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        #: The kwargs handed to the task (``withParams`` merged under the trigger kwargs).
        self.trigger_kwargs: Dict[str, Any] = ctx.kwargs
        self.session: str = ctx.session
        self.instance: str = ctx.instance
        self.run: str = ctx.run
        self.attempt: int = ctx.attempt

    @property
    def manager(self) -> Any:
        """A :class:`~triggers_client.compat.TriggerManager` for the task's session."""
        from .compat import TriggerManager

        return TriggerManager(self.session)

    def __repr__(self) -> str:
        return f"TriggerContext({self.session!r}, {self.instance!r})"


class TriggerTask(Task):  # type: ignore[misc]
    """Base class of Celery tasks run by triggers: override ``_run(self, context)``
    and return a dict (the result). ``self.skip(...)`` and ``self.retry(...)``
    end the task as skipped / self-retried."""

    abstract = True

    def run(self, context: TriggerContext) -> Dict[str, Any]:
        if not isinstance(context, TriggerContext):
            raise TypeError(f"{self.name} is a TriggerTask: it is run by a triggers worker, not called directly")
        return self._run(context)

    def _run(self, context: TriggerContext) -> Dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must override _run(self, context)")

    def skip(self, metadata: Optional[Mapping[str, Any]] = None) -> None:
        """Ends the task as skipped with ``metadata``."""
        raise Skip(metadata)

    def retry(self, replacement_kwargs: Optional[Mapping[str, Any]] = None,
              cooldown: Optional[float] = None, **_celery_options: Any) -> None:
        """Ends this attempt and asks triggers for another one (within ``maxRetries``)."""
        raise Retry(replacement_kwargs, cooldown)


def _call(task: Task, ctx: Context) -> Any:
    if isinstance(task, TriggerTask):
        return task(TriggerContext(ctx))
    return task(**ctx.kwargs)


def resolver(app: Celery) -> Resolver:
    """Finds an app's task by its Celery name, as a triggers task function."""

    def resolve(run: str) -> Optional[TaskFunction]:
        if run == EXECUTE or run not in app.tasks:
            return None
        task = app.tasks[run]
        return lambda ctx: _call(task, ctx)

    return resolve


_clients: Dict[Tuple[str, Optional[str]], Client] = {}
_heartbeaters: Dict[int, Heartbeater] = {}
_lock = threading.Lock()


def _client_for(url: str, token: Optional[str]) -> Tuple[Client, Heartbeater]:
    with _lock:
        client = _clients.get((url, token))
        if client is None:
            client = _clients[(url, token)] = Client(url, token=token)
        heartbeater = _heartbeaters.get(id(client))
        if heartbeater is None:
            heartbeater = _heartbeaters[id(client)] = Heartbeater(client)
        return client, heartbeater


def install(app: Celery, server: Optional[str] = None, token: Optional[str] = None) -> Task:
    """Registers ``triggers_client.execute`` on ``app``, so that the app's Celery
    workers run the tasks a dispatching triggers worker sends them.

    ``server`` (default: the one the dispatcher names) and ``token`` (default
    ``TRIGGERS_API_TOKEN``) say how to report back; the token never travels
    through the broker."""
    if EXECUTE in app.tasks:
        return app.tasks[EXECUTE]
    resolve = resolver(app)

    @app.task(name=EXECUTE, ignore_result=True)  # type: ignore[misc, untyped-decorator, unused-ignore]
    def execute(envelope: Dict[str, Any]) -> Dict[str, Any]:
        url = server or envelope["server"]
        client, heartbeater = _client_for(url, token if token is not None else os.environ.get("TRIGGERS_API_TOKEN"))
        claim = envelope["claim"]
        lease_seconds = int(envelope["leaseSeconds"])
        where = f"{claim['session']}/{claim['instance']} ({claim['run']})"
        try:
            client.heartbeat(claim["leaseToken"], lease_seconds)
        except Conflict as exc:
            log.warning("refusing the delivery of %s: its lease is no longer valid (%s)", where, exc.message)
            return {"refused": True}
        # a duplicate delivered to this process while the first still runs is refused
        # here; one delivered to another process runs, and only the first report counts
        outcome = run_claim(client, claim, resolve, heartbeater, lease_seconds)
        return {"refused": False, "reported": None if outcome is None else outcome.kind}

    return execute


class Dispatcher:
    """Claims tasks and sends them to a Celery app's broker; keeps at most
    ``concurrency`` dispatched tasks unfinished at once."""

    def __init__(self, client: Client, app: Celery, queue: Optional[str] = None, concurrency: int = 8,
                 lease_seconds: int = 60, name: Optional[str] = None, max_poll_interval: float = 1.0) -> None:
        self.client = client
        self.app = app
        self.queue = queue
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.name = name or default_worker_name()
        self.max_poll_interval = max_poll_interval
        self._stopping = threading.Event()
        # lease token -> (session, instance, lease deadline)
        self._outstanding: Dict[str, Tuple[str, str, float]] = {}
        self.dispatched = 0

    def stop(self) -> None:
        self._stopping.set()

    def _celery_queue(self, run: str) -> Optional[str]:
        task = self.app.tasks.get(run)
        return getattr(task, "queue", None) if task is not None else None

    def _prune(self) -> None:
        """Forgets dispatched tasks that finished (or whose lease ran out)."""
        now = time.monotonic()
        for token, (_, _, deadline) in list(self._outstanding.items()):
            if deadline <= now:
                del self._outstanding[token]
        if not self._outstanding:
            return
        items: List[Tuple[str, Tuple[str, str, float]]] = list(self._outstanding.items())
        decl, fields, variables = [], [], {}
        for i, (_, (session, instance, _)) in enumerate(items):
            decl.append(f"$s{i}: String!, $i{i}: String!")
            fields.append(f"q{i}: session(uid: $s{i}) {{ instance(name: $i{i}) {{ status }} }}")
            variables[f"s{i}"], variables[f"i{i}"] = session, instance
        try:
            data = self.client.execute(f"query({', '.join(decl)}) {{ {' '.join(fields)} }}", variables)
        except TriggersError as exc:
            log.warning("could not check dispatched tasks: %s", exc)
            return
        for i, (token, _) in enumerate(items):
            row = (data.get(f"q{i}") or {}).get("instance")
            if row is None or row["status"] not in ("SCHEDULED", "RUNNING"):
                self._outstanding.pop(token, None)

    def run(self) -> None:
        import signal

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self.stop())
        log.info("dispatcher %s: queue %s of %s -> broker of %s (at most %d in flight)", self.name,
                 self.queue or "default", self.client.url, self.app.main, self.concurrency)
        idle = 0.02
        try:
            while not self._stopping.is_set():
                self._prune()
                free = self.concurrency - len(self._outstanding)
                claims: List[Dict[str, Any]] = []
                if free > 0:
                    try:
                        claims = self.client.claim_tasks(self.name, self.queue, max=free,
                                                         lease_seconds=self.lease_seconds)
                    except TriggersError as exc:
                        log.warning("claiming failed: %s", exc)
                for claim in claims:
                    envelope = {"server": self.client.url, "leaseSeconds": self.lease_seconds, "claim": claim}
                    self.app.send_task(EXECUTE, args=[envelope], queue=self._celery_queue(claim["run"]))
                    self._outstanding[claim["leaseToken"]] = (claim["session"], claim["instance"],
                                                              time.monotonic() + self.lease_seconds)
                    self.dispatched += 1
                if claims:
                    idle = 0.02
                    continue
                if self._outstanding:  # waiting for dispatched tasks to finish: look again soon
                    self._stopping.wait(0.01)
                    continue
                self._stopping.wait(idle)
                idle = min(idle * 2, self.max_poll_interval)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("dispatcher stopped; %d dispatched task(s) left to their Celery workers", len(self._outstanding))
