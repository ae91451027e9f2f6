"""`atldas plot`: cell and macro pictures (PNG/SVG), label placement, sources and the CLI."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest
from matplotlib.patches import FancyArrowPatch
from PIL import Image

from atldas.cli import main
from atldas.errors import AtldasError, ConfigError
from atldas.genotype import CellSpec, Genotype
from atldas.models.cheapmatting import CheapMattingCfg
from atldas.plot import (cell_layout, figure_title, load_source, macro_kind, plot, plot_cell, plot_genotype,
                         plot_macro)

# DARTS (second order): every node has in-degree 2; node 3 takes an intermediate node (state 2)
DARTS_V2 = Genotype.from_darts(
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")

# in-degree 1 and 3, edges from non-adjacent nodes, a concat without node 0
VARIABLE = Genotype(
    normal=CellSpec(nodes=((("sep_conv_3x3", 0),),
                           (("skip_connect", 0), ("dil_conv_3x3", 1), ("sep_conv_5x5", 2)),
                           (("max_pool_3x3", 1), ("sep_conv_3x3", 3)),
                           (("dil_conv_5x5", 0), ("skip_connect", 2), ("avg_pool_3x3", 4))),
                    concat=(3, 4, 5)),
    reduce=CellSpec(nodes=((("max_pool_3x3", 0), ("sep_conv_3x3", 1)),
                           (("sep_conv_5x5", 1),),
                           (("sep_conv_3x3", 0), ("dil_conv_3x3", 2), ("skip_connect", 3)),
                           (("avg_pool_3x3", 1), ("dil_conv_5x5", 4))),
                    concat=(2, 3, 4, 5)),
    space={"name": "matting", "macro": {"C": 16, "layers": 8}},
    choices={"decoder0": "sep_res", "decoder1": "bottleneck", "decoder2": "sep_res",
             "decoder3": "bottleneck", "head": "narrow"})

# two ops from the same input (parallel edges), in-degree 3, the previous cell in the concat
PARALLEL = CellSpec(nodes=((("sep_conv_3x3", 0), ("skip_connect", 0)),
                           (("max_pool_3x3", 1), ("dil_conv_3x3", 2), ("sep_conv_5x5", 0))), concat=(1, 2, 3))

CELLS = {"darts_v2-normal": DARTS_V2.normal, "darts_v2-reduce": DARTS_V2.reduce, "variable-normal": VARIABLE.normal,
         "variable-reduce": VARIABLE.reduce, "parallel": PARALLEL}


def _overlap(a, b) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


def _texts(ax) -> str:
    return " | ".join(t.get_text() for t in ax.texts)


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("atldas: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- cells


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_draws_every_edge_and_label_without_overlaps(name):
    cell = CELLS[name]
    ax = plot_cell(cell, title=name)
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    # one arrow per op edge and per concat input; one boxed label per op edge, naming its op
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == len(cell.ops()) + len(cell.concat)
    assert sum(a.get_linestyle() in ("--", "dashed") for a in arrows) == len(cell.concat)  # concat edges dashed
    labels = [t for t in ax.texts if t.get_bbox_patch() is not None and t.get_text() in set(cell.ops())]
    assert Counter(t.get_text() for t in labels) == Counter(cell.ops())
    # every node drawn: the intermediate nodes as discs, the inputs and the output as named boxes
    assert len(ax.collections[0].get_offsets()) == cell.n_nodes
    assert {r"$c_{k-2}$", r"$c_{k-1}$", r"$c_{k}$"} <= {t.get_text() for t in ax.texts}
    assert {str(k) for k in range(cell.n_nodes)} <= {t.get_text() for t in ax.texts}

    # readable: no two label boxes overlap, and no label box covers a node
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in labels]
    for (a, ba), (b, bb) in itertools.combinations(enumerate(boxes), 2):
        assert not _overlap(ba, bb), f"labels {a} ({labels[a].get_text()}) and {b} ({labels[b].get_text()}) overlap"
    nodes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text() in {str(k) for k in range(cell.n_nodes)}]
    nodes += [t.get_bbox_patch().get_window_extent(renderer) for t in ax.texts
              if t.get_text() in (r"$c_{k-2}$", r"$c_{k-1}$", r"$c_{k}$")]
    assert all(not _overlap(box, node) for box in boxes for node in nodes)


@pytest.mark.parametrize("name", list(CELLS))
def test_layout_is_a_cycle_free_left_to_right_layering(name):
    cell = CELLS[name]
    graph, pos, edges, _ = cell_layout(cell)
    assert nx.is_directed_acyclic_graph(graph)
    assert Counter((i, j, op) for i, j, op, _ in edges) == Counter(list(cell.edges()) + [(c, "out", None)
                                                                                          for c in cell.concat])
    for i, j, _, _ in edges:  # every node right of its inputs, the inputs in the first column
        assert pos[i][0] < pos[j][0]
    assert pos[0][0] == pos[1][0] == min(p[0] for p in pos.values()) and pos[0][1] > pos[1][1]
    assert pos["out"][0] == max(p[0] for p in pos.values())
    # the columns are the topological generations: a node sits one column right of its deepest input
    xs = sorted({p[0] for p in pos.values()})
    col = {s: xs.index(p[0]) for s, p in pos.items()}
    for j in range(2, cell.n_nodes + 2):
        assert col[j] == 1 + max(col[i] for i, t, _ in cell.edges() if t == j)


def test_any_in_degree():
    chain = CellSpec(nodes=((("sep_conv_3x3", 1),), (("skip_connect", 2),), (("dil_conv_3x3", 3),)), concat=(4,))
    wide = CellSpec(nodes=((("sep_conv_3x3", 0), ("skip_connect", 1)),
                           tuple((op, i) for op, i in zip(("max_pool_3x3", "avg_pool_3x3", "sep_conv_5x5",
                                                           "dil_conv_5x5"), (0, 1, 2, 0)))[:3] + (("none", 2),)),
                    concat=(2, 3))
    for cell, degrees in ((chain, (1, 1, 1)), (wide, (2, 4))):
        assert cell.in_degrees == degrees
        ax = plot_cell(cell, title="cell")
        assert len([p for p in ax.patches if isinstance(p, FancyArrowPatch)]) == len(cell.ops()) + len(cell.concat)
        assert f"in-degree {', '.join(map(str, degrees))}" in _texts(ax)


def test_plot_cell_rejects_a_cycle():
    with pytest.raises(ConfigError, match="later node"):
        plot_cell(CellSpec(nodes=((("skip_connect", 3),), (("skip_connect", 0),)), concat=(2, 3)), title="bad")


# ----------------------------------------------------------------------------- macro


def test_macro_kind_follows_the_network_the_genotype_records():
    assert macro_kind(VARIABLE) == "matting"
    assert macro_kind(DARTS_V2) == "matting"  # no space metadata: the CheapMatting macro (as create_model builds it)
    assert macro_kind(DARTS_V2.replace(space={"name": "tiny"})) == "matting"
    assert macro_kind(DARTS_V2.replace(space={"name": "darts_cifar"})) == "classifier"
    # the cost of a file says what it was measured on, not what network it describes
    assert macro_kind(DARTS_V2.replace(space={"name": "darts_cifar"}, cost={"input": [1, 6, 64, 64]})) == "classifier"
    assert macro_kind(DARTS_V2.replace(space={"name": "darts_cifar", "macro": CheapMattingCfg().to_meta()})) == "matting"
    assert macro_kind(DARTS_V2.replace(space={"macro": {"name": "unet"}})) == "none"  # cells only
    with pytest.raises(ConfigError, match="unknown macro view"):
        plot_macro(DARTS_V2, kind="pie")


def test_matting_macro_numbers_come_from_the_config():
    texts = _texts(plot_macro(DARTS_V2))  # the released macro: C = 48, 14 cells
    for part in ("C = 48, 14 cells (reductions at 4 and 9)", "cells 0–3", "4 normal\n192 ch", "cells 4–8",
                 "1 reduce + 4 normal\n384 ch", "cells 9–13", "768 ch", "decoder 3: bottleneck", "head: conv3x3",
                 "1408 → 128 ch", "320 → 128 ch", "176 → 64 ch", "88 → 32 ch", "38 → 1 ch", "256 + 768 ch",
                 "PReLU\n24 ch", "2× bottleneck"):
        assert part in texts, part

    # another macro: every number follows it (widths, depth, taps of a 3-node concat, reductions)
    meta = {"C": 16, "layers": 8, "decoder_channels": [8, 16, 24, 40], "ppm_out": 40, "decoder_depth": 3}
    g = VARIABLE.replace(space={"name": "matting", "macro": meta}, cost={"input": [1, 6, 96, 80]})
    cfg = CheapMattingCfg.from_meta(meta)
    texts = _texts(plot_macro(g))
    c8, c16, c32 = 3 * 16, 3 * 32, 3 * 64  # the taps (cells 1, 4, 7) are normal cells: they concat 3 nodes
    c_in = cfg.level_inputs((c8, c16, c32))
    for part in ("C = 16, 8 cells (reductions at 2 and 5)", f"cells 0–1 | 2 normal\n{c8} ch", f"cells 2–4 | 1 reduce + 2 normal\n{c16} ch", f"{c16} ch",
                 f"{c32} ch", f"40 + {c32} ch", f"{c_in[3]} → 40 ch", f"{c_in[2]} → 24 ch", f"{c_in[1]} → 16 ch",
                 f"{c_in[0]} → 8 ch", f"{cfg.head_input} → 1 ch", "3× sep_res", "decoder 0: sep_res", "head: narrow",
                 "PReLU\n8 ch", "1/32\n3×3", "1/1\n96×80"):
        assert part in texts, part


def test_classifier_macro():
    texts = _texts(plot_macro(DARTS_V2.replace(space={"name": "darts_cifar"})))  # DartsCifarNetwork's defaults
    for part in ("DARTS CIFAR classifier, C = 36, 20 cells (reductions at 6 and 13)", "108 ch", "cells 0–5",
                 "6 normal\n144 ch", "cells 13–19", "576 ch", "linear → 10"):
        assert part in texts, part
    g = DARTS_V2.replace(space={"name": "darts_cifar", "macro": {"name": "darts_cifar", "C": 16, "layers": 8,
                                                                   "num_classes": 100, "stem_multiplier": 3}})
    texts = _texts(plot_macro(g))
    for part in ("C = 16, 8 cells (reductions at 2 and 5)", "48 ch", "256 ch", "linear → 100"):
        assert part in texts, part


# ----------------------------------------------------------------------------- titles and sources


def test_titles_name_where_the_cells_were_searched_and_the_macro_drawn():
    g, out = load_source("cheapmatting")
    assert out == Path("cheapmatting.png") and g.provenance["model"] == "cheapmatting"
    assert g.space["macro"] == CheapMattingCfg().to_meta()  # the macro the registered network is built in
    title = figure_title(g, macro_kind(g))
    assert "model cheapmatting" in title and "cells searched in darts_cifar, CheapMatting macro" in title
    assert "space darts_cifar" not in title
    assert "C = 48, 14 cells" in _texts(plot_macro(g))

    g, out = load_source("darts_v2")  # a registered genotype: the network its file records
    assert out == Path("darts_v2.png") and macro_kind(g) == "classifier"
    assert "cells searched in darts_cifar, DARTS CIFAR classifier macro" in figure_title(g, "classifier")
    # its file's cost is of DARTS' cells in CheapMatting: the matting view shows it, the classifier's does not
    assert "G MACs at 1×6×1024×1024 (cheapmatting macro" in _texts(plot_macro(g, kind="matting"))
    assert "G MACs" not in _texts(plot_macro(g))
    assert "cells searched in matting, CheapMatting macro" in figure_title(VARIABLE, "matting")
    for title in ("normal cell", "reduction cell"):
        assert title in _texts(plot_cell(VARIABLE.cell(title.startswith("reduction")), title=title))


def test_sources(tmp_path):
    run = tmp_path / "run"
    VARIABLE.save(run / "genotype.json")
    g, out = load_source(run)
    assert g == VARIABLE and out == run / "plots" / "genotype.png"

    darts = tmp_path / "cell.txt"
    darts.write_text(DARTS_V2.to_darts() + "\n", encoding="utf-8")
    g, out = load_source(darts)
    assert g == DARTS_V2 and out == tmp_path / "cell.png"

    # an op atldas does not know is refused, naming the known ones (register a custom op to plot it)
    foreign = DARTS_V2.to_darts().replace("dil_conv_3x3", "conv_7x1_1x7")
    (tmp_path / "foreign.txt").write_text(foreign, encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown op 'conv_7x1_1x7'; known ops: .*sep_conv_3x3"):
        load_source(tmp_path / "foreign.txt")

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no genotype.json"):
        load_source(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not a file"):
        load_source(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match=r"not a file.*cheapmatting.*darts_v2"):
        load_source("no_such_model")
    with pytest.raises(ConfigError, match="'aematter' has no genotype to plot"):
        load_source("aematter")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_source(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="needs out"):
        plot(DARTS_V2)


# ----------------------------------------------------------------------------- files


def _files(folder: Path) -> set:
    return {p.name for p in folder.iterdir()}


def test_plot_genotype_png(tmp_path):
    paths = plot_genotype(DARTS_V2, out=tmp_path / "g.png")
    assert [p.name for p in paths] == ["g.png", "g_normal.png", "g_reduce.png", "g_macro.png"]
    assert _files(tmp_path) == {p.name for p in paths}  # atomic: no temporary file left behind
    sizes = {}
    for p in paths:
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG" and im.info["dpi"][0] == pytest.approx(150, abs=1)
            sizes[p.name] = im.size
    # the combined figure holds the three parts
    assert sizes["g.png"][0] >= max(sizes["g_normal.png"][0] + sizes["g_reduce.png"][0], sizes["g_macro.png"][0])
    assert sizes["g.png"][1] >= sizes["g_normal.png"][1] + sizes["g_macro.png"][1]


def test_plot_genotype_svg_variable_in_degree(tmp_path):
    paths = plot_genotype(VARIABLE, out=tmp_path / "sub" / "v.svg")
    assert [p.name for p in paths] == ["v.svg", "v_normal.svg", "v_reduce.svg", "v_macro.svg"]
    for p in paths:
        text = p.read_text(encoding="utf-8")
        assert "<svg" in text and text.rstrip().endswith("</svg>") and "<dc:date>" not in text
    assert _files(tmp_path / "sub") == {p.name for p in paths}


def test_plot_rejects_other_suffixes_and_reports_unwritable_paths(tmp_path):
    with pytest.raises(ConfigError, match=r"\.png or \.svg"):
        plot_genotype(DARTS_V2, out=tmp_path / "g.pdf")
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(AtldasError, match="file is a file, not a folder"):
        plot(VARIABLE.save(tmp_path / "v.json"), out=tmp_path / "file" / "g.png")


# ----------------------------------------------------------------------------- CLI


def test_cli_plot(tmp_path, capsys):
    genotype_json = VARIABLE.save(tmp_path / "genotype.json")
    assert main(["plot", str(genotype_json), "--out", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert out.count("wrote ") == 4
    for name in ("g.png", "g_normal.png", "g_reduce.png", "g_macro.png"):
        with Image.open(tmp_path / name) as im:
            im.verify()


def test_cli_plot_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in _error_line(capsys.readouterr().err)

    genotype_json = DARTS_V2.save(tmp_path / "genotype.json")
    assert main(["plot", str(genotype_json), "--out", str(tmp_path / "g.jpg")]) == 2
    assert ".png or .svg" in _error_line(capsys.readouterr().err)

    assert main(["plot", "aematter", "--out", str(tmp_path / "a.png")]) == 2
    assert "no genotype to plot" in _error_line(capsys.readouterr().err)

    (tmp_path / "broken.json").write_text('{"format": "atldas-genotype/1", "cells": {}}', encoding="utf-8")
    assert main(["plot", str(tmp_path / "broken.json")]) == 2
    assert "broken.json" in _error_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("*.png"))

    (tmp_path / "s_reduce.png").mkdir()  # a picture beside the main one cannot be written: nothing is
    assert main(["plot", str(genotype_json), "--out", str(tmp_path / "s.png")]) == 2
    assert "s_reduce.png: it is a folder" in _error_line(capsys.readouterr().err)
    assert not [p for p in tmp_path.glob("s*.png") if p.is_file()]

    g_png = DARTS_V2.save(tmp_path / "gg.png")  # a genotype JSON under a picture's name
    before = g_png.read_bytes()
    assert main(["plot", str(g_png), "--out", str(g_png)]) == 2
    assert "is the genotype file being plotted" in _error_line(capsys.readouterr().err)
    assert g_png.read_bytes() == before


def test_a_network_without_a_macro_view_gets_its_cells(tmp_path):
    g = DARTS_V2.replace(space={"name": "planted", "macro": {"name": "planted", "C": 16}})
    paths = plot_genotype(g, out=tmp_path / "p.png")  # and no reduction cell: it has none
    assert [p.name for p in paths] == ["p.png", "p_normal.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert figure_title(g, macro_kind(g)).endswith("cells searched in planted")  # not "planted, none"


def test_an_interrupted_plot_writes_none_of_its_pictures(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    real, calls = Figure.savefig, []

    def savefig(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C while the third picture is drawn
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    with pytest.raises(KeyboardInterrupt):
        plot_genotype(DARTS_V2, out=tmp_path / "i.png")
    assert not list(tmp_path.iterdir())  # neither the first two pictures nor a temporary file
