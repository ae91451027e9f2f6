"""Genotype files that contradict themselves or their space: each fault is one ConfigError naming the
file, the cell and node and the field, found before the ``darts`` string is compared."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import derived_models
from atldas.cli import main
from atldas.errors import ConfigError
from atldas.genotype import MACRO_INPUT_CHANNELS, Genotype
from atldas.models.zoo import check_genotype
from atldas.tasks import DataCfg, get_task
from search_spaces import SpaceCfg, get_space

REFERENCE_FILE = Path(__file__).parent / "data" / "genotypes.json"


def _bound(name: str):
    space = get_space(name)
    knobs = SpaceCfg(**{k: space.defaults[k] for k in ("C", "layers", "target_C", "target_layers", "input_size")})
    return space.bind(knobs, io=get_task(space.task).io(DataCfg()))


@pytest.fixture(scope="module")
def derived() -> dict:
    """What ``atldas derive`` writes for a ``tiny`` search, with the released cells (no avg_pool_3x3)."""
    space = _bound("tiny")
    arch = space.new_arch()
    data = space.child_to_genotype(arch, arch.argmax()).to_json()
    released = derived_models.get_genotype("atldas_cifar100").to_json()
    data.update(cells=released["cells"], darts=released["darts"])
    assert data["space"]["macro"]["in_channels"] == 6 and "avg_pool_3x3" not in data["darts"]
    Genotype.from_json(data)
    return data


def _write(tmp_path: Path, data: dict, name: str = "g.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def _refused(p: Path, match: str) -> str:
    """The message of both read paths: load (bench, retrain, predict) and load + check_genotype (plot)."""
    with pytest.raises(ConfigError, match=match) as info:
        Genotype.load(p)
    msg = str(info.value)
    with pytest.raises(ConfigError, match=match) as info:
        check_genotype(Genotype.load(p, validate=False))
    for m in (msg, str(info.value)):
        assert m.startswith(f"{p}: ") and "\n" not in m
    return msg


def test_the_spaces_fixed_input_is_the_genotype_rule():
    for name in ("matting", "tiny"):
        assert _bound(name).macro_meta()["in_channels"] == MACRO_INPUT_CHANNELS["cheapmatting"]


def test_macro_in_channels_the_network_cannot_take_is_refused(tmp_path, derived, capsys):
    data = copy.deepcopy(derived)
    data["space"]["macro"]["in_channels"] = 3
    p = _write(tmp_path, data)
    _refused(p, r"space.macro.in_channels is 3, but the cheapmatting network takes 6 .*set it to 6")
    assert main(["bench", str(p), "--no-latency", "--size", "64"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"atldas: error: {p}: ")
    # a macro whose input varies (planted) keeps its own range
    planted = {**data, "space": {"name": "planted", "macro": {"name": "planted", "C": 4, "cells": 1, "in_channels": 5}}}
    assert Genotype.load(_write(tmp_path, planted, "planted.json")).space["macro"]["in_channels"] == 5


def test_json_without_space_is_refused_but_darts_forms_need_none(tmp_path, derived):
    data = copy.deepcopy(derived)
    del data["space"]
    _refused(_write(tmp_path, data), r"genotype has no 'space'.*\"space\": \{\}")
    data["space"] = {}  # explicitly the cells alone, as Genotype.from_darts(...).save() writes them
    assert Genotype.load(_write(tmp_path, data, "empty_space.json")).space == {}
    text = (tmp_path / "g.txt")
    text.write_text(derived["darts"])
    assert Genotype.load(text).space == {}


def _node(cell: str, j: int, change):
    def apply(g):
        change(g["cells"][cell]["nodes"][j]["inputs"])
    return apply


@pytest.mark.parametrize("change,match", [
    (lambda g: g["space"].update(nodes=3), r"normal cell, node 3 \(state 5\): beyond space.nodes = 3"),
    (lambda g: g["space"].update(nodes=5), r"normal cell has 4 nodes .*space.nodes says 5"),
    (lambda g: g["space"].update(ops=[o for o in g["space"]["ops"] if o != "avg_pool_3x3"])
     or _node("reduce", 2, lambda ins: ins.__setitem__(0, ["avg_pool_3x3", 0]))(g),
     r"reduce cell, node 2 \(state 4\): unknown op 'avg_pool_3x3' for this space \(space.ops: "),
    (_node("normal", 2, lambda ins: ins.append(["skip_connect", 3])),
     r"normal cell, node 2 \(state 4\) has 3 inputs, outside space.in_degree \[2, 2\]"),
    (lambda g: g["space"].update(in_degree=[2]), "space.in_degree must be"),
    (lambda g: g["space"].update(nodes="4"), "space.nodes must be an integer"),
])
def test_cells_must_agree_with_their_space(tmp_path, derived, change, match):
    data = copy.deepcopy(derived)
    change(data)
    data.pop("darts")
    _refused(_write(tmp_path, data), match)


@pytest.mark.parametrize("change,match", [
    (_node("normal", 1, lambda ins: ins.__setitem__(1, ["skip_connect", 7])), r"node 1 .*index 7 points at a later node"),
    (_node("normal", 1, lambda ins: ins.__setitem__(1, ["skip_connect", -1])), r"node 1 .*index -1 is negative"),
    (_node("normal", 1, lambda ins: ins.__setitem__(1, ["skip_connect", 3])), r"node 1 .*points at the node itself"),
    (_node("normal", 1, lambda ins: ins.__setitem__(1, ["conv_9x9", 0])), r"node 1 .*unknown op 'conv_9x9'"),
    (_node("normal", 1, lambda ins: ins.__setitem__(1, ["none", 0])), r"node 1 .*op 'none' is not an op"),
    (lambda g: g["cells"]["normal"].update(concat=[2, 2]), r"normal cell: concat \[2, 2\] repeats"),
    (lambda g: g["cells"]["normal"].update(nodes=[]), "normal cell has no nodes"),
    (lambda g: g["space"].update(nodes=3), "beyond space.nodes"),
])
def test_darts_string_does_not_hide_the_fault(tmp_path, derived, change, match):
    data = copy.deepcopy(derived)  # keeps the darts string of the unchanged cells
    change(data)
    assert "disagrees" not in _refused(_write(tmp_path, data), match)


def test_darts_string_that_alone_disagrees_names_where(tmp_path, derived):
    data = copy.deepcopy(derived)
    first = data["cells"]["reduce"]["nodes"][3]["inputs"][0]
    first[0] = "skip_connect" if first[0] != "skip_connect" else "max_pool_3x3"
    _refused(_write(tmp_path, data), r"'darts' string disagrees with 'cells' \(first at reduce cell, node 3\)")


def test_released_and_published_genotypes_still_load():
    for name in derived_models.genotype_names():
        check_genotype(derived_models.get_genotype(name))
    for name, entry in json.loads(REFERENCE_FILE.read_text()).items():
        if isinstance(entry, dict) and "normal" in entry:
            check_genotype(Genotype.from_reference(name, REFERENCE_FILE).validate())


def test_a_macro_fault_names_the_file(tmp_path, capsys):
    """`atldas bench ok.json bad.json` said only `CheapMatting macro: C must be even ...`."""
    d = derived_models.get_genotype("atldas_cifar100").to_json()
    d["space"] = {"name": "matting", "macro": {"name": "cheapmatting", "C": 7}}
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"bad.json: CheapMatting macro: C must be even"):
        check_genotype(Genotype.load(tmp_path / "bad.json"))
