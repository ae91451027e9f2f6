"""Pictures of a genotype: its normal and reduction cells as DAGs, and the macro network around them.

    atldas plot RUN_DIR                      # RUN_DIR/plots/genotype.png + genotype_{normal,reduce,macro}.png
    atldas plot genotype.json --out g.svg    # g.svg + g_normal.svg, g_reduce.svg, g_macro.svg
    atldas plot cheapmatting                 # a registered model or genotype name -> ./cheapmatting.png

Cells: inputs left, nodes in columns by ``networkx.topological_generations`` (any in-degree), the concat
output right. Macro: the network :func:`atldas.models.zoo.genotype_macro` names, every number read from
its config. Matplotlib ``Figure`` objects on the Agg canvas: no pyplot state, no graphviz.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import matplotlib
import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

import derived_models
from atldas.errors import AtldasError, ConfigError
from atldas.genotype import CellSpec, Genotype
from atldas.models.cheapmatting import CheapMatting, CheapMattingCfg
from atldas.models.darts_cifar import STEM_MULTIPLIER, DartsCifarNetwork
from atldas.models.zoo import MODELS, check_genotype, genotype_macro, no_genotype
from atldas.topology import cell_stack, reductions_of, stage_taps
from atldas.utils.atomic import atomic_path, check_output

__all__ = ["OP_COLOURS", "op_colour", "cell_layout", "plot_cell", "plot_macro", "plot_genotype", "figure_title",
           "plot", "load_source", "macro_kind"]

#: Colour of each op's edges and labels (other op names get a stable colour from their name).
OP_COLOURS: Dict[str, str] = {
    "none": "#9e9e9e", "skip_connect": "#404040", "max_pool_3x3": "#8c564b", "avg_pool_3x3": "#a67c00",
    "sep_conv_3x3": "#1f77b4", "sep_conv_5x5": "#2ca02c", "dil_conv_3x3": "#d62728", "dil_conv_5x5": "#9467bd",
    "conv_1x1": "#e377c2", "conv_3x3": "#ff7f0e"}
_SPARE = ("#17becf", "#7f7f00", "#1a9850", "#6a3d9a", "#b15928", "#0868ac", "#c51b7d", "#4d9221")
_FILL = {"io": ("#fff3cd", "#b8860b"), "input": ("#e5f5e0", "#238b45"), "node": ("#deebf7", "#2171b5"),
         "stem": ("#edf8e9", "#41ab5d"), "cells": ("#deebf7", "#2171b5"), "ppm": ("#efedf5", "#6a51a3"),
         "decoder": ("#fdebd0", "#d94801"), "head": ("#fde0dd", "#c51b8a")}
_DX, _DY, _R, _IO = 2.1, 1.15, 0.22, (0.38, 0.21)  # cells, inches: column/row gap, node radius, box half-size
_BOX, _MX, _MY = (2.15, 0.8), 2.55, 1.05  # macro, inches: box size, column and row pitch
_TITLES = {"normal": "normal cell", "reduce": "reduction cell  (ops on the inputs stride 2)"}
PathLike = Union[str, os.PathLike]


def _defaults_of(fn) -> Dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def op_colour(op: str) -> str:
    """The colour of ``op`` (a fixed table for the registered ops, else stable per name)."""
    return OP_COLOURS.get(op) or _SPARE[zlib.crc32(op.encode("utf-8")) % len(_SPARE)]


def _canvas(ax: Optional[Axes], bounds, title: str, subtitle: str) -> Axes:
    """``ax`` (default: a new Agg figure of the drawing's size, 1 unit = 1 inch) showing ``bounds``, titled."""
    x0, x1, y0, y1 = bounds
    if ax is None:
        fig = Figure(figsize=(x1 - x0, y1 - y0), facecolor="white")
        ax = FigureCanvasAgg(fig).figure.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set(xlim=(x0, x1), ylim=(y0, y1), aspect="equal")
    ax.set_axis_off()
    ax.text(x0 + 0.12, y1 - 0.12, title, ha="left", va="top", fontsize=11, weight="bold")
    ax.text(x0 + 0.12, y1 - 0.38, subtitle, ha="left", va="top", fontsize=7.5, color="#555555")
    return ax


def _curve(p0, p2, rad: float, t) -> np.ndarray:
    """Points at ``t`` of matplotlib's ``arc3,rad`` curve from p0 to p2 (a quadratic Bezier)."""
    p0, p2, t = np.asarray(p0, float), np.asarray(p2, float), np.asarray(t, float)[..., None]
    ctrl = (p0 + p2) / 2 + rad * np.array([p2[1] - p0[1], p0[0] - p2[0]])
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t ** 2 * p2


def _half(node: Any) -> Tuple[float, float]:
    return (_R, _R) if isinstance(node, int) and node >= 2 else _IO


def cell_layout(cell: CellSpec):
    """``(graph, pos, edges, bounds)``: the cell as a DiGraph (states 0.., ``"out"``); positions in
    inches (columns = topological generations, as wide as their labels need, barycentre order in a
    column); every edge as ``(source, target, op or None for concat, arc3 rad)``, long edges bent
    around the nodes; the drawing's ``(x0, x1, y0, y1)``, title band included."""
    graph = nx.DiGraph()
    graph.add_nodes_from(range(cell.n_nodes + 2))
    graph.add_edges_from((i, j) for i, j, _ in cell.edges())
    columns = [[0, 1]] + [[s for s in g if s > 1] for g in nx.topological_generations(graph)][1:] + [["out"]]
    graph.add_edges_from((c, "out") for c in cell.concat)
    col = {s: x for x, column in enumerate(columns) for s in column}
    raw = [(i, j, op) for i, j, op in cell.edges()] + [(c, "out", None) for c in cell.concat]
    gaps = [sum(op is not None and col[i] <= x < col[j] for i, j, op in raw) for x in range(len(columns) - 1)]
    xs = np.cumsum([0.0] + [min(3.4, max(_DX, 1.2 + 0.28 * n)) for n in gaps])  # room for the labels
    pos: Dict[Any, Tuple[float, float]] = {}
    for x, column in enumerate(columns):
        if x:
            column.sort(key=lambda s: -np.mean([pos[p][1] for p in graph.predecessors(s)]))
        pos.update({s: (xs[x], ((len(column) - 1) / 2 - k) * _DY) for k, s in enumerate(column)})
    edges, routed, ts = [], [], np.linspace(0.05, 0.95, 37)

    def faults(i: Any, j: Any, rad: float) -> int:  # the curve touches a node; it runs along a routed edge
        pts = _curve(pos[i], pos[j], rad, ts)
        near = any(np.abs(pts - pos[n]).max(axis=1).min() < max(_half(n)) + 0.12 for n in pos if n not in (i, j))
        mid = pts[(np.hypot(*(pts - pos[i]).T) > 0.5) & (np.hypot(*(pts - pos[j]).T) > 0.5)]
        return near + any(np.mean(np.hypot(*(mid[:, None] - r).transpose(2, 0, 1)).min(axis=1) < 0.1) > 0.15
                          for r in routed if len(mid))

    for i, j in sorted(dict.fromkeys((i, j) for i, j, _ in raw), key=lambda e: col[e[1]] - col[e[0]]):
        out = -1.0 if pos[i][1] + pos[j][1] >= 0 else 1.0  # bend outwards first (rad < 0 bends up)
        rads = [0.0] + [s * r for r in (0.15, 0.25, 0.35, 0.5) for s in (out, -out)]
        rad = min(rads, key=lambda r: (faults(i, j, r), abs(r)))
        group = [e for e in raw if e[:2] == (i, j)]  # two ops from one input: fan out
        edges += [(i, j, op, rad + (k - (len(group) - 1) / 2) * 0.3) for k, (_, _, op) in enumerate(group)]
        routed += [_curve(pos[i], pos[j], r, ts) for *_, r in edges[-len(group):]]
    ys = np.concatenate([_curve(pos[i], pos[j], r, np.linspace(0, 1, 11))[:, 1] for i, j, _, r in edges])
    return graph, pos, edges, (-0.75, xs[-1] + 0.75, min(ys.min(), -_DY / 2) - 0.45, max(ys.max(), _DY / 2) + 1.0)


def _state(s: Any) -> str:
    return {0: r"$c_{k-2}$", 1: r"$c_{k-1}$", "out": r"$c_{k}$"}.get(s) or str(s - 2)


def plot_cell(cell: CellSpec, *, title: str, ax: Optional[Axes] = None, subtitle: Optional[str] = None) -> Axes:
    """Draw ``cell`` with one op label per edge; returns the axes. ConfigError: not a DAG of the genotype form."""
    cell.validate(name=title)
    graph, pos, edges, bounds = cell_layout(cell)
    if subtitle is None:
        subtitle = (f"{cell.n_nodes} nodes, in-degree {', '.join(map(str, cell.in_degrees))}; "
                    f"output = concat of {', '.join(_state(c) for c in cell.concat)}")
    ax = _canvas(ax, bounds, title, subtitle)
    nodes, io = list(pos), (0, 1, "out")
    inner = [n for n in nodes if n not in io]
    nx.draw_networkx_nodes(graph, pos, nodelist=inner, node_size=1000, node_color=_FILL["node"][0],
                           edgecolors=_FILL["node"][1], linewidths=1.4, ax=ax)
    nx.draw_networkx_labels(graph, pos, labels={n: _state(n) for n in inner}, font_size=10, ax=ax)
    for n in io:
        fc, ec = _FILL["io" if n == "out" else "input"]
        nx.draw_networkx_labels(graph, pos, labels={n: _state(n)}, font_size=10, ax=ax,
                                bbox=dict(boxstyle="round,pad=0.5", fc=fc, ec=ec, lw=1.4))
    for i, j, op, rad in edges:
        nx.draw_networkx_edges(graph, pos, edgelist=[(i, j)], nodelist=nodes, ax=ax, arrows=True,
                               node_size=[1300 if n in io else 1000 for n in nodes], arrowstyle="-|>",
                               arrowsize=11 if op is None else 13, width=1.1 if op is None else 1.7,
                               edge_color="#9a9a9a" if op is None else op_colour(op),
                               style="dashed" if op is None else "solid", connectionstyle=f"arc3,rad={rad}")
    # op labels, greedily: the spot nearest the middle of the edge that overlaps no node or label and
    # covers the fewest other edges
    taken = [(x - w - 0.1, y - h - 0.1, x + w + 0.1, y + h + 0.1) for n, (x, y) in pos.items() for w, h in [_half(n)]]
    curves = [_curve(pos[i], pos[j], rad, np.linspace(0, 1, 60)) for i, j, _, rad in edges]
    for n, (i, j, op, rad) in enumerate(edges):
        if op is None:
            continue
        w, h = 0.03 * len(op) + 0.08, 0.12  # half-size of the label box (7.5 pt DejaVu Sans, with a margin)
        spots = [(x - w, y - h, x + w, y + h) for x, y in _curve(pos[i], pos[j], rad, [.5, .4, .6, .3, .7, .22, .78])]
        taken.append(min(spots, key=lambda b: (
            any(min(b[2], o[2]) > max(b[0], o[0]) and min(b[3], o[3]) > max(b[1], o[1]) for o in taken),
            sum(np.any((c[:, 0] > b[0]) & (c[:, 0] < b[2]) & (c[:, 1] > b[1]) & (c[:, 1] < b[3]))
                for m, c in enumerate(curves) if m != n))))
        ax.text(taken[-1][0] + w, taken[-1][1] + h, op, ha="center", va="center", fontsize=7.5, color=op_colour(op),
                zorder=5, bbox=dict(boxstyle="round,pad=0.25", fc="white", ec=op_colour(op), lw=0.8))
    return ax


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
    cost = dict(genotype.cost)
    line = " · ".join(f"{cost[k] / s:.2f} {u}" for k, s, u in (("params", 1e6, "M params"), ("macs", 1e9, "G MACs"))
                      if isinstance(cost.get(k), (int, float)))
    if line and isinstance(cost.get("input"), (list, tuple)):
        line += " at " + "×".join(map(str, cost["input"])) + (f" ({cost['model']})" if cost.get("model") else "")
    x0, x1 = bounds[:2]
    ax = _canvas(ax, bounds, title, line)
    for lv, label in enumerate(rows):  # resolution bands
        ax.add_patch(FancyBboxPatch((x0 + 0.08, -lv * _MY - 0.5), x1 - x0 - 0.16, 1.0, fc="#f4f4f4" if lv % 2 == 0
                                    else "none", ec="none", zorder=0, boxstyle="round,pad=0,rounding_size=0.05"))
        ax.text(x0 + 0.18, -lv * _MY, label, va="center", fontsize=8, color="#666666")
    patches = {}
    for key, col, lv, head, body, style in boxes:
        x, y = col * _MX, -lv * _MY
        patches[key] = ax.add_patch(FancyBboxPatch((x - _BOX[0] / 2, y - _BOX[1] / 2), *_BOX, fc=_FILL[style][0],
                                                   ec=_FILL[style][1], lw=1.3, zorder=3,
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
    parts.append(f"cells searched in {space['name']}, {macro}" if space.get("name") else macro)
    parts += [f"{k} {prov[k]}" for k in ("reference", "strategy") if prov.get(k)]
    parts += [f"seed {prov['seed']}"] if prov.get("seed") is not None and prov.get("strategy") else []
    return " · ".join(parts)


def plot_genotype(genotype: Union[Genotype, PathLike], *, out: PathLike, macro: str = "auto") -> List[Path]:
    """Write ``[out, <stem>_normal, <stem>_reduce, <stem>_macro]`` (.png or .svg): both cells above the
    macro view, then each part alone (no macro view for a network without one, e.g. the planted
    task's). ``genotype`` may be a genotype file's path. ConfigError: another suffix, a bad cell or macro."""
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
    bounds = [cell_layout(genotype.normal)[3], cell_layout(genotype.reduce)[3],
              _macro_spec(genotype, kind)[4] if kind != "none" else (0.0, 0.0, 0.0, 0.0)]
    (wn, hn), (wr, hr), (wm, hm) = [(b[1] - b[0], b[3] - b[2]) for b in bounds]
    width, height = max(wn + 0.25 + wr, wm) + 0.2, 0.45 + max(hn, hr) + 0.25 + hm + 0.1
    fig = Figure(figsize=(width, height), facecolor="white")
    FigureCanvasAgg(fig)
    fig.text(0.1 / width, 1 - 0.12 / height, figure_title(genotype, kind), va="top", fontsize=10)
    left = (width - wn - 0.25 - wr) / 2
    rects = {"normal": (left, height - 0.45 - hn, wn, hn), "reduce": (left + wn + 0.25, height - 0.45 - hr, wr, hr),
             "macro": ((width - wm) / 2, 0.1, wm, hm)}  # inches from the bottom left
    if kind == "none":
        del rects["macro"]

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
    if path.is_dir():
        if not (path / "genotype.json").is_file():
            raise ConfigError(no_genotype(path))
        return check_genotype(Genotype.load(path / "genotype.json", validate=False)), path / "plots" / "genotype.png"
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
