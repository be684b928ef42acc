"""Tasks per second of ``python -m triggers_client worker``: ``--import`` with
concurrency 1 and 8, and Celery dispatch to a Celery worker on Redis.

    python scripts/throughput.py [--sessions 100] [--tasks-per-session 10] [--task-seconds 0]
                                 [--binary target/debug/triggers] [--modes import-1,import-8,dispatch-8]

Starts its own ``triggers serve`` on a temporary SQLite file, queues
sessions x tasks worker tasks, then runs one worker and reports tasks/s from
the server's own timestamps (first claim to last finish). Not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent / "src"))

from triggers_client import Client  # noqa: E402
from triggers_client.models import parse_datetime  # noqa: E402


def start_server(binary: str, tmp: Path) -> "tuple[subprocess.Popen[bytes], str]":
    log = tmp / "server.log"
    proc = subprocess.Popen([binary, "serve", "--database-url", f"sqlite://{tmp / 'bench.db'}", "--listen",
                             "127.0.0.1:0"], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, RUST_LOG="warn,triggers::http=info"))
    for _ in range(600):
        found = re.search(r"listening on (http://[0-9.:]+)", log.read_text())
        if found:
            return proc, found.group(1)
        time.sleep(0.05)
    raise SystemExit(f"server did not start: {log.read_text()}")


def queue_tasks(client: Client, queue: str, sessions: int, per_session: int) -> List[str]:
    uids = []
    for s in range(sessions):
        uid = f"bench:{queue}:{s}"
        session = client.session(uid)
        session.configure({f"t_{i}": {"after": ["go"], "run": "bench.Work", "using": f"worker:{queue}"}
                           for i in range(per_session)})
        session.fire("go", {"n": s})
        uids.append(uid)
    return uids


def wait_done(client: Client, uids: List[str], total: int, timeout: float = 900) -> Dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        done = len(client.execute(
            "query($s: [InstanceStatus!], $t: String) { instances(status: $s, task: $t, first: 1) { name } }",
            {"s": ["SCHEDULED", "RUNNING"], "t": None})["instances"])
        if not done:
            break
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.2)
    started: List[datetime] = []
    finished: List[datetime] = []
    for uid in uids:
        for inst in client.session(uid).instances():
            assert inst.status == "finished", (uid, inst)
            started.append(parse_datetime(inst.metadata["timestamps"]["running"]))
            finished.append(parse_datetime(inst.metadata["timestamps"]["finished"]))
    assert len(finished) == total
    seconds = (max(finished) - min(started)).total_seconds()
    return {"tasks": total, "seconds": seconds, "tasks_per_second": total / seconds}


def run_mode(mode: str, binary: str, args: argparse.Namespace) -> Dict[str, Any]:
    kind, _, conc = mode.partition("-")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        server, url = start_server(binary, tmp)
        client = Client(url, timeout=30)
        queue = uuid.uuid4().hex[:8]
        env = dict(os.environ, BENCH_TASK_SECONDS=str(args.task_seconds), BENCH_CELERY_QUEUE=f"bench-{queue}",
                   PYTHONPATH=str(HERE.parent / "src"))
        procs: List[subprocess.Popen[bytes]] = []
        try:
            uids = queue_tasks(client, queue, args.sessions, args.tasks_per_session)
            worker = [sys.executable, "-m", "triggers_client", "worker", "--server", url, "--queue", queue,
                      "--concurrency", conc, "--log-level", "WARNING", "--max-poll-interval", "0.1"]
            if kind == "dispatch":
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "bench_tasks", "worker", "--pool", "threads",
                     "--concurrency", conc, "-Q", f"bench-{queue}", "--without-gossip", "--without-mingle",
                     "--without-heartbeat", "-l", "warning"], cwd=HERE, env=env,
                    stdout=open(tmp / "celery.log", "wb"), stderr=subprocess.STDOUT))
                worker += ["--celery-app", "bench_tasks:app", "--dispatch"]
            else:
                worker += ["--import", "bench_tasks"]
            procs.append(subprocess.Popen(worker, cwd=HERE, env=env, stdout=open(tmp / "worker.log", "wb"),
                                          stderr=subprocess.STDOUT))
            figures = wait_done(client, uids, args.sessions * args.tasks_per_session)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
            server.terminate()
            server.wait()
        return dict(figures, mode=mode)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--tasks-per-session", type=int, default=10)
    p.add_argument("--task-seconds", type=float, default=0.0, help="how long each task sleeps")
    p.add_argument("--binary", default=os.environ.get("TRIGGERS_BIN", str(REPO / "target" / "debug" / "triggers")))
    p.add_argument("--modes", default="import-1,import-8,dispatch-8")
    args = p.parse_args(argv)
    print(f"# {args.sessions} sessions x {args.tasks_per_session} tasks, each sleeping {args.task_seconds} s;"
          f" server {args.binary}")
    for mode in args.modes.split(","):
        f = run_mode(mode, args.binary, args)
        print(f"{f['mode']:<12} {f['tasks']:>6} tasks in {f['seconds']:7.2f} s = {f['tasks_per_second']:8.1f} tasks/s",
              flush=True)


if __name__ == "__main__":
    main()
