"""Operation registry: the DARTS primitives, their building blocks, and their costs.

Every candidate op of a cell edge is registered in :data:`OPS` (:func:`register_op`) as an
:class:`OpSpec` that builds the module; the DARTS ops also carry a closed-form cost, and any other
op is counted on the meta device, so registering a new op needs no cost formula:

    >>> from atldas.ops import build_op, op_cost
    >>> op = build_op("sep_conv_3x3", C_in=48, C_out=48, stride=1, affine=True)
    >>> op_cost("sep_conv_3x3", C_in=48, C_out=48, H=32, W=32, stride=1, affine=True)
    OpCost(macs=..., params=...)

Cost conventions (the ones the whole library uses):

- ``macs``: multiply-accumulates of convolutions and linear layers only, exactly
  ``torch.utils.flop_counter.FlopCounterMode`` total / 2. Pooling, norms, activations, additions and
  interpolation count 0.
- ``params``: ``sum(p.numel() for p in module.parameters())``; BatchNorm running statistics are
  buffers and do not count.

Sizes at stride 2: every op gives ``ceil(H / 2) x ceil(W / 2)``. The convolutions and pools do so by
their padding; :class:`FactorizedReduce` pads its shifted branch with one zero row/column at the
bottom/right when H/W is odd (identical to DARTS for even sizes, where DARTS itself fails on odd
sizes).

Module and attribute names follow DARTS (``op.1``, ``conv_1``, ``bn``...), so state dicts of the
released DARTS-family networks (e.g. CheapMatting) load strictly.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from atldas.errors import ConfigError
from atldas.registry import Registry
from atldas.utils.counting import count_macs_by_op, count_params
from atldas.utils.dilated_conv import DilatedDepthwiseConv2d

__all__ = [
    "PRIMITIVES",
    "SEARCH_PRIMITIVES",
    "OPS",
    "OpSpec",
    "OpCost",
    "register_op",
    "ReLUConvBN",
    "FactorizedReduce",
    "SepConv",
    "DilConv",
    "Identity",
    "Zero",
    "build_op",
    "op_cost",
    "op_macs",
    "op_params",
    "op_output_size",
    "conv_output_size",
    "relu_conv_bn_cost",
    "factorized_reduce_cost",
]

#: The DARTS op set, in the DARTS order (``none`` is only for the DARTS baseline).
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

#: The op set of a topology-learning search: the topology decides whether an edge exists, so no ``none``.
SEARCH_PRIMITIVES: tuple[str, ...] = tuple(p for p in PRIMITIVES if p != "none")


class OpCost(NamedTuple):
    """Closed-form cost of one op: multiply-accumulates and parameter count."""

    macs: int
    params: int


# --------------------------------------------------------------------------------------------
# size arithmetic


def conv_output_size(size: int, *, kernel_size: int, stride: int = 1, padding: int = 0,
                     dilation: int = 1) -> int:
    """Output length of a convolution or pooling window along one axis (floor mode)."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _check_stride(stride: int) -> None:
    if stride not in (1, 2):
        raise ConfigError(f"op stride must be 1 or 2, got {stride}")


def _half(size: int, stride: int) -> int:
    """Spatial size after a DARTS op of this stride: ``size`` at 1, ``ceil(size / 2)`` at 2."""
    return size if stride == 1 else (size + 1) // 2


# --------------------------------------------------------------------------------------------
# building blocks


class ReLUConvBN(nn.Module):
    """ReLU -> Conv (no bias) -> BatchNorm; DARTS names ``op.1`` (conv) and ``op.2`` (bn).

    Args:
        C_in: input channels.
        C_out: output channels.
        kernel_size: convolution kernel.
        stride: convolution stride.
        padding: convolution padding.
        affine: whether BatchNorm has a learnable scale and shift.
    """

    def __init__(self, *, C_in: int, C_out: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two interleaved 1x1 stride-2 convs (DARTS ``FactorizedReduce``).

    ``conv_1`` sees pixels (0, 0), (0, 2), ...; ``conv_2`` sees (1, 1), (1, 3), ... Their outputs
    are concatenated and batch-normalised. On an odd size the shifted branch is padded with one
    zero row/column at the bottom/right, so both branches (and the op) give ``ceil(H / 2)``.

    Args:
        C_in: input channels.
        C_out: output channels (even).
        affine: whether BatchNorm has a learnable scale and shift.
    """

    def __init__(self, *, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ConfigError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        H, W = x.shape[-2:]
        shifted = x[:, :, 1:, 1:]  # (B, C, H-1, W-1)
        if H % 2 or W % 2:
            shifted = F.pad(shifted, (0, W % 2, 0, H % 2))  # (B, C, H-1+H%2, W-1+W%2)
        # (B, C_out/2, ceil(H/2), ceil(W/2)) twice -> (B, C_out, ceil(H/2), ceil(W/2))
        out = torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1)
        return self.bn(out)


class SepConv(nn.Module):
    """Two stacked separable convs (DARTS ``SepConv``): ``op.1``-``op.3`` and ``op.5``-``op.7``.

    ReLU -> depthwise kxk (stride) -> pointwise C_in->C_in -> BN -> ReLU -> depthwise kxk ->
    pointwise C_in->C_out -> BN.

    Args:
        C_in: input channels.
        C_out: output channels.
        kernel_size: depthwise kernel (3 or 5 in DARTS).
        stride: stride of the first depthwise conv.
        padding: padding of both depthwise convs.
        affine: whether the BatchNorms have a learnable scale and shift.
    """

    def __init__(self, *, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> dilated depthwise kxk -> pointwise -> BN (DARTS ``DilConv``): names ``op.1``/``op.2``/``op.3``.

    The depthwise conv is a :class:`~atldas.utils.dilated_conv.DilatedDepthwiseConv2d`: an ``nn.Conv2d``
    whose CPU backward runs undilated on the image's phases (about 2x faster where oneDNN's dilated
    backward is slow; the same forward).

    Args:
        C_in: input channels.
        C_out: output channels.
        kernel_size: depthwise kernel.
        stride: depthwise stride.
        padding: depthwise padding.
        dilation: depthwise dilation.
        affine: whether BatchNorm has a learnable scale and shift.
    """

    def __init__(self, *, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            DilatedDepthwiseConv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                                   groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Module):
    """The identity (``skip_connect`` at stride 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """Zeros of the output shape (DARTS ``none``); stride 2 gives ``ceil(H / 2) x ceil(W / 2)``.

    Args:
        stride: 1 or 2.
    """

    def __init__(self, *, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)  # (B, C, ceil(H/s), ceil(W/s))


# --------------------------------------------------------------------------------------------
# closed-form costs of the building blocks


def relu_conv_bn_cost(*, C_in: int, C_out: int, H: int, W: int, kernel_size: int = 1,
                      stride: int = 1, padding: int = 0, affine: bool = True) -> OpCost:
    """Cost of :class:`ReLUConvBN` on an ``H x W`` input."""
    Ho = conv_output_size(H, kernel_size=kernel_size, stride=stride, padding=padding)
    Wo = conv_output_size(W, kernel_size=kernel_size, stride=stride, padding=padding)
    k2 = kernel_size * kernel_size
    return OpCost(macs=C_in * C_out * k2 * Ho * Wo,
                  params=C_in * C_out * k2 + (2 * C_out if affine else 0))


def factorized_reduce_cost(*, C_in: int, C_out: int, H: int, W: int, affine: bool = True) -> OpCost:
    """Cost of :class:`FactorizedReduce` on an ``H x W`` input.

    Two C_in -> C_out/2 1x1 convs, each at ``ceil(H/2) x ceil(W/2)``.
    """
    Ho, Wo = _half(H, 2), _half(W, 2)
    half = C_out // 2
    return OpCost(macs=2 * C_in * half * Ho * Wo,
                  params=2 * C_in * half + (2 * C_out if affine else 0))


def _sep_conv_cost(k: int) -> Callable[..., OpCost]:
    def cost(*, C_in: int, C_out: int, H: int, W: int, stride: int, affine: bool) -> OpCost:
        HW = _half(H, stride) * _half(W, stride)
        macs = (C_in * k * k + C_in * C_in + C_in * k * k + C_in * C_out) * HW
        params = 2 * C_in * k * k + C_in * C_in + C_in * C_out + (2 * (C_in + C_out) if affine else 0)
        return OpCost(macs=macs, params=params)

    return cost


def _dil_conv_cost(k: int) -> Callable[..., OpCost]:
    def cost(*, C_in: int, C_out: int, H: int, W: int, stride: int, affine: bool) -> OpCost:
        HW = _half(H, stride) * _half(W, stride)
        return OpCost(macs=(C_in * k * k + C_in * C_out) * HW,
                      params=C_in * k * k + C_in * C_out + (2 * C_out if affine else 0))

    return cost


def _free_cost(*, C_in: int, C_out: int, H: int, W: int, stride: int, affine: bool) -> OpCost:
    return OpCost(macs=0, params=0)


def _skip_cost(*, C_in: int, C_out: int, H: int, W: int, stride: int, affine: bool) -> OpCost:
    if stride == 1:
        return OpCost(macs=0, params=0)
    return factorized_reduce_cost(C_in=C_in, C_out=C_out, H=H, W=W, affine=affine)


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class OpSpec:
    """A registered cell op: how to build it and, optionally, its closed-form cost.

    Attributes:
        name: registry name (``sep_conv_3x3``...).
        build: ``build(C_in=, C_out=, stride=, affine=) -> nn.Module``; on ``(B, C_in, H, W)`` the module
            must give ``(B, C_out, H', W')`` with H' = H at stride 1 and ``ceil(H / 2)`` at stride 2.
        cost: ``cost(C_in=, C_out=, H=, W=, stride=, affine=) -> OpCost`` (H, W: input size), or None:
            the cost is then counted (FlopCounterMode on the meta device, params by ``numel``).
        maps_channels: whether the op can have ``C_out != C_in`` (convs, FactorizedReduce).
    """

    name: str
    build: Callable[..., nn.Module]
    cost: Optional[Callable[..., OpCost]] = None
    maps_channels: bool = False


#: Registry of cell ops: name -> :class:`OpSpec`.
OPS: Registry[OpSpec] = Registry("op")


def register_op(name: str, build: Callable[..., nn.Module], *, cost: Optional[Callable[..., OpCost]] = None,
                maps_channels: bool = False) -> OpSpec:
    """Register a cell op, usable in every search space's ``ops`` and in genotypes.

    Args:
        name: a new op name (a duplicate raises ValueError).
        build: ``build(*, C_in, C_out, stride, affine) -> nn.Module`` (see :class:`OpSpec`).
        cost: an optional closed form returning :class:`OpCost`; without one the cost tables count the op
            on the meta device, so a new op needs no hand-written formula. A formula is checked against
            the counter at its first geometry of each stride (a ConfigError when they differ). Either
            way the op must run on the meta device: its output shape is checked there, and the search
            space counts whole networks there.
        maps_channels: whether ``C_out != C_in`` is allowed.

    Example:
        >>> spec = register_op("conv_3x3", lambda *, C_in, C_out, stride, affine: nn.Sequential(
        ...     nn.ReLU(), nn.Conv2d(C_in, C_out, 3, stride, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine)),
        ...     maps_channels=True)
        >>> op_cost("conv_3x3", C_in=16, C_out=32, H=8, W=8, stride=1, affine=False).macs  # counted, no formula
        294912
    """
    if not callable(build):
        raise TypeError(f"register_op({name!r}): build must be callable, got {type(build).__name__}")
    try:
        inspect.signature(build).bind(C_in=1, C_out=1, stride=1, affine=False)
    except TypeError:
        raise TypeError(f"register_op({name!r}): build must take the keywords C_in, C_out, stride and affine "
                        f"(its signature is {inspect.signature(build)})") from None
    except ValueError:  # a builtin without a signature: checked when first built
        pass
    if cost is not None and not callable(cost):
        raise TypeError(f"register_op({name!r}): cost must be callable or None, got {type(cost).__name__}")
    spec = OpSpec(name=name, build=build, cost=cost, maps_channels=maps_channels)
    OPS.add(name, spec)
    return spec


def _same_channels(name: str, C_in: int, C_out: int) -> None:
    if C_in != C_out:
        raise ConfigError(f"op {name!r} keeps the channel count; got C_in={C_in}, C_out={C_out}")


def _build_skip(*, C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    if stride == 1:
        _same_channels("skip_connect", C_in, C_out)
        return Identity()
    return FactorizedReduce(C_in=C_in, C_out=C_out, affine=affine)


register_op("none", lambda *, C_in, C_out, stride, affine: Zero(stride=stride), cost=_free_cost)
register_op("max_pool_3x3", lambda *, C_in, C_out, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
            cost=_free_cost)
register_op("avg_pool_3x3",
            lambda *, C_in, C_out, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
            cost=_free_cost)
register_op("skip_connect", _build_skip, cost=_skip_cost, maps_channels=True)
for _k in (3, 5):
    register_op(f"sep_conv_{_k}x{_k}",
                (lambda k: lambda *, C_in, C_out, stride, affine: SepConv(
                    C_in=C_in, C_out=C_out, kernel_size=k, stride=stride, padding=k // 2, affine=affine))(_k),
                cost=_sep_conv_cost(_k), maps_channels=True)
    register_op(f"dil_conv_{_k}x{_k}",
                (lambda k: lambda *, C_in, C_out, stride, affine: DilConv(
                    C_in=C_in, C_out=C_out, kernel_size=k, stride=stride, padding=k - 1, dilation=2,
                    affine=affine))(_k),
                cost=_dil_conv_cost(_k), maps_channels=True)
del _k

#: The ops registered here (their closed forms are tested against the counter, not checked at run time).
_BUILTIN = frozenset(OPS.get(n) for n in OPS.names())


def _spec(name: str, C_in: int, C_out: int | None, stride: int) -> tuple[OpSpec, int]:
    spec = OPS.get(name)
    _check_stride(stride)
    C_out = C_in if C_out is None else C_out
    if not spec.maps_channels or (name == "skip_connect" and stride == 1):
        _same_channels(name, C_in, C_out)
    return spec, C_out


def build_op(name: str, *, C_in: int, C_out: int | None = None, stride: int = 1,
             affine: bool = True) -> nn.Module:
    """Build the registered op ``name``.

    Args:
        name: a name in :data:`OPS` (unknown names raise ConfigError listing the known ones).
        C_in: input channels.
        C_out: output channels; defaults to ``C_in``. Pools, ``none`` and the identity need ``C_out == C_in``.
        stride: 1, or 2 in a reduction cell.
        affine: BatchNorm affine (True for a standalone network, False in a DARTS search).

    Returns:
        The module; on ``(B, C_in, H, W)`` it gives ``(B, C_out, H', W')`` with H' = H at stride 1,
        ``ceil(H / 2)`` at stride 2.
    """
    spec, C_out = _spec(name, C_in, C_out, stride)
    return spec.build(C_in=C_in, C_out=C_out, stride=stride, affine=affine)


@functools.lru_cache(maxsize=4096)
def _counted_cost(spec: OpSpec, C_in: int, C_out: int, H: int, W: int, stride: int, affine: bool) -> OpCost:
    """The counted cost of one geometry, cached per spec (an op removed and registered again under its name
    is counted afresh); the output's shape is checked on the way (:class:`OpSpec`'s contract)."""
    where = f"op {spec.name!r} (C_in={C_in}, C_out={C_out}, stride={stride}, input {H}x{W})"
    out: dict = {}
    try:
        with torch.device("meta"):
            op = spec.build(C_in=C_in, C_out=C_out, stride=stride, affine=affine)
            x = torch.zeros(1, C_in, H, W)
        macs, _ = count_macs_by_op(op.eval(), call=lambda: out.setdefault("y", op(x)))
    except (RuntimeError, TypeError, ValueError, NotImplementedError, AttributeError) as exc:
        raise ConfigError(f"{where} failed on the meta device, where atldas counts every op's cost and checks "
                          f"its shape ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    want = (1, C_out, *op_output_size(H=H, W=W, stride=stride))
    got = tuple(getattr(out.get("y"), "shape", ()))
    if got != want:
        raise ConfigError(f"{where} gave {got or type(out.get('y')).__name__}, expected {want}: an op gives C_out "
                          "channels at the input's size (stride 1) or ceil(size / 2) (stride 2)")
    return OpCost(macs=macs, params=count_params(op))


#: Closed forms checked against the counter, per (spec, stride): a custom op's first use at each stride.
_CHECKED: set = set()


def _checked_closed_form(spec: OpSpec, c: object, C_in: int, C_out: int, H: int, W: int, stride: int,
                         affine: bool) -> OpCost:
    """A custom op's closed-form cost ``c``, refused when it is not an :class:`OpCost` of finite amounts
    >= 0, or (at the first geometry of each stride) when it differs from the counted cost: a wrong
    formula broke budgets that repair then reported as met."""
    where = f"op {spec.name!r}: its cost formula"
    if not isinstance(c, OpCost) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                            and math.isfinite(v) and v >= 0 for v in c):
        raise ConfigError(f"{where} returned {c!r}; it must return OpCost(macs=..., params=...) of finite "
                          "amounts >= 0")
    if spec in _BUILTIN or (spec, stride) in _CHECKED:  # the built-in forms are tested against the counter
        return c
    counted = _counted_cost(spec, C_in, C_out, H, W, stride, affine)
    if (c.macs, c.params) != (counted.macs, counted.params):
        raise ConfigError(f"{where} gives macs={c.macs}, params={c.params} at C_in={C_in}, C_out={C_out}, "
                          f"input {H}x{W}, stride {stride}, but counting the op gives macs={counted.macs}, "
                          f"params={counted.params}; fix the formula, or register the op without cost= (it is "
                          "counted then)")
    _CHECKED.add((spec, stride))
    return c


def op_cost(name: str, *, C_in: int, C_out: int | None = None, H: int, W: int, stride: int = 1,
            affine: bool = True, counted: bool = False) -> OpCost:
    """MACs and parameter count of op ``name`` on a ``(1, C_in, H, W)`` input.

    The op's closed form when it has one (equal to the counter, tests check it), else (or with
    ``counted=True``) FlopCounterMode total / 2 and ``numel`` on the meta device, cached per geometry.
    """
    spec, C_out = _spec(name, C_in, C_out, stride)
    if spec.cost is None or counted:
        return _counted_cost(spec, C_in, C_out, H, W, stride, affine)
    c = spec.cost(C_in=C_in, C_out=C_out, H=H, W=W, stride=stride, affine=affine)
    return _checked_closed_form(spec, c, C_in, C_out, H, W, stride, affine)


def op_macs(name: str, *, C_in: int, C_out: int | None = None, H: int, W: int, stride: int = 1,
            affine: bool = True) -> int:
    """MACs of op ``name`` (see :func:`op_cost`)."""
    return op_cost(name, C_in=C_in, C_out=C_out, H=H, W=W, stride=stride, affine=affine).macs


def op_params(name: str, *, C_in: int, C_out: int | None = None, stride: int = 1,
              affine: bool = True) -> int:
    """Parameter count of op ``name`` (independent of the input size)."""
    return op_cost(name, C_in=C_in, C_out=C_out, H=2, W=2, stride=stride, affine=affine).params


def op_output_size(*, H: int, W: int, stride: int) -> tuple[int, int]:
    """Spatial output size of every cell op: ``(H, W)`` at stride 1, ``(ceil(H/2), ceil(W/2))`` at 2."""
    _check_stride(stride)
    return _half(H, stride), _half(W, stride)
