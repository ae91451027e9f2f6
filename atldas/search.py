"""``atldas search``: search a supernet under a cost budget and write the run directory.

    atldas search --space matting                      # the default job: synthetic data, 25 G MACs
    atldas search --space tiny --epochs 2 --out runs/t # seconds
    atldas search --space matting --resume --out RUN_DIR

The run directory is :class:`atldas.run.Run`'s (``config.yaml``, ``checkpoint.pt``, ``genotype.json``,
``history.jsonl``, ``cost_table.json``, ``tb/``) plus ``plots/`` with the final genotype's pictures.
Checkpoints are written at the end of every epoch; ``--resume`` continues from the last one and, with
the same seed, ends in the same state as a run that was never stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from atldas.cost import format_cost
from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.plot import plot_genotype
from atldas.run import CHECKPOINT, Run, SearchConfig, check_costs_unchanged, save_final, write_cost_table
from atldas.utils.atomic import check_output
from atldas.rundir import RunDir
from atldas.utils.dist import barrier, check_batch, check_same, is_main, wait_for_main
from atldas.utils.seed import pin_threads

log = logging.getLogger("atldas")

__all__ = ["search", "default_out"]


def default_out(cfg: SearchConfig) -> Path:
    """``runs/search-<space>-<strategy>-seed<S>``."""
    return Path("runs") / f"search-{cfg.space}-{cfg.strategy}-seed{cfg.seed}"


def search(cfg: SearchConfig, *, resume: bool = False, force: bool = False,
           callback: Optional[Callable[[Dict[str, Any]], None]] = None) -> Path:
    """Run a search into a run directory; returns it (see the module docstring).

    Args:
        cfg: the resolved configuration (:func:`atldas.run.make_search_config`); on ``resume`` only
            ``cfg.out`` and ``cfg.progress`` are used, the rest comes from the run's ``config.yaml``
            (``atldas search --resume`` refuses flags that differ from it).
        resume: continue the run in ``cfg.out`` from its checkpoint.
        force: start afresh where ``cfg.out`` holds a run; the old folder is moved aside first
            (:meth:`~atldas.rundir.RunDir.set_aside`).
        callback: called with each epoch's history row, after its checkpoint (:meth:`Run.fit`).
    """
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    rd = RunDir(out, checkpoint=CHECKPOINT, kind="search")
    if force and resume:
        raise ConfigError("--force starts afresh and --resume continues: pass one of them")
    world = rd.join_torchrun(cfg.device, resume=resume)  # on the run's own device
    if not resume:  # every rank, before anything is written (it failed at the first step, after the run folder)
        check_batch(cfg.data.batch_size)
    if world > 1 and not is_main():
        return _search_replica(cfg, out=out, resume=resume, callback=callback)
    built = None
    if force:  # the new run's config, budget and data are checked before the old run is moved aside
        rd.refuse_inputs_inside((("--data", cfg.data.source), ("--backgrounds", cfg.data.backgrounds),
                                 ("--lut", cfg.budget.lut)))
        built = _build(cfg, out)
        rd.set_aside()
    with rd.locked():
        return _search(cfg, out=out, rd=rd, resume=resume, callback=callback, built=built)


def _build(cfg: SearchConfig, out: Path) -> Run:
    """A fresh run for ``out``; a bad config, budget, ``--data`` or ``--backgrounds`` fails here, before
    anything is written."""
    run = Run(dataclasses.replace(cfg, out=str(out)), out=out)
    run.check_budget()  # before anything is written (fit checks it too, for a Python run)
    if cfg.budget.lut and run.table.metric != "latency_ms":  # said once, when the run starts
        log.warning("--lut %s is read only for a latency budget (--target-latency-ms); this search %s, so the "
                    "table is not used", cfg.budget.lut,
                    f"has a {run.table.metric} budget" if run.budget else "has no budget")
    run.open_data()
    return run


def _search_replica(cfg: SearchConfig, *, out: Path, resume: bool,
                    callback: Optional[Callable[[Dict[str, Any]], None]]) -> Path:
    """A rank other than 0 under torchrun: the same search in memory (rank 0 writes ``out``)."""
    wait_for_main()  # rank 0 has checked and written the run directory (or found the checkpoint)
    if resume:
        run = Run.load(out, restore_rng=True)
        run.out = None
    else:
        run = Run(dataclasses.replace(cfg, out=str(out)), out=None)
    run.fit(callback=callback)
    check_same(run.final_genotype().hash(), what="derived genotype")
    return out


def _search(cfg: SearchConfig, *, out: Path, rd: RunDir, resume: bool,
            callback: Optional[Callable[[Dict[str, Any]], None]], built: Optional[Run] = None) -> Path:
    if resume:
        rd.check_resume()
        run = Run.load(out, restore_rng=True)
        run.cfg = dataclasses.replace(run.cfg, progress=cfg.progress)  # a display setting: this command's
        check_costs_unchanged(run, out, verb="--resume")
        if run.epoch >= run.cfg.epochs:
            log.info("%s finished its %d epochs already: its genotype is derived again", out, run.cfg.epochs)
        else:
            log.info("resumed %s at epoch %d/%d", out, run.epoch + 1, run.cfg.epochs)
    else:
        rd.check_new()
        run = built if built is not None else _build(cfg, out)
        # checkpoint.pt: weights and two Adam moments; an atomic rewrite holds the old and the new file
        check_output(out, flag="--out", folder=True,
                     need_bytes=2 * 3 * sum(p.numel() * p.element_size() for p in run.net.parameters()))
        run.cfg = pin_threads(run.cfg)
        rd.write_config(run.cfg)
    barrier()  # torchrun: the other ranks start now
    write_cost_table(run)
    c = run.cfg
    budget = "none" if run.budget is None else format_cost(run.budget.target, run.budget.metric)
    log.info("search %s/%s (task %s): %d epochs x %d steps, batch %d, crop %d, budget %s -> %s", c.space,
             c.strategy, run.task.name, c.epochs, c.steps_per_epoch, c.data.batch_size, c.data.crop, budget, out)
    run.fit(callback=callback)
    final = run.final_genotype()
    check_same(final.hash(), what="derived genotype")
    save_final(final, out / "genotype.json")
    if c.plots:
        _plots(final, out)
    cost = final.cost
    latency = f", {format_cost(cost['latency_ms'], 'latency_ms')}" if cost.get("latency_ms") is not None else ""
    log.info("derived genotype %s: %s, %s%s (budget %s) -> %s", final.hash(), format_cost(cost["macs"], "macs"),
             format_cost(cost["params"], "params"), latency, budget, out / "genotype.json")
    return out


def _plots(genotype: Genotype, out: Path) -> None:
    try:
        plot_genotype(genotype, out=out / "plots" / "genotype.png")
    except Exception as exc:  # noqa: BLE001 - a failed plot must not lose a finished search
        log.warning("could not draw the genotype plots: %s", exc)
