"""``atldas lut build``: a latency lookup table of a search space, and the latency cost table from it.

    atldas lut build --space matting --device cpu               # 1024 x 1024, 1 thread
    atldas lut build --space matting --device cuda --size 512 --out lut-matting-512.json
    atldas search --space matting --target-latency-ms 900 --lut lut-matting-cpu.json

What is measured (batch 1, eval mode, ``torch.no_grad``, ``torch.utils.benchmark.Timer`` with a fixed
thread count; the median in milliseconds):

- every unique shape of a cell-edge op in the *target* network: ``"op|C|H|W|stride"`` with the op's
  input size (the geometry rule of :meth:`SearchSpace.cost_table`: in a reduction cell the edges from
  states 0/1 have stride 2 at the cell's input size, edges from intermediate nodes stride 1 at the
  halved size). Many cells share a shape, so a 14-cell network needs a few dozen entries;
- every block candidate at its input shape: ``"group|name"``;
- the whole target network of one reference genotype (the released CheapMatting cell when the space
  admits it). Its fixed part (stems, preprocessing convs, node sums, concats, pyramid pooling,
  upsampling) is ``base_ms = whole - sum of the reference's candidates``.

The table is plain JSON (``format: atldas-lut/2``; version 2 is timed in channels_last, as the
networks now run, and version-1 tables, timed in the contiguous format, are refused). Latency is
only approximately additive (caches, thread pools and the framework's per-op overhead differ inside
a network), so the table's figure for another child is an estimate; ``--check N`` measures N random
children and reports the error.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from atldas import __version__
from atldas.arch import ArchParams, Child
from atldas.config import SearchConfig
from atldas.cost import CostTable
from atldas.errors import ConfigError, DataError
from atldas.genotype import Genotype
from atldas.ops import build_op
from atldas.utils.atomic import write_text_atomic
from atldas.utils.memory_format import channels_last
from search_spaces.base import edge_geometry

log = logging.getLogger("atldas")

FORMAT = "atldas-lut/2"
#: Seconds of timing per entry (Timer's ``min_run_time``); small, so a 1024 table takes about a minute.
MIN_RUN_TIME = 0.05
#: Ops that cost nothing in a target network (``none`` means "no edge"; derive never keeps it).
FREE_OPS = ("none",)

Shape = Tuple[str, int, int, int, int]  # (op, C, H, W, stride)


# --------------------------------------------------------------------------- keys and geometry

def op_key(op: str, C: int, H: int, W: int, stride: int) -> str:
    """LUT key of a cell-edge op: ``"op|C|H|W|stride"`` (H, W: the op's input size)."""
    return f"{op}|{C}|{H}|{W}|{stride}"


def block_key(group: str, name: str) -> str:
    """LUT key of a block candidate: ``"group|name"``."""
    return f"{group}|{name}"


def op_shapes(space, cfg: SearchConfig, *, ops: Sequence[str]) -> List[Shape]:
    """Unique (op, C, H, W, stride) of every candidate op on every edge of the target network."""
    seen: Dict[Shape, None] = {}
    for g in space.cell_geometry(cfg):
        for source in (0, 2) if g.reduction else (0,):  # sources 0/1 and >= 2 share one geometry each
            C, H, W, stride = edge_geometry(g, source)
            for op in ops:
                if op not in FREE_OPS:
                    seen[(op, C, H, W, stride)] = None
    return list(seen)


def _rebuild_hint(space, cfg: SearchConfig, device: str) -> str:
    cmd = f"atldas lut build --space {space.name} --device {device} --size {cfg.input_size}"
    default = space.resolve(SearchConfig(space=space.name))
    for knob in ("target_C", "target_layers"):
        if getattr(cfg, knob) != getattr(default, knob):
            cmd += f" --set {knob}={getattr(cfg, knob)}"
    return f"rebuild it with `{cmd}`"


def _lut_config(cfg: SearchConfig) -> Dict[str, Any]:
    """The SearchConfig knobs a table depends on (besides the space and the input)."""
    return {"target_C": cfg.target_C, "target_layers": cfg.target_layers}


# --------------------------------------------------------------------------- timing

def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    name = ""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return name or platform.processor() or platform.machine()


def time_ms(module: nn.Module, inputs: Sequence[Tensor], *, threads: int = 1,
            min_run_time: float = MIN_RUN_TIME, max_run_time: Optional[float] = None) -> float:
    """Median forward latency (ms) of ``module(*inputs)``: eval mode, ``torch.no_grad``, batch as given,
    module and 4-d inputs in channels_last (as ``atldas bench`` and ``atldas predict`` run networks).

    Uses ``Timer.adaptive_autorange`` (repeats until the spread is within 10% of the median, at
    least 4 blocks) with ``num_threads=threads``; on an accelerator the Timer synchronises.

    Args:
        module: the module (already on the inputs' device).
        inputs: its inputs.
        threads: torch CPU threads while timing.
        min_run_time: seconds of timing before the spread is checked.
        max_run_time: stop after this many seconds regardless (default: the larger of
            ``20 * min_run_time`` and 5 forward passes, so a slow network still gets 5 samples).
    """
    from torch.utils.benchmark import Timer

    module = channels_last(module.eval())
    inputs = [channels_last(x) for x in inputs]
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            module(*inputs)  # warm-up: allocator, oneDNN/cuDNN primitive selection
            if inputs and inputs[0].is_cuda:
                torch.cuda.synchronize(inputs[0].device)
            once = time.perf_counter() - t0
            if max_run_time is None:
                max_run_time = max(20 * min_run_time, 5 * once)
            timer = Timer(stmt="module(*inputs)", globals={"module": module, "inputs": tuple(inputs)},
                          num_threads=threads)
            m = timer.adaptive_autorange(threshold=0.1, min_run_time=min_run_time, max_run_time=max_run_time)
    finally:
        torch.set_num_threads(prev)
    return float(m.median) * 1e3


def measure_latency(space, cfg: SearchConfig, genotype: Genotype, *, device: str = "cpu", threads: int = 1,
                    min_run_time: float = MIN_RUN_TIME) -> float:
    """Measured latency (ms, median) of the whole target network of ``genotype`` at the space's input."""
    torch.manual_seed(0)
    net = space.build_target(genotype, cfg).to(device).eval()
    x = torch.randn(space.input_shape(cfg), device=device)
    return time_ms(net, [x], threads=threads, min_run_time=min_run_time)


def reference_genotype(space, cfg: SearchConfig) -> Genotype:
    """The genotype whose whole network fixes ``base_ms``: the released CheapMatting cell (with the
    default blocks) when the space admits it, else the derive rule on uniform logits."""
    from atldas.models.cheapmatting import ATLDAS_CIFAR100

    arch = ArchParams(topology=space.topology(cfg), ops=space.search_ops(with_none=False),
                      blocks=space.block_names())
    try:
        child = space.genotype_to_child(arch, ATLDAS_CIFAR100)
    except ConfigError:
        with torch.no_grad():
            for p in arch.parameters():
                p.zero_()
        child = arch.argmax()
    return space.child_to_genotype(arch, child, cfg)


# --------------------------------------------------------------------------- build, save, load

def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda")


def build_lut(space, cfg: SearchConfig, *, device: str = "cpu", threads: int = 1,
              min_run_time: float = MIN_RUN_TIME, progress: bool = True) -> Dict[str, Any]:
    """Measure the latency table of ``space`` for the target network that ``cfg`` describes.

    Args:
        space: a registered search space (``get_space(name)``).
        cfg: a resolved SearchConfig (``space.resolve(...)``): target_C, target_layers, input_size.
        device: ``cpu`` or ``cuda``.
        threads: torch CPU threads while timing (the deployment's thread count).
        min_run_time: seconds of timing per entry before its spread is checked.
        progress: show a progress bar on a terminal.

    Returns:
        The table as plain JSON-able data (see the module docstring); ``save_lut`` writes it.
    """
    from tqdm import tqdm

    _check_device(device)
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    t_start = time.perf_counter()
    shapes = op_shapes(space, cfg, ops=space.search_ops(with_none=False))
    cands = space.block_candidates(cfg)
    n = len(shapes) + sum(len(c) for c in cands.values()) + 1
    show = progress and sys.stderr.isatty()
    bar = tqdm(total=n, desc=f"lut {space.name}/{device}", unit="entry", disable=not show, leave=False,
               file=sys.stderr, dynamic_ncols=True)
    gen = torch.Generator().manual_seed(0)

    def randn(shape: Sequence[int]) -> Tensor:
        return torch.randn(tuple(shape), generator=gen).to(device)

    def timed(module: nn.Module, inputs: Sequence[Tensor], label: str, **kw: Any) -> float:
        bar.set_postfix_str(label)
        ms = time_ms(module.to(device), inputs, threads=threads, min_run_time=min_run_time, **kw)
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
        ref = reference_genotype(space, cfg)
        torch.manual_seed(0)
        net = space.build_target(ref, cfg)
        whole = timed(net, [randn(space.input_shape(cfg))], "whole network")
    finally:
        bar.close()
    lut: Dict[str, Any] = {
        "format": FORMAT, "space": space.name, "device": device, "device_name": _device_name(device),
        "threads": threads, "input": list(space.input_shape(cfg)), "config": _lut_config(cfg),
        "torch": torch.__version__, "atldas": __version__, "min_run_time": min_run_time,
        "ops": ops, "blocks": blocks, "base_ms": 0.0,
        "reference": {"genotype": ref.to_json(), "hash": ref.hash(), "whole_ms": whole, "candidates_ms": 0.0},
    }
    cand_ms = _candidates_ms(lut, space, cfg, ref)
    lut["base_ms"] = whole - cand_ms
    lut["reference"]["candidates_ms"] = cand_ms
    lut["build_s"] = time.perf_counter() - t_start
    if lut["base_ms"] < 0:
        log.warning("the fixed part came out negative (%.3f ms): the candidates measured alone are slower "
                    "than inside the network; the table is a rough estimate at this size", lut["base_ms"])
    return lut


def _candidates_ms(lut: Mapping[str, Any], space, cfg: SearchConfig, genotype: Genotype) -> float:
    """Sum of the LUT entries of the candidates ``genotype`` uses (its cells' edges and blocks)."""
    total = 0.0
    for g in space.cell_geometry(cfg):
        cell = genotype.cell(g.reduction)
        for source, _, op in cell.edges():
            if op not in FREE_OPS:
                total += float(lut["ops"][op_key(op, *edge_geometry(g, source))])
    choices = dict(genotype.choices)
    for group, names in space.block_names().items():
        total += float(lut["blocks"][block_key(group, choices.get(group, names[0]))])
    return total


def save_lut(lut: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the table as JSON atomically (temp file in the same folder, then ``os.replace``)."""
    return write_text_atomic(path, json.dumps(lut, indent=1, sort_keys=False) + "\n")


def load_lut(path: str | os.PathLike[str]) -> Dict[str, Any]:
    """Read a table written by :func:`save_lut` (DataError, one line, if missing or not a LUT)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such latency table; build one with `atldas lut build --space SPACE --out {p}`")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: not a JSON latency table ({exc}); rebuild it with `atldas lut build`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{p}: not an {FORMAT} latency table; rebuild it with `atldas lut build`")
    return data


# --------------------------------------------------------------------------- the cost table

def latency_table(space, cfg: SearchConfig, *, arch: ArchParams,
                  lut: Optional[Mapping[str, Any] | str | os.PathLike[str]]) -> CostTable:
    """The ``latency_ms`` CostTable of ``arch``'s candidates from a LUT of :func:`build_lut`.

    ``cells[t][e, o]`` sums the LUT entry of op ``o`` at edge ``e``'s shape over the target cells of
    type ``t``; ``blocks`` and ``base`` come from the LUT. ``none`` costs 0.

    Args:
        space: the search space.
        cfg: the resolved SearchConfig (the LUT must be built for the same target network and input).
        arch: the architecture parameters (op order, topology, block names).
        lut: the table (a dict from :func:`build_lut`/:func:`load_lut`, or a path to one).

    Raises:
        ConfigError: no table, or one built for another space, input size or target network, or
            without an entry the space needs; the message says how to rebuild it.
    """
    if lut is None:
        raise ConfigError("a latency budget needs a latency table: build one with "
                          f"`atldas lut build --space {space.name} --device cpu` and pass --lut FILE")
    if isinstance(lut, (str, os.PathLike)):
        lut = load_lut(lut)
    hint = _rebuild_hint(space, cfg, str(lut.get("device", "cpu")) if isinstance(lut, Mapping) else "cpu")
    if not isinstance(lut, Mapping) or lut.get("format") != FORMAT:
        raise ConfigError(f"the latency table is not an {FORMAT} table; {hint}")
    shape = list(space.input_shape(cfg))
    if lut.get("space") != space.name:
        raise ConfigError(f"the latency table was built for space {lut.get('space')!r}, not {space.name!r}; {hint}")
    if list(lut.get("input") or []) != shape:
        other = (list(lut.get("input") or []) or ["?"])[-1]
        raise ConfigError(f"the latency table was built at input {lut.get('input')}, the search states its "
                          f"budget at {shape}; {hint} (or --set input_size={other})")
    if dict(lut.get("config", {})) != _lut_config(cfg):
        raise ConfigError(f"the latency table was built for the target network {lut.get('config')}, "
                          f"not {_lut_config(cfg)}; {hint}")
    ops_lut, blocks_lut = lut.get("ops", {}), lut.get("blocks", {})

    def entry(table: Mapping[str, Any], key: str, what: str) -> float:
        if key not in table:
            raise ConfigError(f"the latency table has no entry for {what} {key!r}; {hint}")
        return float(table[key])

    cells = space.cell_table(cfg, arch=arch, cost=lambda name, geo: (
        0.0 if name in FREE_OPS else entry(ops_lut, op_key(name, *geo), "op")))
    blocks: Dict[str, Tensor] = {
        group: torch.tensor([entry(blocks_lut, block_key(group, name), "block") for name in names],
                            dtype=torch.float64)
        for group, names in arch.block_names.items()}
    return CostTable(metric="latency_ms", base=float(lut["base_ms"]), cells=cells, blocks=blocks,
                     input_size=tuple(shape))


# --------------------------------------------------------------------------- check and summary

def check_lut(space, cfg: SearchConfig, lut: Mapping[str, Any], *, n: int = 3, seed: int = 0,
              min_run_time: float = MIN_RUN_TIME) -> List[Dict[str, Any]]:
    """Measure ``n`` random children's whole networks and compare with the table's estimate.

    Returns:
        One record per child: ``genotype`` hash, ``table_ms``, ``measured_ms``, ``ratio`` (table / measured).
    """
    arch = ArchParams(topology=space.topology(cfg), ops=space.search_ops(with_none=False),
                      blocks=space.block_names())
    table = latency_table(space, cfg, arch=arch, lut=lut)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        child: Child = arch.sample(generator=gen)
        g = space.child_to_genotype(arch, child, cfg)
        est = table.of_child(child)
        ms = measure_latency(space, cfg, g, device=str(lut["device"]), threads=int(lut["threads"]),
                             min_run_time=min_run_time)
        out.append({"genotype": g.hash(), "table_ms": est, "measured_ms": ms, "ratio": est / ms})
    return out


def summary(lut: Mapping[str, Any]) -> str:
    """A few lines describing a table (for ``atldas lut build``)."""
    ref = lut["reference"]
    lines = [
        f"latency table {lut['space']} on {lut['device']} ({lut.get('device_name', '?')}), "
        f"{lut['threads']} thread(s), input {lut['input']}, torch {lut['torch']}",
        f"  entries: {len(lut['ops'])} op shapes, {len(lut['blocks'])} blocks"
        + (f" (built in {lut['build_s']:.1f} s)" if "build_s" in lut else ""),
        f"  reference genotype {ref['hash']}: whole network {ref['whole_ms']:.3f} ms measured = "
        f"candidates {ref['candidates_ms']:.3f} ms + base {lut['base_ms']:.3f} ms",
    ]
    return "\n".join(lines)


__all__ = ["FORMAT", "build_lut", "save_lut", "load_lut", "latency_table", "op_key", "block_key",
           "edge_geometry", "op_shapes", "time_ms", "measure_latency", "reference_genotype", "check_lut",
           "summary"]
