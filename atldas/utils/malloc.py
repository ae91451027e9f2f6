"""Freed memory kept for reuse: glibc's malloc tuned so that large tensors do not page-fault.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
gives it back with ``munmap`` when it is freed. A 1024x1024 forward of ``cheapmatting`` allocates
hundreds of such tensors, so every forward touches gigabytes of new pages that the kernel must
fault in and zero: measured on this project's 2-core machines (one thread,
``experiments/bench_malloc.py``), 2.2 million minor page faults and 7-8 s of system time in a
15-19 s forward at 2048^2, 0.25-0.35 million faults and 0.8-1.2 s at 1024^2.

:func:`keep_freed_memory` turns that off for the process: no ``mmap`` for single allocations
(``M_MMAP_MAX`` 0) and no trimming of the heap's top (``M_TRIM_THRESHOLD``), so freed blocks are
reused by the next forward without a fault. The process keeps its peak memory until it exits,
which is what a command-line run does anyway; results are bit for bit the same (only where the
memory comes from changes). The ``atldas`` command calls it before it runs a verb; in Python, call
it yourself. It does nothing where the C library is not glibc, when the environment already tunes
these knobs (``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_TOP_PAD_``, or ``glibc.malloc`` tunables), or when ``ATLDAS_MALLOC=system``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["keep_freed_memory"]

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

#: Environment variables that tune what :func:`keep_freed_memory` would change.
_USER_KNOBS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc malloc to keep and reuse freed memory (see the module docstring); returns whether
    the process runs with it now. Idempotent."""
    global _applied
    if _applied:
        return True
    if os.environ.get("ATLDAS_MALLOC", "").lower() == "system":
        return False
    if any(k in os.environ for k in _USER_KNOBS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False  # the user tunes these: leave them
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - no usable C library
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = ok and mallopt(_M_TRIM_THRESHOLD, -1) == 1  # -1: never give the top of the heap back (mallopt(3))
    ok = ok and mallopt(_M_TOP_PAD, 64 << 20) == 1  # grow the heap 64 MiB at a time
    _applied = ok
    return ok
