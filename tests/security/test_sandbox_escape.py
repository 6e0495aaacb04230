"""Escaping the Run Code sandbox, attacked the way a user would: Run Code actions with a
secret key in a code variable, executed through the API (POST /api/v1/actions/{id}/execute/)
with the real bubblewrap, Python and Node.js.

Each attack runs in both languages. The code either observes its own failure and returns
what it saw (asserted here), or the step fails with a message naming the limit it hit. The
host is then checked from outside: no file appeared, no process carrying the test's marker
is left (checked after every test), the listeners saw nothing.

Every run also has a second key, "other", that the runner may use but the action does not
reference. The test process plants that key's value where a leak would reach it (its own
environment, a host file, an inherited file descriptor): the sandbox must find it nowhere.

tests/workflows/test_sandbox.py tests the sandbox module on its own; this file goes through
the execution path and tries harder (more paths, /proc tricks, every limit's aftermath).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser

from secretsapp import services as secret_services
from secretsapp.models import AuditAction, AuditEvent, SecretKey
from tests.conftest import Personas, api_client_for, code_action
from workflows import services as workflow_services
from workflows.models import Workflow

LANGUAGES = ["python", "javascript"]
APP_SETTING_NAMES = ["DJANGO_SETTINGS_MODULE", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DATABASE_URL"]
# What the sandbox itself sets (bubblewrap adds PWD): nothing else may reach the code.
SANDBOX_ENVIRONMENT = {"PATH", "HOME", "LANG", "LD_LIBRARY_PATH", "PWD"}
CANARY_NAME = "SANDBOX_ESCAPE_CANARY"
# Character devices bubblewrap's --dev provides: none reaches hardware or kernel memory.
HARMLESS_DEVICES = {"null", "zero", "full", "random", "urandom", "tty"}
# The kernel accepts writes to these from any user, by design: /dev/zero discards them and
# the random devices stir them into the entropy pool without crediting entropy. Nothing on
# the host changes that an unprivileged process could not change anyway.
WRITE_SINKS = {"null", "zero", "random", "urandom"}


@pytest.fixture(autouse=True)
def fast_limits(settings) -> None:
    # Low limits keep the bombs short; the wall limit stays well above the CPU limit so a
    # loaded machine still hits the CPU limit first.
    settings.SANDBOX_CPU_SECONDS = 1
    settings.SANDBOX_WALL_SECONDS = 3.0
    settings.SANDBOX_MEMORY_MB = 200
    settings.SANDBOX_MAX_PROCESSES = 16
    settings.SANDBOX_MAX_OUTPUT_BYTES = 1024 * 1024
    settings.SANDBOX_NETWORK = False


def new_marker() -> str:
    # A number, so that `sleep <marker>` accepts it as an argument and carries it in argv.
    return f"{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(10**6):06d}"


def processes_with(marker: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


@dataclass
class Sandbox:
    """Runs code as a Run Code action through the API; the "used" key is the variable
    ``token``, the test's probe data the variable ``probe`` (a trigger input, so it keeps
    its JSON type)."""

    actor: AbstractBaseUser
    workflow: Workflow
    used_key: SecretKey
    other_value: str
    canary: str
    marker: str
    planted_file: Path

    def run(self, language: str, code: str, probe: Any = "") -> dict[str, Any]:
        action = workflow_services.create_action(
            self.actor,
            self.workflow,
            name="Escape attempt",
            action_type="run_code",
            config=code_action(
                code,
                language,
                token=f"{{{{secret:{self.used_key.pk}}}}}",
                probe="{{inputs.probe}}",
            ),
        )
        response = api_client_for(self.actor).post(
            f"/api/v1/actions/{action.pk}/execute/", {"inputs": {"probe": probe}}, format="json"
        )
        assert response.status_code == 200, response.content
        text = response.content.decode()
        # Whatever the code did, nothing it returns may hold the other key or the canary.
        assert self.other_value not in text
        assert self.canary not in text
        return response.json()

    def result(self, language: str, code: str, probe: Any = "") -> Any:
        outcome = self.run(language, code, probe)
        assert outcome["status"] == "succeeded", outcome
        return outcome["output"]["result"]


@pytest.fixture
def sandbox(
    personas: Personas, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Sandbox]:
    used_key = secret_services.create_secret_key(
        personas.admin, name="Used by the code", value=f"used-{secrets.token_hex(16)}"
    )
    other_value = f"other-{secrets.token_hex(16)}"
    # A team key: the runner may use it, so only isolation keeps it from the code.
    secret_services.create_secret_key(personas.admin, name="Not referenced", value=other_value)
    canary = f"canary-{secrets.token_hex(16)}"
    monkeypatch.setenv(CANARY_NAME, canary)
    monkeypatch.setenv("PLANTED_OTHER_KEY", other_value)
    planted_file = tmp_path / "other-key.txt"
    planted_file.write_text(f"{other_value}\n{canary}\n")
    # An inheritable descriptor: only the sandbox's closing of descriptors keeps it out.
    planted_descriptor = os.open(planted_file, os.O_RDONLY)
    os.set_inheritable(planted_descriptor, True)
    workflow = workflow_services.create_workflow(
        personas.member_use, name="Escape", inputs=["probe"]
    )
    marker = new_marker()
    yield Sandbox(
        personas.member_use, workflow, used_key, other_value, canary, marker, planted_file
    )
    os.close(planted_descriptor)
    # No process of any run of this test may outlive it; the PID namespace dies with
    # bubblewrap, so give the kernel a moment to tear it down.
    for _ in range(100):
        if not processes_with(marker):
            break
        time.sleep(0.05)
    assert processes_with(marker) == [], f"sandbox processes left behind: {marker}"


# --- Environment ----------------------------------------------------------------------------

ENVIRONMENT = {
    "python": "import os\nreturn dict(os.environ)",
    "javascript": "return {...process.env};",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_environment_holds_nothing_of_the_app(sandbox: Sandbox, language: str):
    environment = sandbox.result(language, ENVIRONMENT[language])

    assert set(environment) <= SANDBOX_ENVIRONMENT
    assert environment["HOME"] == "/tmp"
    everything = json.dumps(environment)
    for name in APP_SETTING_NAMES:
        assert name not in everything
    assert django_settings.SECRET_KEY not in everything
    encryption_keys = django_settings.FIELD_ENCRYPTION_KEY
    if isinstance(encryption_keys, str):
        encryption_keys = encryption_keys.split(",")
    for encryption_key in encryption_keys:
        assert encryption_key.strip() not in everything


# --- /proc ----------------------------------------------------------------------------------

PROC = {
    "python": (
        "import os\n"
        "processes = {}\n"
        "for pid in sorted(name for name in os.listdir('/proc') if name.isdigit()):\n"
        "    entry = {}\n"
        "    for part in ('cmdline', 'environ'):\n"
        "        try:\n"
        "            with open(f'/proc/{pid}/{part}', 'rb') as file:\n"
        "                entry[part] = file.read().decode(errors='replace')\n"
        "        except OSError as error:\n"
        "            entry[part] = 'unreadable: ' + type(error).__name__\n"
        "    processes[pid] = entry\n"
        "descriptors = {}\n"
        "for descriptor in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        descriptors[descriptor] = os.readlink(f'/proc/self/fd/{descriptor}')\n"
        "    except OSError:\n"
        "        pass\n"
        "links = {}\n"
        "for link in ('/proc/1/root', '/proc/1/cwd', '/proc/1/exe', '/proc/self/exe'):\n"
        "    try:\n"
        "        links[link] = os.readlink(link)\n"
        "    except OSError as error:\n"
        "        links[link] = 'unreadable: ' + type(error).__name__\n"
        "with open('/proc/self/mountinfo') as file:\n"
        "    mountinfo = file.read()\n"
        "return {'processes': processes, 'descriptors': descriptors, 'links': links,\n"
        "        'mountinfo': mountinfo, 'uid': os.getuid()}"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "const read = (path) => {\n"
        "  try { return fs.readFileSync(path, 'latin1'); }\n"
        "  catch (error) { return 'unreadable: ' + error.code; }\n"
        "};\n"
        "const link = (path) => {\n"
        "  try { return fs.readlinkSync(path); }\n"
        "  catch (error) { return 'unreadable: ' + error.code; }\n"
        "};\n"
        "const processes = {};\n"
        "for (const pid of fs.readdirSync('/proc').filter((name) => /^\\d+$/.test(name))) {\n"
        "  processes[pid] = {cmdline: read(`/proc/${pid}/cmdline`),\n"
        "                    environ: read(`/proc/${pid}/environ`)};\n"
        "}\n"
        "const descriptors = {};\n"
        "for (const descriptor of fs.readdirSync('/proc/self/fd')) {\n"
        "  descriptors[descriptor] = link(`/proc/self/fd/${descriptor}`);\n"
        "}\n"
        "const links = {};\n"
        "for (const path of ['/proc/1/root', '/proc/1/cwd', '/proc/1/exe', '/proc/self/exe']) {\n"
        "  links[path] = link(path);\n"
        "}\n"
        "return {processes, descriptors, links, mountinfo: read('/proc/self/mountinfo'),\n"
        "        uid: process.getuid()};"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_proc_shows_no_host_process_file_or_project_path(sandbox: Sandbox, language: str):
    seen = sandbox.result(language, PROC[language])

    assert seen["uid"] != 0
    # A PID namespace of its own: bubblewrap's init and the interpreter, nothing of the host
    # (the test process, PID 1 of the machine, the database).
    assert set(seen["processes"]) <= {"1", "2", "3"}
    processes = json.dumps(seen["processes"])
    assert "pytest" not in processes
    assert sandbox.canary not in processes
    # No descriptor leads to a host file: the planted inheritable one is not passed on.
    for target in seen["descriptors"].values():
        assert not target.startswith("/") or target.startswith("/dev/"), target
    assert str(sandbox.planted_file) not in json.dumps(seen["descriptors"])
    # The mount table names no project path: the project and var/ are simply not mounted.
    base_directory = str(Path(django_settings.BASE_DIR).resolve())
    var_directory = str(Path(django_settings.VAR_DIR).resolve())
    assert base_directory not in seen["mountinfo"]
    assert var_directory not in seen["mountinfo"]
    assert base_directory not in json.dumps(seen["links"])


# --- The application's files ----------------------------------------------------------------


def application_files() -> list[str]:
    base = Path(django_settings.BASE_DIR).resolve()
    var = Path(django_settings.VAR_DIR).resolve()
    paths = {
        base,
        base / "manage.py",
        base / "config" / "settings.py",
        base / ".venv",
        var,
        var / "db.sqlite3",
        Path("/var/lib/postgresql"),
        Path("/etc/postgresql"),
    }
    # Whatever var/ holds on this machine (generated keys, the development database).
    if var.is_dir():
        paths.update(var.iterdir())
    database_name = str(django_settings.DATABASES["default"].get("NAME") or "")
    if database_name.startswith("/"):
        paths.add(Path(database_name))
    return sorted(str(path) for path in paths)


READ_PATHS = {
    "python": (
        "import os\n"
        "outcome = {}\n"
        "for index, path in enumerate(variables['probe']['paths']):\n"
        "    # Through a symbolic link in /tmp too: a link cannot reach what is not mounted.\n"
        "    link = f'/tmp/link-{index}'\n"
        "    os.symlink(path, link)\n"
        "    for candidate in (path, link):\n"
        "        try:\n"
        "            with open(candidate, 'rb') as file:\n"
        "                file.read(64)\n"
        "            outcome[candidate] = 'read'\n"
        "        except OSError as error:\n"
        "            outcome[candidate] = type(error).__name__\n"
        "        outcome[candidate] += ' exists' if os.path.exists(candidate) else ''\n"
        "return outcome"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "const outcome = {};\n"
        "variables.probe.paths.forEach((path, index) => {\n"
        "  const link = `/tmp/link-${index}`;\n"
        "  fs.symlinkSync(path, link);\n"
        "  for (const candidate of [path, link]) {\n"
        "    try { fs.readFileSync(candidate); outcome[candidate] = 'read'; }\n"
        "    catch (error) { outcome[candidate] = error.code; }\n"
        "    if (fs.existsSync(candidate)) outcome[candidate] += ' exists';\n"
        "  }\n"
        "});\n"
        "return outcome;"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_applications_files_cannot_be_reached(sandbox: Sandbox, language: str):
    files = application_files()
    base = Path(django_settings.BASE_DIR).resolve()
    # The files exist on the host, so "not found" in the sandbox means hidden, not absent.
    assert (base / "manage.py").is_file()
    assert (base / "config" / "settings.py").is_file()
    tricks = []
    for path in (base / "manage.py", base / "config" / "settings.py"):
        tricks += [
            f"/proc/1/root{path}",
            f"/proc/self/root{path}",
            f"/proc/self/cwd/../..{path}",
            f"/tmp/../..{path}",
            f"//{path}",
            f"/sandbox/..{path}",
        ]

    outcome = sandbox.result(language, READ_PATHS[language], {"paths": files + tricks})

    assert len(outcome) == 2 * len(files + tricks)
    reached = {path: result for path, result in outcome.items() if "read" in result.split()}
    assert reached == {}
    visible = {path: result for path, result in outcome.items() if "exists" in result}
    assert visible == {}


# --- The other key ------------------------------------------------------------------------

# Every readable regular file but the read-only system trees is searched: /usr and the base
# Python (several GB, bind-mounted read-only from the host's OS image, where no key can be).
# The needle arrives reversed and base64-encoded, so the plain value is in no payload; a
# control (the used key, written to /tmp by the code) proves the search reads what it walks.
SEARCH = {
    "python": (
        "import base64, os, stat\n"
        "needle = base64.b64decode(variables['probe']['needle'])[::-1]\n"
        "needles = (needle, base64.b64encode(needle))\n"
        "control = variables['token'].encode()\n"
        "with open('/tmp/control.txt', 'wb') as file:\n"
        "    file.write(b'before ' + control + b' after')\n"
        "skipped = {'/usr', '/sandbox/python'}\n"
        "found, control_found, searched = [], [], 0\n"
        "for name, value in os.environ.items():\n"
        "    if any(item in f'{name}={value}'.encode() for item in needles):\n"
        "        found.append('environment: ' + name)\n"
        "for root, directories, files in os.walk('/'):\n"
        "    directories[:] = [name for name in directories\n"
        "                      if os.path.join(root, name) not in skipped]\n"
        "    for name in files:\n"
        "        path = os.path.join(root, name)\n"
        "        try:\n"
        "            if not stat.S_ISREG(os.lstat(path).st_mode):\n"
        "                continue\n"
        "            with open(path, 'rb') as file:\n"
        "                data = file.read(1 << 20)\n"
        "        except OSError:\n"
        "            continue\n"
        "        searched += 1\n"
        "        if any(item in data for item in needles):\n"
        "            found.append(path)\n"
        "        if control in data:\n"
        "            control_found.append(path)\n"
        "return {'searched': searched, 'found': found, 'control_found': control_found}"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "const needle = Buffer.from(variables.probe.needle, 'base64').reverse();\n"
        "const needles = [needle, Buffer.from(needle.toString('base64'))];\n"
        "const control = Buffer.from(variables.token);\n"
        "fs.writeFileSync('/tmp/control.txt', Buffer.concat([\n"
        "  Buffer.from('before '), control, Buffer.from(' after')]));\n"
        "const skipped = new Set(['/usr', '/sandbox/python']);\n"
        "const found = [], controlFound = [];\n"
        "let searched = 0;\n"
        "for (const [name, value] of Object.entries(process.env)) {\n"
        "  const text = Buffer.from(`${name}=${value}`);\n"
        "  if (needles.some((item) => text.includes(item))) found.push('environment: ' + name);\n"
        "}\n"
        "const buffer = Buffer.alloc(1 << 20);\n"
        "const readStart = (path) => {\n"
        "  const descriptor = fs.openSync(path, 'r');\n"
        "  try {\n"
        "    let total = 0;\n"
        "    while (total < buffer.length) {\n"
        "      const count = fs.readSync(descriptor, buffer, total, buffer.length - total, null);\n"
        "      if (count === 0) break;\n"
        "      total += count;\n"
        "    }\n"
        "    return buffer.subarray(0, total);\n"
        "  } finally { fs.closeSync(descriptor); }\n"
        "};\n"
        "const walk = (directory) => {\n"
        "  let entries;\n"
        "  try { entries = fs.readdirSync(directory, {withFileTypes: true}); }\n"
        "  catch (error) { return; }\n"
        "  for (const entry of entries) {\n"
        "    const path = directory === '/' ? '/' + entry.name : directory + '/' + entry.name;\n"
        "    if (skipped.has(path)) continue;\n"
        "    if (entry.isDirectory()) { walk(path); continue; }\n"
        "    if (!entry.isFile()) continue;\n"
        "    let data;\n"
        "    try { data = readStart(path); } catch (error) { continue; }\n"
        "    searched += 1;\n"
        "    if (needles.some((item) => data.includes(item))) found.push(path);\n"
        "    if (data.includes(control)) controlFound.push(path);\n"
        "  }\n"
        "};\n"
        "walk('/');\n"
        "return {searched, found, control_found: controlFound};"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_other_key_is_nowhere_the_code_can_read(sandbox: Sandbox, language: str):
    needle = base64.b64encode(sandbox.other_value[::-1].encode()).decode()

    outcome = sandbox.result(language, SEARCH[language], {"needle": needle})

    assert outcome["found"] == []
    assert "/tmp/control.txt" in outcome["control_found"]
    # /proc alone has hundreds of readable files: a short walk would mean a broken search.
    assert outcome["searched"] > 200
    # The canary the test process holds in its environment is not reachable either.
    canary_needle = base64.b64encode(sandbox.canary[::-1].encode()).decode()
    assert sandbox.result(language, SEARCH[language], {"needle": canary_needle})["found"] == []


# --- Network --------------------------------------------------------------------------------

# The probes first list the network interfaces: should the sandbox share the host's network,
# they stop there (and the test fails) rather than send a DNS query that could leave the
# machine. Inside a network namespace of its own, everything below stays on the sandbox's
# own loopback interface.
NETWORK = {
    "python": (
        "import socket\n"
        "probe = variables['probe']\n"
        "with open('/proc/net/dev') as file:\n"
        "    interfaces = [line.split(':')[0].strip() for line in file.readlines()[2:]]\n"
        "outcome = {'interfaces': interfaces}\n"
        "if set(interfaces) - {'lo'}:\n"
        "    return outcome\n"
        "def attempt(action):\n"
        "    try:\n"
        "        return action()\n"
        "    except OSError as error:\n"
        "        return type(error).__name__\n"
        "def tcp():\n"
        "    socket.create_connection(('127.0.0.1', probe['tcp_port']), timeout=1).close()\n"
        "    return 'connected'\n"
        "def udp():\n"
        "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:\n"
        "        sender.sendto(b'escape', ('127.0.0.1', probe['udp_port']))\n"
        "    return 'sent'\n"
        "def unix():\n"
        "    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:\n"
        "        client.connect('\\0' + probe['abstract_name'])\n"
        "    return 'connected'\n"
        "def dns():\n"
        "    return str(socket.getaddrinfo('example.com', 80))\n"
        "outcome.update(tcp=attempt(tcp), udp=attempt(udp), unix=attempt(unix), dns=attempt(dns))\n"
        "with open('/proc/net/tcp') as file:\n"
        "    outcome['tcp_table'] = file.read()\n"
        "return outcome"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "const net = require('net');\n"
        "const dgram = require('dgram');\n"
        "const dns = require('dns');\n"
        "const probe = variables.probe;\n"
        "const interfaces = fs.readFileSync('/proc/net/dev', 'utf8').split('\\n').slice(2)\n"
        "  .filter((line) => line.includes(':')).map((line) => line.split(':')[0].trim());\n"
        "const outcome = {interfaces};\n"
        "if (interfaces.some((name) => name !== 'lo')) return outcome;\n"
        "const connect = (options) => new Promise((resolve) => {\n"
        "  const socket = net.connect(options, () => {\n"
        "    socket.destroy(); resolve('connected');\n"
        "  });\n"
        "  socket.on('error', (error) => resolve(error.code));\n"
        "  socket.setTimeout(1000, () => { socket.destroy(); resolve('timeout'); });\n"
        "});\n"
        "outcome.tcp = await connect({port: probe.tcp_port, host: '127.0.0.1'});\n"
        "outcome.unix = await connect({path: '\\0' + probe.abstract_name});\n"
        "outcome.udp = await new Promise((resolve) => {\n"
        "  const socket = dgram.createSocket('udp4');\n"
        "  socket.send('escape', probe.udp_port, '127.0.0.1', (error) => {\n"
        "    socket.close(); resolve(error ? error.code : 'sent');\n"
        "  });\n"
        "});\n"
        "outcome.dns = await new Promise((resolve) => dns.lookup('example.com',\n"
        "  (error, address) => resolve(error ? error.code : address)));\n"
        "outcome.tcp_table = fs.readFileSync('/proc/net/tcp', 'utf8');\n"
        "return outcome;"
    ),
}


@dataclass
class Listeners:
    tcp: socket.socket
    udp: socket.socket
    unix: socket.socket
    abstract_name: str

    def tcp_connections(self) -> int:
        return _accepted(self.tcp)

    def unix_connections(self) -> int:
        return _accepted(self.unix)

    def udp_datagrams(self) -> int:
        received = 0
        while True:
            try:
                self.udp.recv(65536)
            except BlockingIOError:
                return received
            received += 1


def _accepted(server: socket.socket) -> int:
    accepted = 0
    while True:
        try:
            connection, _ = server.accept()
        except BlockingIOError:
            return accepted
        connection.close()
        accepted += 1


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    """Servers on the host's loopback (and an abstract Unix socket, which belongs to the
    network namespace too) that the sandbox must not reach."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    abstract_name = f"sandbox-escape-{secrets.token_hex(8)}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + abstract_name)
    unix.listen()
    for server in (tcp, udp, unix):
        server.setblocking(False)
    yield Listeners(tcp, udp, unix, abstract_name)
    for server in (tcp, udp, unix):
        server.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_network_is_unreachable(sandbox: Sandbox, listeners: Listeners, language: str):
    tcp_port = listeners.tcp.getsockname()[1]
    probe = {
        "tcp_port": tcp_port,
        "udp_port": listeners.udp.getsockname()[1],
        "abstract_name": listeners.abstract_name,
    }

    outcome = sandbox.result(language, NETWORK[language], probe)

    # Only a loopback interface of its own: no route out of the sandbox at all.
    assert outcome["interfaces"] == ["lo"]
    assert outcome["tcp"] != "connected"
    assert outcome["unix"] != "connected"
    assert not outcome["dns"][:1].isdigit() and "example" not in outcome["dns"]
    # The sandbox's loopback is not the host's: the host's listener is not even listed.
    assert f":{tcp_port:04X}" not in outcome["tcp_table"]
    assert listeners.tcp_connections() == 0
    assert listeners.unix_connections() == 0
    assert listeners.udp_datagrams() == 0


# --- /dev -----------------------------------------------------------------------------------

DEVICES = {
    "python": (
        "import os, stat\n"
        "kinds = {}\n"
        "for name in os.listdir('/dev'):\n"
        "    mode = os.lstat('/dev/' + name).st_mode\n"
        "    kinds[name] = ('block' if stat.S_ISBLK(mode) else 'char' if stat.S_ISCHR(mode)\n"
        "                   else 'directory' if stat.S_ISDIR(mode) else 'link'\n"
        "                   if stat.S_ISLNK(mode) else 'file')\n"
        "opened = {}\n"
        "for path in variables['probe']['dangerous']:\n"
        "    try:\n"
        "        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))\n"
        "        opened[path] = 'opened'\n"
        "    except OSError as error:\n"
        "        opened[path] = type(error).__name__\n"
        "written = {}\n"
        "targets = ['/dev/' + name for name, kind in kinds.items() if kind == 'char']\n"
        "targets += variables['probe']['new_files']\n"
        "for path in targets:\n"
        "    try:\n"
        "        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o644)\n"
        "        try:\n"
        "            os.write(descriptor, b'escape')\n"
        "            written[path] = 'written'\n"
        "        finally:\n"
        "            os.close(descriptor)\n"
        "    except OSError as error:\n"
        "        written[path] = type(error).__name__\n"
        "return {'kinds': kinds, 'opened': opened, 'written': written}"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "const kinds = {};\n"
        "for (const name of fs.readdirSync('/dev')) {\n"
        "  const stats = fs.lstatSync('/dev/' + name);\n"
        "  kinds[name] = stats.isBlockDevice() ? 'block' : stats.isCharacterDevice() ? 'char'\n"
        "    : stats.isDirectory() ? 'directory' : stats.isSymbolicLink() ? 'link' : 'file';\n"
        "}\n"
        "const opened = {};\n"
        "for (const path of variables.probe.dangerous) {\n"
        "  try {\n"
        "    fs.closeSync(fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK));\n"
        "    opened[path] = 'opened';\n"
        "  } catch (error) { opened[path] = error.code; }\n"
        "}\n"
        "const written = {};\n"
        "const targets = Object.keys(kinds).filter((name) => kinds[name] === 'char')\n"
        "  .map((name) => '/dev/' + name).concat(variables.probe.new_files);\n"
        "const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_NONBLOCK;\n"
        "for (const path of targets) {\n"
        "  try {\n"
        "    const descriptor = fs.openSync(path, flags, 0o644);\n"
        "    try { fs.writeSync(descriptor, 'escape'); written[path] = 'written'; }\n"
        "    finally { fs.closeSync(descriptor); }\n"
        "  } catch (error) { written[path] = error.code; }\n"
        "}\n"
        "return {kinds, opened, written};"
    ),
}
DANGEROUS_DEVICES = [
    "/dev/mem",
    "/dev/kmem",
    "/dev/port",
    "/dev/kmsg",
    "/dev/vda",
    "/dev/sda",
    "/dev/nvme0n1",
    "/dev/loop0",
    "/dev/mapper/control",
    "/dev/fuse",
    "/dev/net/tun",
    "/dev/kvm",
    "/dev/console",
]


@pytest.mark.parametrize("language", LANGUAGES)
def test_dev_holds_only_harmless_devices_and_takes_no_new_files(sandbox: Sandbox, language: str):
    new_files = [
        f"/dev/escape-{sandbox.marker}",
        f"/dev/shm/escape-{sandbox.marker}",
        f"/dev/pts/escape-{sandbox.marker}",
    ]

    outcome = sandbox.result(
        language, DEVICES[language], {"dangerous": DANGEROUS_DEVICES, "new_files": new_files}
    )

    devices = {name for name, kind in outcome["kinds"].items() if kind == "char"}
    assert devices == HARMLESS_DEVICES
    assert "block" not in outcome["kinds"].values()
    assert "opened" not in outcome["opened"].values(), outcome["opened"]
    written = {path for path, result in outcome["written"].items() if result == "written"}
    assert written == {f"/dev/{name}" for name in WRITE_SINKS}
    # /dev/full refuses every write (ENOSPC) and no terminal is attached (ENXIO).
    assert outcome["written"]["/dev/full"] in ("OSError", "ENOSPC")
    assert outcome["written"]["/dev/tty"] in ("OSError", "ENXIO")
    for path in new_files:
        assert not Path(path).exists()


# --- Resource bombs -------------------------------------------------------------------------

# Every bomb first starts a sleeping child carrying the marker, so that the check after the
# test sees whether the whole process tree died with the run.
SLEEPER = {
    "python": (
        "import subprocess\n"
        "subprocess.Popen(['sleep', variables['probe']], stdin=subprocess.DEVNULL,\n"
        "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    ),
    "javascript": (
        "require('child_process').spawn('sleep', [variables.probe], {stdio: 'ignore'});\n"
    ),
}
BOMBS = [
    (
        "python",
        "fork bomb",
        # Every child becomes a sleeper with the marker: the likeliest process to outlive a run.
        "import os\n"
        "while True:\n"
        "    if os.fork() == 0:\n"
        "        os.execv('/bin/sleep', ['sleep', variables['probe']])",
        "Process limit reached (at most 16 processes and threads)",
    ),
    (
        "javascript",
        "fork bomb",
        "const childProcess = require('child_process');\n"
        "for (let count = 0; count < 1000; count++) {\n"
        "  childProcess.spawn('sleep', [variables.probe], {stdio: 'ignore'});\n"
        "  await new Promise((resolve) => setImmediate(resolve));\n"
        "}",
        "Process limit reached (at most 16 processes and threads)",
    ),
    (
        "python",
        "memory bomb",
        "data = bytearray()\nwhile True:\n    data += bytes(10_000_000)",
        "Memory limit of 200 MB exceeded",
    ),
    (
        "javascript",
        "memory bomb",
        "const parts = [];\nwhile (true) { parts.push(Buffer.alloc(10_000_000, 1)); }",
        "Memory limit of 200 MB exceeded",
    ),
    ("python", "CPU loop", "while True:\n    pass", "CPU time limit of 1 s exceeded"),
    ("javascript", "CPU loop", "while (true) {}", "CPU time limit of 1 s exceeded"),
    (
        "python",
        "100 MB of output",
        "for _ in range(100):\n    print('x' * 1_000_000)",
        "Output limit of 1 MiB exceeded (logs)",
    ),
    (
        "javascript",
        "100 MB of output",
        "for (let count = 0; count < 100; count++) console.log('x'.repeat(1e6));",
        "Output limit of 1 MiB exceeded (logs)",
    ),
    (
        "python",
        "deep recursion",
        "def dive(depth):\n    return dive(depth + 1) + 1\nreturn dive(0)",
        "RecursionError: maximum recursion depth exceeded",
    ),
    (
        # With the interpreter's guard lifted, recursion in C (the JSON encoder) overflows
        # the C stack: the interpreter crashes inside the sandbox, and the step says so.
        "python",
        "deep recursion in C without the guard",
        "import json, sys\n"
        "sys.setrecursionlimit(10**9)\n"
        "nested = []\n"
        "for _ in range(10**6):\n"
        "    nested = [nested]\n"
        "return json.dumps(nested)",
        "The code was killed by signal SIGSEGV before returning.",
    ),
    (
        "javascript",
        "deep recursion",
        "const dive = (depth) => dive(depth + 1) + 1;\nreturn dive(0);",
        "RangeError: Maximum call stack size exceeded",
    ),
]


@pytest.mark.parametrize(
    ("language", "code", "message"),
    [
        pytest.param(language, code, message, id=f"{language}-{name}")
        for language, name, code, message in BOMBS
    ],
)
def test_a_resource_bomb_fails_with_its_limit_and_leaves_nothing(
    sandbox: Sandbox, language: str, code: str, message: str
):
    outcome = sandbox.run(language, SLEEPER[language] + code, sandbox.marker)

    assert outcome["status"] == "failed", outcome
    assert outcome["error"].startswith(message), outcome["error"]
    # The host is unaffected: the next run works as usual (the fixture checks the processes).
    assert (
        sandbox.result(language, "return 6 * 7" if language == "python" else "return 6 * 7;") == 42
    )


DISK_BOMB = {
    "python": (
        "import os\n"
        "written = 0\n"
        "try:\n"
        "    for index in range(10_000):\n"
        "        with open(f'/tmp/fill-{index}', 'wb') as file:\n"
        "            written += file.write(bytes(8 << 20))\n"
        "except OSError as error:\n"
        "    return {'error': type(error).__name__, 'written': written}"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "let written = 0;\n"
        "try {\n"
        "  for (let index = 0; index < 10000; index++) {\n"
        "    fs.writeFileSync(`/tmp/fill-${index}`, Buffer.alloc(8 << 20));\n"
        "    written += 8 << 20;\n"
        "  }\n"
        "} catch (error) { return {error: error.code, written}; }"
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_filling_tmp_stops_at_its_size_and_the_code_observes_it(sandbox: Sandbox, language: str):
    outcome = sandbox.result(language, DISK_BOMB[language])

    # /tmp is a tmpfs of SANDBOX_MEMORY_MB (200 MB): many files cannot pass its size either.
    assert outcome["error"] in ("OSError", "ENOSPC"), outcome
    assert outcome["written"] <= 200 * 1024 * 1024


# --- Writing outside /tmp --------------------------------------------------------------------

WRITE = {
    "python": (
        "import os\n"
        "probe = variables['probe']\n"
        "os.symlink(probe['project'], '/tmp/project-link')\n"
        "outcome = {}\n"
        "for path in probe['paths']:\n"
        "    try:\n"
        "        with open(path, 'w') as file:\n"
        "            file.write('escaped')\n"
        "        outcome[path] = 'written'\n"
        "    except OSError as error:\n"
        "        outcome[path] = type(error).__name__\n"
        "try:\n"
        "    os.makedirs(probe['project'] + '/escape-directory')\n"
        "    outcome['makedirs'] = 'created'\n"
        "except OSError as error:\n"
        "    outcome['makedirs'] = type(error).__name__\n"
        "return outcome"
    ),
    "javascript": (
        "const fs = require('fs');\n"
        "const probe = variables.probe;\n"
        "fs.symlinkSync(probe.project, '/tmp/project-link');\n"
        "const outcome = {};\n"
        "for (const path of probe.paths) {\n"
        "  try { fs.writeFileSync(path, 'escaped'); outcome[path] = 'written'; }\n"
        "  catch (error) { outcome[path] = error.code; }\n"
        "}\n"
        "try {\n"
        "  fs.mkdirSync(probe.project + '/escape-directory', {recursive: true});\n"
        "  outcome.makedirs = 'created';\n"
        "} catch (error) { outcome.makedirs = error.code; }\n"
        "return outcome;"
    ),
}


def names_with(marker: str, directories: list[Path]) -> list[str]:
    """Files or folders whose name holds the marker, in these folders (not recursive)."""
    found = []
    for directory in directories:
        try:
            found += [str(path) for path in directory.iterdir() if marker in path.name]
        except OSError:
            continue
    return found


@pytest.mark.parametrize("language", LANGUAGES)
def test_writing_outside_tmp_fails_and_nothing_appears_on_the_host(sandbox: Sandbox, language: str):
    marker = sandbox.marker
    base = Path(django_settings.BASE_DIR).resolve()
    var = Path(django_settings.VAR_DIR).resolve()
    name = f"escape-{marker}"
    outside = [
        f"/{name}",
        f"/usr/{name}",
        f"/usr/local/{name}",
        f"/usr/bin/{name}",
        f"/tmp/../../{name}",
        f"/tmp/../usr/{name}",
        f"/tmp/../../../../usr/local/{name}",
        f"{base}/{name}",
        f"{var}/{name}",
        f"/proc/1/root/{name}",
        f"/proc/self/root/usr/{name}",
        f"/proc/self/cwd/../{name}",
        f"/sandbox/{name}",
        f"/sandbox/python/{name}",
        "/sandbox/runner.py",
        f"/proc/{name}",
        f"/etc/{name}",
        f"/root/{name}",
        f"/tmp/project-link/{name}",
    ]
    inside = f"/tmp/inside-{marker}"

    outcome = sandbox.result(
        language, WRITE[language], {"paths": [*outside, inside], "project": str(base)}
    )

    assert outcome.pop(inside) == "written"
    made = outcome.pop("makedirs")
    # A checkout under /tmp (CI clones may live there) is shadowed by the sandbox's own
    # tmpfs: the folder is then made in that tmpfs, which the checks below prove.
    if not base.is_relative_to("/tmp"):
        assert made != "created"
    assert {path: result for path, result in outcome.items() if result == "written"} == {}
    # Nothing reached the host: not the folders written to, not the host's own /tmp (the
    # sandbox's /tmp is a tmpfs of its own), not anywhere in the project.
    host_directories = [Path("/"), Path("/usr"), Path("/usr/local"), Path("/usr/bin")]
    host_directories += [Path("/tmp"), Path("/etc"), Path("/root"), base, var]
    assert names_with(marker, host_directories) == []
    assert not (base / "escape-directory").exists()
    for root, directories, files in os.walk(base):
        directories[:] = [item for item in directories if item not in {".venv", ".git"}]
        assert not [item for item in directories + files if marker in item], root


# --- Escaping the record of the run ----------------------------------------------------------

# Text PostgreSQL cannot store (NUL in text and jsonb) or that is not text at all (an
# unpaired surrogate): if the code could make the run fail to be recorded, the key would have
# been used with no run and no "used" audit event.
UNSTORABLE_OUTPUT = [
    ("python", "print('log\\x00line')\nreturn {'text': 'a\\x00b', 'key\\x00': 1}", "succeeded"),
    (
        "javascript",
        "console.log('log\\u0000line');\nreturn {text: 'a\\u0000b', 'key\\u0000': 1};",
        "succeeded",
    ),
    # (Python's own stdout refuses to print a surrogate: only the result carries one.)
    ("python", "return ['\\ud800', {'\\udfff': '\\udfff\\ud800'}]", "succeeded"),
    (
        "javascript",
        "console.log('\\ud800');\nreturn ['\\ud800', {'\\udfff': '\\udfff\\ud800'}];",
        "succeeded",
    ),
    ("python", "raise ValueError('bad\\x00value \\ud800')", "failed"),
    ("javascript", "throw new Error('bad\\u0000value \\ud800');", "failed"),
]


@pytest.mark.parametrize(("language", "code", "status"), UNSTORABLE_OUTPUT)
def test_unstorable_text_in_the_output_cannot_keep_the_run_from_being_recorded(
    sandbox: Sandbox, language: str, code: str, status: str
):
    outcome = sandbox.run(language, code)

    assert outcome["status"] == status, outcome
    stored = api_client_for(sandbox.actor).get(f"/api/v1/runs/{outcome['run_id']}/").json()
    assert stored["steps"][0]["status"] == status
    # The key was resolved for the code: its use is on record, with this run.
    used = AuditEvent.objects.filter(secret_key_id=sandbox.used_key.pk, action=AuditAction.USED)
    assert [event.changes["run_id"] for event in used] == [outcome["run_id"]]
    # What could not be kept is replaced, visibly, rather than dropped.
    kept = json.dumps(stored["steps"][0], ensure_ascii=False)
    assert "\\u0000" not in kept
    assert not any("\ud800" <= character <= "\udfff" for character in kept)
    assert "\ufffd" in kept
