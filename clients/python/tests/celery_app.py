"""A Celery app for the tests: TriggerTask subclasses and plain tasks, on Redis."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

from celery import Celery

from triggers_client.celery import TriggerContext, TriggerTask, install

app = Celery("pytest_app", broker=os.environ.get("TRIGGERS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"))
app.conf.task_default_queue = os.environ.get("TRIGGERS_TEST_CELERY_QUEUE", "triggers-pytest")
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False
install(app)


class ImportSubject(TriggerTask):
    name = "app.tasks.ImportSubject"

    def _run(self, context: TriggerContext) -> Dict[str, Any]:
        subject = context.trigger_kwargs["firstPageReceived"]["subject"]
        return {"subjectId": subject["id"], "instance": context.instance, "attempt": context.attempt,
                "pid": os.getpid()}


class SkipEmpty(TriggerTask):
    name = "app.tasks.SkipEmpty"

    def _run(self, context: TriggerContext) -> Dict[str, Any]:
        if not context.trigger_kwargs["go"].get("rows"):
            self.skip({"reason": "no rows"})
        return {"rows": context.trigger_kwargs["go"]["rows"]}


class RetryOnce(TriggerTask):
    name = "app.tasks.RetryOnce"

    def _run(self, context: TriggerContext) -> Dict[str, Any]:
        if context.attempt == 1:
            self.retry(replacement_kwargs={"go": {"second": True}}, cooldown=0)
        return {"attempt": context.attempt, "kwargs": context.trigger_kwargs}


class Explode(TriggerTask):
    name = "app.tasks.Explode"

    def _run(self, context: TriggerContext) -> Dict[str, Any]:
        raise KeyError("subject")


for cls in (ImportSubject, SkipEmpty, RetryOnce, Explode):
    app.register_task(cls())


@app.task(name="app.tasks.add")
def add(go: Dict[str, int], scoring: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A plain Celery task: the kwargs (keyed by trigger) arrive as keyword arguments."""
    return {"sum": go["a"] + go["b"], "scoring": scoring, "pid": os.getpid()}


@app.task(name="app.tasks.mark")
def mark(go: Dict[str, str]) -> Dict[str, Any]:
    """Leaves a file behind: shows whether a delivery was run."""
    Path(go["file"]).write_text("ran")
    return {}


@app.task(name="app.tasks.noop")
def noop(**_: Any) -> Dict[str, Any]:
    return {}
