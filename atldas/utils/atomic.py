"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

An interrupted or failed write never leaves a half-written file at the target path, and an
earlier file there stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from atldas.errors import DataError, WriteError, first_line
from atldas.utils.memory import bytes_text

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: A temporary this library makes: ``.<name>.atldas-<pid>@<host>.<random>[suffix]`` (a file or a folder)
_TEMP = re.compile(r"^\..+\.atldas-(\d+)@([A-Za-z0-9_-]+)\.")


def host_id() -> str:
    """This machine's name and PID namespace, as a temporary's name holds them: a process of another
    machine (a shared folder) or of another container with the same host name (``--network host``:
    another PID namespace, where the same pid is another process) is not one this process can ask
    about by its pid."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
    try:
        return f"{name}-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # no /proc (not Linux): the host name alone
        return name


_SWEPT: set = set()  # folders this process has swept (once each: a folder of many outputs stays linear)


def pid_gone(pid: int) -> bool:
    """Whether process ``pid`` no longer runs (killed by SIGKILL or a power cut before it could remove
    its temporaries); a process alive under another user counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


def sweep_stale(folder: PathLike) -> None:
    """Remove, once per process and folder, the temporaries (:func:`temp_prefix`) in ``folder`` whose
    process, on this machine, is gone; those of a process still running or of another machine (a
    shared folder), and every other file, are left alone."""
    key = os.path.abspath(folder)
    if key in _SWEPT:
        return
    _SWEPT.add(key)
    host = host_id()
    with contextlib.suppress(OSError):
        for q in Path(folder).iterdir():
            m = _TEMP.match(q.name)
            if m and m.group(2) == host and pid_gone(int(m.group(1))):
                if q.is_dir() and not q.is_symlink():
                    shutil.rmtree(q, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        q.unlink()


#: The longest file name (bytes) most file systems take; an output's name is checked against it
MAX_NAME_BYTES = 255


def short_name(name: str, limit: int = 96) -> str:
    """``name`` cut to at most ``limit`` bytes in the file system's encoding (whole characters), for a
    name built from it (a temporary, a folder moved aside) that adds its own tail."""
    raw = os.fsencode(name)
    return name if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore") or "f"


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporaries for ``name``: ``.<name>.atldas-<pid>@<host_id>.`` (a long
    name cut: the temporary's own name must fit), which :func:`sweep_stale` on this machine recognises
    once the process is gone."""
    return f".{short_name(name)}.atldas-{os.getpid()}@{host_id()}."


def _stream(p: Path) -> bool:
    """Whether ``p`` is a file that is written, not replaced: a pipe, a terminal, a device, a socket
    (``/dev/stdout``, ``/dev/null``, a named pipe), through any symbolic links."""
    try:
        return not stat.S_ISREG(os.stat(p).st_mode) and not p.is_dir()
    except OSError:  # absent (or a dangling link): a new file
        return False


@contextlib.contextmanager
def atomic_path(path: PathLike, *, suffix: str = ".tmp", follow: bool = False) -> Iterator[str]:
    """Yield a temporary path next to ``path`` (parent folders are created); on a clean exit it
    replaces ``path``, on an exception it is removed.

    ``suffix`` is the temporary file's extension, for writers that infer the format from it.
    ``follow``, for a file the user named (``--json PATH``): a symbolic link is followed (the file it
    points at is replaced, the link kept), and a pipe, terminal or device (``/dev/stdout``) is written
    once the temporary (then in the temporary folder) is complete. Without it (a file the library
    names, in a folder someone may have prepared) a link is replaced, never written through.
    """
    p = Path(path)
    if p.is_dir():  # before a temporary file: the error names the user's path
        raise IsADirectoryError(errno.EISDIR, "is a folder; pass a file name", os.fspath(path))
    if follow and _stream(p):
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(p.name), suffix=suffix)
        os.close(fd)
        try:
            yield tmp
            sys.stdout.flush()  # what this process printed comes first (``--json /dev/stdout``)
            try:
                with open(tmp, "rb") as src, open(p, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except OSError as exc:
                raise WriteError(exc.errno, exc.strerror, os.fspath(path)) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return
    if follow and p.is_symlink():  # its target replaced, not the link (``--json link.json`` made the link a file)
        p = Path(os.path.realpath(p))
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(p.parent)  # what killed writers left
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=temp_prefix(p.name), suffix=suffix)
    except OSError as exc:  # a folder that takes no files (/proc, /sys) or none of ours: name the user's path
        raise WriteError(exc.errno, exc.strerror, os.fspath(path)) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a plain open() would honour the umask
    try:
        yield tmp
        os.replace(tmp, p)
    except OSError as exc:  # a full disk while writing: name the target, not the temporary file
        if exc.errno is not None and exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: PathLike, text: str, *, follow: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the replace (``follow``:
    :func:`atomic_path`'s)."""
    with atomic_path(path, follow=follow) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # name the target, not the temporary file
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
    return Path(path)


#: ``--json -``: the JSON goes to standard output (the command's table then goes to standard error).
STDOUT = "-"


def to_stdout(path: Optional[PathLike]) -> bool:
    """Whether a JSON output ``path`` is :data:`STDOUT` (nothing to check, no file written)."""
    return path is not None and os.fspath(path) == STDOUT


def write_json(path: PathLike, obj: Any, *, flag: str = "--json", follow: bool = False) -> Path:
    """Write ``obj`` as indented JSON atomically (``-``: to standard output; ``follow``, for a path the
    user named: :func:`atomic_path`'s); a folder or an unwritable path is one DataError naming ``flag``."""
    if to_stdout(path):
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
        sys.stdout.flush()
        return Path(STDOUT)
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{flag} {p} is a folder; pass a file name such as {p / 'scores.json'}")
    try:
        return write_text_atomic(p, json.dumps(obj, indent=2) + "\n", follow=follow)
    except OSError as exc:
        raise DataError(f"cannot write {p}: {exc.strerror or exc}; choose a writable path for {flag}") from None


def refuse_overwriting_non_json(path: PathLike, *, flag: str = "--json", example: str = "scores.json") -> None:
    """Refuse a JSON output path where an existing file is not JSON (an image, a text): a one-line
    DataError naming ``flag`` (and ``example``, a name to use instead) before any work, so an unrelated
    file is never overwritten. A ``.json`` file, or a file that holds JSON (e.g. the scores of an
    earlier run), may be overwritten."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() == ".json":
        return
    try:
        with open(p, "rb") as f:
            json.loads(f.read(1 << 26).decode("utf-8"))
        return
    except (OSError, ValueError):
        pass
    raise DataError(f"{flag} {p} exists and is not a JSON file; it would be overwritten: choose another path "
                    f"(e.g. {example}) or remove it")


def check_output(out: PathLike, *, flag: str, folder: bool = False, need_bytes: Optional[float] = None,
                 follow: bool = False) -> Path:
    """Check before any work that ``out`` can be written: no existing ancestor is a file, the path
    itself is not of the other kind (a folder where a file goes, or the reverse), the nearest
    existing folder is writable (a file is created there and removed) and, when the caller knows an
    upper bound ``need_bytes`` of what it will write, its file system has that much free. ``follow``:
    the file is written with :func:`atomic_path`'s ``follow`` (a pipe or device is written, a link's
    target replaced); without it a pipe or device is refused. Returns the path; raises a one-line
    DataError naming ``flag``.
    """
    path = Path(out)
    long = next((part for part in path.parts if len(os.fsencode(part)) > MAX_NAME_BYTES), None)
    if long is not None:
        raise DataError(f"{flag} {out}: the name {long[:40]}... is {len(os.fsencode(long))} bytes, more than a file "
                        f"system takes ({MAX_NAME_BYTES}); choose a shorter one")
    try:
        path.resolve()
    except (RuntimeError, OSError) as exc:  # symbolic links that point at each other (RuntimeError before 3.13)
        raise DataError(f"{flag} {out}: it cannot be resolved ({first_line(exc)}; symbolic links that point at "
                        "each other?); choose another path") from None
    if path.exists() and path.is_dir() != folder:
        kind, want = ("a folder", "a file") if path.is_dir() else ("a file", "a folder")
        raise DataError(f"{flag} {out} is {kind}; give {want} path")
    if not folder and _stream(path):  # /dev/stdout, a named pipe: written, not replaced (atomic_path)
        if not follow:  # it would be replaced by a file (as root, /dev/stdout's link)
            raise DataError(f"{flag} {out} is a pipe, terminal or device, not a file; give a file path")
        if not os.access(path, os.W_OK):
            raise DataError(f"{flag} {out} is not writable; choose another path")
        return path
    if follow and not folder and path.is_symlink():  # the file it points at is replaced: its folder counts
        path = Path(os.path.realpath(path))
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{flag} {out}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{flag} {out}: the folder {parent} is not writable; choose another path")
    if folder and path.is_dir() and not os.access(path, os.W_OK | os.X_OK):  # its files go inside it
        raise DataError(f"{flag} {out}: the folder is not writable; choose another path")
    where = path if folder and path.is_dir() else parent
    try:  # what os.access cannot tell (root's access is always granted): /proc, /sys, a mount that refuses files
        fd, probe = tempfile.mkstemp(dir=where, prefix=temp_prefix("probe"))
    except OSError as exc:
        raise DataError(f"{flag} {out}: no file can be created in {where} ({exc.strerror or first_line(exc)}); "
                        "choose another path") from None
    os.close(fd)
    os.unlink(probe)
    if need_bytes is not None:
        free = shutil.disk_usage(parent).free
        if need_bytes > free:
            raise DataError(f"{flag} {out}: up to {bytes_text(need_bytes)} will be written and {bytes_text(free)} "
                            "are free on that file system; free space or choose another path")
    return Path(out)


def refuse_input_as_output(out: PathLike, inputs: Iterable[Optional[PathLike]], *, flag: str,
                           follow: bool = False) -> None:
    """Refuse an output path that is one of the command's existing inputs (symlinks followed): a
    one-line DataError naming ``flag`` before any work, so the input is never overwritten; the path
    must be writable as a file too (:func:`check_output`, ``follow`` its)."""
    check_output(out, flag=flag, follow=follow)
    target = Path(out).resolve()
    for p in inputs:
        if p is not None and Path(p).exists() and Path(p).resolve() == target:
            raise DataError(f"{flag} {out} is one of this command's inputs ({p}); it would be overwritten: "
                            "choose another path")
