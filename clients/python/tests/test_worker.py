"""``python -m triggers_client worker --import``: outcomes, leases, signals."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from conftest import HERE, Worker, wait_for
from triggers_client import Client, Conflict
from triggers_client.worker import INVALID_RESULT, UNKNOWN_TASK, Heartbeater, run_claim


def worker_task(name: str, run: str, queue: str, after: Any = ("go",), **extra: Any) -> Dict[str, Any]:
    return {name: dict({"after": list(after), "run": run, "using": f"worker:{queue}"}, **extra)}


def test_outcomes_are_reported(client: Client, uid: str, queue: str, start_worker: Callable[..., Worker]) -> None:
    session = client.session(uid)
    tasks: Dict[str, Any] = {}
    tasks.update(worker_task("t_importSubject", "app.tasks.ImportSubject", queue, after=["firstPageReceived"],
                             withParams={"scoring": {"model": "Psych 01"}}))
    tasks.update(worker_task("t_next", "triggers.testing.PassThru", queue, after=["t_importSubject"]))
    tasks["t_next"].pop("using")  # an inline handler, fed by the worker's cascade
    for name, run in [("t_skip", "app.tasks.Skipper"), ("t_retry", "app.tasks.Retrier"),
                      ("t_broken", "app.tasks.Broken"), ("t_list", "app.tasks.NotADict"),
                      ("t_warn", "app.tasks.Warn"), ("t_unknown", "app.tasks.NoSuchTask")]:
        tasks.update(worker_task(name, run, queue))
    tasks.update(worker_task("t_noRetries", "app.tasks.Retrier", queue, maxRetries=0))
    session.configure(tasks)
    start_worker("--import", "pytasks", "--concurrency", "2")
    session.fire("firstPageReceived", {"subject": {"id": 42}})
    session.fire("go", {"id": 7})
    session.settle(timeout=30)

    subject = session.instance("t_importSubject#0")
    assert subject is not None and subject.status == "finished" and subject.log_level == 20
    assert subject.result == {"subjectId": 42, "seen": {"session": uid, "instance": "t_importSubject#0",
                                                        "run": "app.tasks.ImportSubject", "attempt": 1,
                                                        "scoring": {"model": "Psych 01"}}}
    cascade = session.instance("t_next#0")
    assert cascade is not None and cascade.status == "finished"
    assert cascade.result == {"kwargs": {"t_importSubject": subject.result}}

    skipped = session.instance("t_skip#0")
    assert skipped is not None and skipped.status == "skipped"
    assert skipped.metadata["reason"] == "empty" and skipped.metadata["got"] == {"go": {"id": 7}}

    first, second = session.instances(task="t_retry")
    assert first.status == "replayed" and first.metadata["cooldown"] == 0  # failed, then replayed at once
    assert second.status == "finished" and second.depth == 1 and second.parent == "t_retry#0"
    assert second.result == {"attempt": 2, "kwargs": {"go": {"fixed": True}}}

    exhausted = session.instance("t_noRetries#0")
    assert exhausted is not None and exhausted.status == "failed"
    assert exhausted.metadata["exceptionType"] == "MaxRetriesExceeded"
    assert session.instance("t_noRetries#1") is None

    broken = session.instance("t_broken#0")
    assert broken is not None and broken.status == "failed" and broken.log_level == 40
    assert broken.metadata["exceptionType"] == "pytasks.ImportFailed"
    info = broken.metadata["exceptionInfo"]
    assert info.startswith("subject 7 is missing") and "Traceback (most recent call last)" in info
    assert 'pytasks.py", line' in info

    wrong = session.instance("t_list#0")
    assert wrong is not None and wrong.status == "failed"
    assert wrong.metadata["exceptionType"] == INVALID_RESULT and "returned list" in wrong.metadata["exceptionInfo"]

    warned = session.instance("t_warn#0")
    assert warned is not None and warned.status == "finished" and warned.log_level == 30

    unknown = session.instance("t_unknown#0")
    assert unknown is not None and unknown.metadata["exceptionType"] == UNKNOWN_TASK
    assert sorted(i.name for i in session.instances_with_unresolved_logs()) == ["t_broken#0", "t_list#0",
                                                                                "t_noRetries#0", "t_unknown#0"]


def test_heartbeats_keep_a_long_task_leased(client: Client, uid: str, queue: str,
                                            start_worker: Callable[..., Worker]) -> None:
    session = client.session(uid)
    session.configure(worker_task("t_slow", "app.tasks.Slow", queue))
    start_worker("--import", "pytasks", "--lease-seconds", "2")
    session.fire("go", {"seconds": 5})  # two and a half leases
    session.settle(timeout=30)
    instance = session.instance("t_slow#0")
    assert instance is not None and instance.status == "finished" and instance.result == {"slept": 5}
    kinds = [e.kind for e in session.events()]
    assert kinds.count("InstanceStarted") == 1 and "InstanceLeaseExpired" not in kinds


def test_a_lost_lease_drops_the_result(client: Client, uid: str, queue: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
    session = client.session(uid)
    session.configure(worker_task("t_x", "app.tasks.Lost", queue))
    session.fire("go")
    (claim,) = wait_for(lambda: client.claim_tasks("w-old", queue, max=1, lease_seconds=1), what="a claim")
    new_claims = []

    def lose_the_lease(ctx: Any) -> Dict[str, Any]:
        # the lease runs out and another worker claims the task while this one still runs
        session.update_instance_status(ctx.instance, "scheduled")
        new_claims.extend(client.claim_tasks("w-new", queue, max=1, lease_seconds=30))
        with pytest.raises(Conflict):
            client.heartbeat(ctx.lease_token)
        return {"stale": True}

    caplog.set_level(logging.WARNING, "triggers_client.worker")
    outcome = run_claim(client, claim, lambda run: lose_the_lease, Heartbeater(client), 1)
    assert outcome is None
    assert "dropping the complete outcome" in caplog.text and "t_x#0" in caplog.text
    instance = session.instance("t_x#0")
    assert instance is not None and instance.status == "running" and instance.result is None
    client.complete_task(new_claims[0]["leaseToken"], {"fresh": True})
    assert session.instance("t_x#0").result == {"fresh": True}  # type: ignore[union-attr]


def test_a_duplicate_of_a_running_claim_is_refused(client: Client, uid: str, queue: str) -> None:
    session = client.session(uid)
    session.configure(worker_task("t_x", "app.tasks.Twice", queue))
    session.fire("go")
    (claim,) = wait_for(lambda: client.claim_tasks("w", queue, max=1), what="a claim")
    heartbeater = Heartbeater(client)
    runs = []

    def deliver_again(ctx: Any) -> Dict[str, Any]:
        runs.append(ctx.instance)
        # the same delivery arrives again while this one runs
        assert run_claim(client, claim, lambda run: deliver_again, heartbeater, 30) is None
        return {"runs": len(runs)}

    outcome = run_claim(client, claim, lambda run: deliver_again, heartbeater, 30)
    assert outcome is not None and outcome.kind == "complete"
    assert runs == ["t_x#0"]
    assert session.instance("t_x#0").result == {"runs": 1}  # type: ignore[union-attr]


def _started(directory: Path) -> list:
    return sorted(p.name for p in directory.glob("started-*"))


def test_sigterm_stops_claiming_and_finishes_held_tasks(client: Client, uid: str, queue: str, tmp_path: Path,
                                                        start_worker: Callable[..., Worker]) -> None:
    session = client.session(uid)
    session.configure(dict(worker_task("t_gate", "app.tasks.Gate", queue),
                           **worker_task("t_later", "app.tasks.Noop", queue, after=["later"])))
    worker = start_worker("--import", "pytasks", "--shutdown-timeout", "60")
    session.fire("go", {"dir": str(tmp_path)})
    wait_for(lambda: _started(tmp_path), what="the task to start")
    worker.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping: waiting" in worker.log(), what="the worker to stop claiming")
    session.fire("later")
    (tmp_path / "open").touch()
    assert worker.process.wait(30) == 0
    assert session.instance("t_gate#0").status == "finished"  # type: ignore[union-attr]
    assert session.instance("t_later#0").status == "scheduled"  # type: ignore[union-attr]


def test_a_worker_killed_with_sigkill_loses_nothing(client: Client, uid: str, queue: str, tmp_path: Path,
                                                    start_worker: Callable[..., Worker]) -> None:
    session = client.session(uid)
    session.configure({f"t_{i}": worker_task(f"t_{i}", "app.tasks.Gate", queue)[f"t_{i}"] for i in range(6)})
    doomed = start_worker("--import", "pytasks", "--concurrency", "4", "--lease-seconds", "2")
    session.fire("go", {"dir": str(tmp_path)})
    wait_for(lambda: len(_started(tmp_path)) == 4, what="four tasks running at once")
    assert len(session.instances(status=["running"])) == 4  # concurrency 4: two still wait
    doomed.process.kill()
    doomed.process.wait()
    (tmp_path / "open").touch()
    start_worker("--import", "pytasks", "--concurrency", "4", "--lease-seconds", "2")
    session.settle(timeout=60)
    instances = session.instances()
    assert [i.status for i in instances] == ["finished"] * 6
    assert all(i.result == {"pid": i.result["pid"]} and i.result["pid"] != doomed.process.pid  # type: ignore[index]
               for i in instances)
    kinds = [e.kind for e in session.events()]
    assert kinds.count("InstanceLeaseExpired") == 4


def test_import_resolves_from_the_current_directory(client: Client, uid: str, queue: str, tmp_path: Path,
                                                    server: Any) -> None:
    (tmp_path / "mytasks.py").write_text(
        "from triggers_client.worker import task\n"
        "@task('my.Double')\n"
        "def double(ctx):\n"
        "    return {'twice': ctx.kwargs['go']['n'] * 2}\n")
    session = client.session(uid)
    session.configure(worker_task("t_double", "my.Double", queue))
    worker = Worker(["--server", server.url, "--queue", queue, "--import", "mytasks"], tmp_path / "w.log",
                    cwd=tmp_path, env={"PYTHONPATH": os.pathsep.join(p for p in [str(HERE.parent / "src")] if p)})
    try:
        session.fire("go", {"n": 21})
        session.settle(timeout=30)
        assert session.instance("t_double#0").result == {"twice": 42}  # type: ignore[union-attr]
    finally:
        worker.stop()




def test_past_the_shutdown_timeout_held_tasks_are_left_to_expire(client: Client, uid: str, queue: str,
                                                                  tmp_path: Path,
                                                                  start_worker: Callable[..., Worker]) -> None:
    session = client.session(uid)
    session.configure(worker_task("t_gate", "app.tasks.Gate", queue))
    worker = start_worker("--import", "pytasks", "--shutdown-timeout", "0.5", "--lease-seconds", "2")
    session.fire("go", {"dir": str(tmp_path)})
    wait_for(lambda: _started(tmp_path), what="the task to start")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0
    assert "1 task(s) unreported" in worker.log()
    instance = session.instance("t_gate#0")
    assert instance is not None and instance.status == "running" and instance.result is None
    # its lease expires and the next worker runs it
    (tmp_path / "open").touch()
    start_worker("--import", "pytasks")
    session.settle(timeout=30)
    assert session.instance("t_gate#0").status == "finished"  # type: ignore[union-attr]


def test_the_worker_sends_its_token(tmp_path: Path, uid: str, queue: str) -> None:
    from conftest import Server

    server = Server(f"sqlite://{tmp_path / 't.db'}", tmp_path / "server.log", token="s3cret")
    workers = []
    try:
        session = Client(server.url, token="s3cret").session(uid)
        session.configure(worker_task("t_noop", "app.tasks.Noop", queue))
        session.fire("go")
        refused = Worker(["--server", server.url, "--queue", queue, "--import", "pytasks", "--token", "wrong"],
                         tmp_path / "refused.log")
        workers.append(refused)
        wait_for(lambda: "UNAUTHORIZED" in refused.log(), what="the refusal")
        assert session.instance("t_noop#0").status == "scheduled"  # type: ignore[union-attr]
        workers.append(Worker(["--server", server.url, "--queue", queue, "--import", "pytasks"],
                              tmp_path / "ok.log", env={"TRIGGERS_API_TOKEN": "s3cret"}))
        session.settle(timeout=30)
        assert session.instance("t_noop#0").status == "finished"  # type: ignore[union-attr]
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
