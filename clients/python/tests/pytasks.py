"""Python task functions the worker tests run (``--import pytasks``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict

from triggers_client.worker import Context, task


class ImportFailed(Exception):
    pass


def _wait_for_file(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


@task("app.tasks.ImportSubject")
def import_subject(ctx: Context) -> Dict[str, Any]:
    subject = ctx.kwargs["firstPageReceived"]["subject"]
    return {"subjectId": subject["id"], "seen": {"session": ctx.session, "instance": ctx.instance,
                                                 "run": ctx.run, "attempt": ctx.attempt,
                                                 "scoring": ctx.kwargs.get("scoring")}}


@task("app.tasks.Skipper")
def skipper(ctx: Context) -> Dict[str, Any]:
    ctx.skip({"reason": "empty", "got": ctx.kwargs})
    return {}


@task("app.tasks.Retrier")
def retrier(ctx: Context) -> Dict[str, Any]:
    if ctx.attempt == 1:
        ctx.retry(replacement_kwargs={"go": {"fixed": True}}, cooldown=0)
    return {"attempt": ctx.attempt, "kwargs": ctx.kwargs}


@task("app.tasks.Broken")
def broken(ctx: Context) -> Dict[str, Any]:
    raise ImportFailed(f"subject {ctx.kwargs['go']['id']} is missing")


@task("app.tasks.NotADict")
def not_a_dict(ctx: Context) -> Any:
    return [1, 2, 3]


@task("app.tasks.Warn")
def warn(ctx: Context) -> Dict[str, Any]:
    ctx.log_level = 30
    return {"warned": True}


@task("app.tasks.Slow")
def slow(ctx: Context) -> Dict[str, Any]:
    """Runs for `seconds` (longer than the lease in the heartbeat test)."""
    time.sleep(float(ctx.kwargs["go"]["seconds"]))
    return {"slept": ctx.kwargs["go"]["seconds"]}


@task("app.tasks.Gate")
def gate(ctx: Context) -> Dict[str, Any]:
    """Marks itself started (a file), then waits until the test opens the gate."""
    go = ctx.kwargs["go"]
    Path(go["dir"], f"started-{ctx.instance}-{os.getpid()}").touch()
    _wait_for_file(os.path.join(go["dir"], "open"))
    return {"pid": os.getpid()}


@task("app.tasks.Noop")
def noop(ctx: Context) -> Dict[str, Any]:
    return {}
