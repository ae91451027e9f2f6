"""Pictures of a genotype: its normal and reduction cells as DAGs (:mod:`atldas.cellgraph`), and the macro
network around them.

    atldas plot RUN_DIR                      # RUN_DIR/plots/genotype.png + genotype_{normal,reduce,macro}.png
    atldas plot genotype.json --out g.svg    # g.svg + g_normal.svg, g_reduce.svg, g_macro.svg
    atldas plot PLANTED_RUN                  # genotype.png + genotype_normal.png: one cell, no macro view
    atldas plot cheapmatting                 # a registered model or genotype name -> ./cheapmatting.png

Macro: the network :func:`atldas.models.zoo.genotype_macro` names, every number read from
its config. Matplotlib ``Figure`` objects on the Agg canvas: no pyplot state, no graphviz.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

import derived_models
from atldas.cellgraph import FILL, OP_COLOURS, canvas, cell_layout, op_colour, plot_cell
from atldas.errors import AtldasError, ConfigError
from atldas.genotype import Genotype
from atldas.models.cheapmatting import CheapMatting, CheapMattingCfg
from atldas.models.darts_cifar import STEM_MULTIPLIER, DartsCifarNetwork
from atldas.models.zoo import (MODELS, check_genotype, genotype_cell_types, genotype_macro, is_registered_name,
                               no_genotype, warn_interim)
from atldas.rundir import RunDir
from atldas.topology import cell_stack, reductions_of, stage_taps
from atldas.utils.atomic import atomic_path, check_output

__all__ = ["OP_COLOURS", "op_colour", "cell_layout", "plot_cell", "plot_macro", "plot_genotype", "figure_title",
           "plot", "load_source", "macro_kind"]

_BOX, _MX, _MY = (2.15, 0.8), 2.55, 1.05  # macro, inches: box size, column and row pitch
_TITLES = {"normal": "normal cell", "reduce": "reduction cell  (ops on the inputs stride 2)"}
PathLike = Union[str, os.PathLike]
log = logging.getLogger("atldas")


def _defaults_of(fn) -> Dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}



def macro_kind(genotype: Genotype) -> str:
    """``"matting"``, ``"classifier"`` or ``"none"`` (a network without a macro view: cells only), as
    the network :func:`~atldas.models.zoo.genotype_macro` names."""
    return {"cheapmatting": "matting", "darts_cifar": "classifier"}.get(genotype_macro(genotype)[0], "none")


def _stages(plan, taps) -> List[Tuple[str, str]]:
    """(title, "n reduce + m normal\\nC ch") of the cells up to each tap."""
    out, first = [], 0
    for tap in taps:
        red = sum(c.reduction for c in plan[first:tap + 1])
        kinds = " + ".join(f"{n} {w}" for n, w in ((red, "reduce"), (tap + 1 - first - red, "normal")) if n)
        out.append((f"cell {tap}" if tap == first else f"cells {first}–{tap}", f"{kinds}\n{plan[tap].C_out} ch"))
        first = tap + 1
    return out


def _macro_spec(genotype: Genotype, kind: str):
    """(boxes (key, column, row, title, body, style), arrows (from, to, skip), row labels, title, bounds)."""
    kind = macro_kind(genotype) if kind == "auto" else kind
    if kind not in ("matting", "classifier"):
        raise ConfigError(f"unknown macro view {kind!r}; use 'auto', 'matting' or 'classifier'")
    name, knobs = genotype_macro(genotype)  # a genotype of the other network is shown in the default macro
    concat, choices = (len(genotype.normal.concat), len(genotype.reduce.concat)), dict(genotype.choices)
    if kind == "classifier":
        k = {**_defaults_of(DartsCifarNetwork), "stem_multiplier": STEM_MULTIPLIER,
             **(knobs if name == "darts_cifar" else {})}
        C, layers, label, C_stem = k["C"], k["layers"], "DARTS CIFAR classifier", k["stem_multiplier"] * k["C"]
        plan = cell_stack(C=C, layers=layers, C_s0=C_stem, C_s1=C_stem, concat=concat)  # as DartsCifarNetwork
        boxes = [("stem", 0, 0, "stem", f"conv 3×3 + BN\n{C_stem} ch", "stem"),
                 *[(f"c{n}", n + 1, 0, *st, "cells") for n, st in enumerate(_stages(plan, stage_taps(layers)))],
                 ("gap", 4, 0, "global avg pool", f"{plan[-1].C_out} ch", "head"),
                 ("fc", 5, 0, "classifier", f"linear → {k['num_classes']}", "head")]
        arrows, rows = [(a[0], b[0], False) for a, b in zip(boxes, boxes[1:])], []
    else:
        cfg = CheapMattingCfg.from_meta(knobs if name == "cheapmatting" else {})
        C, layers, label = cfg.C, cfg.layers, "CheapMatting"
        plan = cell_stack(C=C, layers=layers, C_s0=C, C_s1=C, s0_reduced=True, concat=concat)  # as CheapMatting
        taps = [plan[t].C_out for t in cfg.taps]
        c_in, dc = cfg.level_inputs(taps), cfg.decoder_channels
        s2, s4 = c_in[0] - dc[1], c_in[1] - dc[2]  # the skips levels 0 and 1 concatenate: the stems' widths
        dflt = _defaults_of(CheapMatting)
        blocks = {lv: choices.get(f"decoder{lv}", dflt["decoder_blocks"]) for lv in range(4)}
        inp = dict(genotype.cost).get("input")  # (1, C, H, W) the cost was measured at: sizes per resolution
        ok = isinstance(inp, (list, tuple)) and len(inp) == 4 and all(isinstance(v, int) for v in inp)
        hw = list(zip(cfg.sizes(inp[2]), cfg.sizes(inp[3]))) if ok and inp[1] == cfg.in_channels else None
        boxes = [("in", 0, 0, "input", f"RGB + trimap one-hot\n{cfg.in_channels} ch", "io"),
                 ("s2", 0, 1, "stem 1/2", f"2× conv 3×3 + PReLU\n{s2} ch", "stem"),
                 ("s4", 0, 2, "stem 1/4", f"conv s2 + bottleneck res\n{s4} ch", "stem"),
                 ("s8", 0, 3, "stem 1/8", f"conv 3×3 s2 + BN\n{C} ch", "stem"),
                 *[(f"x{lv}", 1, lv, *st, "cells") for lv, st in zip((3, 4, 5), _stages(plan, cfg.taps))],
                 ("ppm", 2, 5, "PPM ⊕ 1/32 cells", f"pyramid pooling\n{cfg.ppm_out} + {taps[2]} ch", "ppm"),
                 *[(f"d{lv}", 3, lv + 1, f"decoder {lv}: {blocks[lv]}", f"1×1 conv + {cfg.decoder_depth}× "
                    f"{blocks[lv]}\n{c_in[lv]} → {dc[lv]} ch", "decoder") for lv in range(4)],
                 ("head", 3, 0, f"head: {choices.get('head', dflt['head_block'])}",
                  f"⊕ input, convs\n{cfg.head_input} → 1 ch", "head"),
                 ("alpha", 4, 0, "alpha", "clamp to [0, 1]\n1 ch", "io")]
        chain = ["in", "s2", "s4", "s8", "x3", "x4", "x5", "ppm", "d3", "d2", "d1", "d0", "head", "alpha"]
        arrows = [(a, b, False) for a, b in zip(chain, chain[1:])] + [
            (a, b, True) for a, b in (("s2", "d0"), ("s4", "d1"), ("x3", "d2"), ("x4", "d3"), ("in", "head"))]
        rows = [f"1/{2 ** lv}" + (f"\n{hw[lv][0]}×{hw[lv][1]}" if hw else "") for lv in range(6)]
    others = [f"{k}={v}" for k, v in choices.items() if k != "head" and not k.startswith("decoder")]
    title = f"macro: {label}, C = {C}, {layers} cells (reductions at %d and %d)" % reductions_of(layers)
    title += "; " + ", ".join(others) if others else ""
    return boxes, arrows, rows, title, (-_BOX[0] / 2 - 0.3 - (0.85 if rows else 0), max(b[1] for b in boxes) * _MX
                                        + _BOX[0] / 2 + 0.3, -max(b[2] for b in boxes) * _MY - _BOX[1] / 2 - 0.65,
                                        _BOX[1] / 2 + 0.85)


def plot_macro(genotype: Genotype, *, ax: Optional[Axes] = None, kind: str = "auto") -> Axes:
    """Draw the network around the cells (``kind``: ``"auto"``, ``"matting"`` or ``"classifier"``)."""
    boxes, arrows, rows, title, bounds = _macro_spec(genotype, kind)
    kind = macro_kind(genotype) if kind == "auto" else kind
    cost = dict(genotype.cost)
    measured = {"cheapmatting": "matting", "darts_cifar": "classifier"}.get(str(cost.get("model", "")).split(" ")[0])
    if measured not in (None, kind):  # a cost of the other network (DARTS' cells in CheapMatting) is not this one's
        cost = {}
    line = " · ".join(f"{cost[k] / s:.2f} {u}" for k, s, u in (("params", 1e6, "M params"), ("macs", 1e9, "G MACs"))
                      if isinstance(cost.get(k), (int, float)))
    if line and isinstance(cost.get("input"), (list, tuple)):
        line += " at " + "×".join(map(str, cost["input"])) + (f" ({cost['model']})" if cost.get("model") else "")
    x0, x1 = bounds[:2]
    ax = canvas(ax, bounds, title, line)
    for lv, label in enumerate(rows):  # resolution bands
        ax.add_patch(FancyBboxPatch((x0 + 0.08, -lv * _MY - 0.5), x1 - x0 - 0.16, 1.0, fc="#f4f4f4" if lv % 2 == 0
                                    else "none", ec="none", zorder=0, boxstyle="round,pad=0,rounding_size=0.05"))
        ax.text(x0 + 0.18, -lv * _MY, label, va="center", fontsize=8, color="#666666")
    patches = {}
    for key, col, lv, head, body, style in boxes:
        x, y = col * _MX, -lv * _MY
        patches[key] = ax.add_patch(FancyBboxPatch((x - _BOX[0] / 2, y - _BOX[1] / 2), *_BOX, fc=FILL[style][0],
                                                   ec=FILL[style][1], lw=1.3, zorder=3,
                                                   boxstyle="round,pad=0,rounding_size=0.1"))
        ax.text(x, y + 0.3, head, ha="center", va="top", fontsize=8.5, weight="bold", zorder=4)
        ax.text(x, y + 0.06, body, ha="center", va="top", fontsize=7.5, color="#333333", zorder=4)
    for a, b, skip in arrows:  # from border to border (cheaper than matplotlib's patchA/patchB clipping)
        pa, pb = (np.array([p.get_x() + _BOX[0] / 2, p.get_y() + _BOX[1] / 2]) for p in (patches[a], patches[b]))
        f = min(0.49, *(_BOX[i] / 2 / abs(pb - pa)[i] + 0.04 / np.hypot(*(pb - pa)) for i in (0, 1) if pb[i] != pa[i]))
        ax.add_patch(FancyArrowPatch(pa + f * (pb - pa), pb - f * (pb - pa), arrowstyle="-|>", mutation_scale=12,
                                     lw=1.2 if skip else 1.6, color="#8c8c8c" if skip else "#333333",
                                     linestyle=(0, (4, 3)) if skip else "-", zorder=2))
    if any(s for *_, s in arrows):
        ax.legend(handles=[Line2D([], [], color="#333333", lw=1.6, label="data flow"),
                           Line2D([], [], color="#8c8c8c", lw=1.2, ls=(0, (4, 3)), label="skip (concatenated)")],
                  loc="lower right", fontsize=7.5, frameon=False, ncol=2)
    return ax


def _out_path(out: PathLike) -> Path:
    """``out``, checked with the three pictures written beside it, before anything is drawn."""
    p = Path(out)
    if p.suffix.lower() not in (".png", ".svg") or not p.stem:
        raise ConfigError(f"plot output must be a file name ending in .png or .svg, got {str(out)!r}")
    for q in (p, *(p.with_name(f"{p.stem}_{n}{p.suffix}") for n in ("normal", "reduce", "macro"))):
        if q.is_dir():
            raise ConfigError(f"cannot write the plot {q}: it is a folder")
    return check_output(out, flag="--out")


def _save(figs: Sequence[Figure], paths: Sequence[Path]) -> List[Path]:
    """Write ``figs`` to ``paths`` as one set: PNG at 150 dpi, or SVG without a date and with stable
    ids; each is drawn into a temporary file and all are renamed at the end, so a failure or a
    Ctrl-C leaves none of them half-written or missing from the set."""
    with contextlib.ExitStack() as stack:
        for fig, path in zip(figs, paths):
            svg = path.suffix.lower() == ".svg"
            tmp = stack.enter_context(atomic_path(path, suffix=path.suffix))
            with matplotlib.rc_context({"svg.hashsalt": "atldas"} if svg else {}):
                fig.savefig(tmp, format=path.suffix.lower()[1:], dpi=150, facecolor="white",
                            metadata={"Date": None} if svg else None)
    return list(paths)


def figure_title(genotype: Genotype, kind: str) -> str:
    """Model, genotype hash, the space its cells were searched in and the macro drawn, provenance."""
    space, prov = dict(genotype.space), dict(genotype.provenance)
    macro = {"matting": "CheapMatting macro", "classifier": "DARTS CIFAR classifier macro"}.get(kind, kind)
    parts = ([f"model {prov['model']}"] if prov.get("model") else []) + [f"genotype {genotype.hash()}"]
    if kind == "none":  # a network without a macro view: its cells alone
        parts.append(f"cells searched in {space['name']}" if space.get("name") else "cells")
    else:
        parts.append(f"cells searched in {space['name']}, {macro}" if space.get("name") else macro)
    parts += [f"{k} {prov[k]}" for k in ("reference", "strategy") if prov.get(k)]
    parts += [f"seed {prov['seed']}"] if prov.get("seed") is not None and prov.get("strategy") else []
    return " · ".join(parts)


def plot_genotype(genotype: Union[Genotype, PathLike], *, out: PathLike, macro: str = "auto") -> List[Path]:
    """Write ``[out, <stem>_normal, <stem>_reduce, <stem>_macro]`` (.png or .svg): both cells above the
    macro view, then each part alone; for a network without a reduction cell or a macro view (the
    planted task's: one normal cell) ``[out, <stem>_normal]``. ``genotype`` may be a genotype file's
    path. ConfigError: another suffix, a bad cell or macro."""
    if isinstance(genotype, (str, os.PathLike)):
        genotype = Genotype.load(genotype)
    elif not isinstance(genotype, Genotype):
        raise TypeError(f"plot_genotype needs a Genotype or a genotype file's path, got {type(genotype).__name__}")
    out = _out_path(out)
    for name, cell in genotype.cells().items():
        cell.validate(name=name)
    kind = macro_kind(genotype) if macro == "auto" else macro
    own = macro_kind(genotype)
    space = dict(genotype.space or {})
    if kind != own and kind in ("matting", "classifier") and (space.get("name") or space.get("macro")):
        what = {"matting": "the CheapMatting macro", "classifier": "the DARTS CIFAR classifier macro",
                "none": "a network without a macro view"}[own]
        raise ConfigError(f"--macro {kind}: this genotype's network (space {space.get('name', '?')}) is {what}, so "
                          f"the {kind} view would draw a network it does not build; drop --macro (auto draws its "
                          "own)")
    reduce = "reduce" in genotype_cell_types(genotype)
    none = (0.0, 0.0, 0.0, 0.0)
    bounds = [cell_layout(genotype.normal)[3], cell_layout(genotype.reduce)[3] if reduce else none,
              _macro_spec(genotype, kind)[4] if kind != "none" else none]
    (wn, hn), (wr, hr), (wm, hm) = [(b[1] - b[0], b[3] - b[2]) for b in bounds]
    gap = 0.25 if reduce else 0.0
    width, height = max(wn + gap + wr, wm) + 0.2, 0.45 + max(hn, hr) + 0.25 + hm + 0.1
    fig = Figure(figsize=(width, height), facecolor="white")
    FigureCanvasAgg(fig)
    fig.text(0.1 / width, 1 - 0.12 / height, figure_title(genotype, kind), va="top", fontsize=10)
    left = (width - wn - gap - wr) / 2
    rects = {"normal": (left, height - 0.45 - hn, wn, hn), "reduce": (left + wn + gap, height - 0.45 - hr, wr, hr),
             "macro": ((width - wm) / 2, 0.1, wm, hm)}  # inches from the bottom left
    if kind == "none":
        del rects["macro"]
    if not reduce:
        del rects["reduce"]

    def draw(name: str, ax: Optional[Axes] = None) -> Axes:
        if name == "macro":
            return plot_macro(genotype, ax=ax, kind=kind)
        return plot_cell(genotype.cells()[name], title=_TITLES[name], ax=ax)

    for name, (x, y, w, h) in rects.items():
        draw(name, fig.add_axes((x / width, y / height, w / width, h / height)))
    return _save([fig, *(draw(n).figure for n in rects)],
                 [out, *(out.with_name(f"{out.stem}_{n}{out.suffix}") for n in rects)])


def _registered(name: str) -> Optional[Genotype]:
    """A genotype name of ``derived_models`` or a model name of :mod:`atldas.models.zoo`, else None."""
    if name in derived_models.GENOTYPES:
        return derived_models.get_genotype(name)
    if name not in MODELS:
        return None
    entry = MODELS.get(name)
    if not entry.genotype:
        raise ConfigError(f"model {name!r} has no genotype to plot (it is not built from searched cells)")
    cfg = getattr(entry.build(), "cfg", None)  # the macro the registered network is built in
    if not isinstance(cfg, CheapMattingCfg):
        raise ConfigError(f"model {name!r} is not a CheapMatting network; plot its genotype {entry.genotype!r}")
    g = derived_models.get_genotype(entry.genotype)
    return g.replace(space={**dict(g.space), "macro": cfg.to_meta()}, provenance={**dict(g.provenance), "model": name})


def load_source(source: Union[PathLike, Genotype]) -> Tuple[Genotype, Optional[Path]]:
    """The genotype ``source`` names and its default output path (None for a Genotype).

    ``source``: a Genotype; a run directory (its ``genotype.json``; out ``RUN_DIR/plots/genotype.png``);
    a genotype JSON or DARTS ``Genotype(...)`` file (out ``<stem>.png`` beside it); a genotype name of
    ``derived_models`` or a model name of :mod:`atldas.models.zoo` (out ``./<name>.png``). A file is
    checked as every verb checks a genotype (:func:`~atldas.models.zoo.check_genotype`).
    """
    if isinstance(source, Genotype):
        return source, None
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir() and not (is_registered_name(text) and not (path / "genotype.json").is_file()):
        if not (path / "genotype.json").is_file():
            raise ConfigError(no_genotype(path))
        rd = RunDir(path, checkpoint="checkpoint.pt", kind="search")
        pid = rd.holder() if rd.owner() != "retrain" else None  # a retrain does not rewrite its genotype
        genotype = check_genotype(Genotype.load(path / "genotype.json", validate=False))
        if pid is not None:
            log.warning("%s is in use by a running search (pid %s): this is the genotype of its last finished "
                        "epoch (the policy's argmax, not repaired), and the search redraws plots/ when it ends",
                        path, pid)
        else:
            warn_interim(path, genotype)
        return genotype, path / "plots" / "genotype.png"
    if path.is_file():
        return check_genotype(Genotype.load(path, validate=False)), path.with_suffix(".png")
    g = _registered(text) if text and os.sep not in text and "." not in path.name else None
    if g is None:
        names = sorted(set(derived_models.GENOTYPES.names()) | {n for n in MODELS.names() if MODELS.get(n).genotype})
        raise ConfigError(f"genotype not found: {text!r} is not a file, a run directory or a registered genotype "
                          f"or model name ({', '.join(names)})")
    return g, Path(f"{text}.png")


def plot(source: Union[PathLike, Genotype], *, out: Optional[PathLike] = None, macro: str = "auto") -> List[Path]:
    """Plot what :func:`load_source` reads (``out`` defaults as it says); returns the paths written.
    ConfigError: a bad source, cell or ``out`` suffix; AtldasError: a file that cannot be written."""
    if out is not None:
        _out_path(out)
        if isinstance(source, (str, os.PathLike)) and Path(source).is_file() and Path(source).resolve() == Path(out).resolve():
            raise ConfigError(f"--out {out} is the genotype file being plotted; it would be overwritten: choose "
                              "another path")
    genotype, default = load_source(source)
    if out is None and default is None:
        raise ConfigError("plot of a Genotype object needs out=FILE.png or FILE.svg")
    try:
        return plot_genotype(genotype, out=out or default, macro=macro)
    except OSError as e:
        raise AtldasError(f"cannot write the plot {out or default}: {e.strerror or e}") from None
