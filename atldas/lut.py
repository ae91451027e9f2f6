"""``atldas lut build``: measure a search space's latency table on this machine (see
:mod:`atldas.latency`), save it, and optionally check it against whole networks.

    atldas lut build --space matting --device cpu --check 3
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from atldas.cost import cost_table
from atldas.config import flag_against_set, leaf_paths
from atldas.errors import ConfigError
from atldas.latency import MIN_RUN_TIME, build_lut, measure_genotype, save_lut
from atldas.utils.atomic import check_output, refuse_overwriting_non_json
from atldas.utils.timing import check_timing
from atldas.run import ALIASES, bind_space, make_search_config

__all__ = ["lut_space", "lut_build", "check_lut"]


def lut_space(space: str, *, device: str = "cpu", size: Optional[int] = None, sets: Sequence[str] = ()):
    """The bound space a table is built for: the space's defaults, ``--set`` knobs, ``--size``."""
    paths = leaf_paths(make_search_config(space=space, device=device))  # --set's keys, before their values
    timed = ("target_C", "target_layers", "nodes", "input_size")  # the knobs of the network a table times
    sets = [sets] if isinstance(sets, str) else list(sets)
    for pair in sets:  # a search setting, or a supernet knob, here was accepted and changed nothing
        key = str(pair).split("=", 1)[0].strip().replace("-", "_")
        path = paths.get(ALIASES.get(key, key)) or tuple(key.split("."))
        if path[0] == "knobs" and path[-1] in timed or path[0] == "task" or tuple(path) == ("data", "source"):
            continue  # the timed network's knobs, and what sizes its input and output (the task, its data)
        what = ("a data setting: the table times one image at --size" if path[0] == "data" else
                "a knob of the supernet, not of the target network a table times" if path[0] == "knobs" else
                "a search setting (the device and threads are --device and --threads)" if ".".join(path) in paths
                else "not a setting")
        raise ConfigError(f"--set {pair}: a table is of the space's target network, and --set takes its knobs "
                          f"({', '.join(timed)}); {key} is {what}")
    flag_against_set("--size", size, sets, "input_size")
    cfg = make_search_config(space=space, device=device, sets=sets)
    if size is not None:
        if size < 32:
            raise ConfigError(f"--size must be at least 32 (the network downsamples 5 times), got {size}")
        cfg = dataclasses.replace(cfg, knobs=dataclasses.replace(cfg.knobs, input_size=size))
    return bind_space(cfg)


def check_lut(space, lut: Mapping[str, Any], *, n: int = 3, seed: int = 0,
              min_run_time: float = MIN_RUN_TIME) -> List[Dict[str, Any]]:
    """Measure ``n`` random children's whole networks and compare with the table's estimate.

    Returns:
        One record per child: ``genotype`` hash, ``table_ms``, ``measured_ms``, ``ratio`` (table / measured).
    """
    arch = space.new_arch()
    table = cost_table(space, arch, metric="latency_ms", lut=lut)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        child = arch.sample(generator=gen)
        g = space.child_to_genotype(arch, child)
        est = table.of_child(child)
        ms = measure_genotype(space, g, device=str(lut["device"]), threads=int(lut["threads"]), min_run_time=min_run_time)
        out.append({"genotype": g.hash(), "table_ms": est, "measured_ms": ms, "ratio": est / ms})
    return out


def lut_build(*, space: str, device: str = "cpu", size: Optional[int] = None, threads: int = 1,
              min_run_time: float = MIN_RUN_TIME, check: int = 0, out: Optional[str] = None,
              sets: Sequence[str] = (), progress: bool = True):
    """Build, save and (with ``check`` > 0) check a latency table: what ``atldas lut build`` does.

    Args:
        space: a registered search space (``atldas.SPACES.names()``).
        device: where the ops are timed (``cpu``, ``cuda``); the table holds it.
        size: the input size the table is for (default: the space's ``input_size``), at least 32.
        threads: torch CPU threads while timing.
        min_run_time: seconds each op is timed for (``torch.utils.benchmark``'s ``blocked_autorange``).
        check: how many random children to time as whole networks against the table's estimate.
        out: the table's JSON file (default ``lut-<space>-<device>.json``); refused if it is not JSON.
        sets: ``key=value`` texts of the space's knobs, as ``--set``.
        progress: a progress bar on a terminal.

    Returns:
        ``(lut, path, checks)``: the table (a dict), where it was written, and one record per checked
        child (:func:`check_lut`).
    """
    check_timing(min_run_time=min_run_time, threads=threads)
    if isinstance(check, bool) or not isinstance(check, int) or not 0 <= check <= 10**4:
        raise ConfigError(f"--check takes the number of random children to measure, 0..10000; got {check!r}")
    check_output(out or f"lut-{space}-{device}.json", flag="--out")
    refuse_overwriting_non_json(out or f"lut-{space}-{device}.json", flag="--out", example=f"lut-{space}-{device}.json")
    bound = lut_space(space, device=device, size=size, sets=sets)
    lut = build_lut(bound, device=device, threads=threads, min_run_time=min_run_time, progress=progress)
    path = save_lut(lut, out or f"lut-{space}-{device}.json")
    checks = check_lut(bound, lut, n=check, min_run_time=min_run_time) if check else []
    return lut, Path(path), checks
