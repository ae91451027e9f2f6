"""`atldas plot`: cell and macro pictures (PNG/SVG), label placement, sources and the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from PIL import Image

from atldas.cli import main
from atldas.errors import ConfigError
from atldas.genotype import CellSpec, Genotype
from atldas.plot import label_overlaps, load_source, macro_kind, plot, plot_cell, plot_genotype, plot_macro

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


def _overlap(a, b) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("atldas: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize("genotype,cell_type",
                         [(g, c) for g in (DARTS_V2, VARIABLE) for c in ("normal", "reduce")],
                         ids=["darts_v2-normal", "darts_v2-reduce", "variable-normal", "variable-reduce"])
def test_cell_labels_do_not_overlap(genotype, cell_type):
    cell = genotype.cell(cell_type == "reduce")
    art = plot_cell(cell, title=f"{cell_type} cell")
    fig = art.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    # one label per edge, in genotype order, naming its op, at the size asked for
    assert [t.get_text() for t in art.edge_labels] == list(cell.ops())
    assert art.unresolved == [] and art.fontsize == pytest.approx(8.0)

    texts = [t.get_window_extent(renderer) for t in art.edge_labels]
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in art.edge_labels]
    for (a, ta, ba), (b, tb, bb) in itertools.combinations(zip(range(len(texts)), texts, boxes), 2):
        assert not _overlap(ta, tb), f"labels {a} and {b} overlap"
        assert not _overlap(ba, bb), f"label boxes {a} and {b} overlap"
    assert label_overlaps(art.edge_labels) == []

    # no label covers a node, and every node is drawn with its name
    nodes = [p.get_window_extent(renderer) for p in art.ax.patches if p not in art.edges
             and p.get_zorder() == 3]
    assert len(nodes) == cell.n_nodes + 3
    assert all(not _overlap(box, node) for box in boxes for node in nodes)
    assert set(art.node_labels) == set(range(cell.n_nodes + 2)) | {"out"}
    assert len(art.edges) == len(cell.ops()) + len(cell.concat)


def test_layout_puts_every_node_right_of_its_inputs():
    art = plot_cell(VARIABLE.normal, title="normal cell")
    x = {s: t.get_position()[0] for s, t in art.node_labels.items()}
    for i, j, _ in VARIABLE.normal.edges():
        assert x[i] < x[j]
    assert all(x["out"] > x[c] for c in VARIABLE.normal.concat)


def test_parallel_edges_and_concat_of_an_input():
    # two ops from the same input, a node of in-degree 3, the previous cell in the concat
    cell = CellSpec(nodes=((("sep_conv_3x3", 0), ("skip_connect", 0)),
                           (("max_pool_3x3", 1), ("dil_conv_3x3", 2), ("sep_conv_5x5", 0))), concat=(1, 2, 3))
    art = plot_cell(cell, title="odd cell")
    art.figure.canvas.draw()
    assert art.unresolved == [] and label_overlaps(art.edge_labels) == []


def test_plot_cell_rejects_a_cycle():
    with pytest.raises(ConfigError, match="later node"):
        plot_cell(CellSpec(nodes=((("skip_connect", 3),), (("skip_connect", 0),)), concat=(2, 3)),
                  title="bad")


# ----------------------------------------------------------------------------- macro


def test_macro_view_numbers_and_choices():
    assert macro_kind(VARIABLE) == "matting"
    assert macro_kind(DARTS_V2) == "matting"  # no space metadata: the CheapMatting defaults
    assert macro_kind(DARTS_V2.replace(space={"name": "darts_cifar"})) == "classifier"
    costed = DARTS_V2.replace(space={"name": "darts_cifar"}, cost={"input": [1, 6, 1024, 1024]})
    assert macro_kind(costed) == "matting"

    texts = " | ".join(t.get_text() for t in plot_macro(DARTS_V2).texts)
    for part in ("C = 48, 14 cells (reductions at 4 and 9)", "cells 0–3", "192 ch", "cells 9–13",
                 "768 ch",
                 "decoder 3: bottleneck", "head: conv3x3", "1408 → 128 ch"):
        assert part in texts

    texts = " | ".join(t.get_text() for t in plot_macro(VARIABLE).texts)
    for part in ("C = 16, 8 cells (reductions at 2 and 5)", "decoder 0: sep_res", "head: narrow",
                 "48 ch"):  # the normal cell concatenates 3 nodes: 3 x 16 channels at 1/8
        assert part in texts

    texts = " | ".join(t.get_text() for t in plot_macro(DARTS_V2, kind="classifier").texts)
    assert "classifier" in texts and "cells 0–5" in texts


# ----------------------------------------------------------------------------- files


def _files(folder: Path) -> set:
    return {p.name for p in folder.iterdir()}


def test_plot_genotype_png(tmp_path):
    paths = plot_genotype(DARTS_V2, out=tmp_path / "g.png")
    assert [p.name for p in paths] == ["g.png", "g_normal.png", "g_reduce.png", "g_macro.png"]
    assert _files(tmp_path) == {p.name for p in paths}  # atomic: no temporary file left behind
    for p in paths:
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200


def test_plot_genotype_svg_variable_in_degree(tmp_path):
    paths = plot_genotype(VARIABLE, out=tmp_path / "sub" / "v.svg")
    assert [p.name for p in paths] == ["v.svg", "v_normal.svg", "v_reduce.svg", "v_macro.svg"]
    for p in paths:
        text = p.read_text(encoding="utf-8")
        assert "<svg" in text and text.rstrip().endswith("</svg>")
    assert _files(tmp_path / "sub") == {p.name for p in paths}


def test_plot_rejects_other_suffixes(tmp_path):
    with pytest.raises(ConfigError, match=r"\.png or \.svg"):
        plot_genotype(DARTS_V2, out=tmp_path / "g.pdf")


def test_sources(tmp_path):
    run = tmp_path / "run"
    VARIABLE.save(run / "genotype.json")
    g, out = load_source(run)
    assert g == VARIABLE and out == run / "plots" / "genotype.png"

    darts = tmp_path / "cell.txt"
    darts.write_text(DARTS_V2.to_darts() + "\n", encoding="utf-8")
    g, out = load_source(darts)
    assert g == DARTS_V2 and out == tmp_path / "cell.png"

    # foreign op names still plot; the structure is checked
    foreign = DARTS_V2.to_darts().replace("dil_conv_3x3", "conv_7x1_1x7")
    (tmp_path / "foreign.txt").write_text(foreign, encoding="utf-8")
    assert load_source(tmp_path / "foreign.txt")[0].normal.ops()[-1] == "conv_7x1_1x7"

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no genotype.json"):
        load_source(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not a file"):
        load_source(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_source(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="needs out"):
        plot(DARTS_V2)


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

    (tmp_path / "broken.json").write_text('{"format": "atldas-genotype/1", "cells": {}}', encoding="utf-8")
    assert main(["plot", str(tmp_path / "broken.json")]) == 2
    assert "broken.json" in _error_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("*.png"))
