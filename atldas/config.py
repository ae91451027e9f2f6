"""Configurations as (nested) dataclasses: strict building from YAML or dicts, ``--set`` overrides.

Each setting lives beside the class that uses it (a strategy's ``AtldasHP``, the task's ``DataCfg``,
the space's ``SpaceCfg``, the budget's ``BudgetCfg``); a run's config composes them and its resolved
form (every default spelled out) is what ``config.yaml`` stores. This module is the machinery only:

- :func:`build` makes a dataclass from a mapping, recursing into nested dataclass fields, with
  strict types: a YAML ``"no"`` (a string) for a bool, ``"abc"`` for an int or a list where a number
  belongs is one ConfigError naming the key, the value and what is allowed;
- :func:`apply_overrides` applies ``key=value`` texts; a key is a leaf field's name when it is unique
  in the tree (``arch_lr``, ``crop``), or a dotted path (``hp.arch_lr``);
- :func:`load_yaml` / :func:`save_yaml` read and write a config file (atomically).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import reprlib
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Type, TypeVar

import yaml

from atldas.errors import ConfigError, unreadable
from atldas.utils.atomic import write_text_atomic

__all__ = ["MAX_THREADS", "keyword_only", "check_threads", "check_ranges", "check_types", "parse_amount", "coerce", "build",
           "apply_overrides", "flag_against_set", "leaf_paths", "annotation_at", "set_path", "read_yaml", "load_yaml", "save_yaml",
           "to_dict", "differences", "refuse_edited", "RUNTIME_KEYS", "LOCATION_KEYS"]

C = TypeVar("C")
log = logging.getLogger("atldas")


def keyword_only(cls: Type[C]) -> Type[C]:
    """Class decorator, above ``@dataclass``: the constructor takes keyword arguments only (style.md;
    ``dataclass(kw_only=True)`` needs Python 3.10), so ``BudgetCfg(8e9)`` is a TypeError naming the fields
    instead of a silent first-field assignment. ``dataclasses.replace``, copies and pickles are
    unaffected (they pass keywords or call no constructor)."""
    init = cls.__init__

    def __init__(self, *args: Any, **kw: Any) -> None:
        if args:
            names = [f.name for f in dataclasses.fields(cls) if f.init][:len(args)]  # type: ignore[arg-type]
            raise TypeError(f"{cls.__name__} takes keyword arguments only; got {len(args)} positional "
                            f"({', '.join(f'{n}=' for n in names)} ...)")
        init(self, **kw)

    __init__.__doc__, __init__.__wrapped__ = init.__doc__, init  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[assignment]
    return cls


_AMOUNT = {"k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9, "t": 1e12, "T": 1e12}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
#: The most torch CPU threads a run may ask for. Above the hardware threads of any machine torch
#: runs on today (two 192-core sockets with SMT have 768), and below where starting them fails: 100000
#: segfaults inside OpenMP, or Python's ``can't start new thread``; 4096 still starts on a 2-core box.
MAX_THREADS = 1024


def parse_amount(text: str) -> float:
    """Parse ``8G``, ``2M``, ``500k``, ``1.5e9`` or ``20`` into a finite number."""
    s = str(text).strip()
    try:
        value = float(s[:-1]) * _AMOUNT[s[-1]] if s and s[-1] in _AMOUNT else float(s)
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as an amount; write e.g. 8G, 2M, 500k or 1.5e9") from None
    if not math.isfinite(value):
        raise ConfigError(f"{text!r} is not a finite amount; write e.g. 8G, 2M, 500k or 1.5e9")
    return value


def check_threads(n: Optional[int], *, where: str = "--threads") -> None:
    """Raise ConfigError unless ``n`` (torch CPU threads; None: torch's default) is in 1..MAX_THREADS.

    The one check of a thread count, for every verb, before torch is asked for the threads.
    """
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise ConfigError(f"{where} must be an integer in 1..{MAX_THREADS}, got {n!r}; more threads than "
                          f"cores only slows torch down (this machine has {os.cpu_count() or 1})")


def check_ranges(obj: Any, limits: Mapping[str, Tuple[float, float]]) -> None:
    """Raise ConfigError naming the first field of ``obj`` outside its closed range.

    Args:
        obj: a config object.
        limits: field name -> (low, high); an int bound on both sides asks for an integer.
    """
    for name, (low, high) in limits.items():
        v = getattr(obj, name)
        integer = isinstance(low, int) and isinstance(high, int)
        kind = (int,) if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, kind) or not math.isfinite(v) or not low <= v <= high:
            what = f"an integer in {low}..{high}" if integer else f"a number in [{low:g}, {high:g}]"
            raise ConfigError(f"{name} must be {what}, got {shown(v)}")


def check_types(obj: Any, *, where: str = "") -> None:
    """Raise ConfigError naming the first field of the dataclass ``obj`` (and of the dataclasses it
    holds) whose value is not of its annotated type: what a config built in Python skipped, where
    YAML and ``--set`` go through :func:`coerce` (``tensorboard="false"`` was taken as true, and the
    run's ``config.yaml`` then refused by its own ``--resume``). An int passes for a float, a path for a
    str; ranges are :func:`check_ranges`' job."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        _check_value(getattr(obj, f.name), hints.get(f.name, Any), f"{where}{f.name}")


def _check_value(value: Any, annotation: Any, name: str) -> None:
    nullable, ann = _optional(annotation)
    if value is None:
        if nullable or ann is Any:
            return
        raise ConfigError(f"{name}: a value of type {_type_name(ann)} is required, got None")
    origin = typing.get_origin(ann)
    ok = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, (str, os.PathLike))}.get(ann)
    if ok is not None:
        if not ok(value):
            what = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[ann]
            raise ConfigError(f"{name}: expected {what}, got {shown(value)}")
    elif origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {shown(value)}")
        args = typing.get_args(ann)
        for v in value:
            _check_value(v, args[0] if args else Any, name)
    elif dataclasses.is_dataclass(value):  # a nested section (a strategy's settings: its own class)
        check_types(value, where=f"{name}.")
    elif dataclasses.is_dataclass(ann):
        raise ConfigError(f"{name}: expected {_type_name(ann)} settings, got {shown(value)}")


def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(annotation: Any) -> Tuple[bool, Any]:
    """(None allowed, the inner type) of ``Optional[X]``."""
    if typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(annotation):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return True, inner[0] if len(inner) == 1 else Any
    return False, annotation


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 40


def shown(value: Any) -> str:
    """``repr(value)`` cut short: a message names a bad value without expanding a huge or aliased one
    (a YAML alias bomb, 9^25 items in a few hundred bytes, ran out of memory in ``repr``)."""
    return _REPR.repr(value)


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` (from YAML or Python) as ``annotation`` requires, strictly (module docstring)."""
    nullable, ann = _optional(annotation)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{where}: a value of type {_type_name(ann)} is required, got null")
    bad = ConfigError(f"{where}: expected {_type_name(ann)}, got {shown(value)}")
    origin = typing.get_origin(ann)
    if ann is Any:
        return value
    if ann is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {shown(value)}")
    if ann is int:  # 3.0 is refused, as by --set and check_types: one rule on every path
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {shown(value)}")
    if ann is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return parse_amount(value)  # "25G" in a YAML file reads as the text's amount
                except ConfigError as exc:  # name the file and key, as the other type errors do
                    raise ConfigError(f"{where}: {exc}") from None
            raise bad
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {shown(value)} is not a finite number")
        return float(value)
    if ann is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(ann)
        elem = args[0] if args else Any
        return tuple(coerce(v, elem, where) for v in value) if origin is tuple else [coerce(v, elem, where) for v in value]
    if dataclasses.is_dataclass(ann):
        if isinstance(value, ann):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {_type_name(ann)} keys, got {shown(value)}")
        return build(ann, value, where=where)
    return value


def build(cls: Type[C], data: Mapping[str, Any], *, where: str = "config",
          types: Optional[Mapping[str, type]] = None) -> C:
    """A ``cls`` instance from ``data`` (nested mappings for nested dataclass fields), strictly.

    Args:
        cls: the dataclass.
        data: field name -> value; missing fields keep their defaults.
        where: a prefix for messages (e.g. the file name).
        types: field name -> the dataclass to build that field as (a polymorphic field, e.g. a
            strategy's settings).

    Raises:
        ConfigError: an unknown key (naming the known ones) or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {type(data).__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (a typo, or a setting of another atldas "
                          f"version); known keys: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        ann = (types or {}).get(name, hints[name])
        kwargs[name] = coerce(value, ann, f"{where}: {name}")
    return cls(**kwargs)


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


def to_dict(cfg: Any) -> Dict[str, Any]:
    """A config as plain data (tuples become lists), for YAML and checkpoints."""
    return _plain(dataclasses.asdict(cfg))


#: Settings of how a run runs, not of what it computes (a resumed run may change them in its config.yaml)
RUNTIME_KEYS = ("out", "progress", "threads", "device", "num_workers", "tensorboard", "tb_images", "heatmap_every",
                "plots")
#: Where a run's inputs are (a moved data set may be named anew; said, not refused)
LOCATION_KEYS = ("model", "data", "source", "val_data", "backgrounds", "foregrounds", "lut")


def differences(now: Mapping[str, Any], then: Mapping[str, Any], *, ignore: Iterable[str] = RUNTIME_KEYS,
                locations: Iterable[str] = LOCATION_KEYS, _path: str = "") -> Tuple[List[str], List[str]]:
    """Where two configs as plain data (:func:`to_dict`, or a checkpoint's ``config``) differ:
    ``(changed, moved)``, each a list of ``"path: now (was then)"``; tuples and lists alike. ``moved``:
    the leaves named in ``locations`` (where inputs are); ``ignore``: keys not compared (how a run runs).
    Keys only one side has (a setting of another atldas version) are not compared either."""
    changed: List[str] = []
    moved: List[str] = []
    skip, where = set(ignore), set(locations)
    for k in sorted(set(now) & set(then)):
        if k in skip:
            continue
        a, b, path = now[k], then[k], f"{_path}.{k}" if _path else k
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            c, m = differences(a, b, ignore=skip, locations=where, _path=path)
            changed, moved = changed + c, moved + m
        elif _plain(a) != _plain(b):
            (moved if k in where else changed).append(f"{path}: {shown(a)} (was {shown(b)})")
    return changed, moved


def refuse_edited(now: Mapping[str, Any], saved: Any, *, where: Any, made: str) -> None:
    """On resume or derive: ConfigError (one line) when a run's ``config.yaml`` (``now``, plain data) no
    longer says what its checkpoint's ``config`` (``saved``) was made with; ``made`` completes "the
    config its ... with" (e.g. ``"last.pt was trained"``). How a run runs may differ; other input
    locations are warned about (:func:`differences`). A checkpoint without a config is not checked."""
    if not isinstance(saved, Mapping):
        return
    changed, moved = differences(now, saved)
    if moved:
        log.warning("%s names other inputs than the run started with: %s", where, "; ".join(moved))
    if changed:
        raise ConfigError(f"{where} differs from the config its {made} with: {'; '.join(changed)}; restore it (a "
                          "run's settings cannot change on resume; start a new run with another --out)")


def leaf_paths(cfg: Any) -> Dict[str, Tuple[str, ...]]:
    """Every leaf field's dotted path, keyed by the path and, when unique in the tree, by its name."""
    paths: Dict[str, Tuple[str, ...]] = {}
    counts: Dict[str, int] = {}

    def walk(obj: Any, prefix: Tuple[str, ...]) -> None:
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            path = prefix + (f.name,)
            if dataclasses.is_dataclass(v):
                walk(v, path)
            else:
                paths[".".join(path)] = path
                counts[f.name] = counts.get(f.name, 0) + 1
                paths.setdefault(f"~{f.name}", path)

    walk(cfg, ())
    out = {k: v for k, v in paths.items() if not k.startswith("~")}
    for k, v in paths.items():
        if k.startswith("~") and counts[k[1:]] == 1:
            out.setdefault(k[1:], v)
    return out


def annotation_at(cfg: Any, path: Tuple[str, ...]) -> Any:
    """The type annotation of the field at ``path``."""
    obj = cfg
    for name in path[:-1]:
        obj = getattr(obj, name)
    return _hints(type(obj))[path[-1]]


def set_path(cfg: C, path: Tuple[str, ...], value: Any) -> C:
    """A copy of ``cfg`` with the field at ``path`` replaced."""
    if len(path) == 1:
        return dataclasses.replace(cfg, **{path[0]: value})  # type: ignore[type-var]
    inner = getattr(cfg, path[0])
    return dataclasses.replace(cfg, **{path[0]: set_path(inner, path[1:], value)})  # type: ignore[type-var]


def parse_text(text: str, annotation: Any, where: str) -> Any:
    """The text of ``--set key=value`` as a value of ``annotation``."""
    nullable, ann = _optional(annotation)
    t = text.strip()
    if nullable and t.lower() in ("none", "null", ""):
        return None
    if ann is bool:
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    if ann is int:
        try:
            return int(t)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {text!r}") from None
    if ann is float:
        try:
            value = float(t)
        except ValueError:  # 25G, 2M: an amount
            value = None
        if value is not None and not math.isfinite(value):  # a rate or weight as well as a budget: no amount hint
            raise ConfigError(f"{where}: {text!r} is not a finite number; give a finite value (e.g. 0.001, 3e-4)")
        try:
            return parse_amount(t)
        except ConfigError:
            raise ConfigError(f"{where}: cannot read {text!r} as a number; write e.g. 0.001, 3e-4, or an amount "
                              "such as 2M or 8G") from None
    if ann is str and not t:  # '' would stand for a default, or a path to the current folder
        raise ConfigError(f"{where}: an empty value; give a value (or leave it out)")
    if typing.get_origin(ann) in (tuple, list):
        try:
            data = yaml.safe_load(t)
        except yaml.YAMLError:
            data = None
        except (RecursionError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot read {shown(text)} ({unreadable(exc)})") from None
        return coerce(data, ann, where)
    return t


def flag_against_set(flag: str, value: Any, sets: Iterable[str], key: str) -> None:
    """Refuse a flag (``--threads 2``) that a ``--set key=...`` of another value contradicts (the last
    ``--set`` of ``key`` counts, compared as an integer where both read as one): one ConfigError line,
    so that neither silently wins."""
    given = [p.split("=", 1)[1].strip() for p in sets if "=" in p and p.split("=", 1)[0].strip() == key]
    if value is None or not given:
        return
    try:
        same = int(given[-1]) == int(value)
    except ValueError:
        same = given[-1] == str(value)
    if not same:
        raise ConfigError(f"{flag} {value} and --set {key}={given[-1]} disagree: give one of them")


def apply_overrides(cfg: C, pairs: Iterable[str], *, aliases: Optional[Mapping[str, str]] = None,
                    hook: Optional[Callable[[C, str], C]] = None, flag: str = "--set") -> C:
    """Apply ``key=value`` texts to a (nested) config dataclass.

    Args:
        cfg: the config.
        pairs: ``key=value`` texts; a key is a dotted path or a leaf name unique in the tree.
        aliases: old key -> current key (e.g. ``budget_form`` -> ``budget.form``).
        hook: called as ``hook(cfg, key)`` before each key is resolved, to return a config in which
            it can be (e.g. with the settings class of another strategy).
        flag: the command-line flag the pairs came from, for messages (e.g. ``--retrain-set``).

    Raises:
        ConfigError: a pair without ``=``, an unknown or ambiguous key (the message lists the known
            keys), a key given twice (in any spelling), or a value of the wrong type.
    """
    seen: Dict[Tuple[str, ...], str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{flag} expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        key = dict(aliases or {}).get(key, key)
        if hook is not None:
            cfg = hook(cfg, key)
        paths = leaf_paths(cfg)
        if key not in paths:
            names = sorted(k for k in paths if "." not in k)
            nested = any("." in k for k in paths)  # a flat config (retrain's) has no dotted paths
            raise ConfigError(f"{flag}: unknown key {key!r}; known keys: {', '.join(names)}"
                              + (" (or a dotted path such as hp.arch_lr)" if nested else ""))
        path = paths[key]
        if path in seen:  # the last one won without a word
            raise ConfigError(f"{flag} {pair.strip()}: {'.'.join(path)} is set twice (also {seen[path]}); give it once")
        seen[path] = pair.strip()
        cfg = set_path(cfg, path, parse_text(value, annotation_at(cfg, path), f"{flag} {key}"))
    return cfg


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike[str]) -> Dict[str, Any]:
    """The mapping in a YAML config file (ConfigError, one line, when missing or malformed, or when a
    key is given twice)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeys) or {}  # noqa: S506 - a safe loader
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text (YAML) file; give a YAML config such as a run's "
                          "config.yaml") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (RecursionError, ValueError) as exc:  # nested thousands deep; an integer of thousands of digits
        raise ConfigError(f"{p}: not a config atldas can read ({unreadable(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys")
    return data


def read_run_config(path: str | os.PathLike[str]) -> Dict[str, Any]:
    """The mapping in a run's own ``config.yaml`` (:func:`read_yaml`), which atldas never writes empty: an
    empty one is a damaged run folder, said so in one line (read as the defaults, it listed a dozen
    "differences" from them)."""
    data = read_yaml(path)
    if not data:
        raise ConfigError(f"{path} is empty (truncated?); the run folder is damaged: restore its config.yaml, or "
                          "start a new run (--force moves this one aside)")
    return data


def load_yaml(cls: Type[C], path: str | os.PathLike[str]) -> C:
    """Read a (flat or nested) config dataclass from YAML, strictly (see :func:`build`)."""
    return build(cls, read_yaml(path), where=str(path))


def save_yaml(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write a config dataclass to YAML atomically."""
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
