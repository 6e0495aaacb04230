"""The sandbox that runs "Run Code" actions (bubblewrap; DESIGN.md "Executing an action" 3).

Convention for the code
-----------------------
The code is the body of a function that has `variables` in scope and whose return value is
the result:

- Python: the body of a plain function, `def main(variables): <code>`; `variables` is a
  dict. The standard library is available, nothing else (no site-packages).
- JavaScript (Node.js): the body of an async function,
  `async function (variables, require) { <code> }`; `variables` is an object, `await` works
  and `require` loads Node's built-in modules (no npm packages). Timers or promises still
  pending when the function returns are dropped; a promise that never settles fails the step.

`return <JSON value>` gives the result; without a return the result is null. A result that
is not JSON-serialisable (a Python set, NaN, a JavaScript function or BigInt) fails the step.
Whatever the code prints (`print`, `console.log`, stdout and stderr, interleaved in the
order written) is returned as the logs, up to the output limit. An exception fails the step
with its type, its message and a traceback with the code's own line numbers; the logs keep
what was printed before it. Examples::

    # Python
    total = sum(item["price"] for item in variables["items"])
    print("items:", len(variables["items"]))
    return {"total": total}

    // JavaScript
    const items = variables.items;
    await new Promise((resolve) => setTimeout(resolve, 10));
    console.log("items:", items.length);
    return { total: items.reduce((sum, item) => sum + item.price, 0) };

The result travels over a pipe of its own (not stdout), so printed text can never pass for a
result.

Isolation
---------
Each run is a fresh bubblewrap sandbox: new mount, PID, IPC, UTS and network namespaces (the
network is shared only when the SANDBOX_NETWORK setting is on); an empty environment except
PATH, HOME=/tmp and LANG; read-only /usr (with /bin, /lib... as on the host), the base
Python installation (not the project's virtualenv) and the two runner scripts; a private
/proc, a minimal /dev and an empty tmpfs /tmp, the only writable place. The project folder,
its var/ folder, /etc, /home, /root and /work are not there (should the project live under
/usr, an empty tmpfs covers it). The code and its variables go in through stdin, never argv
or the environment; the app's environment does not even reach bubblewrap.

When the app runs as root, bubblewrap sets up the sandbox with root's privileges and the code
runs as a fresh unprivileged uid/gid per run (RUN_UID_FIRST and up, no capabilities,
no_new_privs), so the process limit counts only that run's processes. Otherwise bubblewrap
uses an unprivileged user namespace (uid 65534 inside), which the kernel must allow.

Limits (settings, read at every call): SANDBOX_CPU_SECONDS (RLIMIT_CPU per process),
SANDBOX_WALL_SECONDS (the whole sandbox is killed), SANDBOX_MEMORY_MB (RLIMIT_AS for Python;
RLIMIT_DATA for Node.js, whose engine reserves far more address space than it uses, with the
V8 heap capped at half of it), SANDBOX_MAX_PROCESSES (RLIMIT_NPROC: processes and threads),
SANDBOX_MAX_OUTPUT_BYTES (logs and, separately, the result), plus the size of /tmp and of any
one file (both SANDBOX_MEMORY_MB) and 256 open files. The limits are per process, except the
wall time, output and process count, so a run that forks can use up to
SANDBOX_MAX_PROCESSES times the memory limit.

Requirements: bubblewrap (0.8, Debian 12) at SANDBOX_BWRAP, util-linux's setpriv and prlimit
in /usr/bin, Node.js at SANDBOX_NODE; a missing one is a SandboxError saying so. bwrap
exits as soon as the sandbox's init reports the exit status, so that init is reaped by the
host's PID 1: run the app under an init that reaps orphans (gunicorn's master as PID 1,
`docker run --init`, systemd), or finished sandboxes stay as zombie entries.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from workflows import cancellation

LANGUAGES = ("python", "javascript")
SANDBOX_DIR = "/sandbox"
# util-linux tools, run inside the sandbox from the read-only /usr.
PRLIMIT = "/usr/bin/prlimit"
SETPRIV = "/usr/bin/setpriv"
# Root-started runs each get a uid/gid from this range, far above any real account, so
# RLIMIT_NPROC (counted per uid) is a budget of one run alone.
RUN_UID_FIRST = 1_900_000_000
RUN_UID_COUNT = 100_000_000
NOBODY = 65534
OPEN_FILES = 256
# Error messages can quote arbitrary data; the step's error field should stay readable.
MAX_MESSAGE_CHARACTERS = 10_000
READ_CHUNK_BYTES = 65536
HOST_LINK_DIRECTORIES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Only mounted when the deployment turns the network on: name resolution and CA certificates.
NETWORK_FILES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
)
# Ways Node.js dies when its engine cannot get memory (V8 aborts or crashes, it cannot throw).
MEMORY_CRASH_SIGNALS = (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGTRAP)


class SandboxError(Exception):
    """The code failed or hit a limit.

    `.message` is a clear human message, whole: the caller redacts it, then cuts it to size
    with `shortened` (cut first, a value straddling the cut would keep its first characters,
    which redaction no longer recognises). `.logs` holds the captured stdout/stderr
    (possibly cut at the output limit, anywhere).
    """

    def __init__(self, message: str, logs: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.logs = logs


def shortened(message: str) -> str:
    """An error message cut to a readable size (an exception can quote a lot of data)."""
    if len(message) > MAX_MESSAGE_CHARACTERS:
        return message[:MAX_MESSAGE_CHARACTERS] + "… [truncated]"
    return message


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    wall_seconds: float
    memory_mb: int
    max_processes: int
    max_output_bytes: int
    network: bool

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            cpu_seconds=settings.SANDBOX_CPU_SECONDS,
            wall_seconds=settings.SANDBOX_WALL_SECONDS,
            memory_mb=settings.SANDBOX_MEMORY_MB,
            max_processes=settings.SANDBOX_MAX_PROCESSES,
            max_output_bytes=settings.SANDBOX_MAX_OUTPUT_BYTES,
            network=settings.SANDBOX_NETWORK,
        )

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    def cpu_message(self) -> str:
        return f"CPU time limit of {self.cpu_seconds} s exceeded"

    def wall_message(self) -> str:
        return f"Wall time limit of {self.wall_seconds:g} s exceeded"

    def memory_message(self) -> str:
        return f"Memory limit of {self.memory_mb} MB exceeded"

    def processes_message(self) -> str:
        return f"Process limit reached (at most {self.max_processes} processes and threads)"

    def output_message(self, what: str = "output") -> str:
        return f"Output limit of {format_bytes(self.max_output_bytes)} exceeded ({what})"


@dataclass
class Outcome:
    """What came out of one sandbox process."""

    logs: bytes = b""
    result: bytes = b""
    exit_status: int | None = None
    timed_out: bool = False
    logs_overflowed: bool = False
    result_overflowed: bool = False


def run_code(language: str, code: str, variables: dict[str, Any]) -> dict[str, Any]:
    """Run `code` in a fresh sandbox; return `{"result": <JSON value>, "logs": str}`.

    Raises SandboxError when the code fails, hits a limit or the sandbox cannot start.
    """
    if language not in LANGUAGES:
        raise SandboxError(f"Unknown language “{language}” (use python or javascript).")
    limits = Limits.from_settings()
    try:
        variables_json = json.dumps(variables, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise SandboxError(f"The variables cannot be passed to the code: {error}") from error

    result_read, result_write = os.pipe()
    runner_fd = os.memfd_create("sandbox-runner")
    try:
        os.write(runner_fd, runner_source(language))
        os.lseek(runner_fd, 0, os.SEEK_SET)
        command = build_command(language, limits, runner_fd)
        # The payload is JSON built by hand around already-encoded variables, so the
        # (possibly large) variables are serialised only once.
        payload = (
            f'{{"code": {json.dumps(code)}, "variables": {variables_json}, '
            f'"result_fd": {result_write}}}'
        ).encode()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(result_write, runner_fd),
                # Nothing of the app's environment reaches even bubblewrap itself: in a
                # user namespace the code could read /proc/1/environ of bwrap's init.
                env={},
                start_new_session=True,
            )
        except OSError as error:
            raise SandboxError(f"The code sandbox could not start: {error}") from error
    finally:
        os.close(result_write)
        os.close(runner_fd)
    try:
        # A cancelled run kills the sandbox: bubblewrap leads its own process group.
        with cancellation.abortable(lambda: os.killpg(process.pid, signal.SIGKILL)):
            outcome = communicate(process, payload, result_read, limits)
    finally:
        os.close(result_read)
    return interpret(language, outcome, limits)


def build_command(language: str, limits: Limits, runner_fd: int) -> list[str]:
    bwrap = settings.SANDBOX_BWRAP
    if not Path(bwrap).is_file():
        raise SandboxError(
            f"The code sandbox is not available: bubblewrap was not found at {bwrap} "
            "(install the Debian package bubblewrap or set SANDBOX_BWRAP)."
        )
    for tool in (PRLIMIT, SETPRIV):
        if not Path(tool).is_file():
            raise SandboxError(
                f"The code sandbox is not available: {tool} was not found "
                "(install the Debian package util-linux)."
            )
    as_root = os.geteuid() == 0

    command = [bwrap, "--die-with-parent", "--new-session", "--clearenv"]
    command += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    command += ["--hostname", "sandbox"]
    if not limits.network:
        command += ["--unshare-net"]
    if as_root:
        # Privileged set-up with no user namespace; the capabilities below only let setpriv
        # switch to the run's uid, and setpriv drops them all before the interpreter starts.
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        command += ["--cap-add", "CAP_SETPCAP"]
    else:
        command += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]

    command += ["--ro-bind", "/usr", "/usr"]
    for name in HOST_LINK_DIRECTORIES:
        host_path = Path("/") / name
        if host_path.is_symlink():
            command += ["--symlink", os.readlink(host_path), str(host_path)]
        elif host_path.is_dir():
            command += ["--ro-bind", str(host_path), str(host_path)]
    command += ["--proc", "/proc", "--dev", "/dev"]
    command += ["--perms", "1777", "--size", str(limits.memory_bytes), "--tmpfs", "/tmp"]
    command += ["--perms", "0755", "--dir", SANDBOX_DIR]
    runner_path = f"{SANDBOX_DIR}/runner.{'py' if language == 'python' else 'js'}"
    command += ["--perms", "0444", "--ro-bind-data", str(runner_fd), runner_path]
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}

    if language == "python":
        interpreter_binds, interpreter, library_path = python_interpreter()
        command += interpreter_binds
        if library_path:
            # Builds with a shared libpython find it through an absolute RUNPATH that does
            # not exist in the sandbox.
            environment["LD_LIBRARY_PATH"] = library_path
        interpreter_command = [interpreter, "-I", "-S", "-B", "-u", runner_path]
        memory_limit = f"--as={limits.memory_bytes}"
    else:
        interpreter_binds, interpreter = node_interpreter()
        command += interpreter_binds
        heap_mb = max(16, limits.memory_mb // 2)
        interpreter_command = [interpreter, f"--max-old-space-size={heap_mb}", runner_path]
        memory_limit = f"--data={limits.memory_bytes}"

    command += hide_project_paths()
    if limits.network:
        # Created readable: bwrap would make /etc 0700, and the run's uid could then read
        # neither the resolver configuration nor the CA certificates.
        command += ["--perms", "0755", "--dir", "/etc"]
        for path in NETWORK_FILES:
            command += ["--ro-bind-try", path, path]
    for name, value in environment.items():
        command += ["--setenv", name, value]
    command += ["--chdir", "/tmp", "--"]

    if as_root:
        run_id = RUN_UID_FIRST + secrets.randbelow(RUN_UID_COUNT)
        command += [
            SETPRIV,
            f"--reuid={run_id}",
            f"--regid={run_id}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    # Applied inside the sandbox, after the switch to the run's uid (or the user namespace),
    # so RLIMIT_NPROC counts the run's own processes, not the app's.
    command += [
        PRLIMIT,
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
        f"--nproc={limits.max_processes}",
        memory_limit,
        f"--fsize={limits.memory_bytes}",
        f"--nofile={OPEN_FILES}",
        "--core=0",
        "--",
    ]
    return command + interpreter_command


def python_interpreter() -> tuple[list[str], str, str]:
    """Binds, path and library path of the base interpreter (never the project's venv)."""
    prefix = Path(sys.base_prefix).resolve()
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not (prefix / "bin" / name).is_file():
        raise SandboxError(f"The code sandbox is not available: {prefix}/bin/{name} not found.")
    if prefix.is_relative_to("/usr"):
        return [], str(prefix / "bin" / name), ""
    # Mounted under /sandbox rather than at its own path, which may be inside /root.
    mounted = f"{SANDBOX_DIR}/python"
    return ["--ro-bind", str(prefix), mounted], f"{mounted}/bin/{name}", f"{mounted}/lib"


def node_interpreter() -> tuple[list[str], str]:
    node = Path(settings.SANDBOX_NODE).resolve()
    if not node.is_file():
        raise SandboxError(
            f"The code sandbox is not available: Node.js was not found at "
            f"{settings.SANDBOX_NODE} (install it or set SANDBOX_NODE)."
        )
    if node.is_relative_to("/usr"):
        return [], str(node)
    mounted = f"{SANDBOX_DIR}/node"
    return ["--ro-bind", str(node), mounted], mounted


def hide_project_paths() -> list[str]:
    """Cover the project and its data with empty tmpfs when they live under /usr."""
    options: list[str] = []
    for path in sorted({Path(settings.BASE_DIR).resolve(), Path(settings.VAR_DIR).resolve()}):
        if path.is_relative_to("/usr") and path != Path("/usr"):
            options += ["--perms", "0000", "--tmpfs", str(path)]
    return options


@functools.cache
def runner_source(language: str) -> bytes:
    name = "python_runner.py" if language == "python" else "javascript_runner.js"
    return (Path(__file__).parent / name).read_bytes()


def communicate(
    process: subprocess.Popen[bytes], payload: bytes, result_read: int, limits: Limits
) -> Outcome:
    """Feed stdin and read logs and result within the wall time and output limits."""
    outcome = Outcome()
    deadline = time.monotonic() + limits.wall_seconds
    assert process.stdin is not None and process.stdout is not None
    stdin_fd = process.stdin.fileno()
    logs_fd = process.stdout.fileno()
    os.set_blocking(stdin_fd, False)
    pending = memoryview(payload)
    logs = bytearray()
    result = bytearray()

    with selectors.DefaultSelector() as selector:
        selector.register(stdin_fd, selectors.EVENT_WRITE)
        selector.register(logs_fd, selectors.EVENT_READ)
        selector.register(result_read, selectors.EVENT_READ)
        while len(selector.get_map()) > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome.timed_out = True
                break
            for key, _ in selector.select(remaining):
                if key.fd == stdin_fd:
                    try:
                        pending = pending[os.write(stdin_fd, pending) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(stdin_fd)
                        process.stdin.close()
                    continue
                chunk = os.read(key.fd, READ_CHUNK_BYTES)
                if not chunk:
                    selector.unregister(key.fd)
                elif key.fd == logs_fd:
                    logs += chunk
                    outcome.logs_overflowed = len(logs) > limits.max_output_bytes
                else:
                    result += chunk
                    outcome.result_overflowed = len(result) > limits.max_output_bytes
            if outcome.logs_overflowed or outcome.result_overflowed:
                break
        if not process.stdin.closed:
            process.stdin.close()

    if not (outcome.timed_out or outcome.logs_overflowed or outcome.result_overflowed):
        try:
            # The pipes are closed; the code may still be running (it closed them itself).
            outcome.exit_status = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            outcome.timed_out = True
    if outcome.exit_status is None:
        # Killing bwrap kills its init (--die-with-parent), and with it the PID namespace.
        process.kill()
        process.wait()
    process.stdout.close()
    outcome.logs = bytes(logs[: limits.max_output_bytes])
    outcome.result = bytes(result)
    return outcome


def interpret(language: str, outcome: Outcome, limits: Limits) -> dict[str, Any]:
    logs = outcome.logs.decode("utf-8", errors="replace")
    if outcome.logs_overflowed:
        raise SandboxError(limits.output_message("logs"), logs)
    if outcome.result_overflowed:
        raise SandboxError(limits.output_message("result"), logs)
    if outcome.timed_out:
        raise SandboxError(limits.wall_message(), logs)

    if outcome.result:
        try:
            envelope = json.loads(outcome.result)
            status = envelope["status"]
        except RecursionError:
            # JavaScript serialises thousands of levels; Python's json cannot read them.
            raise SandboxError("The result is nested too deeply to be read.", logs) from None
        except (ValueError, TypeError, KeyError) as error:
            message = "The code wrote something unreadable to the result pipe."
            raise SandboxError(message, logs) from error
        if status == "ok":
            return {"result": envelope.get("result"), "logs": logs}
        message = str(envelope.get("message", "The code failed."))
        if envelope.get("limit") == "memory":
            raise SandboxError(f"{limits.memory_message()}\n{message}", logs)
        if envelope.get("limit") == "processes":
            raise SandboxError(f"{limits.processes_message()}\n{message}", logs)
        raise SandboxError(message, logs)

    # No envelope: the interpreter died before it could report.
    exit_status = outcome.exit_status or 0
    # bwrap reports a child killed by a signal as 128 + the signal's number.
    signal_number = exit_status - 128 if exit_status > 128 else max(0, -exit_status)
    if signal_number == signal.SIGXCPU:
        raise SandboxError(limits.cpu_message(), logs)
    if signal_number == signal.SIGKILL:
        # The hard CPU limit (one second above the soft one) kills code that ignores SIGXCPU.
        raise SandboxError(f"{limits.cpu_message()} (the code was killed)", logs)
    if signal_number == signal.SIGXFSZ:
        raise SandboxError(
            f"File size limit of {limits.memory_mb} MB exceeded (files in /tmp)", logs
        )
    if language == "javascript" and (
        signal_number in MEMORY_CRASH_SIGNALS or "out of memory" in logs[-4096:]
    ):
        raise SandboxError(limits.memory_message(), logs)
    if exit_status == 1 and logs.startswith("bwrap:"):
        raise SandboxError(f"The code sandbox could not start: {logs.strip()}", logs)
    if signal_number:
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = str(signal_number)
        raise SandboxError(f"The code was killed by signal {name} before returning.", logs)
    raise SandboxError(f"The code exited with status {exit_status} before returning.", logs)


def format_bytes(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"
