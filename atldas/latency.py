"""Latency lookup tables: what ``atldas lut build`` measures and how a latency budget reads it.

    atldas lut build --space matting --device cpu               # 1024 x 1024, 1 thread
    atldas lut build --space matting --device cuda --size 512 --out lut-matting-512.json
    atldas search --space matting --target-latency-ms 900 --lut lut-matting-cpu.json

What is measured (batch 1, eval mode, ``torch.no_grad``, channels_last, the one timer of
:mod:`atldas.utils.timing` at a fixed thread count; the median in milliseconds):

- every unique shape of a cell-edge op in the *target* network: ``"op|C|H|W|stride"`` with the op's
  input size (:func:`atldas.topology.edge_geometry`: in a reduction cell the edges from states 0/1
  have stride 2 at the cell's input size, edges from intermediate nodes stride 1 at the halved size).
  Many cells share a shape, so a 14-cell network needs a few dozen entries;
- every block candidate at its input shape: ``"group|name"``;
- the whole target network of one reference genotype (the released CheapMatting cell when the space
  admits it). Its fixed part (stems, preprocessing convs, node sums, concats, pyramid pooling,
  upsampling) is ``base_ms = whole - sum of the reference's candidates``.

The table is plain JSON (``format: atldas-lut/2``; version 2 is timed in channels_last, version-1
tables, timed in the contiguous format, are refused). Latency is only approximately additive, so the
table's figure for another child is an estimate; ``atldas lut build --check N`` measures N random
children's whole networks and reports the error. :func:`atldas.cost.cost_table` turns a table into
the ``latency_ms`` cost table of a search.
"""

from __future__ import annotations

import json
import math
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

import derived_models
from atldas.version import __version__
from atldas.errors import ConfigError, DataError, unreadable
from atldas.genotype import Genotype
from atldas.ops import build_op
from atldas.topology import edge_geometry
from atldas.utils.atomic import write_text_atomic
from atldas.utils.device import device_name, resolve_device
from atldas.utils.fold import fold_batchnorm
from atldas.utils.memory_format import channels_last
from atldas.utils.timing import time_call
from atldas.utils.progress import progress_bar

log = logging.getLogger("atldas")

__all__ = ["FORMAT", "MIN_RUN_TIME", "FREE_OPS", "op_key", "block_key", "op_shapes", "time_module",
           "measure_genotype", "reference_genotype", "build_lut", "save_lut", "load_lut", "lut_lookup",
           "summary"]

FORMAT = "atldas-lut/2"
#: Seconds of timing per entry; small, so a 1024 table takes about a minute.
MIN_RUN_TIME = 0.05
#: Ops that cost nothing in a target network (``none`` means "no edge"; derive never keeps it).
FREE_OPS = ("none",)

Shape = Tuple[str, int, int, int, int]  # (op, C, H, W, stride)


def op_key(op: str, C: int, H: int, W: int, stride: int) -> str:
    """LUT key of a cell-edge op: ``"op|C|H|W|stride"`` (H, W: the op's input size)."""
    return f"{op}|{C}|{H}|{W}|{stride}"


def block_key(group: str, name: str) -> str:
    """LUT key of a block candidate: ``"group|name"``."""
    return f"{group}|{name}"


def op_shapes(space, *, ops: Sequence[str]) -> List[Shape]:
    """Unique (op, C, H, W, stride) of every candidate op on every edge of a bound space's target."""
    seen: Dict[Shape, None] = {}
    for g in space.cell_geometry():
        for source in (0, 2) if g.reduction else (0,):  # sources 0/1 and >= 2 share one geometry each
            C, H, W, stride = edge_geometry(g, source)
            for op in ops:
                if op not in FREE_OPS:
                    seen[(op, C, H, W, stride)] = None
    return list(seen)


def _lut_config(space) -> Dict[str, Any]:
    """The knobs a table depends on (besides the space and the input): the target network's width,
    cells and nodes per cell (its fixed part, ``base_ms``, holds the cells' preprocessing and
    concatenations, which the nodes change while the ops' keys stay the same)."""
    return {"target_C": space.cfg.target_C, "target_layers": space.cfg.target_layers, "nodes": space.cfg.nodes}


def _default(space, knob: str) -> Any:
    """The value of ``knob`` a space starts from (its defaults, else its config class's)."""
    return space.defaults.get(knob, type(space.cfg).__dataclass_fields__[knob].default)


def _rebuild_hint(space, device: str) -> str:
    cmd = f"atldas lut build --space {space.name} --device {device} --size {space.cfg.input_size}"
    for knob, value in _lut_config(space).items():
        if _default(space, knob) != value:
            cmd += f" --set {knob}={value}"
    return f"rebuild it with `{cmd}`"


# --------------------------------------------------------------------------- timing

def time_module(module: nn.Module, inputs: Sequence[Tensor], *, threads: int = 1,
                min_run_time: float = MIN_RUN_TIME) -> float:
    """Median forward latency (ms) of ``module(*inputs)``: eval mode, ``torch.no_grad``, module and
    4-d inputs in channels_last, BatchNorm folded into the convolutions (as ``atldas bench`` and
    ``atldas predict`` run networks; ``module`` is folded in place)."""
    module = channels_last(module.eval())
    fold_batchnorm(module)
    inputs = [channels_last(x) for x in inputs]

    def run() -> None:
        with torch.no_grad():
            module(*inputs)

    dev = inputs[0].device if inputs else torch.device("cpu")
    return time_call(run, threads=threads, min_run_time=min_run_time, repeats=4, sync=dev)["median"]


def measure_genotype(space, genotype: Genotype, *, device: str = "cpu", threads: int = 1,
                     min_run_time: float = MIN_RUN_TIME) -> float:
    """Measured latency (ms, median) of the whole target network of ``genotype`` at the space's input."""
    with torch.random.fork_rng(devices=[]):  # the caller's random stream left as it was
        torch.manual_seed(0)
        net = space.build_target(genotype).to(device).eval()
        x = torch.randn(space.input_shape(), device=device)
    return time_module(net, [x], threads=threads, min_run_time=min_run_time)


def reference_genotype(space) -> Genotype:
    """The genotype whose whole network fixes ``base_ms``: the released CheapMatting cell (with the
    default blocks) when the space admits it, else the derive rule on uniform logits."""
    arch = space.new_arch()
    try:
        child = space.genotype_to_child(arch, derived_models.get_genotype("atldas_cifar100"))
    except ConfigError:
        with torch.no_grad():
            for p in arch.parameters():
                p.zero_()
        child = arch.argmax()
    return space.child_to_genotype(arch, child)


# --------------------------------------------------------------------------- build, save, load

def build_lut(space, *, device: str = "cpu", threads: int = 1, min_run_time: float = MIN_RUN_TIME,
              progress: bool = True) -> Dict[str, Any]:
    """Measure the latency table of a bound space's target network (see the module docstring).

    Returns:
        The table as plain JSON-able data; :func:`save_lut` writes it.
    """
    resolve_device(device)
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    t_start = time.perf_counter()
    shapes = op_shapes(space, ops=space.search_ops(with_none=False))
    cands = space.block_candidates()
    n = len(shapes) + sum(len(c) for c in cands.values()) + 1
    bar = progress_bar(total=n, progress=progress, desc=f"lut {space.name}/{device}", unit="entry", leave=False,
                       dynamic_ncols=True)
    gen = torch.Generator().manual_seed(0)

    def randn(shape: Sequence[int]) -> Tensor:
        return torch.randn(tuple(shape), generator=gen).to(device)

    def timed(module: nn.Module, inputs: Sequence[Tensor], label: str) -> float:
        bar.set_postfix_str(label)
        ms = time_module(module.to(device), inputs, threads=threads, min_run_time=min_run_time)
        bar.update(1)
        return ms

    try:
        ops: Dict[str, float] = {}
        for op, C, H, W, stride in shapes:
            m = build_op(op, C_in=C, C_out=C, stride=stride, affine=True)
            ops[op_key(op, C, H, W, stride)] = timed(m, [randn((1, C, H, W))], f"{op} {C}x{H}x{W}/{stride}")
        blocks: Dict[str, float] = {}
        for group, names in cands.items():
            for name, (make, in_shapes) in names.items():
                blocks[block_key(group, name)] = timed(make(), [randn(s) for s in in_shapes], f"{group}/{name}")
        ref = reference_genotype(space)
        with torch.random.fork_rng(devices=[]):  # the caller's random stream left as it was
            torch.manual_seed(0)
            target = space.build_target(ref)
        whole = timed(target, [randn(space.input_shape())], "whole network")
    finally:
        bar.close()
    lut: Dict[str, Any] = {
        "format": FORMAT, "space": space.name, "device": device, "device_name": device_name(device),
        "threads": threads, "input": list(space.input_shape()), "config": _lut_config(space),
        "torch": torch.__version__, "atldas": __version__, "min_run_time": min_run_time,
        "ops": ops, "blocks": blocks, "base_ms": 0.0,
        "reference": {"genotype": ref.to_json(), "hash": ref.hash(), "whole_ms": whole, "candidates_ms": 0.0},
    }
    cand_ms = _candidates_ms(lut, space, ref)
    lut["base_ms"] = whole - cand_ms
    lut["reference"]["candidates_ms"] = cand_ms
    lut["build_s"] = time.perf_counter() - t_start
    if lut["base_ms"] < 0:
        log.warning("the fixed part came out negative (%.3f ms): the candidates measured alone are slower "
                    "than inside the network; the table is a rough estimate at this size", lut["base_ms"])
    return lut


def _candidates_ms(lut: Mapping[str, Any], space, genotype: Genotype) -> float:
    """Sum of the LUT entries of the candidates ``genotype`` uses (its cells' edges and blocks)."""
    total = 0.0
    for g in space.cell_geometry():
        for source, _, op in genotype.cell(g.reduction).edges():
            if op not in FREE_OPS:
                total += float(lut["ops"][op_key(op, *edge_geometry(g, source))])
    choices = dict(genotype.choices)
    for group, names in space.block_names().items():
        total += float(lut["blocks"][block_key(group, choices.get(group, names[0]))])
    return total


def save_lut(lut: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the table as JSON atomically."""
    return write_text_atomic(path, json.dumps(lut, indent=1, sort_keys=False) + "\n")


def load_lut(path: str | os.PathLike[str], *, space: str = "SPACE") -> Dict[str, Any]:
    """Read a table written by :func:`save_lut` (DataError, one line, if missing or not a LUT; ``space``
    names the space in the rebuild command)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such latency table; build one with `atldas lut build --space {space} --out {p}`")
    try:
        data = json.loads(p.read_text())
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, nested too deep, an integer too long
        raise DataError(f"{p}: not a JSON latency table ({unreadable(exc)}); rebuild it with `atldas lut build`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{p}: not an {FORMAT} latency table; rebuild it with `atldas lut build`")
    bad = _malformed(data)
    if bad:
        raise DataError(f"{p}: not a valid latency table ({bad}); rebuild it with `atldas lut build`")
    return data


def _malformed(lut: Mapping[str, Any]) -> Optional[str]:
    """What makes ``lut`` unusable (a hand edit, a truncated write), in words; None when it is sound:
    ``ops`` and ``blocks`` map names to finite milliseconds >= 0, ``base_ms`` is finite, ``config`` a mapping,
    ``input`` a list of positive sizes."""
    def ms(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    for part in ("ops", "blocks"):
        table = lut.get(part)
        if not isinstance(table, Mapping):
            return f"{part!r} is {type(table).__name__}, not a mapping of entries to milliseconds"
        wrong = [k for k, v in table.items() if not ms(v)]
        if wrong:
            return f"{part} entry {wrong[0]!r} is {table[wrong[0]]!r}, not a finite number of milliseconds >= 0"
    base = lut.get("base_ms")  # may be negative: lut build keeps a fixed part that came out below 0 (and warns)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base):
        return f"base_ms is {base!r}, not a finite number of milliseconds"
    if not isinstance(lut.get("config", {}), Mapping):
        return f"config is {type(lut.get('config')).__name__}, not a mapping"
    shape = lut.get("input")
    if not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        return f"input is {shape!r}, not a list of positive sizes"
    return None


def lut_lookup(space, lut: Mapping[str, Any] | str | os.PathLike[str] | None
               ) -> Tuple[Callable[[str, Tuple[int, int, int, int]], float], Callable[[str, str], float], float]:
    """``(op_ms(op, (C, H, W, stride)), block_ms(group, name), base_ms)`` of a table checked against a
    bound space (``none`` costs 0).

    Raises:
        ConfigError: no table, or one built for another space, input size or target network, or
            without an entry the space needs; the message says how to rebuild it.
    """
    if lut is None:
        raise ConfigError("a latency budget needs a latency table: build one with "
                          f"`atldas lut build --space {space.name} --device cpu` and pass --lut FILE")
    loaded = isinstance(lut, (str, os.PathLike))
    if loaded:
        lut = load_lut(lut, space=space.name)  # checked there
    hint = _rebuild_hint(space, str(lut.get("device", "cpu")) if isinstance(lut, Mapping) else "cpu")
    if not isinstance(lut, Mapping) or lut.get("format") != FORMAT:
        raise ConfigError(f"the latency table is not an {FORMAT} table; {hint}")
    bad = None if loaded else _malformed(lut)
    if bad:
        raise ConfigError(f"the latency table is not valid ({bad}); {hint}")
    shape = list(space.input_shape())
    if lut.get("space") != space.name:
        raise ConfigError(f"the latency table was built for space {lut.get('space')!r}, not {space.name!r}; {hint}")
    if list(lut.get("input") or []) != shape:
        other = (list(lut.get("input") or []) or ["?"])[-1]
        raise ConfigError(f"the latency table was built at input {lut.get('input')}, the search states its "
                          f"budget at {shape}; {hint} (or --set input_size={other})")
    # a table of atldas before "nodes" was recorded was built at the space's default nodes unless --set
    built = {"nodes": _default(space, "nodes"), **dict(lut.get("config", {}))}
    if built != _lut_config(space):
        raise ConfigError(f"the latency table was built for the target network {lut.get('config')}, "
                          f"not {_lut_config(space)}; {hint}")
    ops_lut, blocks_lut = lut.get("ops", {}), lut.get("blocks", {})

    def entry(table: Mapping[str, Any], key: str, what: str) -> float:
        if key not in table:
            raise ConfigError(f"the latency table has no entry for {what} {key!r}; {hint}")
        return float(table[key])

    def op_ms(name: str, geo: Tuple[int, int, int, int]) -> float:
        return 0.0 if name in FREE_OPS else entry(ops_lut, op_key(name, *geo), "op")

    def block_ms(group: str, name: str) -> float:
        return entry(blocks_lut, block_key(group, name), "block")

    return op_ms, block_ms, float(lut["base_ms"])


def summary(lut: Mapping[str, Any]) -> str:
    """A few lines describing a table (for ``atldas lut build``)."""
    ref = lut["reference"]
    return "\n".join([
        f"latency table {lut['space']} on {lut['device']} ({lut.get('device_name', '?')}), "
        f"{lut['threads']} thread(s), input {lut['input']}, torch {lut['torch']}",
        f"  entries: {len(lut['ops'])} op shapes, {len(lut['blocks'])} blocks"
        + (f" (built in {lut['build_s']:.1f} s)" if "build_s" in lut else ""),
        f"  reference genotype {ref['hash']}: whole network {ref['whole_ms']:.3f} ms measured = "
        f"candidates {ref['candidates_ms']:.3f} ms + base {lut['base_ms']:.3f} ms",
    ])
