"""``python -m triggers_client worker``: run Python functions or Celery tasks as
a triggers worker."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, List, Optional

from .client import Client


def _load_attr(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    if not attr:
        for candidate in ("app", "celery"):
            if hasattr(module, candidate):
                return getattr(module, candidate)
        raise SystemExit(f"--celery-app {spec}: module {module_name} has no `app` or `celery`; write MODULE:ATTR")
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part)
    return target


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m triggers_client", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="claim and run tasks of a triggers server")
    w.add_argument("--server", default=os.environ.get("TRIGGERS_SERVER", "http://127.0.0.1:8080"),
                   help="server URL (env TRIGGERS_SERVER; default http://127.0.0.1:8080)")
    w.add_argument("--token", default=os.environ.get("TRIGGERS_API_TOKEN"),
                   help="API token (env TRIGGERS_API_TOKEN)")
    w.add_argument("--queue", default=None, help="worker queue (tasks `using: worker:<queue>`; default `default`)")
    w.add_argument("--concurrency", type=int, default=1, help="tasks run at once (dispatched at once with --dispatch)")
    w.add_argument("--lease-seconds", type=int, default=30, help="lease of each claim, renewed every third of it")
    w.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="on SIGTERM, how long running tasks get to finish and report")
    w.add_argument("--max-poll-interval", type=float, default=1.0, help="backoff ceiling while the queue is empty")
    w.add_argument("--worker", dest="name", default=None, help="worker name (default <hostname>:<pid>)")
    w.add_argument("--log-level", default=os.environ.get("TRIGGERS_LOG_LEVEL", "INFO"))
    what = w.add_mutually_exclusive_group(required=True)
    what.add_argument("--import", dest="imports", metavar="MODULE", nargs="+",
                      help="modules whose @task functions to run (resolved from the current directory)")
    what.add_argument("--celery-app", metavar="MODULE:ATTR", help="a Celery app whose tasks to run by name")
    w.add_argument("--dispatch", action="store_true",
                   help="with --celery-app: send claimed tasks to the app's broker instead of running them here")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.dispatch and not args.celery_app:
        raise SystemExit("--dispatch needs --celery-app")
    if args.concurrency < 1:
        raise SystemExit(f"--concurrency must be >= 1, got {args.concurrency}")
    if not 1 <= args.lease_seconds <= 3600:
        raise SystemExit(f"--lease-seconds must be 1..3600, got {args.lease_seconds}")
    client = Client(args.server, token=args.token)
    if args.celery_app:
        from . import celery as triggers_celery

        app = _load_attr(args.celery_app)
        if args.dispatch:
            triggers_celery.Dispatcher(client, app, queue=args.queue, concurrency=args.concurrency,
                                       lease_seconds=args.lease_seconds, name=args.name,
                                       max_poll_interval=args.max_poll_interval).run()
            return 0
        resolve = triggers_celery.resolver(app)
    else:
        from .worker import registry

        for module in args.imports:
            importlib.import_module(module)
        resolve = registry().get
    from .worker import Worker

    Worker(client, resolve, queue=args.queue, concurrency=args.concurrency, lease_seconds=args.lease_seconds,
           name=args.name, max_poll_interval=args.max_poll_interval,
           shutdown_timeout=args.shutdown_timeout).run()
    return 0
