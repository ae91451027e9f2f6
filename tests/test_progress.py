"""Progress: a bar on a terminal, log lines now and then elsewhere, nothing when turned off."""

from __future__ import annotations

import logging

from atldas.utils import progress as pr


def _run(n: int, *, progress: bool) -> None:
    with pr.progress_bar(range(n), progress=progress, desc="eval", unit="img") as bar:
        for k in bar:
            bar.set_postfix(SAD=f"{k:.3f}")  # tqdm redraws on every postfix: it must not log every time


def test_off_a_terminal_progress_is_a_log_line_now_and_then_without_carriage_returns(monkeypatch, caplog, capsys):
    monkeypatch.setattr(pr, "LOG_EVERY", 0.0)  # a line at every count
    with caplog.at_level(logging.INFO, logger="atldas"):
        _run(4, progress=True)
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(m.startswith("eval: ") and " img (" in m and "elapsed, about" in m for m in lines)
    assert not any(m.startswith("eval: 4/4") for m in lines)  # the verb logs its own end
    assert {m.split()[1] for m in lines} <= {"0/4", "1/4", "2/4", "3/4"}
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out and "eval" not in captured.err


def test_short_work_logs_nothing_and_off_means_off(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="atldas"):
        _run(50, progress=True)  # well under LOG_EVERY seconds
        monkeypatch.setattr(pr, "LOG_EVERY", 0.0)
        _run(5, progress=False)
    assert caplog.records == []


def test_a_verb_logs_its_progress_off_a_terminal(monkeypatch, caplog, tmp_path):
    """eval --pred printed nothing between its first and its last line in a CI log."""
    import numpy as np
    from PIL import Image

    from atldas.cli import main

    for d in ("pred", "data/alpha", "data/trimap"):
        (tmp_path / d).mkdir(parents=True)
    tri = np.full((16, 16), 128, np.uint8)
    for k in range(3):
        Image.fromarray(np.full((16, 16), 60 * k, np.uint8)).save(tmp_path / "pred" / f"{k}.png")
        Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "data" / "alpha" / f"{k}.png")
        Image.fromarray(tri).save(tmp_path / "data" / "trimap" / f"{k}.png")
    monkeypatch.setattr(pr, "LOG_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="atldas"):
        assert main(["eval", "--pred", str(tmp_path / "pred"), "--alpha", str(tmp_path / "data" / "alpha"),
                     "--trimap", str(tmp_path / "data" / "trimap"), "--workers", "1"]) == 0
    assert any(r.getMessage().startswith("eval: 1/3 img") for r in caplog.records), caplog.text


def test_time_left_reads_in_seconds_minutes_or_hours():
    assert pr.time_left(12.0, 0) == "" and pr.time_left(float("nan"), 3) == ""
    assert pr.time_left(20.0, 3) == ", about 60 s left"
    assert pr.time_left(0.1, 2) == ", under a second left"  # it said "about 0 s left"
    assert pr.time_left(60.0, 10) == ", about 10 min left"
    assert pr.time_left(600.0, 12) == ", about 2.0 h left"


def test_a_search_s_epoch_lines_say_how_long_the_rest_takes(tmp_path, caplog):
    from atldas.cli import main

    with caplog.at_level(logging.INFO, logger="atldas"):
        assert main(["search", "--space", "tiny", "--epochs", "3", "--no-progress", "--set", "tensorboard=false",
                     "--set", "steps_per_epoch=1", "--set", "plots=false", "--out", str(tmp_path / "s")]) == 0
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 3 and "warm-up" in epochs[0]  # a warm-up epoch (no arch step) is no guide: no estimate
    assert "left" not in epochs[0] and epochs[1].endswith(" left") and "left" not in epochs[2]


def test_without_a_total_the_line_counts_without_a_percentage(monkeypatch, caplog):
    monkeypatch.setattr(pr, "LOG_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="atldas"):
        for _ in pr.progress_bar((k for k in range(3)), progress=True, desc="read", unit="img"):
            pass
    assert caplog.records and all("?" not in r.getMessage() and "%" not in r.getMessage() for r in caplog.records)


def test_a_program_that_logs_elsewhere_gets_no_log_lines_on_stderr(tmp_path, capsys, caplog):
    """tqdm's logging redirect added a stderr handler to the root logger wherever it had none: a
    program logging to a file (and pytest) got atldas's warnings on stderr too."""
    import numpy as np
    from PIL import Image

    from atldas.cli import main

    for d in ("pred", "alpha", "trimap"):
        (tmp_path / d).mkdir()
    noisy = np.full((16, 16), 128, np.uint8)
    noisy[0, :3] = [3, 250, 120]  # a warning per trimap
    for k in range(2):
        Image.fromarray(np.full((16, 16), 60 * k, np.uint8)).save(tmp_path / "pred" / f"{k}.png")
        Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "alpha" / f"{k}.png")
        Image.fromarray(noisy).save(tmp_path / "trimap" / f"{k}.png")
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--alpha", str(tmp_path / "alpha"),
                 "--trimap", str(tmp_path / "trimap"), "--workers", "1"]) == 0
    assert "not in {0, 128, 255}" in caplog.text and capsys.readouterr().err == ""


def test_log_lines_go_above_bars_only_where_bars_are_drawn_and_the_console_logs(monkeypatch):
    import argparse
    import contextlib
    import sys

    from atldas import cli

    monkeypatch.setattr(pr, "show_progress", lambda progress: progress)  # a terminal
    args = argparse.Namespace(quiet=True, no_progress=False)
    assert isinstance(cli._above_bars(args), contextlib.nullcontext)  # no console handler (pytest's own only)
    handler = logging.StreamHandler(sys.stderr)
    logging.root.addHandler(handler)
    try:
        assert not isinstance(cli._above_bars(args), contextlib.nullcontext)  # --quiet still draws bars
        assert isinstance(cli._above_bars(argparse.Namespace(quiet=False, no_progress=True)), contextlib.nullcontext)
    finally:
        logging.root.removeHandler(handler)
