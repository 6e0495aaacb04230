"""The queued architecture's figures (issue 12), through gunicorn and real `celery worker`s
on Redis and PostgreSQL; bench/run.py starts those processes and calls these.

7. The sign-in page (`GET /login/`) p95 while 50 runs of a 5-second target are in flight
   (queued or running) / while none are: at most 1.5.
8. Queued-run throughput: N runs of a no-op action queued as fast as 8 clients can, from
   the first request to the last run's end (runs/s), with no failed run.
9. Enqueue-to-start latency, `started_at - created_at` of the runs as the API shows them:
   runs spaced so that none waits for another, and the runs of figure 8's burst.

Latencies, throughput and start delays come from the API's answers (HTTP timings, the
run objects' timestamps). The bench reads PostgreSQL directly only to know when to go on
(how many runs are in flight, whether a burst has ended) and to report, during figure 7,
how many runs were running and queued and how many connections waited on a lock.
"""

from __future__ import annotations

import datetime
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import processes
import psycopg
from measure import ms, percentile

API = "/api/v1"
FINISHED = ("succeeded", "failed", "cancelled")
IN_FLIGHT = ("queued", "running")


def api_client(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=90)


def seconds_between(later: str, earlier: str) -> float:
    return (
        datetime.datetime.fromisoformat(later) - datetime.datetime.fromisoformat(earlier)
    ).total_seconds()


def finished_run(
    client: httpx.Client,
    run_id: str,
    stop: threading.Event | None = None,
    longest_pause: float = 0.25,
) -> dict:
    """The run once it has ended, polling `GET /runs/{id}/` (20 ms at first, then less
    often up to ``longest_pause``, as the web's own wait does)."""
    pause = 0.02
    while True:
        run = client.get(f"{API}/runs/{run_id}/").json()
        if run["status"] in FINISHED or (stop is not None and stop.is_set()):
            return run
        time.sleep(pause)
        pause = min(pause * 1.5, longest_pause)


def runs_of_workflow(client: httpx.Client, workflow_id: int) -> list[dict]:
    runs, page = [], f"{API}/runs/?workflow={workflow_id}&page_size=200"
    while page:
        answer = client.get(page)
        answer.raise_for_status()
        runs.extend(answer.json()["results"])
        page = answer.json()["next"]
    return runs


class RunTable:
    """How many runs of a workflow are in each state, read from PostgreSQL directly."""

    def __init__(self, database_url: str) -> None:
        self._connection = psycopg.connect(database_url, autocommit=True)
        self._lock = threading.Lock()

    def counts(self, workflow_id: int) -> dict[str, int]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT status, count(*) FROM workflows_run WHERE workflow_id = %s GROUP BY status",
                (workflow_id,),
            ).fetchall()
        return {status: count for status, count in rows}

    def waiting_on_locks(self) -> int:
        """Connections to this database waiting for a lock now (a row lock, mostly)."""
        with self._lock:
            return self._connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()[0]

    def in_flight_ids(self, workflow_id: int) -> list[str]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT id FROM workflows_run WHERE workflow_id = %s AND status = ANY(%s)",
                (workflow_id, list(IN_FLIGHT)),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def wait_until(self, condition: Callable[[dict[str, int]], bool], workflow_id: int, timeout):
        deadline = time.monotonic() + timeout
        while not condition(counts := self.counts(workflow_id)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Runs of workflow {workflow_id} stuck: {counts}")
            time.sleep(0.05)
        return counts

    def close(self) -> None:
        self._connection.close()


# --- 7: the sign-in page while slow runs are in flight -----------------------------------


class SlowRuns:
    """Keeps ``in_flight`` runs of the slow action queued or running: one thread tops them
    up with `wait: 0` requests (4 clients); ``waiters`` more clients each ask for one run
    with `wait: 60` at a time, to show that a web process holds at most RUNS_MAX_WAITERS
    of them (the others are answered 202 at once, and poll)."""

    def __init__(
        self, base: str, token: str, table: RunTable, slow: dict, in_flight: int, waiters: int
    ) -> None:
        self.base, self.token, self.table = base, token, table
        self.workflow, self.action = slow["workflow"], slow["action"]
        self.in_flight, self.waiters = in_flight, waiters
        self.measuring = threading.Event()
        self.seen: list[dict[str, int]] = []  # counts while measuring, every 0.25 s
        self.held: list[float] = []  # seconds a `wait: 60` request was held (answered 200)
        self.not_held: list[float] = []  # seconds to a 202 of a `wait: 60` request
        self.errors: list[str] = []  # what went wrong with a request, if anything did
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        # Daemons: should the bench fail, they do not keep it alive.
        self._threads = [threading.Thread(target=self._top_up, daemon=True)] + [
            threading.Thread(target=self._wait_for_runs, daemon=True) for _ in range(self.waiters)
        ]
        for thread in self._threads:
            thread.start()

    def _execute(self, client: httpx.Client, wait: int) -> httpx.Response:
        return client.post(f"{API}/actions/{self.action}/execute/", json={"wait": wait})

    def _top_up(self) -> None:
        local = threading.local()

        def enqueue() -> None:
            if not hasattr(local, "client"):
                local.client = api_client(self.base, self.token)
            answer = self._execute(local.client, 0)
            if answer.status_code != 202:
                self.errors.append(f"wait 0: {answer.status_code}")

        with ThreadPoolExecutor(4) as clients:
            while not self._stop.is_set():
                counts = self.table.counts(self.workflow)
                if self.measuring.is_set():
                    self.seen.append({**counts, "lock waits": self.table.waiting_on_locks()})
                missing = self.in_flight - sum(counts.get(status, 0) for status in IN_FLIGHT)
                list(clients.map(lambda _: enqueue(), range(max(0, missing))))
                self._stop.wait(0.25)

    def _wait_for_runs(self) -> None:
        with api_client(self.base, self.token) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                answer = self._execute(client, 60)
                elapsed = time.perf_counter() - started
                if answer.status_code == 200:
                    self.held.append(elapsed)
                elif answer.status_code == 202:
                    self.not_held.append(elapsed)
                    # A client of a 5-second run has no reason to ask more than once a second.
                    finished_run(client, answer.json()["id"], self._stop, longest_pause=1.0)
                else:
                    self.errors.append(f"wait 60: {answer.status_code}")

    def stop(self) -> None:
        """Stop queueing, cancel what is in flight (through the API), wait until it is over."""
        self._stop.set()
        self._cancel_in_flight()
        for thread in self._threads:
            thread.join()
        self._cancel_in_flight()  # a run a client was queueing as we stopped

    def _cancel_in_flight(self) -> None:
        with api_client(self.base, self.token) as client:
            while run_ids := self.table.in_flight_ids(self.workflow):
                for run_id in run_ids:
                    answer = client.post(f"{API}/runs/{run_id}/cancel/")
                    if answer.status_code not in (200, 409):  # 409: it had just ended
                        self.errors.append(f"cancel: {answer.status_code}")
                time.sleep(0.2)


def _sign_in_samples(base: str, seconds: float) -> tuple[list[float], int]:
    """The visitors' latencies and failures, measured in a process of their own: the
    load's clients in this one must not hold the interpreter lock while an answer to a
    visitor waits to be read (that alone would lengthen the tail under load)."""
    visit = subprocess.run(
        [sys.executable, __file__, "visit", base, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    )
    measured = json.loads(visit.stdout)
    return measured["samples"], measured["errors"]


def _visit(base: str, seconds: float, visitors: int = 4, every: float = 0.05) -> dict:
    """Latencies of `GET /login/` for ``seconds`` from ``visitors`` clients that each ask
    every ``every`` seconds (or at once, if the last answer took longer), each time on a
    new connection, as new visitors come; and how many failed. Paced, not back to back:
    the page's latency, not the queue the measuring clients would make themselves."""
    samples: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    def visitor() -> None:
        with httpx.Client(base_url=base, headers={"Connection": "close"}, timeout=30) as client:
            next_visit = time.perf_counter()
            while next_visit < deadline:
                time.sleep(max(0.0, next_visit - time.perf_counter()))
                started = time.perf_counter()
                answer = client.get("/login/")
                samples.append(time.perf_counter() - started)
                if answer.status_code != 200 or b"password" not in answer.content:
                    errors[0] += 1
                next_visit = max(started + every, time.perf_counter())

    threads = [threading.Thread(target=visitor) for _ in range(visitors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"samples": samples, "errors": errors[0]}


def sign_in_under_load(
    base: str,
    token: str,
    table: RunTable,
    slow: dict,
    groups: dict[str, list[int]],
    quick: bool,
    running_at_most: int,
    waiters: int,
) -> dict:
    """Figure 7: idle and loaded windows alternate; each loaded window starts once the
    50 runs are in flight and ``running_at_most`` of them run (the workers are full).
    ``waiters`` clients ask with `wait: 60`. Also the CPU each kind of process used in
    each kind of window (in cores: 1.0 is one core busy all the time)."""
    load = SlowRuns(base, token, table, slow, in_flight=50, waiters=waiters)
    window = 5.0 if quick else 8.0
    samples: dict[str, list[float]] = {"idle": [], "loaded": []}
    cpu: dict[str, dict[str, float]] = {"idle": {}, "loaded": {}}
    errors = 0
    rounds = 2 if quick else 4
    for round_number in range(rounds):
        for phase in ("idle", "loaded") if round_number % 2 == 0 else ("loaded", "idle"):
            if phase == "loaded":
                load.start()
                table.wait_until(
                    lambda counts: (
                        counts.get("running", 0) >= running_at_most
                        and counts.get("queued", 0) + counts.get("running", 0) >= 50
                    ),
                    slow["workflow"],
                    timeout=60,
                )
                load.measuring.set()
            else:
                # Cancelled runs' workers stop within a heartbeat (2 s); then all is idle.
                time.sleep(3)
            before = processes.cpu_seconds_by_group(groups)
            measured, failed = _sign_in_samples(base, window)
            after = processes.cpu_seconds_by_group(groups)
            for group in after:
                cpu[phase][group] = cpu[phase].get(group, 0) + after[group] - before[group]
            samples[phase] += measured
            errors += failed
            if phase == "loaded":
                load.measuring.clear()
                load.stop()
    p95 = {phase: percentile(samples[phase], 0.95) for phase in samples}
    ratio = p95["loaded"] / p95["idle"]
    running = [counts.get("running", 0) for counts in load.seen]
    queued = [counts.get("queued", 0) for counts in load.seen]
    lock_waits = [counts["lock waits"] for counts in load.seen]
    cores = {
        phase: {group: round(used / (window * rounds), 2) for group, used in cpu[phase].items()}
        for phase in cpu
    }
    return {
        "p95_ms_loaded": ms(p95["loaded"]),
        "p95_ms_idle": ms(p95["idle"]),
        "ratio": round(ratio, 3),
        "running": f"{min(running)}–{max(running)}, mean {statistics.mean(running):.1f}",
        "queued": f"{min(queued)}–{max(queued)}, mean {statistics.mean(queued):.1f}",
        "waiting_on_a_lock": f"mean {statistics.mean(lock_waits):.1f}, most {max(lock_waits)}",
        "p50_ms_loaded": ms(statistics.median(samples["loaded"])),
        "p50_ms_idle": ms(statistics.median(samples["idle"])),
        "requests": {phase: len(samples[phase]) for phase in samples},
        # The machine's other tenants, in cores: the same in both kinds of window
        # unless they changed their load meanwhile.
        "others_cores": f"idle {cores['idle']['other']}, loaded {cores['loaded']['other']}",
        "cpu_cores_by_process": cores,
        "sign_in_errors": errors,
        "wait_60": {
            "clients": waiters,
            "held_until_the_run_ended": len(load.held),
            "held_s_p50": round(statistics.median(load.held), 2) if load.held else None,
            "answered_202_at_once": len(load.not_held),
            "answered_202_ms_p50": ms(statistics.median(load.not_held)) if load.not_held else None,
        },
        "run_errors": len(load.errors),
        "run_errors_first": load.errors[:5],
        "windows": f"{rounds} × {window:g} s each, interleaved",
        "visitors": "4, each one visit every 50 ms on a new connection (a process of its own)",
        "target": "<= 1.5 (p95), no errors",
        "ok": ratio <= 1.5 and errors == 0 and not load.errors,
    }


# --- 8 and 9: throughput and enqueue-to-start --------------------------------------------


def _start_delays(runs: list[dict]) -> dict:
    delays = [
        seconds_between(run["started_at"], run["created_at"]) for run in runs if run["started_at"]
    ]
    return {
        "p50_ms": ms(statistics.median(delays)),
        "p95_ms": ms(percentile(delays, 0.95)),
        "max_ms": ms(max(delays)),
        "runs": len(delays),
    }


def throughput(
    base: str, token: str, table: RunTable, noop: dict, count: int, clients: int = 8
) -> tuple[dict, dict]:
    """Figure 8 and figure 9's burst: ``count`` runs of the no-op action, queued by
    ``clients`` clients at once with `wait: 0`."""
    before = table.counts(noop["workflow"])
    already = sum(before.values())
    refused = [0]

    def enqueue(share: int) -> None:
        with api_client(base, token) as client:
            for _ in range(share):
                answer = client.post(f"{API}/actions/{noop['action']}/execute/", json={"wait": 0})
                refused[0] += answer.status_code not in (200, 202)

    shares = [count // clients + (index < count % clients) for index in range(clients)]
    first_request = time.time()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(enqueue, shares))
    all_queued = time.time()
    table.wait_until(
        lambda counts: sum(counts.get(status, 0) for status in FINISHED) >= already + count,
        noop["workflow"],
        timeout=600,
    )
    with api_client(base, token) as client:
        runs = sorted(
            runs_of_workflow(client, noop["workflow"]),
            key=lambda run: datetime.datetime.fromisoformat(run["created_at"]),
        )
    runs = runs[already:]
    last_end = max(datetime.datetime.fromisoformat(run["finished_at"]) for run in runs)
    elapsed = last_end.timestamp() - first_request
    failed = sum(run["status"] != "succeeded" for run in runs) + refused[0]
    figure = {
        "runs_per_s": round(len(runs) / elapsed, 1),
        "runs": len(runs),
        "failed": failed,
        "seconds": round(elapsed, 2),
        "queued_per_s": round(count / (all_queued - first_request), 1),
        "clients": clients,
    }
    return figure, _start_delays(runs)


def spaced_start_delays(base: str, token: str, spaced: dict, count: int) -> dict:
    """Figure 9, idle: one run at a time (`wait: 10`, then a pause), so none waits for
    another's worker."""
    with api_client(base, token) as client:
        for _ in range(count):
            answer = client.post(f"{API}/actions/{spaced['action']}/execute/", json={"wait": 10})
            assert answer.status_code == 200 and answer.json()["status"] == "succeeded", answer.text
            time.sleep(0.1)
        runs = runs_of_workflow(client, spaced["workflow"])
    return _start_delays(runs)


if __name__ == "__main__":
    # python bench/queued.py visit BASE SECONDS: figure 7's visitors, as JSON.
    print(json.dumps(_visit(sys.argv[2], float(sys.argv[3]))))
