"""``atldas tune``: many searches at once on Optuna, over the search's own settings.

    atldas tune --space tiny --trials 8 --out runs/tune                # a journal file in runs/tune
    atldas tune --space tiny --trials 8 --out runs/tune &              # a second worker: same study
    atldas tune --space matting --trials 40 --storage postgresql://user:pw@db/atldas --study m25

Each trial is an ``atldas search`` run directory ``OUT/trial-NNNN`` with settings drawn from the
tuning space: a YAML file (``--space-file``) mapping ``atldas search --set`` keys (and ``strategy``) to
distributions::

    arch_lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
    C: {type: int, low: 8, high: 16, step: 8}
    strategy: {type: categorical, choices: [atldas, darts]}

Objectives (``--objective``, minimised, two by default: quality against cost): ``loss`` (the search's
last arch-step loss of the sampled children, on held-out batches), ``macs`` and ``params`` (of the
derived genotype at the space's input size), and with ``--retrain-epochs N`` (spaces of the matting
task) ``sad``: the best validation SAD of an ``atldas retrain`` of the trial's genotype for N epochs in
``OUT/trial-NNNN/retrain`` (``--retrain-set`` passes retrain settings), the quality measure that the
search's own loss only stands in for. The Pareto front is printed as a table and drawn in
``OUT/pareto.png``; ``OUT/pareto.json`` lists its trials and ``OUT/best/`` holds their genotypes.

Storage: ``OUT/study.log``, an Optuna journal file, unless ``--storage`` names another journal file
or an RDB URL (``sqlite:///f.db``, ``postgresql://...``: many machines). Workers that share the
storage and ``--study`` share the study: run ``atldas tune`` again, on this or another machine, to add
a worker or to continue. A trial's worker that dies (SIGKILL, power loss) loses no finished trial; its
own trial is marked failed and its settings are tried again, once: with a journal file by the next
worker on the same machine that sees the dead pid, with an RDB by Optuna's heartbeat (60 s). The
study ends when it holds ``--trials`` finished trials.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from atldas.config import apply_overrides, check_threads, differences, leaf_paths, shown, to_dict
from atldas.errors import AtldasError, BudgetBelowCheapest, ConfigError, first_line, out_of_memory, unreadable
from atldas.run import ALIASES, Run, make_search_config
from atldas.rundir import RunDir
from atldas.tasks import get_task
from search_spaces import get_space
from atldas.retrain import RetrainConfig, retrain
from atldas.search import search
from atldas.utils import stop
from atldas.utils.atomic import atomic_path, check_output, host_id, pid_gone, write_json, write_text_atomic

log = logging.getLogger("atldas")

__all__ = ["OBJECTIVES", "DEFAULT_SPACE", "Param", "load_tune_space", "tune", "pareto_table"]

#: Objective name -> what it measures (all minimised).
OBJECTIVES = {"loss": "the search's last arch-step loss", "macs": "MACs of the derived genotype",
              "params": "parameters of the derived genotype",
              "sad": "best validation SAD of a short retrain of the derived genotype (--retrain-epochs)"}
#: The default tuning space (YAML): the arch optimiser, the weight learning rate and the in-degree
#: range. (``strategy`` can be tuned too, but the ``loss`` objective is each strategy's own arch-step
#: loss, comparable between trials of one strategy only.)
DEFAULT_SPACE = """\
arch_lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
w_lr: {type: float, low: 1.0e-3, high: 2.0e-2, log: true}
k_max: {type: int, low: 2, high: 3}
"""
_FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
           "categorical": {"choices"}}
_RETRY = "atldas.retry_of"
#: A worker stops after this many failed trials in a row (a space whose settings cannot run).
MAX_FAILURES = 5
#: A worker stops after this many pruned trials in a row: the median pruner compares with finished
#: trials only, the survivors, so its bar can fall out of reach.
MAX_PRUNED = 20
#: keys of the search config that tune sets itself
_NOT_TUNABLE = {"space": "give the space as --space", "out": "each trial writes to OUT/trial-NNNN of --out",
                "progress": "trials run without progress bars; the study's log says how far it is",
                "plots": "trials draw no plots; `atldas plot OUT/trial-NNNN` draws one"}


@dataclass(frozen=True)
class Param:
    """One dimension of the tuning space: a ``--set`` key and its distribution."""

    key: str
    type: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: Optional[float] = None
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """The value ``trial`` draws for this key."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)

    def ends(self) -> List[Any]:
        """The values at the ends of this dimension (every choice of a categorical one): what a trial
        may draw at the extremes, checked before the study."""
        if self.type == "categorical":
            return list(self.choices)
        from optuna.distributions import FloatDistribution, IntDistribution  # its own top of a stepped range

        with warnings.catch_warnings():  # "not divisible by step": each trial's draw says so again
            warnings.simplefilter("ignore")
            if self.type == "int":
                d = IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
                return [int(d.low), int(d.high)]
            d = FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        return [d.low, d.high]


def load_tune_space(text_or_path: Optional[str], *, space: str) -> List[Param]:
    """Parse a tuning space (a YAML file, or the default) and check every key against the search
    config of ``space``; one ConfigError line naming the first fault."""
    where = "the default tuning space"
    text = DEFAULT_SPACE
    if text_or_path is not None:
        where = str(text_or_path)
        try:
            text = Path(text_or_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--space-file {text_or_path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--space-file {text_or_path}: not a UTF-8 text (YAML) file; give a YAML tuning "
                              "space (atldas tune --help)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not YAML ({str(exc).splitlines()[0]})") from None
    except (RecursionError, ValueError) as exc:
        raise ConfigError(f"{where}: not a tuning space atldas can read ({unreadable(exc)})") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{where}: expected a mapping of --set keys to distributions")
    known = set(leaf_paths(make_search_config(space=space))) | {"strategy"} | set(ALIASES)
    params = []
    for key, spec in data.items():
        if key in _NOT_TUNABLE:
            raise ConfigError(f"{where}: {key} cannot be tuned ({_NOT_TUNABLE[key]})")
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; tunable keys: {', '.join(sorted(k for k in known if '.' not in k))}")
        if not isinstance(spec, Mapping) or spec.get("type") not in _FIELDS:
            raise ConfigError(f"{where}: {key} needs a mapping with type float, int or categorical")
        extra = set(spec) - _FIELDS[spec["type"]] - {"type"}
        if extra:
            raise ConfigError(f"{where}: {key}: unknown field(s) {', '.join(sorted(extra))}; a {spec['type']} takes "
                              f"{', '.join(sorted(_FIELDS[spec['type']]))}")
        if spec["type"] == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: {key}: choices must be a non-empty list")
            params.append(Param(key=key, type="categorical", choices=tuple(choices)))
            continue
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: {key}: low and high must be numbers") from None
        log_, step = spec.get("log") or False, spec.get("step")  # log: (null) is false
        if not isinstance(log_, bool):
            raise ConfigError(f"{where}: {key}: log must be true or false, got {shown(log_)}")
        if not (math.isfinite(low) and math.isfinite(high) and low <= high) or (log_ and low <= 0):
            raise ConfigError(f"{where}: {key}: needs finite low <= high (and low > 0 with log)")
        if spec["type"] == "int" and not (low.is_integer() and high.is_integer()):
            raise ConfigError(f"{where}: {key}: an int range needs integer low and high, got {shown(spec['low'])}, "
                              f"{shown(spec['high'])}")
        if step is not None:
            try:  # a number, or one YAML read as a string as it does low and high (1e-4: no dot)
                value = None if isinstance(step, bool) else float(step)
            except (TypeError, ValueError):
                value = None
            if value is None or not math.isfinite(value) or value <= 0 \
                    or (spec["type"] == "int" and not value.is_integer()):
                raise ConfigError(f"{where}: {key}: step must be a positive {'integer' if spec['type'] == 'int' else 'number'}, "
                                  f"got {shown(step)}")
            step = int(value) if spec["type"] == "int" else value
            if log_ and not (spec["type"] == "int" and step == 1):  # Optuna's log int range takes step 1 only
                raise ConfigError(f"{where}: {key}: step and log cannot be combined (Optuna samples one or the other; "
                                  "a log int range takes step 1 only)")
        params.append(Param(key=key, type=spec["type"], low=low, high=high, log=log_, step=step))
    return params


# --------------------------------------------------------------------------- storage and study

def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is in install_requires
        raise AtldasError("atldas tune needs optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # atldas logs what a trial did, and why one failed
    return optuna


def open_storage(storage: Optional[str], out: Path):
    """An Optuna storage: a journal file (default ``OUT/study.log``) or an RDB URL."""
    optuna = _optuna()
    if storage and "://" in storage:
        try:
            with warnings.catch_warnings():  # not a filter left in the caller's process
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage, heartbeat_interval=60, grace_period=120,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's errors: one line
            first = first_line(exc)
            raise AtldasError(f"--storage {storage}: cannot open ({first[:200]})") from None
    from optuna.storages.journal import JournalFileBackend

    path = Path(storage) if storage else out / "study.log"
    check_output(path, flag="--storage")
    _check_journal(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _check_journal(path: Path) -> None:
    """Refuse an existing file that is not an Optuna journal (the journal would be appended to it)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    try:
        ok = isinstance(json.loads(first), dict) and "op_code" in json.loads(first)
    except ValueError:
        ok = False
    if not ok:
        raise AtldasError(f"--storage {path} exists and is not an Optuna journal file; it is left untouched: choose "
                          "a new file name (or an existing study's journal)")


def _refuse_other_study(storage: Any, name: str, out: Path) -> None:
    """Refuse a study whose trial folders would land beside another study's in ``out`` (both number
    their trials from 0, and the Pareto files and ``best/`` are one per folder)."""
    here = out.resolve()
    for other in storage.get_all_studies():
        if other.study_name == name:
            continue
        for t in storage.get_all_trials(other._study_id, deepcopy=False):
            run = t.user_attrs.get("run")
            if run and Path(run).resolve().parent == here:
                raise AtldasError(f"--out {out} holds the trials of study {other.study_name!r}; give study {name!r} "
                                  "its own --out (or continue that study with --study " f"{other.study_name})")


#: The file in a study's ``--out`` that names its storage (a worker with another one is refused).
STORAGE_MARK = "storage.json"


def _refuse_other_storage(storage: Optional[str], out: Path) -> Optional[str]:
    """Refuse a worker whose storage is not the one the trials in ``out`` were recorded in (another
    journal or database holds another study, whose trials would be numbered from 0 in the same folder
    and drop this one's from the front). Returns what the first worker writes to ``out/storage.json``
    once the study is open, None where it is written already."""
    where = storage if storage and "://" in storage else str((Path(storage) if storage else out / "study.log").resolve())
    mark = out / STORAGE_MARK
    try:
        recorded = json.loads(mark.read_text()).get("storage") if mark.is_file() else None
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and recorded != where:
        raise AtldasError(f"--out {out} holds the trials of a study stored in {recorded}, not {where}; give "
                          f"--storage {recorded} to continue it, or another --out")
    return None if recorded is not None else where


def study_settings(*, space: str, base: Any, retrain_base: Any, params: Sequence["Param"],
                   loss: str = "") -> Dict[str, Any]:
    """What every trial of a study shares (the fixed search and retrain settings, the tuning space and
    the version of the task's loss definition, whose values its trials compare), as plain JSON values,
    so that a worker that continues the study with others can be refused (compared by
    :func:`~atldas.config.differences`: how a trial runs may differ)."""
    return json.loads(json.dumps({"space": space, "loss": loss, "search": to_dict(base),
                                  "retrain": None if retrain_base is None else to_dict(retrain_base),
                                  "tuned": [dataclasses.asdict(p) for p in params]}, default=str))


def open_study(storage: Any, name: str, objectives: Sequence[str], *, pruner: Any = None,
               settings: Optional[Mapping[str, Any]] = None):
    """Create or load study ``name``; a study made with other objectives, or other ``settings``
    (:func:`study_settings`; a study without them records these), is refused."""
    optuna = _optuna()
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=["minimize"] * len(objectives),
                                    load_if_exists=True, pruner=pruner)
    except ValueError as exc:
        raise AtldasError(f"study {name!r} exists with other objectives ({exc}); choose another --study") from None
    saved = study.user_attrs.get("atldas.objectives")
    if saved is None:
        study.set_user_attr("atldas.objectives", list(objectives))
    elif list(saved) != list(objectives):
        raise AtldasError(f"study {name!r} was created with objectives {', '.join(saved)}, not "
                          f"{', '.join(objectives)}; pass --objective {' '.join(saved)} or another --study")
    if settings is not None:
        had = study.user_attrs.get("atldas.settings")
        if had is None:
            older = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
            if older:  # an older atldas's study: its trials' settings cannot be checked against these
                log.warning("study %r holds %d finished trial(s) of an atldas that did not record a study's fixed "
                            "settings or loss: this worker's are recorded now, but those trials may have run with "
                            "others (see a trial's config.yaml) and they share one Pareto front", name, len(older))
            study.set_user_attr("atldas.settings", dict(settings))
        elif had.get("loss", settings.get("loss")) != settings.get("loss"):
            raise AtldasError(f"study {name!r} was run with another definition of its task's loss ({had['loss'] or 'unversioned'}) "
                              f"than this atldas's ({settings.get('loss') or 'unversioned'}): their values do not "
                              "compare; start another --study/--out")
        else:
            if "loss" not in had and "loss" in settings:  # recorded before the loss was: from now on
                study.set_user_attr("atldas.settings", {**had, "loss": settings["loss"]})
            changed, moved = differences(dict(settings), had)
            if moved:
                log.warning("study %r: this worker's inputs are elsewhere than its trials' so far: %s", name,
                            "; ".join(moved))
            if changed:
                raise AtldasError(f"study {name!r} was run with other fixed settings: {changed[0]}; continue it with the "
                                  "--space, --set, --retrain-set, --retrain-epochs and --space-file it started with "
                                  "(their trials would share one Pareto front), or start another --study/--out")
    return study


def _retry_interrupted(study: Any, number: int) -> None:
    """Enqueue once more the settings of trial ``number``, which a Ctrl-C ended (Optuna marked it failed)."""
    optuna = _optuna()
    t = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    if t.state == optuna.trial.TrialState.FAIL and _RETRY not in t.user_attrs:
        study.enqueue_trial(dict(t.params), user_attrs={_RETRY: t.number})


def fail_dead_trials(study: Any) -> int:
    """Mark failed the running trials whose worker on this machine is dead, and enqueue their settings
    once more; returns how many. (Trials of other machines are left to their own workers.)"""
    optuna = _optuna()
    # host_id() since 2026-12; before, a trial recorded the bare host name (a study that an older atldas's
    # killed worker left is still this machine's, though a container's of that name cannot be told apart)
    hosts, n = {host_id(), socket.gethostname()}, 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("host") not in hosts or not pid_gone(int(t.user_attrs.get("pid", 0)) or os.getpid()):
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another worker got there first
            continue
        n += 1
        log.warning("tune: trial %d's worker (pid %s) is dead: marked failed", t.number, t.user_attrs.get("pid"))
        if _RETRY not in t.user_attrs:
            study.enqueue_trial(dict(t.params), user_attrs={_RETRY: t.number})
    return n


def _ended(study: Any, number: int) -> bool:
    """Whether trial ``number`` is finished in the storage (failed by another worker, for one)."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    return trial is not None and trial.state.is_finished()


# --------------------------------------------------------------------------- the objective

def _history(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _build_end(cfg: Any, *, others: set) -> None:
    """AtldasError when the search of ``cfg`` (a tuned dimension's end) cannot be built: its network's
    sizes (an odd ``C``, too few ``layers``) or a budget below its cheapest architecture; the latter is
    let through when ``others`` (other tuned keys that size the network or the budget) may make it fit."""
    try:
        Run(cfg, out=None).check_budget()
    except BudgetBelowCheapest:
        if not others:
            raise


def _objective_values(run_dir: Path, objectives: Sequence[str]) -> List[float]:
    rows = _history(run_dir / "history.jsonl")
    cost = json.loads((run_dir / "genotype.json").read_text())["cost"]
    values = []
    for o in objectives:
        if o == "sad":
            v = _history(run_dir / "retrain" / "history.jsonl")[-1]["best/SAD"]
        elif o == "loss":
            v = next((r["loss/arch"] for r in reversed(rows) if r.get("loss/arch") is not None),
                     rows[-1]["loss/weights"])
        else:
            v = cost[o]
        values.append(float(v))
    return values


def pareto_table(study: Any, objectives: Sequence[str]) -> str:
    """The study's Pareto front (finished trials), one row per trial, sorted by the last objective."""
    best = sorted(study.best_trials, key=lambda t: t.values[-1])
    keys = sorted({k for t in best for k in t.params})
    head = ["trial", *objectives, *keys]
    rows = [[str(t.number), *(f"{v:.4g}" for v in t.values),
             *(f"{t.params[k]:.3g}" if isinstance(t.params.get(k), float) else str(t.params.get(k, "")) for k in keys)]
            for t in best]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    return "\n".join([f"Pareto front of {len(best)} trial(s):", *lines])


def _plot_front(study: Any, objectives: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optuna = _optuna()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = {t.number for t in study.best_trials}
    one = len(objectives) == 1  # one objective: its value against the trial number
    x_i, y_i = len(objectives) - 1, 0
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for on_front, style in ((False, {"c": "0.6", "s": 18, "label": "trial"}),
                            (True, {"c": "C3", "s": 30, "label": "best" if one else "Pareto front"})):
        pts = [(t.number if one else t.values[x_i], t.values[y_i]) for t in done if (t.number in best) == on_front]
        if pts:
            ax.scatter(*zip(*pts), **style)
    ax.set_xlabel("trial" if one else objectives[x_i])
    ax.set_ylabel(objectives[y_i])
    ax.set_title(f"atldas tune: {study.study_name}, {len(done)} trials")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _optuna_logging_restored(fn):
    """``fn`` leaving Optuna's logger as it found it (:func:`_optuna` quiets it to ERROR while a study
    runs; a program that uses Optuna after ``tune`` lost its INFO and WARNING lines)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logger = logging.getLogger("optuna")
        level = logger.level
        try:
            return fn(*args, **kwargs)
        finally:
            logger.setLevel(level)
    return wrapper


@_optuna_logging_restored
def tune(*, space: str = "matting", trials: int = 10, out: str = "runs/tune", storage: Optional[str] = None,
         study: Optional[str] = None, objectives: Sequence[str] = ("loss", "macs"), space_file: Optional[str] = None,
         sets: Sequence[str] = (), prune: bool = False, retrain_epochs: int = 0,
         retrain_sets: Sequence[str] = ()) -> Dict[str, Any]:
    """Run (or join) a study until it holds ``trials`` finished trials; see the module docstring.

    ``space`` is the search space each trial searches; ``out`` the study's folder (its trials, the
    Pareto table, plot and genotypes); ``storage`` the Optuna storage (default ``OUT/study.log``, a
    journal file; or another journal file or an RDB URL) and ``study`` its name there, shared by
    the workers that name the same two; ``objectives`` what is minimised (:data:`OBJECTIVES`);
    ``space_file`` a YAML tuning space (default: :data:`DEFAULT_SPACE`); ``sets`` ``key=value`` texts
    fixed in every trial's search config, as ``--set``.

    ``prune`` (single objective ``loss`` only: Optuna's pruners do not take several objectives) stops
    a trial whose per-epoch arch loss is worse than the median of earlier trials at the same epoch
    (``MedianPruner``, after 2 finished trials and the warm-up epochs); pruned trials do not count as
    finished. ``retrain_epochs`` > 0 retrains each trial's genotype that long (``retrain_sets``: retrain
    ``--set`` values) and makes the ``sad`` objective available.

    Returns:
        ``{"study", "finished", "pruned", "pareto": [{"trial", "values", "params", "run"}...], "table", "plot"}``.
    """
    optuna = _optuna()
    if not 1 <= trials <= 100_000:
        raise ConfigError(f"--trials must be in 1..100000, got {trials}")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives or len(set(objectives)) != len(objectives):
        raise ConfigError(f"--objective: unknown or repeated {unknown or list(objectives)}; choose from "
                          f"{', '.join(OBJECTIVES)}")
    if "sad" in objectives and retrain_epochs < 1:
        raise ConfigError("--objective sad needs --retrain-epochs N: a short retrain of each trial's genotype "
                          "gives its SAD")
    if not 0 <= retrain_epochs <= 10**6:
        raise ConfigError(f"--retrain-epochs must be in 0..1000000, got {retrain_epochs}")
    retrain_base = None
    if retrain_epochs:
        if get_space(space).task != "matting":
            raise ConfigError(f"--retrain-epochs: the {space} space's task is {get_space(space).task}; "
                              "retrain trains matting networks only")
        retrain_base = apply_overrides(RetrainConfig(epochs=retrain_epochs, progress=False, tensorboard=False),
                                       list(retrain_sets), flag="--retrain-set")
        check_threads(retrain_base.threads, where="--retrain-set threads")
        try:  # before any trial's search (each retrain failed after one: five searches, then the worker stopped)
            dataclasses.replace(retrain_base, model="trial").check()
        except AtldasError as exc:
            raise ConfigError(f"--retrain-set: {exc}") from None
    own = {"--set": _NOT_TUNABLE,
           "--retrain-set": {"model": "each retrain trains its trial's genotype",
                             "out": "each retrain writes to OUT/trial-NNNN/retrain",
                             "epochs": "give the retrain's length as --retrain-epochs"}}
    if retrain_sets and not retrain_epochs:
        raise ConfigError("--retrain-set needs --retrain-epochs N (without it no trial is retrained)")
    params = load_tune_space(space_file, space=space)
    paths = leaf_paths(make_search_config(space=space))

    def config_path(key: str) -> str:  # a --set key (leaf name, dotted path or alias) as its dotted path
        key = ALIASES.get(key, key)
        return ".".join(paths[key]) if key in paths else key

    tuned = {config_path(p.key) for p in params}
    for flag, pairs in (("--set", sets), ("--retrain-set", retrain_sets)):
        for pair in pairs:
            key = pair.split("=", 1)[0].strip().replace("-", "_")
            if key in own[flag]:  # a key tune sets itself
                raise ConfigError(f"{flag} {pair}: tune sets {key} itself ({own[flag][key]}); drop this {flag}")
            if flag == "--set" and config_path(key) in tuned:  # every trial's draw would override it
                raise ConfigError(f"--set {pair}: {key} is tuned (the tuning space draws it for every trial); drop "
                                  "this --set, or give a --space-file without it")
    base = make_search_config(space=space, sets=list(sets))  # the fixed settings are checked before any trial
    base.check(get_task(base.task or get_space(space).task))
    # and each tuned dimension's ends with them, under every tuned strategy (a choice no trial can run)
    strategies = next((list(p.ends()) for p in params if p.key == "strategy"), [None])
    structural = {k for k in tuned if k == "strategy" or k.split(".")[0] in ("knobs", "budget")}
    source = space_file or "the default tuning space"
    for p in params:
        for strategy in [] if p.key == "strategy" else strategies:  # a key another strategy lacks (random: arch_lr)
            try:
                has = leaf_paths(make_search_config(space=space, strategy=strategy, sets=list(sets)))
            except AtldasError:  # refused below, with the tuned key, its value and the strategy named
                continue
            if ALIASES.get(p.key, p.key) not in {*has, *(".".join(v) for v in has.values())}:
                raise ConfigError(f"{source} tunes {p.key}, a setting the {strategy or base.strategy} strategy does "
                                  f"not have: tune it only with strategies that have it, or leave it out (--space-file "
                                  "FILE: a tuning space without it)")
        for value in p.ends():
            for strategy in [value] if p.key == "strategy" else strategies:
                extra = [] if p.key == "strategy" else [f"{p.key}={value}"]
                try:
                    end = make_search_config(space=space, strategy=strategy, sets=[*sets, *extra])
                    end.check(get_task(end.task or get_space(space).task))
                    if config_path(p.key) in structural:  # the network and the budget: refused when built
                        _build_end(end, others=structural - {config_path(p.key)})
                except AtldasError as exc:
                    both = f" with strategy={strategy}" if strategy is not None and p.key != "strategy" else ""
                    raise ConfigError(f"{source}: {p.key}={value}{both} cannot "
                                      f"run: {exc}") from None
    check_threads(base.threads, where="--set threads")
    if prune and "random" in [base.strategy, *strategies]:
        log.warning("--prune: random search has no arch step, so its trials report no loss to prune on and run "
                    "to the end")
    if prune and list(objectives) != ["loss"]:
        raise ConfigError("--prune needs the single objective loss (--objective loss): Optuna's pruners do not "
                          "take several objectives")
    # the budget, its latency table and the data, before any trial fails on them; unless a tuned key moves
    # the cheapest target network (then each trial's own costs decide)
    if not tuned & {"budget.target_macs", "budget.target_params", "budget.target_latency_ms", "budget.lut",
                    *(f"knobs.{k}" for k in ("target_C", "target_layers", "input_size", "nodes", "k_min"))}:
        run = Run(base, out=None)
        run.check_budget()
        run.open_data()
    out_dir = check_output(out, flag="--out", folder=True)
    owner = RunDir(out_dir, checkpoint="checkpoint.pt", kind="tune").owner()
    if owner not in (None, "tune"):  # a study's journal and trials would be mixed into that run's files
        what = f"a {owner} run" if owner != "unknown" else "a config.yaml atldas did not write"
        raise ConfigError(f"--out {out_dir} holds {what}; the study's journal and trials would mix with its files: "
                          "choose another folder")
    name = study or f"tune-{space}"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=base.warmup_epochs) if prune else None
    unmarked = _refuse_other_storage(storage, out_dir)
    store = open_storage(storage, out_dir)
    _refuse_other_study(store, name, out_dir)
    settings = study_settings(space=space, base=base, retrain_base=retrain_base, params=params,
                              loss=get_task(base.task or get_space(space).task).loss_version)
    st = open_study(store, name, objectives, pruner=pruner, settings=settings)  # refused: no OUT made
    out_dir.mkdir(parents=True, exist_ok=True)  # (made already when it holds the journal)
    if unmarked is not None:
        write_text_atomic(out_dir / STORAGE_MARK, json.dumps({"storage": unmarked}) + "\n")
    done_states = (optuna.trial.TrialState.COMPLETE,)
    succeeded: List[int] = []  # this worker's last trial finished
    pruned: List[int] = []  # this worker's last trial was pruned
    current: List[int] = []  # the trial this worker runs now
    answered: List[int] = []  # ... once its objective returned or failed as a trial does (not a bug)

    def objective(trial: Any) -> Sequence[float]:
        current.append(trial.number)
        trial.set_user_attr("host", host_id())  # with the PID namespace: a container's pid is its own
        trial.set_user_attr("pid", os.getpid())
        drawn = {p.key: p.suggest(trial) for p in params}
        run_dir = out_dir / f"trial-{trial.number:04d}"
        trial.set_user_attr("run", str(run_dir.resolve()))  # absolute: any worker's cwd reads it
        overrides = [f"{k}={v}" for k, v in drawn.items() if k not in ("strategy",)]
        done = len(st.get_trials(deepcopy=False, states=done_states))
        log.info("tune: trial %d (%d of %d finished so far): %s -> %s", trial.number, done, trials,
                 ", ".join(f"{k}={v}" for k, v in drawn.items()), run_dir)
        def report(row: Dict[str, Any]) -> None:
            if prune and row.get("loss/arch") is not None and int(row["epoch"]) + 1 < cfg.epochs:
                trial.report(float(row["loss/arch"]), step=int(row["epoch"]))
                if trial.should_prune():
                    succeeded.append(trial.number)  # a pruned trial is not a failure
                    pruned.append(trial.number)
                    log.info("tune: trial %d pruned after epoch %d", trial.number, int(row["epoch"]) + 1)
                    raise optuna.TrialPruned()

        try:
            # the thread count the trial runs at is recorded by the search itself (utils/seed.pin_threads), so
            # `search --config TRIAL/config.yaml` reruns it exactly
            cfg = make_search_config(space=space, strategy=drawn.get("strategy"), out=str(run_dir),
                                     sets=[*sets, *overrides, "progress=false", "plots=false"])
            search(cfg, callback=report)
            if retrain_base is not None:
                retrain(dataclasses.replace(retrain_base, model=str(run_dir), out=str(run_dir / "retrain")))
        except AtldasError as exc:
            log.warning("tune: trial %d failed: %s", trial.number, exc)
            raise
        except (MemoryError, RuntimeError) as exc:  # out of memory (a large C, batch or crop drawn): this trial fails
            if not isinstance(exc, MemoryError) and not out_of_memory(exc):
                raise
            log.warning("tune: trial %d failed: out of memory (%s)", trial.number, first_line(exc)[:200])
            raise AtldasError(f"trial {trial.number} ran out of memory") from None
        values = _objective_values(run_dir, objectives)
        bad = [f"{o}={v}" for o, v in zip(objectives, values) if not math.isfinite(v)]
        if bad:  # Optuna fails such a trial without a word; this worker counts it as a failure too
            log.warning("tune: trial %d failed: its objective is not finite (%s)", trial.number, ", ".join(bad))
            raise AtldasError(f"trial {trial.number}: non-finite objective")
        succeeded.append(trial.number)
        log.info("tune: trial %d: %s", trial.number, ", ".join(f"{o}={v:.4g}" for o, v in zip(objectives, values)))
        return values

    def answering(trial: Any) -> Sequence[float]:
        try:
            values = objective(trial)
        except (AtldasError, optuna.TrialPruned):
            answered.append(trial.number)
            raise
        answered.append(trial.number)
        return values

    failed_in_a_row = pruned_in_a_row = 0
    while True:
        stop.check()  # a signal's stop that Python swallowed (utils/stop.py)
        fail_dead_trials(st)
        finished = len(st.get_trials(deepcopy=False, states=done_states))
        if finished >= trials:
            break
        if failed_in_a_row >= MAX_FAILURES:
            raise AtldasError(f"tune: the last {failed_in_a_row} trials of this worker failed (see the warnings "
                              "above); fix the tuning space or the --set values")
        if pruned_in_a_row >= MAX_PRUNED:
            raise AtldasError(f"tune: the last {pruned_in_a_row} trials of this worker were pruned (the median of the "
                              "finished trials is a bar few new trials reach); run without --prune, or with more "
                              "epochs")
        succeeded.clear()
        pruned.clear()
        current.clear()
        answered.clear()
        try:
            st.optimize(answering, n_trials=1, catch=(AtldasError,), gc_after_trial=True)
        except KeyboardInterrupt:  # Optuna marked the trial failed: its settings run again once, as a killed one's
            if current:
                _retry_interrupted(st, current[-1])
            raise
        except Exception:  # noqa: BLE001 - Optuna's tell of a trial that another worker ended meanwhile
            if not (answered and _ended(st, answered[-1])):
                raise
            log.warning("tune: trial %d was ended by another worker while this one ran it (its heartbeat taken as "
                        "stale); its result is not recorded", answered[-1])
            succeeded.clear()
        failed_in_a_row = 0 if succeeded else failed_in_a_row + 1
        pruned_in_a_row = pruned_in_a_row + 1 if pruned else 0
    front = [{"trial": t.number, "values": list(t.values), "params": dict(t.params), "run": t.user_attrs.get("run")}
             for t in sorted(st.best_trials, key=lambda t: t.values[-1])]
    best_dir = out_dir / "best"
    best_dir.mkdir(exist_ok=True)
    keep = {f"trial-{rec['trial']:04d}.json" for rec in front}
    for old in best_dir.glob("trial-*.json"):  # trials that fell off the front
        if old.name not in keep:
            old.unlink()
    for rec in front:
        g = Path(rec["run"]) / "genotype.json" if rec["run"] else None
        if g is not None and g.is_file():
            write_text_atomic(best_dir / f"trial-{rec['trial']:04d}.json", g.read_text())  # never through a link
    write_json(out_dir / "pareto.json", {"study": name, "objectives": list(objectives), "pareto": front})
    plot = out_dir / "pareto.png"
    _plot_front(st, objectives, plot)
    n_pruned = len(st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
    return {"study": name, "finished": finished, "pruned": n_pruned, "pareto": front, "table": pareto_table(st, objectives),
            "plot": str(plot)}
