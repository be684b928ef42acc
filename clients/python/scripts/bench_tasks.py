"""Tasks the throughput script runs (``--import bench_tasks``; ``celery -A bench_tasks``)."""

from __future__ import annotations

import os
import time
from typing import Any, Dict

from celery import Celery

from triggers_client.celery import install
from triggers_client.worker import Context, task

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
app.conf.task_default_queue = os.environ.get("BENCH_CELERY_QUEUE", "triggers-bench")
app.conf.broker_connection_retry_on_startup = True
install(app)

SLEEP = float(os.environ.get("BENCH_TASK_SECONDS", "0"))


@task("bench.Work")
def work(ctx: Context) -> Dict[str, Any]:
    if SLEEP:
        time.sleep(SLEEP)
    return {"n": ctx.kwargs["go"]["n"]}


@app.task(name="bench.Work")
def celery_work(go: Dict[str, Any]) -> Dict[str, Any]:
    if SLEEP:
        time.sleep(SLEEP)
    return {"n": go["n"]}
