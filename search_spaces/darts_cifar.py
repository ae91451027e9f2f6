"""The ``darts_cifar`` space: the DARTS CIFAR network (32 x 32 classification), so published cells
(DARTS_V2, PC-DARTS, ATL-DAS) can be searched, costed and compared in the same code.

    atldas search --space darts_cifar                       # synthetic 10-class data, a few CPU minutes
    atldas search --space darts_cifar --data DIR            # DIR/<class_name>/*.png|jpg
    atldas search --space darts_cifar --target-params 3.3M  # budget on the 36 x 20 target network

- :class:`DartsCifarSuperNet`: the search proxy (C = 16, 8 cells) with search cells
  (:class:`~atldas.supernet.SearchCellStack`, non-affine BatchNorm), in DARTS' ``model_search.Network``
  layout.
- the target: :class:`~atldas.models.darts_cifar.DartsCifarNetwork` (C = 36, 20 cells), DARTS'
  ``NetworkCIFAR``.
- the task: ``classification`` (:class:`~atldas.tasks.classification.ClassificationTask`): synthetic
  procedural shapes or an image folder, cross-entropy.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from torch import Tensor, nn

from atldas.arch import ArchParams
from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.models.darts_cifar import STEM_MULTIPLIER, DartsCifarNetwork, stem
from atldas.supernet import Plan, SearchCellStack, SuperNet
from atldas.topology import CellGeometry, CellTopology, stack_geometry
from search_spaces.base import SearchSpace

__all__ = ["DARTS_CIFAR", "DartsCifarSpace", "DartsCifarSuperNet"]


class DartsCifarSuperNet(SuperNet):
    """DARTS' search network with topology-learning search cells.

    Args:
        topology: cell topology (nodes, in-degree range).
        ops: candidate ops of every edge.
        C: node channels of the first stage (16 in DARTS' search).
        layers: number of cells (8 in DARTS' search).
        num_classes: classifier outputs.
    """

    def __init__(self, *, topology: CellTopology, ops: Sequence[str], C: int = 16, layers: int = 8,
                 num_classes: int = 10) -> None:
        super().__init__()
        if layers < 3:
            raise ConfigError(f"the DARTS CIFAR network needs layers >= 3 (three stages), got {layers}")
        self.arch = ArchParams(topology=topology, ops=ops, blocks={})
        C_stem = STEM_MULTIPLIER * C
        self.stem = stem(C_stem)
        self.stack = SearchCellStack(topology=topology, ops=ops, C=C, layers=layers, C_s0=C_stem, C_s1=C_stem,
                                     s0_reduced=False)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.stack.tap_channels[-1], num_classes)

    def forward(self, x: Tensor, plan: Plan) -> Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits of the architecture ``plan`` describes."""
        s = self.stem(x)  # (B, 3C, H, W)
        (y,) = self.stack(s, s, plan)  # (B, 16C, H/4, W/4)
        return self.classifier(self.global_pooling(y).flatten(1))


class DartsCifarSpace(SearchSpace):
    """The DARTS CIFAR macro (see the module docstring): search proxy C x layers, target
    ``target_C`` x ``target_layers`` at ``input_size`` x ``input_size``; no block groups.

    Args:
        name: registered name.
        defaults: SearchConfig values of this space.
    """

    task = "classification"

    @property
    def num_classes(self) -> int:
        return int(self.io.get("num_classes", 10))

    def build_supernet(self, *, ops: Sequence[str]) -> DartsCifarSuperNet:
        k = self.cfg
        return DartsCifarSuperNet(topology=self.topology, ops=ops, C=k.C, layers=k.layers,
                                  num_classes=self.num_classes)

    def build_target(self, genotype: Genotype) -> DartsCifarNetwork:
        k = self.cfg
        return DartsCifarNetwork(genotype=genotype, C=k.target_C, layers=k.target_layers,
                                 num_classes=self.num_classes, auxiliary=False)

    def macro_meta(self) -> Dict[str, Any]:
        k = self.cfg
        return {"name": "darts_cifar", "C": k.target_C, "layers": k.target_layers, "num_classes": self.num_classes,
                "stem_multiplier": STEM_MULTIPLIER}

    def input_shape(self) -> Tuple[int, ...]:
        n = self.cfg.input_size
        return (1, int(self.io.get("in_channels", 3)), n, n)

    def cell_geometry(self) -> List[CellGeometry]:
        k = self.cfg  # the stem keeps the input size
        return stack_geometry(C=k.target_C, layers=k.target_layers, size=k.input_size)


DARTS_CIFAR = DartsCifarSpace(name="darts_cifar", defaults={
    "epochs": 6, "steps_per_epoch": 20, "arch_steps_per_epoch": 20, "batch_size": 16, "crop": 32,
    "C": 16, "layers": 8, "target_C": 36, "target_layers": 20, "input_size": 32, "warmup_epochs": 1,
    "target_macs": 5e8})
