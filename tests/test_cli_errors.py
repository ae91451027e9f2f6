"""User errors of the ``atldas`` command: one line on stderr, exit status 2, nothing left behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

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


def test_a_binary_file_as_genotype_says_what_to_pass(tmp_path, binary, capsys):
    """A checkpoint, image or ONNX file where a genotype goes: 'utf-8 codec can't decode' said nothing useful."""
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(binary.read_bytes())
    for argv in (["plot", str(ckpt), "--out", str(tmp_path / "g.png")], ["bench", str(ckpt), "--size", "64"]):
        assert main(argv) == 2, argv
        line = _one_line(capsys)
        assert f"{ckpt} is a binary file" in line and "genotype.json" in line and "codec" not in line, line


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


# --------------------------------------------------------------------------- QA pass: messages and ignored flags

def _png(path: Path, shape=(8, 8, 3)) -> Path:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, 128, np.uint8)).save(path)
    return path


def test_a_png_or_a_folder_as_checkpoint_says_what_it_is(tmp_path):
    """A renamed PNG was told to re-run torch.load with weights_only=False (unsafe, pointless); a folder
    was 'no such checkpoint file'."""
    from atldas.errors import DataError
    from atldas.utils.checkpoint import load_checkpoint

    png = _png(tmp_path / "some.png").rename(tmp_path / "some.png.pt")
    with pytest.raises(DataError) as exc:
        load_checkpoint(png)
    assert "not a PyTorch checkpoint (the file is a PNG image)" in str(exc.value)
    assert "weights_only" not in str(exc.value)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(DataError, match="is a folder, not a checkpoint file; pass the checkpoint file"):
        load_checkpoint(run)
    (run / "best.pt").write_bytes(b"")
    with pytest.raises(DataError, match="is a folder, not a checkpoint file; pass a file in it, e.g. .*best.pt"):
        load_checkpoint(run)


def test_max_pixels_message_counts_pixels(tmp_path, monkeypatch):
    """--max-pixels 100 said '64x64 = 0 Mpx, above the limit of 0 Mpx'."""
    from atldas.data import io
    from atldas.errors import DataError

    monkeypatch.setattr(io, "MAX_PIXELS", 100)
    with pytest.raises(DataError, match=r"64x64 = 4,096 pixels, above the limit of 100 .*--max-pixels 4096 or more"):
        io.read_rgb(_png(tmp_path / "a.png", (64, 64, 3)))


def test_a_non_finite_rate_gets_no_amount_hint(tmp_path, capsys):
    """--set arch_lr=nan said 'write e.g. 8G, 2M' (a budget's hint)."""
    assert main(["search", "--space", "tiny", "--set", "arch_lr=nan", "--out", str(tmp_path / "o")]) == 2
    line = _one_line(capsys)
    assert "--set arch_lr: 'nan' is not a finite number" in line and "8G" not in line
    with pytest.raises(ConfigError, match="lr: cannot read 'abc' as a number"):
        apply_overrides(RetrainConfig(), ["lr=abc"])


def test_eval_flags_of_the_other_mode_are_refused(tmp_path, capsys):
    """--checkpoint without --model said 'missing: --pred, --alpha, --trimap'; folder mode ignored
    --save-pred, --limit, --amp; --model accepted --workers 0 (ignored), which folder mode refuses."""
    folders = ["--pred", "p", "--alpha", "a", "--trimap", "t"]
    for argv, expect in ((["eval", "--checkpoint", "c.pt"], "--checkpoint needs --model MODEL"),
                         (["eval", *folders, "--save-pred", str(tmp_path / "s"), "--limit", "1", "--amp"],
                          "--save-pred, --limit, --amp apply to model-level eval (--model) only"),
                         (["eval", "--model", "closed_form", "--data", "synthetic", "--workers", "0"],
                          "--workers applies to scoring prediction folders")):
        assert main(argv) == 2, argv
        assert expect in _one_line(capsys), argv
    assert not (tmp_path / "s").exists()


def test_eval_refuses_a_file_as_save_pred_and_overwriting_a_non_json_file(tmp_path, capsys):
    """--save-pred FILE said 'File exists; free some space'; --json photo.jpg overwrote the photo."""
    jpg = _png(tmp_path / "d" / "img.jpg")
    before = jpg.read_bytes()
    model = ["eval", "--model", "closed_form", "--data", "synthetic", "--limit", "1", "--no-progress"]
    assert main([*model, "--save-pred", str(jpg)]) == 2
    assert f"--save-pred {jpg} is a file; give a folder path" in _one_line(capsys)
    for argv in ([*model, "--json", str(jpg)],
                 ["eval", *[x for sub in ("pred", "alpha", "trimap") for x in
                            (f"--{sub}", str(_png(tmp_path / sub / "0.png", (8, 8)).parent))], "--json", str(jpg)]):
        assert main(argv) == 2, argv
        assert f"--json {jpg} exists and is not a JSON file" in _one_line(capsys)
    assert jpg.read_bytes() == before
    old = tmp_path / "old_scores"  # an earlier run's JSON may be replaced, whatever its name
    old.write_text('{"SAD": 1}')
    assert main([*model, "--json", str(old)]) == 0
    assert '"count": 1' in old.read_text()


def test_derive_bench_and_plot_say_what_a_folder_is(tmp_path, tiny_run, capsys):
    """derive of a retrain run said "unknown key 'model'"; bench/plot of any folder suggested derive."""
    import shutil

    from atldas.config import save_yaml

    rt = tmp_path / "rt"
    rt.mkdir()
    save_yaml(RetrainConfig(model=GENOTYPE), rt / "config.yaml")
    assert main(["derive", str(rt), "--out", str(tmp_path / "g.json")]) == 2
    assert "is a retrain run, not a search run" in _one_line(capsys)
    empty, search = tmp_path / "empty", tmp_path / "search"
    empty.mkdir()
    shutil.copytree(tiny_run, search)
    (search / "genotype.json").unlink()
    for verb in (["bench", "--no-latency"], ["plot"]):
        assert main([*verb, str(empty)]) == 2
        line = _one_line(capsys)
        assert "is not a run directory" in line and "atldas derive" not in line
        assert main([*verb, str(search)]) == 2
        assert f"search run without genotype.json: run `atldas derive {search}`" in _one_line(capsys)


def test_search_on_a_photo_folder_says_what_its_data_takes(tmp_path, capsys):
    """said 'generic (train) does not take crop, seed'."""
    for sub in ("image", "trimap", "alpha"):
        _png(tmp_path / "d" / sub / "0.png", (8, 8, 3) if sub == "image" else (8, 8))
    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--data", str(tmp_path / "d"), "--out", str(out), "--no-progress"]) == 2
    line = _one_line(capsys)
    assert "a generic folder (photos with their mattes); search's --data takes 'synthetic' or a composed" in line
    assert not out.exists()


def test_resume_refuses_flags_that_differ_from_the_run(tmp_path, tiny_run, capsys):
    """search/retrain --resume ignored --epochs, --set, --space (an INFO line hid it)."""
    import shutil

    from atldas.config import save_yaml

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "checkpoint.pt").read_bytes()
    for extra, expect in ((["--epochs", "3"], "--epochs 3 (the run has 2)"),
                          (["--set", "C=16", "--space", "matting"], "--space matting (the run has tiny), "
                                                                    "--set C=16 (the run has 8) would change: drop them")):
        assert main(["search", "--resume", "--out", str(run), "--no-progress", *extra]) == 2, extra
        line = _one_line(capsys)
        assert f"--resume continues {run} with its saved config.yaml, which " in line and expect in line
        assert "number of epochs included, cannot change on resume" in line
    assert (run / "checkpoint.pt").read_bytes() == before
    # how a run runs may change, in config.yaml (as refuse_edited allows), which the message names
    assert main(["search", "--resume", "--out", str(run), "--no-progress", "--threads", "2"]) == 2
    line = _one_line(capsys)
    assert f"a setting of how a run runs may change on resume, in {run / 'config.yaml'} (threads: 2)" in line
    text = (run / "config.yaml").read_text()
    assert "\nthreads: 1\n" in text  # the count it ran at (conftest: one), recorded although no flag gave it
    (run / "config.yaml").write_text(text.replace("\nthreads: 1\n", "\nthreads: 2\n"))
    assert main(["search", "--resume", "--out", str(run), "--no-progress"]) == 0
    rt = tmp_path / "rt"
    rt.mkdir()
    save_yaml(RetrainConfig(model=GENOTYPE, epochs=1, out=str(rt)), rt / "config.yaml")
    (rt / "last.pt").write_bytes(b"")
    assert main(["retrain", "--resume", "--out", str(rt), "--epochs", "3", "--set", "lr=0.1"]) == 2
    assert "which --epochs 3 (the run has 1), --set lr=0.1 (the run has 0.002) would change" in _one_line(capsys)


def test_predict_overlap_needs_tile(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["predict", "--model", "closed_form", "--image", "x", "--trimap", "x", "--out", str(out),
                 "--overlap", "10"]) == 2
    assert "--overlap 10 applies to tiled prediction only: add --tile N" in _one_line(capsys)
    assert not out.exists()
    # the smallest tiles work without --overlap: its default shrinks to tile - 32
    import numpy as np

    from atldas.data.io import write_rgb, write_trimap

    write_rgb(tmp_path / "i.png", np.random.default_rng(0).random((64, 80, 3)))
    tri = np.full((64, 80), 128, np.uint8)
    tri[:, :16], tri[:, -16:] = 0, 255
    write_trimap(tmp_path / "t.png", tri)
    assert main(["predict", "--model", "closed_form", "--image", str(tmp_path / "i.png"), "--trimap",
                 str(tmp_path / "t.png"), "--out", str(out), "--tile", "64", "--no-progress"]) == 0
    assert (out / "i.png").is_file()


def test_plot_refuses_a_macro_of_another_network(tmp_path, tiny_run, capsys):
    """--macro classifier on a matting genotype drew the classifier network."""
    out = tmp_path / "g.png"
    assert main(["plot", str(tiny_run / "genotype.json"), "--macro", "classifier", "--out", str(out)]) == 2
    assert "--macro classifier: this genotype's network (space tiny) is the CheapMatting macro" in _one_line(capsys)
    assert not out.exists()


def test_a_ctrl_c_wrapped_by_compiled_code_is_an_interruption(monkeypatch, capsys):
    """numba (predict's cut-outs) turns a Ctrl-C inside its code into SystemError(...) from the
    KeyboardInterrupt: still the one-line interruption, exit 130; another SystemError stays a bug."""
    import atldas.cli as cli

    def interrupted(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc

    monkeypatch.setattr(cli, "_cmd_bench", interrupted)
    assert main(["bench", "cheapmatting"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "atldas: interrupted"

    def terminated(args):  # a SIGTERM wrapped the same way is the termination (it said "interrupted", 130)
        try:
            raise cli.Terminated()
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc

    monkeypatch.setattr(cli, "_cmd_bench", terminated)
    assert main(["bench", "cheapmatting"]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "atldas: terminated (SIGTERM)"

    def bug(args):
        raise SystemError("a real bug")

    monkeypatch.setattr(cli, "_cmd_bench", bug)
    with pytest.raises(SystemError):
        main(["bench", "cheapmatting"])


def test_hidden_files_are_not_images_of_a_folder(tmp_path):
    """The temporary file of a killed atomic write, or macOS's ._ files, beside the real images."""
    import numpy as np

    from atldas.data.io import list_images, write_alpha

    write_alpha(tmp_path / "a.png", np.zeros((8, 8)))
    write_alpha(tmp_path / ".a.png.x1y2z3.png", np.zeros((8, 8)))
    write_alpha(tmp_path / "._b.png", np.zeros((8, 8)))
    assert list(list_images(tmp_path)) == ["a"]


@pytest.mark.parametrize("argv, named", [
    (["tune", "--space", "", "--trials", "1"], "--space"),
    (["tune", "--space", "tiny", "--out", ""], "--out"),
    (["search", "--space", "tiny", "--out", ""], "--out"),
    (["bench", ""], "MODELS"),
    (["plot", ""], "SOURCE"),
    (["eval", "--model", "", "--data", "synthetic"], "--model"),  # an option here, positional in retrain
    (["retrain", ""], "MODEL"),
])
def test_an_empty_value_is_refused_not_read_as_the_default(argv, named, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty --out would have written here
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"{named}: an empty value" in _one_line(capsys, start=f"atldas {argv[0]}: error:")  # the verb's own form
    assert not list(tmp_path.iterdir())


def test_a_verbs_option_before_the_verb_is_named_as_such(capsys):
    """`atldas --debug search` said search did not recognise --debug, which its --help lists."""
    with pytest.raises(SystemExit) as exc:
        main(["--debug", "search", "--space", "tiny"])
    assert exc.value.code == 2
    line = _one_line(capsys, start="atldas search: error:")
    assert "--debug given before the verb; options go after it: atldas search --debug ..." in line
    for argv, early, verb in ((["--threads", "2", "retrain", "x"], "--threads", "retrain"),
                              (["--out=x", "search", "--space", "tiny"], "--out=x", "search")):
        with pytest.raises(SystemExit):  # said `invalid choice: '2'` and `unrecognized arguments: --out=x`
            main(argv)
        assert f"{early} given before the verb" in _one_line(capsys, start=f"atldas {verb}: error:")
    with pytest.raises(SystemExit):
        main(["search", "--space", "tiny", "--bogus"])
    assert "unrecognized arguments: --bogus (see atldas search --help)" in _one_line(capsys, start="atldas search:")
    for argv in (["--debug", "lut", "build"], ["lut", "--debug", "build"]):  # a group verb: its action's option
        with pytest.raises(SystemExit):  # `lut --debug build` was accepted and --debug ignored
            main(argv)
        assert "--debug given before the verb; options go after it: atldas lut build --debug ..." in \
            _one_line(capsys, start="atldas lut build: error:")


def test_write_errors_advise_what_fits_the_error(tmp_path):
    """'free some space' only where space is what is missing (it followed 'File exists' and 'Is a folder')."""
    import errno

    from atldas.cli import write_error

    full = write_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.pt")))
    assert "free some space" in full and re.search(r"\(\d[\d.]* (B|KiB|MiB|GiB) free on that file system\)", full)
    for code, text in ((errno.EEXIST, "File exists"), (errno.EISDIR, "Is a directory"), (errno.EACCES, "Permission denied")):
        line = write_error(OSError(code, text, str(tmp_path / "x")))
        assert line.startswith(f"cannot write {tmp_path / 'x'}: {text}; ") and "space" not in line, line


def test_an_unknown_data_layout_names_the_generic_layout_not_flags_that_do_not_exist(tmp_path):
    from atldas.data.datasets import detect_kind
    from atldas.errors import DataError

    _png(tmp_path / "photos" / "a.png")
    with pytest.raises(DataError) as e:
        detect_kind(tmp_path / "photos")
    msg = str(e.value)
    assert f"{tmp_path / 'photos'}/image" in msg and "--image" not in msg and "\n" not in msg


def test_a_seed_out_of_range_is_one_line_and_writes_nothing(tmp_path, capsys):
    """A seed too big for the generators was a traceback (Overflow when unpacking long long) that left
    a half-written run folder."""
    for argv in (["search", "--space", "tiny", "--seed", "10000000000000000", "--out", str(tmp_path / "s")],
                 ["retrain", GENOTYPE, "--seed", "-1", "--out", str(tmp_path / "r")]):
        assert main([*argv, "--no-progress"]) == 2, argv
        assert "seed must be an integer in 0..2147483647" in _one_line(capsys)
    assert not any(tmp_path.iterdir())


def test_a_bad_amount_in_a_config_file_names_the_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "f.yaml"
    cfg.write_text("hp:\n  arch_lr: abc\n")
    assert main(["search", "--space", "tiny", "--config", str(cfg), "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    assert f"{cfg}: hp: arch_lr: cannot read 'abc'" in _one_line(capsys)


def test_a_task_the_spaces_networks_do_not_fit_is_one_line_and_a_derived_task_is_taken(tmp_path, capsys):
    """--set task=classification on a matting space was a traceback deep in the loss, with a half-written
    run; a task derived from the space's own task (another loss, say) is still accepted."""
    import atldas
    from atldas.tasks import TASKS
    from atldas.tasks.matting import MattingTask

    assert main(["search", "--space", "tiny", "--set", "task=classification", "--out", str(tmp_path / "s"),
                 "--no-progress"]) == 2
    assert "use a space of the classification task (darts_cifar)" in _one_line(capsys)
    assert not (tmp_path / "s").exists()

    class L1Matting(MattingTask):
        name = "test_l1_matting"

    atldas.register_task("test_l1_matting", L1Matting())
    try:
        cfg = atldas.make_search_config(space="tiny", sets=["task=test_l1_matting"])
        cfg.check(atldas.get_task("test_l1_matting"))
    finally:
        TASKS.remove("test_l1_matting")


def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    """--out under /proc (mkdir: ENOENT) gave a FileNotFoundError traceback; it is refused before any
    work (root: no file can be created there; others: not writable)."""
    for argv in (["retrain", GENOTYPE, "--out", "/proc/atldas-run"],
                 ["search", "--space", "tiny", "--out", "/proc/atldas-run"]):
        assert main(argv) == 2, argv
        assert re.search(r"--out /proc/atldas-run: (no file can be created in /proc|the folder /proc is not writable)",
                         _one_line(capsys)), argv


def test_lut_build_refuses_a_negative_check(tmp_path, capsys):
    """--check -3 ran no check, silently."""
    assert main(["lut", "build", "--space", "tiny", "--check=-3", "--out", str(tmp_path / "l.json")]) == 2
    assert "--check takes the number of random children" in _one_line(capsys)
    assert not (tmp_path / "l.json").exists()


def test_settings_a_strategy_does_not_use_are_refused(tmp_path, capsys):
    """learn_topology=false ran darts and gdas unchanged (they learn no topology logits); gdas took
    tau_min above tau_max (atldas refused it)."""
    for strategy, sets, expect in (("darts", ["learn_topology=false"], "darts learns no topology logits"),
                                   ("gdas", ["learn_topology=false"], "gdas learns no topology logits"),
                                   ("gdas", ["tau_min=10", "tau_max=1"], "tau_min (10.0) must not exceed tau_max")):
        argv = ["search", "--space", "tiny", "--strategy", strategy, "--out", str(tmp_path / "run")]
        assert main(argv + [x for s in sets for x in ("--set", s)]) == 2
        assert expect in _one_line(capsys)
        assert not (tmp_path / "run").exists()


def test_a_budget_flag_replaces_the_budget_of_a_config_file(tmp_path):
    """--config RUN/config.yaml (target_macs set) with --target-params was refused as 'give one budget
    (got --target-macs, --target-params)', naming a flag the user did not pass."""
    cfg = _search_config(build_parser().parse_args(["search", "--space", "tiny", "--target-macs", "40M",
                                                     "--out", str(tmp_path / "a")]))
    from atldas.config import save_yaml

    save_yaml(cfg, tmp_path / "config.yaml")
    again = _search_config(build_parser().parse_args(["search", "--config", str(tmp_path / "config.yaml"),
                                                      "--target-params", "300k", "--out", str(tmp_path / "b")]))
    assert again.budget.target_params == 300e3 and again.budget.target_macs is None
    kept = _search_config(build_parser().parse_args(["search", "--config", str(tmp_path / "config.yaml"),
                                                     "--out", str(tmp_path / "c")]))
    assert kept.budget.target_macs == 40e6


def test_a_cifar_genotype_file_as_model_names_what_to_use(tmp_path, capsys):
    """derived_models/*.json (cells searched in darts_cifar, no macro) as a MODEL path: refused as the CIFAR
    classifier's without saying that the registered name builds its cells in the CheapMatting macro."""
    assert main(["bench", str(ROOT / "derived_models" / "atldas_cifar100.json"), "--size", "64", "--no-latency"]) == 2
    assert "its cells in the CheapMatting macro are the registered MODEL 'atldas_cifar100'" in _one_line(capsys)


def test_derive_and_lut_build_refuse_overwriting_a_non_json_file(tiny_run, tmp_path, capsys):
    """derive RUN --out photo.png and lut build --out photo.png wrote JSON over the photo (eval and bench
    --json refused it)."""
    png = _png(tmp_path / "photo.png")
    before = png.read_bytes()
    for argv, example in ((["derive", str(tiny_run), "--out", str(png)], "genotype.json"),
                          (["lut", "build", "--space", "tiny", "--out", str(png), "--no-progress"],
                           "lut-tiny-cpu.json")):
        assert main(argv) == 2, argv
        line = _one_line(capsys)
        assert f"--out {png} exists and is not a JSON file" in line and f"(e.g. {example})" in line, line
    assert png.read_bytes() == before
    assert main(["derive", str(tiny_run), "--out", str(tmp_path / "g.json")]) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_resuming_a_gpu_run_where_there_is_none_names_its_config_yaml(tmp_path, tiny_run, capsys):
    """It said 'use --device cpu', which --resume then refused (a resumed run keeps its config)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    text = (run / "config.yaml").read_text()
    assert "\ndevice: cpu\n" in text
    (run / "config.yaml").write_text(text.replace("\ndevice: cpu\n", "\ndevice: cuda\n"))
    assert main(["search", "--resume", "--out", str(run), "--no-progress"]) == 2
    line = _one_line(capsys)
    assert "torch sees no CUDA device here; the run keeps the device of its" in line
    assert f"{run / 'config.yaml'}: to go on here, set `device: cpu` there" in line


def test_out_of_memory_is_one_line(monkeypatch, capsys):
    """A GPU out of memory (the footprint checks measure the host's memory) was a traceback."""
    import atldas.cli as cli

    def oom(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.7 GiB total)\nmore")

    monkeypatch.setattr(cli, "_cmd_derive", oom)
    assert main(["derive", "somewhere"]) == 2
    line = _one_line(capsys)
    assert "out of memory (CUDA out of memory. Tried to allocate 2.00 GiB" in line and "batch_size" in line
    monkeypatch.setattr(cli, "_cmd_derive", lambda args: (_ for _ in ()).throw(RuntimeError("another failure")))
    with pytest.raises(RuntimeError, match="another failure"):  # not swallowed: a bug stays a traceback
        main(["derive", "somewhere"])


@pytest.mark.parametrize("extra, expected", [
    (["--strategy", "darts", "--set", "select=4"], "select=4: darts derives its argmax"),
    (["--strategy", "gdas", "--set", "k_min=1", "--set", "k_max=1"], "the gdas derive keeps 2 inputs per node"),
])
def test_darts_and_gdas_settings_they_cannot_use_are_refused_before_work(tmp_path, capsys, extra, expected):
    """select with darts drew candidates with `none` on edges (the planted search saved an invalid
    genotype); k_max=1 with gdas was refused after the first epoch had trained."""
    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--epochs", "2", "--no-progress", "--out", str(out), *extra]) == 2
    assert expected in _one_line(capsys) and not out.exists()


def test_finished_commands_print_their_result_on_stdout_even_with_quiet(tmp_path, capsys, caplog, tiny_run):
    """search, derive and retrain ended with only the folder on stdout: the genotype's cost and the best
    validation SAD were INFO lines, which --quiet drops; the synthetic-data note was on stdout."""
    import json

    from atldas.genotype import Genotype

    g = Genotype.load(tiny_run / "genotype.json")
    assert main(["derive", str(tiny_run), "--out", str(tmp_path / "g.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"genotype {g.hash()}: " in out and " M MACs" in out and "params" in out
    run = tmp_path / "r"
    assert main(["retrain", str(tiny_run), "--out", str(run), "--epochs", "1", "--quiet", "--set", "C=8",
                 "--set", "layers=3", "--set", "steps_per_epoch=1", "--set", "batch_size=2", "--set", "crop=32",
                 "--set", "val_count=2", "--set", "val_size=32", "--set", "tensorboard=false"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(r) for r in (run / "history.jsonl").read_text().splitlines()]
    assert f"best epoch 1: validation SAD {rows[-1]['best/SAD']:.4g}" in captured.out
    assert "synthetic data only" in caplog.text and "synthetic data only" not in captured.out  # a warning
    repaired = g.replace(cost={**g.cost, "repair": {"metric": "macs", "before": 28.9e6, "after": 6.7e6, "swaps": 1}})
    repaired.save(tmp_path / "repaired.json")
    from atldas.cli import _genotype_line

    assert "repaired onto the budget from 28.900 M MACs in 1 swap(s)" in _genotype_line(tmp_path / "repaired.json")
    for bad in (True, "lots", -2, 1.5, None):  # a record that is not atldas's: the line leaves it out
        g.replace(cost={**g.cost, "repair": {"metric": "macs", "before": 28.9e6, "swaps": bad}}).save(tmp_path / "b.json")
        assert "repaired" not in _genotype_line(tmp_path / "b.json")
    g.replace(cost={**g.cost, "repair": "yes"}).save(tmp_path / "b.json")
    assert _genotype_line(tmp_path / "b.json").startswith(f"genotype {g.hash()}: ")


def test_a_stopped_search_says_how_to_go_on(monkeypatch, capsys):
    import atldas.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_search", interrupted)
    assert main(["search", "--space", "tiny"]) == 130
    assert "the same command with --resume continues" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_home_relative_path_in_a_config_is_expanded(tmp_path, monkeypatch):
    """``data: ~/photos`` in a --config file (or ``--backgrounds=~/x``, which no shell expands) was
    reported as no such folder."""
    from atldas.cli import _absolute

    (tmp_path / "photos").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _absolute("~/photos") == str(tmp_path / "photos")
    assert _absolute("synthetic") == "synthetic"


def test_a_removed_working_folder_is_one_line_before_torch_loads(tmp_path):
    """In a removed working folder torch's import died ("Intel oneMKL FATAL ERROR: Cannot load
    libtorch_cpu.so"), exit status 0 and no word of why."""
    import subprocess
    import sys

    gone = tmp_path / "gone"
    gone.mkdir()
    code = "import sys; from atldas.cli import main; sys.exit(main())"
    r = subprocess.run(["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -c "{code}" derive '
                        f'"{tmp_path / "run"}" --out "{tmp_path / "g.json"}"'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == ("atldas: error: the current folder was removed; change to an "
                                                      "existing one (cd) and run again"), (r.returncode, r.stderr)


def test_a_flag_against_a_set_of_the_same_key():
    """tune's --threads and lut's --size against --set: the last --set counts, equal integers pass
    ('--threads 2 --set threads=02' was refused as a disagreement), other values are one line."""
    from atldas.config import flag_against_set
    from atldas.errors import ConfigError

    flag_against_set("--threads", 2, ["threads=02", "seed=3"], "threads")
    flag_against_set("--threads", None, ["threads=5"], "threads")
    flag_against_set("--threads", 2, ["threads=5", "threads = 2"], "threads")
    for sets, shown in ((["threads=3"], "threads=3"), (["threads=2", "threads=two"], "threads=two")):
        with pytest.raises(ConfigError, match=rf"^--threads 2 and --set {shown} disagree: give one of them$"):
            flag_against_set("--threads", 2, sets, "threads")


@pytest.mark.parametrize("shadow", ["search_spaces.py", "derived_models/__init__.py", None])
def test_a_file_in_the_working_folder_hiding_an_own_package_is_one_line(tmp_path, shadow):
    """``python -m atldas`` puts the working folder first on the path: a user's search_spaces.py there
    was imported instead of atldas's package (a traceback deep in a verb)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    if shadow is not None:
        (tmp_path / shadow).parent.mkdir(exist_ok=True)
        (tmp_path / shadow).write_text("x = 1\n")
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "atldas", "derive", str(tmp_path / "no_run")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    if shadow is None:  # nothing hides them: the verb's own error
        assert "not a search run directory" in done.stderr
    else:
        name = shadow.split("/")[0].removesuffix(".py")
        assert f"{tmp_path / shadow} hides atldas's own {name} package" in done.stderr, done.stderr
