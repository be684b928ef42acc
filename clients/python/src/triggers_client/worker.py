"""A worker of Python functions: the ``@task`` registry, one claimed task's run
(context, heartbeats, outcome, report) and the claiming loop.

Tasks run at least once: a worker that dies leaves its leases to expire and
another worker runs the tasks again, so make them safe to run twice.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from .client import Client
from .errors import Conflict, TriggersError

__all__ = ["task", "registry", "Context", "Skip", "Retry", "Worker", "Heartbeater", "run_claim",
           "exception_type", "INVALID_RESULT", "UNKNOWN_TASK"]

log = logging.getLogger("triggers_client.worker")

#: ``exceptionType`` of a task that returned something other than a dict.
INVALID_RESULT = "triggers_client.InvalidResult"
#: ``exceptionType`` of a claimed task whose ``run`` this worker has no function for.
UNKNOWN_TASK = "triggers_client.UnknownTask"

TaskFunction = Callable[["Context"], Any]
#: Finds the function for a ``run`` name (None: unknown).
Resolver = Callable[[str], Optional[TaskFunction]]

_registry: Dict[str, TaskFunction] = {}


def task(name: str) -> Callable[[TaskFunction], TaskFunction]:
    """Registers ``f(ctx) -> dict`` as the job ``name`` (a task's ``run``)."""

    def register(function: TaskFunction) -> TaskFunction:
        _registry[name] = function
        return function

    return register


def registry() -> Dict[str, TaskFunction]:
    """The functions registered with :func:`task`, by name."""
    return _registry


class Skip(Exception):
    """Raised by :meth:`Context.skip`: the task ends as skipped."""

    def __init__(self, metadata: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__("task skipped itself")
        self.metadata = dict(metadata or {})


class Retry(Exception):
    """Raised by :meth:`Context.retry`: the task ends as self-retried."""

    def __init__(self, replacement_kwargs: Optional[Mapping[str, Any]] = None,
                 cooldown: Optional[float] = None, message: str = "task asked to retry") -> None:
        super().__init__(message)
        self.replacement_kwargs = dict(replacement_kwargs) if replacement_kwargs is not None else None
        self.cooldown = cooldown
        self.message = message


@dataclass
class Context:
    """What a task function receives: its claimed instance."""

    kwargs: Dict[str, Any]
    session: str
    instance: str
    run: str
    attempt: int
    lease_token: str = field(repr=False, default="")
    #: The log level recorded with a success (default INFO, 20).
    log_level: Optional[int] = None

    def skip(self, metadata: Optional[Mapping[str, Any]] = None) -> None:
        """Ends the task as skipped, with ``metadata`` recorded on the instance."""
        raise Skip(metadata)

    def retry(self, replacement_kwargs: Optional[Mapping[str, Any]] = None,
              cooldown: Optional[float] = None) -> None:
        """Ends this attempt and asks for another (within the task's ``maxRetries``),
        optionally with replacement kwargs and after ``cooldown`` seconds."""
        raise Retry(replacement_kwargs, cooldown)


def exception_type(exc: BaseException) -> str:
    """The qualified class name, as a traceback prints it (``ValueError``,
    ``app.tasks.ImportFailed``)."""
    cls = type(exc)
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass
class Outcome:
    """How a task ended, before it is reported."""

    kind: str  # "complete", "skip", "retry", "fail"
    result: Optional[Dict[str, Any]] = None
    log_level: Optional[int] = None
    metadata: Optional[Dict[str, Any]] = None
    error: str = ""
    error_type: Optional[str] = None
    replacement_kwargs: Optional[Dict[str, Any]] = None
    cooldown: Optional[int] = None


def execute(function: Optional[TaskFunction], ctx: Context) -> Outcome:
    """Runs ``function(ctx)`` and says how it ended (never raises)."""
    if function is None:
        return Outcome("fail", error=f"no task named {ctx.run!r} is registered in this worker",
                       error_type=UNKNOWN_TASK, log_level=logging.ERROR)
    try:
        result = function(ctx)
    except Skip as skip:
        return Outcome("skip", metadata=skip.metadata)
    except Retry as retry:
        cooldown = None if retry.cooldown is None else int(math.ceil(retry.cooldown))
        return Outcome("retry", error=retry.message, replacement_kwargs=retry.replacement_kwargs,
                       cooldown=cooldown)
    except Exception as exc:  # noqa: BLE001 - any exception fails the task
        info = f"{exc}\n\n{''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))}"
        return Outcome("fail", error=info, error_type=exception_type(exc), log_level=logging.ERROR)
    if not isinstance(result, Mapping):
        return Outcome("fail", error=f"task {ctx.run!r} returned {type(result).__name__}, expected a dict"
                       f" (a JSON object): {result!r:.200}", error_type=INVALID_RESULT, log_level=logging.ERROR)
    return Outcome("complete", result=dict(result), log_level=ctx.log_level or logging.INFO)


def report(client: Client, ctx: Context, outcome: Outcome) -> None:
    """Reports ``outcome`` with the context's lease (raises :class:`Conflict` if lost)."""
    token = ctx.lease_token
    if outcome.kind == "complete":
        client.complete_task(token, outcome.result, log_level=outcome.log_level)
    elif outcome.kind == "skip":
        client.skip_task(token, outcome.metadata)
    elif outcome.kind == "retry":
        client.fail_task(token, outcome.error, error_type=None, retry=True, cooldown_seconds=outcome.cooldown,
                         replacement_kwargs=outcome.replacement_kwargs)
    else:
        client.fail_task(token, outcome.error, error_type=outcome.error_type, log_level=outcome.log_level,
                         context={"run": ctx.run, "attempt": ctx.attempt})


class _Held:
    def __init__(self, instance: str, lease_seconds: int) -> None:
        self.instance = instance
        self.lease_seconds = lease_seconds
        self.due = time.monotonic() + lease_seconds / 3.0
        self.lost = False


class Heartbeater:
    """One thread renewing every held lease each third of its length; a lease
    the server refuses is marked lost."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._held: Dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="triggers-heartbeat", daemon=True)
        self._thread.start()

    def hold(self, token: str, instance: str, lease_seconds: int) -> Optional[_Held]:
        """Starts renewing ``token``; None if it is already held here (a duplicate)."""
        held = _Held(instance, lease_seconds)
        with self._lock:
            if token in self._held:
                return None
            self._held[token] = held
        self._wake.set()
        return held

    def release(self, token: str) -> None:
        with self._lock:
            self._held.pop(token, None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                items = list(self._held.items())
            now = time.monotonic()
            for token, held in items:
                if held.lost or held.due > now:
                    continue
                try:
                    self.client.heartbeat(token, held.lease_seconds)
                    held.due = time.monotonic() + held.lease_seconds / 3.0
                except Conflict as exc:
                    held.lost = True
                    log.warning("lease of %s lost: %s", held.instance, exc.message)
                except TriggersError as exc:
                    held.due = time.monotonic() + 1.0
                    log.warning("heartbeat of %s failed (will retry): %s", held.instance, exc)
            with self._lock:
                dues = [h.due for h in self._held.values() if not h.lost]
            timeout = max(0.05, min(dues) - time.monotonic()) if dues else 1.0
            self._wake.wait(min(timeout, 1.0))
            self._wake.clear()


def context_of(claim: Mapping[str, Any]) -> Context:
    return Context(kwargs=dict(claim.get("kwargs") or {}), session=claim["session"], instance=claim["instance"],
                   run=claim["run"], attempt=int(claim.get("attempt") or 1), lease_token=claim["leaseToken"])


def run_claim(client: Client, claim: Mapping[str, Any], resolve: Resolver, heartbeater: Heartbeater,
              lease_seconds: int) -> Optional[Outcome]:
    """Runs one claimed task with its lease held, then reports its outcome.

    Returns the outcome reported, or None when the lease was lost (the result
    is dropped and logged: another worker owns the task now)."""
    ctx = context_of(claim)
    where = f"{ctx.session}/{ctx.instance} ({ctx.run})"
    held = heartbeater.hold(ctx.lease_token, ctx.instance, lease_seconds)
    if held is None:
        log.warning("refusing a duplicate of %s: this process is already running it with the same lease", where)
        return None
    try:
        outcome = execute(resolve(ctx.run), ctx)
    finally:
        heartbeater.release(ctx.lease_token)
    if held.lost:
        log.warning("dropping the %s outcome of %s: its lease was lost", outcome.kind, where)
        return None
    try:
        report(client, ctx, outcome)
    except Conflict as exc:
        log.warning("dropping the %s outcome of %s: the server refused the lease (%s)",
                    outcome.kind, where, exc.message)
        return None
    if outcome.kind == "fail":
        log.error("%s failed: %s: %s", where, outcome.error_type, outcome.error.split("\n", 1)[0])
    else:
        log.info("%s: %s", where, outcome.kind)
    return outcome


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    """Claims tasks of one queue and runs up to ``concurrency`` of them at once,
    each in its own thread.

    :meth:`stop` (or SIGTERM/SIGINT while :meth:`run` runs in the main thread)
    stops claiming; held tasks are given ``shutdown_timeout`` seconds to finish
    and report. Past that (or on a second signal) :meth:`run` returns without
    reporting them: their leases expire and another worker runs them again.
    """

    def __init__(self, client: Client, resolve: Optional[Resolver] = None, queue: Optional[str] = None,
                 concurrency: int = 1, lease_seconds: int = 30, name: Optional[str] = None,
                 max_poll_interval: float = 1.0, shutdown_timeout: float = 30.0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.client = client
        self.resolve: Resolver = resolve or _registry.get
        self.queue = queue
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.name = name or default_worker_name()
        self.max_poll_interval = max_poll_interval
        self.shutdown_timeout = shutdown_timeout
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._slots = threading.Condition()
        self._active = 0
        self.done = 0

    def stop(self) -> None:
        """Stops claiming; a second call stops waiting for held tasks."""
        if self._stopping.is_set():
            self._abort.set()
        self._stopping.set()
        with self._slots:
            self._slots.notify_all()

    def _one(self, claim: Mapping[str, Any]) -> None:
        try:
            run_claim(self.client, claim, self.resolve, self._heartbeater, self.lease_seconds)
        except TriggersError as exc:
            log.error("could not report %s/%s: %s (its lease will expire)", claim.get("session"),
                      claim.get("instance"), exc)
        except Exception:  # noqa: BLE001 - never let one task kill the worker
            log.exception("unexpected error running %s/%s", claim.get("session"), claim.get("instance"))
        finally:
            with self._slots:
                self._active -= 1
                self.done += 1
                self._slots.notify_all()

    def run(self) -> None:
        """Runs until :meth:`stop` (or a signal)."""
        self._heartbeater = Heartbeater(self.client)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self.stop())
        log.info("worker %s claiming from queue %s of %s (concurrency %d)", self.name, self.queue or "default",
                 self.client.url, self.concurrency)
        idle = 0.02
        try:
            while not self._stopping.is_set():
                with self._slots:
                    while self._active >= self.concurrency and not self._stopping.is_set():
                        self._slots.wait(0.5)
                    free = self.concurrency - self._active
                if self._stopping.is_set():
                    break
                try:
                    claims = self.client.claim_tasks(self.name, self.queue, max=free,
                                                     lease_seconds=self.lease_seconds)
                except TriggersError as exc:
                    log.warning("claiming failed: %s", exc)
                    claims = []
                    idle = self.max_poll_interval
                if not claims:
                    self._stopping.wait(idle)
                    idle = min(idle * 2, self.max_poll_interval)
                    continue
                idle = 0.02
                for claim in claims:
                    with self._slots:
                        self._active += 1
                    threading.Thread(target=self._one, args=(claim,), daemon=True,
                                     name=f"task {claim['instance']}").start()
            self._drain()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        with self._slots:
            if self._active:
                log.info("stopping: waiting up to %.0f s for %d running task(s)", self.shutdown_timeout, self._active)
            while self._active and not self._abort.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._slots.wait(min(left, 0.2))
            if self._active:
                log.warning("stopping with %d task(s) unreported: their leases will expire", self._active)
            else:
                log.info("stopped")
