"""The one model registry: every matting MODEL by name, and networks built from genotype files.

A MODEL (architecture.md) is

- a registered name: ``cheapmatting`` (the released network: ATLDAS_cifar100 cells, C = 48, 14
  cells), ``cheapmatting_darts_v2``, ``cheapmatting_pc_darts`` (the same macro with other published
  cells), the hand-designed baselines ``aematter``, ``aematter_small``, ``aematter_tiny``,
  ``cnn_baseline``, ``cnn_baseline_small``, ``cnn_baseline_tiny``, and the non-learned
  ``closed_form`` (pymatting's closed-form matting);
- a genotype name of ``derived_models`` (``atldas_cifar100``, ``darts_v2``, ``pc_darts_cifar``): its cells
  in the released CheapMatting macro, the same network as the ``cheapmatting*`` model built from it;
- a genotype file (JSON or a DARTS ``Genotype(...)`` string): built in the macro its ``space.macro``
  records (:class:`~atldas.models.cheapmatting.CheapMattingCfg`; the released CheapMatting macro when
  the file records none), with its decoder and head ``choices``; a file of cells searched in
  ``darts_cifar`` without a macro (``derived_models/*.json``) is the CIFAR classifier's, refused
  with the registered name to use instead;
- a run directory (search or retrain): its ``genotype.json``;
- an ``.onnx`` file written by ``atldas export``: the network with its weights inside, run by
  onnxruntime (:class:`~atldas.models.onnx_net.OnnxNet`; no ``--checkpoint``).

    >>> import atldas
    >>> atldas.list_models()
    ['aematter', 'aematter_small', ..., 'cheapmatting', ...]
    >>> net = atldas.create_model("cheapmatting", checkpoint_path="cheapmatting.pth")  # doctest: +SKIP
    >>> net = atldas.create_model("darts_v2", C=16, layers=5)  # or a run folder; knobs replace the macro's
    >>> sum(p.numel() for p in net.parameters())
    896577
    >>> @atldas.register_model("my_net", description="one 3x3 convolution")
    ... def my_net(**knobs):                                        # (B, 6, H, W) -> (B, 1, H, W)
    ...     return nn.Sequential(nn.Conv2d(6, 1, 3, padding=1), nn.Sigmoid())
    >>> "my_net" in atldas.list_models()
    True

:func:`resolve_model` gives the :class:`~atldas.models.base.MattingModel` record the commands use
(``build()`` a fresh network, ``forward(net, x)`` on the 6-channel input); :func:`create_model` builds
the network and loads weights.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from torch import nn

import derived_models
from atldas.config import read_yaml
from atldas.errors import AtldasError, ConfigError, DataError
from atldas.genotype import Genotype
from atldas.models.aematter import build_aematter
from atldas.models.base import MattingModel
from atldas.models.cheapmatting import DECODER_BLOCKS, HEAD_BLOCKS, LEVELS, MACRO_NAME, CheapMatting, CheapMattingCfg
from atldas.models.classical import ClosedFormMatting
from atldas.models.cnn_baseline import build_cnn_baseline
from atldas.models.onnx_net import OnnxNet
from atldas.ops import OPS
from atldas.registry import Registry
from atldas.utils.weights import load_weights

log = logging.getLogger("atldas")

__all__ = ["MODELS", "no_genotype", "is_registered_name", "ModelEntry", "register_model", "list_models",
           "resolve_model", "create_model", "genotype_macro", "genotype_cell_types", "check_genotype", "warn_interim",
           "KNOWN_SPACES", "load_model_weights"]

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class ModelEntry:
    """A registered MODEL: ``build(**knobs) -> nn.Module`` and how to run it.

    Attributes:
        name: registry name.
        build: the builder; keyword knobs change the network (e.g. ``C=``, ``head_block=``).
        two_inputs: the network takes ``(image, trimap_onehot)``.
        learned: False for classical methods (no weights to load).
        genotype: name of the genotype (in ``derived_models``) the network is built from, if any.
        description: one line for listings.
    """

    name: str
    build: Callable[..., nn.Module]
    two_inputs: bool = False
    learned: bool = True
    genotype: Optional[str] = None
    description: str = ""


#: Model name -> :class:`ModelEntry`.
MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, *, two_inputs: bool = False, learned: bool = True, genotype: Optional[str] = None,
                   description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``build(**knobs) -> nn.Module`` as MODEL ``name`` (a duplicate raises
    ValueError). The network maps ``(B, 6, H, W)`` RGB + one-hot trimap to ``(B, 1, H, W)`` alpha, or
    ``(image, trimap_onehot)`` with ``two_inputs=True``. ``learned=False`` marks a method without
    weights (a classical solver: no checkpoint to load, nothing to retrain); ``genotype`` names the
    ``derived_models`` genotype the network is built from, if any; ``description`` is its line in
    ``atldas.list_models()`` listings."""

    if not isinstance(name, str):  # @register_model without a name: it would decorate nothing
        raise TypeError("register_model takes the model's name: @atldas.register_model(\"my_net\"), "
                        f"got {getattr(name, '__name__', type(name).__name__)!r}")

    def deco(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(build):
            raise TypeError(f"register_model({name!r}) decorates a function building the network, got "
                            f"{type(build).__name__}")
        MODELS.add(name, ModelEntry(name=name, build=build, two_inputs=two_inputs, learned=learned,
                                    genotype=genotype, description=description))
        return build

    return deco


def list_models() -> list[str]:
    """Every registered MODEL name, sorted."""
    return MODELS.names()


# --------------------------------------------------------------------------- built-in models

def _cheapmatting_with(genotype_name: str, **fixed: Any) -> Callable[..., nn.Module]:
    def build(**knobs: Any) -> nn.Module:
        return CheapMatting(genotype=derived_models.get_genotype(genotype_name), **fixed, **knobs)

    return build


for _name, _geno, _what in (
        ("cheapmatting", "atldas_cifar100", "released CheapMatting: ATLDAS_cifar100 cells, C=48, 14 cells, 6.02 M params"),
        ("cheapmatting_darts_v2", "darts_v2", "CheapMatting macro with the DARTS (second order) cells"),
        ("cheapmatting_pc_darts", "pc_darts_cifar", "CheapMatting macro with the PC-DARTS cells")):
    register_model(_name, genotype=_geno, description=_what)(_cheapmatting_with(_geno))
for _variant, _suffix in (("full", ""), ("small", "_small"), ("tiny", "_tiny")):
    register_model(f"aematter{_suffix}", two_inputs=True, description=f"AEMatter-class baseline ({_variant})")(
        (lambda v: lambda **knobs: build_aematter(variant=v, **knobs))(_variant))
    register_model(f"cnn_baseline{_suffix}", description=f"plain CNN U-Net baseline ({_variant})")(
        (lambda v: lambda **knobs: build_cnn_baseline(variant=v, **knobs))(_variant))
register_model("closed_form", learned=False,
               description="closed-form matting (Levin et al. 2008, pymatting); not learned")(ClosedFormMatting)
del _name, _geno, _what, _variant, _suffix


# --------------------------------------------------------------------------- genotype files

def genotype_macro(genotype: Genotype) -> Tuple[str, Dict[str, Any]]:
    """(macro name, macro knobs) a genotype file records in ``space.macro``.

    Files written before macros had names: the ``darts_cifar`` space's are the DARTS CIFAR classifier,
    every other file the CheapMatting macro (searched ``matting``/``tiny`` networks without the
    released network's unused extra PPM conv).
    """
    space = dict(genotype.space or {})
    macro = space.get("macro") or {}
    if not isinstance(macro, Mapping):
        raise ConfigError(f"genotype space.macro must be an object, got {type(macro).__name__}")
    macro = dict(macro)
    name = macro.pop("name", None)
    if name is None:
        if space.get("name") == "darts_cifar":
            return "darts_cifar", macro
        name = MACRO_NAME
        if space.get("name") in ("matting", "tiny"):
            macro.setdefault("ppm_extra_convs", 0)
    return str(name), macro


def genotype_cell_types(genotype: Genotype) -> Tuple[str, ...]:
    """The cells the genotype's network has: ``("normal", "reduce")``, or ``("normal",)`` for the planted
    task's network (one normal cell; the genotype's reduce cell is there but builds nothing)."""
    return ("normal",) if genotype_macro(genotype)[0] == "planted" else ("normal", "reduce")


#: Names of the search spaces a genotype file may name: the built-in ones here (a test keeps them in
#: step with ``search_spaces``), custom ones added by ``search_spaces.register_space``.
KNOWN_SPACES = {"matting", "tiny", "darts_cifar", "planted"}
#: Macro knobs of the networks other than CheapMatting (whose :class:`CheapMattingCfg` checks its own).
_OTHER_MACROS = {"darts_cifar": {"C": (1, 1024), "layers": (2, 200), "num_classes": (1, 100_000),
                                 "stem_multiplier": (1, 16)},
                 "planted": {"C": (1, 1024), "cells": (1, 64), "in_channels": (1, 64), "out_channels": (1, 64)}}


def warn_interim(path: Path, genotype: Genotype) -> None:
    """A warning when ``genotype`` (``path/genotype.json``) is a search's interim genotype: the policy's
    argmax after an epoch, not the final one derive writes (the select stage, the repair onto the budget)."""
    g = path / "genotype.json"
    done, planned = genotype.provenance.get("epochs"), _planned_epochs(path)
    if not genotype.provenance.get("interim") or not (path / "checkpoint.pt").is_file():
        return
    if done is not None and planned is not None and done >= planned:  # e.g. a Python Run(cfg, out=DIR).fit()
        log.warning("%s is the policy's argmax of a search that ran its %d epochs but whose final genotype was "
                    "never derived (the select stage, the repair onto the budget): `atldas derive %s` (in "
                    "Python, atldas.derive_run) writes it", g, planned, path)
    else:  # a search's, unfinished
        log.warning("%s is the genotype of a search that has not finished (epoch %s): the policy's argmax so "
                    "far, not repaired onto the budget; `atldas search --out %s --resume` finishes it, "
                    "`atldas derive %s` derives it now", g, genotype.provenance.get("epochs"), path, path)


def check_genotype(genotype: Genotype) -> Genotype:
    """Validate a genotype read from a file against what atldas can build from it; returns it.

    Checked: the cells' structure and ops (the registered ops, custom ones included; ``none`` is not
    an op of a derived genotype, an absent edge is), the space name, the macro (its name, knobs, their types and
    ranges) and the macro choices (decoder and head blocks of CheapMatting; none elsewhere).

    Raises:
        ConfigError: one line naming the first fault and what is allowed (and the file, for a genotype
            :meth:`~atldas.genotype.Genotype.load` read).
    """
    try:
        return _check_genotype(genotype)
    except ConfigError as e:
        if genotype.source and genotype.source not in str(e):
            raise ConfigError(f"{genotype.source}: {e}") from None
        raise


def _check_genotype(genotype: Genotype) -> Genotype:
    for cell_name, cell in genotype.cells().items():
        if any(op == "none" for op in cell.ops()):
            raise ConfigError(f"{cell_name} cell uses the op 'none': a derived genotype leaves an edge out "
                              "instead; remove those inputs")
    genotype.validate(ops=[op for op in OPS.names() if op != "none"])
    space = dict(genotype.space or {})
    space_name = space.get("name")
    if space_name is not None and space_name not in KNOWN_SPACES:
        raise ConfigError(f"genotype space {space_name!r} is unknown; known spaces: {', '.join(sorted(KNOWN_SPACES))}")
    macro_name, macro = genotype_macro(genotype)
    choices = genotype.choices
    if not isinstance(choices, Mapping):
        raise ConfigError(f"genotype 'choices' must be an object, got {type(choices).__name__}")
    if macro_name == MACRO_NAME:
        CheapMattingCfg.from_meta(macro)
        allowed = {f"decoder{lv}": DECODER_BLOCKS for lv in LEVELS}
        allowed["head"] = HEAD_BLOCKS
        for key, value in choices.items():
            if key not in allowed:
                raise ConfigError(f"genotype choice {key!r} is unknown; known choices: {', '.join(sorted(allowed))}")
            if value not in allowed[key].names():
                raise ConfigError(f"genotype choice {key}={value!r} is unknown; known: {', '.join(allowed[key].names())}")
        return genotype
    if macro_name not in _OTHER_MACROS:
        raise ConfigError(f"genotype macro {macro_name!r} is unknown; known networks: "
                          f"{', '.join(sorted({MACRO_NAME, *_OTHER_MACROS}))}")
    if choices:
        raise ConfigError(f"genotype choices {sorted(choices)} mean nothing to the {macro_name!r} network; remove them")
    limits = _OTHER_MACROS[macro_name]
    for key, value in macro.items():
        if key not in limits:
            raise ConfigError(f"{macro_name} macro: unknown key {key!r}; known: {', '.join(sorted(limits))}")
        low, high = limits[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{macro_name} macro: {key} must be an integer in {low}..{high}, got {value!r}")
    return genotype


def _from_genotype(genotype: Genotype, *, name: str, kind: str, knobs: Mapping[str, Any]) -> MattingModel:
    check_genotype(genotype)
    macro_name, macro = genotype_macro(genotype)
    if macro_name != MACRO_NAME:
        same = [n for n in derived_models.GENOTYPES.names() if derived_models.get_genotype(n).hash() == genotype.hash()]
        hint = (f"; its cells in the CheapMatting macro are the registered MODEL {same[0]!r}" if same else
                "; to build its cells in the CheapMatting macro, set \"macro\": {\"name\": \"cheapmatting\"} in the "
                "file's space")
        raise ConfigError(f"{name}: its genotype is for the {macro_name!r} network (space "
                          f"{dict(genotype.space).get('name')!r}), not a matting network{hint}")
    knobs = dict(knobs)
    cfg_keys = {k for k in knobs if k not in ("decoder_blocks", "head_block", "clamp", "affine", "drop_path_prob")}
    cfg = CheapMattingCfg.from_meta({**macro, **{k: knobs.pop(k) for k in cfg_keys}})
    choices = dict(genotype.choices)
    knobs.setdefault("decoder_blocks", tuple(choices.get(f"decoder{lv}", "bottleneck") for lv in range(4)))
    knobs.setdefault("head_block", choices.get("head", "conv3x3"))
    return MattingModel(name=name, build=lambda: CheapMatting(genotype=genotype, cfg=cfg, **knobs),
                        genotype=genotype, kind=kind, meta={"macro": cfg.to_meta()})


def resolve_model(spec: Union[PathLike, Genotype], **knobs: Any) -> MattingModel:
    """The :class:`MattingModel` of a MODEL (see the module docstring); unknown names list what exists.

    Args:
        spec: a registered name, a genotype file, a run directory, or a :class:`Genotype`.
        **knobs: keyword arguments of the builder (e.g. ``C=16`` for a CheapMatting-macro network).
    """
    if isinstance(spec, Genotype):
        return _from_genotype(spec, name=f"genotype {spec.hash()}", kind="genotype", knobs=knobs)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"a MODEL is a registered name, a genotype file, a run directory or a Genotype, got "
                        f"{type(spec).__name__}")
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir() and not (is_registered_name(text) and not (path / "genotype.json").is_file()):
        g = path / "genotype.json"
        if not g.is_file():
            trained = _retrained_model(path)
            if trained is None:
                raise ConfigError(no_genotype(path))
            model = resolve_model(trained, **knobs)  # a retrain run of a registered hand-designed model
            return dataclasses.replace(model, name=f"{text} ({trained})")
        genotype = Genotype.load(g)
        warn_interim(path, genotype)
        return _from_genotype(genotype, name=text, kind="run", knobs=knobs)
    if path.is_file() and path.suffix.lower() == ".onnx":
        if knobs:
            raise ConfigError(f"{text}: an ONNX file's network is fixed; it takes no settings ({', '.join(knobs)})")
        return MattingModel(name=text, build=lambda: OnnxNet(path=path), kind="onnx",
                            meta={"learned": True, "weights_inside": True,
                                  "description": "an atldas export ONNX file, run by onnxruntime"})
    if path.is_file():
        return _from_genotype(Genotype.load(path), name=text, kind="genotype", knobs=knobs)
    if text in MODELS:
        e = MODELS.get(text)
        genotype = derived_models.get_genotype(e.genotype) if e.genotype else None
        return MattingModel(name=text, build=lambda: _module(e.build(**knobs), text), two_inputs=e.two_inputs,
                            genotype=genotype,
                            kind="registered" if e.learned else "classical",
                            meta={"learned": e.learned, "description": e.description})
    if text in derived_models.GENOTYPES:  # architecture.md: a derived_models name is a MODEL
        return _named_cells(text, knobs)
    if any(sep in text for sep in ("/", "\\")) or text.endswith(".json"):
        raise ConfigError(f"{text}: no such genotype file or run directory")
    raise ConfigError(f"unknown model {text!r}; known models: {', '.join(list_models())}, the named genotypes "
                      f"{', '.join(derived_models.genotype_names())} (their cells in the CheapMatting macro), "
                      "or a genotype JSON file, or a run directory")


def is_registered_name(text: str) -> bool:
    """Whether ``text`` is a registered model or ``derived_models`` genotype name (not a path): a folder of the
    same name in the current directory that is not a run folder does not hide it."""
    return not any(sep in text for sep in ("/", "\\")) and (text in MODELS or text in derived_models.GENOTYPES)


def _module(net: Any, name: str) -> nn.Module:
    """``net``, or ConfigError when a registered builder returned something else than an ``nn.Module``."""
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model {name!r}: its builder returned a {type(net).__name__}, not a torch nn.Module")
    return net


def _named_cells(name: str, knobs: Mapping[str, Any]) -> MattingModel:
    """A ``derived_models`` genotype name as a MODEL: its cells in the released CheapMatting macro (the
    network of the registered ``cheapmatting*`` model built from it: ``atldas_cifar100`` is ``cheapmatting``)."""
    genotype = derived_models.get_genotype(name)
    return MattingModel(name=name, build=_cheapmatting_with(name, **knobs), genotype=genotype, kind="registered",
                        meta={"learned": True, "description": f"CheapMatting macro with the {name} cells"})


def _planned_epochs(run_dir: Path) -> Optional[int]:
    """The epochs a search run directory's ``config.yaml`` asks for (None when it cannot be read)."""
    try:
        epochs = read_yaml(run_dir / "config.yaml").get("epochs")
    except (AtldasError, OSError, AttributeError):
        return None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def require_torch(model: MattingModel, verb: str) -> MattingModel:
    """``model`` itself, or ConfigError when it is an ONNX file, which ``verb`` cannot use (only
    predict and eval run one)."""
    if model.kind == "onnx":
        raise ConfigError(f"{model.name} is an ONNX file: predict and eval run it, {verb} needs a torch MODEL "
                          "(a name, genotype file or run directory)")
    return model


def create_model(spec: Union[PathLike, Genotype], *, checkpoint_path: Optional[PathLike] = None,
                 **knobs: Any) -> nn.Module:
    """Build a MODEL's network (random weights, or the weights of ``checkpoint_path``).

    Args:
        spec: a registered name, a genotype file, a run directory, or a :class:`Genotype`.
        checkpoint_path: weights in any layout :func:`atldas.utils.weights.load_weights` reads
            (``weights_only=True``; a checkpoint of another network is one clear error).
        **knobs: keyword arguments of the builder.
    """
    model = resolve_model(spec, **knobs)
    net = model.build()
    if checkpoint_path is not None:
        load_model_weights(model, net, checkpoint_path)
    return net


def load_model_weights(model: MattingModel, net: nn.Module, checkpoint: PathLike) -> Dict[str, Any]:
    """:func:`~atldas.utils.weights.load_weights` into ``model``'s network ``net``, and a DataError (one
    line) when the checkpoint names the genotype it was trained for (a retrain checkpoint does) and
    that is not ``model``'s: two genotypes that differ only in parameter-free ops or in which input an
    edge reads have the same parameter names and shapes, so the weights would load and predict wrongly.
    Returns the checkpoint's other entries."""
    extra = load_weights(net, checkpoint, name=model.name)
    trained = extra.get("genotype")
    if model.genotype is None or not isinstance(trained, Mapping):
        return extra
    try:
        theirs = Genotype.from_json(trained, validate=False).hash()
    except (AtldasError, ValueError, KeyError, TypeError, AttributeError):
        return extra  # a genotype entry this atldas cannot read: the weights' own check stands
    ours = model.genotype.hash()
    if theirs != ours:
        raise DataError(f"checkpoint {checkpoint} was trained for genotype {theirs}, and {model.name} is genotype "
                        f"{ours} (the same weight shapes, another network); use the checkpoint trained for this "
                        "MODEL, or the genotype it was trained for (RUN_DIR of its retrain run)")
    return extra


def _retrained_model(path: Path, *, depth: int = 0) -> Optional[str]:
    """The registered model without a genotype that the retrain run in ``path`` trained (its
    ``config.yaml``'s ``model``, followed through a retrain run folder it names), or None."""
    try:
        keys = read_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    except AtldasError:
        return None
    name = keys.get("model")
    if "strategy" in keys or not isinstance(name, str) or not name:
        return None
    if name in MODELS:
        return None if MODELS.get(name).genotype else name
    folder = Path(name)
    if depth < 16 and folder.is_dir() and not (folder / "genotype.json").is_file():  # a retrain of a retrain run
        return _retrained_model(folder, depth=depth + 1)
    return None


def no_genotype(path: PathLike) -> str:
    """One line for a folder given as a genotype source that has no ``genotype.json``: what the folder
    is (an unfinished search run, a retrain run, no run at all) and what to pass instead."""
    path = Path(path)
    keys: Dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        try:
            keys = read_yaml(path / "config.yaml")
        except AtldasError:
            keys = {}
    if "strategy" in keys:
        how = (f"run `atldas derive {path}` to derive it from its checkpoint" if (path / "checkpoint.pt").is_file()
               else "the search wrote no checkpoint yet; continue it with `atldas search --resume --out "
                    f"{path}`")
        return f"{path} is a search run without genotype.json: {how}"
    if "model" in keys:
        return (f"{path} is a retrain run without genotype.json (it trained {keys['model']!r}, not a genotype: a "
                "model name not registered in this process, or a run folder that is gone); pass a registered model's "
                "name or a genotype file")
    return (f"{path} is not a run directory (no genotype.json, no atldas config.yaml): pass the folder of an `atldas "
            "search` or `atldas retrain` run, or a genotype file")
