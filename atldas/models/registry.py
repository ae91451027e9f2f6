"""MODEL: one name for every network the commands run (architecture.md).

A MODEL is

- a name registered in ``derived_models`` (``cheapmatting``, ``cheapmatting_darts_v2``, ...),
- a hand-designed baseline registered here (``aematter``, ``aematter_small``, ``aematter_tiny``,
  ``cnn_baseline``, ``cnn_baseline_small``, ``cnn_baseline_tiny``) or the non-learned
  ``closed_form`` (pymatting's closed-form matting),
- a genotype JSON file (or DARTS ``Genotype(...)`` text file): built in the macro its ``space``
  metadata names (the CheapMatting macro by default, with the file's macro knobs and block choices),
- a search run directory: its ``genotype.json`` in the run's target macro.

:func:`resolve_model` returns a :class:`MattingModel`: ``build()`` gives a fresh ``nn.Module`` and
``forward(net, x)`` runs it on the 6-channel input ``(B, 6, H, W)`` = RGB + one-hot trimap, whatever
the network's own signature (AEMatter takes image and trimap as two tensors).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from torch import Tensor, nn

from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.registry import Registry


@dataclass(frozen=True)
class MattingModel:
    """A resolved MODEL.

    Attributes:
        name: what the user asked for (name or path).
        build: returns a fresh network (random weights).
        two_inputs: the network takes ``(image, trimap_onehot)`` instead of the 6-channel tensor.
        genotype: the genotype, for searched models.
        kind: "derived", "baseline", "genotype" or "run".
    """

    name: str
    build: Callable[[], nn.Module]
    two_inputs: bool = False
    genotype: Optional[Genotype] = None
    kind: str = "baseline"
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def learned(self) -> bool:
        """Whether the network needs trained weights (False only with ``meta["learned"] = False``:
        classical methods such as closed-form matting)."""
        return bool(self.meta.get("learned", True))

    def forward(self, net: nn.Module, x: Tensor) -> Tensor:
        """Run ``net`` on ``x`` (B, 6, H, W) -> alpha (B, 1, H, W)."""
        if self.two_inputs:
            return net(x[:, :3], x[:, 3:])
        return net(x)


#: Hand-designed baselines: name -> (builder, two_inputs).
BASELINES: Registry[Callable[[], MattingModel]] = Registry("baseline model")


def _aematter(variant: str) -> Callable[[], MattingModel]:
    def make() -> MattingModel:
        from atldas.models.aematter import build_aematter

        return MattingModel(name=f"aematter_{variant}" if variant != "full" else "aematter",
                            build=lambda: build_aematter(variant=variant), two_inputs=True)

    return make


def _cnn(variant: str) -> Callable[[], MattingModel]:
    def make() -> MattingModel:
        from atldas.models.cnn_baseline import build_cnn_baseline

        return MattingModel(name=f"cnn_baseline_{variant}" if variant != "full" else "cnn_baseline",
                            build=lambda: build_cnn_baseline(variant=variant))

    return make


def _closed_form() -> MattingModel:
    from atldas.models.classical import closed_form_model

    return closed_form_model()


BASELINES.add("closed_form", _closed_form)
BASELINES.add("aematter", _aematter("full"))
BASELINES.add("aematter_small", _aematter("small"))
BASELINES.add("aematter_tiny", _aematter("tiny"))
BASELINES.add("cnn_baseline", _cnn("full"))
BASELINES.add("cnn_baseline_small", _cnn("small"))
BASELINES.add("cnn_baseline_tiny", _cnn("tiny"))


def model_names() -> list[str]:
    """Every registered MODEL name (derived and baselines)."""
    import derived_models

    return sorted(set(derived_models.model_names()) | set(BASELINES.names()))


def _from_genotype(genotype: Genotype, *, name: str, kind: str) -> MattingModel:
    """A genotype in its space's target macro (the CheapMatting macro when no space is recorded)."""
    space_meta = dict(genotype.space or {})
    space_name = space_meta.get("name")
    from search_spaces import SPACES

    if space_name in SPACES:
        from atldas.config import SearchConfig

        space = SPACES.get(space_name)
        macro = dict(space_meta.get("macro") or {})
        cfg = space.resolve(SearchConfig(space=space_name, target_C=macro.get("C"),
                                         target_layers=macro.get("layers")))
        if space.task != "matting":
            raise ConfigError(f"{name}: space {space_name!r} is not a matting space; it has no matting network")
        return MattingModel(name=name, build=lambda: space.build_target(genotype, cfg), genotype=genotype,
                            kind=kind, meta={"space": space_name})
    from atldas.models.cheapmatting import CheapMatting

    macro = dict(space_meta.get("macro") or {})
    knobs: Dict[str, Any] = {"C": int(macro.get("C", 48)), "layers": int(macro.get("layers", 14))}
    choices = dict(genotype.choices)
    if choices:
        knobs["decoder_blocks"] = tuple(choices.get(f"decoder{i}", "bottleneck") for i in range(4))
        knobs["head_block"] = choices.get("head", "conv3x3")
    return MattingModel(name=name, build=lambda: CheapMatting(genotype=genotype, **knobs), genotype=genotype,
                        kind=kind, meta={"space": "cheapmatting"})


def resolve_model(spec: str | os.PathLike[str]) -> MattingModel:
    """Resolve a MODEL (see the module docstring); unknown names list what exists."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        g = path / "genotype.json"
        if not g.is_file():
            raise ConfigError(f"{path}: a run directory needs genotype.json (run `atldas derive {path}`)")
        return _from_genotype(Genotype.load(g), name=text, kind="run")
    if path.is_file():
        return _from_genotype(Genotype.load(path), name=text, kind="genotype")
    if text in BASELINES:
        return BASELINES.get(text)()
    import derived_models

    if text in derived_models.MODELS:
        return MattingModel(name=text, build=lambda: derived_models.build_model(text),
                            genotype=derived_models.resolve_genotype(derived_models.get_model_spec(text).genotype),
                            kind="derived")
    if any(sep in text for sep in ("/", "\\")) or text.endswith(".json"):
        raise ConfigError(f"{text}: no such genotype file or run directory")
    raise ConfigError(f"unknown model {text!r}; known models: {', '.join(model_names())}, "
                      "or a genotype JSON file, or a search run directory")
