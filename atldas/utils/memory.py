"""How much memory this machine has free, and a one-line refusal when an estimate does not fit.

Memory guards estimate what a command will allocate (an image's pixels, a network's activations)
before allocating it, and compare with :func:`available_bytes`; a job that cannot fit is refused
with one line naming the size, the estimate, what is available and the flag that helps, instead of
dying in the allocator or being killed by the kernel.
"""

from __future__ import annotations

import os

from atldas.errors import DataError

__all__ = ["available_bytes", "bytes_text", "require"]


def available_bytes() -> int:
    """Memory available to a new allocation, in bytes: ``MemAvailable`` of ``/proc/meminfo`` (Linux;
    a cgroup limit lower than that counts), else the physical memory."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            avail = 2**62
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            avail = min(avail, int(text))
    return int(avail)


def bytes_text(n: float) -> str:
    """``n`` bytes as text to three significant figures (``512 B``, ``3.4 KiB``, ``120 MiB``, ``2.5 GiB``):
    two small sizes never read the same (a free-space message said "0 MiB needed, 0 MiB free")."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            v = n / size
            return f"{v:.3g} {unit}" if v < 999.5 else f"{v:.0f} {unit}"  # 999.7 as 1000, not 1e+03
    return f"{n:.0f} B"


def require(estimate: float, *, what: str, hint: str) -> None:
    """Raise DataError when ``estimate`` bytes exceed what is available.

    Args:
        estimate: bytes the work will allocate.
        what: the work, e.g. ``"predict at 10000x10000 with cheapmatting"``.
        hint: what helps, e.g. ``"use --max-size 2048"``.
    """
    avail = available_bytes()
    if estimate > avail:
        raise DataError(f"{what} needs about {bytes_text(estimate)} of memory, {bytes_text(avail)} is available; {hint}")
