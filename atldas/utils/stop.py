"""A stop that a signal asked for, kept until a safe point raises it.

The ``atldas`` command turns Ctrl-C and SIGTERM into an exception where the process is; when the signal
lands in a weakref callback or a ``__del__``, Python prints "Exception ignored in ..." and goes on, and
the run went on with it (3 of 24 Ctrl-Cs in a review). The command's handlers also :func:`request`
the stop, and the long loops (a search's and a retrain's steps, the select stage's fits, tune's
trials) call :func:`check` once per step, which raises it again.
"""

from __future__ import annotations

from typing import Optional, Type

__all__ = ["request", "check", "clear", "requested"]

_requested: Optional[Type[BaseException]] = None


def request(exc_type: Type[BaseException]) -> None:
    """Remember that ``exc_type`` (KeyboardInterrupt, or a subclass of it for SIGTERM) was raised by a
    signal handler."""
    global _requested
    _requested = exc_type


def requested() -> Optional[Type[BaseException]]:
    """The stop asked for, or None."""
    return _requested


def check() -> None:
    """Raise the stop a signal asked for, if any (it stays asked for until :func:`clear`)."""
    if _requested is not None:
        raise _requested()


def clear() -> None:
    """Forget the stop (the command has ended)."""
    global _requested
    _requested = None
