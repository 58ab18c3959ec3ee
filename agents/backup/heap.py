"""Keep the memory a restore or a data check frees, for its next buffers.

Every blob a restore or `check --read-data` reads, decrypts and decompresses lands in
a fresh buffer of up to a few MiB, freed a moment later. glibc's malloc hands such
memory back to the kernel (large blocks are mapped and unmapped, the reader threads'
arenas trimmed), so each new buffer is faulted in and zeroed again: 4-7 million page
faults in a restore of 10 GiB, as much system time as user time. Raising the trim and
mapping thresholds keeps freed memory for reuse: at 10 GiB / 200,000 files the restore
went 47.5-51.2 s -> 41.3-41.7 s and the check 35.3-38.0 s -> 28.9-29.7 s, for about
30 MiB more peak memory (`docs/performance.md`). Only these short-lived commands
call it, never the agent's long-running process.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
_SETTINGS = ((_M_TRIM_THRESHOLD, 512 << 20), (_M_TOP_PAD, 64 << 20), (_M_MMAP_THRESHOLD, 64 << 20))


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; False where the C library
    has no `mallopt` (musl, other systems) or refuses a setting: a restore or check
    then runs as before, only slower."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _SETTINGS)
