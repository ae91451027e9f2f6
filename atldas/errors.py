"""Errors a user can cause.

Any :class:`AtldasError` raised below ``atldas.cli.main`` is printed as one line
(``atldas: error: <message>``) and the command exits with status 2; other exceptions are bugs and
keep their traceback. Messages say what is wrong and how to mend it.
"""

from __future__ import annotations


class AtldasError(Exception):
    """A problem with the user's input, files or configuration (not a bug in atldas)."""


class DataError(AtldasError):
    """An unreadable, missing or inconsistent data file or folder."""


class ConfigError(AtldasError):
    """An invalid configuration value, flag combination or registry name."""


class BudgetBelowCheapest(ConfigError):
    """A budget below the cheapest architecture of its space (``Run.check_budget``); ``atldas tune``
    lets it through at a tuned dimension's end when other tuned keys may make it fit."""


class WriteError(OSError):
    """An output that could not be written (its folder or its temporary file not created): an
    ``OSError`` whose ``filename`` is the path the user gave, whatever the errno (``ENOENT`` included:
    a folder such as ``/proc`` that takes no new files)."""


def first_line(exc: BaseException) -> str:
    """The first line of a third-party exception's message (its type's name when it has none), for a
    one-line user error that wraps it."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unreadable(exc: BaseException) -> str:
    """Why a JSON or YAML parser gave up on a file, for a one-line error: a ``RecursionError`` (values
    nested thousands deep) or a ``ValueError`` (e.g. an integer of more than 4,300 digits)."""
    return "values nested too deeply" if isinstance(exc, RecursionError) else first_line(exc)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's CPU or CUDA allocator failing (a RuntimeError; OutOfMemoryError on CUDA)."""
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text
