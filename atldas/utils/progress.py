"""Progress: a bar on a terminal, a log line now and then elsewhere (CI logs, files, services).

:func:`progress_bar` is the one way the verbs show progress. On a terminal it is tqdm's bar on
stderr. Where stderr is not a terminal a bar would write thousands of carriage-return lines, and
without it a long eval, predict or latency-table build printed nothing between its first and its last
line; there it logs ``DESC: k/N UNIT (p %), elapsed, about T left`` at most every
:data:`LOG_EVERY` seconds (nothing for work shorter than that). ``progress=False`` shows nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Optional

from tqdm import tqdm

__all__ = ["show_progress", "progress_bar", "time_left", "LOG_EVERY"]

log = logging.getLogger("atldas")

#: Seconds between two progress lines where stderr is not a terminal.
LOG_EVERY = 30.0


def show_progress(progress: bool) -> bool:
    """``progress`` and stderr is a terminal (False where stderr is None, closed, or an object
    without ``isatty``, as in some notebooks, services and test runners)."""
    if not progress:
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


class _Nowhere:
    """A file that takes tqdm's writes (its newline on close) and keeps nothing."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _LoggedProgress(tqdm):
    """tqdm's counting and estimates, shown as log lines at most every :data:`LOG_EVERY` seconds
    instead of a bar; no line for the finished count (the verb logs its own end)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        counted = kwargs.get("total") is not None or hasattr(args[0] if args else kwargs.get("iterable"), "__len__")
        kwargs.update(file=_Nowhere(), mininterval=min(1.0, LOG_EVERY), dynamic_ncols=False, ncols=None,
                      bar_format="{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f} %), {elapsed} elapsed, "
                                 "about {remaining} left{postfix}" if counted else
                                 "{desc}: {n_fmt} {unit}, {elapsed} elapsed{postfix}")
        self._closing, self._logged = False, time.monotonic()
        super().__init__(*args, **kwargs)

    def display(self, msg: Optional[str] = None, pos: Optional[int] = None) -> bool:
        # tqdm calls this on every set_postfix too: the clock decides, from the start and the last line
        now = time.monotonic()
        if msg is None and not self._closing and (self.total is None or self.n < self.total) \
                and now - self._logged >= LOG_EVERY:
            self._logged = now
            log.info("%s", self.format_meter(**self.format_dict))
        return True

    def close(self) -> None:
        self._closing = True
        super().close()


def progress_bar(iterable: Optional[Iterable[Any]] = None, *, progress: bool, **kwargs: Any) -> tqdm:
    """A tqdm over ``iterable`` (tqdm's keywords: ``total``, ``desc``, ``unit``, ``leave``, ...): a bar
    on stderr where it is a terminal, log lines every :data:`LOG_EVERY` seconds where it is not, and
    nothing with ``progress=False``."""
    if show_progress(progress):
        return tqdm(iterable, file=sys.stderr, **kwargs)
    if progress:
        return _LoggedProgress(iterable, **kwargs)
    return tqdm(iterable, disable=True, **kwargs)


def time_left(seconds_each: float, left: int) -> str:
    """``", about 12 min left"`` for ``left`` more epochs (or trials) like the last one ('' when none are
    left), for a line that ends one of them."""
    if left <= 0 or not seconds_each >= 0:
        return ""
    t = seconds_each * left
    if t < 0.5:
        return ", under a second left"
    when = f"{t:.0f} s" if t < 90 else f"{t / 60:.0f} min" if t < 5400 else f"{t / 3600:.1f} h"
    return f", about {when} left"
