"""Fixtures: the real ``triggers`` server (built by cargo) on SQLite and on
PostgreSQL, unique session uids and queues, worker processes, and a TCP proxy
that can cut connections."""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from triggers_client import Client

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
POSTGRES_URL = os.environ.get("TRIGGERS_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("TRIGGERS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def wait_for(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.02, what: str = "") -> object:
    """Polls ``condition`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


def triggers_binary() -> Path:
    """``TRIGGERS_BIN``, or ``target/debug/triggers`` (built with cargo if missing)."""
    explicit = os.environ.get("TRIGGERS_BIN")
    if explicit:
        return Path(explicit)
    binary = REPO / "target" / "debug" / "triggers"
    if not binary.exists():
        cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
        subprocess.run([cargo, "build", "--bin", "triggers"], cwd=REPO, check=True)
    return binary


class Server:
    """A running ``triggers serve``."""

    def __init__(self, database_url: str, log_path: Path, token: Optional[str] = None) -> None:
        self.database_url = database_url
        self.log_path = log_path
        env = dict(os.environ, RUST_LOG="info", TRIGGERS_SQLITE_SYNCHRONOUS="NORMAL")
        env.pop("TRIGGERS_API_TOKEN", None)
        args = [str(triggers_binary()), "serve", "--database-url", database_url, "--listen", "127.0.0.1:0"]
        if token:
            args += ["--api-token", token]
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        match = wait_for(lambda: self._listening(), timeout=60, what=f"the server to listen ({log_path})")
        self.url: str = match  # type: ignore[assignment]

    def _listening(self) -> Optional[str]:
        if self.process.poll() is not None:
            raise AssertionError(f"triggers serve exited: {self.log_path.read_text()}")
        found = re.search(r"listening on (http://[0-9.:]+)", self.log_path.read_text(errors="replace"))
        return found.group(1) if found else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _backends() -> List[str]:
    return ["sqlite", "postgres"]


@pytest.fixture(scope="session", params=_backends())
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server, once on SQLite (a temp file) and once on PostgreSQL."""
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "postgres":
        if not POSTGRES_URL:
            sys.stderr.write("SKIPPED: TRIGGERS_TEST_POSTGRES_URL is not set\n")
            pytest.skip("TRIGGERS_TEST_POSTGRES_URL is not set")
        url = POSTGRES_URL
    else:
        url = f"sqlite://{tmp / 'triggers.db'}"
    srv = Server(url, tmp / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on SQLite only, for tests about the client rather than the backend."""
    tmp = tmp_path_factory.mktemp("server-sqlite-only")
    srv = Server(f"sqlite://{tmp / 'triggers.db'}", tmp / "server.log")
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


@pytest.fixture
def uid() -> str:
    """A session uid of this test alone (the PostgreSQL database is shared)."""
    return f"pytest:{uuid.uuid4().hex}"


@pytest.fixture
def queue() -> str:
    """A worker queue of this test alone."""
    return f"pytest-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """A ``python -m triggers_client worker`` process."""

    def __init__(self, args: List[str], log_path: Path, cwd: Path = HERE, env: Optional[dict] = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "triggers_client", "worker", *args], cwd=cwd,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, **(env or {})))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def start_worker(server: Server, queue: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Starts workers on ``server``'s ``queue``; kills them after the test."""
    started: List[Worker] = []

    def start(*args: str, env: Optional[dict] = None) -> Worker:
        worker = Worker(["--server", server.url, "--queue", queue, "--max-poll-interval", "0.2", *args],
                        tmp_path / f"worker-{len(started)}.log", env=env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


class Proxy:
    """A TCP proxy to ``target`` that can refuse or cut connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.refuse = 0  # close this many next connections at once
        self.accepted = 0
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self.refuse > 0:
                    self.refuse -= 1
                    conn.close()
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                self._sockets += [conn, upstream]
            threading.Thread(target=self._pipe, args=(conn, upstream), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Closes every open connection."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy(sqlite_server: Server) -> Iterator[Proxy]:
    port = int(sqlite_server.url.rsplit(":", 1)[1])
    p = Proxy(port)
    yield p
    p.close()
