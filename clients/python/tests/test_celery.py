"""Celery: TriggerTask and plain tasks, in the worker process and dispatched to
a real Celery worker on Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

from conftest import HERE, REDIS_URL, Worker, wait_for
from triggers_client import Client

pytest.importorskip("celery")


class CeleryWorker:
    def __init__(self, queue: str, log_path: Path) -> None:
        self.queue = queue
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.env = dict(os.environ, TRIGGERS_TEST_CELERY_QUEUE=queue, TRIGGERS_TEST_REDIS_URL=REDIS_URL)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "threads", "--concurrency", "4",
             "-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=HERE, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        wait_for(lambda: "ready." in self.log() or self.process.poll() is not None, timeout=60,
                 what="the Celery worker to be ready")
        assert self.process.poll() is None, self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def celery_queue() -> str:
    return f"triggers-pytest-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def celery_worker(celery_queue: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    worker = CeleryWorker(celery_queue, tmp_path_factory.mktemp("celery") / "celery.log")
    yield worker
    worker.stop()


def configure(session: Any, queue: str) -> None:
    using = f"worker:{queue}"
    session.configure({
        "t_importSubject": {"after": ["firstPageReceived"], "run": "app.tasks.ImportSubject", "using": using},
        "t_skip": {"after": ["go"], "run": "app.tasks.SkipEmpty", "using": using},
        "t_retry": {"after": ["go"], "run": "app.tasks.RetryOnce", "using": using},
        "t_explode": {"after": ["go"], "run": "app.tasks.Explode", "using": using},
        "t_add": {"after": ["go"], "run": "app.tasks.add", "using": using,
                  "withParams": {"scoring": {"model": "Psych 01"}}},
    })


def check_outcomes(session: Any) -> Dict[str, Any]:
    subject = session.instance("t_importSubject#0")
    assert subject.status == "finished"
    assert {k: subject.result[k] for k in ("subjectId", "instance", "attempt")} == \
        {"subjectId": 42, "instance": "t_importSubject#0", "attempt": 1}
    skipped = session.instance("t_skip#0")
    assert skipped.status == "skipped" and skipped.metadata["reason"] == "no rows"
    first, second = session.instances(task="t_retry")
    assert first.status == "replayed" and second.status == "finished"
    assert second.result == {"attempt": 2, "kwargs": {"go": {"second": True}}}
    exploded = session.instance("t_explode#0")
    assert exploded.status == "failed" and exploded.metadata["exceptionType"] == "KeyError"
    assert "'subject'" in exploded.metadata["exceptionInfo"] and "Traceback" in exploded.metadata["exceptionInfo"]
    added = session.instance("t_add#0")
    assert added.status == "finished"
    assert {k: added.result[k] for k in ("sum", "scoring")} == {"sum": 5, "scoring": {"model": "Psych 01"}}
    return {"subject_pid": subject.result["pid"], "add_pid": added.result["pid"]}


def fire(session: Any) -> None:
    session.fire("firstPageReceived", {"subject": {"id": 42}})
    session.fire("go", {"a": 2, "b": 3, "rows": 0})


def test_celery_app_tasks_run_in_the_worker_process(client: Client, uid: str, queue: str,
                                                    start_worker: Callable[..., Worker]) -> None:
    session = client.session(uid)
    configure(session, queue)
    worker = start_worker("--celery-app", "celery_app:app", "--concurrency", "2")
    fire(session)
    session.settle(timeout=30)
    pids = check_outcomes(session)
    assert pids == {"subject_pid": worker.process.pid, "add_pid": worker.process.pid}


def test_dispatch_to_a_celery_worker(client: Client, uid: str, queue: str, celery_worker: CeleryWorker,
                                     start_worker: Callable[..., Worker]) -> None:
    session = client.session(uid)
    configure(session, queue)
    dispatcher = start_worker("--celery-app", "celery_app:app", "--dispatch", "--concurrency", "4",
                              env={"TRIGGERS_TEST_CELERY_QUEUE": celery_worker.queue,
                                   "TRIGGERS_TEST_REDIS_URL": REDIS_URL})
    fire(session)
    session.settle(timeout=60)
    pids = check_outcomes(session)
    # run by the Celery worker, not by the dispatching process
    assert pids == {"subject_pid": celery_worker.process.pid, "add_pid": celery_worker.process.pid}
    assert dispatcher.process.poll() is None


def test_a_stale_delivery_is_refused(client: Client, uid: str, queue: str, celery_worker: CeleryWorker,
                                     tmp_path: Path, server: Any) -> None:
    from celery_app import app
    from triggers_client.celery import EXECUTE

    session = client.session(uid)
    session.configure({"t_mark": {"after": ["go"], "run": "app.tasks.mark", "using": f"worker:{queue}"}})
    marker = tmp_path / "ran"
    session.fire("go", {"file": str(marker)})
    (claim,) = wait_for(lambda: client.claim_tasks("pytest", queue, max=1), what="a claim")
    client.complete_task(claim["leaseToken"], {"by": "the first delivery"})
    refusals = celery_worker.log().count("refusing the delivery")
    # the same delivery again (a broker redelivery, a duplicate): its lease is spent
    app.send_task(EXECUTE, args=[{"server": server.url, "leaseSeconds": 30, "claim": claim}],
                  queue=celery_worker.queue)
    wait_for(lambda: celery_worker.log().count("refusing the delivery") > refusals, what="the refusal")
    assert not marker.exists()
    instance = session.instance("t_mark#0")
    assert instance.status == "finished" and instance.result == {"by": "the first delivery"}
