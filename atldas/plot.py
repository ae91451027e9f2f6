"""Pictures of a genotype: its normal and reduction cells as DAGs, and the macro network around them.

    atldas plot RUN_DIR                      # RUN_DIR/plots/genotype.png + genotype_{normal,reduce,macro}.png
    atldas plot genotype.json --out g.svg    # g.svg + g_normal.svg, g_reduce.svg, g_macro.svg
    atldas plot atldas_cifar100              # a registered genotype (or model) name -> ./atldas_cifar100.png

    >>> from atldas.plot import plot, plot_genotype, plot_cell, plot_macro
    >>> paths = plot("runs/demo")                           # [combined, normal, reduce, macro]
    >>> art = plot_cell(g.normal, title="normal cell")      # CellArtists: ax, edge_labels, ...
    >>> art.figure.canvas.draw(); label_overlaps(art.edge_labels)   # [] : no two labels touch

Files: :func:`plot_genotype` writes four files and returns their paths, in this order: the combined
figure at ``out`` (normal and reduction cell side by side above the macro view), then
``<stem>_normal``, ``<stem>_reduce`` and ``<stem>_macro`` beside it, same format. The format follows
the suffix (``.png`` at 150 dpi, or ``.svg``); every file is written to a temporary file in the same
folder and moved into place with ``os.replace``.

Cells: states ``c_{k-2}``, ``c_{k-1}`` (the two previous cells) on the left, intermediate nodes
numbered as in DARTS figures (node ``j`` is state ``j + 2`` of the genotype), the cell output
``c_{k}`` (the concat of ``concat``) on the right. Nodes are layered by
``networkx.topological_generations`` (a node sits one column right of its deepest input), so any
in-degree works; edges that would pass through a node are curved (``arc3``). Every edge is coloured
by its op and carries the op name in a small white box placed along the edge where it overlaps no
node, no other label, and as few other edges as possible. Dashed grey edges feed the concat.

Macro: for a matting genotype (space ``matting``/``tiny``, or costed on the CheapMatting macro, or
without space metadata) a U-shaped view by resolution: stems 1/2, 1/4, 1/8; the three cell stages
(reductions at ``layers // 3`` and ``2 * layers // 3``) at 1/8, 1/16, 1/32; PPM; decoder levels 3..0
with their block names from ``genotype.choices``; head; skips as dashed arrows. Numbers come from
``genotype.space["macro"]`` (C, layers, decoder widths...), else the released CheapMatting (C = 48,
14 cells). Other spaces (e.g. ``darts_cifar``) get a stem -> cells -> classifier row.

Everything draws on matplotlib ``Figure`` objects with the Agg canvas (no pyplot state, no display,
no graphviz).
"""

from __future__ import annotations

import contextlib
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import matplotlib
import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MplPath
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from atldas.errors import AtldasError, ConfigError
from atldas.genotype import CellSpec, Genotype
from atldas.utils.atomic import atomic_path

__all__ = ["CellArtists", "OP_COLOURS", "op_colour", "plot_cell", "plot_macro", "plot_genotype", "plot",
           "load_source", "label_overlaps", "macro_kind"]

#: Colour of each op's edges and labels (other op names get a stable colour from their name).
OP_COLOURS: Dict[str, str] = {
    "none": "#9e9e9e",
    "skip_connect": "#404040",
    "max_pool_3x3": "#8c564b",
    "avg_pool_3x3": "#a67c00",
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#2ca02c",
    "dil_conv_3x3": "#d62728",
    "dil_conv_5x5": "#9467bd",
    "conv_1x1": "#e377c2",
    "conv_3x3": "#ff7f0e",
}
_SPARE_COLOURS = ("#17becf", "#e377c2", "#ff7f0e", "#7f7f00", "#1a9850", "#6a3d9a", "#b15928",
                  "#0868ac", "#c51b7d", "#4d9221")

DPI_SCREEN = 100  # the figure's dpi: label placement is done in these pixels
DPI_PNG = 150  # PNG files: a uniform scale of the same drawing

# cell geometry, in inches (data units are inches on the figures this module makes)
_X_GAP, _Y_GAP = 2.15, 1.2  # between layers / between nodes of one layer
_R_NODE = 0.22  # intermediate node radius
_IO_W, _IO_H = 0.74, 0.42  # c_{k-2}, c_{k-1}, c_{k} boxes
_TITLE_H = 0.55  # band above a panel for its title
_MARGIN = 0.3

_FILL = {"input": ("#e5f5e0", "#238b45"), "node": ("#deebf7", "#2171b5"), "output": ("#fff3cd", "#b8860b"),
         "stem": ("#edf8e9", "#41ab5d"), "cells": ("#deebf7", "#2171b5"), "ppm": ("#efedf5", "#6a51a3"),
         "decoder": ("#fdebd0", "#d94801"), "head": ("#fde0dd", "#c51b8a"), "io": ("#fff3cd", "#b8860b"),
         "classifier": ("#fde0dd", "#c51b8a")}

PathLike = Union[str, os.PathLike]


def op_colour(op: str) -> str:
    """The colour of ``op`` (a fixed table for the registered ops, else stable per name)."""
    return OP_COLOURS.get(op) or _SPARE_COLOURS[zlib.crc32(op.encode("utf-8")) % len(_SPARE_COLOURS)]


# =========================================================================== cells


@dataclass
class CellArtists:
    """What :func:`plot_cell` drew.

    Attributes:
        ax: the axes.
        edge_labels: one op label per edge, in genotype order (:meth:`CellSpec.edges`).
        node_labels: state index (0, 1, 2, ...; ``"out"`` for c_{k}) -> its text.
        edges: the arrows, op edges in genotype order, then the concat edges.
        fontsize: the font size the labels ended with (smaller than asked only if they did not fit).
        unresolved: pairs of edge-label indices that still overlap (empty unless the axes is too
            small for the cell).
    """

    ax: Axes
    edge_labels: List[Text]
    node_labels: Dict[Any, Text]
    edges: List[FancyArrowPatch]
    fontsize: float
    unresolved: List[Tuple[int, int]] = field(default_factory=list)

    @property
    def figure(self) -> Figure:
        return self.ax.figure


@dataclass
class _CellLayout:
    pos: Dict[Any, Tuple[float, float]]
    layers: List[List[Any]]
    edges: List[Tuple[Any, Any, Optional[str], float]]  # (source, target, op or None for concat, rad)
    bounds: Tuple[float, float, float, float]  # x0, x1, y0, y1 of the drawing (title band included)

    @property
    def size(self) -> Tuple[float, float]:
        x0, x1, y0, y1 = self.bounds
        return x1 - x0, y1 - y0


def _node_radius(node: Any) -> float:
    """Radius of the disc an edge must keep clear of (boxes count as their half diagonal)."""
    return _R_NODE if isinstance(node, int) and node >= 2 else 0.5 * math.hypot(_IO_W, _IO_H) * 0.8


def _bezier(p0: np.ndarray, p2: np.ndarray, rad: float, ts: np.ndarray) -> np.ndarray:
    """Points of matplotlib's ``arc3,rad=rad`` curve from p0 to p2 (a quadratic Bezier)."""
    mid = (p0 + p2) / 2.0
    d = p2 - p0
    ctrl = mid + rad * np.array([d[1], -d[0]])
    ts = ts[:, None]
    return (1 - ts) ** 2 * p0 + 2 * (1 - ts) * ts * ctrl + ts ** 2 * p2


def _bezier_normal(p0: np.ndarray, p2: np.ndarray, rad: float, t: float) -> np.ndarray:
    mid = (p0 + p2) / 2.0
    d = p2 - p0
    ctrl = mid + rad * np.array([d[1], -d[0]])
    tangent = 2 * (1 - t) * (ctrl - p0) + 2 * t * (p2 - ctrl)
    n = np.array([-tangent[1], tangent[0]])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else np.array([0.0, 1.0])


def _clearance(pos: Mapping[Any, Tuple[float, float]], src: Any, dst: Any, rad: float) -> float:
    """Smallest gap between the curve src -> dst and the disc of any other node (negative: it hits)."""
    p0, p2 = np.asarray(pos[src], float), np.asarray(pos[dst], float)
    pts = _bezier(p0, p2, rad, np.linspace(0.0, 1.0, 41))
    best = math.inf
    for node, xy in pos.items():
        if node in (src, dst):
            continue
        gap = float(np.min(np.hypot(*(pts - np.asarray(xy)).T))) - _node_radius(node)
        best = min(best, gap)
    return best


def _cell_layout(cell: CellSpec) -> _CellLayout:
    """Layered positions of the states of ``cell`` and the curvature of every edge."""
    n_states = cell.n_nodes + 2
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n_states))
    graph.add_edges_from((i, j) for i, j, _ in cell.edges())
    layers = [sorted(g) for g in nx.topological_generations(graph)]
    # the two cell inputs always form the first column, in order (c_{k-2} above c_{k-1})
    first = [0, 1]
    layers = [first] + [[s for s in g if s not in first] for g in layers]
    layers = [g for g in layers if g] + [["out"]]
    preds: Dict[Any, List[int]] = {s: [] for s in range(n_states)}
    for i, j, _ in cell.edges():
        preds[j].append(i)
    preds["out"] = list(cell.concat)

    col_of = {s: c for c, layer in enumerate(layers) for s in layer}
    edges_raw: List[Tuple[Any, Any, Optional[str]]] = [(i, j, op) for i, j, op in cell.edges()]
    edges_raw += [(c, "out", None) for c in cell.concat]
    # a gap between two columns is as wide as the labels that must fit in it
    xs_col = [0.0]
    for c in range(len(layers) - 1):
        labelled = sum(1 for i, j, op in edges_raw if op is not None and col_of[i] <= c < col_of[j])
        concat = sum(1 for i, j, op in edges_raw if op is None and col_of[i] <= c < col_of[j])
        xs_col.append(xs_col[-1] + min(3.2, max(_X_GAP, 1.3 + 0.25 * labelled + 0.1 * concat)))

    pos: Dict[Any, Tuple[float, float]] = {}
    for col, layer in enumerate(layers):
        x = xs_col[col]
        if col > 0:  # barycentre order: a node sits near its inputs, which keeps crossings down
            def bary(s: Any) -> float:
                ys = [pos[p][1] for p in preds[s] if p in pos]
                return sum(ys) / len(ys) if ys else 0.0
            layer.sort(key=lambda s: (-bary(s), str(s)))
        m = len(layer)
        for k, s in enumerate(layer):
            pos[s] = (x, ((m - 1) / 2.0 - k) * _Y_GAP)

    # a column of one node between columns of several: nudge it off the centre line when straight
    # edges would otherwise run through it
    def n_blocked(p: Mapping[Any, Tuple[float, float]]) -> int:
        return sum(1 for i, j, _ in edges_raw if _clearance(p, i, j, 0.0) < 0.12)

    for layer in layers[1:-1]:
        if len(layer) != 1:
            continue
        s = layer[0]
        best, best_y = n_blocked(pos), pos[s][1]
        for dy in (0.3, -0.3):
            trial = dict(pos)
            trial[s] = (pos[s][0], pos[s][1] + dy * _Y_GAP)
            b = n_blocked(trial)
            if b < best:
                best, best_y = b, trial[s][1]
        pos[s] = (pos[s][0], best_y)

    # curvature: straight where clear, else the smallest bend (outwards first) that clears every node
    # and does not run along an edge already routed; straight edges are routed first
    groups: Dict[Tuple[Any, Any], List[int]] = {}
    for k, (i, j, _) in enumerate(edges_raw):
        groups.setdefault((i, j), []).append(k)
    order = sorted(groups, key=lambda ij: (_clearance(pos, ij[0], ij[1], 0.0) < 0.12,
                                            abs(pos[ij[1]][0] - pos[ij[0]][0]), str(ij)))
    rads = [0.0] * len(edges_raw)
    routed: List[np.ndarray] = []
    ts = np.linspace(0.0, 1.0, 41)
    for (i, j) in order:
        members = groups[(i, j)]
        p0, p2 = np.asarray(pos[i], float), np.asarray(pos[j], float)
        mid_y = (p0[1] + p2[1]) / 2.0
        out = -1.0 if mid_y >= 0 else 1.0  # rad < 0 bends a left-to-right edge upwards
        candidates = [0.0] + [s * r for r in (0.15, 0.25, 0.35, 0.5, 0.65) for s in (out, -out)]
        base, base_score = 0.0, math.inf
        for r in candidates:
            gap = _clearance(pos, i, j, r)
            pts = _bezier(p0, p2, r, ts)
            # away from the two ends, how much of this curve runs along an already routed one
            inner = pts[(np.hypot(*(pts - p0).T) > 0.45) & (np.hypot(*(pts - p2).T) > 0.45)]
            along = 0.0
            if len(inner) and routed:
                d = np.min([np.min(np.hypot(inner[:, None, 0] - cv[None, :, 0],
                                            inner[:, None, 1] - cv[None, :, 1]), axis=1)
                            for cv in routed], axis=0)
                along = float(np.mean(d < 0.12))
            if gap >= 0.12 and along < 0.15:
                base = r
                break
            score = max(0.0, 0.12 - gap) * 10 + along + abs(r) * 0.1
            if score < base_score:
                base, base_score = r, score
        m = len(members)
        for k, e in enumerate(members):  # parallel edges (two ops from the same input) fan out
            rads[e] = base + (k - (m - 1) / 2.0) * 0.32
            routed.append(_bezier(p0, p2, rads[e], ts))
    edges = [(i, j, op, rads[k]) for k, (i, j, op) in enumerate(edges_raw)]

    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    # room for curved edges above and below the nodes
    top, bottom = max(ys), min(ys)
    for i, j, _, r in edges:
        if r:
            pts = _bezier(np.asarray(pos[i], float), np.asarray(pos[j], float), r, np.linspace(0, 1, 21))
            top, bottom = max(top, float(pts[:, 1].max())), min(bottom, float(pts[:, 1].min()))
    pad = _IO_H / 2 + 0.25
    x0, x1 = min(xs) - _IO_W / 2 - _MARGIN, max(xs) + _IO_W / 2 + _MARGIN
    y0 = min(min(ys) - pad, bottom - 0.3)
    y1 = max(max(ys) + pad, top + 0.3) + _TITLE_H
    return _CellLayout(pos=pos, layers=layers, edges=edges, bounds=(x0, x1, y0, y1))


def _renderer(fig: Figure):
    get = getattr(fig.canvas, "get_renderer", None)
    if get is None:  # a canvas without one (e.g. a GUI backend): draw on Agg
        FigureCanvasAgg(fig)
        get = fig.canvas.get_renderer
    return get()


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI_SCREEN, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _setup_axes(ax: Axes, bounds: Tuple[float, float, float, float]) -> None:
    x0, x1, y0, y1 = bounds
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")
    ax.set_axis_off()
    ax.apply_aspect()


def _axes_scale(ax: Axes, bounds: Tuple[float, float, float, float]) -> float:
    """Inches per data unit on ``ax`` (1 on the figures this module sizes), clipped to [0.35, 1]:
    fonts and lines shrink with a smaller axes so that the drawing keeps its proportions."""
    box = ax.get_window_extent(_renderer(ax.figure))
    x0, x1, y0, y1 = bounds
    scale = min(box.width / (x1 - x0), box.height / (y1 - y0)) / ax.figure.dpi
    return float(min(1.0, max(0.35, round(scale, 3))))


def _bbox_overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def label_overlaps(texts: Sequence[Text], *, renderer: Any = None,
                   pad_px: float = 0.0) -> List[Tuple[int, int]]:
    """Index pairs of texts whose window extents (grown by ``pad_px``) overlap.

    Draw the figure first (``fig.canvas.draw()``) so that the extents are those of the picture.
    """
    if not texts:
        return []
    renderer = renderer or _renderer(texts[0].figure)
    boxes = [t.get_window_extent(renderer).padded(pad_px) for t in texts]
    return [(a, b) for a in range(len(boxes)) for b in range(a + 1, len(boxes))
            if _bbox_overlap(boxes[a], boxes[b]) > 0]


def _place_labels(ax: Axes, layout: _CellLayout, obstacles: List[Bbox],
                  fontsize: float) -> Tuple[List[Text], List[Tuple[int, int]]]:
    """Put one op label on every op edge, greedily, most constrained edge first."""
    fig = ax.figure
    renderer = _renderer(fig)
    to_px = ax.transData.transform
    pad = 0.3 * fontsize * fig.dpi / 72.0 + 1.5  # the round box around the text, plus a hair
    ax_box = ax.get_window_extent(renderer)
    op_edges = [(k, e) for k, e in enumerate(layout.edges) if e[2] is not None]
    # every curve, in display pixels, for the "label covers another edge" penalty
    ts = np.linspace(0.02, 0.98, 49)
    curves = []
    for i, j, _, rad in layout.edges:
        p0, p2 = to_px(layout.pos[i]), to_px(layout.pos[j])
        curves.append(_bezier(np.asarray(p0), np.asarray(p2), rad, ts))

    texts: List[Text] = []
    sizes = []
    for _, (i, j, op, _) in op_edges:
        colour = op_colour(op)
        t = ax.text(0, 0, op, ha="center", va="center", fontsize=fontsize, color=colour, zorder=5,
                    bbox=dict(boxstyle="round,pad=0.3", fc="white", ec=colour, lw=0.9 * fontsize / 8.0))
        texts.append(t)
        ext = t.get_window_extent(renderer)
        sizes.append((ext.width + 2 * pad, ext.height + 2 * pad))

    steps = [0.5, 0.44, 0.56, 0.38, 0.62, 0.32, 0.68, 0.26, 0.74]
    cands: List[List[Tuple[float, np.ndarray, Bbox]]] = []
    for n, (k, (i, j, op, rad)) in enumerate(op_edges):
        p0, p2 = np.asarray(to_px(layout.pos[i])), np.asarray(to_px(layout.pos[j]))
        w, h = sizes[n]
        row = []
        for shift in (0.0, 0.55, -0.55):
            for t in steps:
                c = _bezier(p0, p2, rad, np.array([t]))[0]
                if shift:
                    c = c + _bezier_normal(p0, p2, rad, t) * shift * h
                box = Bbox.from_extents(c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2)
                if (box.x0 < ax_box.x0 or box.x1 > ax_box.x1 or box.y0 < ax_box.y0 or box.y1 > ax_box.y1
                        or any(_bbox_overlap(box, o) > 0 for o in obstacles)):
                    continue
                crossings = sum(int(np.sum((cv[:, 0] > box.x0) & (cv[:, 0] < box.x1) & (cv[:, 1] > box.y0)
                                           & (cv[:, 1] < box.y1)))
                                for e, cv in enumerate(curves) if e != k)
                cost = 4.0 * abs(t - 0.5) + 1.5 * (shift != 0) + 0.6 * crossings
                row.append((cost, c, box))
        row.sort(key=lambda r: r[0])
        cands.append(row)

    placed: Dict[int, Bbox] = {}
    unresolved: List[Tuple[int, int]] = []
    remaining = set(range(len(op_edges)))
    while remaining:
        # most constrained first: the label with the fewest positions left free
        free = {n: [c for c in cands[n] if all(_bbox_overlap(c[2], b) == 0 for b in placed.values())]
                for n in remaining}
        n = min(remaining, key=lambda m: (len(free[m]), m))
        if free[n]:
            _, c, box = free[n][0]
        elif cands[n]:  # nowhere free: the least overlapping spot (reported as unresolved)
            _, c, box = min(cands[n], key=lambda r: sum(_bbox_overlap(r[2], b) for b in placed.values()))
            unresolved += [(min(n, m), max(n, m)) for m, b in placed.items() if _bbox_overlap(box, b) > 0]
        else:  # not even a spot clear of the nodes (axes far too small): the middle of the edge
            i, j, _, rad = op_edges[n][1]
            p0, p2 = np.asarray(to_px(layout.pos[i])), np.asarray(to_px(layout.pos[j]))
            c = _bezier(p0, p2, rad, np.array([0.5]))[0]
            w, h = sizes[n]
            box = Bbox.from_extents(c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2)
            unresolved += [(min(n, m), max(n, m)) for m, b in placed.items() if _bbox_overlap(box, b) > 0]
        placed[n] = box
        texts[n].set_position(ax.transData.inverted().transform(c))
        remaining.discard(n)
    return texts, sorted(set(unresolved))


def _node_patch(node: Any, xy: Tuple[float, float], lw: float = 1.4):
    if isinstance(node, int) and node >= 2:
        fc, ec = _FILL["node"]
        return Circle(xy, _R_NODE, fc=fc, ec=ec, lw=lw, zorder=3)
    fc, ec = _FILL["output" if node == "out" else "input"]
    return FancyBboxPatch((xy[0] - _IO_W / 2, xy[1] - _IO_H / 2), _IO_W, _IO_H,
                          boxstyle="round,pad=0,rounding_size=0.1", fc=fc, ec=ec, lw=lw, zorder=3)


def _inside(node: Any, xy: Tuple[float, float], pts: np.ndarray) -> np.ndarray:
    d = pts - np.asarray(xy, float)
    if isinstance(node, int) and node >= 2:
        return np.hypot(d[:, 0], d[:, 1]) <= _R_NODE
    return (np.abs(d[:, 0]) <= _IO_W / 2) & (np.abs(d[:, 1]) <= _IO_H / 2)


def _edge_path(pos: Mapping[Any, Tuple[float, float]], src: Any, dst: Any, rad: float) -> MplPath:
    """The ``arc3,rad`` curve from src to dst, cut where it leaves src's shape and enters dst's.

    Computed here rather than by the arrow's patchA/patchB clipping (a bisection in matplotlib that
    costs more than the rest of the drawing); exact for the equal-aspect axes these plots use.
    """
    p0, p2 = np.asarray(pos[src], float), np.asarray(pos[dst], float)
    p1 = (p0 + p2) / 2.0 + rad * np.array([(p2 - p0)[1], -(p2 - p0)[0]])
    ts = np.linspace(0.0, 1.0, 801)
    pts = _bezier(p0, p2, rad, ts)
    out_src = ~_inside(src, pos[src], pts)
    out_dst = ~_inside(dst, pos[dst], pts)
    t0 = ts[int(np.argmax(out_src))] if out_src.any() else 0.0
    t1 = ts[len(ts) - 1 - int(np.argmax(out_dst[::-1]))] if out_dst.any() else 1.0
    if t1 <= t0:
        t0, t1 = 0.0, 1.0

    def at(t: float) -> np.ndarray:
        return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2

    q1 = (1 - t0) * (1 - t1) * p0 + ((1 - t0) * t1 + t0 * (1 - t1)) * p1 + t0 * t1 * p2  # blossom
    return MplPath([at(t0), q1, at(t1)], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])


def _node_text(node: Any) -> str:
    if node == "out":
        return r"$c_{k}$"
    if node in (0, 1):
        return (r"$c_{k-2}$", r"$c_{k-1}$")[node]
    return str(node - 2)


def plot_cell(cell: CellSpec, *, title: str, ax: Optional[Axes] = None, fontsize: float = 8.0,
              subtitle: Optional[str] = None) -> CellArtists:
    """Draw a cell as a DAG: inputs, intermediate nodes (any in-degree), concat output, op labels.

    Args:
        cell: the cell.
        title: panel title (e.g. ``"normal cell"``).
        ax: axes to draw on; default a new figure of the cell's natural size (1 data unit = 1 inch).
        fontsize: label font size on a figure of the natural size; on a smaller ``ax`` every font and
            line shrinks in proportion; lowered further (to 70 %) only when the labels cannot all fit.
        subtitle: second title line; default the nodes' in-degrees.

    Returns:
        :class:`CellArtists` (the edge labels are placed so that their boxes do not overlap).

    Raises:
        ConfigError: the cell is not a DAG of the genotype form (cycle, empty node, bad concat).
    """
    cell.validate(name=title)
    layout = _cell_layout(cell)
    if ax is None:
        fig = _new_figure(*layout.size)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    _setup_axes(ax, layout.bounds)
    x0, x1, y0, y1 = layout.bounds
    k = _axes_scale(ax, layout.bounds)

    patches = {}
    node_labels: Dict[Any, Text] = {}
    for node, xy in layout.pos.items():
        patch = _node_patch(node, xy, lw=1.4 * k)
        ax.add_patch(patch)
        patches[node] = patch
        node_labels[node] = ax.text(xy[0], xy[1], _node_text(node), ha="center", va="center",
                                    fontsize=10 * k, zorder=4, color="#1a1a1a")

    arrows: List[FancyArrowPatch] = []
    for i, j, op, rad in layout.edges:
        concat = op is None
        arrow = FancyArrowPatch(path=_edge_path(layout.pos, i, j, rad), arrowstyle="-|>",
                                mutation_scale=(11 if concat else 13) * k, lw=(1.1 if concat else 1.7) * k,
                                color="#9a9a9a" if concat else op_colour(op),
                                linestyle=(0, (4, 3)) if concat else "-", shrinkA=0, shrinkB=0,
                                zorder=2 if concat else 2.5)
        ax.add_patch(arrow)
        arrows.append(arrow)

    degrees = cell.in_degrees
    if subtitle is None:
        subtitle = (f"{cell.n_nodes} nodes, in-degree {', '.join(map(str, degrees))}; "
                    f"output = concat of {', '.join(_state_name(c) for c in cell.concat)}")
    title_text = ax.text(x0 + 0.12, y1 - 0.12, title, ha="left", va="top", fontsize=11 * k, weight="bold")
    sub_text = ax.text(x0 + 0.12, y1 - 0.36, subtitle, ha="left", va="top", fontsize=7.5 * k,
                       color="#555555")

    renderer = _renderer(ax.figure)
    obstacles = [p.get_window_extent(renderer).padded(14) for p in patches.values()]
    obstacles += [t.get_window_extent(renderer).padded(2) for t in (title_text, sub_text)]
    size, smallest = fontsize * k, 0.7 * fontsize * k
    while True:
        labels, unresolved = _place_labels(ax, layout, obstacles, size)
        if not unresolved or size <= smallest:
            break
        for t in labels:
            t.remove()
        size = max(smallest, size - 0.5 * k)
    return CellArtists(ax=ax, edge_labels=labels, node_labels=node_labels, edges=arrows, fontsize=size,
                       unresolved=unresolved)


def _state_name(s: int) -> str:
    return (r"$c_{k-2}$", r"$c_{k-1}$")[s] if s < 2 else str(s - 2)


# =========================================================================== macro


@dataclass
class _Box:
    key: str
    x: float
    y: float
    title: str
    body: str
    kind: str


#: boxes, arrows (from, to, "flow"|"skip"), resolution rows (y, label), title
_MacroSpec = Tuple[List[_Box], List[Tuple[str, str, str]], List[Tuple[float, str]], str]


def macro_kind(genotype: Genotype) -> str:
    """``"matting"`` (CheapMatting macro) or ``"classifier"`` (DARTS-style CIFAR network).

    Matting when the space is ``matting``/``tiny``, the genotype was costed on the CheapMatting
    macro (a 6-channel input or a ``cost.model`` naming it), or nothing says otherwise.
    """
    space = dict(genotype.space)
    name = str(space.get("name") or "")
    if name in ("matting", "tiny"):
        return "matting"
    cost = dict(genotype.cost)
    inp = cost.get("input")
    if "cheapmatting" in str(cost.get("model", "")).lower() or (isinstance(inp, (list, tuple))
                                                                 and len(inp) == 4 and inp[1] == 6):
        return "matting"
    if not name:
        return "matting"
    return "classifier"


def _res(frac: int, size: Optional[Tuple[int, int]]) -> str:
    label = "1/1" if frac == 1 else f"1/{frac}"
    if size:
        h, w = size
        h, w = math.ceil(h / frac), math.ceil(w / frac)
        label += f"\n{h}×{w}"
    return label


def _input_size(genotype: Genotype, channels: Optional[int]) -> Optional[Tuple[int, int]]:
    inp = dict(genotype.cost).get("input")
    if isinstance(inp, (list, tuple)) and len(inp) == 4 and all(isinstance(v, int) for v in inp):
        if channels is None or inp[1] == channels:
            return int(inp[2]), int(inp[3])
    return None


def _cost_line(genotype: Genotype) -> str:
    cost = dict(genotype.cost)
    parts = []
    if isinstance(cost.get("params"), (int, float)) and cost["params"]:
        parts.append(_si(cost["params"], "params"))
    if isinstance(cost.get("macs"), (int, float)) and cost["macs"]:
        parts.append(_si(cost["macs"], "MACs"))
    if isinstance(cost.get("latency_ms"), (int, float)):
        parts.append(f"{cost['latency_ms']:.1f} ms")
    inp = cost.get("input")
    if parts and isinstance(inp, (list, tuple)):
        parts[-1] += " at " + "×".join(str(v) for v in inp)
    return " · ".join(parts)


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix} {unit}"
    return f"{value:.0f} {unit}"


def _stage_text(first: int, last: int, reductions: Sequence[int]) -> Tuple[str, str]:
    if last < first:
        return "no cells", ""
    title = f"cell {first}" if first == last else f"cells {first}–{last}"
    n_red = sum(1 for k in range(first, last + 1) if k in reductions)
    n_norm = last - first + 1 - n_red
    parts = ([f"{n_red} reduce"] if n_red else []) + ([f"{n_norm} normal"] if n_norm else [])
    return title, " + ".join(parts)


def _cell_channels(genotype: Genotype, C: int, layers: int, reductions: Sequence[int]) -> List[int]:
    out, c = [], C
    for k in range(layers):
        if k in reductions:
            c *= 2
        out.append(len(genotype.cell(k in reductions).concat) * c)
    return out


def _matting_boxes(genotype: Genotype) -> _MacroSpec:
    macro = dict(dict(genotype.space).get("macro") or {})
    C = int(macro.get("C", 48))
    layers = int(macro.get("layers", 14))
    dc = list(macro.get("decoder_channels") or ())
    if len(dc) != 4:
        dc = [32, 64, 128, 128]
    depth = int(macro.get("decoder_depth", 2))
    ppm_out = int(macro.get("ppm_out", 256))
    choices = dict(genotype.choices)
    r1, r2 = layers // 3, 2 * layers // 3
    reds = (r1, r2)
    ch = _cell_channels(genotype, C, layers, reds)

    def tap(k: int, fallback: int) -> int:
        return ch[k] if 0 <= k < layers else fallback

    c8, c16, c32 = tap(r1 - 1, C), tap(r2 - 1, C), tap(layers - 1, C)
    c_in = {3: ppm_out + c32 + c16, 2: dc[3] + c8, 1: dc[2] + C, 0: dc[1] + C // 2}
    size = _input_size(genotype, 6)

    A, B, Cc, D, E = 0.0, 2.55, 5.1, 7.65, 10.2
    row = lambda level: -1.05 * level  # noqa: E731 - rows by resolution 1, 1/2, ..., 1/32
    boxes = [
        _Box("in", A, row(0), "input", "RGB + trimap one-hot\n6 ch", "io"),
        _Box("s2", A, row(1), "stem 1/2", f"2× conv 3×3 + PReLU\n{C // 2} ch", "stem"),
        _Box("s4", A, row(2), "stem 1/4", f"conv s2 + 2 bottleneck res\n{C} ch", "stem"),
        _Box("s8", A, row(3), "stem 1/8", f"conv 3×3 s2 + BN\n{C} ch", "stem"),
    ]
    for key, (a, b), level, c in (("x8", (0, r1 - 1), 3, c8), ("x16", (r1, r2 - 1), 4, c16),
                                  ("x32", (r2, layers - 1), 5, c32)):
        t, body = _stage_text(a, b, reds)
        boxes.append(_Box(key, B, row(level), t, f"{body}\n{c} ch" if body else f"{c} ch", "cells"))
    boxes.append(_Box("ppm", Cc, row(5), "PPM ⊕ 1/32 cells", f"pyramid pooling\n{ppm_out} + {c32} ch",
                      "ppm"))
    for lv, level in ((3, 4), (2, 3), (1, 2), (0, 1)):
        block = str(choices.get(f"decoder{lv}", "bottleneck"))
        boxes.append(_Box(f"d{lv}", D, row(level), f"decoder {lv}: {block}",
                          f"1×1 conv + {depth}× {block}\n{c_in[lv]} → {dc[lv]} ch", "decoder"))
    head = str(choices.get("head", "conv3x3"))
    boxes.append(_Box("head", D, row(0), f"head: {head}", f"⊕ input, convs\n{dc[0] + 6} → 1 ch", "head"))
    boxes.append(_Box("alpha", E, row(0), "alpha", "clamp to [0, 1]\n1 ch", "io"))
    flow = [("in", "s2", "flow"), ("s2", "s4", "flow"), ("s4", "s8", "flow"), ("s8", "x8", "flow"),
            ("x8", "x16", "flow"), ("x16", "x32", "flow"), ("x32", "ppm", "flow"), ("ppm", "d3", "flow"),
            ("d3", "d2", "flow"), ("d2", "d1", "flow"), ("d1", "d0", "flow"), ("d0", "head", "flow"),
            ("head", "alpha", "flow"),
            ("s2", "d0", "skip"), ("s4", "d1", "skip"), ("x8", "d2", "skip"), ("x16", "d3", "skip"),
            ("in", "head", "skip")]
    rows = [(row(lv), _res(2 ** lv, size)) for lv in range(6)]
    others = ", ".join(f"{k}={v}" for k, v in choices.items()
                       if not (k == "head" or (k.startswith("decoder") and k[7:].isdigit())))
    title = (f"macro: CheapMatting, C = {C}, {layers} cells (reductions at {r1} and {r2})"
             + (f"; {others}" if others else ""))
    return boxes, flow, rows, title


def _classifier_boxes(genotype: Genotype) -> _MacroSpec:
    space = dict(genotype.space)
    macro = dict(space.get("macro") or {})
    name = str(space.get("name") or "")
    C = int(macro.get("C", 36))
    layers = int(macro.get("layers", 20))
    classes = int(macro.get("num_classes", macro.get("classes", 100 if "100" in name else 10)))
    stem_mult = int(macro.get("stem_multiplier", 3))
    r1, r2 = layers // 3, 2 * layers // 3
    reds = (r1, r2)
    ch = _cell_channels(genotype, C, layers, reds)
    inp = dict(genotype.cost).get("input")
    in_ch = int(inp[1]) if isinstance(inp, (list, tuple)) and len(inp) == 4 else 3
    size = _input_size(genotype, None) or (32, 32)
    h = size[0]
    boxes = [_Box("in", 0.0, 0.0, "input", f"{in_ch} ch\n{size[0]}×{size[1]}", "io"),
             _Box("stem", 2.5, 0.0, "stem", f"conv 3×3 + BN\n{stem_mult * C} ch", "stem")]
    x = 5.0
    for key, (a, b), frac in (("c1", (0, r1 - 1), 1), ("c2", (r1, r2 - 1), 2), ("c3", (r2, layers - 1), 4)):
        t, body = _stage_text(a, b, reds)
        c = ch[b] if 0 <= b < layers else stem_mult * C
        res = f"{math.ceil(h / frac)}×{math.ceil(size[1] / frac)}"
        boxes.append(_Box(key, x, 0.0, t, f"{body}\n{c} ch, {res}", "cells"))
        x += 2.5
    boxes.append(_Box("gap", x, 0.0, "global avg pool", f"{ch[-1] if ch else C} ch", "classifier"))
    boxes.append(_Box("fc", x + 2.5, 0.0, "classifier", f"linear → {classes}", "classifier"))
    keys = [b.key for b in boxes]
    flow = [(a, b, "flow") for a, b in zip(keys, keys[1:])]
    title = (f"macro: {name or 'classifier'} network, C = {C}, {layers} cells "
             f"(reductions at {r1} and {r2})")
    return boxes, flow, [], title


_BOX_W, _BOX_H = 2.15, 0.78


def _macro_bounds(boxes: Sequence[_Box],
                  rows: Sequence[Tuple[float, str]]) -> Tuple[float, float, float, float]:
    xs = [b.x for b in boxes]
    ys = [b.y for b in boxes]
    x0 = min(xs) - _BOX_W / 2 - (0.85 if rows else 0.0) - _MARGIN
    x1 = max(xs) + _BOX_W / 2 + _MARGIN
    y0 = min(ys) - _BOX_H / 2 - _MARGIN - 0.35
    y1 = max(ys) + _BOX_H / 2 + _MARGIN + _TITLE_H
    return x0, x1, y0, y1


def _macro_spec(genotype: Genotype, kind: str):
    kind = macro_kind(genotype) if kind == "auto" else kind
    if kind == "matting":
        return _matting_boxes(genotype)
    if kind == "classifier":
        return _classifier_boxes(genotype)
    raise ConfigError(f"unknown macro view {kind!r}; use 'auto', 'matting' or 'classifier'")


def _box_to_box(a: np.ndarray, b: np.ndarray, gap: float = 0.03) -> MplPath:
    """Straight segment between the borders of two macro boxes centred at a and b."""
    d = b - a
    # fraction of the centre-to-centre line inside one box (the same size for every box)
    with np.errstate(divide="ignore"):
        f = min(_BOX_W / 2 / abs(d[0]) if d[0] else math.inf, _BOX_H / 2 / abs(d[1]) if d[1] else math.inf)
    f = min(0.49, f + gap / float(np.hypot(*d)))
    return MplPath([a + f * d, b - f * d], [MplPath.MOVETO, MplPath.LINETO])


def plot_macro(genotype: Genotype, *, ax: Optional[Axes] = None, kind: str = "auto") -> Axes:
    """Draw the network around the cells: stages, resolutions, channels, decoder and head choices.

    Args:
        genotype: the genotype (``space["macro"]`` gives C, layers and the decoder widths).
        ax: axes to draw on; default a new figure of the view's natural size.
        kind: ``"auto"`` (see :func:`macro_kind`), ``"matting"`` or ``"classifier"``.

    Returns:
        The axes.
    """
    boxes, flow, rows, title = _macro_spec(genotype, kind)
    bounds = _macro_bounds(boxes, rows)
    if ax is None:
        fig = _new_figure(bounds[1] - bounds[0], bounds[3] - bounds[2])
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    _setup_axes(ax, bounds)
    x0, x1, y0, y1 = bounds
    k = _axes_scale(ax, bounds)

    for n, (y, label) in enumerate(rows):  # resolution bands
        if n % 2 == 0:
            ax.add_patch(FancyBboxPatch((x0 + 0.08, y - 0.5), x1 - x0 - 0.16, 1.0,
                                        boxstyle="round,pad=0,rounding_size=0.05", fc="#f4f4f4",
                                        ec="none", zorder=0))
        ax.text(x0 + _MARGIN * 0.6, y, label, ha="left", va="center", fontsize=8 * k, color="#666666",
                linespacing=1.3)

    patches = {}
    for b in boxes:
        fc, ec = _FILL[b.kind]
        patch = FancyBboxPatch((b.x - _BOX_W / 2, b.y - _BOX_H / 2), _BOX_W, _BOX_H,
                               boxstyle="round,pad=0,rounding_size=0.1", fc=fc, ec=ec, lw=1.3 * k, zorder=3)
        ax.add_patch(patch)
        patches[b.key] = patch
        ax.text(b.x, b.y + _BOX_H / 2 - 0.09, b.title, ha="center", va="top", fontsize=8.5 * k,
                weight="bold", zorder=4, color="#1a1a1a")
        ax.text(b.x, b.y + _BOX_H / 2 - 0.33, b.body, ha="center", va="top", fontsize=7.5 * k, zorder=4,
                color="#333333", linespacing=1.25)
    pos = {b.key: np.array([b.x, b.y], float) for b in boxes}
    for a, b, style in flow:
        skip = style == "skip"
        ax.add_patch(FancyArrowPatch(path=_box_to_box(pos[a], pos[b]), arrowstyle="-|>",
                                     mutation_scale=12 * k, shrinkA=0, shrinkB=0, lw=(1.2 if skip else 1.6) * k,
                                     color="#8c8c8c" if skip else "#333333",
                                     linestyle=(0, (4, 3)) if skip else "-", zorder=2))
    ax.text(x0 + 0.12, y1 - 0.12, title, ha="left", va="top", fontsize=11 * k, weight="bold")
    cost = _cost_line(genotype)
    if cost:
        ax.text(x0 + 0.12, y1 - 0.36, cost, ha="left", va="top", fontsize=7.5 * k, color="#555555")
    if any(s == "skip" for _, _, s in flow):
        handles = [Line2D([], [], color="#333333", lw=1.6 * k, label="data flow"),
                   Line2D([], [], color="#8c8c8c", lw=1.2 * k, ls=(0, (4, 3)), label="skip (concatenated)")]
        ax.legend(handles=handles, loc="lower right", fontsize=7.5 * k, frameon=False, ncol=2,
                  bbox_to_anchor=(1.0, 0.0))
    return ax


# =========================================================================== files


def _check_out(out: PathLike) -> Path:
    path = Path(out)
    if path.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"plot output must end in .png or .svg, got {str(out)!r}")
    return path


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary file in the same folder, then os.replace)."""
    fmt = path.suffix.lower().lstrip(".")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the folder of {path}: {e.strerror or e}") from None
    rc = {"svg.hashsalt": "atldas"} if fmt == "svg" else {}
    metadata = {"Date": None} if fmt == "svg" else None
    with atomic_path(path, suffix=path.suffix) as tmp, matplotlib.rc_context(rc):
        fig.savefig(tmp, format=fmt, dpi=DPI_PNG, facecolor="white", metadata=metadata)
    return path


def _figure_title(genotype: Genotype) -> str:
    prov = dict(genotype.provenance)
    space = dict(genotype.space)
    parts = [f"genotype {genotype.hash()}"]
    if space.get("name"):
        parts.append(f"space {space['name']}")
    for key in ("reference", "strategy"):
        if prov.get(key):
            parts.append(f"{key} {prov[key]}")
    if prov.get("seed") is not None and prov.get("strategy"):
        parts.append(f"seed {prov['seed']}")
    return " · ".join(parts)


def plot_genotype(genotype: Genotype, *, out: PathLike, macro: str = "auto") -> List[Path]:
    """Write the pictures of ``genotype``: combined figure, normal cell, reduction cell, macro view.

    Args:
        genotype: the genotype.
        out: the combined figure, ``.png`` or ``.svg``; the parts go beside it as
            ``<stem>_normal``, ``<stem>_reduce`` and ``<stem>_macro`` with the same suffix.
        macro: macro view, ``"auto"``, ``"matting"`` or ``"classifier"`` (see :func:`macro_kind`).

    Returns:
        ``[out, <stem>_normal, <stem>_reduce, <stem>_macro]``.

    Raises:
        ConfigError: a suffix other than .png/.svg, or a cell that is not a valid DAG.
    """
    out = _check_out(out)
    for name, cell in genotype.cells().items():
        cell.validate(name=name)
    titles = {"normal": "normal cell", "reduce": "reduction cell"}
    layouts = {name: _cell_layout(cell) for name, cell in genotype.cells().items()}
    boxes, _, rows, _ = _macro_spec(genotype, macro)
    mb = _macro_bounds(boxes, rows)
    wn, hn = layouts["normal"].size
    wr, hr = layouts["reduce"].size
    wm, hm = mb[1] - mb[0], mb[3] - mb[2]
    head, gap = 0.45, 0.25
    width = max(wn + gap + wr, wm) + 2 * 0.1
    top = max(hn, hr)
    height = head + top + gap + hm + 0.1
    fig = _new_figure(width, height)
    fig.text(0.1 / width, 1 - 0.12 / height, _figure_title(genotype), ha="left", va="top", fontsize=10,
             color="#333333")
    left = (width - (wn + gap + wr)) / 2

    def rect(x: float, y_top: float, w: float, h: float) -> Tuple[float, float, float, float]:
        return (x / width, 1 - (y_top + h) / height, w / width, h / height)

    plot_cell(genotype.normal, title=titles["normal"], ax=fig.add_axes(rect(left, head, wn, hn)))
    plot_cell(genotype.reduce, title=titles["reduce"] + _reduce_note(),
              ax=fig.add_axes(rect(left + wn + gap, head, wr, hr)))
    plot_macro(genotype, ax=fig.add_axes(rect((width - wm) / 2, head + top + gap, wm, hm)), kind=macro)
    written = [_save(fig, out)]
    stem = out.stem
    for name in ("normal", "reduce"):
        art = plot_cell(genotype.cell(name == "reduce"),
                        title=titles[name] + (_reduce_note() if name == "reduce" else ""))
        written.append(_save(art.figure, out.with_name(f"{stem}_{name}{out.suffix}")))
    written.append(_save(plot_macro(genotype, kind=macro).figure, out.with_name(f"{stem}_macro{out.suffix}")))
    return written


def _reduce_note() -> str:
    return "  (ops on the inputs stride 2)"


# =========================================================================== sources


def _registry_genotype(name: str) -> Optional[Genotype]:
    """A genotype or model registered in ``derived_models``, or None (also when that package is absent)."""
    try:
        import derived_models as dm
    except Exception:  # noqa: BLE001 - a registry in progress must not break plotting of files
        return None
    genotypes = getattr(dm, "GENOTYPES", None)
    models = getattr(dm, "MODELS", None)
    for key in dict.fromkeys((name, name.lower())):
        if genotypes is not None and key in genotypes:
            return dm.get_genotype(key)
        if models is not None and key in models:
            spec = dm.get_model_spec(key)
            g = dm.get_genotype(spec.genotype)
            knobs = dict(getattr(spec, "knobs", {}) or {})
            space = dict(g.space)
            macro_meta = dict(space.get("macro") or {})
            macro_meta.update({k: v for k, v in knobs.items() if isinstance(v, (int, float, str, list, tuple))
                               and k in ("C", "layers", "decoder_channels", "decoder_depth", "ppm_out")})
            choices = dict(g.choices)
            blocks = knobs.get("decoder_blocks")
            if isinstance(blocks, str):
                choices.update({f"decoder{lv}": blocks for lv in range(4)})
            elif isinstance(blocks, (list, tuple)):
                choices.update({f"decoder{lv}": b for lv, b in enumerate(blocks)})
            if isinstance(knobs.get("head_block"), str):
                choices["head"] = knobs["head_block"]
            space["macro"] = macro_meta
            prov = {**dict(g.provenance), "model": key}
            return g.replace(space=space, provenance=prov, choices=choices)
    return None


def _registry_names() -> List[str]:
    try:
        import derived_models as dm
    except Exception:  # noqa: BLE001
        return []
    names: List[str] = []
    for reg in (getattr(dm, "GENOTYPES", None), getattr(dm, "MODELS", None)):
        if reg is not None:
            with contextlib.suppress(Exception):
                names += [n for n in reg.names() if n not in names]
    return names


def load_source(source: Union[PathLike, Genotype]) -> Tuple[Genotype, Optional[Path]]:
    """The genotype named by ``source`` and the default output path for it (None for a Genotype).

    ``source``: a Genotype; a run directory (its ``genotype.json``; default out
    ``RUN_DIR/plots/genotype.png``); a genotype JSON or DARTS ``Genotype(...)`` text file (default out
    beside it, ``<stem>.png``); or a name registered in ``derived_models`` (default ``./<name>.png``).
    Op names are not checked against the registry (a picture of a foreign genotype is still useful);
    the cell structure is.
    """
    if isinstance(source, Genotype):
        return source, None
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        gfile = path / "genotype.json"
        if not gfile.is_file():
            raise ConfigError(f"{path} has no genotype.json: pass a run directory of `atldas search` "
                              f"(or run `atldas derive {path}` first) or a genotype file")
        return Genotype.load(gfile, validate=False), path / "plots" / "genotype.png"
    if path.is_file():
        return Genotype.load(path, validate=False), path.with_suffix(".png")
    g = _registry_genotype(text) if text and os.sep not in text and "." not in Path(text).name else None
    if g is not None:
        return g, Path(f"{text}.png")
    known = _registry_names()
    hint = f"; registered names: {', '.join(known)}" if known else ""
    raise ConfigError(f"genotype not found: {text!r} is not a file, a run directory or a registered "
                      f"genotype name{hint}")


def plot(source: Union[PathLike, Genotype], *, out: Optional[PathLike] = None,
         macro: str = "auto") -> List[Path]:
    """Plot a genotype file, run directory or registered name (see :func:`load_source`).

    Args:
        source: genotype JSON / DARTS text file, run directory, registered name, or a Genotype.
        out: combined figure (.png or .svg); default as :func:`load_source` says.
        macro: macro view, ``"auto"``, ``"matting"`` or ``"classifier"``.

    Returns:
        The written paths, as :func:`plot_genotype` returns them.

    Raises:
        ConfigError: a missing or malformed source, an invalid cell, or a bad ``out`` suffix.
    """
    if out is not None:
        _check_out(out)
    genotype, default = load_source(source)
    if out is None:
        if default is None:
            raise ConfigError("plot of a Genotype object needs out=FILE.png or FILE.svg")
        out = default
    try:
        return plot_genotype(genotype, out=out, macro=macro)
    except OSError as e:
        raise AtldasError(f"cannot write the plot {out}: {e.strerror or e}") from None
