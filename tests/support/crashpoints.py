"""Kill a command after its k-th storage operation: the harness behind the crash matrix.

A command runs in a child forked from a clean, single-threaded fork server that has
already imported opsagent (so a trial costs milliseconds, not an interpreter start).
In the child, every backend's `put`, `put_file` and `delete` are wrapped: each stored
object and each deleted key is one operation, and after the k-th the child sends itself
SIGKILL:
no `finally`, no lock release, no cleanup, exactly like `kill -9` or a power cut
between two requests. Deletes of several keys are split into one call per key, so a
kill can land between any two of them (an S3 batch delete is not atomic either).
With k = 0 the command runs to the end and the child reports how many operations it
made, which is how the matrix knows every k to try.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["agents.cli", "agents.backup.storage.s3", "boto3"])


@dataclass(frozen=True)
class Outcome:
    killed: bool  # died by SIGKILL after its crash point
    exit_code: int | None  # the command's own exit code when it finished
    operations: int  # storage operations made (up to the kill)
    output: str


def run(argv: Sequence[str], crash_after: int = 0, env: dict[str, str] | None = None) -> Outcome:
    """Run `opsagent ARGV` in a forked child that dies by SIGKILL after `crash_after`
    storage operations (0: never)."""
    reader, writer = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(target=_child, args=(list(argv), crash_after, env or {}, writer))
    child.start()
    writer.close()
    messages: list[tuple[str, object]] = []
    try:
        while True:
            messages.append(reader.recv())
    except EOFError:
        pass
    child.join(300)
    if child.exitcode is None:
        child.kill()
        raise TimeoutError(f"opsagent {' '.join(argv)} did not finish in 300 s")
    operations = max((int(v) for k, v in messages if k == "op"), default=0)
    output = "".join(str(v) for k, v in messages if k == "out")
    code = next((int(v) for k, v in messages if k == "exit"), None)  # type: ignore[call-overload]
    return Outcome(child.exitcode == -signal.SIGKILL, code, operations, output)


def _child(argv: list[str], crash_after: int, env: dict[str, str], pipe) -> None:  # type: ignore[no-untyped-def]
    from agents.backup.storage.local import LocalStorage
    from agents.backup.storage.s3 import S3Storage

    os.environ.update(env)
    count = 0
    lock = threading.Lock()

    def operation_done() -> None:
        nonlocal count
        with lock:
            count += 1
            pipe.send(("op", count))
            if crash_after and count >= crash_after:
                os.kill(os.getpid(), signal.SIGKILL)

    for cls in (LocalStorage, S3Storage):
        put, delete = cls.put, cls.delete

        def counted_put(self, key, data, *args, _put=put, **kwargs):  # type: ignore[no-untyped-def]
            _put(self, key, data, *args, **kwargs)
            operation_done()

        def counted_delete(self, keys, verify=True, *, _delete=delete):  # type: ignore[no-untyped-def]
            for key in keys:
                _delete(self, [key], verify)
                operation_done()

        cls.put = counted_put  # type: ignore[method-assign]
        cls.delete = counted_delete  # type: ignore[method-assign]

    put_file = LocalStorage.put_file  # a pack spooled to a file: one stored object too

    def counted_put_file(self, key, handle, *args, **kwargs):  # type: ignore[no-untyped-def]
        put_file(self, key, handle, *args, **kwargs)
        operation_done()

    LocalStorage.put_file = counted_put_file  # type: ignore[method-assign]

    from agents.cli import cli

    out = io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(out):
        try:
            cli.main(args=argv, prog_name="opsagent", standalone_mode=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:
            out.write(f"uncaught: {exc!r}")
            code = 99
    pipe.send(("out", out.getvalue()))
    pipe.send(("exit", code))
    pipe.close()
    os._exit(0)
