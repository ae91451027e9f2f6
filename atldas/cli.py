"""The ``atldas`` command: argparse sub-commands that parse, then call one verb function.

Tests call :func:`main` with an argument list. A user error (:class:`~atldas.errors.AtldasError`)
prints one line and exits 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any, List, Mapping, NoReturn, Optional, Sequence, Tuple

from atldas.version import __version__
from atldas.errors import AtldasError, ConfigError, WriteError, first_line, out_of_memory
from atldas.utils import stop
from atldas.utils.malloc import keep_freed_memory
from atldas.utils.memory import bytes_text

log = logging.getLogger("atldas")


# --------------------------------------------------------------------------- verbs
# Each handler imports its verb module lazily, so `atldas --help` stays fast.

def _threads(n: Optional[int]) -> None:
    """``--threads N``: torch's CPU threads (checked; torch imported only when a flag asks for it)."""
    if n is None:
        return
    from atldas.config import check_threads

    check_threads(n)
    import torch

    torch.set_num_threads(n)


def _max_pixels(n: Optional[int]) -> None:
    """``--max-pixels N``: read images up to N pixels (default: Pillow's decompression-bomb limit)."""
    if n is not None:
        from atldas.data.io import set_max_pixels

        set_max_pixels(n)


def _cmd_eval(args: argparse.Namespace) -> int:
    from atldas import evaluate

    _max_pixels(args.max_pixels)
    from atldas.matting.metrics import format_table

    model_only = [f for f, v in (("--checkpoint", args.checkpoint), ("--data", args.data),
                                 ("--save-pred", args.save_pred), ("--device", args.device),
                                 ("--backgrounds", args.backgrounds), ("--limit", args.limit),
                                 ("--threads", args.threads), ("--amp", args.amp or None),
                                 ("--split", args.split)) if v is not None]
    if args.model is not None:
        from atldas.matting import scoring  # the model path only: scoring folders does not import torch

        _threads(args.threads)

        both = [f for f, v in (("--pred", args.pred), ("--alpha", args.alpha), ("--trimap", args.trimap)) if v]
        if both:  # --alpha and --trimap were ignored: the model's data set has its own
            raise AtldasError(f"eval takes either --model/--checkpoint/--data (run a model) or "
                              f"--pred/--alpha/--trimap (score prediction folders), not both: drop {', '.join(both)}")
        if args.workers is not None:
            raise AtldasError("--workers applies to scoring prediction folders (--pred/--alpha/--trimap); "
                              "model-level eval (--model) scores in this process: drop --workers")
        if args.data is None:
            raise AtldasError("model-level eval needs --data DIR (a data set folder) or --data synthetic")
        kw = {"backgrounds": args.backgrounds}
        if args.limit is not None and args.limit < 1:
            raise AtldasError(f"--limit must be at least 1, got {args.limit}")
        if args.limit is not None:
            kw["count" if args.data == "synthetic" else "limit"] = args.limit
        if args.split is not None:
            kw["split"] = args.split
        result = scoring.evaluate_model(model=args.model, checkpoint=args.checkpoint, data=args.data,
                                         save_pred=args.save_pred, json_path=args.json,
                                         device=args.device or "cpu",
                                         progress=not args.no_progress, amp=args.amp, **kw)
        _report(format_table(result, title=f"DIM metrics, {args.model} on {args.data}"), args.json)
        if args.save_pred:  # a result, as the JSON's line: kept by --quiet
            from atldas.utils.atomic import to_stdout

            print(f"wrote {result['count']} prediction(s) to {args.save_pred}",
                  file=sys.stderr if to_stdout(args.json) else sys.stdout)
        return 0
    given = [f for f in ("pred", "alpha", "trimap") if getattr(args, f) is not None]
    if model_only and not given:
        raise AtldasError(f"{', '.join(model_only)} need{'s' if len(model_only) == 1 else ''} --model MODEL "
                          "(model-level eval: --model MODEL [--checkpoint CKPT] --data DIR); or score "
                          "prediction folders with --pred DIR --alpha DIR --trimap DIR")
    if model_only:
        raise AtldasError(f"{', '.join(model_only)} appl{'ies' if len(model_only) == 1 else 'y'} to model-level "
                          "eval (--model) only; scoring prediction folders (--pred/--alpha/--trimap) takes --json, "
                          "--workers, --max-pixels: drop them")
    missing = [f for f in ("pred", "alpha", "trimap") if getattr(args, f) is None]
    if missing:
        raise AtldasError("eval needs --pred DIR --alpha DIR --trimap DIR (missing: "
                          + ", ".join("--" + m for m in missing) + ")")
    result = evaluate.evaluate_folders(pred_dir=args.pred, alpha_dir=args.alpha, trimap_dir=args.trimap,
                                       json_path=args.json, progress=not args.no_progress, workers=args.workers)
    _report(format_table(result, title=f"DIM metrics, {args.pred}"), args.json)
    return 0


def _report(table: str, json_path: Optional[str]) -> None:
    """A verb's table and the file its ``--json`` wrote, on standard output; with ``--json -`` the JSON
    is standard output's alone and the table goes to standard error."""
    from atldas.utils.atomic import to_stdout

    if to_stdout(json_path):
        print(table, file=sys.stderr)
        return
    print(table)
    if json_path:
        print(f"wrote {json_path}")


def _present(folder: Path, *names: str) -> str:
    """Those of ``names`` (a trailing ``/``: a folder) that ``folder`` holds, comma-separated."""
    return ", ".join(n for n in names if (Path(folder) / n.rstrip("/")).exists())


def _genotype_line(path: Path) -> str:
    """``genotype HASH: 28.264 M MACs, 34.6 k params`` (the latency by its table too, under a latency
    budget; and the repair onto the budget, when it swapped ops) of the genotype file ``path``: a finished command's result on stdout, kept by --quiet."""
    from atldas.cost import METRICS, format_cost
    from atldas.genotype import Genotype

    g = Genotype.load(path, validate=False)
    costs = [format_cost(g.cost[k], k) for k in ("macs", "params", "latency_ms") if _number(g.cost.get(k))]
    fix = g.cost.get("repair")
    swaps = fix.get("swaps") if isinstance(fix, Mapping) else None
    if type(swaps) is int and swaps > 0 and _number(fix.get("before")) and fix.get("metric") in METRICS:
        costs.append(f"repaired onto the budget from {format_cost(fix['before'], fix['metric'])} in "
                     f"{fix['swaps']} swap(s)")
    return f"genotype {g.hash()}" + (f": {', '.join(costs)}" if costs else "")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _best_line(out: Path) -> str:
    """``; best epoch 3: SAD 1.23`` from a retrain's last history row ('' without one)."""
    from atldas.utils.history import last_row

    row = last_row(Path(out) / "history.jsonl") or {}
    if not isinstance(row.get("best/SAD"), (int, float)) or not isinstance(row.get("best/epoch"), int) \
            or row["best/epoch"] < 0:
        return ""
    return f"; best epoch {row['best/epoch'] + 1}: validation SAD {row['best/SAD']:.4g}"


def _given(cfg: Any, flags: Mapping[str, Any], sets: Sequence[str], *, config: Optional[str] = None,
           aliases: Optional[Mapping[str, str]] = None,
           labels: Optional[Mapping[str, str]] = None) -> List[Tuple[str, Optional[Tuple[str, ...]], str, Any]]:
    """The settings this command line gives, as ``(how the user wrote it, config path or None, source,
    value)``; source is ``flag`` (``flags``: config key -> value, None: not given), ``set`` or ``config``.

    Args:
        cfg: the resolved config (for the leaf paths).
        aliases: old key -> current key, as :func:`atldas.config.apply_overrides` takes them.
        labels: config key -> how the flag is written, where not ``--KEY`` (e.g. ``--no-progress``).
    """
    from atldas.config import leaf_paths, read_yaml

    paths, aliases, labels = leaf_paths(cfg), dict(aliases or {}), dict(labels or {})
    given: List[Tuple[str, Optional[Tuple[str, ...]], str, Any]] = []
    for name, value in flags.items():
        if value is not None:
            label = labels.get(name, "--" + name.replace("_", "-"))
            given.append((label if isinstance(value, bool) else f"{label} {value}",
                          paths.get(aliases.get(name, name)), "flag", value))
    for pair in sets:
        key = pair.split("=", 1)[0].strip().replace("-", "_")
        given.append((f"--set {pair.strip()}", paths.get(aliases.get(key, key)), "set", None))
    for key, value in (read_yaml(config) if config else {}).items():
        for k in ([f"{key}.{kk}" for kk in value] if isinstance(value, Mapping) else [key]):
            given.append((f"--config {config}: {k}", paths.get(aliases.get(k, k)), "config", None))
    return given


def _at(obj: Any, path: Sequence[str]) -> Any:
    """The value at a config path (``("hp", "arch_lr")``), None where there is none."""
    for field in path:
        obj = getattr(obj, field, None)
    return obj


def _refuse_disagreeing_sets(cfg: Any, flags: Mapping[str, Any], sets: Sequence[str], *,
                             aliases: Optional[Mapping[str, str]] = None,
                             labels: Optional[Mapping[str, str]] = None) -> None:
    """Refuse a setting given both by its own flag and by a ``--set`` of another value (one ConfigError
    line), so that neither silently wins; equal values pass, and both override a ``--config`` file.
    ``cfg`` is the resolved config (the ``--set`` values applied); the rest as :func:`_given` takes them."""
    given = _given(cfg, flags, sets, aliases=aliases, labels=labels)
    by_flag = {path: (shown, value) for shown, path, source, value in given if source == "flag" and path}
    for shown_set, path, source, _ in given:
        if source == "set" and path in by_flag and _at(cfg, path) != by_flag[path][1]:
            raise ConfigError(f"{by_flag[path][0]} and {shown_set} disagree; give {path[-1]} once, as the flag or "
                              "as --set")


def _refuse_resume_changes(cfg: Any, saved: Any, flags: Mapping[str, Any], sets: Sequence[str], *,
                           config: Optional[str], run: Path, aliases: Optional[Mapping[str, str]] = None,
                           labels: Optional[Mapping[str, str]] = None) -> None:
    """On ``--resume``, refuse the flags, ``--set`` values and ``--config`` keys that differ from the
    run's saved ``config.yaml`` (``saved``; one ConfigError line listing them), instead of ignoring them:
    a resumed run continues its own config. ``--out`` names the run; ``--no-progress`` is a display
    setting and follows the command. ``run``: the run directory, for the message; the rest as
    :func:`_given` takes them."""
    from atldas.config import RUNTIME_KEYS

    given = [(shown, path) for shown, path, _, _ in _given(cfg, flags, sets, config=config, aliases=aliases,
                                                          labels=labels)
             if path not in (None, ("out",), ("progress",))
             and _source(_at(cfg, path)) != _source(_at(saved, path))]  # a run recorded a path as typed
    changed = [f"{shown} (the run has {'it unset' if _at(saved, path) is None else _at(saved, path)})"
               for shown, path in given]
    if given and all(path[-1] in RUNTIME_KEYS for _, path in given):  # how the run runs: config.yaml may say
        edits = ", ".join(f"{'.'.join(path)}: {_at(cfg, path)}" for _, path in given)
        raise ConfigError(f"--resume continues {run} with its saved config.yaml, which {', '.join(changed)} would "
                          f"change: a setting of how a run runs may change on resume, in {run / 'config.yaml'} "
                          f"({edits}), not by a flag; or drop {'it' if len(changed) == 1 else 'them'}")
    if changed:
        raise ConfigError(f"--resume continues {run} with its saved config.yaml, which {', '.join(changed)} would "
                          f"change: drop {'it' if len(changed) == 1 else 'them'} (a run's settings, its number of "
                          "epochs included, cannot change on resume; to train longer or otherwise, start a new run "
                          "with another --out)")


def _source(value: Any) -> Any:
    """:func:`_absolute`, with a folder that holds a ``genotype.json`` as that file (a run folder and
    its genotype are one MODEL: ``retrain RUN`` then ``retrain RUN/genotype.json --resume``)."""
    if isinstance(value, str) and value and Path(value).is_dir() and (Path(value) / "genotype.json").is_file():
        return os.path.abspath(Path(value) / "genotype.json")
    return _absolute(value)


def _absolute(value: Any) -> Any:
    """An existing file or folder named relative to the working directory (or ``~/...``), as an absolute
    path; any other value as it is. A run's config.yaml is read again from elsewhere (``derive RUN_DIR``, ``--resume``):
    a relative ``--lut`` or ``--data`` there named nothing once the working directory changed."""
    if isinstance(value, str) and value.startswith("~"):  # a shell expands it, a YAML file or --opt=~/x does not
        value = os.path.expanduser(value)
    if isinstance(value, str) and value not in ("", "synthetic") and not Path(value).is_absolute() and Path(value).exists():
        return os.path.abspath(value)  # a symlink stays the link
    return value


def _absolute_sets(pairs: Sequence[str]) -> List[str]:
    """``--set KEY=VALUE`` pairs with the value of a location key (``data``, ``backgrounds``, ``lut``, ...,
    also as ``data.source``) made absolute where it names an existing path (:func:`_absolute`): ``tune``
    passes them to every trial, whose ``config.yaml`` is read again from elsewhere."""
    from atldas.config import LOCATION_KEYS

    out = []
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if eq and key.strip().replace("-", "_").split(".")[-1] in LOCATION_KEYS:
            absolute = _absolute(value.strip())
            pair = pair if absolute == value.strip() else f"{key}={absolute}"
        out.append(pair)
    return out


def _retrain_config(args: argparse.Namespace):
    import dataclasses

    from atldas.config import apply_overrides, check_threads, load_yaml
    from atldas.retrain import RetrainConfig

    cfg = load_yaml(RetrainConfig, args.config) if args.config else RetrainConfig()
    flags = {"model": args.model, "data": args.data, "val_data": args.val_data, "backgrounds": args.backgrounds,
             "foregrounds": args.foregrounds,
             "epochs": args.epochs,
             "seed": args.seed, "out": args.out, "device": args.device, "threads": args.threads}
    changes = {k: v for k, v in flags.items() if v is not None}
    if args.no_progress:
        changes["progress"] = False
    cfg = apply_overrides(dataclasses.replace(cfg, **changes), args.set or [])
    labels = {"model": "GENOTYPE|MODEL", "progress": "--no-progress"}
    _refuse_disagreeing_sets(cfg, changes, args.set or [], labels=labels)
    check_threads(cfg.threads, where="threads")  # from --config or --set
    cfg = dataclasses.replace(cfg, **{k: _absolute(getattr(cfg, k))
                                      for k in ("model", "data", "val_data", "backgrounds", "foregrounds")})
    from atldas.retrain import default_out

    run = Path(cfg.out) if cfg.out else (default_out(cfg) if cfg.model else None)
    if args.resume and run is not None and (run / "last.pt").is_file() and (run / "config.yaml").is_file():
        from atldas.config import build, read_run_config

        saved = build(RetrainConfig, read_run_config(run / "config.yaml"), where=str(run / "config.yaml"))
        _refuse_resume_changes(cfg, saved, changes, args.set or [], config=args.config, run=run, labels=labels)
    return cfg


def _cmd_retrain(args: argparse.Namespace) -> int:
    from atldas.retrain import retrain

    from atldas.utils.dist import is_main

    cfg = _retrain_config(args)
    out = retrain(cfg, resume=args.resume, force=args.force)
    if is_main():
        print(f"retrain finished: {out} ({_present(out, 'best.pt', 'last.pt', 'history.jsonl', 'config.yaml', 'tb/')})"
              f"{_best_line(out)}")
        if not args.resume and cfg.data == "synthetic" and not cfg.foregrounds:
            log.warning("trained on synthetic data only; on real photos expect smooth, trimap-shaped mattes. "
                        "Train on real mattes (--data DIR, or --foregrounds DIR): README, 'What quality to expect'")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from atldas.export import export_onnx

    report = export_onnx(model=args.model, checkpoint=args.checkpoint, onnx_path=args.onnx, opset=args.opset,
                         check=not args.no_check, size=args.size, optimize=not args.no_optimize,
                         initial_weights=args.initial_weights)
    check = report["check"]
    detail = (f"; onnxruntime matches PyTorch on {check['input']} (max abs diff {check['max_abs_diff']:.3g})"
              if check else "")
    print(f"wrote {report['onnx']} (opset {report['opset']}, input 'input' (B, 6, H, W), output 'alpha', "
          f"H and W dynamic multiples of 32){detail}")
    return 0


def _cmd_data_preview(args: argparse.Namespace) -> int:
    from atldas.data import preview

    path = preview.write_preview(out=args.out, count=args.count, size=args.size, seed=args.seed,
                                 backgrounds=args.backgrounds, foregrounds=args.foregrounds)
    print(f"wrote {path}")
    return 0


def _search_config(args: argparse.Namespace):
    import dataclasses

    from atldas.config import check_threads, parse_amount
    from atldas.run import ALIASES, make_search_config

    flags = {"space": args.space, "strategy": args.strategy, "data": args.data, "epochs": args.epochs,
             "seed": args.seed, "out": args.out, "device": args.device, "backgrounds": args.backgrounds,
             "lut": args.lut, "threads": args.threads, "progress": False if args.no_progress else None}
    for key in ("target_macs", "target_params", "target_latency_ms"):
        value = getattr(args, key)
        flags[key] = None if value is None else parse_amount(value)
    cfg = make_search_config(file=args.config, sets=args.set or [], **flags)
    _refuse_disagreeing_sets(cfg, flags, args.set or [], aliases=ALIASES, labels={"progress": "--no-progress"})
    check_threads(cfg.threads, where="threads")  # from --config or --set
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=_absolute(cfg.data.source),
                                                            backgrounds=_absolute(cfg.data.backgrounds)),
                              budget=dataclasses.replace(cfg.budget, lut=_absolute(cfg.budget.lut)))
    if args.resume:
        from atldas.config import read_run_config
        from atldas.rundir import RunDir
        from atldas.run import CHECKPOINT, FORMAT, load_search_config
        from atldas.search import default_out

        run = Path(cfg.out) if cfg.out else default_out(cfg)
        if (run / CHECKPOINT).is_file() and (run / "config.yaml").is_file():
            RunDir(run, checkpoint=CHECKPOINT, kind="search").load(fmt=FORMAT)  # another version's: told so first
            saved = load_search_config(read_run_config(run / "config.yaml"), where=str(run / "config.yaml"))
            _refuse_resume_changes(cfg, saved, flags, args.set or [], config=args.config, run=run, aliases=ALIASES,
                                   labels={"progress": "--no-progress"})
    return cfg


def _cmd_search(args: argparse.Namespace) -> int:
    from atldas.search import search

    from atldas.utils.dist import is_main

    out = search(_search_config(args), resume=args.resume, force=args.force)
    if is_main():
        print(f"search finished: {out} ({_present(out, 'genotype.json', 'history.jsonl', 'checkpoint.pt', 'tb/', 'plots/')}); "
              f"{_genotype_line(Path(out) / 'genotype.json')}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from atldas.tune import tune

    from atldas.config import flag_against_set

    flag_against_set("--threads", args.threads, args.set or [], "threads")  # --set won without a word
    _threads(args.threads)
    result = tune(space=args.space, trials=args.trials, out=args.out, storage=args.storage, study=args.study,
                  objectives=args.objective, space_file=args.space_file, sets=_absolute_sets(args.set or []),
                  prune=args.prune, retrain_epochs=args.retrain_epochs,
                  retrain_sets=_absolute_sets(args.retrain_set or []))
    print(result["table"])
    pruned = f" ({result['pruned']} pruned)" if result.get("pruned") else ""
    print(f"study {result['study']}: {result['finished']} finished trial(s){pruned}; {args.out}/pareto.json, "
          f"{result['plot']}, {args.out}/best/")
    return 0


def _cmd_derive(args: argparse.Namespace) -> int:
    from atldas.run import derive_run

    path = derive_run(args.run_dir, out=args.out, stored_costs=args.stored_costs, device=args.device)
    print(f"wrote {path}: {_genotype_line(path)}")
    return 0


def _cmd_lut_build(args: argparse.Namespace) -> int:
    from atldas.latency import summary
    from atldas.lut import lut_build

    lut, path, checks = lut_build(space=args.space, device=args.device, size=args.size, threads=args.threads,
                                  min_run_time=args.min_run_time, check=args.check, out=args.out,
                                  sets=args.set or [], progress=not args.no_progress)
    print(summary(lut))
    for rec in checks:
        print(f"  check {rec['genotype']}: table {rec['table_ms']:.3f} ms, measured {rec['measured_ms']:.3f} ms "
              f"(x{rec['ratio']:.2f})")
    print(f"wrote {path}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from atldas.plot import plot

    for path in plot(args.source, out=args.out, macro=args.macro):
        print(f"wrote {path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from atldas.predict import predict

    _threads(args.threads)
    _max_pixels(args.max_pixels)
    written = predict(model=args.model, checkpoint=args.checkpoint, image=args.image, trimap=args.trimap,
                      out=args.out, bits=args.bits, cutout=not args.no_cutout, device=args.device,
                      tile=args.tile, overlap=args.overlap, amp=args.amp, progress=not args.no_progress,
                      max_size=args.max_size)
    n = len(written) if args.no_cutout else len(written) // 2  # alpha (+ cut-out) per image
    extra = "" if args.no_cutout else f" and {n} RGBA cut-out(s)"
    print(f"wrote {n} alpha matte(s){extra} to {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from atldas import bench

    timing = {k: v for k, v in (("threads", args.threads), ("min_run_time", args.min_run_time),
                                 ("repeats", args.repeats)) if v is not None}
    if args.no_latency and timing:  # nothing is timed: they were ignored without a word
        flags = ", ".join("--" + k.replace("_", "-") for k in timing)
        raise AtldasError(f"{flags} set how latency is timed, and --no-latency times nothing: drop "
                          f"{'it' if len(timing) == 1 else 'them'} or --no-latency")
    records = bench.bench(args.models, size=args.size, device=args.device, json_path=args.json,
                          latency=not args.no_latency, **timing)
    _report(bench.format_table(records), args.json)
    return 0


# --------------------------------------------------------------------------- parser

class _Parser(argparse.ArgumentParser):
    """An ArgumentParser (and, through ``add_subparsers``, every sub-command's) whose usage errors are
    one line, ``PROG: error: MESSAGE (see PROG --help)``, exit status 2, instead of the usage block;
    unknown arguments are reported by the sub-command that was given them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_defaults(_parser=self)  # the innermost sub-command's wins

    def parse_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        verb, early = self._early_options(argv)
        if early:  # `atldas --threads 2 search`: the verb's own option, given before it
            verb.error(f"{' '.join(early)} given before the verb; options go after it: {verb.prog} {early[0]} ...")
        ns, extra = self.parse_known_args(argv, namespace)
        if extra:
            getattr(ns, "_parser", self).error(f"unrecognized arguments: {' '.join(extra)}")
        return ns

    def _early_options(self, argv: List[str]) -> Tuple[Any, List[str]]:
        """(the verb's parser, the options of that verb given before it) for the first verb in ``argv``."""
        parser, start, end = self, 0, None
        while True:  # down to the innermost verb (`lut build`, `data preview`)
            verbs = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
            i = next((j for j in range(start, len(argv)) if argv[j] in verbs), None)
            if i is None:
                break
            parser, start, end = verbs[argv[i]], i + 1, i
        if parser is self:
            return self, []
        return parser, [t for t in argv[:end] if t.startswith("-") and t.split("=", 1)[0] in
                        parser._option_string_actions and t.split("=", 1)[0] not in self._option_string_actions]

    def error(self, message: str) -> NoReturn:
        flag = re.match(r"argument (\S+): expected one argument$", message)
        if flag:  # e.g. --target-macs -5M: argparse takes -5M for a flag
            message += f"; write a value that starts with '-' as {flag.group(1).split('/')[-1]}=VALUE"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one sub-command per verb)."""
    parser = _Parser(prog="atldas", description="Hardware-aware differentiable architecture search "
                                     "with explicit topology learning (ATL-DAS) for image matting.")
    parser.add_argument("--version", action="version", version=f"atldas {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    common.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("search", parents=[common], help="search a supernet under a cost budget")
    p.add_argument("--space", help="search space (matting, tiny, darts_cifar, ...); default matting")
    p.add_argument("--strategy", help="atldas (default), darts, gdas, random or soft (the soft-mixture ablation)")
    p.add_argument("--data", help="'synthetic' (default) or a composed training set (Composition-1K "
                                  "Training_set/, Distinctions-646 Train/) with --backgrounds; for the matting "
                                  "spaces (planted: teacher:N)")
    p.add_argument("--backgrounds", help="folder of background photos for the synthetic data")
    p.add_argument("--target-macs", help="MACs budget at the space's input size, e.g. 25G (default: the space's; "
                                         "matting 25G, darts_cifar 500M; tiny and planted none)")
    p.add_argument("--target-params", help="parameter budget, e.g. 2M")
    p.add_argument("--target-latency-ms", help="latency budget in ms (needs --lut)")
    p.add_argument("--lut", help="latency table from `atldas lut build`")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--epochs", type=int, help="search epochs (default: the space's)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--out", help="run directory (default runs/search-SPACE-STRATEGY-seedS)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true",
                   help="start afresh in an --out that holds a run: the old folder is moved aside to OUT.replaced-TIME")
    p.add_argument("--config", help="YAML config file (e.g. a run's config.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config key (repeatable; a run's config.yaml shows them all, an unknown key "
                        "lists the known ones); a key that its own flag also sets (--out, --epochs, ...) to another "
                        "value is refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("tune", parents=[common], help="many searches on Optuna: settings against quality and cost")
    p.add_argument("--space", default="matting", help="search space of every trial (default matting)")
    p.add_argument("--trials", type=int, default=10, help="finished trials the study should hold (default 10)")
    p.add_argument("--out", default="runs/tune", help="study folder: trial run directories, study.log, pareto.* "
                                                      "(default runs/tune)")
    p.add_argument("--storage", help="journal file or RDB URL (sqlite:///f.db, postgresql://...); default "
                                     "OUT/study.log")
    p.add_argument("--study", help="study name (default tune-SPACE); workers sharing storage and name share it")
    p.add_argument("--objective", nargs="+", default=["loss", "macs"], choices=("loss", "macs", "params", "sad"),
                   help="objectives to minimise (default: loss macs; sad needs --retrain-epochs)")
    p.add_argument("--retrain-epochs", type=int, default=0, metavar="N",
                   help="retrain each trial's genotype for N epochs (matting spaces; gives --objective sad)")
    p.add_argument("--retrain-set", action="append", metavar="KEY=VALUE",
                   help="retrain setting of those retrains (as retrain --set takes them; an unknown key lists the "
                        "known ones)")
    p.add_argument("--space-file", help="YAML tuning space: --set key -> {type, low, high[, log, step]} or "
                                        "{type: categorical, choices}; default arch_lr, w_lr, k_max (atldas.tune.DEFAULT_SPACE)")
    p.add_argument("--prune", action="store_true", help="stop trials whose per-epoch loss is worse than the median "
                                                         "of earlier trials at that epoch (single objective: --objective loss)")
    p.add_argument("--threads", type=int, help="torch CPU threads per worker")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="fixed search setting for every trial (as search --set takes them; an unknown key lists "
                        "the known ones; not space, out, progress or plots: tune sets them)")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("derive", parents=[common], help="derive the genotype of a search run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="search run directory")
    p.add_argument("--out", help="genotype file to write (default RUN_DIR/genotype.json)")
    p.add_argument("--stored-costs", action="store_true",
                   help="cost candidates with the run's own cost_table.json (a run of an earlier atldas, whose "
                        "cost model has changed since)")
    p.add_argument("--device", help="where the select stage's fits and random search's ranking run (cpu or cuda; "
                                    "default: the device the run searched on when it is here, else cpu)")
    p.set_defaults(func=_cmd_derive)

    p = sub.add_parser("plot", parents=[common], help="draw the cells and macro network of a genotype")
    p.add_argument("source", metavar="GENOTYPE|RUN_DIR|NAME",
                   help="genotype JSON or DARTS Genotype(...) file, search run directory, or registered name")
    p.add_argument("--out", help="combined figure, FILE.png or FILE.svg (default RUN_DIR/plots/genotype.png, "
                                 "beside the genotype file, or ./NAME.png for a registered name); the cells "
                                 "and macro view go beside it as FILE_normal, FILE_reduce, FILE_macro")
    p.add_argument("--macro", default="auto", choices=("auto", "matting", "classifier"),
                   help="macro view (default: from the genotype's space)")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("eval", parents=[common], help="score alpha mattes with SAD/MSE/Grad/Conn (DIM)")
    p.add_argument("--pred", help="folder of predicted alpha mattes")
    p.add_argument("--alpha", help="folder of ground-truth alpha mattes")
    p.add_argument("--trimap", help="folder of trimaps (0/128/255)")
    p.add_argument("--model", help="MODEL to run (model-level eval)")
    p.add_argument("--checkpoint", help="checkpoint for --model")
    p.add_argument("--data", help="dataset folder for --model (any layout the readers know), or 'synthetic'")
    p.add_argument("--save-pred", help="with --model: write the 8-bit predictions to this folder")
    p.add_argument("--device", help="with --model: cpu (default) or cuda")
    p.add_argument("--backgrounds", help="with --model: background folder for composed test sets (D646)")
    p.add_argument("--limit", type=int, help="with --model: score the first N images only")
    p.add_argument("--split", choices=("test", "train"),
                   help="with --model: the split of --data to score (default test; train: e.g. alphamatting.com's "
                        "training set, the one whose ground truth is public)")
    p.add_argument("--threads", type=int, help="with --model: torch CPU threads")
    p.add_argument("--amp", action="store_true", help="with --model: mixed precision (bfloat16 on cpu, float16 on "
                                                      "cuda; not exact, see the README)")
    p.add_argument("--json", help="write the scores as JSON to this file (-: to standard output, the table to "
                                  "standard error)")
    p.add_argument("--workers", type=int, help="with --pred: processes that score images, at most one per "
                                               "image (default: one per core; one for fewer than 4 images)")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="read images of up to N pixels (default 89478485, Pillow's decompression-bomb limit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("retrain", parents=[common], help="train the network of a genotype (or any MODEL)")
    p.add_argument("model", metavar="GENOTYPE|MODEL", nargs="?",
                   help="genotype file, search run directory or registered model (not needed with --resume)")
    p.add_argument("--data", help="'synthetic' (default), a composed training set (Composition-1K, "
                                  "Distinctions-646, with --backgrounds), or real photos with their mattes "
                                  "(image/ trimap/ alpha/, AIM-500, ...: trained on crops, every 10th photo "
                                  "held out for validation unless --val-data or the folder has its own test split)")
    p.add_argument("--val-data", help="validation set folder (its test split, any layout eval reads, e.g. a "
                                      "generic image/trimap/alpha folder; its first 16 images: --set val_count=N, 0 for all); "
                                      "default: --data's own")
    p.add_argument("--backgrounds", help="background folder (composed training sets; synthetic photos)")
    p.add_argument("--foregrounds", help="real foregrounds mixed into --data synthetic: a folder with fg/ and "
                                         "alpha/ (files matched by stem); share: --set foreground_prob=P (0.5)")
    p.add_argument("--epochs", type=int, help="epochs (default 10)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", help="run directory (default runs/retrain-MODEL-seedS)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--force", action="store_true",
                   help="start afresh in an --out that holds a run: the old folder is moved aside to OUT.replaced-TIME")
    p.add_argument("--config", help="YAML config file (e.g. a run's config.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config key, e.g. C=16, layers=5, lr=1e-3, ema=0.999 (repeatable; a run's "
                        "config.yaml shows them all, an unknown key lists the known ones); a key that its own flag "
                        "also sets (--out, --epochs, ...) to another value is refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_retrain)

    p = sub.add_parser("export", parents=[common], help="export a MODEL with its weights to ONNX")
    p.add_argument("--model", required=True, help="MODEL: registered name, genotype file or run directory")
    p.add_argument("--checkpoint", help="the trained weights (e.g. RUN_DIR/best.pt); required unless --initial-weights")
    p.add_argument("--initial-weights", action="store_true",
                   help="export the untrained network, without --checkpoint (to time or inspect the graph)")
    p.add_argument("--onnx", required=True, help="ONNX file to write (a name ending in .onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--size", type=int, default=256, help="export input size, a multiple of 32 >= 96 (default 256)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--no-optimize", action="store_true",
                   help="skip the ONNX graph optimizer (about twice as fast to export, a larger graph)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", parents=[common], help="alpha mattes and RGBA cut-outs for your images and trimaps")
    p.add_argument("--model", required=True, help="MODEL: registered name, genotype JSON file, run directory, "
                                                  "or an .onnx file from `atldas export` (run by onnxruntime)")
    p.add_argument("--checkpoint", help="weights of MODEL (.pt/.pth; the released {'model': state_dict} "
                                        "format, a retrain checkpoint or a plain state dict); required for "
                                        "learned models")
    p.add_argument("--image", required=True, help="image file, or folder of images")
    p.add_argument("--trimap", required=True, help="trimap file (0/128/255), or folder of trimaps matched by "
                                                   "file stem")
    p.add_argument("--out", required=True, help="output folder: <stem>.png alpha, rgba/<stem>.png cut-out")
    p.add_argument("--bits", type=int, default=8, choices=(8, 16), help="alpha PNG bit depth (default 8)")
    p.add_argument("--no-cutout", action="store_true", help="write the alpha mattes only")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--tile", type=int, help="predict in tiles of N x N pixels (a multiple of 32, at least 64) to bound memory; exact only for "
                        "networks without image-wide context (cheapmatting and aematter differ slightly)")
    p.add_argument("--overlap", type=int, help="overlap of neighbouring tiles in pixels (default min(64, --tile - 32), at most --tile - 32)")
    p.add_argument("--max-size", type=int, metavar="N", help="predict images whose longer side exceeds N on a copy "
                   "scaled to N, alpha upsampled and clamped by the full trimap (bounded memory for any network; "
                   "loses detail: README)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on cpu, float16 on cuda)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="read images of up to N pixels (default 89478485, Pillow's decompression-bomb limit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("bench", parents=[common], help="params, MACs and latency of models side by side")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="registered name, genotype JSON file or run directory (one or more)")
    p.add_argument("--size", type=int, default=1024, help="input side in pixels (default 1024)")
    p.add_argument("--device", default="cpu", help="where latency is measured: cpu (default) or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads while timing (default: torch's count)")
    p.add_argument("--json", help="write the records as JSON to this file (-: to standard output, the table to "
                                  "standard error)")
    p.add_argument("--no-latency", action="store_true", help="params and MACs only (fast)")
    p.add_argument("--min-run-time", type=float, help="seconds of timing per model (default 1)")
    p.add_argument("--repeats", type=int, help="minimum number of timing samples (default 5), within 60 x --min-run-time (fewer: a warning)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("data", help="data utilities (preview the synthetic data)")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    q = dsub.add_parser("preview", parents=[common],
                        help="write a PNG grid of synthetic image / trimap / alpha samples")
    q.add_argument("--out", default="synthetic_preview.png", help="PNG file to write (default synthetic_preview.png)")
    q.add_argument("--count", type=int, default=8, help="number of samples (rows; default 8)")
    q.add_argument("--size", type=int, default=256, help="sample size in pixels (default 256)")
    q.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    q.add_argument("--backgrounds", default=None, help="folder of background photos (optional)")
    q.add_argument("--foregrounds", default=None, help="folder of real foregrounds: fg/ and alpha/ (optional)")
    q.set_defaults(func=_cmd_data_preview)

    p = sub.add_parser("lut", help="latency tables for --target-latency-ms")
    lsub = p.add_subparsers(dest="lut_command", metavar="ACTION")
    lsub.required = True
    q = lsub.add_parser("build", parents=[common],
                        help="measure the latency of every candidate of a search space on this machine")
    q.add_argument("--space", default="matting", help="search space (matting, tiny, darts_cifar, planted); default matting")
    q.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    q.add_argument("--size", type=int, help="input size in pixels (default: the space's, 1024 for matting)")
    q.add_argument("--threads", type=int, default=1, help="torch CPU threads while timing (default 1)")
    q.add_argument("--min-run-time", type=float, default=0.05, help="seconds of timing per entry (default 0.05)")
    q.add_argument("--check", type=int, default=0, metavar="N",
                   help="also measure N random children and compare with the table's estimate")
    q.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a knob of the space's target network, e.g. target_C=32 (repeatable)")
    q.add_argument("--out", help="JSON file to write (default lut-SPACE-DEVICE.json)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_lut_build)
    return parser


def thread_policy(*, chosen: Optional[int] = None, notice: bool = True) -> Optional[int]:
    """Torch's CPU threads for this command when the user chose none (no ``OMP_NUM_THREADS``): one
    thread per core that is not busy, ``max(1, cores - int(load average))``, set in the environment
    before torch is imported. Returns the count chosen, or None.

    Measured on a 2-core machine (``experiments/bench_threads.py``; README "Threads", the table in
    experiments/MEASURED.md): quiet, 2
    threads take 0.60x (inference at 512^2) and 0.82x (search steps) the wall time of 1; with one
    competing busy process they take 2.4x and 2.0x (OpenMP's barriers wait for a descheduled thread),
    and 2.2x for the search steps even with ``OMP_WAIT_POLICY=PASSIVE``, which also gives up the gain
    on a quiet machine (0.98x). So the count follows the free cores; ``--threads`` still overrides it
    (``chosen``: then the busy notice is not logged, nor with ``notice=False``: a verb without
    ``--threads``, or one that runs no network).
    """
    if "OMP_NUM_THREADS" in os.environ:
        return None
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - no load average on this platform
        return None
    n = max(1, cores - int(load))
    os.environ["OMP_NUM_THREADS"] = str(n)
    if n < cores and chosen is None and notice:  # --threads N (``chosen``) sets the count itself, later
        log.info("the machine is busy (load %.1f on %d cores): %d torch thread(s); --threads N chooses", load,
                 cores, n)
    return n


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler ending a job, torchrun stopping its workers), raised where the
    process is, so that what runs on Ctrl-C runs too: temporary files removed, a folder a refused run
    made removed, every checkpoint already written left whole."""


def _ignore(signum: int, frame: Any) -> None:
    """A Python-level handler that does nothing (SIG_DFL would make a SIGCHLD already pending print
    'ignored due to race condition')."""


def _terminate(signum: int, frame: Any) -> None:
    if hasattr(signal, "SIGCHLD"):  # a group's SIGTERM (torchrun, Slurm) ends the DataLoader workers too:
        signal.signal(signal.SIGCHLD, _ignore)  # torch's handler would raise on them mid-cleanup
    stop.request(Terminated)  # raised again at the next step should this one be swallowed (utils/stop.py)
    raise Terminated()


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C: Python's KeyboardInterrupt, also remembered for the next step (utils/stop.py)."""
    stop.request(KeyboardInterrupt)
    raise KeyboardInterrupt


def _terminated(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a :class:`Terminated` was being handled (torch's DataLoader
    reports its workers, ended by the same signal, with a RuntimeError of its own)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Terminated):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``atldas`` console script; returns the exit status. Called from Python, it
    leaves the process's logging, ``OMP_NUM_THREADS``, torch's thread count and signal handlers as it
    found them (the malloc tuning of :func:`atldas.keep_freed_memory` stays: it is process-wide; so does
    OpenCV's thread count, set to 0 by a run with data-loading workers so that they do not oversubscribe
    the cores; Optuna's logger is put back by :func:`atldas.tune.tune` itself)."""
    with _process_state_restored():
        if threading.current_thread() is not threading.main_thread():  # a signal handler needs the main thread
            return _main(argv)
        before = signal.signal(signal.SIGTERM, _terminate)
        own_int = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not a caller's own handler
        before_int = signal.signal(signal.SIGINT, _interrupt) if own_int else None
        chld = signal.getsignal(signal.SIGCHLD) if hasattr(signal, "SIGCHLD") else None
        try:
            return _main(argv)
        finally:
            stop.clear()
            signal.signal(signal.SIGTERM, before)
            if before_int is not None:
                signal.signal(signal.SIGINT, before_int)
            if chld is not None:
                signal.signal(signal.SIGCHLD, chld)


@contextlib.contextmanager
def _process_state_restored() -> Any:
    """What a command sets for itself, put back afterwards for a Python caller: the root logger's
    handlers and level (``basicConfig``: a second call's ``--quiet`` was ignored, and every library's
    INFO lines went to stderr after the first), ``OMP_NUM_THREADS`` (the thread policy's), and torch's
    thread count where torch was imported before (``--threads``, a run's ``threads``)."""
    handlers, level = list(logging.root.handlers), logging.root.level
    omp = os.environ.get("OMP_NUM_THREADS")
    torch_mod = sys.modules.get("torch")
    threads = torch_mod.get_num_threads() if torch_mod is not None else None
    try:
        yield
    finally:
        for h in [h for h in logging.root.handlers if h not in handlers]:
            logging.root.removeHandler(h)
        logging.root.setLevel(level)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
        if threads is not None and torch_mod.get_num_threads() != threads:
            torch_mod.set_num_threads(threads)


def _hidden_packages() -> str:
    """What hides atldas's own top-level packages (``search_spaces``, ``derived_models``, installed beside
    ``atldas``), as one line, or ``""``: ``python -m atldas`` (and a script) puts the working folder
    first on the path, where a file or folder of that name would be imported instead."""
    import importlib.util

    home = Path(__file__).resolve().parent.parent
    for name in ("search_spaces", "derived_models"):
        spec = getattr(sys.modules.get(name), "__spec__", None) or importlib.util.find_spec(name)
        if spec is None:
            return f"atldas's own {name} package is missing from {home}: reinstall atldas"
        origin = spec.origin or next(iter(spec.submodule_search_locations or []), name)  # a bare folder: no origin
        if spec.origin is None or Path(origin).resolve().parent.parent != home:
            return (f"{origin} hides atldas's own {name} package (in {home}): rename it, or run atldas from "
                    "another folder")
    return ""


def _main(argv: Optional[List[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    empty = next((k for k, v in vars(args).items() if v == "" or (isinstance(v, list) and "" in v)), None)
    if empty is not None:  # '' would fall back to a default (the matting space, the current folder)
        verb = getattr(args, "_parser", parser)
        action = next((a for a in verb._actions if a.dest == empty), None)
        named = max(action.option_strings, key=len) if action is not None and action.option_strings else empty.upper()
        verb.error(f"{named}: an empty value; give a name or path (or leave the option out)")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s: %(message)s")
    try:  # before torch loads: its import dies with "oneMKL FATAL ERROR" in a removed working folder
        os.getcwd()
    except FileNotFoundError:
        print("atldas: error: the current folder was removed; change to an existing one (cd) and run again",
              file=sys.stderr)
        return 2
    hidden = _hidden_packages()
    if hidden:
        print(f"atldas: error: {hidden}", file=sys.stderr)
        return 2
    # the busy notice only where --threads can answer it (eval --pred runs no network and refuses it)
    thread_policy(chosen=getattr(args, "threads", None), notice=hasattr(args, "threads") and not getattr(args, "pred", None))
    keep_freed_memory()  # large tensors reuse freed memory instead of faulting in fresh pages
    try:
        from atldas.config import check_threads

        check_threads(getattr(args, "threads", None))  # every verb's --threads, before torch starts them
        with _above_bars(args):
            return int(args.func(args) or 0)
    except AtldasError as exc:
        if args.debug:
            raise
        print(f"atldas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _stopped(exc, args)
    except SystemError as exc:  # numba (predict's cut-outs) wraps a Ctrl-C (or SIGTERM) in its compiled code so,
        inner = _chain(exc)     # once or twice (SystemError <- SystemError <- KeyboardInterrupt)
        stopped_by = next((e for e in inner if isinstance(e, KeyboardInterrupt)), None)
        if args.debug or stopped_by is None:
            raise
        return _stopped(stopped_by, args)
    except OSError as exc:
        if args.debug or (exc.errno not in WRITE_ERRNOS and not isinstance(exc, WriteError)):
            raise
        print(f"atldas: error: {write_error(exc)}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch's allocator (a GPU's memory, which the footprint checks do not see)
        if _terminated(exc) and not args.debug:
            return _stopped(Terminated(), args)
        if args.debug or not out_of_memory(exc):
            raise
        print(f"atldas: error: out of memory ({first_line(exc)[:160]}); every checkpoint written is whole: a "
              "smaller --set batch_size or crop (search, retrain, tune), --tile or --max-size (predict), or "
              "smaller images (eval) need less", file=sys.stderr)
        return 2



def _chain(exc: BaseException) -> List[BaseException]:
    """The exceptions behind ``exc`` (its causes and contexts), nearest first, each once."""
    out: List[BaseException] = []
    e = exc.__cause__ or exc.__context__
    while e is not None and e not in out and len(out) < 32:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


#: What a stopped run of these verbs leaves and how to go on (after "atldas: interrupted").
_RESUMES = ("; the last epoch's checkpoint is kept whole: the same command with --resume continues (stopped "
            "before the first one, the same command starts over)")
_GO_ON = {"search": _RESUMES, "retrain": _RESUMES,
          "tune": "; finished trials are kept in the study: the same command goes on with the stopped trial's "
                  "settings first"}


def _above_bars(args: argparse.Namespace) -> Any:
    """Log lines written above a progress bar (tqdm's redirect), not glued to it: only where bars are
    drawn and the root logger writes to the console itself (the redirect adds a stderr handler where
    there was none: a program that logs to a file would get atldas's lines on stderr)."""
    from atldas.utils.progress import show_progress

    console = [h for h in logging.root.handlers
               if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stdout, sys.stderr)]
    if not console or getattr(args, "no_progress", False) or not show_progress(True):
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logging.root])


def _stopped(exc: KeyboardInterrupt, args: Optional[argparse.Namespace] = None) -> int:
    """One line and the shell's status for a stop: SIGTERM (143) or Ctrl-C (130); for a verb that
    resumes, how to go on."""
    verb = getattr(args, "command", None) if args is not None else None
    if isinstance(exc, Terminated):
        print(f"atldas: terminated (SIGTERM){_GO_ON.get(verb, '')}", file=sys.stderr)
        return 143
    print(f"atldas: interrupted{_GO_ON.get(verb, '')}", file=sys.stderr)
    return 130


#: OS errors of writing that are the user's situation, not a bug: one line, no traceback
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
               errno.EEXIST, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP)


def write_error(exc: OSError) -> str:
    """One line for an OS write error: the path, the reason, and the free space where it matters."""
    where = exc.filename or "a file"
    line = f"cannot write {where}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and exc.filename:
        folder = Path(exc.filename).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        line += f" ({bytes_text(shutil.disk_usage(folder).free)} free on that file system)"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return line + "; free some space or choose another path"
    if exc.errno == errno.EFBIG:
        return line + " (a file size limit: `ulimit -f`, or the file system's own); raise it or choose another path"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return line + "; choose a path you may write to"
    if exc.errno == errno.ENAMETOOLONG:
        return line + "; choose a shorter file name"
    if exc.errno == errno.ENOENT:  # a folder the file system takes no new files in (/proc), or one just removed
        return line + " (a folder that takes no new files, or one removed meanwhile); choose another path"
    if exc.errno == errno.ELOOP:
        return line + " (symbolic links that point at each other); choose another path"
    return line + "; choose another path (a file name where a file goes, a folder where a folder goes)"


def main_exit() -> None:
    """Console-script wrapper: exit with :func:`main`'s status (a Ctrl-C after the work is done, while
    the interpreter shuts down, changes nothing: torch's exit handlers printed its traceback)."""
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
