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
for no more time. Only these short-lived commands call it, never the agent's
long-running process.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h


def keep_freed_memory(pad: int = 64 << 20, trim: int | None = 512 << 20) -> bool:
    """Tell glibc's malloc to keep freed memory for reuse: `pad` bytes kept at the top of
    each heap it trims and blocks below `pad` taken from the heaps, not mapped alone;
    freed memory given back only past `trim` (None: glibc's default). False where the C
    library has no `mallopt` (musl, other systems) or refuses a setting: the command
    then runs as before, only slower."""
    settings = [(_M_TOP_PAD, pad), (_M_MMAP_THRESHOLD, pad)]
    if trim is not None:
        settings.insert(0, (_M_TRIM_THRESHOLD, trim))
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in settings)
