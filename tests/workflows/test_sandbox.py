"""The Run Code sandbox, with the real bubblewrap and interpreters (no mocks).

Limit tests lower the limits with the `settings` fixture and assert which limit the error
names, never how long the run took.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflows.sandbox import SandboxError, run_code

LANGUAGES = ["python", "javascript"]
APP_SETTING_NAMES = ["DJANGO_SETTINGS_MODULE", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DATABASE_URL"]
CANARY_NAME = "SANDBOX_TEST_CANARY"
CANARY_VALUE = "canary-value-that-must-stay-outside"


@pytest.fixture
def fast_limits(settings):
    # The wall limit is well above the CPU limit so that a loaded machine still hits the CPU
    # limit first; a run that ends early is not slowed down by it.
    settings.SANDBOX_CPU_SECONDS = 1
    settings.SANDBOX_WALL_SECONDS = 8.0
    return settings


@pytest.fixture
def listening_server() -> Iterator[socket.socket]:
    """A TCP server on the host's loopback that the sandbox must not reach."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


def connections_accepted(server: socket.socket) -> int:
    accepted = 0
    while True:
        try:
            connection, _ = server.accept()
        except BlockingIOError:
            return accepted
        connection.close()
        accepted += 1


# --- Results, logs and errors --------------------------------------------------------------


READ_AND_RETURN = {
    "python": (
        "print('greeting', variables['name'])\n"
        "return {'name': variables['name'], 'double': variables['number'] * 2,\n"
        "        'items': variables['items'] + [None], 'nothing': None}"
    ),
    "javascript": (
        "console.log('greeting', variables.name);\n"
        "return {name: variables.name, double: variables.number * 2,\n"
        "        items: [...variables.items, null], nothing: null};"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_code_reads_variables_and_returns_json_with_logs(language):
    variables = {"name": "Zoë ✓ 東京", "number": 21, "items": [1, "two", {"three": 3.5}]}

    output = run_code(language, READ_AND_RETURN[language], variables)

    assert output == {
        "result": {
            "name": "Zoë ✓ 東京",
            "double": 42,
            "items": [1, "two", {"three": 3.5}, None],
            "nothing": None,
        },
        "logs": "greeting Zoë ✓ 東京\n",
    }


@pytest.mark.parametrize(
    ("language", "code", "expected"),
    [
        ("python", "return 'text'", "text"),
        ("python", "return 3.25", 3.25),
        ("python", "return [1, [2]]", [1, [2]]),
        ("python", "x = 1", None),
        ("python", "", None),
        ("javascript", "return 'text';", "text"),
        ("javascript", "return 3.25;", 3.25),
        ("javascript", "return [1, [2]];", [1, [2]]),
        ("javascript", "const x = 1;", None),
        ("javascript", "", None),
    ],
)
def test_any_json_value_can_be_returned_and_no_return_gives_null(language, code, expected):
    assert run_code(language, code, {})["result"] == expected


def test_javascript_code_can_await():
    code = (
        "const value = await new Promise(\n"
        "  (resolve) => setTimeout(() => resolve(variables.n), 20),\n"
        ");\n"
        "return value + 1;"
    )
    assert run_code("javascript", code, {"n": 41})["result"] == 42


def test_python_code_can_define_functions_and_classes():
    code = (
        "class Box:\n"
        "    def __init__(self, value):\n"
        "        self.value = value\n"
        "def double(box):\n"
        "    return box.value * 2\n"
        "return double(Box(variables['n']))\n"
    )
    assert run_code("python", code, {"n": 4})["result"] == 8


def test_stdout_and_stderr_are_both_in_the_logs_in_order():
    code = "import sys\nprint('one')\nsys.stderr.write('two\\n')\nprint('three')\nreturn 1"
    assert run_code("python", code, {})["logs"] == "one\ntwo\nthree\n"

    code = "console.log('one'); console.error('two'); console.log('three'); return 1;"
    assert run_code("javascript", code, {})["logs"] == "one\ntwo\nthree\n"


@pytest.mark.parametrize(
    ("language", "code", "expected"),
    [
        (
            "python",
            "print('before')\nx = 1\nreturn x / 0\n",
            ["ZeroDivisionError: division by zero", 'File "<code>", line 3', "return x / 0"],
        ),
        (
            "javascript",
            "console.log('before');\nconst x = null;\nreturn x.missing;\n",
            ["TypeError: Cannot read properties of null", "code.js:3"],
        ),
    ],
)
def test_an_exception_fails_with_its_type_message_line_and_the_logs(language, code, expected):
    with pytest.raises(SandboxError) as failure:
        run_code(language, code, {})

    for part in expected:
        assert part in failure.value.message
    assert failure.value.logs == "before\n"
    # The traceback shows the code's frames, not the runner's.
    assert "runner" not in failure.value.message


@pytest.mark.parametrize(
    ("language", "code"),
    [("python", "x = 1\nreturn x +* 2\n"), ("javascript", "const x = 1;\nreturn x +* ;\n")],
)
def test_a_syntax_error_names_the_line(language, code):
    with pytest.raises(SandboxError) as failure:
        run_code(language, code, {})

    assert failure.value.message.startswith("SyntaxError")
    assert "(line 2)" in failure.value.message


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "return {1, 2}"),
        ("python", "return float('nan')"),
        ("python", "return object()"),
        ("javascript", "return () => 1;"),
        ("javascript", "return 10n;"),
        ("javascript", "const loop = {}; loop.self = loop; return loop;"),
    ],
)
def test_a_result_that_is_not_json_fails(language, code):
    with pytest.raises(SandboxError) as failure:
        run_code(language, code, {})

    assert "not JSON-serialisable" in failure.value.message


FAKE_ENVELOPES = [{"status": "ok", "result": "forged"}, {"result": "forged"}]
FORGERY = {
    "python": ("import sys\nprint(json_text)\nsys.stderr.write(json_text + '\\n')\n"),
    "javascript": "console.log(json_text);\nconsole.error(json_text);\n",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_printing_a_fake_result_cannot_forge_the_result(language):
    fake = (
        json.dumps({"status": "ok", "result": "forged"}) + "\n" + json.dumps({"result": "forged"})
    )
    declare = {"python": f"json_text = {fake!r}\n", "javascript": f"const json_text = {fake!r};\n"}
    code = declare[language] + FORGERY[language]

    output = run_code(language, code + "return 'genuine'", {})
    assert output["result"] == "genuine"
    assert "forged" in output["logs"]

    with pytest.raises(SandboxError):
        run_code(language, code + "throw_here()", {})


def test_unknown_language_is_refused():
    with pytest.raises(SandboxError, match="Unknown language"):
        run_code("ruby", "1", {})


def test_missing_bubblewrap_is_a_clear_error(settings):
    settings.SANDBOX_BWRAP = "/nonexistent/bwrap"

    with pytest.raises(SandboxError, match="bubblewrap was not found at /nonexistent/bwrap"):
        run_code("python", "return 1", {})


def test_missing_node_is_a_clear_error(settings):
    settings.SANDBOX_NODE = "/nonexistent/node"

    with pytest.raises(SandboxError, match="Node.js was not found"):
        run_code("javascript", "return 1;", {})


# --- Isolation ---------------------------------------------------------------------------


ENVIRONMENT = {
    "python": "import os\nreturn dict(os.environ)",
    "javascript": "return {...process.env};",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_environment_holds_no_app_settings(language, monkeypatch):
    monkeypatch.setenv(CANARY_NAME, CANARY_VALUE)
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@127.0.0.1/db")

    environment = run_code(language, ENVIRONMENT[language], {})["result"]

    for name in [*APP_SETTING_NAMES, CANARY_NAME]:
        assert name not in environment
    assert CANARY_VALUE not in json.dumps(environment)
    assert environment["HOME"] == "/tmp"


PROCESSES = {
    "python": (
        "import os\n"
        "seen = {}\n"
        "for pid in sorted(name for name in os.listdir('/proc') if name.isdigit()):\n"
        "    entry = {}\n"
        "    for part in ('cmdline', 'environ'):\n"
        "        try:\n"
        "            with open(f'/proc/{pid}/{part}', 'rb') as file:\n"
        "                entry[part] = file.read().decode(errors='replace')\n"
        "        except OSError as error:\n"
        "            entry[part] = 'unreadable: ' + type(error).__name__\n"
        "    seen[pid] = entry\n"
        "return {'uid': os.getuid(), 'processes': seen}"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "const seen = {};\n"
        "for (const pid of fs.readdirSync('/proc').filter((name) => /^\\d+$/.test(name))) {\n"
        "  seen[pid] = {};\n"
        "  for (const part of ['cmdline', 'environ']) {\n"
        "    try { seen[pid][part] = fs.readFileSync(`/proc/${pid}/${part}`, 'latin1'); }\n"
        "    catch (error) { seen[pid][part] = 'unreadable: ' + error.code; }\n"
        "  }\n"
        "}\n"
        "return {uid: process.getuid(), processes: seen};"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_proc_shows_only_the_sandbox_without_variables_or_host_environment(language, monkeypatch):
    monkeypatch.setenv(CANARY_NAME, CANARY_VALUE)
    variable_value = "variable-value-" + secrets.token_hex(8)

    seen = run_code(language, PROCESSES[language], {"token": variable_value})["result"]

    assert seen["uid"] != 0
    # A fresh PID namespace: bwrap's init and the interpreter, nothing of the host.
    assert set(seen["processes"]) <= {"1", "2", "3"}
    everything = json.dumps(seen["processes"])
    assert variable_value not in everything  # neither argv nor environment carry variables
    assert CANARY_VALUE not in everything
    for name in APP_SETTING_NAMES:
        assert name not in everything


def hidden_paths(settings) -> list[str]:
    base = Path(settings.BASE_DIR)
    var = Path(settings.VAR_DIR)
    return [
        str(base),
        str(base / "manage.py"),
        str(base / "config" / "settings.py"),
        str(var),
        str(var / "db.sqlite3"),
        str(var / "secret_key"),
        str(var / "field_encryption_key"),
        "/root",
        "/work",
        "/home",
        "/etc/passwd",
        "/etc/postgresql",
        "/var",
    ]


EXISTS = {
    "python": "import os\nreturn {path: os.path.exists(path) for path in variables['paths']}",
    "javascript": (
        "const fs = require('fs');\n"
        "return Object.fromEntries(variables.paths.map((path) => [path, fs.existsSync(path)]));"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_project_database_keys_and_home_folders_are_not_visible(language, settings):
    paths = hidden_paths(settings)

    visible = run_code(language, EXISTS[language], {"paths": paths})["result"]

    assert visible == dict.fromkeys(paths, False)


def test_the_apps_python_packages_are_not_importable():
    with pytest.raises(SandboxError, match="No module named 'django'"):
        run_code("python", "import django", {})


WRITE = {
    "python": (
        "outcome = {}\n"
        "for path in variables['paths']:\n"
        "    try:\n"
        "        with open(path, 'w') as file:\n"
        "            file.write('x')\n"
        "        outcome[path] = 'written'\n"
        "    except OSError as error:\n"
        "        outcome[path] = type(error).__name__\n"
        "return outcome"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "const outcome = {};\n"
        "for (const path of variables.paths) {\n"
        "  try { fs.writeFileSync(path, 'x'); outcome[path] = 'written'; }\n"
        "  catch (error) { outcome[path] = error.code; }\n"
        "}\n"
        "return outcome;"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_only_tmp_is_writable(language):
    paths = ["/tmp/allowed", "/escape", "/usr/escape", "/usr/bin/escape", "/sandbox/escape"]
    paths += ["/dev/escape", "/proc/escape", "/bin/escape"]

    outcome = run_code(language, WRITE[language], {"paths": paths})["result"]

    assert outcome.pop("/tmp/allowed") == "written"
    assert "written" not in outcome.values()


CONNECT = {
    "python": (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', variables['port']), timeout=2).close()\n"
        "    return 'connected'\n"
        "except OSError as error:\n"
        "    return type(error).__name__\n"
    ),
    "javascript": (
        "const net = require('net');\n"
        "return await new Promise((resolve) => {\n"
        "  const socket = net.connect(variables.port, '127.0.0.1', () => {\n"
        "    socket.destroy(); resolve('connected');\n"
        "  });\n"
        "  socket.on('error', (error) => resolve(error.code));\n"
        "  socket.setTimeout(2000, () => { socket.destroy(); resolve('timeout'); });\n"
        "});"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_network_is_blocked(language, listening_server):
    port = listening_server.getsockname()[1]

    outcome = run_code(language, CONNECT[language], {"port": port})["result"]

    assert outcome != "connected"
    assert connections_accepted(listening_server) == 0


def test_the_network_setting_shares_the_hosts_network(settings, listening_server):
    # The counterpart of test_the_network_is_blocked: the same code does connect when the
    # deployment turns the network on, so the blocked case is not a broken test.
    settings.SANDBOX_NETWORK = True
    port = listening_server.getsockname()[1]

    outcome = run_code("python", CONNECT["python"], {"port": port})["result"]

    assert outcome == "connected"
    assert connections_accepted(listening_server) == 1


# --- Limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "code"),
    [("python", "while True:\n    pass"), ("javascript", "while (true) {}")],
)
def test_an_infinite_loop_hits_the_cpu_limit(language, code, fast_limits):
    with pytest.raises(SandboxError) as failure:
        run_code(language, code, {})

    assert failure.value.message == "CPU time limit of 1 s exceeded"


def process_alive(marker: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize(
    ("language", "code"),
    [
        (
            "python",
            "import subprocess, time\n"
            "subprocess.Popen(['sleep', variables['marker']])\n"
            "time.sleep(100)",
        ),
        (
            "javascript",
            "require('child_process').spawn('sleep', [variables.marker]);\n"
            "await new Promise((resolve) => setTimeout(resolve, 100000));",
        ),
    ],
)
def test_a_sleeping_run_hits_the_wall_limit_and_leaves_no_process(language, code, settings):
    settings.SANDBOX_WALL_SECONDS = 1.5
    marker = f"{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(1000)}"

    with pytest.raises(SandboxError) as failure:
        run_code(language, code, {"marker": marker})

    assert failure.value.message == "Wall time limit of 1.5 s exceeded"
    # The PID namespace dies with bwrap; give the kernel a moment to tear it down.
    for _ in range(100):
        if not process_alive(marker):
            break
        time.sleep(0.05)
    assert not process_alive(marker)


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "import os\nwhile True:\n    os.fork()"),
        (
            "python",
            "import subprocess\n"
            "children = []\n"
            "while True:\n"
            "    children.append(subprocess.Popen(['sleep', '100']))",
        ),
        (
            "python",
            "import threading, time\n"
            "while True:\n"
            "    threading.Thread(target=time.sleep, args=(100,)).start()",
        ),
        (
            "javascript",
            "const childProcess = require('child_process');\n"
            "for (let count = 0; count < 1000; count++) {\n"
            "  childProcess.spawn('sleep', ['100']);\n"
            "  await new Promise((resolve) => setImmediate(resolve));\n"
            "}",
        ),
    ],
)
def test_a_fork_bomb_hits_the_process_limit(language, code, fast_limits):
    fast_limits.SANDBOX_MAX_PROCESSES = 16

    with pytest.raises(SandboxError) as failure:
        run_code(language, code, {})

    assert failure.value.message.startswith("Process limit reached (at most 16 processes")


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "data = bytearray()\nwhile True:\n    data += bytes(10_000_000)"),
        (
            "javascript",
            "const parts = [];\nwhile (true) { parts.push(new Array(100000).fill(1.5)); }",
        ),
        (
            "javascript",
            "const parts = [];\nwhile (true) { parts.push(Buffer.alloc(10_000_000, 1)); }",
        ),
    ],
)
def test_a_memory_bomb_hits_the_memory_limit(language, code, settings):
    # The default CPU limit (5 s) leaves the garbage collector time to give up first.
    settings.SANDBOX_MEMORY_MB = 200

    with pytest.raises(SandboxError) as failure:
        run_code(language, code, {})

    assert failure.value.message.startswith("Memory limit of 200 MB exceeded")


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "for _ in range(100):\n    print('x' * 1_000_000)"),
        ("javascript", "for (let count = 0; count < 100; count++) console.log('x'.repeat(1e6));"),
    ],
)
def test_printing_100_megabytes_hits_the_output_limit(language, code, fast_limits):
    with pytest.raises(SandboxError) as failure:
        run_code(language, code, {})

    assert failure.value.message == "Output limit of 1 MiB exceeded (logs)"
    assert failure.value.logs == "x" * 1_000_000 + "\n" + "x" * (1024 * 1024 - 1_000_001)


@pytest.mark.parametrize(
    ("language", "code"),
    [("python", "return 'x' * 2_000_000"), ("javascript", "return 'x'.repeat(2e6);")],
)
def test_a_huge_result_hits_the_output_limit(language, code, fast_limits):
    with pytest.raises(SandboxError, match=r"Output limit of 1 MiB exceeded \(result\)"):
        run_code(language, code, {})


def test_files_in_tmp_are_limited_in_size(fast_limits):
    fast_limits.SANDBOX_MEMORY_MB = 64
    code = (
        "with open('/tmp/big', 'wb') as file:\n"
        "    for _ in range(100):\n"
        "        file.write(bytes(1_000_000))"
    )

    with pytest.raises(SandboxError) as failure:
        run_code("python", code, {})

    assert "File too large" in failure.value.message or "No space" in failure.value.message
