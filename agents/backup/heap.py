"""Keep the memory a restore or a data check frees, for its next buffers.

Every blob a restore or `check --read-data` reads, decrypts and decompresses lands in
a fresh buffer of up to a few MiB, freed a moment later. glibc's malloc hands such
memory back to the kernel (large blocks are mapped and unmapped, the reader threads'
arenas trimmed), so each new buffer is faulted in and zeroed again: 4-7 million page
faults in a restore of 10 GiB, as much system time as user time. Raising the trim and
mapping thresholds keeps freed memory for reuse: at 10 GiB / 200,000 files the restore
went 47.5-51.2 s -> 41.3-41.7 s and the check 35.3-38.0 s -> 28.9-29.7 s, for about
30 MiB more peak memory (`docs/performance.md`). A backup churns the same way (each
chunk read, compressed and encrypted into new buffers: a million page faults at 1 GiB);
it keeps less (`pad=32 MiB`, no trim threshold): 6.6-6.8 s -> 4.5-4.8 s for a first
backup of 1 GiB, for 16 MiB more peak memory, where the restore's settings took 39 MiB
for no more time. The agent's long-running process keeps freed memory only while a
backup, prune or restore test runs (`memory_kept_for_job`), and gives it back after.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8  # malloc.h
_GLIBC_DEFAULT = 128 << 10  # glibc's trim threshold and top pad
MAPPING_THRESHOLD = 256 << 10  # every command's own (`agents.cli._tune_malloc`)
_TRIM_BLOCK = 96 << 10  # freed, trims its arena (64 KiB or more), not mapped (< 128 KiB)
_jobs = 0  # jobs inside `memory_kept_for_job`
_kept = False  # and whether it took
_jobs_lock = threading.Lock()


def keep_freed_memory(pad: int = 64 << 20, trim: int | None = 512 << 20) -> bool:
    """Tell glibc's malloc to keep freed memory for reuse: `pad` bytes kept at the top of
    each heap it trims and blocks below `pad` taken from the heaps, not mapped alone;
    freed memory given back only past `trim` (None: glibc's default). False where the C
    library has no `mallopt` (musl, other systems) or refuses a setting: the command
    then runs as before, only slower."""
    settings = [(_M_TOP_PAD, pad), (_M_MMAP_THRESHOLD, pad)]
    if trim is not None:
        settings.insert(0, (_M_TRIM_THRESHOLD, trim))
    return _mallopt(settings)


@contextmanager
def memory_kept_for_job() -> Iterator[bool]:
    """The restore's settings while a job runs in the agent's long-running process (a
    backup, prune or restore test: 3.2 million page faults for a restore test of 384
    MiB otherwise), then the command's settings again and freed memory handed back
    (`malloc_trim`), so the agent does not keep a job's buffers between jobs. Jobs
    that overlap share it: the last one out gives the memory back."""
    global _jobs, _kept
    with _jobs_lock:
        _jobs += 1
        if _jobs == 1:
            _kept = keep_freed_memory()
        kept = _kept
    try:
        yield kept
    finally:
        with _jobs_lock:
            _jobs -= 1
            if _jobs == 0 and _kept:
                give_memory_back()


def give_memory_back() -> bool:
    """The settings every command starts with (glibc's trim threshold and top pad, the
    CLI's fixed mapping threshold), and every arena's free memory
    returned to the kernel; False where that cannot be done (see `keep_freed_memory`)."""
    libc = _libc()
    if libc is None or not _mallopt(
        [
            (_M_TRIM_THRESHOLD, _GLIBC_DEFAULT),
            (_M_TOP_PAD, _GLIBC_DEFAULT),
            (_M_MMAP_THRESHOLD, MAPPING_THRESHOLD),
        ]
    ):
        return False
    try:
        libc.malloc_trim(ctypes.c_size_t(0))
    except AttributeError:
        return False
    try:
        _trim_thread_arenas()
    except Exception:  # never the job's failure: its memory is only kept longer
        return False
    return True


def _trim_thread_arenas() -> None:
    """Make glibc trim the arenas the job's threads used. `malloc_trim` frees the main
    heap's top but only the bins of other arenas, whose tops (and whole spare heaps)
    glibc trims when a block is freed into them; the job's threads are gone. So as
    many threads as glibc may make arenas (8 a core; under the agent's cap of two they
    share them in turn) each take an arena, as a new thread does, and free a block
    there (large enough to trim, below the mapping threshold), all holding theirs
    until every one has."""
    count = 8 * (os.cpu_count() or 1)
    barrier = threading.Barrier(count)

    def poke() -> None:
        block = bytearray(_TRIM_BLOCK)
        del block
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)

    started = []
    try:
        for _ in range(count):
            thread = threading.Thread(target=poke, name="arena-trim", daemon=True)
            thread.start()
            started.append(thread)
    except RuntimeError:  # no more threads (a task limit): those started stop waiting
        barrier.abort()
    for thread in started:
        thread.join()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc by its soname; another C library by `find_library`, which runs
    `ldconfig -p` (a fork of this process) and so is asked only when that fails."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        pass
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def fix_mapping_threshold() -> bool:
    """Every command's mapping threshold (`agents.cli._tune_malloc`)."""
    return _mallopt([(_M_MMAP_THRESHOLD, MAPPING_THRESHOLD)])


def limit_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas. glibc gives new threads arenas of their own (up to 8 per
    core); with a worker thread per job run, freed memory stays spread over them and the
    agent's RSS climbs for hours before it levels off. Returns whether the cap was set."""
    return _mallopt([(_M_ARENA_MAX, arenas)])


def _mallopt(settings: list[tuple[int, int]]) -> bool:
    mallopt = getattr(_libc(), "mallopt", None)  # None: no C library, or not glibc's
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in settings)
