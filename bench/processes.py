"""The processes the bench starts: the HTTP target, gunicorn and `celery worker`s.

Each runs in a process group (a session) of its own, so stopping it takes its children
too (gunicorn's workers, Celery's pool processes); ``stop`` is registered on an ExitStack
as each starts, so an error, Ctrl-C or SIGTERM of the bench leaves none of them behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


class ProcessGroup:
    """A command started in a session of its own, its output in ``log``."""

    def __init__(
        self, name: str, command: list[str], environment: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                command,
                cwd=BASE_DIR,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for_log(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} did not start:\n{tail}")
            time.sleep(0.1)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM to the main process (a Celery worker lets its pool finish the runs it
        holds, gunicorn its workers their requests), then SIGKILL to what is left of the
        group."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_gunicorn(
    environment: dict[str, str], port: int, workers: int, threads: int, log: Path
) -> ProcessGroup:
    return ProcessGroup(
        "gunicorn",
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "config.wsgi",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        environment,
        log,
    )


def start_celery_worker(
    environment: dict[str, str], number: int, concurrency: int, log: Path
) -> ProcessGroup:
    """`celery -A config worker` on the bench's queue (RUNS_QUEUE of ``environment``), as
    tests/queue starts them; returns once it logs that it is ready."""
    worker = ProcessGroup(
        f"celery worker {number}",
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
            environment["RUNS_QUEUE"],
            "-n",
            f"bench{number}-{uuid.uuid4().hex[:6]}@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ],
        environment,
        log,
    )
    worker.wait_for_log(b" ready.")
    return worker


# --- The HTTP target ---------------------------------------------------------------------


class _Target(BaseHTTPRequestHandler):
    """Answers every request with a small JSON body: at once, or for ``/sleep/<seconds>``
    after that many seconds (a slow API that a run waits on)."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle's algorithm on, the body waits for
    # the client's delayed ACK (40 ms) on a kept-alive connection. Real servers set it too.
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "sleep":
            time.sleep(float(parts[1]))
        body = b'{"ok": true}'
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            # A cancelled run's worker hung up while we slept: nobody to answer.
            self.close_connection = True

    do_GET = do_POST = _answer

    def log_message(self, format, *args) -> None:
        pass


class _TargetServer(ThreadingHTTPServer):
    daemon_threads = True
    # Dozens of workers and clients connect at once; the default backlog of 5 would drop
    # their SYNs and cost each a one-second retransmission.
    request_queue_size = 256


def serve_target() -> None:
    server = _TargetServer(("127.0.0.1", 0), _Target)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def start_target(stack: contextlib.ExitStack) -> tuple[str, subprocess.Popen]:
    """The target in a process of its own, as a real one would be: parsing the 50 headers
    of a 50-key request must not take the measuring process's interpreter lock (in
    process, that alone was a third of the difference between 50 keys and none)."""
    process = subprocess.Popen(
        [sys.executable, __file__],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    stack.callback(stop)
    return process.stdout.readline().strip(), process


# --- CPU by process group ----------------------------------------------------------------


CLOSED_CONNECTIONS = "postgresql closed connections"


def cpu_seconds_by_group(groups: dict[str, list[int]], database: str = "bench") -> dict:
    """CPU time used so far (Linux /proc), in seconds: by each named list of process
    groups (gunicorn, the Celery workers, the target), PostgreSQL (the connections to
    ``database`` and the server's own processes; not other databases' connections, which
    other people's tests may be using), the connections that closed (to any database:
    a Celery worker closes its own after every task, see the Django fix-up's
    close_database), Redis, this load generator, interrupts, and "other" (the rest of
    the machine: other people's work included)."""
    totals = dict.fromkeys(
        [*groups, "postgresql", CLOSED_CONNECTIONS, "redis", "load generator"], 0.0
    )
    owner = {pgid: name for name, pgids in groups.items() for pgid in pgids}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        process_group = int(fields[2])
        used = (int(fields[11]) + int(fields[12])) / ticks
        # With the children it has waited for, which are gone from /proc (gunicorn's or
        # Celery's replaced workers, this generator's visitors and py-spy).
        used_with_children = used + (int(fields[13]) + int(fields[14])) / ticks
        if process_group in owner:
            totals[owner[process_group]] += used_with_children
        elif name == "postgres":
            # A connection's title: "postgres: 15/main: <user> <database> <client> …";
            # the server's own processes have no client. Connections to the bench that
            # closed are gone (the server's connections stay open: CONN_MAX_AGE).
            if f" {database} " in title or "(" not in title:
                totals["postgresql"] += used
            if title.startswith("/"):  # the server's main process, which reaps connections
                totals[CLOSED_CONNECTIONS] += used_with_children - used
        elif name.startswith("redis-server"):
            totals["redis"] += used
        elif int(entry.name) == os.getpid():
            totals["load generator"] += used_with_children
    # Interrupts are nobody's process time: loopback traffic's, mostly (softirq).
    totals["interrupts"] = _interrupt_cpu_seconds()
    totals["other"] = busy_cpu_seconds() - sum(totals.values())
    return totals


def _interrupt_cpu_seconds() -> float:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    return (int(fields[5]) + int(fields[6])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far (Linux /proc/stat), in seconds."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    serve_target()
