'use strict';
// Runs one JavaScript "Run Code" action inside the sandbox; see workflows/sandbox/__init__.py.
//
// Reads the JSON payload {"code", "variables", "result_fd"} from stdin and writes exactly one
// JSON envelope to the result pipe: {"status": "ok", "result": ...} or
// {"status": "error", "message": "...", "limit": null | "memory" | "processes"}.
const fs = require('fs');
const vm = require('vm');
const util = require('util');

const CODE_FILENAME = 'code.js';

// Node writes to pipes asynchronously once the pipe is full, and process.exit() would drop
// whatever is still queued; blocking writes keep every log line and its order.
for (const stream of [process.stdout, process.stderr]) {
  if (stream._handle && typeof stream._handle.setBlocking === 'function') {
    stream._handle.setBlocking(true);
  }
}

const payload = JSON.parse(fs.readFileSync(0, 'utf8'));
const resultFd = payload.result_fd;
let reported = false;

function report(json) {
  if (reported) return;
  reported = true;
  const data = Buffer.from(json, 'utf8');
  let offset = 0;
  while (offset < data.length) offset += fs.writeSync(resultFd, data, offset);
  fs.closeSync(resultFd);
}

function failure(message, limit = null) {
  return JSON.stringify({ status: 'error', message, limit });
}

function describe(error) {
  if (!(error instanceof Error)) {
    return failure(`Uncaught ${util.inspect(error)}`);
  }
  const stack = String(error.stack || '');
  if (error instanceof SyntaxError && stack.startsWith(`${CODE_FILENAME}:`)) {
    // A compile error: the stack starts with "code.js:<line>", the source line and a caret.
    const [location, source, caret] = stack.split('\n');
    const line = location.slice(CODE_FILENAME.length + 1);
    return failure(`SyntaxError: ${error.message} (line ${line})\n${source}\n${caret}`);
  }
  let message = `${error.name}: ${error.message}`;
  const frames = stack.split('\n').filter((frame) => frame.includes(`${CODE_FILENAME}:`));
  if (frames.length > 0) message += `\n${frames.join('\n')}`;
  if (error instanceof RangeError && /allocation failed/i.test(error.message)) {
    return failure(message, 'memory');
  }
  if (error.code === 'EAGAIN' && /^(spawn|fork)/.test(String(error.syscall || ''))) {
    // spawn() fails with EAGAIN once RLIMIT_NPROC is reached.
    return failure(message, 'processes');
  }
  return failure(message);
}

function succeed(result) {
  if (result === undefined) {
    report('{"status":"ok","result":null}');
  } else {
    let json;
    try {
      json = JSON.stringify(result);
    } catch (error) {
      report(failure(`The result is not JSON-serialisable: ${error.message}`));
      process.exit(0);
    }
    if (json === undefined) {
      report(failure(`The result is not JSON-serialisable: a ${typeof result} has no JSON form`));
    } else {
      report(`{"status":"ok","result":${json}}`);
    }
  }
  // Timers or servers the code left behind must not keep the run alive after it returned.
  process.exit(0);
}

function fail(error) {
  report(describe(error));
  process.exit(0);
}

process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);
process.on('beforeExit', () => {
  report(failure('The code never finished: it awaits a promise that never settles.'));
});
process.on('exit', (status) => {
  report(failure(`The code exited (process.exit(${status})) before returning a value.`));
});

let main;
try {
  // The wrapper's first line is line 0, so error positions are the code's own lines.
  const script = new vm.Script(`(async function (variables, require) {\n${payload.code}\n})`, {
    filename: CODE_FILENAME,
    lineOffset: -1,
  });
  main = script.runInThisContext();
} catch (error) {
  fail(error);
}
main(payload.variables, require).then(succeed, fail);
