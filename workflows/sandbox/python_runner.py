"""Runs one Python "Run Code" action inside the sandbox; see workflows/sandbox/__init__.py.

Started as `python -I -S -B -u /sandbox/runner.py` with the base interpreter, so only the
standard library is available here: no site-packages, no project code. Reads the JSON
payload `{"code", "variables", "result_fd"}` from stdin and writes exactly one JSON envelope
to the result pipe: `{"status": "ok", "result": ...}` or
`{"status": "error", "message": "...", "limit": null | "memory" | "processes"}`.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import errno
import json
import linecache
import os
import sys
import traceback
from types import CodeType
from typing import Any

CODE_FILENAME = "<code>"


def main() -> None:
    payload = json.loads(sys.stdin.buffer.read())
    # The code must not read the payload again, nor hand the result pipe to its children.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    result_fd = payload["result_fd"]
    os.set_inheritable(result_fd, False)
    runner_pid = os.getpid()

    try:
        envelope = run(payload["code"], payload["variables"])
    except BaseException as error:  # noqa: B036 - SystemExit and friends are failures too
        envelope = describe_failure(error)
    if os.getpid() != runner_pid:
        # A child forked by the code finished the function too: only the original
        # process reports, so children cannot forge or garble the envelope.
        flush_output()
        os._exit(0)
    write_envelope(result_fd, envelope)


def run(code: str, variables: dict[str, Any]) -> str:
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile_code(code), namespace)
    result = namespace["main"](variables)
    try:
        # allow_nan=False: NaN and Infinity are not JSON, the caller could not parse them.
        return json.dumps({"status": "ok", "result": result}, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        return failure(f"The result is not JSON-serialisable: {error}")


def compile_code(code: str) -> CodeType:
    """The code becomes the body of `def main(variables)`, keeping its own line numbers."""
    linecache.cache[CODE_FILENAME] = (len(code), None, code.splitlines(True), CODE_FILENAME)
    module = ast.parse(code, filename=CODE_FILENAME)
    wrapper = ast.parse("def main(variables):\n    pass\n", filename=CODE_FILENAME)
    function = wrapper.body[0]
    assert isinstance(function, ast.FunctionDef)
    if module.body:
        function.body = module.body
    return compile(wrapper, CODE_FILENAME, "exec")


def describe_failure(error: BaseException) -> str:
    if isinstance(error, SyntaxError) and error.filename == CODE_FILENAME:
        lines = traceback.format_exception_only(type(error), error)
        location = "".join(lines[1:-1]).rstrip()
        message = f"{lines[-1].strip()} (line {error.lineno})"
        return failure(f"{message}\n{location}" if location else message)

    summary = "".join(traceback.format_exception_only(type(error), error)).strip()
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename == CODE_FILENAME
    ]
    message = summary
    if frames:
        message += "\nTraceback (most recent call last):\n"
        message += "".join(traceback.format_list(frames)).rstrip()

    if isinstance(error, MemoryError):
        return failure(message, limit="memory")
    if (isinstance(error, OSError) and error.errno == errno.EAGAIN) or (
        isinstance(error, RuntimeError) and "can't start new thread" in str(error)
    ):
        # fork(), subprocess and thread creation fail with EAGAIN at RLIMIT_NPROC.
        return failure(message, limit="processes")
    return failure(message)


def failure(message: str, limit: str | None = None) -> str:
    return json.dumps({"status": "error", "message": message, "limit": limit})


def flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken stream must not stop the result from being reported.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def write_envelope(result_fd: int, envelope: str) -> None:
    flush_output()
    view = memoryview(envelope.encode())
    while view:
        written = os.write(result_fd, view)
        view = view[written:]
    os.close(result_fd)
    # Threads the code started must not keep the run alive after it returned.
    os._exit(0)


if __name__ == "__main__":
    main()
