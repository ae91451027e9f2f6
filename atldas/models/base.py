"""The record every matting MODEL resolves to (a leaf module: torch and the genotype value only).

A :class:`MattingModel` says how to build a fresh network and how to run it on the 6-channel matting
input ``(B, 6, H, W)`` = RGB + one-hot trimap [bg, unknown, fg], whatever the network's own signature
(AEMatter takes image and trimap as two tensors). :func:`atldas.models.zoo.resolve_model` makes one
from a registered name, a genotype file or a run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from torch import Tensor, nn

from atldas.config import keyword_only
from atldas.genotype import Genotype

__all__ = ["MattingModel", "set_clamp"]


@keyword_only
@dataclass(frozen=True)
class MattingModel:
    """A resolved MODEL.

    Attributes:
        name: what the user asked for (name or path).
        build: returns a fresh network (random weights).
        two_inputs: the network takes ``(image, trimap_onehot)`` instead of the 6-channel tensor.
        genotype: the genotype, for networks built from one.
        kind: "registered", "genotype", "run" or "classical".
        meta: anything else (``learned``, ``description``, ``device``, ``macro``...).
    """

    name: str
    build: Callable[[], nn.Module]
    two_inputs: bool = False
    genotype: Optional[Genotype] = None
    kind: str = "registered"
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def learned(self) -> bool:
        """Whether the network needs trained weights (False for classical methods such as
        closed-form matting: ``meta["learned"] = False``)."""
        return bool(self.meta.get("learned", True))

    @property
    def needs_checkpoint(self) -> bool:
        """Whether running the network needs a ``--checkpoint``: a learned network whose weights are
        not inside the MODEL itself (an ONNX file carries its own: ``meta["weights_inside"]``)."""
        return self.learned and not self.meta.get("weights_inside", False)

    def forward(self, net: nn.Module, x: Tensor) -> Tensor:
        """Run ``net`` on ``x`` (B, 6, H, W) -> alpha (B, 1, H, W)."""
        if self.two_inputs:
            return net(x[:, :3], x[:, 3:])
        return net(x)


def set_clamp(net: nn.Module, value: bool) -> None:
    """Lift (training: the losses need the raw output's gradient) or restore (inference) an output
    clamp a network has as a bool attribute ``clamp``."""
    for m in net.modules():
        if isinstance(getattr(m, "clamp", None), bool):
            m.clamp = value
