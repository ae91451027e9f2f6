"""Genotype: JSON and DARTS round trips, validation messages, hash, atomic save, robust load."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from atldas.errors import ConfigError
from atldas.genotype import FORMAT, CellSpec, Genotype

ATLDAS_DARTS = (
    "Genotype(normal=[('skip_connect', 0), ('dil_conv_5x5', 1), ('dil_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_5x5', 1), ('sep_conv_5x5', 3), ('sep_conv_3x3', 3), ('dil_conv_3x3', 4)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('dil_conv_5x5', 2), ('sep_conv_3x3', 0), ('dil_conv_5x5', 3), ('sep_conv_5x5', 3), "
    "('dil_conv_5x5', 4)], reduce_concat=[2, 3, 4, 5])"
)

# reference/genotypes.json, copied to tests/data (tests do not read the shared folder)
REFERENCE_FILE = Path(__file__).parent / "data" / "genotypes.json"


def variable_genotype() -> Genotype:
    normal = CellSpec(nodes=[[("sep_conv_3x3", 0)],
                             [("skip_connect", 1), ("dil_conv_3x3", 2), ("avg_pool_3x3", 0)],
                             [("sep_conv_5x5", 3), ("max_pool_3x3", 1)]], concat=[2, 3, 4])
    reduce = CellSpec(nodes=[[("max_pool_3x3", 0), ("sep_conv_3x3", 1)], [("skip_connect", 2)]],
                      concat=[2, 3])
    return Genotype(normal=normal, reduce=reduce, space={"name": "tiny", "in_degree": [1, 3]},
                    provenance={"seed": 1})


def test_darts_round_trip():
    g = Genotype.from_darts(ATLDAS_DARTS)
    assert g.is_darts and g.normal.in_degrees == (2, 2, 2, 2)
    assert g.to_darts() == ATLDAS_DARTS
    assert g.normal.nodes[2] == (("sep_conv_5x5", 1), ("sep_conv_5x5", 3))
    g.validate()


def test_darts_parser_accepts_range_tuples_and_prefix():
    text = ("genotypes.Genotype(normal=(('sep_conv_3x3', 0), ('sep_conv_3x3', 1)), "
            "normal_concat=range(2, 3), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], "
            "reduce_concat=range(2, 3))")
    g = Genotype.from_darts(text)
    assert g.normal.concat == (2,) and g.reduce.nodes[0][1] == ("max_pool_3x3", 1)


@pytest.mark.parametrize("text", [
    "__import__('os').system('echo hi')",
    "Genotype(normal=[('a', 0)], normal_concat=[2], reduce=[], reduce_concat=[2])",  # odd pair count
    "Genotype(normal=f(), normal_concat=[2], reduce=[], reduce_concat=[])",
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=[2])",
    "Genotype(normal=[",
])
def test_darts_parser_rejects_without_eval(text):
    with pytest.raises(ConfigError):
        Genotype.from_darts(text)


def test_json_round_trip_and_darts_field(tmp_path):
    g = Genotype.from_darts(ATLDAS_DARTS, cost={"macs": 1}, provenance={"seed": 3})
    data = g.to_json()
    assert data["format"] == FORMAT
    assert data["darts"] == ATLDAS_DARTS
    assert data["cells"]["normal"]["nodes"][0] == {"inputs": [["skip_connect", 0], ["dil_conv_5x5", 1]]}
    assert Genotype.from_json(json.loads(json.dumps(data))) == g
    path = g.save(tmp_path / "sub" / "genotype.json")
    back = Genotype.load(path)
    assert back == g and back.cost["macs"] == 1 and back.provenance["seed"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["genotype.json"]  # no temp file left


def test_variable_in_degree_json_has_no_darts(tmp_path):
    g = variable_genotype().validate()
    assert not g.is_darts
    data = g.to_json()
    assert "darts" not in data
    back = Genotype.load(g.save(tmp_path / "g.json"))
    assert back == g and back.normal.in_degrees == (1, 3, 2) and back.space["in_degree"] == [1, 3]
    with pytest.raises(ConfigError, match="normal cell node 0 has in-degree 1"):
        g.to_darts()


def test_hash_is_stable_and_ignores_metadata():
    g = Genotype.from_darts(ATLDAS_DARTS)
    h = g.hash()
    assert len(h) == 12 and int(h, 16) >= 0
    assert g.replace(cost={"macs": 5}, provenance={"run": "x"}, space={"name": "s"}).hash() == h
    assert Genotype.from_darts(ATLDAS_DARTS).hash() == h
    assert hash(g) == hash(Genotype.from_darts(ATLDAS_DARTS))
    other = Genotype.from_darts(ATLDAS_DARTS.replace("('skip_connect', 0), ('dil",
                                                     "('skip_connect', 1), ('dil"))
    assert other.hash() != h and other != g
    assert g.replace(choices={"head": "sep"}).hash() != h


def test_frozen():
    g = Genotype.from_darts(ATLDAS_DARTS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.normal = g.reduce  # type: ignore[misc]
    with pytest.raises(TypeError):
        g.space["x"] = 1  # type: ignore[index]


def test_copy_and_in_memory_pickle():
    import copy
    import pickle

    g = variable_genotype()
    assert copy.deepcopy(g) is g and copy.copy(g) is g
    back = pickle.loads(pickle.dumps(g))
    assert back == g and back.provenance["seed"] == 1


def test_load_darts_string_file(tmp_path):
    p = tmp_path / "g.txt"
    p.write_text(ATLDAS_DARTS + "\n")
    assert Genotype.load(p) == Genotype.from_darts(ATLDAS_DARTS)


@pytest.mark.parametrize("content,match", [
    ("{not json", "invalid JSON"),
    ('{"format": "other/9"}', "unsupported genotype format"),
    ('{"format": "atldas-genotype/1", "cells": {"normal": {}}}', "'normal' and a 'reduce'"),
    ("hello", "neither genotype JSON"),
    ("[1, 2]", "neither genotype JSON"),
])
def test_malformed_files_give_one_line_config_errors(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(ConfigError, match=match) as info:
        Genotype.load(p)
    assert "\n" not in str(info.value) and str(p) in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        Genotype.load("/nonexistent/genotype.json")


def _with_node(nodes, concat=(2, 3)):
    ok = CellSpec(nodes=[[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]], concat=[2])
    return Genotype(normal=CellSpec(nodes=nodes, concat=concat), reduce=ok)


@pytest.mark.parametrize("nodes,concat,match", [
    ([[("conv_9x9", 0)], [("skip_connect", 2)]], (2, 3),
     r"normal cell, node 0 \(state 2\): unknown op 'conv_9x9'"),
    ([[("sep_conv_3x3", 0)], [("skip_connect", 3)]], (2, 3), "node 1 .*points at the node itself"),
    ([[("sep_conv_3x3", 3)], [("skip_connect", 2)]], (2, 3), "node 0 .*later node"),
    ([[("sep_conv_3x3", -1)], [("skip_connect", 2)]], (2, 3), "negative"),
    ([[("sep_conv_3x3", 0)], []], (2, 3), "node 1 .*no inputs"),
    ([[("sep_conv_3x3", 0)], [("skip_connect", 2)]], (2, 4), "concat index 4 out of range"),
    ([[("sep_conv_3x3", 0)], [("skip_connect", 2)]], (), "concat is empty"),
    ([[("sep_conv_3x3", 0)], [("skip_connect", 2)]], (2, 2), "repeats"),
    ([[("sep_conv_3x3", 0), ("sep_conv_3x3", 0)]], (2,), "listed twice"),
    ([], (2,), "no nodes"),
])
def test_validate_names_cell_and_node(nodes, concat, match):
    from atldas.ops import OPS

    with pytest.raises(ConfigError, match=match):
        _with_node(nodes, concat).validate(ops=OPS.names())  # the registered op set


def test_validate_without_ops_checks_the_structure_and_networks_check_the_ops():
    # validate() without ``ops`` checks the structure only; the op names are checked by the networks
    # that build the genotype (and by validate(ops=...))
    g = _with_node([[("conv_9x9", 0)], [("skip_connect", 2)]])
    assert g.validate() is g
    from atldas.models.cells import Cell

    with pytest.raises(ConfigError, match="unknown op 'conv_9x9'; known ops: avg_pool_3x3"):
        Cell(spec=g.normal, C_prev_prev=8, C_prev=8, C=8, reduction=False, reduction_prev=False)


def test_validate_with_custom_op_set():
    g = Genotype.from_darts(ATLDAS_DARTS)
    with pytest.raises(ConfigError, match="unknown op 'skip_connect'"):
        g.validate(ops=["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"])


def test_bad_node_types():
    with pytest.raises(ConfigError, match="integer index"):
        CellSpec(nodes=[[("sep_conv_3x3", "0")]], concat=[2])
    with pytest.raises(ConfigError, match="pair"):
        CellSpec(nodes=[[("sep_conv_3x3", 0, 1)]], concat=[2])


def test_load_rejects_invalid_genotype_json(tmp_path):
    g = variable_genotype()
    data = g.to_json()
    data["cells"]["normal"]["nodes"][1]["inputs"][0] = ["sep_conv_3x3", 9]
    p = tmp_path / "g.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="normal cell, node 1"):
        Genotype.load(p)
    assert Genotype.load(p, validate=False).normal.nodes[1][0] == ("sep_conv_3x3", 9)


def test_darts_field_must_agree(tmp_path):
    data = Genotype.from_darts(ATLDAS_DARTS).to_json()
    data["darts"] = data["darts"].replace("'skip_connect', 0", "'skip_connect', 1", 1)
    with pytest.raises(ConfigError, match="disagrees"):
        Genotype.from_json(data)


def test_from_reference(tmp_path):
    p = REFERENCE_FILE
    g = Genotype.from_reference("DARTS_V2", p)
    assert g.reduce.nodes[1] == (("skip_connect", 2), ("max_pool_3x3", 1))
    source = json.loads(p.read_text())["DARTS_V2"]["source"]
    assert g.provenance["reference"] == "DARTS_V2" and g.provenance["source"] == source
    assert Genotype.from_reference("darts_v2", p) == g
    with pytest.raises(ConfigError, match="known: DARTS_V2"):
        Genotype.from_reference("nope", p)
    # a genotypes.json-style dict is also accepted by from_json / load
    p2 = tmp_path / "one.json"
    p2.write_text(json.dumps(json.loads(p.read_text())["DARTS_V2"]))
    assert Genotype.load(p2) == g


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    g = Genotype.from_darts(ATLDAS_DARTS)
    p = g.save(tmp_path / "g.json")
    before = p.read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        variable_genotype().save(p)
    assert p.read_text() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["g.json"]


def test_derived_models_genotypes():
    from derived_models import genotype_names, get_genotype, resolve_genotype

    assert genotype_names() == ["atldas_cifar100", "darts_v2", "pc_darts_cifar"]
    g = get_genotype("atldas_cifar100")
    assert g == Genotype.from_darts(ATLDAS_DARTS)
    assert get_genotype("darts_v2").to_darts().startswith("Genotype(normal=[('sep_conv_3x3', 0)")
    assert resolve_genotype("pc_darts_cifar") == get_genotype("pc_darts_cifar")
    with pytest.raises(ConfigError, match="known genotypes: atldas_cifar100, darts_v2, pc_darts_cifar"):
        get_genotype("nasnet")


def test_depth_counts_the_inputs_taken_from_intermediate_nodes():
    """``CellSpec.depth``: a cell's inputs from states 2 and up; ``Genotype.depth``: summed over its cells."""
    g = Genotype.from_darts(ATLDAS_DARTS)
    assert (g.normal.depth, g.reduce.depth, g.depth) == (3, 4, 7)
    v = variable_genotype()
    assert (v.normal.depth, v.reduce.depth, v.depth) == (2, 1, 3)
    assert CellSpec(nodes=[[("sep_conv_3x3", 0), ("skip_connect", 1)]], concat=[2]).depth == 0


def test_metadata_is_read_only_all_the_way_down(tmp_path):
    """A genotype is a frozen value: the lists and objects inside space/cost/choices cannot be changed
    (changing space.macro.C changed the network it builds under the same hash)."""
    g = variable_genotype().replace(space={"name": "tiny", "macro": {"C": 8, "widths": [1, 2]}},
                                    cost={"input": [1, 6, 64, 64], "macs": 1})
    with pytest.raises(TypeError):
        g.space["macro"]["C"] = 16
    with pytest.raises(AttributeError):
        g.cost["input"].append(7)
    assert g.space["macro"] == {"C": 8, "widths": [1, 2]} and g.cost["input"] == [1, 6, 64, 64]
    data = g.to_json()  # a mutable copy, plain JSON types
    data["space"]["macro"]["C"] = 16
    assert type(data["cost"]["input"]) is list and g.space["macro"]["C"] == 8
    assert Genotype.load(g.save(tmp_path / "g.json")).space == g.space


@pytest.mark.parametrize("nodes", [5, True, "abc"])
def test_cell_nodes_that_are_not_a_list_are_one_line(nodes):
    data = variable_genotype().to_json()
    data["cells"]["normal"]["nodes"] = nodes
    with pytest.raises(ConfigError, match="normal cell: nodes must be a list"):
        Genotype.from_json(data)


def test_the_darts_parser_runs_no_code(tmp_path, monkeypatch):
    """A parser built on eval would run the payload and then still raise (its result is no Genotype):
    check the side effect, and that eval is never called."""
    import builtins

    def no_eval(*a, **k):
        raise AssertionError("eval called")

    monkeypatch.setattr(builtins, "eval", no_eval)
    flag = tmp_path / "ran"
    with pytest.raises(ConfigError):
        Genotype.from_darts(f"__import__('pathlib').Path({str(flag)!r}).write_text('x')")
    with pytest.raises(ConfigError):
        Genotype.from_darts(f"Genotype(normal=__import__('pathlib').Path({str(flag)!r}).write_text('x'), "
                            "normal_concat=[2], reduce=[], reduce_concat=[2])")
    assert not flag.exists()


def test_positional_darts_fields_read_as_normal_concat_reduce_concat():
    normal = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 2)]
    reduce = [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("avg_pool_3x3", 0), ("skip_connect", 1)]
    keyword = Genotype.from_darts(f"Genotype(normal={normal!r}, normal_concat=[3], reduce={reduce!r}, "
                                  "reduce_concat=[2, 3])")
    positional = Genotype.from_darts(f"Genotype({normal!r}, [3], {reduce!r}, [2, 3])")
    assert positional == keyword
    assert (positional.normal.concat, positional.reduce.concat) == ((3,), (2, 3))
    assert positional.reduce.nodes[0] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))


def test_choices_are_part_of_identity_and_survive_json(tmp_path):
    """The decoder and head blocks of a matting genotype are part of its architecture."""
    g = Genotype.from_darts(ATLDAS_DARTS).replace(choices={"head": "conv", "decoder0": "sep"})
    assert g != g.replace(choices={"head": "x", "decoder0": "sep"}) and g.hash() != g.replace(choices={}).hash()
    back = Genotype.load(g.save(tmp_path / "g.json"))
    assert back == g and dict(back.choices) == {"head": "conv", "decoder0": "sep"}


def test_the_hash_is_stable_across_versions():
    """A deliberate regression value: checkpoints and run logs store a genotype's hash, and the model zoo
    compares a checkpoint's stored hash with a fresh one; a changed canonical form would orphan them."""
    g = Genotype.from_darts(ATLDAS_DARTS)
    assert g.hash() == "2dd70cb4f741"
    assert g.replace(choices={"head": "x"}).hash() == "11b41ea1ddd3"
