"""A planted-architecture ground truth: small all-normal-cell networks and a random teacher.

The task: a *teacher* :class:`PlantedNet` is built from a known genotype with deterministic random
weights; smooth noise images (:func:`atldas.data.noise.smooth_noise`) go in and its outputs are the
regression targets (MSE). Every genotype of the space can then be trained standalone as a *student*
``PlantedNet`` in seconds, so the truth is known: the teacher's own genotype can express the target
exactly and should train to (near) the lowest loss, and a search that carries task signal should
land near it.

Network (stride 1 everywhere, one resolution, normal cells only)::

    x (B, in_channels, H, W)
    stem: conv kxk (no bias) + BatchNorm                    -> s (B, C, H, W)
    cell 1 (s0 = s1 = s)                                    -> (B, len(concat) * C, H, W)
    cell i > 1 (DARTS chain: s0, s1 = s1, cell(s0, s1))     -> (B, len(concat) * C, H, W)
    head: 1x1 conv with bias                                -> y (B, out_channels, H, W)

The stem is 1x1 by default, so all spatial mixing (the receptive field) comes from the cell's ops.

Teacher weights (:func:`teacher`): with default PyTorch init and BatchNorm at its initial running
statistics (mean 0, var 1) an eval-mode BatchNorm is the identity, and the default conv init
(uniform, variance ``1 / (3 fan_in)``) shrinks the signal about 3x per conv: on unit-variance
noise a default-initialised ``sep_conv_3x3`` in eval mode outputs 0.3% of its input's variance, a
``dil_conv_3x3`` 3%, an ``avg_pool_3x3`` 52% and a skip 100%, so the target would only show the
parameter-free paths. So the teacher is *calibrated*: every BatchNorm gets a random affine
(scale ``U(gamma_lo, gamma_hi)``, shift ``N(0, beta_std)``) and running statistics measured on a
batch of noise images, i.e. in eval mode every op's output has per-channel std = its random scale
and mean = its random shift (the shift moves the following ReLU's threshold, so the ReLUs are not
all half-open on symmetric inputs); the head is rescaled so that each output channel has zero mean
and unit variance on that batch. Every edge then contributes a comparable share of its node, and
a student's MSE reads directly as the fraction of the target's variance it misses (a constant
predictor scores ~1).

A teacher narrower than its students (``experiments/planted_explore.py`` uses 2 channels per node
for the teacher, 16 for the students) is what makes the planted genotype win within a few seconds
of training: a student of its genotype then has room to spare and finds the exact fit in a few
hundred steps, while at equal widths every student is still far from converged and the ranking
mostly follows size (MACs).

Equivalences to keep in mind when comparing a found genotype with the planted one: in the first
cell both inputs are 1x1 projections of the same stem output, so with students wider than the
teacher the choice of input 0 or 1 on an edge is (nearly) immaterial (exchanging them everywhere
scores like the teacher); and since every node is concatenated into a linear head, a
``skip_connect`` from one node into another only copies a feature the head already sees, so such
an edge carries no topology.

    >>> g = random_genotype(nodes=4, seed=0)
    >>> t = teacher(g, C=2, cells=1, in_channels=3, out_channels=4, seed=0, size=12)
    >>> x = torch.randn(5, 3, 12, 12)
    >>> t(x).shape                         # x: (B, 3, 12, 12) -> y: (B, 4, 12, 12), no grad needed
    torch.Size([5, 4, 12, 12])
    >>> student = PlantedNet(genotype=g, C=16, cells=1, in_channels=3, out_channels=4)
    >>> student.macs(H=12, W=12)           # MACs of one image (FlopCounterMode total / 2)
    840960
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from atldas.data.noise import smooth_noise
from atldas.errors import ConfigError
from atldas.genotype import CellSpec, Genotype
from atldas.models.cells import Cell
from atldas.ops import SEARCH_PRIMITIVES
from atldas.topology import CellTopology
from atldas.utils.counting import count_macs, count_params

__all__ = ["PlantedNet", "calibrate_batchnorm", "planted_genotype", "planted_macs", "random_genotype", "teacher"]


class PlantedNet(nn.Module):
    """Stem, ``cells`` standalone normal cells of one genotype, 1x1 head; stride 1 throughout.

    Args:
        genotype: the architecture; only its ``normal`` cell is used (the network never reduces).
        C: channels of the stem and of every cell node.
        cells: number of cells (>= 1), chained DARTS-style.
        in_channels: input image channels.
        out_channels: output channels (the regression targets).
        affine: BatchNorm affine in the stem and the cells.
        stem_kernel: kernel of the stem conv (odd; 1 keeps all spatial mixing in the cells).
    """

    def __init__(self, *, genotype: Genotype, C: int, cells: int, in_channels: int,
                 out_channels: int, affine: bool = True, stem_kernel: int = 1) -> None:
        super().__init__()
        if cells < 1:
            raise ConfigError(f"PlantedNet needs at least one cell, got cells={cells}")
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ConfigError(f"PlantedNet stem_kernel must be odd, got {stem_kernel}")
        self.genotype = genotype
        self.C = C
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C, stem_kernel, padding=stem_kernel // 2, bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )
        self.cells = nn.ModuleList()
        C_prev_prev, C_prev = C, C
        for _ in range(cells):
            cell = Cell(spec=genotype.normal, C_prev_prev=C_prev_prev, C_prev=C_prev, C=C,
                        reduction=False, reduction_prev=False, affine=affine)
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.C_out
        self.head = nn.Conv2d(C_prev, out_channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H, W)."""
        s = self.stem(x)  # (B, C, H, W)
        s0 = s1 = s
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)  # s1: (B, len(concat) * C, H, W)
        return self.head(s1)  # (B, out_channels, H, W)

    def macs(self, *, H: int, W: int) -> int:
        """MACs for one ``H x W`` image: FlopCounterMode total / 2 (convolutions only), counted
        on a meta-device copy, so it takes no memory and about a millisecond per op."""
        return planted_macs(self.genotype, C=self.C, cells=len(self.cells), in_channels=self.in_channels,
                            out_channels=self.out_channels, stem_kernel=self.stem[0].kernel_size[0],
                            H=H, W=W)

    def params(self) -> int:
        """Number of parameters."""
        return count_params(self)


def planted_macs(genotype: Genotype, *, C: int, cells: int, in_channels: int, out_channels: int,
                 H: int, W: int, stem_kernel: int = 1) -> int:
    """MACs of a :class:`PlantedNet` on one ``H x W`` image (FlopCounterMode total / 2, meta device)."""
    with torch.device("meta"):
        net = PlantedNet(genotype=genotype, C=C, cells=cells, in_channels=in_channels,
                         out_channels=out_channels, stem_kernel=stem_kernel)
        x = torch.empty(1, in_channels, H, W)
    return count_macs(net, x)


# ------------------------------------------------------------------------------------ genotypes


def planted_genotype(nodes: Sequence[Sequence[tuple[str, int]]]) -> Genotype:
    """A genotype whose normal cell has these nodes and concatenates every intermediate node.

    The reduction cell (unused by :class:`PlantedNet`) is a copy of the normal cell, so the value is
    a complete, valid :class:`Genotype`.
    """
    spec = CellSpec(nodes=tuple(tuple(n) for n in nodes), concat=tuple(range(2, len(nodes) + 2)))
    return Genotype(normal=spec, reduce=spec)


def random_genotype(*, nodes: int = 4, seed: int | None = None,
                    rng: random.Random | None = None,
                    ops: Sequence[str] = SEARCH_PRIMITIVES) -> Genotype:
    """A genotype drawn uniformly: per node an input set of in-degree 2, per edge an op.

    Input sets are those of ``CellTopology(nodes=nodes, k_min=2, k_max=2)`` (node j picks 2 of its
    j + 2 predecessors); ops are uniform over ``ops`` (default: the DARTS ops without ``none``);
    concat is every intermediate node. Give ``seed`` or an ``rng`` to draw from.
    """
    if rng is None:
        rng = random.Random(seed)
    topo = CellTopology(nodes=nodes, k_min=2, k_max=2)
    cell = []
    for j in range(nodes):
        inputs = rng.choice(topo.input_sets[j])
        cell.append(tuple((rng.choice(list(ops)), i) for i in inputs))
    return planted_genotype(cell)


# ------------------------------------------------------------------------------------ teacher


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, x: Tensor) -> None:
    """Set every BatchNorm's running statistics to those of one forward pass on ``x`` (exactly).

    ``momentum=None`` makes the running statistics a cumulative average, which after one reset and
    one batch equals that batch's statistics (the variance unbiased, as PyTorch stores it). Leaves
    the network in eval mode with the BatchNorm momenta restored.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    net(x)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    net.eval()


@torch.no_grad()
def teacher(genotype: Genotype, *, C: int, cells: int, in_channels: int, out_channels: int,
            seed: int, size: int = 16, stem_kernel: int = 1, gamma: tuple[float, float] = (0.5, 1.5),
            beta_std: float = 0.5, calib_images: int = 256,
            noise_sigmas: Sequence[float] = (0.7, 2.5)) -> PlantedNet:
    """A :class:`PlantedNet` with deterministic random weights, calibrated, in eval mode.

    Weights: convs ``kaiming_normal_`` (fan-in, ReLU gain); every BatchNorm weight
    ``U(gamma[0], gamma[1])`` and bias ``N(0, beta_std)``; then :func:`calibrate_batchnorm` on
    ``calib_images`` smooth noise images of ``size`` px (their seed is derived from ``seed`` and is
    not any split's seed), so every BatchNorm output has per-channel std = weight and mean = bias;
    finally the head is rescaled so every output channel has zero mean, unit variance on those
    images (see the module docstring for why). The global RNG is not touched. All parameters
    have ``requires_grad=False``.

    Args:
        genotype: the planted architecture.
        C, cells, in_channels, out_channels, stem_kernel: as :class:`PlantedNet` (affine BatchNorm).
        seed: teacher seed; the same arguments give the same weights.
        size: image size of the calibration images (the task's size).
        gamma: range of the BatchNorm scales.
        beta_std: std of the BatchNorm shifts.
        calib_images: number of calibration images.
        noise_sigmas: scales of the calibration noise (the task's input distribution).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PlantedNet(genotype=genotype, C=C, cells=cells, in_channels=in_channels,
                         out_channels=out_channels, affine=True, stem_kernel=stem_kernel)
        g = torch.Generator().manual_seed(seed)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(gamma[0], gamma[1], generator=g)
                m.bias.normal_(0.0, beta_std, generator=g)
    x = smooth_noise(calib_images, channels=in_channels, size=size, seed=1_000_003 * (seed + 1) + 7,
                     sigmas=noise_sigmas)
    calibrate_batchnorm(net, x)
    y = net(x)  # (N, out_channels, size, size)
    mean = y.mean(dim=(0, 2, 3))
    std = y.std(dim=(0, 2, 3)).clamp_min(1e-8)
    net.head.weight.div_(std[:, None, None, None])
    net.head.bias.sub_(mean).div_(std)
    for p in net.parameters():
        p.requires_grad_(False)
    return net
