"""`make bench`: seed data, measure the hot paths side by side, print a table, write JSON.

These machines are noisy, so every figure that has a target is a ratio of two things
measured in the same run, interleaved; absolute medians are printed for information.
Everything talks to 127.0.0.1 only: the HTTP target is a server this script starts.

Figures (targets from the performance issue):
1. queries to execute an action with 1 and with 50 referenced keys: equal, at most 8
2. execute latency p50 with 50 keys / with 0 keys: at most 1.15
3. the Insert-a-Secret-Key picker and GET /api/v1/secrets/ for 10,000 keys, 200 groups
   / for 10 keys: at most 1.5, same query count
4. redaction of a 1 MiB output against 50 keys: at least 100 MiB/s
5. execute throughput under gunicorn on PostgreSQL / a no-op authenticated endpoint
   measured the same way: at least 0.5, zero errors
6. Run Code start-up p50 (empty program), Python and JavaScript
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import execute_setup  # bench/, beside this script

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = BASE_DIR / "var" / "bench"
RESULTS = BASE_DIR / "artifacts" / "bench-results.json"
PROFILES = BASE_DIR / "artifacts" / "profiles"
FERNET_KEY = "t7r1I0O0bqvpD9OD3W8QmfXH4iTqXv0l5m8Y9f2oCk0="
PASSWORD = execute_setup.PASSWORD


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
    }


class _Target(BaseHTTPRequestHandler):
    """A local HTTP target that answers every request with a small JSON body."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle's algorithm on, the body waits for
    # the client's delayed ACK (40 ms) on a kept-alive connection. Real servers set it too.
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format, *args) -> None:
        pass


def start_target_process() -> tuple[str, subprocess.Popen]:
    """The target in a process of its own, as a real one would be: parsing the 50 headers
    of a 50-key request must not take the measuring process's interpreter lock (in
    process, that alone was a third of the difference between 50 keys and none)."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-target"], stdout=subprocess.PIPE, text=True
    )
    return process.stdout.readline().strip(), process


def serve_target() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def interleaved(first, second, rounds: int) -> tuple[list[float], list[float]]:
    """Time two callables alternately, so machine noise hits both alike."""
    first_times, second_times = [], []
    for round_number in range(rounds):
        pair = [(first, first_times), (second, second_times)]
        if round_number % 2:
            pair.reverse()
        for call, times in pair:
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
    return first_times, second_times


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
    """Figure 1 from the SQL of an execute with 1 and with 50 keys (execute_setup)."""
    one, fifty = len(queries[1]), len(queries[50])
    return {
        "keys_1": one,
        "keys_50": fifty,
        "target": "equal, <= 8",
        "ok": one == fifty and fifty <= 8,
        "queries": queries[50],
    }


def _ratio_figure(
    labels: tuple[str, str], samples: tuple[list, list], limit: float, target: str, **extra
) -> dict:
    """p50 of each side, their ratio, and whether it is within ``limit``."""
    ratio = p50(samples[0]) / p50(samples[1])
    return {
        f"p50_ms_{labels[0]}": round(p50(samples[0]) * 1000, 2),
        f"p50_ms_{labels[1]}": round(p50(samples[1]) * 1000, 2),
        "ratio": round(ratio, 3),
        **extra,
        "target": target,
        "ok": ratio <= limit,
    }


def figures_in_process(quick: bool, profile: bool = False) -> dict:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from workflows.redaction import Redactor

    results: dict = {}
    target, target_process = start_target_process()

    # 1 and 2: execute with 0, 1 and 50 keys.
    execute = execute_setup.executor(*execute_setup.seed(target))
    results["1_queries_execute_sqlite"] = _queries_figure(execute_setup.statements(execute))
    samples = interleaved(lambda: execute(50), lambda: execute(0), 30 if quick else 80)
    results["2_execute_latency_sqlite"] = _ratio_figure(
        ("50_keys", "0_keys"), samples, 1.15, "<= 1.15 (in process)"
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
        figure = _ratio_figure(
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
    target_process.terminate()
    return results


# --- Figure 5: gunicorn on PostgreSQL ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def figures_on_postgresql(
    postgres_url: str, quick: bool, workers: int, threads: int, profile: bool = False
) -> dict:
    import httpx
    import psycopg

    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    try:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute("DROP DATABASE IF EXISTS bench")
            connection.execute("CREATE DATABASE bench")
    except psycopg.Error as error:
        skipped = {"skipped": f"PostgreSQL not reachable at {admin_url}: {error}", "ok": None}
        return {"5_execute_throughput": skipped}
    database_url = postgres_url.rsplit("/", 1)[0] + "/bench"
    environment = {**os.environ, **_environment(database_url)}
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=environment, check=True
    )
    subprocess.run(
        [python, "manage.py", "createcachetable"], cwd=BASE_DIR, env=environment, check=True
    )
    target, target_process = start_target_process()
    setup = subprocess.run(
        [python, str(BASE_DIR / "bench" / "execute_setup.py"), target],
        cwd=BASE_DIR,
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    )
    seeded = json.loads(setup.stdout)
    token, actions = seeded["token"], seeded["actions"]
    queries = {int(count): sql for count, sql in seeded["queries"].items()}
    figures = {"1_queries_execute_postgresql": _queries_figure(queries)}
    port = _free_port()
    gunicorn = subprocess.Popen(
        [
            str(Path(python).parent / "gunicorn"),
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
        cwd=BASE_DIR,
        env=environment,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(
                    f"{base}/api/v1/auth/whoami/", headers={"Authorization": f"Token {token}"}
                )
                break
            except httpx.TransportError:
                time.sleep(0.1)
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Token {token}"}, timeout=30
        ) as client:

            def execute(count: str):
                def call() -> None:
                    response = client.post(f"/api/v1/actions/{actions[count]}/execute/", json={})
                    assert response.json()["status"] == "succeeded", response.text

                return call

            for count in ("0", "50"):
                for _ in range(10):
                    execute(count)()
            samples = interleaved(execute("50"), execute("0"), 40 if quick else 150)
        figures["2_execute_latency_postgresql"] = _ratio_figure(
            ("50_keys", "0_keys"), samples, 1.15, "<= 1.15 (gunicorn)"
        )
        duration = 4.0 if quick else 10.0
        action_id = actions["5"]
        clients = 8
        phases = {}
        cpu_by_group = {}
        for name, method, path in (
            ("noop", "GET", "/api/v1/auth/whoami/"),
            ("execute", "POST", f"/api/v1/actions/{action_id}/execute/"),
            ("noop_again", "GET", "/api/v1/auth/whoami/"),
            ("execute_again", "POST", f"/api/v1/actions/{action_id}/execute/"),
        ):
            before = _cpu_seconds_by_process_group(gunicorn.pid, target_process.pid)
            phases[name] = _load(base, token, method, path, clients, duration / 2)
            after = _cpu_seconds_by_process_group(gunicorn.pid, target_process.pid)
            cpu_by_group[name] = {
                group: round((after[group] - before[group]) * 1000 / phases[name]["requests"], 2)
                for group in after
            }
        if profile:
            for name, method, path in (
                ("noop", "GET", "/api/v1/auth/whoami/"),
                ("execute", "POST", f"/api/v1/actions/{action_id}/execute/"),
            ):
                _profile_workers(gunicorn.pid, name, base, token, method, path, clients)
        noop = phases["noop"]["per_s"] + phases["noop_again"]["per_s"]
        execute = phases["execute"]["per_s"] + phases["execute_again"]["per_s"]
        errors = sum(phase["errors"] for phase in phases.values())
        ratio = execute / noop
        figures["5_execute_throughput"] = {
            "noop_per_s": round(noop / 2, 1),
            "noop_cpu_ms": round(phases["noop_again"]["cpu_ms_per_request"], 2),
            "execute_cpu_ms": round(phases["execute_again"]["cpu_ms_per_request"], 2),
            "noop_cpu_ms_by_process": cpu_by_group["noop_again"],
            "execute_cpu_ms_by_process": cpu_by_group["execute_again"],
            "execute_per_s": round(execute / 2, 1),
            "ratio": round(ratio, 3),
            "errors": errors,
            "clients": clients,
            "workers": f"{workers} × {threads} threads",
            "target": ">= 0.5, zero errors",
            "ok": ratio >= 0.5 and errors == 0,
        }
        return figures
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=10)
        target_process.terminate()


def _profile_workers(
    master: int, name: str, base: str, token: str, method: str, path: str, clients: int
) -> None:
    """py-spy samples every gunicorn worker while the load runs: a flame graph and the
    functions that hold most samples (inclusive), in artifacts/."""
    PROFILES.mkdir(parents=True, exist_ok=True)
    raw = PROFILES / f"gunicorn-{name}.txt"
    spy = str(Path(sys.executable).parent / "py-spy")
    common = ["record", "--pid", str(master), "--subprocesses", "--duration", "5", "--rate", "250"]
    recorders = [
        subprocess.Popen([spy, *common, "--format", "raw", "--output", str(raw)]),
        subprocess.Popen(
            [spy, *common, "--format", "flamegraph", "--output", str(raw.with_suffix(".svg"))]
        ),
    ]
    time.sleep(1)  # let py-spy attach
    _load(base, token, method, path, clients, 5.5)
    for recorder in recorders:
        recorder.wait(timeout=60)
    (PROFILES / f"gunicorn-{name}-top.txt").write_text(_top_functions(raw))


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


def _load(base: str, token: str, method: str, path: str, clients: int, seconds: float) -> dict:
    import httpx

    done = [0] * clients
    errors = [0] * clients
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Token {token}"}, timeout=30
        ) as client:
            while time.perf_counter() < deadline:
                response = client.request(method, path, json={} if method == "POST" else None)
                ok = response.status_code == 200 and (
                    method == "GET" or response.json()["status"] == "succeeded"
                )
                done[index] += 1
                errors[index] += 0 if ok else 1

    started, busy_before = time.perf_counter(), _busy_cpu_seconds()
    threads = [threading.Thread(target=worker, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, busy = time.perf_counter() - started, _busy_cpu_seconds() - busy_before
    return {
        "requests": sum(done),
        "per_s": sum(done) / elapsed,
        "errors": sum(errors),
        # Every process of the machine: load generator, gunicorn, PostgreSQL, target, Redis.
        "cpu_ms_per_request": busy * 1000 / max(sum(done), 1),
    }


def _cpu_seconds_by_process_group(gunicorn_pid: int, target_pid: int) -> dict[str, float]:
    """CPU time used so far by gunicorn (master and workers), PostgreSQL, the target,
    this load generator and everything else (Linux /proc), in seconds."""
    groups = dict.fromkeys(("gunicorn", "postgresql", "target", "load generator"), 0.0)
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        parent, used = int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks
        pid = int(entry.name)
        if gunicorn_pid in (pid, parent):
            groups["gunicorn"] += used
        elif name == "postgres":
            groups["postgresql"] += used
        elif pid == target_pid:
            groups["target"] += used
        elif pid == os.getpid():
            groups["load generator"] += used
    return groups


def _busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far (Linux /proc/stat), in seconds."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


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
    }


def main() -> int:
    if sys.argv[1:] == ["--serve-target"]:
        serve_target()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer rounds")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server for the gunicorn figure (a database named bench is created)",
    )
    parser.add_argument(
        "--workers", type=int, default=2 * (os.cpu_count() or 1) + 1, help="gunicorn workers"
    )
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile: figure 2 in process (pyinstrument), figure 5's workers (py-spy)",
    )
    parser.add_argument(
        "--only-postgresql", action="store_true", help="figures 1, 2 and 5 on PostgreSQL only"
    )
    arguments = parser.parse_args()

    shutil.rmtree(BENCH_DIR, ignore_errors=True)
    BENCH_DIR.mkdir(parents=True)
    os.environ.update(_environment(f"sqlite:///{BENCH_DIR / 'bench.sqlite3'}"))
    sys.path.insert(0, str(BASE_DIR))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)

    results = {
        "machine": _machine(arguments.postgres),
        "figures": {}
        if arguments.only_postgresql
        else figures_in_process(arguments.quick, arguments.profile),
    }
    results["figures"].update(
        figures_on_postgresql(
            arguments.postgres,
            arguments.quick,
            arguments.workers,
            arguments.threads,
            arguments.profile,
        )
    )
    _print(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"\nWritten to {RESULTS.relative_to(BASE_DIR)}")
    return 0


def _print(results: dict) -> None:
    print(f"\nMachine: {results['machine']}")
    print(f"{'figure':<24} {'measured':<62} {'target':<26} ok")
    for name, figure in results["figures"].items():
        shown = {
            key: value for key, value in figure.items() if key not in ("target", "ok", "queries")
        }
        measured = ", ".join(f"{key}={value}" for key, value in shown.items())
        verdict = {True: "yes", False: "NO", None: "-"}[figure.get("ok")]
        print(f"{name:<24} {measured[:62]:<62} {figure.get('target', ''):<26} {verdict}")


if __name__ == "__main__":
    sys.exit(main())
