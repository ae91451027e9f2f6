"""The ``matting`` space: the CheapMatting macro with searchable cells, decoder levels and head.

Searched: the normal and reduce cells (topology beta + ops alpha), and, per decoder level 0..3 and for
the full-resolution head, a choice among candidate blocks (``decoder0`` .. ``decoder3``, ``head``;
gamma), the released CheapMatting blocks among them, so ``cheapmatting`` is a point of the space.

The supernet is a *proxy* (DARTS practice): fewer, narrower cells on small crops. The budget is
stated on the *target* network that derive produces (``target_C`` x ``target_layers`` cells, the
released decoder widths) at ``input_size`` x ``input_size`` (1024 by default), and the cost table is
exact for it (see :meth:`SearchSpace.cost_table`).

``tiny`` is the same macro shrunk until a search takes seconds (tests and CI).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atldas.arch import ArchParams
from atldas.config import SearchConfig
from atldas.genotype import Genotype
from atldas.matting.inference import batch_input
from atldas.matting.losses import MattingLoss
from atldas.models.cheapmatting import (DECODER_BLOCKS, HEAD_BLOCKS, CheapMatting, DecoderLevel,
                                        PredictionHead, PyramidPooling, StemEighth, StemHalf,
                                        StemQuarter)
from atldas.supernet import ChoiceBlock, Plan, SearchCellStack, SuperNet
from atldas.topology import CellTopology
from search_spaces.base import CellGeometry, SearchSpace, reductions_of, stack_geometry

LEVELS = (0, 1, 2, 3)


def _up(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class MattingSuperNet(SuperNet):
    """CheapMatting macro with search cells and choice blocks.

    Args:
        topology: cell topology.
        ops: candidate ops of every edge.
        C: first-stage channels.
        layers: number of cells.
        decoder_channels: output channels of decoder levels 0..3.
        decoder_mid: bottleneck channels of levels 0..3.
        decoder_depth: blocks per level.
        stem_mid: bottleneck channels of the 1/4 stem.
        ppm_channels: channels per pyramid-pooling branch.
        ppm_out: pyramid-pooling output channels.
        decoder_candidates: candidate block names of every decoder level.
        head_candidates: candidate head names.
        in_channels: input channels (6).
    """

    def __init__(self, *, topology: CellTopology, ops: Sequence[str], C: int, layers: int,
                 decoder_channels: Sequence[int], decoder_mid: Sequence[int], decoder_depth: int,
                 stem_mid: int, ppm_channels: int, ppm_out: int, decoder_candidates: Sequence[str],
                 head_candidates: Sequence[str], in_channels: int = 6) -> None:
        super().__init__()
        blocks = {f"decoder{lv}": tuple(decoder_candidates) for lv in LEVELS}
        blocks["head"] = tuple(head_candidates)
        self.arch = ArchParams(topology=topology, ops=ops, blocks=blocks)
        self.stem00 = StemHalf(C_in=in_channels, C_out=C // 2)
        self.stem05 = StemQuarter(C_in=C // 2, C_out=C, C_mid=stem_mid)
        self.stem10 = StemEighth(C_in=C, C_out=C)
        r1, r2 = reductions_of(layers)
        self.taps = (r1 - 1, r2 - 1, layers - 1)
        self.stack = SearchCellStack(topology=topology, ops=ops, C=C, layers=layers, reductions=(r1, r2),
                                     C_s0=C, C_s1=C, s0_reduced=True)
        c8, c16, c32 = (self.stack.out_channels[k] for k in self.taps)
        dc, dm = tuple(decoder_channels), tuple(decoder_mid)
        self.ppm = PyramidPooling(C_in=c32, C_mid=ppm_channels, C_out=ppm_out, extra_convs=0)
        c_in = {3: ppm_out + c32 + c16, 2: dc[3] + c8, 1: dc[2] + C, 0: dc[1] + C // 2}
        self.decoder = nn.ModuleList([
            ChoiceBlock(group=f"decoder{lv}", candidates={
                name: partial(DecoderLevel, C_in=c_in[lv], C_out=dc[lv], C_mid=dm[lv], block=name,
                              depth=decoder_depth) for name in decoder_candidates})
            for lv in LEVELS])
        self.head = ChoiceBlock(group="head", candidates={
            name: partial(PredictionHead, C_in=dc[0] + in_channels, block=name) for name in head_candidates})

    def forward(self, x: Tensor, plan: Plan) -> Tensor:
        """(B, 6, H, W) -> (B, 1, H, W) alpha in [0, 1] for the architecture ``plan`` describes."""
        s2 = self.stem00(x)  # (B, C/2, H/2, W/2)
        s4 = self.stem05(s2)  # (B, C, H/4, W/4)
        s8 = self.stem10(s4)  # (B, C, H/8, W/8)
        outs = self.stack(s4, s8, plan)
        x8, x16, x32 = (outs[k] for k in self.taps)  # 1/8, 1/16, 1/32
        y = torch.cat([self.ppm(x32), x32], dim=1)
        y = self.decoder[3](torch.cat([_up(y, x16), x16], dim=1), plan=plan)  # 1/16
        y = self.decoder[2](torch.cat([_up(y, x8), x8], dim=1), plan=plan)  # 1/8
        y = self.decoder[1](torch.cat([_up(y, s4), s4], dim=1), plan=plan)  # 1/4
        y = self.decoder[0](torch.cat([_up(y, s2), s2], dim=1), plan=plan)  # 1/2
        y = self.head(torch.cat([_up(y, x), x], dim=1), plan=plan)  # (B, 1, H, W)
        # clamp only at inference: during training the losses pull the raw output into [0, 1] and a
        # clamp would cut the gradient of every pixel outside it
        return y if self.training else y.clamp(0.0, 1.0)


def _scaled(widths: Sequence[int], ratio: float, minimum: int = 8) -> Tuple[int, ...]:
    return tuple(max(minimum, int(round(w * ratio / 8)) * 8) for w in widths)


class MattingSpace(SearchSpace):
    """The CheapMatting macro (see the module docstring).

    Args:
        name: registered name.
        defaults: SearchConfig defaults of this space.
        decoder_channels / decoder_mid: target decoder widths (released: 32/64/128/128, 24/32/64/64).
        stem_mid, ppm_channels, ppm_out, decoder_depth: target macro knobs (released: 32, 128, 256, 2).
    """

    task = "matting"

    def __init__(self, *, name: str, defaults: Mapping[str, Any],
                 decoder_channels: Sequence[int] = (32, 64, 128, 128),
                 decoder_mid: Sequence[int] = (24, 32, 64, 64), stem_mid: int = 32,
                 ppm_channels: int = 128, ppm_out: int = 256, decoder_depth: int = 2) -> None:
        self.name = name
        self.defaults = dict(defaults)
        self.decoder_channels, self.decoder_mid = tuple(decoder_channels), tuple(decoder_mid)
        self.stem_mid, self.ppm_channels, self.ppm_out = stem_mid, ppm_channels, ppm_out
        self.decoder_depth = decoder_depth

    # ------------------------------------------------------------------ candidates

    def block_names(self) -> Dict[str, Tuple[str, ...]]:
        names = {f"decoder{lv}": tuple(DECODER_BLOCKS.names()) for lv in LEVELS}
        names["head"] = tuple(HEAD_BLOCKS.names())
        return names

    def _macro(self, *, ratio: float) -> Dict[str, Any]:
        return {"decoder_channels": _scaled(self.decoder_channels, ratio),
                "decoder_mid": _scaled(self.decoder_mid, ratio),
                "stem_mid": _scaled([self.stem_mid], ratio)[0],
                "ppm_channels": _scaled([self.ppm_channels], ratio)[0],
                "ppm_out": _scaled([self.ppm_out], ratio)[0]}

    def build_supernet(self, cfg: SearchConfig, *, ops: Sequence[str]) -> MattingSuperNet:
        names = self.block_names()
        return MattingSuperNet(topology=self.topology(cfg), ops=ops, C=cfg.C, layers=cfg.layers,
                               decoder_depth=self.decoder_depth, decoder_candidates=names["decoder0"],
                               head_candidates=names["head"], **self._macro(ratio=cfg.C / cfg.target_C))

    def target_knobs(self, genotype: Genotype, cfg: SearchConfig) -> Dict[str, Any]:
        """Keyword arguments of :class:`CheapMatting` for the target network of ``genotype``."""
        choices = dict(genotype.choices)
        return {"C": cfg.target_C, "layers": cfg.target_layers, "stem_mid": self.stem_mid,
                "ppm_channels": self.ppm_channels, "ppm_out": self.ppm_out,
                "ppm_extra_convs": 0, "decoder_channels": self.decoder_channels,
                "decoder_mid": self.decoder_mid, "decoder_depth": self.decoder_depth,
                "decoder_blocks": tuple(choices.get(f"decoder{lv}", "bottleneck") for lv in LEVELS),
                "head_block": choices.get("head", "conv3x3")}

    def build_target(self, genotype: Genotype, cfg: SearchConfig) -> nn.Module:
        return CheapMatting(genotype=genotype, **self.target_knobs(genotype, cfg))

    def macro_meta(self, cfg: SearchConfig) -> Dict[str, Any]:
        return {"C": cfg.target_C, "layers": cfg.target_layers, "stem_mid": self.stem_mid,
                "ppm_channels": self.ppm_channels, "ppm_out": self.ppm_out,
                "decoder_channels": list(self.decoder_channels), "decoder_mid": list(self.decoder_mid),
                "decoder_depth": self.decoder_depth}

    def input_shape(self, cfg: SearchConfig) -> Tuple[int, ...]:
        return (1, 6, cfg.input_size, cfg.input_size)

    @staticmethod
    def _sizes(n: int) -> List[int]:
        sizes = [n]
        for _ in range(5):
            sizes.append((sizes[-1] + 1) // 2)
        return sizes  # full, 1/2, 1/4, 1/8, 1/16, 1/32

    def cell_geometry(self, cfg: SearchConfig) -> List[CellGeometry]:
        # the cells start at 1/8 of the input
        return stack_geometry(C=cfg.target_C, layers=cfg.target_layers, size=self._sizes(cfg.input_size)[3])

    def block_candidates(self, cfg: SearchConfig):
        sizes = self._sizes(cfg.input_size)
        C = cfg.target_C
        c8, c16, c32 = 4 * C, 8 * C, 16 * C
        dc, dm = self.decoder_channels, self.decoder_mid
        c_in = {3: self.ppm_out + c32 + c16, 2: dc[3] + c8, 1: dc[2] + C, 0: dc[1] + C // 2}
        size = {3: sizes[4], 2: sizes[3], 1: sizes[2], 0: sizes[1]}
        out = {}
        for lv in LEVELS:
            out[f"decoder{lv}"] = {
                name: (partial(DecoderLevel, C_in=c_in[lv], C_out=dc[lv], C_mid=dm[lv], block=name,
                               depth=self.decoder_depth), ((1, c_in[lv], size[lv], size[lv]),))
                for name in DECODER_BLOCKS.names()}
        out["head"] = {name: (partial(PredictionHead, C_in=dc[0] + 6, block=name),
                              ((1, dc[0] + 6, sizes[0], sizes[0]),))
                       for name in HEAD_BLOCKS.names()}
        return out

    # ------------------------------------------------------------------ data and loss

    def datasets(self, cfg: SearchConfig):
        """(weight split, arch split). Synthetic: two disjoint generated splits. A training-set folder
        (Composition-1K / Distinctions-646 style, composed on ``--backgrounds``): its foregrounds
        split by index parity, even ones for the weights and odd ones for the architecture."""
        if cfg.data != "synthetic":
            from torch.utils.data import Subset

            from atldas.data.datasets import open_dataset

            full = open_dataset(cfg.data, split="train", crop=cfg.crop, seed=cfg.seed,
                                backgrounds=cfg.backgrounds)
            n = len(full)
            if n < 2 * cfg.batch_size:
                from atldas.errors import DataError

                raise DataError(f"{cfg.data}: {n} training samples; the search needs at least "
                                f"{2 * cfg.batch_size} (two disjoint splits of one batch each)")
            return Subset(full, range(0, n, 2)), Subset(full, range(1, n, 2))
        from atldas.data.synthetic import SyntheticMatting

        # fresh samples every epoch (search.py takes epoch e's slice of each split)
        n = cfg.steps_per_epoch * cfg.batch_size * cfg.epochs
        n_arch = max(1, cfg.arch_steps_per_epoch) * cfg.batch_size * cfg.epochs
        return (SyntheticMatting(size=cfg.crop, length=n, seed=cfg.seed, split="train",
                                 backgrounds=cfg.backgrounds),
                SyntheticMatting(size=cfg.crop, length=n_arch, seed=cfg.seed, split="arch",
                                 backgrounds=cfg.backgrounds))

    def model_input(self, batch: Dict[str, Tensor]) -> Tensor:
        return batch_input(batch)  # (B, 6, H, W)

    _loss = MattingLoss(l1=1.0, lap=1.0, comp=0.5)

    def loss(self, pred: Tensor, batch: Dict[str, Tensor]) -> Tensor:
        return self._loss(pred, batch)["loss"]


MATTING = MattingSpace(name="matting", defaults={
    "epochs": 10, "steps_per_epoch": 50, "arch_steps_per_epoch": 50, "batch_size": 4, "crop": 128,
    "C": 16, "layers": 8, "target_C": 48, "target_layers": 14, "input_size": 1024, "warmup_epochs": 2,
    "target_macs": 25e9})

TINY = MattingSpace(name="tiny", defaults={
    "epochs": 3, "steps_per_epoch": 3, "arch_steps_per_epoch": 3, "batch_size": 2, "crop": 64,
    "C": 8, "layers": 3, "target_C": 8, "target_layers": 3, "input_size": 64, "warmup_epochs": 1,
    "target_macs": None}, decoder_channels=(8, 8, 16, 16), decoder_mid=(8, 8, 8, 8), stem_mid=8,
    ppm_channels=8, ppm_out=16, decoder_depth=1)
