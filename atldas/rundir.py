"""A run directory, shared by search and retrain: ``config.yaml``, the atomic checkpoint,
``history.jsonl``, ``tb/``, and the checks before a run starts or resumes.

    RUN_DIR/
      config.yaml     the resolved config (every default written out)
      <checkpoint>    written atomically, loads with torch.load(weights_only=True)
      history.jsonl   one line per epoch
      tb/             TensorBoard events
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None  # type: ignore[assignment]

import yaml

from atldas.config import read_run_config, read_yaml, save_yaml, to_dict
from atldas.errors import AtldasError, ConfigError, DataError
from atldas.utils.atomic import MAX_NAME_BYTES, check_output, short_name
from atldas.utils.checkpoint import load_checkpoint, save_checkpoint
from atldas.utils.dist import init_from_env
from atldas.utils.history import History
from atldas.utils.tb import open_writer

log = logging.getLogger("atldas")

__all__ = ["RunDir"]

CONFIG = "config.yaml"
LOCK = ".lock"

#: The lock files' descriptors this process holds. A process forked while one is held (a data loader's
#: worker) inherits it, and with it the flock: a run killed with its workers alive blocked its own
#: ``--resume`` until they noticed, seconds later. Each forked child closes its copies at once (closing a
#: copy leaves the parent's lock as it is; only the last descriptor's close releases it).
_HELD: set = set()


def _drop_inherited_locks() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)

#: files a run writes atomically; their leftover temporary files are swept when a run starts here
RUN_FILES = ("checkpoint.pt", "last.pt", "best.pt", CONFIG, "genotype.json", "cost_table.json", "history.jsonl")


class RunDir:
    """One run directory.

    Args:
        path: the folder.
        checkpoint: the checkpoint's file name (``checkpoint.pt`` for search, ``last.pt`` for retrain).
        kind: what runs here, for messages (``search``, ``retrain``).
    """

    def __init__(self, path: Path | str, *, checkpoint: str, kind: str) -> None:
        self.path = Path(path)
        self.checkpoint = self.path / checkpoint
        self.kind = kind

    @contextlib.contextmanager
    def locked(self) -> Iterator["RunDir"]:
        """Hold the directory's lock for the block: one writer per run directory. A second process is
        refused with one line naming the holder's pid; the OS releases the lock of a killed process,
        so a killed run never blocks its own ``--resume`` (its forked data-loader workers, still alive
        for a few seconds, do not hold it: :data:`_HELD`). A directory this block created is removed
        again when it is left empty, or when the block ends in a user error (:class:`AtldasError`,
        e.g. a bad image found in the first epoch) before any checkpoint was written: a refused run
        leaves no folder behind."""
        if self.path.exists() and not self.path.is_dir():
            raise AtldasError(f"--out {self.path} is a file; a {self.kind} run needs a folder")
        check_output(self.path, flag="--out", folder=True)
        missing = [q for q in (self.path, *self.path.parents) if not q.exists()]  # innermost first
        created: list = []  # the folders this process made itself (another may race it to the same --out)
        refused = False
        try:
            for q in reversed(missing):
                try:
                    q.mkdir()
                    created.insert(0, q)
                except FileExistsError:
                    pass
            # a lock file this process made is removed again when its run is refused; never through a
            # link (a prepared folder's .lock -> a file elsewhere had that file truncated to our pid)
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            try:
                fd, made_lock = os.open(self.path / LOCK, flags | os.O_EXCL, 0o666), True
            except FileExistsError:
                fd, made_lock = os.open(self.path / LOCK, flags, 0o666), False
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise AtldasError(f"--out {self.path}: its {LOCK} is not a plain file; remove it and start again")
        except OSError as e:
            for q in created:
                with contextlib.suppress(OSError):
                    q.rmdir()
            if (self.path / LOCK).is_symlink():
                raise AtldasError(f"--out {self.path}: its {LOCK} is a symbolic link; remove it and start "
                                  "again (atldas writes no file through a link)") from None
            raise AtldasError(f"--out {self.path}: cannot create the run folder there ({e.strerror or e})") from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    created, made_lock = [], False  # the holder's folder and lock, even if this process made them
                    holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                    raise AtldasError(f"{self.path} is in use by another atldas process (pid {holder}); wait "
                                      "for it to end or choose another --out") from None
                try:  # a holder that was removing the folder as it let go: this lock is on a removed file
                    same = os.fstat(fd).st_ino == os.stat(self.path / LOCK).st_ino
                except OSError:
                    same = False
                if not same:
                    created, made_lock = [], False
                    raise AtldasError(f"{self.path} was being removed by the atldas process that held it as "
                                      "this one started; start again")
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
            _HELD.add(fd)
            self._sweep()
            yield self
        except AtldasError:
            refused = True
            raise
        finally:  # the folder is removed while the lock is held, so no other process is in it yet
            if created and refused and not self.checkpoint.exists():
                shutil.rmtree(self.path, ignore_errors=True)  # only what this refused run wrote
            elif created and [p.name for p in self.path.iterdir()] == [LOCK]:
                (self.path / LOCK).unlink()
            else:
                created = []
                if made_lock and refused and not self.checkpoint.exists():  # e.g. refused in a study's folder
                    with contextlib.suppress(OSError):
                        (self.path / LOCK).unlink()
            _HELD.discard(fd)
            os.close(fd)  # releases the flock
            for q in created:  # innermost first; a folder another process has written into since stays
                with contextlib.suppress(OSError):
                    q.rmdir()

    def holder(self) -> Optional[str]:
        """The pid (as written) of the atldas process that holds this directory's lock now, None if none
        does. It probes with a shared lock held for an instant (flock has no test without taking), so a
        run starting in that instant is refused as if another held the folder."""
        if fcntl is None or not (self.path / LOCK).is_file():
            return None
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)  # releases a shared lock taken
        return None

    def _sweep(self) -> None:
        """Remove the temporary files an atomic write killed mid-way left (``.<file>.<random>...``)."""
        for q in self.path.iterdir():
            if q.is_file() and any(q.name.startswith(f".{name}.") for name in RUN_FILES):
                log.info("removing %s, left by an interrupted write", q)
                with contextlib.suppress(OSError):
                    q.unlink()

    def refuse_inputs_inside(self, inputs: Iterable[Tuple[str, Optional[str]]]) -> None:
        """ConfigError naming the first ``(flag, path)`` of ``inputs`` that lies inside this directory:
        ``--force`` moves the directory aside, and the new run would read what moved (or record a path
        that no longer exists)."""
        old = self.path.resolve()
        for flag, value in inputs:
            if value and value != "synthetic" and Path(value).exists() and Path(value).resolve().is_relative_to(old):
                raise ConfigError(f"--force moves {self.path} aside, and {flag} {value} is inside it; copy it out "
                                  "first, or choose another --out")

    def set_aside(self) -> Optional[Path]:
        """Move a non-empty run directory aside to ``<name>.replaced-<time>`` (``--force``), so that a
        fresh run starts in an empty folder and nothing of the old run is lost or mixed in; refused
        while another process holds the directory. Returns where it went (None if there was nothing)."""
        if not self.path.is_dir() or not any(self.path.iterdir()):
            return None
        if Path.cwd().resolve().is_relative_to(self.path.resolve()):  # "." would follow the folder it moves
            raise ConfigError(f"--force cannot move aside {self.path}: it holds the working directory; run from "
                              "outside it, or choose another --out")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = short_name(self.path.name, MAX_NAME_BYTES - 32)  # the tail must fit in a file name
        aside = self.path.with_name(f"{name}.replaced-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{name}.replaced-{stamp}-{n}")
        with self.locked():
            self.path.rename(aside)
        log.warning("--force: moved the earlier run in %s aside to %s", self.path, aside)
        return aside

    def owner(self) -> Optional[str]:
        """The kind of run whose ``config.yaml`` is here (``search``, ``retrain``; ``tune`` for a study's
        folder: its journal or its trials), None if there is none."""
        if not (self.path / CONFIG).is_file():
            if (self.path / "study.log").is_file() or any(self.path.glob("trial-[0-9]*")):
                return "tune"
            return None
        try:
            keys = read_yaml(self.path / CONFIG)
        except AtldasError:
            return "unknown"
        return "search" if "strategy" in keys else "retrain" if "model" in keys else "unknown"

    def check_new(self) -> None:
        """Refuse to start a fresh run where one already has a checkpoint, or where another kind of
        run wrote its files."""
        if self.checkpoint.exists():
            raise AtldasError(f"{self.path} already holds a {self.kind} checkpoint; continue it with --resume, "
                              "start afresh with --force (the old folder is moved aside) or choose another --out")
        owner = self.owner()
        if owner not in (None, self.kind):
            what = f"a {owner} run" if owner != "unknown" else f"a {CONFIG} atldas did not write"
            raise AtldasError(f"{self.path} holds {what}; a {self.kind} there would overwrite its files: choose "
                              "another --out (or --force: the old folder is moved aside)")

    def check_resume(self) -> None:
        """Refuse to resume where there is no checkpoint (or another kind of run's folder)."""
        owner = self.owner()
        if owner not in (None, self.kind):  # start without --resume would be refused there too
            what = f"a {owner} run" if owner != "unknown" else f"a {CONFIG} atldas did not write"
            raise AtldasError(f"--resume: {self.path} holds {what}, not a {self.kind} run: give a {self.kind} run's "
                              "folder (or start afresh with --force: the old folder is moved aside)")
        if not self.checkpoint.is_file():
            raise AtldasError(f"--resume: {self.checkpoint} does not exist; start without --resume")
        if not (self.path / CONFIG).is_file():
            raise AtldasError(f"--resume: {self.path / CONFIG} does not exist; this is not a {self.kind} run directory")

    def read_config(self) -> Dict[str, Any]:
        """The mapping in ``config.yaml``."""
        if not (self.path / CONFIG).is_file():
            raise AtldasError(f"{self.path}: not a {self.kind} run directory (no {CONFIG})")
        return read_run_config(self.path / CONFIG)

    def device(self, given: str, *, resume: bool) -> str:
        """The device a run runs on: on ``resume`` the one its ``config.yaml`` records (flags cannot change
        it; torchrun's backend and each rank's GPU are chosen from it before the run is loaded), else
        ``given``."""
        if resume and (self.path / CONFIG).is_file():
            return str(self.read_config().get("device") or given)
        return given

    def join_torchrun(self, given: str, *, resume: bool) -> int:
        """Join torchrun's process group on the run's device (:meth:`device`); returns the world size
        (1 without torchrun). A resumed run's errors name its ``config.yaml``, where its device is set."""
        resumed = resume and (self.path / CONFIG).is_file()
        return init_from_env(self.device(given, resume=resume), config_yaml=self.path / CONFIG if resumed else None)

    def write_config(self, cfg: Any) -> None:
        """Write the resolved config atomically (the folder is created)."""
        path = self.path / CONFIG
        if path.is_file() and not self.checkpoint.exists():  # a run of this kind that never checkpointed
            old, new = read_yaml(path), yaml.safe_load(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != "out")
            if differ:
                raise AtldasError(f"{self.path} holds a {self.kind} run with another configuration ({', '.join(differ[:4])} "
                                  "differ) that never reached a checkpoint: choose another --out, or --force to "
                                  "move it aside")
        self.path.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, path)

    def save(self, state: Dict[str, Any], name: Optional[str] = None) -> Path:
        """Write a checkpoint atomically (``name`` beside the main one, e.g. ``best.pt``)."""
        path = self.checkpoint if name is None else self.path / name
        save_checkpoint(state, path)
        return path

    def load(self, *, map_location: Any = "cpu", fmt: Optional[str] = None) -> Dict[str, Any]:
        """The checkpoint (``weights_only=True``); with ``fmt``, refused unless its ``format`` is that
        (a retrain checkpoint renamed into a search run, a file of another version)."""
        try:
            ckpt = load_checkpoint(self.checkpoint, map_location=map_location)
        except DataError as exc:  # a damaged file: "pass another file" does not help a run folder
            raise DataError(f"{str(exc).split('; ')[0]}; the {self.kind} cannot go on from it: start it afresh with "
                            "--force (the old folder is moved aside), or restore the file") from None
        if fmt is not None and ckpt.get("format") != fmt:
            found = ckpt.get("format")
            what = f"format {found!r}" if isinstance(found, str) else "no format field"
            if isinstance(found, str) and found.split("/")[0] == fmt.split("/")[0]:  # atldas-search/1
                raise DataError(f"{self.checkpoint}: written by another atldas version ({what}; this one reads "
                                f"{fmt!r}): derive or resume the run with the version that wrote it")
            raise DataError(f"{self.checkpoint}: not an atldas {self.kind} checkpoint ({what}, expected {fmt!r}); "
                            f"point at the folder of a {self.kind} run this atldas wrote")
        return ckpt

    def history(self, start: int) -> History:
        """``history.jsonl``, with the lines of epochs >= ``start`` dropped (resume)."""
        return History(self.path / "history.jsonl", start)

    def writer(self, enabled: bool = True, *, start: int = 0):
        """A TensorBoard writer on ``tb/`` (or None); ``start``: the epoch a resumed run goes on from."""
        return open_writer(self.path, enabled=enabled, start=start)
