"""atldas.utils.atomic: a failed write leaves the earlier file intact and no temporary behind."""

import os

import pytest

from atldas.utils.atomic import atomic_path, write_text_atomic


def test_write_text_atomic_replaces_and_creates_folders(tmp_path):
    p = write_text_atomic(tmp_path / "a" / "b.json", "{}\n")
    assert p.read_text() == "{}\n"
    write_text_atomic(p, "[1]\n")
    assert p.read_text() == "[1]\n"
    assert sorted(x.name for x in p.parent.iterdir()) == ["b.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    p = tmp_path / "ckpt.pt"
    p.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(p, suffix=".pt") as tmp:
            assert tmp.endswith(".pt") and tmp != str(p)
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["ckpt.pt"]


def test_written_file_has_the_mode_a_plain_open_gives(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        p = write_text_atomic(tmp_path / "g.json", "{}")
        plain = tmp_path / "plain.json"
        plain.write_text("{}")
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == 0o644


def test_history_drops_a_line_cut_short_by_a_kill(tmp_path):
    import json

    from atldas.utils.history import History

    path = tmp_path / "history.jsonl"
    path.write_text('{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "loss": 0.9}\n{"epoch": 2, "lo')
    h = History(path, start=2)
    h.append({"epoch": 2, "loss": 0.8})
    assert [json.loads(x)["epoch"] for x in path.read_text().splitlines()] == [0, 1, 2]


def test_a_resume_without_its_history_says_so(tmp_path, caplog):
    """A removed or truncated history.jsonl went on silently with the earlier epochs' rows missing."""
    from atldas.utils.history import History

    path = tmp_path / "history.jsonl"
    path.write_text('{"epoch": 0, "loss": 1.0}\n')
    History(path, start=1)
    assert "holds" not in caplog.text
    History(path, start=3)
    assert "history.jsonl holds 1 of the 3 epochs before this resume" in caplog.text


def test_check_output_refuses_what_the_disk_cannot_hold(tmp_path, monkeypatch):
    import collections
    import shutil

    import pytest

    from atldas.errors import DataError
    from atldas.utils.atomic import check_output

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**20, 9 * 2**20, 2**20))
    assert check_output(tmp_path / "o", flag="--out", folder=True, need_bytes=2**19) == tmp_path / "o"
    with pytest.raises(DataError, match=r"--out .*: up to 5 MiB will be written and 1 MiB are free"):
        check_output(tmp_path / "o", flag="--out", folder=True, need_bytes=5 * 2**20)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**20, 9 * 2**20, 100 * 2**10))
    with pytest.raises(DataError, match=r"up to 300 KiB will be written and 100 KiB are free"):  # not "0 MiB ... 0 MiB"
        check_output(tmp_path / "o", flag="--out", folder=True, need_bytes=300 * 2**10)
    assert not (tmp_path / "o").exists()


def test_a_folder_that_takes_no_files_is_refused_before_work_and_named_when_written(tmp_path, monkeypatch, capsys):
    """/proc takes no new files, and root's os.access says every folder is writable: check_output
    creates (and removes) a file where the output goes; a write that fails to create its folder or
    temporary is a WriteError naming the user's path, one line from the CLI whatever its errno (ENOENT
    was a traceback naming the temporary file)."""
    import errno
    import os
    import tempfile

    import pytest

    from atldas.cli import main
    from atldas.errors import DataError, WriteError
    from atldas.utils.atomic import check_output, write_text_atomic

    with pytest.raises(DataError, match=r"--out /proc/atldas-probe.json: "):
        check_output("/proc/atldas-probe.json", flag="--out")  # root: no file can be created; others: not writable
    assert check_output(tmp_path / "a" / "b.json", flag="--out") == tmp_path / "a" / "b.json"
    assert list(tmp_path.iterdir()) == []  # the probe removed, nothing created

    def refuse(*a, **k):
        raise OSError(errno.ENOENT, "No such file or directory", os.path.join(k["dir"], ".x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(DataError, match=r"--out .*o.json: no file can be created in .* \(No such file or directory\)"):
        check_output(tmp_path / "o.json", flag="--out")
    with pytest.raises(WriteError) as e:
        write_text_atomic(tmp_path / "o.json", "{}")
    assert e.value.errno == errno.ENOENT and e.value.filename == str(tmp_path / "o.json")
    monkeypatch.setattr("atldas.cli.thread_policy", lambda **k: None)  # any verb: plot writes through atomic_path
    monkeypatch.setattr("atldas.plot.plot", lambda *a, **k: write_text_atomic(tmp_path / "o.json", "{}"))
    assert main(["plot", str(tmp_path / "g.json"), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"atldas: error: cannot write {tmp_path / 'o.json'}: No such file or directory (a folder that takes "
                   "no new files, or one removed meanwhile); choose another path"), err


def test_a_full_disk_under_torch_save_names_the_checkpoint(tmp_path, monkeypatch):
    """torch's zip writer replaces the OSError of a full disk (or a file size limit) with a RuntimeError
    of its own ('unexpected pos 64 vs 0'): a traceback instead of the one line naming the file."""
    import errno

    import pytest
    import torch

    from atldas.utils.checkpoint import save_checkpoint

    def full(obj, f):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError) as exc:
        save_checkpoint({"x": 1}, tmp_path / "c.pt")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def _dead_pid():
    """The pid of a process that has ended (reaped), as a kill -9 leaves its temporaries."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporaries_are_swept_and_a_live_ones_kept(tmp_path, monkeypatch):
    """kill -9 during a write left `.ckpt.pt.<random>.pt` beside the target for ever (and a killed
    `eval --save-pred` its hidden staging folder); the next write into the folder removes those of a
    process that is gone, and leaves those of one still running (it may be writing now), of another
    machine or PID namespace (a container with the same host name: a live writer there was swept), and
    every file it did not make."""
    import os

    import atldas.utils.atomic as atomic
    from atldas.matting.scoring import _staging

    monkeypatch.setattr(atomic, "_SWEPT", set())
    here = atomic.host_id()
    gone, alive = f"{_dead_pid()}@{here}", f"{os.getppid()}@{here}"
    elsewhere = f"{_dead_pid()}@another-machine"  # a shared folder: not a process this machine can ask about
    # a container with this host name but its own PID namespace (--network host): its pid is not ours to ask about
    assert here.startswith(atomic.re.sub(r"[^A-Za-z0-9_-]", "_", atomic.socket.gethostname())[:64] + "-")
    container = f"{_dead_pid()}@{here.rsplit('-', 1)[0]}-1"
    (tmp_path / f".ckpt.pt.atldas-{container}.abc.pt").write_text("written in another PID namespace")
    (tmp_path / f".ckpt.pt.atldas-{gone}.abc.pt").write_text("half")
    (tmp_path / f".other.json.atldas-{gone}.x.tmp").write_text("half")
    (tmp_path / f".ckpt.pt.atldas-{alive}.abc.pt").write_text("being written")
    (tmp_path / f".ckpt.pt.{gone.split('@')[0]}.xyz.pt").write_text("not one of ours")
    (tmp_path / f".ckpt.pt.atldas-{elsewhere}.abc.pt").write_text("written on another machine")
    with atomic_path(tmp_path / "ckpt.pt", suffix=".pt") as tmp:
        assert os.path.basename(tmp).startswith(f".ckpt.pt.atldas-{os.getpid()}@{here}.")
        with open(tmp, "w") as f:
            f.write("new")
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(
        ["ckpt.pt", f".ckpt.pt.atldas-{alive}.abc.pt", f".ckpt.pt.{gone.split('@')[0]}.xyz.pt",
         f".ckpt.pt.atldas-{elsewhere}.abc.pt", f".ckpt.pt.atldas-{container}.abc.pt"])
    preds = tmp_path / "preds"
    (preds / f".partial.atldas-{gone}.q1").mkdir(parents=True)
    (preds / f".partial.atldas-{gone}.q1" / "s0.png").write_text("half")
    (preds / f".partial.atldas-{alive}.q2").mkdir()
    staging = _staging(preds)
    assert staging.name.startswith(f".partial.atldas-{os.getpid()}@{here}.")
    assert sorted(x.name for x in preds.iterdir()) == sorted([f".partial.atldas-{alive}.q2", staging.name])
    (preds / f".partial.atldas-{gone}.q3").mkdir()  # a folder is swept once per process
    _staging(preds)
    assert (preds / f".partial.atldas-{gone}.q3").is_dir()


def test_long_names_and_symlink_loops_are_one_line_errors(tmp_path):
    """A name near 255 bytes failed through the temporary's longer name (a traceback); a name over 255
    and a symbolic-link loop are refused before any work."""
    from atldas.errors import DataError
    from atldas.utils.atomic import check_output, temp_prefix, write_text_atomic

    long = tmp_path / ("中" * 75 + ".json")  # 229 bytes: fits, its temporary's full name would not
    write_text_atomic(long, "{}\n")
    assert long.read_text() == "{}\n" and len(os.fsencode(temp_prefix(long.name))) < 200
    with pytest.raises(DataError, match="more than a file system takes"):
        check_output(tmp_path / ("a" * 260 + ".json"), flag="--out")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(DataError, match="cannot be resolved"):
        check_output(tmp_path / "loop" / "g.json", flag="--out")


def test_a_ctrl_c_wrapped_twice_by_numba_is_an_interruption(monkeypatch, capsys):
    """pymatting's compiled code wraps a Ctrl-C in SystemError, at times twice: the second layer gave a
    traceback instead of 'atldas: interrupted'."""
    import atldas.plot
    from atldas.cli import main

    def stopped(*a, **k):
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                raise SystemError("_numba_unpickle") from exc
        except SystemError as exc:
            raise SystemError("CPUDispatcher") from exc

    monkeypatch.setattr(atldas.plot, "plot", stopped)
    assert main(["plot", "darts_v2"]) == 130
    assert "atldas: interrupted" in capsys.readouterr().err
