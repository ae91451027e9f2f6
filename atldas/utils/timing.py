"""The one latency timer: ``torch.utils.benchmark.Timer`` at a fixed thread count, median and spread.

Timer synchronises CUDA around its blocks, so the same code times CPU and GPU work.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional

import numpy as np
import torch

from atldas.errors import ConfigError
from atldas.utils.seed import torch_threads

__all__ = ["time_call", "check_timing"]


def check_timing(*, min_run_time: float, repeats: int = 1, threads: Optional[int] = None) -> None:
    """Raise ConfigError for timing settings that cannot be used (checked before any work)."""
    if isinstance(min_run_time, bool) or not isinstance(min_run_time, (int, float)) or not 0 < min_run_time <= 3600:
        raise ConfigError(f"--min-run-time must be seconds in (0, 3600], got {min_run_time!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 10**6:
        raise ConfigError(f"--repeats must be an integer in 1..1000000, got {repeats!r}")
    if threads is not None and not 1 <= threads <= 4096:
        raise ConfigError(f"--threads must be at least 1, got {threads}")


def time_call(fn: Callable[[], object], *, threads: Optional[int] = None, min_run_time: float = 1.0,
              repeats: int = 5, sync: Optional[torch.device] = None) -> Dict[str, float]:
    """Time ``fn()`` in milliseconds: ``{"median", "p10", "p90", "samples"}``.

    One untimed warm-up call (allocator, oneDNN/cuDNN primitive selection), then
    ``Timer.blocked_autorange(min_run_time)``; a slow ``fn`` that gives fewer than ``repeats`` blocks
    gets single timed calls until it has ``repeats`` samples.

    Args:
        fn: what to time (e.g. a forward pass under ``torch.no_grad``).
        threads: torch CPU threads while timing (default: the current count).
        min_run_time: seconds of timing at least.
        repeats: samples at least.
        sync: a CUDA device to synchronise after the warm-up.
    """
    from torch.utils.benchmark import Timer

    check_timing(min_run_time=min_run_time, repeats=repeats, threads=threads)
    threads = int(threads or torch.get_num_threads())
    with torch_threads(threads):
        fn()
        if sync is not None and sync.type == "cuda":
            torch.cuda.synchronize(sync)
        timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
        m = timer.blocked_autorange(min_run_time=min_run_time)
        times = list(m.times)
        deadline = time.perf_counter() + 60 * max(min_run_time, 0.01)
        while len(times) < repeats and time.perf_counter() < deadline:
            times.extend(timer.timeit(1).times)
    p10, median, p90 = np.percentile(np.asarray(times) * 1e3, [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90), "samples": len(times)}
