"""The ``matting`` space: the CheapMatting macro with searchable cells, decoder levels and head.

Searched: the normal and reduce cells (topology beta + ops alpha), and, per decoder level 0..3 and for
the full-resolution head, a choice among candidate blocks (``decoder0`` .. ``decoder3``, ``head``;
gamma), the released CheapMatting blocks among them, so ``cheapmatting`` is a point of the space.

The supernet is a *proxy* (DARTS practice): fewer, narrower cells on small crops (its macro is the
target's :meth:`~atldas.models.cheapmatting.CheapMattingCfg.scaled`). The budget is stated on the
*target* network that derive produces (``target_C`` x ``target_layers`` cells, the released decoder
widths) at ``input_size`` x ``input_size`` (1024 by default). Supernet, target network, block
candidates (and so the cost table) and plots all read one :class:`CheapMattingCfg`.

``tiny`` is the same macro shrunk until a search takes seconds (tests and CI).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from atldas.arch import ArchParams
from atldas.genotype import Genotype
from atldas.ops import SEARCH_PRIMITIVES
from atldas.models.cheapmatting import (DECODER_BLOCKS, HEAD_BLOCKS, LEVELS, CheapMatting, CheapMattingCfg,
                                        CheapMattingMacro, DecoderLevel, PredictionHead)
from atldas.supernet import ChoiceBlock, Plan, SearchCellStack, SuperNet
from atldas.topology import CellGeometry, CellTopology, stack_geometry
from search_spaces.base import BlockCandidates, SearchSpace

__all__ = ["MattingSuperNet", "MattingSpace", "MATTING", "TINY"]


class MattingSuperNet(CheapMattingMacro, SuperNet):
    """The CheapMatting macro with search cells and choice blocks.

    Args:
        topology: cell topology.
        ops: candidate ops of every edge.
        cfg: the proxy macro.
        decoder_candidates: candidate block names of every decoder level.
        head_candidates: candidate head names.
    """

    def __init__(self, *, topology: CellTopology, ops: Sequence[str], cfg: CheapMattingCfg,
                 decoder_candidates: Sequence[str], head_candidates: Sequence[str]) -> None:
        blocks = {f"decoder{lv}": tuple(decoder_candidates) for lv in LEVELS}
        blocks["head"] = tuple(head_candidates)
        stack = SearchCellStack(topology=topology, ops=ops, C=cfg.C, layers=cfg.layers, C_s0=cfg.C, C_s1=cfg.C,
                                s0_reduced=True, taps=cfg.taps)
        dc, dm = cfg.decoder_channels, cfg.decoder_mid
        super().__init__(
            cfg=cfg, cells=stack, tap_channels=stack.tap_channels,
            level=lambda lv, c_in: ChoiceBlock(group=f"decoder{lv}", candidates={
                name: partial(DecoderLevel, C_in=c_in, C_out=dc[lv], C_mid=dm[lv], block=name,
                              depth=cfg.decoder_depth) for name in decoder_candidates}),
            head=lambda c_in: ChoiceBlock(group="head", candidates={
                name: partial(PredictionHead, C_in=c_in, block=name) for name in head_candidates}))
        self.arch = ArchParams(topology=topology, ops=ops, blocks=blocks)
        self._stems_stateless = not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))
                                        for stem in (self.stem00, self.stem05) for m in stem.modules())

    def forward(self, x: Tensor, plan: Plan) -> Tensor:
        """(B, 6, H, W) -> (B, 1, H, W) alpha for the architecture ``plan`` describes."""
        return self._alpha(self.run(x, cells_kw={"plan": plan}, block_kw={"plan": plan}))

    def _alpha(self, y: Tensor) -> Tensor:
        # clamp only at inference: during training the losses pull the raw output into [0, 1] and a
        # clamp would cut the gradient of every pixel outside it
        return y if self.training else y.clamp(0.0, 1.0)

    def forward_each(self, x: Tensor, plans: Sequence[Plan]) -> List[Tensor]:
        """Without gradients, the first two stems (no plan changes them; no BatchNorm or dropout in them, so
        running them once changes no state) run once for all plans: the same floats as one forward each
        (an arch step's children: 3 of 4 stem passes saved). With gradients, one forward each (a shared
        stem would sum its weight gradients in another order)."""
        if torch.is_grad_enabled() or not self._stems_stateless:
            return super().forward_each(x, plans)
        stems = self.stems(x)  # (B, C/2, H/2, W/2), (B, C, H/4, W/4)
        return [self._alpha(self.run(x, cells_kw={"plan": p}, block_kw={"plan": p}, stems=stems)) for p in plans]


class MattingSpace(SearchSpace):
    """The CheapMatting macro (see the module docstring).

    Args:
        name: registered name.
        defaults: SearchConfig values of this space.
        macro: the target macro's fixed knobs (decoder widths, stem, PPM); ``C`` and ``layers`` come
            from ``target_C`` and ``target_layers``.
        ops: candidate cell ops (default: the DARTS primitives without ``none``; any registered op).
    """

    task = "matting"
    min_input_size = 32

    def __init__(self, *, name: str, defaults: Dict[str, Any], macro: CheapMattingCfg,
                 ops: Sequence[str] = SEARCH_PRIMITIVES,
                 strategy_defaults: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
        super().__init__(name=name, defaults=defaults, strategy_defaults=strategy_defaults)
        if isinstance(ops, str):  # tuple("sep_conv_3x3") is its letters
            raise TypeError(f"space {name!r}: ops is a sequence of op names, got the string {ops!r}")
        self.macro = dataclasses.replace(macro, ppm_extra_convs=0)
        self.ops = tuple(ops)

    def target_cfg(self) -> CheapMattingCfg:
        """The target network's macro."""
        k = self.cfg
        return dataclasses.replace(self.macro, C=k.target_C, layers=k.target_layers,
                                   in_channels=int(self.io.get("in_channels", 6)))

    def proxy_cfg(self) -> CheapMattingCfg:
        """The supernet's macro: the target scaled to the proxy width and depth."""
        k = self.cfg
        return self.target_cfg().scaled(C=k.C, layers=k.layers)

    def block_names(self) -> Dict[str, Tuple[str, ...]]:
        names = {f"decoder{lv}": tuple(DECODER_BLOCKS.names()) for lv in LEVELS}
        names["head"] = tuple(HEAD_BLOCKS.names())
        return names

    def build_supernet(self, *, ops: Sequence[str]) -> MattingSuperNet:
        names = self.block_names()
        return MattingSuperNet(topology=self.topology, ops=ops, cfg=self.proxy_cfg(),
                               decoder_candidates=names["decoder0"], head_candidates=names["head"])

    def build_target(self, genotype: Genotype) -> nn.Module:
        choices = dict(genotype.choices)
        return CheapMatting(genotype=genotype, cfg=self.target_cfg(),
                            decoder_blocks=tuple(choices.get(f"decoder{lv}", "bottleneck") for lv in LEVELS),
                            head_block=choices.get("head", "conv3x3"))

    def macro_meta(self) -> Dict[str, Any]:
        return self.target_cfg().to_meta()

    def input_shape(self) -> Tuple[int, ...]:
        n = self.cfg.input_size
        return (1, self.target_cfg().in_channels, n, n)

    def cell_geometry(self) -> List[CellGeometry]:
        k = self.cfg
        return stack_geometry(C=k.target_C, layers=k.target_layers, size=CheapMattingCfg.sizes(k.input_size)[3])

    def block_candidates(self) -> BlockCandidates:
        cfg = self.target_cfg()
        c_in = cfg.level_inputs(cfg.tap_channels(concat=self.cfg.nodes))
        side = cfg.level_sizes(self.cfg.input_size)
        dc, dm = cfg.decoder_channels, cfg.decoder_mid
        out: BlockCandidates = {}
        for lv in LEVELS:
            out[f"decoder{lv}"] = {
                name: (partial(DecoderLevel, C_in=c_in[lv], C_out=dc[lv], C_mid=dm[lv], block=name,
                               depth=cfg.decoder_depth), ((1, c_in[lv], side[lv], side[lv]),))
                for name in DECODER_BLOCKS.names()}
        n = self.cfg.input_size
        out["head"] = {name: (partial(PredictionHead, C_in=cfg.head_input, block=name),
                              ((1, cfg.head_input, n, n),)) for name in HEAD_BLOCKS.names()}
        return out


#: The ``select`` stage is off by default here (``--set select=4`` turns it on: candidates trained 150
#: steps each at the target width, 35-80 s apiece on the 2-core CPU): with 4 candidates it left the
#: searched genotype at the 62nd percentile of ``make compare``'s matched random genotypes (README
#: "Equal-recipe comparison"), no better than without it, for twice the search time.
MATTING = MattingSpace(name="matting", macro=CheapMattingCfg(), defaults={
    "epochs": 10, "steps_per_epoch": 50, "arch_steps_per_epoch": 50, "batch_size": 4, "crop": 128,
    "C": 16, "layers": 8, "target_C": 48, "target_layers": 14, "input_size": 1024, "warmup_epochs": 2,
    "target_macs": 25e9})

TINY = MattingSpace(name="tiny", macro=CheapMattingCfg(
    decoder_channels=(8, 8, 16, 16), decoder_mid=(8, 8, 8, 8), stem_mid=8, ppm_channels=8, ppm_out=16,
    decoder_depth=1), defaults={
    "epochs": 3, "steps_per_epoch": 3, "arch_steps_per_epoch": 3, "batch_size": 2, "crop": 64,
    "C": 8, "layers": 3, "target_C": 8, "target_layers": 3, "input_size": 64, "warmup_epochs": 1,
    "target_macs": None})
