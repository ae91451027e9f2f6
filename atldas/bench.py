"""``atldas bench``: parameters, MACs and latency of MODELs side by side.

    atldas bench cheapmatting aematter runs/search-x --size 1024 --no-latency
    atldas bench cheapmatting --size 512 --threads 2 --json bench.json

Per MODEL (a registered name, genotype file or run directory), at batch 1 on a ``(1, 6, size, size)``
input:

- ``params``: the number of parameter elements (``numel`` summed; buffers not included);
- ``macs``: multiply-accumulates, exactly ``torch.utils.flop_counter.FlopCounterMode``'s total / 2,
  counted on the meta device (no memory, no time). The counter sees convolutions (``aten.convolution``),
  linear layers and matmuls (``addmm``, ``mm``, ``bmm``, ``baddbmm``) and fused attention
  (``scaled_dot_product_attention``); norms, activations, pooling, interpolation, element-wise
  additions and softmax are not counted. ``macs_by_op`` splits the total by operator;
- ``latency_ms``: median, 10th and 90th percentile of the forward time in milliseconds, eval mode,
  ``torch.inference_mode``, network and input in channels_last, BatchNorm folded into the convolutions
  (as ``atldas predict`` runs them), random weights (seed 0), a random image and a round trimap
  (foreground disc, unknown ring), measured with ``torch.utils.benchmark.Timer.blocked_autorange`` at
  a fixed thread count (``threads``, default torch's current count) after a warm-up run; at least ``repeats`` samples (each sample is the mean
  of one block of runs; a slow network gets single runs) as long as they fit in 60 x ``min_run_time``
  (``latency_samples`` says how many were taken; fewer than ``repeats`` is a warning). ``None`` with
  ``latency=False``.

The JSON file (``json_path``) is the list of these records, in the format of architecture.md::

    [{"model": .., "params": int, "macs": int, "input": [1, 6, H, W],
      "latency_ms": {"median": .., "p10": .., "p90": ..} | null, "device": "cpu", ...}]

with extra fields: ``macs_by_op``, ``threads``, ``device_name`` and, with latency, ``gmacs_per_s``
(MACs / median latency) and ``ceiling_gmacs_per_s``: what a dense 3x3 64->64 convolution on a
``(1, 64, 256, 256)`` input (channels_last, same device and threads) reaches, timed on the spot,
once per call. Their ratio says how near the hardware a network runs: the ceiling is the best case
for this machine's convolution kernels, a network of many small ops, concatenations and norms
reaches a fraction of it.

Time on a CPU: CheapMatting at 1024 x 1024 runs about a second per forward on a few cores, the
AEMatter-class baseline ten times that; ``--no-latency`` gives params and MACs in seconds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from atldas.errors import ConfigError
from atldas.utils.atomic import (check_output, refuse_input_as_output, refuse_overwriting_non_json, to_stdout,
                                 write_json)
from atldas.matting.footprint import predict_bytes
from atldas.models.base import MattingModel
from atldas.models.zoo import require_torch, resolve_model
from atldas.utils.counting import count_macs_by_op, count_params
from atldas.utils.device import device_name, resolve_device
from atldas.utils.fold import fold_batchnorm
from atldas.utils.memory import require
from atldas.utils.memory_format import channels_last
from atldas.utils.timing import check_timing, time_call

log = logging.getLogger("atldas")

__all__ = ["bench", "count_cost", "measure_latency", "conv_ceiling", "format_table", "MIN_RUN_TIME", "REPEATS"]

#: Seconds of timing per model (Timer's ``min_run_time``).
MIN_RUN_TIME = 1.0
#: Minimum number of timing samples per model.
REPEATS = 5


#: The largest input side bench counts or times (65536^2 is 4.3 G pixels, 17 GB per float channel).
MAX_SIDE = 65536


def _hw(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(s) for s in size)
    if min(h, w) < 32:
        raise ConfigError(f"--size must be at least 32 (the networks downsample 5 times), got {h}x{w}")
    if max(h, w) > MAX_SIDE:
        raise ConfigError(f"--size must be at most {MAX_SIDE} per side, got {h}x{w}")
    return h, w


def _input(h: int, w: int, device: Union[str, torch.device]) -> torch.Tensor:
    """A valid network input ``(1, 6, h, w)``: random RGB and a one-hot trimap with a foreground disc,
    an unknown ring and background (so classical methods see a realistic unknown region)."""
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, h, w, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(h) - h / 2, torch.arange(w) - w / 2, indexing="ij")
    r = torch.hypot(yy, xx) / min(h, w)
    fg, unknown = r < 0.2, (r >= 0.2) & (r < 0.4)
    onehot = torch.stack([~(fg | unknown), unknown, fg]).float()[None]  # (1, 3, h, w) [bg, unknown, fg]
    return torch.cat([rgb, onehot], 1).to(device)


def _count(model: MattingModel, net: torch.nn.Module, x: torch.Tensor) -> Tuple[int, Dict[str, int]]:
    return count_macs_by_op(net, call=lambda: model.forward(net, x))


def count_cost(model: MattingModel, *, size: Union[int, Sequence[int]] = 1024) -> Dict[str, Any]:
    """Params and MACs of ``model`` at ``(1, 6, H, W)``: ``{"params", "macs", "macs_by_op"}``.

    Counted on the meta device; a network that cannot run there (data-dependent code) is counted on
    the CPU instead, which takes one real forward pass.
    """
    h, w = _hw(size)
    try:
        with torch.device("meta"):
            net = model.build()
        net.eval()
        macs, by_op = _count(model, net, torch.empty(1, 6, h, w, device="meta"))
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        log.info("%s: cannot count on the meta device (%s); counting with one CPU forward pass",
                 model.name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        with torch.random.fork_rng(devices=[]):  # the caller's random stream left as it was
            torch.manual_seed(0)
            net = model.build().eval()
            macs, by_op = _count(model, net, _input(h, w, "cpu"))
    params = count_params(net)
    return {"params": int(params), "macs": int(macs), "macs_by_op": by_op}


def measure_latency(model: MattingModel, *, size: Union[int, Sequence[int]] = 1024,
                    device: Union[str, torch.device] = "cpu", threads: Optional[int] = None,
                    min_run_time: float = MIN_RUN_TIME, repeats: int = REPEATS) -> Dict[str, float]:
    """Forward latency of ``model`` in ms: ``{"median", "p10", "p90", "samples"}`` (see the module docstring)."""
    h, w = _hw(size)
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream left as it was
        torch.manual_seed(0)
        net = channels_last(model.build().to(dev).eval())
        fold_batchnorm(net)  # as predict runs it: conv + BN as one conv
        x = channels_last(_input(h, w, dev))

    def run() -> None:
        with torch.inference_mode():
            model.forward(net, x)

    return time_call(run, threads=threads, min_run_time=min_run_time, repeats=repeats, sync=dev)


def conv_ceiling(*, device: Union[str, torch.device] = "cpu", threads: Optional[int] = None,
                 min_run_time: float = MIN_RUN_TIME, repeats: int = REPEATS) -> float:
    """GMAC/s of a dense 3x3 64->64 convolution on ``(1, 64, 256, 256)`` in channels_last (the
    machine's convolution ceiling at this thread count; see the module docstring)."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    conv = channels_last(torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(dev).eval())
    x = channels_last(torch.randn(1, 64, 256, 256, generator=gen).to(dev))
    macs = 64 * 64 * 9 * 256 * 256

    def run() -> None:
        with torch.no_grad():
            conv(x)

    ms = time_call(run, threads=threads, min_run_time=min_run_time, repeats=repeats, sync=dev)["median"]
    return macs / (ms * 1e-3) / 1e9


def warn_if_busy() -> Optional[float]:
    """Warn when the CPU is already loaded (1-minute load average above half the cores): CPU latencies
    then read several times the quiet figure. Returns the load average (None where unknown)."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not available on this platform
        return None
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        log.warning("the machine is busy (load average %.1f on %d cores): CPU latencies will read high; "
                    "measure on a quiet machine", load, cores)
    return load


def bench(models: Union[str, Sequence[str]], *, size: Union[int, Sequence[int]] = 1024, device: Union[str, torch.device] = "cpu",
          threads: Optional[int] = None, json_path: Optional[str] = None, latency: bool = True,
          min_run_time: float = MIN_RUN_TIME, repeats: int = REPEATS) -> List[Dict[str, Any]]:
    """Params, MACs and (optionally) latency of each MODEL; see the module docstring.

    Args:
        models: MODELs (registered names, genotype files, run directories), or one MODEL.
        size: input side (or ``(H, W)``).
        device: ``cpu`` or ``cuda`` (where latency is measured).
        threads: torch CPU threads while timing (default: torch's current count).
        json_path: write the records as JSON here.
        latency: measure latency (False: params and MACs only; ``latency_ms`` is None).
        min_run_time: seconds of timing per model.
        repeats: minimum number of timing samples.

    Returns:
        One record per model, in order.
    """
    if isinstance(models, (str, os.PathLike)):  # one MODEL, not the characters of its name
        models = [os.fspath(models)]
    if not models:
        raise ConfigError("name at least one MODEL to bench")
    check_timing(min_run_time=min_run_time, repeats=repeats, threads=threads)
    if json_path is not None and not to_stdout(json_path):
        check_output(json_path, flag="--json", follow=True)
        inputs = [Path(m) for m in models]  # a genotype file, or a run directory (its genotype.json is read)
        refuse_input_as_output(json_path, [*inputs, *(p / "genotype.json" for p in inputs if p.is_dir())],
                               flag="--json", follow=True)
        refuse_overwriting_non_json(json_path, example="bench.json")
    h, w = _hw(size)
    dev = resolve_device(device)
    resolved = [require_torch(resolve_model(m), "bench") for m in models]  # all checked before any timing
    n_threads = int(threads or torch.get_num_threads())
    if latency and dev.type == "cpu":
        for name, mm in zip(models, resolved):  # timing runs real forwards: each must fit in memory
            require(predict_bytes(mm, mm.build(), h, w), what=f"bench of {name} at {h}x{w}",
                    hint="use a smaller --size, or --no-latency (params and MACs are counted without memory)")
        warn_if_busy()
    ceiling = None
    if latency:
        log.info("bench: timing the dense-convolution ceiling on %s (%d threads)", dev, n_threads)
        ceiling = conv_ceiling(device=dev, threads=n_threads, min_run_time=min_run_time, repeats=repeats)
    records: List[Dict[str, Any]] = []
    for name, mm in zip(models, resolved):
        log.info("bench %s: counting params and MACs at 1x6x%dx%d", name, h, w)
        cost = count_cost(mm, size=(h, w))
        lat, samples = None, None
        if latency:
            log.info("bench %s: timing on %s (%d threads, >= %.1f s)", name, dev, n_threads, min_run_time)
            lat = measure_latency(mm, size=(h, w), device=dev, threads=n_threads, min_run_time=min_run_time,
                                  repeats=repeats)
            samples = int(lat.pop("samples"))
            if samples < repeats:
                log.warning("bench %s: %d timing samples, not the %d asked for: timing stops after 60 x "
                            "--min-run-time; raise --min-run-time for more", name, samples, repeats)
        records.append({"model": name, "params": cost["params"], "macs": cost["macs"], "learned": mm.learned,
                        "input": [1, 6, h, w],
                        "latency_ms": lat, "latency_samples": samples, "device": str(dev), "macs_by_op": cost["macs_by_op"],
                        "threads": n_threads if dev.type == "cpu" and latency else None,  # only timing uses them
                        "device_name": device_name(dev),
                        "gmacs_per_s": cost["macs"] / (lat["median"] * 1e-3) / 1e9 if lat and mm.learned else None,
                        "ceiling_gmacs_per_s": ceiling})
    if json_path is not None:
        write_json(json_path, records, follow=True)
    return records


def format_table(records: Sequence[Dict[str, Any]]) -> str:
    """A text table: model, params (M), MACs (G), input, latency median [p10, p90] ms, GMAC/s (share of
    the dense-convolution ceiling), device."""
    width = max([len("model")] + [len(str(r["model"])) for r in records])
    lines = [f"{'model':<{width}}  {'params':>10}  {'MACs':>10}  {'input':>15}  {'latency ms: median [p10, p90]':>31}"
             f"  {'GMAC/s':>13}  device",
             f"{'':<{width}}  {'(M)':>10}  {'(G)':>10}"]
    for r in records:
        lat = r.get("latency_ms")
        lat_text = f"{lat['median']:.1f} [{lat['p10']:.1f}, {lat['p90']:.1f}]" if lat else "-"
        dev = r["device"] + (f" ({r['threads']} threads)" if r.get("threads") else "")
        macs = f"{r['macs'] / 1e9:>10.3f}" if r.get("learned", True) else f"{'(solver)':>10}"
        rate, ceil = r.get("gmacs_per_s"), r.get("ceiling_gmacs_per_s")
        rate_text = f"{rate:.1f} ({100 * rate / ceil:.0f} %)" if rate and ceil else "-"
        lines.append(f"{r['model']:<{width}}  {r['params'] / 1e6:>10.3f}  {macs}  "
                     f"{'x'.join(map(str, r['input'])):>15}  {lat_text:>31}  {rate_text:>13}  {dev}")
    lines.append("MACs: multiply-accumulates of convolutions, linear layers and matmuls/attention "
                 "(torch FlopCounterMode total / 2); params: numel of the parameters")
    ceil = next((r["ceiling_gmacs_per_s"] for r in records if r.get("ceiling_gmacs_per_s")), None)
    if ceil:
        lines.append(f"GMAC/s: MACs / median latency, and its share of {ceil:.1f} GMAC/s, a dense 3x3 64->64 "
                     "convolution at 256x256 timed here on the same device and threads (the ceiling)")
    if any(not r.get("learned", True) for r in records):
        lines.append("(solver): a classical method, not a network: it solves a sparse system per image, its work is "
                     "not convolutions and is not counted as MACs; see its latency")
    return "\n".join(lines)
