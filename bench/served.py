"""Figures 2 and 5 as served: through gunicorn, Redis and `celery worker`s on PostgreSQL
(bench/run.py starts them); and py-spy profiles of those processes (--profile)."""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import processes
import queued
from measure import alternately, p50, ratio_figure

PROFILES = Path(__file__).resolve().parent.parent / "artifacts" / "profiles"


def end_to_end_latency(base: str, token: str, actions: dict[str, int], quick: bool) -> dict:
    """Figure 2 through gunicorn and a worker: from sending the execute to the run's end."""
    with queued.api_client(base, token) as client:

        def execute(count: str):
            def call() -> tuple[float, float, float]:
                sent = time.time()
                answer = client.post(
                    f"/api/v1/actions/{actions[count]}/execute/", json={"wait": 10}
                )
                answered = time.time()
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "succeeded", answer.text
                run = client.get(f"/api/v1/runs/{answer.json()['run_id']}/").json()
                finished = datetime.datetime.fromisoformat(run["finished_at"]).timestamp()
                on_worker = queued.seconds_between(run["finished_at"], run["started_at"])
                return finished - sent, answered - sent, on_worker

            return call

        for count in ("0", "50"):
            for _ in range(10):
                execute(count)()
        fifty, zero = alternately(execute("50"), execute("0"), 40 if quick else 150)

    def shown(index: int) -> str:
        sides = [p50([sample[index] for sample in side]) * 1000 for side in (fifty, zero)]
        return f"{sides[0]:.1f} / {sides[1]:.1f} = {sides[0] / sides[1]:.2f}"

    return ratio_figure(
        ("50_keys", "0_keys"),
        ([sample[0] for sample in fifty], [sample[0] for sample in zero]),
        1.15,
        "<= 1.15 (gunicorn + worker)",
        answered_p50_ms=shown(1),
        on_worker_p50_ms=shown(2),
        measures="client sends → run's finished_at",
    )


def execute_throughput(
    base: str,
    token: str,
    action_id: int,
    quick: bool,
    groups: dict[str, list[int]],
    profile: bool,
) -> dict:
    """Figure 5: 8 clients executing and reading the result, against 8 asking who they are."""
    duration = 4.0 if quick else 10.0
    clients = 8
    answered_202 = [0]

    def noop(client) -> bool:
        return client.get("/api/v1/auth/whoami/").status_code == 200

    def execute(client) -> bool:
        answer = client.post(f"/api/v1/actions/{action_id}/execute/", json={"wait": 30})
        if answer.status_code == 202:  # this web process's waiters were all taken
            answered_202[0] += 1
            return queued.finished_run(client, answer.json()["id"])["status"] == "succeeded"
        return answer.status_code == 200 and answer.json()["status"] == "succeeded"

    phases = {}
    cpu_by_group = {}
    for name, call in (
        ("noop", noop),
        ("execute", execute),
        ("noop_again", noop),
        ("execute_again", execute),
    ):
        before = processes.cpu_seconds_by_group(groups)
        phases[name] = _load(base, token, call, clients, duration / 2)
        after = processes.cpu_seconds_by_group(groups)
        cpu_by_group[name] = {
            group: round((after[group] - before[group]) * 1000 / phases[name]["requests"], 2)
            for group in after
        }
    if profile:
        pids = {"gunicorn": groups["gunicorn"][0], "celery": groups["celery workers"][0]}
        for name, call in (("noop", noop), ("execute", execute)):
            _profile(name, pids, lambda call=call: _load(base, token, call, clients, 5.5))
    noop_per_s = phases["noop"]["per_s"] + phases["noop_again"]["per_s"]
    execute_per_s = phases["execute"]["per_s"] + phases["execute_again"]["per_s"]
    errors = sum(phase["errors"] for phase in phases.values())
    ratio = execute_per_s / noop_per_s
    return {
        "noop_per_s": round(noop_per_s / 2, 1),
        "execute_per_s": round(execute_per_s / 2, 1),
        "ratio": round(ratio, 3),
        "errors": errors,
        "answered_202": answered_202[0],
        "noop_cpu_ms": round(phases["noop_again"]["cpu_ms_per_request"], 2),
        "execute_cpu_ms": round(phases["execute_again"]["cpu_ms_per_request"], 2),
        "noop_cpu_ms_by_process": cpu_by_group["noop_again"],
        "execute_cpu_ms_by_process": cpu_by_group["execute_again"],
        "clients": clients,
        "target": ">= 0.5, zero errors",
        "ok": ratio >= 0.5 and errors == 0,
    }


def _profile(name: str, pids: dict[str, int], load: Callable[[], object]) -> None:
    """py-spy samples each process of ``pids`` and its children (gunicorn's workers, a
    Celery worker's pool) while ``load`` runs: a flame graph and the functions that hold
    most samples (inclusive), in artifacts/profiles/."""
    PROFILES.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    recorders, raws = [], []
    for label, pid in pids.items():
        raw = PROFILES / f"{label}-{name}.txt"
        raws.append(raw)
        common = ["record", "--pid", str(pid), "--subprocesses", "--duration", "5"]
        common += ["--rate", "100"]  # a Celery worker is 9 processes: py-spy must keep up
        recorders += [
            subprocess.Popen([spy, *common, "--format", "raw", "--output", str(raw)]),
            subprocess.Popen(
                [spy, *common, "--format", "flamegraph", "--output", str(raw.with_suffix(".svg"))]
            ),
        ]
    time.sleep(1)  # let py-spy attach
    load()
    for recorder in recorders:
        recorder.wait(timeout=60)
    for raw in raws:
        raw.with_name(f"{raw.stem}-top.txt").write_text(_top_functions(raw))


def _top_functions(raw: Path, limit: int = 40) -> str:
    """Per function, the share of samples in which it is on the stack (collapsed stacks)."""
    totals: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples += int(count)
        for frame in set(stack.split(";")):
            totals[frame] = totals.get(frame, 0) + int(count)
    rows = sorted(totals.items(), key=lambda item: -item[1])[:limit]
    return f"{samples} samples\n" + "\n".join(
        f"{count / samples:6.1%}  {frame}" for frame, count in rows
    )


def _load(base: str, token: str, call: Callable, clients: int, seconds: float) -> dict:
    """``clients`` clients each doing ``call(client)`` one after another for ``seconds``;
    ``call`` says whether it went right."""
    import httpx

    done = [0] * clients
    errors = [0] * clients
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Token {token}"}, timeout=60
        ) as client:
            while time.perf_counter() < deadline:
                ok = call(client)
                done[index] += 1
                errors[index] += 0 if ok else 1

    started, busy_before = time.perf_counter(), processes.busy_cpu_seconds()
    threads = [threading.Thread(target=worker, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, busy = time.perf_counter() - started, processes.busy_cpu_seconds() - busy_before
    return {
        "requests": sum(done),
        "per_s": sum(done) / elapsed,
        "errors": sum(errors),
        # Every process of the machine: load generator, gunicorn, workers, PostgreSQL, ...
        "cpu_ms_per_request": busy * 1000 / max(sum(done), 1),
    }
