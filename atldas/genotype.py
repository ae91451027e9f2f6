"""Genotype: the discrete architecture a search derives, as a small frozen value (its metadata too, all
the way down: objects are read-only mappings and lists :class:`FrozenList` tuples; :func:`thaw` and
:meth:`Genotype.to_json` give mutable copies).

A cell has intermediate nodes; node ``j`` (0-based) is state ``j + 2`` of the cell, states 0 and 1
being the outputs of the two previous cells. Each node lists its inputs as ``(op, state_index)``
pairs (any in-degree >= 1) and sums their outputs; ``concat`` lists the states concatenated into
the cell output.

Files (``atldas-genotype/1``: the README's "Commands" and :meth:`Genotype.to_json`) are JSON, written atomically; the DARTS string
``Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])`` is read (without
eval) and written when every node has in-degree 2. A JSON file must have a ``space`` object (``{}``:
no space, the cells alone, as a DARTS string gives them); the cells must agree with what it records
(``nodes``, ``in_degree``, ``ops``, and ``macro.in_channels`` where the macro's input is fixed, see
:data:`MACRO_INPUT_CHANNELS`). Reading a file checks the cells, then the space, then the ``darts``
string, and the messages name the file (the registered ops are checked where a network is built):

    >>> import derived_models
    >>> from atldas.ops import OPS
    >>> path = Path(derived_models.__file__).parent / "darts_v2.json"  # e.g. a run's genotype.json
    >>> g = Genotype.load(path)                # or a text file holding a DARTS Genotype(...) string
    >>> g = g.validate(ops=OPS.names())        # ConfigError naming the cell and node on a fault
    >>> g.hash()                               # 12 hex digits of the cells' canonical JSON
    '160222a34aef'
    >>> g.to_darts()
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5], ...)"
"""

from __future__ import annotations

import ast
import copy
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Sequence

from atldas.config import keyword_only
from atldas.errors import ConfigError, unreadable
from atldas.utils.atomic import write_text_atomic

__all__ = ["FORMAT", "Edge", "Node", "CellSpec", "Genotype", "FrozenList", "thaw"]

#: Value of the ``format`` field of a genotype file.
FORMAT = "atldas-genotype/1"

Edge = tuple[str, int]
"""One input of a node: ``(op_name, state_index)``."""

Node = tuple[Edge, ...]
"""The inputs of one node."""

CELL_TYPES = ("normal", "reduce")
#: Most intermediate nodes a cell may have (DARTS cells have 4; the search spaces allow up to 8).
MAX_NODES = 32
#: Macro name -> the input channels every atldas verb feeds its networks: the CheapMatting macro (the
#: ``matting`` and ``tiny`` spaces, the matting task) takes RGB + the one-hot trimap [bg, unknown, fg].
#: A genotype's ``space.macro.in_channels`` must match (tests/test_genotype_validation.py keeps this
#: in step with the spaces). A macro without a ``name`` is CheapMatting's unless the space is ``darts_cifar``.
MACRO_INPUT_CHANNELS = {"cheapmatting": 6}


def _as_index(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer index, got {value!r}")
    return value


def _as_edge(value: Any, where: str) -> Edge:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not isinstance(value[0], str):
        raise ConfigError(f"{where}: expected an (op, input_index) pair, got {value!r}")
    return (value[0], _as_index(value[1], where))


class FrozenList(tuple):
    """A JSON list inside a genotype field, read-only: a tuple that also equals a list of the same items
    (``g.space["in_degree"] == [1, 3]``), as the file's JSON would."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return tuple.__eq__(self, tuple(other) if isinstance(other, list) else other)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = tuple.__hash__


def _freeze(value: Any) -> Any:
    """A read-only copy all the way down: objects as read-only mappings, lists as :class:`FrozenList`."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return FrozenList(_freeze(v) for v in value)
    return copy.deepcopy(value)


def thaw(value: Any) -> Any:
    """The plain JSON form (dicts and lists) of a genotype field such as ``g.space``: a mutable copy."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return copy.deepcopy(value)


def _frozen_dict(value: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ConfigError(f"genotype {name} must be a JSON object, got {type(value).__name__}")
    return _freeze(value)


@keyword_only
@dataclass(frozen=True)
class CellSpec:
    """One cell type of a genotype.

    Args:
        nodes: per intermediate node, its ``(op, input_index)`` pairs; lists are converted to tuples.
        concat: states concatenated into the cell output (DARTS: ``[2, 3, 4, 5]``).
    """

    nodes: tuple[Node, ...]
    concat: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, (list, tuple)):
            raise ConfigError(f"cell nodes must be a list, got {self.nodes!r}")
        if not isinstance(self.concat, (list, tuple, range)):
            raise ConfigError(f"cell concat must be a list of state indices, got {self.concat!r}")
        nodes = []
        for j, node in enumerate(self.nodes):
            if not isinstance(node, (list, tuple)):
                raise ConfigError(f"node {j}: expected a list of (op, input_index) pairs, got {node!r}")
            nodes.append(tuple(_as_edge(e, f"node {j}") for e in node))
        object.__setattr__(self, "nodes", tuple(nodes))
        object.__setattr__(self, "concat", tuple(_as_index(c, "concat") for c in self.concat))

    @property
    def n_nodes(self) -> int:
        """Number of intermediate nodes."""
        return len(self.nodes)

    @property
    def in_degrees(self) -> tuple[int, ...]:
        """In-degree of every node."""
        return tuple(len(n) for n in self.nodes)

    @property
    def depth(self) -> int:
        """Inputs taken from intermediate nodes (states 2 and up): 0 for a cell whose nodes all read
        the cell inputs, the DARTS-style shallow cell."""
        return sum(1 for node in self.nodes for _, i in node if i >= 2)

    def edges(self) -> Iterator[tuple[int, int, str]]:
        """``(source_state, target_state, op)`` for every input, in genotype order."""
        for j, node in enumerate(self.nodes):
            for op, i in node:
                yield i, j + 2, op

    def ops(self) -> tuple[str, ...]:
        """The op names in genotype order (the order of a standalone cell's ``_ops``)."""
        return tuple(op for node in self.nodes for op, _ in node)

    def validate(self, *, ops: Iterable[str] | None = None, name: str = "the") -> None:
        """Raise ConfigError naming the cell and node on the first fault.

        Faults: no nodes; an empty node; an op not in ``ops`` (when given); an input index that is
        negative, points at the node itself or a later node (a cycle); a bad concat (empty,
        duplicated or out-of-range index).
        """
        allowed = None if ops is None else set(ops)
        if not self.nodes:
            raise ConfigError(f"{name} cell has no nodes")
        if self.n_nodes > MAX_NODES:
            raise ConfigError(f"{name} cell has {self.n_nodes} nodes; at most {MAX_NODES} are supported")
        for j, node in enumerate(self.nodes):
            where = f"{name} cell, node {j} (state {j + 2})"
            if not node:
                raise ConfigError(f"{where} has no inputs; every node needs at least one")
            for op, i in node:
                if allowed is not None and op not in allowed:
                    known = ", ".join(sorted(allowed))
                    raise ConfigError(f"{where}: unknown op {op!r}; known ops: {known} (a custom op: "
                                      "atldas.register_op, before the command runs: README, Python API)")
                if i < 0:
                    raise ConfigError(f"{where}: input index {i} is negative")
                if i == j + 2:
                    raise ConfigError(f"{where}: input index {i} points at the node itself")
                if i > j + 2:
                    raise ConfigError(f"{where}: input index {i} points at a later node (a cycle); "
                                      f"allowed 0..{j + 1}")
            if len(set(node)) != len(node):
                raise ConfigError(f"{where}: the same (op, input) pair is listed twice")
        n_states = self.n_nodes + 2
        if not self.concat:
            raise ConfigError(f"{name} cell: concat is empty")
        if len(set(self.concat)) != len(self.concat):
            raise ConfigError(f"{name} cell: concat {list(self.concat)} repeats an index")
        bad = [c for c in self.concat if not 0 <= c < n_states]
        if bad:
            raise ConfigError(f"{name} cell: concat index {bad[0]} out of range 0..{n_states - 1}")

    def to_dict(self) -> dict[str, Any]:
        """The ``cells.<type>`` object of the JSON file."""
        return {"nodes": [{"inputs": [[op, i] for op, i in node]} for node in self.nodes],
                "concat": list(self.concat)}

    @classmethod
    def from_dict(cls, data: Any, *, name: str = "the") -> "CellSpec":
        """Inverse of :meth:`to_dict`; accepts ``{"inputs": [...]}`` objects or bare pair lists as nodes."""
        if not isinstance(data, Mapping) or "nodes" not in data or "concat" not in data:
            raise ConfigError(f"{name} cell must be an object with 'nodes' and 'concat'")
        if not isinstance(data["nodes"] or [], (list, tuple)):
            raise ConfigError(f"{name} cell: nodes must be a list of nodes, got {data['nodes']!r}")
        nodes = []
        for j, node in enumerate(data["nodes"] or []):
            if isinstance(node, Mapping):
                if "inputs" not in node:
                    raise ConfigError(f"{name} cell, node {j}: missing 'inputs'")
                node = node["inputs"]
            nodes.append(node)
        try:
            return cls(nodes=tuple(nodes), concat=tuple(data["concat"]))
        except ConfigError as e:
            raise ConfigError(f"{name} cell, {e}") from None
        except TypeError:
            raise ConfigError(f"{name} cell: concat must be a list of state indices") from None

    @classmethod
    def from_pairs(cls, pairs: Sequence[Sequence[Any]], concat: Iterable[int], *,
                   name: str = "the") -> "CellSpec":
        """From the flat DARTS list (two pairs per node)."""
        pairs = list(pairs)
        if len(pairs) % 2:
            raise ConfigError(f"{name} cell: a DARTS genotype lists two inputs per node, "
                              f"got {len(pairs)} pairs")
        try:
            return cls(nodes=tuple((pairs[k], pairs[k + 1]) for k in range(0, len(pairs), 2)),
                       concat=tuple(concat))
        except ConfigError as e:
            raise ConfigError(f"{name} cell, {e}") from None

    def to_pairs(self) -> list[Edge]:
        """The flat DARTS list; only meaningful when every node has in-degree 2."""
        return [edge for node in self.nodes for edge in node]


@keyword_only
@dataclass(frozen=True)
class Genotype:
    """A discrete architecture: a normal and a reduction cell, with optional metadata.

    Two genotypes are equal when their cells (and macro ``choices``) are; ``space``, ``cost`` and
    ``provenance`` are metadata, ignored by ``==`` and :meth:`hash`.

    Args:
        normal: the normal cell.
        reduce: the reduction cell.
        space: search-space metadata (``name``, ``ops``, ``nodes``, ``in_degree``, ``macro``).
        cost: ``{"input": [1, 6, H, W], "macs": .., "params": .., "latency_ms": .., "target": ..}``.
        provenance: where it comes from (``atldas`` version, seed, strategy, run, epochs, source...).
        choices: macro-level choices outside the cells (e.g. decoder/head block names), name -> value.
    """

    normal: CellSpec
    reduce: CellSpec
    space: Mapping[str, Any] = field(default_factory=dict, compare=False)
    cost: Mapping[str, Any] = field(default_factory=dict, compare=False)
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False)
    choices: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in CELL_TYPES:
            if not isinstance(getattr(self, name), CellSpec):
                raise ConfigError(f"genotype {name} cell must be a CellSpec")
        for name in ("space", "cost", "provenance", "choices"):
            object.__setattr__(self, name, _frozen_dict(getattr(self, name), name))

    def __hash__(self) -> int:
        return hash(self.hash())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Genotype):
            return NotImplemented
        return (self.normal, self.reduce, dict(self.choices)) == (other.normal, other.reduce,
                                                                  dict(other.choices))

    def __copy__(self) -> "Genotype":
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> "Genotype":
        return self  # immutable; lets copy.deepcopy(model) work for models that hold a genotype

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # in-memory pickling (multiprocessing, DDP spawn) goes through the JSON form; files never do
        return (_from_json_unvalidated, (self.to_json(),))

    # ---------------------------------------------------------------- queries

    def cells(self) -> dict[str, CellSpec]:
        """``{"normal": ..., "reduce": ...}``."""
        return {"normal": self.normal, "reduce": self.reduce}

    @property
    def depth(self) -> int:
        """Inputs taken from intermediate nodes, summed over the cells (:attr:`CellSpec.depth`)."""
        return sum(c.depth for c in self.cells().values())

    def cell(self, reduction: bool) -> CellSpec:
        """The reduction cell if ``reduction`` else the normal cell."""
        return self.reduce if reduction else self.normal

    @property
    def is_darts(self) -> bool:
        """Whether every node has in-degree 2 (expressible as a DARTS ``Genotype``)."""
        return all(d == 2 for c in (self.normal, self.reduce) for d in c.in_degrees)

    @property
    def source(self) -> str:
        """The file :meth:`load` read this genotype from ("" otherwise); :meth:`validate` names it."""
        return self.__dict__.get("_source", "")

    def validate(self, *, ops: Iterable[str] | None = None) -> "Genotype":
        """Check both cells (no ``none`` op: a derived genotype leaves an absent edge out), then their
        agreement with ``space``; raise ConfigError naming the cell and node (and the file, for a
        genotype :meth:`load` read) on a fault.

        Args:
            ops: the allowed op names (e.g. ``atldas.ops.OPS.names()``, or a space's ops); None checks
                the structure only (the networks that build a genotype check its ops).

        Returns:
            self, so that ``Genotype.load(p).validate()`` chains.
        """
        try:
            for name, cell in self.cells().items():
                cell.validate(ops=ops, name=name)
                for j, node in enumerate(cell.nodes):
                    if any(op == "none" for op, _ in node):
                        raise ConfigError(f"{name} cell, node {j} (state {j + 2}): op 'none' is not an op of a "
                                          "derived genotype (an absent edge is left out); remove this input")
            self._check_space()
        except ConfigError as e:
            if self.source:
                raise ConfigError(f"{self.source}: {e}") from None
            raise
        return self

    def _check_space(self) -> None:
        """The cells against ``space.nodes``, ``space.in_degree``, ``space.ops`` (each when present) and
        ``space.macro.in_channels`` against :data:`MACRO_INPUT_CHANNELS`."""
        space = self.space
        nodes, degree, ops = space.get("nodes"), space.get("in_degree"), space.get("ops")
        if nodes is not None and (isinstance(nodes, bool) or not isinstance(nodes, int)):
            raise ConfigError(f"genotype space.nodes must be an integer, got {nodes!r}")
        if degree is not None and not (isinstance(degree, (list, tuple)) and len(degree) == 2
                                       and all(isinstance(k, int) and not isinstance(k, bool) for k in degree)
                                       and 1 <= degree[0] <= degree[1]):
            raise ConfigError(f"genotype space.in_degree must be [k_min, k_max] with 1 <= k_min <= k_max, "
                              f"got {degree!r}")
        if ops is not None and not (isinstance(ops, (list, tuple)) and all(isinstance(o, str) for o in ops)):
            raise ConfigError(f"genotype space.ops must be a list of op names, got {ops!r}")
        for name, cell in self.cells().items():
            if nodes is not None and cell.n_nodes > nodes:
                raise ConfigError(f"{name} cell, node {nodes} (state {nodes + 2}): beyond space.nodes = {nodes} "
                                  f"(the cell has {cell.n_nodes}); remove it or set space.nodes to {cell.n_nodes}")
            if nodes is not None and cell.n_nodes < nodes:
                raise ConfigError(f"{name} cell has {cell.n_nodes} nodes (0..{cell.n_nodes - 1}), space.nodes "
                                  f"says {nodes}; add nodes or set space.nodes to {cell.n_nodes}")
            for j, node in enumerate(cell.nodes):
                where = f"{name} cell, node {j} (state {j + 2})"
                if degree is not None and not degree[0] <= len(node) <= degree[1]:
                    raise ConfigError(f"{where} has {len(node)} inputs, outside space.in_degree "
                                      f"{list(degree)}; give it {degree[0]}..{degree[1]} inputs or widen "
                                      "space.in_degree")
                bad = next((op for op, _ in node if ops is not None and op not in ops), None)
                if bad is not None:
                    raise ConfigError(f"{where}: unknown op {bad!r} for this space (space.ops: {', '.join(ops)}); "
                                      "use one of them or add it to space.ops")
        macro = space.get("macro")
        if isinstance(macro, Mapping) and "in_channels" in macro:
            macro_name = macro.get("name") or ("darts_cifar" if space.get("name") == "darts_cifar"
                                               else "cheapmatting")
            fixed = MACRO_INPUT_CHANNELS.get(macro_name)
            if fixed is not None and macro["in_channels"] != fixed:
                raise ConfigError(f"genotype space.macro.in_channels is {macro['in_channels']!r}, but the "
                                  f"{macro_name} network takes {fixed} input channels (RGB + one-hot trimap); "
                                  f"set it to {fixed}")

    def hash(self, length: int = 12) -> str:
        """Stable content hash: sha256 of the canonical JSON of the cells (and choices), hex prefix of
        ``length`` (1..64) characters."""
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 64:
            raise ValueError(f"hash length must be an integer in 1..64, got {length!r}")
        content: dict[str, Any] = {name: cell.to_dict() for name, cell in self.cells().items()}
        if self.choices:
            content["choices"] = thaw(self.choices)
        canon = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:length]

    def replace(self, **changes: Any) -> "Genotype":
        """A copy with some fields replaced (e.g. ``cost=`` or ``provenance=``)."""
        fields = {"normal": self.normal, "reduce": self.reduce, "space": self.space,
                  "cost": self.cost, "provenance": self.provenance, "choices": self.choices}
        unknown = set(changes) - set(fields)
        if unknown:
            raise ConfigError(f"unknown genotype field(s) {sorted(unknown)}; fields: {sorted(fields)}")
        fields.update(changes)
        return Genotype(**fields)

    # ---------------------------------------------------------------- DARTS interop

    def to_darts(self) -> str:
        """The DARTS string ``Genotype(normal=[..], normal_concat=[..], reduce=[..], reduce_concat=[..])``.

        Raises:
            ConfigError: a node does not have in-degree 2 (the DARTS namedtuple cannot express it).
        """
        for name, cell in self.cells().items():
            for j, d in enumerate(cell.in_degrees):
                if d != 2:
                    raise ConfigError(f"cannot write a DARTS genotype: {name} cell node {j} has "
                                      f"in-degree {d}, DARTS needs exactly 2 inputs per node")
        return (f"Genotype(normal={self.normal.to_pairs()!r}, normal_concat={list(self.normal.concat)!r}, "
                f"reduce={self.reduce.to_pairs()!r}, reduce_concat={list(self.reduce.concat)!r})")

    @classmethod
    def from_darts_dict(cls, data: Mapping[str, Any], **metadata: Any) -> "Genotype":
        """From a mapping with DARTS keys ``normal``, ``normal_concat``, ``reduce``, ``reduce_concat``."""
        missing = [k for k in ("normal", "normal_concat", "reduce", "reduce_concat") if k not in data]
        if missing:
            raise ConfigError(f"DARTS genotype is missing {', '.join(missing)}")
        for key in ("normal", "reduce"):
            if not isinstance(data[key], (list, tuple)):
                raise ConfigError(f"DARTS genotype {key} must be a list of (op, index) pairs")
        return cls(normal=CellSpec.from_pairs(data["normal"], data["normal_concat"], name="normal"),
                   reduce=CellSpec.from_pairs(data["reduce"], data["reduce_concat"], name="reduce"),
                   **metadata)

    @classmethod
    def from_darts(cls, text: str, **metadata: Any) -> "Genotype":
        """Parse a DARTS ``Genotype(...)`` string without eval.

        Accepts keyword or positional arguments, lists or tuples, and ``range(a, b)`` concats (as the
        DARTS ``genotypes.py`` writes them).
        """
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as e:
            raise ConfigError(f"not a DARTS Genotype(...) string: {e.msg}") from None
        call = tree.body
        func = getattr(call, "func", None)
        fname = getattr(func, "id", None) or getattr(func, "attr", None)
        if not isinstance(call, ast.Call) or fname != "Genotype":
            raise ConfigError("not a DARTS genotype: expected Genotype(normal=..., normal_concat=..., "
                              "reduce=..., reduce_concat=...)")
        keys = ("normal", "normal_concat", "reduce", "reduce_concat")
        if len(call.args) > 4:
            raise ConfigError("DARTS Genotype(...) takes 4 fields")
        values: dict[str, Any] = {}
        for key, node in zip(keys, call.args):
            values[key] = _literal(node, key)
        for kw in call.keywords:
            if kw.arg not in keys or kw.arg in values:
                raise ConfigError(f"DARTS Genotype(...): unexpected or repeated field {kw.arg!r}")
            values[kw.arg] = _literal(kw.value, kw.arg)
        return cls.from_darts_dict(values, **metadata)

    @classmethod
    def from_reference(cls, name: str, path: str | os.PathLike[str]) -> "Genotype":
        """One genotype of a reference file like ``genotypes.json`` (name -> DARTS-style dict).

        The name matches exactly or ignoring case; a miss raises ConfigError listing the names.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"genotype reference file not found: {path}") from None
        except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8 or JSON, an integer too long
            raise ConfigError(f"cannot read genotype reference file {path}: {unreadable(e)}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a JSON object of named genotypes")
        names = [k for k, v in data.items() if isinstance(v, Mapping) and "normal" in v]
        match = name if name in names else next((k for k in names if k.lower() == name.lower()), None)
        if match is None:
            raise ConfigError(f"no genotype {name!r} in {path}; known: {', '.join(names) or '(none)'}")
        entry = data[match]
        provenance = {"reference": match}
        if "source" in entry:
            provenance["source"] = entry["source"]
        return cls.from_darts_dict(entry, provenance=provenance)

    # ---------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        """The ``atldas-genotype/1`` object (``darts`` only when every node has in-degree 2)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "space": thaw(self.space),
            "cells": {name: cell.to_dict() for name, cell in self.cells().items()},
        }
        if self.choices:
            out["choices"] = thaw(self.choices)
        if self.is_darts:
            out["darts"] = self.to_darts()
        out["cost"] = thaw(self.cost)
        out["provenance"] = thaw(self.provenance)
        return out

    def dumps(self) -> str:
        """:meth:`to_json` as indented text (short lists and nodes on one line) with a final newline."""
        return _dumps(self.to_json(), 0) + "\n"

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, validate: bool = True) -> "Genotype":
        """Inverse of :meth:`to_json`; validates the cells and their agreement with ``space`` (:meth:`validate`)
        unless ``validate=False``, then checks the ``darts`` string (on a disagreement, a fault in the
        cells is reported instead, whatever ``validate``). ``space`` is required (``{}``: none).

        An object with DARTS keys (``normal``, ``normal_concat``...) is accepted too (no space).
        """
        if not isinstance(data, Mapping):
            raise ConfigError("a genotype must be a JSON object")
        if "cells" not in data and "normal" in data:
            g = cls.from_darts_dict(data)
            return g.validate() if validate else g
        fmt = data.get("format")
        if fmt != FORMAT:
            raise ConfigError(f"unsupported genotype format {fmt!r}; expected {FORMAT!r}")
        cells = data.get("cells")
        if not isinstance(cells, Mapping) or any(k not in cells for k in CELL_TYPES):
            raise ConfigError("genotype 'cells' must hold a 'normal' and a 'reduce' cell")
        if data.get("space") is None:  # no default: the network of the cells depends on it
            raise ConfigError("genotype has no 'space' (the space and macro the cells were derived for, which "
                              "`atldas derive` writes); add it, or \"space\": {} for the cells alone (the "
                              "released CheapMatting macro)")
        g = cls(normal=CellSpec.from_dict(cells["normal"], name="normal"),
                reduce=CellSpec.from_dict(cells["reduce"], name="reduce"),
                space=data["space"], cost=data.get("cost") or {},
                provenance=data.get("provenance") or {}, choices=data.get("choices") or {})
        if validate:
            g.validate()
        darts = data.get("darts")
        if darts is not None and g.is_darts:
            if not isinstance(darts, str):
                raise ConfigError(f"genotype 'darts' must be a Genotype(...) string, got {darts!r}")
            d = Genotype.from_darts(darts)  # the DARTS string carries the cells only, not the choices
            if (d.normal, d.reduce) != (g.normal, g.reduce):
                g.validate()  # a fault in the cells is the one to report
                name = next(n for n in CELL_TYPES if getattr(d, n) != getattr(g, n))
                pairs = itertools.zip_longest(getattr(d, name).nodes, getattr(g, name).nodes)
                j = next((j for j, (a, b) in enumerate(pairs) if a != b), None)
                raise ConfigError(f"genotype 'darts' string disagrees with 'cells' (first at {name} cell, "
                                  f"{'concat' if j is None else f'node {j}'}); delete one of them")
        return g

    @classmethod
    def loads(cls, text: str, *, validate: bool = True, source: str = "genotype") -> "Genotype":
        """Parse genotype JSON text or a DARTS ``Genotype(...)`` string."""
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{source}: invalid JSON at line {e.lineno}: {e.msg}") from None
            except (RecursionError, ValueError) as e:
                raise ConfigError(f"{source}: not a genotype atldas can read ({unreadable(e)})") from None
            try:
                return cls.from_json(data, validate=validate)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
        if "Genotype(" in stripped:
            try:
                g = cls.from_darts(stripped)
                return g.validate() if validate else g
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
        raise ConfigError(f"{source}: neither genotype JSON ({FORMAT}) nor a DARTS Genotype(...) string")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON file atomically (temp file in the same folder, then ``os.replace``)."""
        return write_text_atomic(path, self.dumps())

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, validate: bool = True) -> "Genotype":
        """Read a genotype JSON file or a text file holding a DARTS ``Genotype(...)`` string.

        Raises:
            ConfigError: one line naming the file: missing, unreadable, malformed or invalid.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"genotype file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"genotype path is a folder, expected a file: {path}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is a binary file (a checkpoint, an image or an ONNX file?), not a genotype; "
                              "pass a genotype.json or a search run's folder") from None
        except OSError as e:
            raise ConfigError(f"cannot read genotype file {path}: {e}") from None
        g = cls.loads(text, validate=validate, source=str(path))
        object.__setattr__(g, "_source", str(path))  # validate() names the file from now on
        return g


def _from_json_unvalidated(data: Mapping[str, Any]) -> Genotype:
    return Genotype.from_json(data, validate=False)


def _literal(node: ast.AST, key: str) -> Any:
    """A literal (list/tuple of pairs, ints), or ``range(a[, b[, c]])`` of int literals."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords and 1 <= len(node.args) <= 3):
        try:
            args = [ast.literal_eval(a) for a in node.args]
        except ValueError:
            args = None
        if args and all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            if len(args) == 3 and args[2] == 0:
                raise ConfigError(f"DARTS Genotype(...): field {key!r}: range() with step 0")
            if len(range(*args)) > MAX_NODES + 2:  # a concat of cell outputs: range(2, 3000000000) filled memory
                raise ConfigError(f"DARTS Genotype(...): field {key!r} spans {len(range(*args))} nodes; a cell has "
                                  f"at most {MAX_NODES}")
            return list(range(*args))
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        raise ConfigError(f"DARTS Genotype(...): field {key!r} is not a literal list") from None


def _dumps(value: Any, level: int, width: int = 96) -> str:
    """Indented JSON that keeps any value whose one-line form fits ``width`` on one line."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or len(flat) + 2 * level <= width or not value:
        return flat
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dumps(v, level + 1, width)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    items = [inner + _dumps(v, level + 1, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"
