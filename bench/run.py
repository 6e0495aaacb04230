"""`make bench`: seed data, measure the hot paths side by side, print a table, write JSON.

These machines are noisy, so every figure that has a target is a ratio of two things
measured in the same run, interleaved; absolute medians are printed for information.
Everything talks to 127.0.0.1 only: the HTTP target is a server this script starts, and
so are gunicorn and the `celery worker`s (bench/processes.py), on the machine's Redis.
The figures through them are in bench/served.py (2, 5) and bench/queued.py (7–9).

Runs execute on Celery workers, never in the web request (issue 12). Figures (targets
from the performance issue and issue 12), and what each measures now:
1. queries to execute an action with 1 and with 50 referenced keys: equal, at most 8.
   The API's execute with `wait` in Celery's eager mode (the worker's part runs inside
   the request): the web's queries (queue the run, show it once ended) and the worker's
   (claim, execute, end) together, split between the two; all statements, transaction
   control included, as the bound of 8 was counted.
2. execute latency p50 with 50 keys / with 0 keys: at most 1.15.
   In process (SQLite): the API's execute with `wait`, eager, as figure 1.
   On PostgreSQL: end to end through gunicorn, Redis and a real worker, from the moment
   the client sends `POST .../execute/ {"wait": 10}` to the run's `finished_at` (what
   the worker records as it ends, same clock). The web's wait notices the end by polling
   (20 ms, then up to every 250 ms), which rounds the answer's latency up to its next
   poll for both sides alike: that latency and the worker's own (`started_at` to
   `finished_at`) are shown for information.
3. the Insert-a-Secret-Key picker and GET /api/v1/secrets/ for 10,000 keys, 200 groups
   / for 10 keys: at most 1.5, same query count
4. redaction of a 1 MiB output against 50 keys: at least 100 MiB/s
5. execute throughput under gunicorn on PostgreSQL / a no-op authenticated endpoint
   measured the same way: at least 0.5, zero errors.
   8 clients, each executing the 5-key action with `wait: 30` and reading its result
   (polling `GET /runs/{id}/` when the web answered 202 because its waiters were taken),
   one run after another; the runs execute on the Celery workers.
6. Run Code start-up p50 (empty program), Python and JavaScript
7. the sign-in page p95 while 50 runs of a 5-second target are in flight / idle: at most
   1.5.
8. queued-run throughput against a no-op target, no failed run.
9. enqueue-to-start latency p50/p95, runs spaced and in figure 8's burst (information).

Figures 2 (PostgreSQL), 5, 7, 8 and 9 share one set-up: gunicorn (--workers, --threads),
2 `celery worker`s, each `--concurrency 8`, RUNS_PER_ORGANIZATION = all their pool processes
(so that fair share does not hold runs back: the one organization may fill the workers),
RUNS_MAX_WAITERS below gunicorn's threads (--max-waiters), a Redis database of its own
for the broker and a queue name unique to the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import execute_setup  # bench/, beside this script
import processes
import queued
import served
from measure import interleaved, p50, ratio_figure

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = BASE_DIR / "var" / "bench"
RESULTS = BASE_DIR / "artifacts" / "bench-results.json"
PROFILES = served.PROFILES
FERNET_KEY = "t7r1I0O0bqvpD9OD3W8QmfXH4iTqXv0l5m8Y9f2oCk0="
PASSWORD = execute_setup.PASSWORD
# The broker: a Redis database the tests (15) do not use, and a queue of this run's own.
BROKER_URL = "redis://127.0.0.1:6379/14"
RUNS_QUEUE = f"bench-runs-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _redis_url() -> str | None:
    """The machine's Redis, as production would use it for the throttle counters, if any."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return None
    return "redis://127.0.0.1:6379/15"


REDIS_URL = _redis_url()


def _environment(database_url: str) -> dict[str, str]:
    cache = {"REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": f"bench-{os.getpid()}"}
    return {
        **(cache if REDIS_URL else {}),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-secret-key-" + "x" * 40,
        "FIELD_ENCRYPTION_KEY": FERNET_KEY,
        "HTTPS_ONLY": "0",
        "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "EGRESS_ALLOWED_HOSTS": "127.0.0.1",
        # Never reached, and a one-second window keeps the throttle history as short as
        # production's 120/min does (DRF stores one timestamp per request in the window).
        "API_WRITE_RATE": "1000000/s",
        "DATABASE_URL": database_url,
        "VAR_DIR": str(BENCH_DIR),
        "LOG_LEVEL": "WARNING",
        # The in-process figures run eagerly and never reach it; DEBUG=0 requires one.
        "CELERY_BROKER_URL": BROKER_URL,
        "RUNS_QUEUE": RUNS_QUEUE,
    }


# --- Seeding -----------------------------------------------------------------------------


def seed_organization(name: str, keys: int, groups: int, members: int = 20):
    """An organization with keys, groups and grants spread over them; returns its member."""
    from django.contrib.auth.models import Group, Permission

    from secretsapp import services
    from secretsapp.models import (
        Access,
        Membership,
        OrganizationGroup,
        SecretKey,
        SecretKeyGroupObjectPermission,
        SecretKeyUserObjectPermission,
    )

    organization = services.create_organization(
        name,
        admin_username=f"{name}-admin",
        admin_email=f"admin@{name}.test",
        admin_password=PASSWORD,
    )
    admin = Membership.objects.get(organization=organization).user
    people = [
        services.add_member(
            admin,
            organization,
            username=f"{name}-member-{index}",
            email=f"m{index}@{name}.test",
            password=PASSWORD,
        ).user
        for index in range(members)
    ]
    group_rows = []
    for index in range(groups):
        group = Group.objects.create(name=f"org-{organization.pk}:group-{index}")
        group_rows.append(
            OrganizationGroup(organization=organization, group=group, name=f"Group {index}")
        )
        group.user_set.add(*random.sample(people, k=min(3, len(people))))
    OrganizationGroup.objects.bulk_create(group_rows)
    secret_keys = SecretKey.objects.bulk_create(
        (
            SecretKey(
                organization=organization,
                name=f"Key {index:05d}",
                value=f"bench-value-{index:05d}-" + "v" * 20,
                access=Access.RESTRICTED if index % 2 else Access.TEAM,
                created_by=admin,
            )
            for index in range(keys)
        ),
        batch_size=2000,
    )
    use = Permission.objects.get(codename="use_secretkey")
    manage = Permission.objects.get(codename="manage_secretkey")
    member = people[0]
    user_grants, group_grants = [], []
    for index, secret_key in enumerate(secret_keys):
        if index % 3 == 0:
            user_grants.append(
                SecretKeyUserObjectPermission(
                    content_object=secret_key, user=member, permission=use
                )
            )
        if group_rows:
            group = group_rows[index % len(group_rows)].group
            group_grants.append(
                SecretKeyGroupObjectPermission(
                    content_object=secret_key,
                    group=group,
                    permission=manage if index % 5 == 0 else use,
                )
            )
    SecretKeyUserObjectPermission.objects.bulk_create(user_grants, batch_size=2000)
    SecretKeyGroupObjectPermission.objects.bulk_create(group_grants, batch_size=2000)
    return admin, member


def random_value(length: int = 32) -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=length))


# --- Figures -----------------------------------------------------------------------------


def _profile_in_process(name: str, call, rounds: int = 200) -> None:
    from pyinstrument import Profiler

    PROFILES.mkdir(parents=True, exist_ok=True)
    profiler = Profiler(interval=0.0001)
    profiler.start()
    for _ in range(rounds):
        call()
    profiler.stop()
    (PROFILES / f"{name}.txt").write_text(profiler.output_text(unicode=True, show_all=False))


def _queries_figure(queries: dict) -> dict:
    """Figure 1 from the SQL of an execute with 1 and with 50 keys (execute_setup): all
    statements, and for 50 keys the web's and the worker's queries apart."""
    one, fifty = queries[1], queries[50]
    return {
        "keys_1": one["all"],
        "keys_50": fifty["all"],
        "web_queries": fifty["web"],
        "worker_queries": fifty["worker"],
        "transaction_control": fifty["transaction_control"],
        "target": "equal, <= 8",
        "ok": one["all"] == fifty["all"] and fifty["all"] <= 8,
        "queries": fifty["sql"],
    }


def figures_in_process(stack: contextlib.ExitStack, quick: bool, profile: bool = False) -> dict:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from workflows.redaction import Redactor

    results: dict = {}
    target, _ = processes.start_target(stack)

    # 1 and 2: execute with 0, 1 and 50 keys, the worker's part inside the request.
    execute_setup.run_eagerly()
    token, actions, _ = execute_setup.seed(target)
    execute = execute_setup.executor(token, actions)
    results["1_queries_execute_sqlite"] = _queries_figure(execute_setup.statements(execute))
    samples = interleaved(lambda: execute(50), lambda: execute(0), 30 if quick else 80)
    results["2_execute_latency_sqlite"] = ratio_figure(
        ("50_keys", "0_keys"), samples, 1.15, "<= 1.15 (in process, eager)"
    )
    if profile:
        _profile_in_process("execute-50-keys", lambda: execute(50))
        _profile_in_process("execute-0-keys", lambda: execute(0))

    # 3: picker and list for 10,000 keys / 200 groups vs 10 keys.
    many = 2000 if quick else 10_000
    big_admin, big_member = seed_organization("bigorg", keys=many, groups=200)
    small_admin, small_member = seed_organization("smallorg", keys=10, groups=2)
    clients = {}
    for label, user in (("big", big_member), ("small", small_member)):
        page_client = Client()
        page_client.force_login(user)
        api_client = APIClient()
        api_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        clients[label] = (page_client, api_client)

    def picker(label):
        return lambda: clients[label][0].get("/keys/picker/")

    def secrets_list(label):
        return lambda: clients[label][1].get("/api/v1/secrets/")

    def secrets_list_10(label):
        # For information: both answers hold 10 keys, so only the organization's size differs.
        return lambda: clients[label][1].get("/api/v1/secrets/?page_size=10")

    for name, make in (
        ("picker", picker),
        ("api_secrets_list", secrets_list),
        ("api_secrets_list_page_size_10", secrets_list_10),
    ):
        counts = {}
        for label in ("big", "small"):
            make(label)()
            with CaptureQueriesContext(connection) as captured:
                response = make(label)()
            assert response.status_code == 200
            counts[label] = len(captured)
        samples = interleaved(make("big"), make("small"), 20 if quick else 40)
        figure = ratio_figure(
            (f"{many}_keys", "10_keys"),
            samples,
            1.5,
            "<= 1.5, same query count",
            queries_big=counts["big"],
            queries_small=counts["small"],
        )
        figure["ok"] = figure["ok"] and counts["big"] == counts["small"]
        if name.endswith("page_size_10"):
            figure.update(target="information", ok=None)
        results[f"3_{name}"] = figure

    # 4: redaction throughput.
    secrets = [(f"key {index}", random_value()) for index in range(50)]
    redactor = Redactor(secrets)
    text = "".join(random.choices(string.ascii_letters + ' {}":,', k=1024 * 1024))
    text = text[:5000] + secrets[7][1] + text[5000:-100] + secrets[42][1]
    times = []
    for _ in range(10 if quick else 30):
        started = time.perf_counter()
        redacted = redactor.redact_text(text)
        times.append(time.perf_counter() - started)
    assert "[redacted:key 7]" in redacted and secrets[7][1] not in redacted
    throughput = (len(text.encode()) / (1024 * 1024)) / p50(times)
    results["4_redaction"] = {
        "p50_ms": round(p50(times) * 1000, 2),
        "mib_per_s": round(throughput, 1),
        "target": ">= 100 MiB/s",
        "ok": throughput >= 100,
    }

    # 6: sandbox start-up.
    from workflows import sandbox

    startup = {}
    for language, code in (("python", "return None"), ("javascript", "return null;")):
        samples = []
        for _ in range(7 if quick else 15):
            started = time.perf_counter()
            sandbox.run_code(language, code, {})
            samples.append(time.perf_counter() - started)
        startup[f"p50_ms_{language}"] = round(p50(samples) * 1000, 1)
    results["6_run_code_startup"] = {**startup, "target": "reported", "ok": True}
    return results


# --- On PostgreSQL: gunicorn and Celery workers ------------------------------------------

WORKER_PROCESSES = 2
WORKER_CONCURRENCY = 8


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def figures_on_postgresql(
    stack: contextlib.ExitStack,
    postgres_url: str,
    quick: bool,
    workers: int,
    threads: int,
    max_waiters: int,
    profile: bool = False,
) -> tuple[dict, dict]:
    """The figures, and the set-up they share (gunicorn, Celery, the run settings)."""
    import psycopg

    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    try:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            # FORCE: a bench killed hard may have left connections to it.
            connection.execute("DROP DATABASE IF EXISTS bench WITH (FORCE)")
            connection.execute("CREATE DATABASE bench")
    except psycopg.Error as error:
        skipped = {"skipped": f"PostgreSQL not reachable at {admin_url}: {error}", "ok": None}
        return {"5_execute_throughput": skipped}, {}
    database_url = postgres_url.rsplit("/", 1)[0] + "/bench"
    slots = WORKER_PROCESSES * WORKER_CONCURRENCY
    environment = {
        **os.environ,
        **_environment(database_url),
        "RUNS_PER_ORGANIZATION": str(slots),
        "RUNS_MAX_WAITERS": str(max_waiters),
        # Connections kept for the whole bench (default: 60 s): the CPU a closed one used
        # is gone from /proc, and the figures' CPU by process would lose it.
        "DATABASE_CONN_MAX_AGE": "1800",
    }
    python = sys.executable
    # As a deployment does (README); gunicorn serves the sign-in page's static files
    # through the manifest that collectstatic writes to staticfiles/.
    for command in (["migrate"], ["createcachetable"], ["collectstatic", "--no-input"]):
        subprocess.run(
            [python, "manage.py", *command, "-v0"], cwd=BASE_DIR, env=environment, check=True
        )
    target, target_process = processes.start_target(stack)
    setup = subprocess.run(
        [python, str(BASE_DIR / "bench" / "execute_setup.py"), target],
        cwd=BASE_DIR,
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    )
    seeded = json.loads(setup.stdout)
    token, actions, queue = seeded["token"], seeded["actions"], seeded["queue"]
    queries = {int(count): counted for count, counted in seeded["queries"].items()}
    figures = {"1_queries_execute_postgresql": _queries_figure(queries)}
    if REDIS_URL is None:
        skipped = {"skipped": "no Redis on 127.0.0.1:6379 for the broker", "ok": None}
        return {**figures, "5_execute_throughput": skipped}, {}

    stack.callback(_forget_queue)
    port = _free_port()
    gunicorn = processes.start_gunicorn(
        environment, port, workers, threads, BENCH_DIR / "gunicorn.log"
    )
    stack.callback(gunicorn.stop)
    celery_workers = []
    for number in range(1, WORKER_PROCESSES + 1):
        worker = processes.start_celery_worker(
            environment, number, WORKER_CONCURRENCY, BENCH_DIR / f"celery-worker-{number}.log"
        )
        stack.callback(worker.stop)
        celery_workers.append(worker)
    base = f"http://127.0.0.1:{port}"
    _wait_for_gunicorn(base, token, gunicorn)
    groups = {
        "gunicorn": [gunicorn.pid],
        "celery workers": [worker.pid for worker in celery_workers],
        "target": [target_process.pid],
    }
    setup = {
        "gunicorn": f"{workers} workers × {threads} threads",
        "celery": f"{WORKER_PROCESSES} workers × concurrency {WORKER_CONCURRENCY} (prefork)",
        "RUNS_PER_ORGANIZATION": slots,
        "RUNS_MAX_WAITERS": max_waiters,
        "broker": f"{BROKER_URL}, queue {RUNS_QUEUE}",
        "database": "PostgreSQL, database bench",
    }

    figures["2_execute_latency_postgresql"] = served.end_to_end_latency(base, token, actions, quick)
    figures["5_execute_throughput"] = served.execute_throughput(
        base, token, actions["5"], quick, groups, profile
    )
    table = queued.RunTable(database_url)
    stack.callback(table.close)
    figures["7_sign_in_under_load"] = queued.sign_in_under_load(
        base,
        token,
        table,
        queue["slow"],
        groups,
        quick,
        running_at_most=slots,
        # More than the web processes let wait, so that some are answered 202 at once.
        waiters=workers * max_waiters + 4,
    )
    before = processes.cpu_seconds_by_group(groups)
    count = 300 if quick else 1000
    throughput, burst = queued.throughput(base, token, table, queue["noop"], count)
    after = processes.cpu_seconds_by_group(groups)
    figures["8_queued_run_throughput"] = {
        **throughput,
        "cpu_ms_per_run_by_process": {
            group: round((after[group] - before[group]) * 1000 / count, 2) for group in after
        },
        "target": "reported, no failed run",
        "ok": throughput["failed"] == 0,
    }
    figures["9_start_latency_spaced"] = {
        **queued.spaced_start_delays(base, token, queue["spaced"], 20 if quick else 60),
        "target": "information",
        "ok": None,
    }
    figures["9_start_latency_burst"] = {**burst, "target": "information", "ok": None}
    return figures, setup


def _wait_for_gunicorn(base: str, token: str, gunicorn: processes.ProcessGroup) -> None:
    import httpx

    for _ in range(300):
        try:
            httpx.get(f"{base}/api/v1/auth/whoami/", headers={"Authorization": f"Token {token}"})
            return
        except httpx.TransportError:
            if gunicorn.process.poll() is not None:
                break
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not start:\n{gunicorn.log.read_text()[-3000:]}")


def _forget_queue() -> None:
    """The bench's queue and its binding, off the broker (Redis keeps nothing on disk, but
    it may run for a long time)."""
    import redis

    with contextlib.suppress(redis.RedisError):
        broker = redis.Redis.from_url(BROKER_URL)
        broker.delete(
            RUNS_QUEUE, f"_kombu.binding.{RUNS_QUEUE}", f"_kombu.binding_permanent.{RUNS_QUEUE}"
        )
        broker.close()


# --- Main --------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _postgresql_version(postgres_url: str) -> str:
    import psycopg

    try:
        with psycopg.connect(postgres_url, connect_timeout=3) as connection:
            return connection.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error:
        return "not reachable"


def _machine(postgres_url: str) -> dict:
    import sqlite3

    return {
        "cpu": _cpu_model(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _postgresql_version(postgres_url),
        "throttle_cache": "Redis (REDIS_URL)" if REDIS_URL else "database (no Redis found)",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        # Other work on the machine (these machines are shared) shows in the load.
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


def _stop_on_sigterm() -> None:
    """SIGTERM and SIGHUP end the bench as Ctrl-C does: through the ExitStack, which stops
    every process it started."""

    def leave(signal_number: int, frame: object) -> None:
        raise SystemExit(128 + signal_number)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer rounds")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server for the gunicorn figures (a database named bench is created)",
    )
    parser.add_argument(
        "--workers", type=int, default=2 * (os.cpu_count() or 1) + 1, help="gunicorn workers"
    )
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument(
        "--max-waiters",
        type=int,
        help="RUNS_MAX_WAITERS: requests per gunicorn worker that may wait for a run "
        "(default: half its threads, as the setting asks for fewer than the threads)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile: figure 2 in process (pyinstrument), figure 5's gunicorn and "
        "Celery workers (py-spy)",
    )
    parser.add_argument(
        "--only-postgresql", action="store_true", help="only the figures on PostgreSQL"
    )
    arguments = parser.parse_args()
    max_waiters = arguments.max_waiters or max(1, arguments.threads // 2)
    _stop_on_sigterm()

    shutil.rmtree(BENCH_DIR, ignore_errors=True)
    BENCH_DIR.mkdir(parents=True)
    os.environ.update(_environment(f"sqlite:///{BENCH_DIR / 'bench.sqlite3'}"))
    sys.path.insert(0, str(BASE_DIR))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)

    results = {"machine": _machine(arguments.postgres), "figures": {}}
    with contextlib.ExitStack() as stack:
        if not arguments.only_postgresql:
            results["figures"].update(figures_in_process(stack, arguments.quick, arguments.profile))
    with contextlib.ExitStack() as stack:
        figures, results["setup"] = figures_on_postgresql(
            stack,
            arguments.postgres,
            arguments.quick,
            arguments.workers,
            arguments.threads,
            max_waiters,
            arguments.profile,
        )
        results["figures"].update(figures)
    results["machine"]["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    _print(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"\nWritten to {RESULTS.relative_to(BASE_DIR)}")
    return 0


def _print(results: dict) -> None:
    """One row per figure: its measures (those that fit on a line; the JSON has all)."""
    print(f"\nMachine: {results['machine']}")
    print(f"Set-up of figures 2 (PostgreSQL), 5, 7, 8, 9: {results['setup']}")
    print(f"{'figure':<30} {'measured':<72} {'target':<28} ok")
    for name, figure in results["figures"].items():
        shown = [
            f"{key}={value}"
            for key, value in figure.items()
            if key not in ("target", "ok") and not isinstance(value, dict | list)
        ]
        lines = textwrap.wrap(", ".join(shown), 72) or [""]
        verdict = {True: "yes", False: "NO", None: "-"}[figure.get("ok")]
        print(f"{name:<30} {lines[0]:<72} {figure.get('target', ''):<28} {verdict}")
        for line in lines[1:]:
            print(f"{'':<30} {line}")


if __name__ == "__main__":
    sys.exit(main())
