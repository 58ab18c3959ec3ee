"""`locks.process_exists`, which decides that a lock of this host is stale at once, answers
as psutil does for every kind of ID a lock can hold, and errs towards alive."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading

import psutil
import pytest

from agents.backup.locks import process_exists
from tests.support import unprivileged


def test_agrees_with_psutil_on_live_dead_and_thread_ids() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its ID names no process now
    started = threading.Event()
    stop = threading.Event()
    tid: list[int] = []

    def run() -> None:
        tid.append(threading.get_native_id())
        started.set()
        stop.wait(10)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        started.wait(10)
        ids = {"self": os.getpid(), "init": 1, "reaped child": child.pid, "thread": tid[0]}
        for name, pid in ids.items():
            assert process_exists(pid) == psutil.pid_exists(pid), name
        assert process_exists(os.getpid()) and not process_exists(child.pid)
        assert not process_exists(tid[0])  # a thread's ID is not a process's
    finally:
        stop.set()
        thread.join()


def test_ids_it_cannot_judge_count_as_alive() -> None:
    # a lock is then only aged out, never broken while its holder might run; True is an
    # int to Python and kill(True) signals pid 1, but no /proc/True names it (a forged
    # lock body once passed for a dead holder this way)
    for pid in (0, -1, 2**62, True, False):
        assert process_exists(pid), pid


def test_a_live_process_stays_alive_where_proc_shows_nothing() -> None:
    # /proc empty (a tmpfs over it, in a mount namespace of its own): kill() proves the
    # process is there, and nothing proves it is a thread, so it exists; psutil says no
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private /proc")
    probe = (
        "import os; from agents.backup.locks import process_exists;"
        "print(process_exists(1), process_exists(os.getpid()), process_exists(os.getppid()))"
    )
    script = (
        f"mount -t tmpfs none /proc && exec {shlex.quote(sys.executable)} -c {shlex.quote(probe)}"
    )
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    if out.returncode != 0 and "mount" in out.stderr:
        pytest.skip(f"no private mount here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]


def test_another_users_process_exists_for_a_service_user() -> None:
    # the agent runs as a service user: kill() then answers "not permitted" for root's
    # processes, which are alive
    probe = (
        "import os, psutil; from agents.backup.locks import process_exists;"
        "print(process_exists(1), psutil.pid_exists(1), process_exists(os.getppid()))"
    )
    out = unprivileged.run(unprivileged.runner_or_skip(), ["-c", probe])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]
