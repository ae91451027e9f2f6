"""The ``planted`` space: the networks of the planted-architecture task (:mod:`atldas.tasks.planted`).

A 1x1 stem, ``layers`` normal cells at one resolution (no reduction), a 1x1 head; the proxy supernet
and the target network (:class:`~atldas.models.planted.PlantedNet`) have the same shape, so the search
runs in seconds and every genotype trains standalone in seconds. Only the normal cell is searched;
a genotype's reduction cell is a copy of it. (The arch parameters of a reduction cell exist, as in every
space, and are drawn, updated and logged like the others, but no network uses them: their history
rows and heatmaps are noise. Leaving them out would change every stored planted search's random draws.)

    atldas search --space planted --data teacher:3 --seed 1 --out runs/planted
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from torch import Tensor, nn

from atldas.arch import ArchParams, Child
from atldas.genotype import Genotype
from atldas.models.planted import PlantedNet
from atldas.supernet import Plan, SearchCellStack, SuperNet
from atldas.topology import CellGeometry, CellTopology
from search_spaces.base import SearchSpace

__all__ = ["PlantedSuperNet", "PlantedSpace", "PLANTED"]


class PlantedSuperNet(SuperNet):
    """Stem, search cells without reduction, head: (B, in, H, W) -> (B, out, H, W).

    Args:
        topology: cell topology.
        ops: candidate ops of every edge.
        C: node channels.
        layers: cells.
        in_channels, out_channels: the task's channels.
    """

    def __init__(self, *, topology: CellTopology, ops: Sequence[str], C: int, layers: int, in_channels: int,
                 out_channels: int) -> None:
        super().__init__()
        self.arch = ArchParams(topology=topology, ops=ops, blocks={})
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 1, bias=False), nn.BatchNorm2d(C, affine=False))
        self.cells = SearchCellStack(topology=topology, ops=ops, C=C, layers=layers, C_s0=C, C_s1=C, reductions=())
        self.head = nn.Conv2d(self.cells.tap_channels[-1], out_channels, 1)

    def forward(self, x: Tensor, plan: Plan) -> Tensor:
        s = self.stem(x)  # (B, C, H, W)
        (y,) = self.cells(s, s, plan)  # (B, nodes * C, H, W)
        return self.head(y)  # (B, out, H, W)


class PlantedSpace(SearchSpace):
    """See the module docstring.

    Args:
        name: registered name.
        defaults: SearchConfig values of this space.
    """

    task = "planted"

    def _channels(self) -> Tuple[int, int]:
        return int(self.io.get("in_channels", 3)), int(self.io.get("out_channels", 4))

    def build_supernet(self, *, ops: Sequence[str]) -> PlantedSuperNet:
        k = self.cfg
        cin, cout = self._channels()
        return PlantedSuperNet(topology=self.topology, ops=ops, C=k.C, layers=k.layers, in_channels=cin,
                               out_channels=cout)

    def build_target(self, genotype: Genotype) -> PlantedNet:
        k = self.cfg
        cin, cout = self._channels()
        return PlantedNet(genotype=genotype, C=k.target_C, cells=k.target_layers, in_channels=cin, out_channels=cout)

    def macro_meta(self) -> Dict[str, Any]:
        cin, cout = self._channels()
        return {"name": "planted", "C": self.cfg.target_C, "cells": self.cfg.target_layers, "in_channels": cin,
                "out_channels": cout}

    def input_shape(self) -> Tuple[int, ...]:
        n = self.cfg.input_size
        return (1, self._channels()[0], n, n)

    def cell_geometry(self) -> List[CellGeometry]:
        k = self.cfg
        return [CellGeometry(C=k.target_C, H=k.input_size, W=k.input_size, reduction=False)] * k.target_layers

    def child_to_genotype(self, arch: ArchParams, child: Child) -> Genotype:
        g = super().child_to_genotype(arch, child)
        return g.replace(reduce=g.normal)  # the network has no reduction cell


#: The weight recipe is the standalone one's (lr 0.01-0.03 with a gradient-norm clip of 1; at the
#: default 2e-3 the shared weights rank genotypes no better than chance, Kendall tau 0.03 against
#: standalone training; 16 epochs of it bring tau to 0.27-0.36, 24 epochs to 0.27-0.45).
#: ATL-DAS and random search end with the ``select`` stage (16 candidates of the final policy, each
#: trained briefly on its own): on this task their argmax genotypes sit at the 40th-48th and 34th
#: percentile of matched-cost random genotypes, with 8 candidates at the 8th-25th and 12th-29th;
#: 16 candidates took ATL-DAS 5.0 points lower than 8 on 36 paired runs without a budget and 7.5
#: lower on 36 with one, for 14-22 s more per search (experiments/search_quality.py, its record in
#: experiments/SEARCH_QUALITY.md). The 16 are fitted 50 steps each and the best 5 again with 350 (successive
#: halving, ``select_keep``): the same steps as 16 x 150 within 6 %, a better ranking (run.py's
#: SearchConfig). Under a budget ATL-DAS grows each candidate onto it by its policy (``select_fill``:
#: 10.0th against 13.1st percentile, losses 0.84x, 36 paired runs on teachers 0-5, seeds 0-5); random
#: search does not, as growing by a uniform policy made it worse (18.9 against 12.5, losses 1.07x).
#: Both first rank 64 distinct candidates on the shared weights and fit the strategy's own and the best
#: 15 of them (``select_pool``, the default since 2026-12-05, by a rule written before the runs: over
#: 36 paired runs on teachers 12-17, both settings, ATL-DAS 4.4 percentile points better with it,
#: standard error 3.9; over 72 on teachers 0-2 and 12-20, -1.7 (2.7), random search +0.8 (3.4): it
#: helps random search without a budget and hurts it under one). Random search ranking its samples on
#: the shared weights is random search with weight sharing as published, and it keeps the two
#: strategies' stages and costs equal.
#: ATL-DAS's weight sampler stays uniform over the candidates not yet pruned (``eps_min=1.0``, the
#: default since 2026-12-05; the matting space keeps 0.2), so the shared weights are not trained mostly
#: on the children the policy already prefers: by rules written before the runs, 36 paired runs on
#: teachers 0-2 and 18-20 took it 8.1 percentile points lower (standard error 4.0; on teachers 12-17
#: -1.7, 4.0; over 90 with 24-26, -4.4, 2.4).
#: The supernet trains 32 epochs (the default since 2026-12-06; 16 before), for every strategy: by
#: rules written before the runs, ATL-DAS minus random search, both with 32 epochs, was -5.6 percentile
#: points (standard error 4.8) on never-searched teachers 36-38, -3.9 (4.0) on 39-41 and -8.3 (2.9) on
#: 42-44, -5.9 (2.3) over those 54 pairs, +4.4 (5.4) on 45-47, -3.3 (2.2) over all 72 (not the two
#: standard errors rule (l) asked for to keep the claim), -5.6 (6.1) on 48-50 and -3.8 (2.1) over all
#: 90 (not the 2.5 rule (m) asked for to bring it back); with 16 epochs the two were level on fresh teachers (+0.7,
#: 2.2, over 72 pairs of teachers 24-35; +0.0, 4.4, on 42-44). Within a pool of one cost, 32 epochs
#: raised the shared weights' ranking of standalone losses (Kendall tau +0.07, 0.06; pool_ranking.py).
#: DARTS and GDAS derive their argmax, as published (the select stage is refused for them: their
#: supernet holds ``none``); ``--set select=0`` turns it off for atldas and random.
PLANTED = PlantedSpace(name="planted", defaults={
    "epochs": 32, "steps_per_epoch": 40, "arch_steps_per_epoch": 20, "batch_size": 16, "crop": 12,
    "C": 16, "layers": 1, "target_C": 16, "target_layers": 1, "input_size": 12, "warmup_epochs": 5,
    "target_macs": None, "w_lr": 0.01, "grad_clip": 1.0},
    strategy_defaults={"atldas": {"select": 16, "select_pool": 64, "select_steps": 50, "select_keep": 5,
                                  "select_fill": True, "eps_min": 1.0},
                       "random": {"select": 16, "select_pool": 64, "select_steps": 50, "select_keep": 5}})
