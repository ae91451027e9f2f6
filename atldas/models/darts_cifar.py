"""The DARTS CIFAR evaluation network (``NetworkCIFAR``, Liu et al., ICLR 2019), built from a genotype,
so published cells (DARTS_V2, PC-DARTS, ATL-DAS) can be costed and trained in the same code.

    stem        3x3 conv (3 -> 3C) + BatchNorm, (B, 3, 32, 32) -> (B, 3C, 32, 32); s0 = s1 = stem
    cells       ``layers`` cells, reductions at layers // 3 and 2 * layers // 3 (channels doubled)
    aux head    (off by default) after cell 2 * layers // 3
    classifier  global average pool + linear, (B, 4 * 4C, 8, 8) -> (B, num_classes)

Module names equal DARTS' ``NetworkCIFAR`` (``stem``, ``cells.K._ops.J``, ``auxiliary_head``,
``classifier``), so DARTS checkpoints load by name. DARTS_V2 at C = 36 x 20 has 3,349,342 parameters
without the auxiliary head (the DARTS paper: 3.3 M).
"""

from __future__ import annotations

from torch import Tensor, nn

from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.models.cheapmatting import CellStack
from atldas.topology import reductions_of

__all__ = ["STEM_MULTIPLIER", "stem", "AuxiliaryHeadCIFAR", "DartsCifarNetwork"]

#: Channels of the stem relative to C (DARTS' ``stem_multiplier``).
STEM_MULTIPLIER = 3


def stem(C_out: int, *, affine: bool = True) -> nn.Sequential:
    """DARTS' CIFAR stem: 3x3 conv + BatchNorm (indices 0/1 as in DARTS: ``stem.0``, ``stem.1``)."""
    return nn.Sequential(nn.Conv2d(3, C_out, 3, padding=1, bias=False), nn.BatchNorm2d(C_out, affine=affine))


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS' auxiliary classifier for an 8 x 8 input: (B, C, 8, 8) -> (B, num_classes)."""

    def __init__(self, *, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),  # 2x2 -> 1x1
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsCifarNetwork(nn.Module):
    """DARTS' evaluation network (``NetworkCIFAR``) built from a genotype.

    ``forward`` returns the logits, or ``(logits, aux_logits)`` when ``auxiliary`` is on and the
    network is training. Drop-path (``drop_path_prob``, an attribute a training loop may change per
    epoch, as in DARTS) acts in training only.

    Args:
        genotype: the normal and reduce cells (any in-degree).
        C: node channels of the first stage (36 in DARTS' CIFAR-10 evaluation).
        layers: number of cells (20).
        num_classes: classifier outputs.
        auxiliary: build the auxiliary head after cell ``2 * layers // 3``.
        drop_path_prob: initial drop-path probability.
    """

    def __init__(self, *, genotype: Genotype, C: int = 36, layers: int = 20, num_classes: int = 10,
                 auxiliary: bool = False, drop_path_prob: float = 0.0) -> None:
        super().__init__()
        if layers < 3:
            raise ConfigError(f"the DARTS CIFAR network needs layers >= 3 (three stages), got {layers}")
        self.genotype = genotype
        self._auxiliary = auxiliary
        self.drop_path_prob = drop_path_prob
        self.reductions = reductions_of(layers)
        C_stem = STEM_MULTIPLIER * C
        self.stem = stem(C_stem)
        aux_at = 2 * layers // 3
        self.cells = CellStack(genotype=genotype, C=C, layers=layers, C_s0=C_stem, C_s1=C_stem, s0_reduced=False,
                               taps=(aux_at, layers - 1))
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C=self.cells.channels[aux_at], num_classes=num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.cells.channels[-1], num_classes)

    def num_params(self) -> int:
        """Parameters without the auxiliary head (DARTS' ``count_parameters_in_MB`` convention)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("auxiliary_head."))

    def forward(self, x: Tensor):
        """(B, 3, H, W) -> (B, num_classes) logits (plus aux logits, see the class docstring)."""
        s = self.stem(x)  # (B, 3C, H, W)
        mid, last = self.cells(s, s, self.drop_path_prob)  # (B, 8C, H/2, W/2), (B, 16C, H/4, W/4)
        logits = self.classifier(self.global_pooling(last).flatten(1))  # (B, 16C) -> (B, num_classes)
        if self._auxiliary and self.training:
            return logits, self.auxiliary_head(mid)
        return logits
