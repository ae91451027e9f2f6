"""User errors of the ``atldas`` command: one line on stderr, exit status 2, nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from atldas.cli import _search_config, build_parser, main
from atldas.config import MAX_THREADS, apply_overrides, check_threads, read_yaml
from atldas.errors import ConfigError
from atldas.retrain import RetrainConfig

ROOT = Path(__file__).resolve().parents[1]
GENOTYPE = str(ROOT / "derived_models" / "atldas_cifar100.json")


def _one_line(capsys, start: str = "atldas: error:") -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines()
           if ln.strip() and not ln.startswith(("INFO:", "WARNING:"))]
    assert len(err) == 1 and err[0].startswith(start), err
    return err[0]


@pytest.fixture()
def binary(tmp_path) -> Path:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00" + bytes(range(128, 256)))
    return path


def test_a_non_utf8_config_or_space_file_is_one_line(tmp_path, binary, capsys):
    with pytest.raises(ConfigError, match="not a UTF-8 text"):
        read_yaml(binary)
    out = tmp_path / "out"
    for argv in (["search", "--space", "tiny", "--config", str(binary), "--out", str(out)],
                 ["retrain", GENOTYPE, "--config", str(binary), "--out", str(out)],
                 ["tune", "--space", "tiny", "--space-file", str(binary), "--out", str(out)]):
        assert main(argv) == 2, argv
        assert "not a UTF-8 text (YAML) file" in _one_line(capsys)
        assert not out.exists()


def test_too_many_threads_are_refused_by_every_verb(tmp_path, capsys):
    """100000 threads segfaulted inside OpenMP (predict, search, eval) or raised "can't start new
    thread" (retrain); bench refused them saying "at least 1". One check, one message, for all."""
    check_threads(1000)  # a big machine's count still passes
    check_threads(MAX_THREADS)
    for bad in (0, MAX_THREADS + 1, True):
        with pytest.raises(ConfigError, match=f"1..{MAX_THREADS}"):
            check_threads(bad)
    out = str(tmp_path / "out")
    for argv in (["search", "--space", "tiny", "--threads", "100000", "--out", out],
                 ["search", "--space", "tiny", "--set", "threads=100000", "--out", out],
                 ["retrain", GENOTYPE, "--threads", "100000", "--out", out],
                 ["retrain", GENOTYPE, "--set", "threads=100000", "--out", out],
                 ["predict", "--model", "cheapmatting", "--image", "x", "--trimap", "x", "--out", out,
                  "--threads", "100000"],
                 ["eval", "--pred", "x", "--alpha", "x", "--trimap", "x", "--threads", "100000"],
                 ["bench", "cheapmatting", "--no-latency", "--threads", "100000"],
                 ["lut", "build", "--space", "tiny", "--threads", "100000", "--out", out],
                 ["tune", "--space", "tiny", "--threads", "100000", "--out", out],
                 ["tune", "--space", "tiny", "--set", "threads=100000", "--out", out]):
        assert main(argv) == 2, argv
        line = _one_line(capsys)
        assert f"must be an integer in 1..{MAX_THREADS}, got 100000" in line, line
        assert not Path(out).exists(), argv


def test_a_refused_tune_leaves_no_out_folder(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    for extra, expect in ((["--prune"], "--prune needs"),
                          (["--storage", "mysql://u:p@localhost/db"], "cannot open"),
                          (["--storage", str(tmp_path / "folder")], "is a folder")):
        out = tmp_path / "tu"
        assert main(["tune", "--space", "tiny", "--out", str(out), *extra]) == 2, extra
        assert expect in _one_line(capsys)
        assert not out.exists(), extra


@pytest.mark.parametrize("argv, expect", [
    (["predict", "--max-size", "1.5"], "atldas predict: error: argument --max-size: invalid int value: '1.5'"),
    (["search", "--target-macs", "-5M"], ("atldas search: error: argument --target-macs: expected one argument; "
                                          "write a value that starts with '-' as --target-macs=VALUE")),
    (["export", "--model", "x"], "atldas export: error: the following arguments are required: --onnx"),
    (["lut"], "atldas lut: error: the following arguments are required: ACTION"),
    (["lut", "build", "--size", "x"], "atldas lut build: error: argument --size"),
    (["data", "preview", "--count", "x"], "atldas data preview: error: argument --count"),
    (["frobnicate"], "atldas: error: argument COMMAND: invalid choice"),
])
def test_a_usage_error_is_one_line(argv, expect, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    line = _one_line(capsys, start=expect)
    prog = expect.split(": error:")[0]
    assert line.endswith(f"(see {prog} --help)"), line


def test_every_subcommand_gives_one_line_usage_errors(capsys):
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        with pytest.raises(SystemExit) as exc:
            main([name, "--no-such-flag"])
        assert exc.value.code == 2
        line = _one_line(capsys, start=f"atldas {name}: error:")  # the sub-command's, not atldas's
        assert line.endswith(f"(see atldas {name} --help)") and ("--no-such-flag" in line or "required" in line)


def test_a_flag_and_a_set_that_disagree_are_refused(tmp_path, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    for argv, expect in ((["search", "--space", "tiny", "--set", f"out={a}", "--out", str(b)],
                          f"--out {b} and --set out={a} disagree"),
                         (["search", "--space", "tiny", "--set", "space=matting"],
                          "--space tiny and --set space=matting disagree"),
                         (["search", "--space", "tiny", "--no-progress", "--set", "progress=true", "--out", str(b)],
                          "--no-progress and --set progress=true disagree"),
                         (["search", "--space", "tiny", "--data", "synthetic", "--set", "data.source=x", "--out",
                           str(b)], "--data synthetic and --set data.source=x disagree"),
                         (["retrain", GENOTYPE, "--set", f"out={a}", "--out", str(b)],
                          f"--out {b} and --set out={a} disagree"),
                         (["tune", "--space", "tiny", "--set", f"out={a}", "--out", str(b)], "tune sets out itself"),
                         (["tune", "--space", "tiny", "--retrain-epochs", "1", "--retrain-set", f"out={a}",
                           "--out", str(b)], "tune sets out itself")):
        assert main(argv) == 2, argv
        assert expect in _one_line(capsys)
        assert not a.exists() and not b.exists()
    # the same value twice is no conflict; a config file's value yields to both
    args = build_parser().parse_args(["search", "--space", "tiny", "--out", str(b), "--set", f"out={b}",
                                      "--epochs", "3", "--set", "epochs=3"])
    cfg = _search_config(args)
    assert (cfg.out, cfg.epochs) == (str(b), 3)


def test_retrain_set_errors_name_retrain_set(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^--retrain-set: unknown key 'foo'; known keys: .*weight_decay$"):
        apply_overrides(RetrainConfig(), ["foo=1"], flag="--retrain-set")  # flat: no dotted-path hint
    for extra, expect in ((["--retrain-set", "foo=1"], "atldas: error: --retrain-set: unknown key 'foo'"),
                          (["--retrain-set", "lr=abc"], "atldas: error: --retrain-set lr: cannot read 'abc'"),
                          (["--retrain-set", "epochs"], "atldas: error: --retrain-set expects key=value")):
        assert main(["tune", "--space", "tiny", "--retrain-epochs", "1", "--out", str(tmp_path / "t"), *extra]) == 2
        assert _one_line(capsys).startswith(expect)
