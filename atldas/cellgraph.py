"""A cell of a genotype drawn as a DAG: inputs left, nodes in columns by
``networkx.topological_generations`` (any in-degree), the concat output right, one op label per edge.

The drawing :mod:`atldas.plot` composes into its pictures and a search writes into TensorBoard each time
it draws its heatmaps (``cells/normal``, ``cells/reduce``). Matplotlib ``Figure`` objects on the Agg
canvas: no pyplot state, no graphviz.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

from atldas.genotype import CellSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["OP_COLOURS", "FILL", "op_colour", "canvas", "cell_layout", "plot_cell"]

#: Colour of each op's edges and labels (other op names get a stable colour from their name).
OP_COLOURS: Dict[str, str] = {
    "none": "#9e9e9e", "skip_connect": "#404040", "max_pool_3x3": "#8c564b", "avg_pool_3x3": "#a67c00",
    "sep_conv_3x3": "#1f77b4", "sep_conv_5x5": "#2ca02c", "dil_conv_3x3": "#d62728", "dil_conv_5x5": "#9467bd",
    "conv_1x1": "#e377c2", "conv_3x3": "#ff7f0e"}
_SPARE = ("#17becf", "#7f7f00", "#1a9850", "#6a3d9a", "#b15928", "#0868ac", "#c51b7d", "#4d9221")
#: Fill and edge colour of each kind of box (cells and the macro view).
FILL = {"io": ("#fff3cd", "#b8860b"), "input": ("#e5f5e0", "#238b45"), "node": ("#deebf7", "#2171b5"),
         "stem": ("#edf8e9", "#41ab5d"), "cells": ("#deebf7", "#2171b5"), "ppm": ("#efedf5", "#6a51a3"),
         "decoder": ("#fdebd0", "#d94801"), "head": ("#fde0dd", "#c51b8a")}
_DX, _DY, _R, _IO = 2.1, 1.15, 0.22, (0.38, 0.21)  # cells, inches: column/row gap, node radius, box half-size


def op_colour(op: str) -> str:
    """The colour of ``op`` (a fixed table for the registered ops, else stable per name)."""
    return OP_COLOURS.get(op) or _SPARE[zlib.crc32(op.encode("utf-8")) % len(_SPARE)]


def canvas(ax: Optional[Axes], bounds, title: str, subtitle: str) -> Axes:
    """``ax`` (default: a new Agg figure of the drawing's size, 1 unit = 1 inch) showing ``bounds``, titled."""
    x0, x1, y0, y1 = bounds
    if ax is None:
        # lazy: heavy, and the run layer imports this module
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

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
    import networkx as nx  # lazy: the run layer imports this module, most runs draw nothing
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
    import networkx as nx
    cell.validate(name=title)
    graph, pos, edges, bounds = cell_layout(cell)
    if subtitle is None:
        subtitle = (f"{cell.n_nodes} nodes, in-degree {', '.join(map(str, cell.in_degrees))}; "
                    f"output = concat of {', '.join(_state(c) for c in cell.concat)}")
    ax = canvas(ax, bounds, title, subtitle)
    nodes, io = list(pos), (0, 1, "out")
    inner = [n for n in nodes if n not in io]
    nx.draw_networkx_nodes(graph, pos, nodelist=inner, node_size=1000, node_color=FILL["node"][0],
                           edgecolors=FILL["node"][1], linewidths=1.4, ax=ax)
    nx.draw_networkx_labels(graph, pos, labels={n: _state(n) for n in inner}, font_size=10, ax=ax)
    for n in io:
        fc, ec = FILL["io" if n == "out" else "input"]
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
