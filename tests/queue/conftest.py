"""Real `celery worker` processes on the machine's Redis, for the tests of the queue.

Nothing here is eager: the test process sends real messages to Redis, and workers started
as separate processes (their own process group, so `kill -9` takes the whole worker)
claim and execute the runs against the same test database. On SQLite that database is a
file (TEST_SQLITE_FILE); on PostgreSQL it is the test database on the server.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from config.celery import app
from workflows.models import Run

BASE_DIR = Path(__file__).resolve().parents[2]

# Short times, so that the bounded waits of the queue are short in tests too.
TIMINGS = {
    "RUNS_HEARTBEAT_SECONDS": 0.3,
    "RUNS_HEARTBEAT_TIMEOUT": 3.0,
    "RUNS_SWEEP_SECONDS": 0.5,
    "RUNS_REDISPATCH_SECONDS": 2.0,
    "RUNS_PER_ORGANIZATION": 8,
}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.queue)


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Iterator[redis.Redis]:
    """The machine's Redis (CELERY_BROKER_URL); where none answers, one of our own."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    if _answers(client):
        yield client
        return
    if not shutil.which("redis-server"):
        pytest.fail(
            f"The queue tests need Redis: none answers at {settings.CELERY_BROKER_URL} "
            "(CELERY_BROKER_URL) and redis-server is not installed (make system-deps)."
        )
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    _use_broker(server.url)
    try:
        yield redis.Redis.from_url(server.url)
    finally:
        server.stop()


def _use_broker(url: str) -> None:
    """Send to ``url`` from now on (Celery reads CELERY_BROKER_URL from the environment
    before its configuration)."""
    os.environ["CELERY_BROKER_URL"] = url
    app.conf.broker_url = url
    app._after_fork()  # forget the connections to the other broker


@pytest.fixture
def queue(broker, settings, transactional_db) -> Iterator[str]:
    """This test's own queue on the real broker; the test process sends to it for real."""
    name = f"runs-test-{uuid.uuid4().hex[:12]}"
    settings.RUNS_QUEUE = name
    for setting, value in TIMINGS.items():
        setattr(settings, setting, value)
    app.conf.task_always_eager = False
    try:
        yield name
    finally:
        app.conf.task_always_eager = True
        broker.delete(name)


def _database_url() -> str:
    database = connection.settings_dict
    if database["ENGINE"] == "django.db.backends.sqlite3":
        name = str(database["NAME"])
        if not name or name == ":memory:" or "mode=memory" in name:
            pytest.fail(
                "The queue tests share the test database with worker processes: on SQLite "
                "run them with TEST_SQLITE_FILE=<path> (make test does)."
            )
        return f"sqlite:///{name}"
    user = database.get("USER") or "postgres"
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    host = database.get("HOST") or "127.0.0.1"
    port = database.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{database['NAME']}"


class Workers:
    """Start and kill `celery worker` processes reading this test's queue."""

    def __init__(self, queue: str, log_dir: Path) -> None:
        self.queue = queue
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, concurrency: int = 2, **overrides: object) -> subprocess.Popen:
        number = len(self.processes) + 1
        log = self.log_dir / f"worker-{number}.log"
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings_test",
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "CELERY_BROKER_URL": app.conf.broker_url,
            "RUNS_QUEUE": self.queue,
            "DATABASE_URL": _database_url(),
            # Long enough for the 30-second step the cancel tests stop.
            "SANDBOX_WALL_SECONDS": "60",
            "SANDBOX_CPU_SECONDS": "60",
            "HTTP_ACTION_READ_TIMEOUT": "60",
            **{name: str(value) for name, value in TIMINGS.items()},
            **{name: str(value) for name, value in overrides.items()},
        }
        environment.pop("TEST_SQLITE_FILE", None)
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--pool=prefork",
                    f"--concurrency={concurrency}",
                    "-Q",
                    self.queue,
                    "-n",
                    f"test{number}-{uuid.uuid4().hex[:6]}@%h",
                    "--without-mingle",
                    "--without-gossip",
                    "--loglevel=INFO",
                ],
                cwd=BASE_DIR,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # kill -9 of its group takes the pool processes too
            )
        process.log = log
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"The worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        return process

    def kill(self, process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(process)
            # Pool processes left behind by a killed main process.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def workers(queue, tmp_path) -> Iterator[Workers]:
    started = Workers(queue, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


class _TargetHandler(BaseHTTPRequestHandler):
    """/sleep/<seconds>/<tag>: answers after that long, counting requests and how many of
    each tag are in flight at once; notices a client that hangs up while it waits."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server = self.server
        parts = self.path.strip("/").split("/")
        seconds = float(parts[1]) if len(parts) > 1 and parts[0] == "sleep" else 0.0
        tag = parts[2] if len(parts) > 2 else ""
        with server.lock:
            server.requests.append({"path": self.path, "at": time.monotonic()})
            server.in_flight[tag] += 1
            server.most_in_flight[tag] = max(server.most_in_flight[tag], server.in_flight[tag])
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    with server.lock:
                        server.hung_up.append({"path": self.path, "at": time.monotonic()})
                    return
            payload = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        finally:
            with server.lock:
                server.in_flight[tag] -= 1

    do_POST = do_GET

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def target() -> Iterator[ThreadingHTTPServer]:
    """A real HTTP server on 127.0.0.1 that is as slow as asked and counts what it gets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TargetHandler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.requests = []
    server.hung_up = []
    server.in_flight = defaultdict(int)
    server.most_in_flight = defaultdict(int)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def eventually(check: Callable[[], object], timeout: float = 30.0, every: float = 0.1):
    """The first truthy result of ``check``, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Not so after {timeout} s: {check.__doc__ or check}")
        time.sleep(every)


def status_of(run_id) -> str:
    return Run.objects.filter(pk=run_id).values_list("status", flat=True).get()


class RedisServer:
    """A Redis of one test's own (no persistence, like the machine's), to restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        eventually(lambda: _answers(client), timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def own_broker(queue, tmp_path) -> Iterator[RedisServer]:
    """The test process and its workers use a Redis of their own, which the test may
    restart (the machine's is shared with everything else)."""
    if not shutil.which("redis-server"):
        pytest.fail("This test starts its own Redis: install Debian's redis-server.")
    server = RedisServer(tmp_path)
    server.start()
    shared = app.conf.broker_url
    _use_broker(server.url)
    try:
        yield server
    finally:
        _use_broker(shared)
        server.stop()
