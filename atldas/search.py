"""``atldas search``: search a supernet under a cost budget and write the run directory.

    atldas search --space matting                      # the default job: synthetic data, 25 G MACs
    atldas search --space tiny --epochs 2 --out runs/t # seconds
    atldas search --space matting --resume --out RUN_DIR

Run directory (architecture.md): ``config.yaml`` (resolved), ``checkpoint.pt`` (atomic, loads with
``weights_only=True``: weights, alpha/beta/gamma, pruning masks, optimizers, lambda, RNG states,
epoch), ``genotype.json`` (rewritten every epoch; the final one is repaired onto the budget),
``history.jsonl`` (one line per epoch), ``tb/`` (TensorBoard), ``plots/``.

Checkpoints are written at the end of every epoch; ``--resume`` continues from the last one and, with
the same seed, ends in the same state as a run that was never stopped.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Subset

from atldas import __version__
from atldas.arch import CELL_TYPES, Child
from atldas.config import SearchConfig, load_yaml, save_yaml
from atldas.cost import Budget, CostTable, format_cost
from atldas.data.collate import collate
from atldas.derive import finalize
from atldas.errors import AtldasError, ConfigError
from atldas.genotype import Genotype
from atldas.strategies import STRATEGIES, Strategy
from atldas.utils.atomic import write_text_atomic
from atldas.utils.history import History
from atldas.utils.memory_format import channels_last
from atldas.utils.checkpoint import load_checkpoint, save_checkpoint
from atldas.utils.seed import rng_state, seed_everything, set_rng_state

log = logging.getLogger("atldas")

CHECKPOINT = "checkpoint.pt"


def budget_of(cfg: SearchConfig) -> Optional[Budget]:
    """The budget the flags ask for (at most one of --target-macs/-params/-latency-ms)."""
    targets = {m: getattr(cfg, f"target_{m}") for m in ("macs", "params", "latency_ms")}
    given = {m: v for m, v in targets.items() if v is not None}
    if len(given) > 1:
        raise ConfigError("give one budget: --target-macs, --target-params or --target-latency-ms "
                          f"(got {', '.join('--target-' + m.replace('_', '-') for m in given)})")
    if not given:
        return None
    metric, value = next(iter(given.items()))
    return Budget(metric=metric, target=float(value), form=cfg.budget_form)


def _check(cfg: SearchConfig) -> None:
    for name in ("epochs", "steps_per_epoch", "batch_size", "crop"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.warmup_epochs >= cfg.epochs and cfg.strategy in ("atldas", "darts", "gdas"):
        raise ConfigError(f"warmup_epochs ({cfg.warmup_epochs}) must be below epochs ({cfg.epochs}) "
                          "so that the architecture is trained")
    if cfg.crop % 32:
        raise ConfigError(f"crop must be a multiple of 32 (the network downsamples 5 times), got {cfg.crop}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")


@dataclass
class Run:
    """A search run's live objects (built fresh or from a run directory)."""

    cfg: SearchConfig
    space: Any
    strategy: Strategy
    table: CostTable
    budget: Optional[Budget]
    out: Path

    @property
    def net(self):
        return self.strategy.net

    def genotype(self, child: Child, *, final: bool = False, evaluate=None) -> Genotype:
        """Genotype of ``child``; ``final`` repairs it onto the budget and records the costs."""
        prov = {"seed": self.cfg.seed, "strategy": self.cfg.strategy, "run": str(self.out),
                "epochs": self.cfg.epochs, "space": self.cfg.space}
        if not final:
            g = self.space.child_to_genotype(self.net.arch, child, self.cfg)
            cost = {"input": list(self.table.input_size), self.table.metric: self.table.of_child(child),
                    "target": None if self.budget is None else {"metric": self.budget.metric,
                                                                "value": self.budget.target}}
            return g.replace(cost=cost, provenance={"atldas": __version__, **prov})
        return finalize(space=self.space, cfg=self.cfg, arch=self.net.arch, child=child, table=self.table,
                        budget=self.budget, provenance=prov)

    def final_genotype(self, evaluate=None) -> Genotype:
        return self.genotype(self.strategy.derive(evaluate), final=True)

    def model_input(self, batch: Dict[str, Any]) -> torch.Tensor:
        """The supernet's input for ``batch``, in the supernet's memory format."""
        x = self.space.model_input(batch)
        return channels_last(x) if self.cfg.channels_last else x


def build_run(cfg: SearchConfig, out: Path) -> Run:
    """Resolve the config and build space, supernet, cost table, budget and strategy."""
    from search_spaces import get_space

    space = get_space(cfg.space)
    cfg = space.resolve(cfg)
    strategy_cls = STRATEGIES.get(cfg.strategy)
    _check(cfg)
    seed_everything(cfg.seed)
    ops = space.search_ops(with_none=strategy_cls.uses_none)
    net = space.build_supernet(cfg, ops=ops).to(cfg.device)
    if cfg.channels_last:
        net = channels_last(net)
    budget = budget_of(cfg)
    metric = budget.metric if budget else "macs"
    lut = None
    if metric == "latency_ms":
        if not cfg.lut:
            raise ConfigError("--target-latency-ms needs a latency table: build one with "
                              f"`atldas lut build --space {cfg.space} --device {cfg.device}` and pass --lut FILE")
        from atldas.latency import load_lut

        lut = load_lut(cfg.lut)
    table = space.cost_table(cfg, metric=metric, arch=net.arch, lut=lut)
    if budget is not None:
        cheapest, _ = table.cheapest(net.arch)
        if cheapest > budget.target:
            raise ConfigError(f"budget {format_cost(budget.target, metric)} is below the cheapest architecture "
                              f"in the {cfg.space} space ({format_cost(cheapest, metric)} at input "
                              f"{list(table.input_size)}); raise the target to at least that")
    strategy = strategy_cls(supernet=net, loss_fn=space.loss, cost=table, budget=budget, cfg=cfg)
    return Run(cfg=cfg, space=space, strategy=strategy, table=table, budget=budget, out=out)


def _state(run: Run, epoch: int) -> Dict[str, Any]:
    arch = run.net.arch
    masks = {k: v for k, v in arch.state_dict().items() if "mask" in k}
    return {"format": "atldas-search/1", "atldas": __version__, "epoch": epoch,
            "config": dataclasses.asdict(run.cfg), "masks": masks,
            "supernet": run.net.state_dict(), "strategy": run.strategy.state_dict(), "rng": rng_state()}


def load_run(run_dir: Path) -> Run:
    """Rebuild a run from its directory (config.yaml + checkpoint.pt), pruned modules deleted."""
    if not (run_dir / "config.yaml").is_file():
        raise AtldasError(f"{run_dir}: not a search run directory (no config.yaml)")
    cfg = load_yaml(SearchConfig, run_dir / "config.yaml")
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    run = build_run(cfg, run_dir)
    _restore(run, ckpt)
    return run


def _restore(run: Run, ckpt: Dict[str, Any]) -> int:
    arch = run.net.arch
    for k, v in ckpt["masks"].items():
        getattr(arch, k).copy_(v)
    run.net.apply_masks()
    run.net.load_state_dict(ckpt["supernet"])
    run.strategy.load_state_dict(ckpt["strategy"])
    return int(ckpt["epoch"])


def _epoch_slice(ds, cfg: SearchConfig, epoch: int, steps: int):
    """Epoch ``epoch``'s own samples when the split holds ``epochs`` x ``steps`` batches, else all."""
    n = steps * cfg.batch_size
    if len(ds) >= cfg.epochs * n:
        return Subset(ds, range(epoch * n, (epoch + 1) * n))
    return ds


def _loader(ds, cfg: SearchConfig, epoch: int, salt: int) -> DataLoader:
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 101 + salt)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=gen,
                      num_workers=0, collate_fn=collate)


def batch_to(batch: Dict[str, Any], device: str) -> Dict[str, Any]:
    """A collated batch's tensors on ``device`` as float32 (other values as they are)."""
    return {k: (v.to(device).float() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _cycle(loader_fn) -> Iterator[Dict[str, Any]]:
    k = 0
    while True:
        yield from loader_fn(k)
        k += 1


def _tensorboard(run: Run):
    if not run.cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        log.warning("tensorboard is not installed; no tb/ events")
        return None
    return SummaryWriter(log_dir=str(run.out / "tb"))


def _heatmaps(writer, run: Run, epoch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arch = run.net.arch
    with torch.no_grad():
        for t in CELL_TYPES:
            p = arch.op_probs(t).numpy()
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.imshow(p, aspect="auto", cmap="viridis", vmin=0, vmax=1)
            ax.set_yticks(range(len(arch.topology.edges)),
                          [f"{i}->{j + 2}" for i, j in arch.topology.edges], fontsize=6)
            ax.set_xticks(range(len(arch.op_names)), arch.op_names, rotation=45, ha="right", fontsize=6)
            ax.set_title(f"{t}: op probabilities p (alpha)")
            fig.tight_layout()
            writer.add_figure(f"alpha/{t}", fig, epoch)
            plt.close(fig)
            fig, axes = plt.subplots(1, arch.topology.nodes, figsize=(8, 3))
            for j, ax in enumerate(axes):
                q = arch.set_probs(t, j).numpy()
                ax.barh(range(len(q)), q)
                ax.set_yticks(range(len(q)), ["+".join(map(str, s)) for s in arch.topology.input_sets[j]],
                              fontsize=5)
                ax.set_title(f"node {j + 2}", fontsize=7)
            fig.suptitle(f"{t}: input-set probabilities q (beta)", fontsize=8)
            fig.tight_layout()
            writer.add_figure(f"beta/{t}", fig, epoch)
            plt.close(fig)


def _finite(metrics: Dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


def search(cfg: SearchConfig, *, resume: bool = False) -> Path:
    """Run a search; returns the run directory (see the module docstring)."""
    out = Path(cfg.out) if cfg.out else Path("runs") / f"search-{cfg.space}-{cfg.strategy}-seed{cfg.seed}"
    ckpt_path = out / CHECKPOINT
    start = 0
    if resume:
        if not ckpt_path.is_file():
            raise AtldasError(f"--resume: {ckpt_path} does not exist; start without --resume")
        saved = load_yaml(SearchConfig, out / "config.yaml")
        if dataclasses.replace(saved, out=cfg.out) != dataclasses.replace(cfg, out=cfg.out):
            log.info("resuming with the run's saved config.yaml (flags other than --out are ignored)")
        run = build_run(saved, out)
        ckpt = load_checkpoint(ckpt_path)
        start = _restore(run, ckpt) + 1
        set_rng_state(ckpt["rng"])
        log.info("resumed %s at epoch %d/%d", out, start, run.cfg.epochs)
    else:
        if ckpt_path.exists():
            raise AtldasError(f"{out} already holds a search checkpoint; continue it with --resume "
                              "or choose another --out")
        run = build_run(cfg, out)
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(run.cfg, out / "config.yaml")
    cfg = run.cfg
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    write_text_atomic(out / "cost_table.json", run.table.to_json())
    train_ds, arch_ds = run.space.datasets(cfg)
    history = History(out / "history.jsonl", start)
    writer = _tensorboard(run)
    budget_text = "none" if run.budget is None else format_cost(run.budget.target, run.budget.metric)
    log.info("search %s/%s: %d epochs x %d steps, batch %d, crop %d, budget %s -> %s", cfg.space,
             cfg.strategy, cfg.epochs, cfg.steps_per_epoch, cfg.batch_size, cfg.crop, budget_text, out)
    strat = run.strategy
    show = cfg.progress and sys.stderr.isatty()
    from tqdm import tqdm

    for epoch in range(start, cfg.epochs):
        run.net.train()
        t0 = time.perf_counter()
        epoch_arch = _epoch_slice(arch_ds, cfg, epoch, max(1, cfg.arch_steps_per_epoch))
        arch_batches = _cycle(lambda k: _loader(epoch_arch, cfg, epoch * 1000 + k, salt=2))
        sums: Dict[str, float] = {}
        counts: Dict[str, int] = {}
        bar = tqdm(_loader(_epoch_slice(train_ds, cfg, epoch, cfg.steps_per_epoch), cfg, epoch, salt=1),
                   total=cfg.steps_per_epoch, disable=not show,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
        # a folder's train half may hold more batches: stop without loading one more
        for step, batch in enumerate(itertools.islice(bar, cfg.steps_per_epoch)):
            strat.set_epoch(epoch + step / cfg.steps_per_epoch)
            batch = batch_to(batch, cfg.device)
            metrics = strat.weight_step(batch, run.model_input(batch))
            if not strat.schedule.in_warmup(strat.epoch) and step < cfg.arch_steps_per_epoch:
                ab = batch_to(next(arch_batches), cfg.device)
                metrics.update(strat.arch_step(ab, run.model_input(ab),
                                               steps_per_epoch=cfg.arch_steps_per_epoch))
            if not _finite(metrics):
                raise AtldasError(f"the loss became non-finite at epoch {epoch + 1}, step {step + 1} "
                                  f"({', '.join(f'{k}={v}' for k, v in metrics.items() if not math.isfinite(v))}); "
                                  f"{'the last good checkpoint is kept in ' + str(ckpt_path) if ckpt_path.exists() else 'no checkpoint was written'}"
                                  "; lower --set w_lr=... or arch_lr=...")
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
            bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in metrics.items()
                             if k in ("loss/weights", "cost/expected", "lambda")})
        bar.close()
        events = strat.end_epoch(epoch)
        child = strat.derive_argmax()
        genotype = run.genotype(child)
        genotype.save(out / "genotype.json")
        row: Dict[str, Any] = {"epoch": epoch, **{k: sums[k] / counts[k] for k in sums}}
        with torch.no_grad():
            expected = float(run.table.expected(run.net.arch))
        row.update({"cost/derived": run.table.of_child(child), "cost/metric": run.table.metric,
                    "cost/expected": expected, "lambda": strat.lam,
                    "params/supernet": sum(p.numel() for p in run.net.weight_parameters()),
                    "time/epoch_s": time.perf_counter() - t0, "genotype": genotype.hash(),
                    **run.net.arch.entropies()})
        if events:
            row["pruning"] = events
            for ev in events:
                log.info("pruning, epoch %d: %s", epoch + 1, ", ".join(f"{k}={v}" for k, v in ev.items() if k != "epoch"))
        history.append(row)
        if writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    writer.add_scalar(k, v, epoch)
            _heatmaps(writer, run, epoch)
            writer.flush()
        save_checkpoint(_state(run, epoch), ckpt_path)
        log.info("epoch %d/%d: loss %.4f, derived %s, expected %s, lambda %.3g, %.1fs%s", epoch + 1,
                 cfg.epochs, row.get("loss/weights", float("nan")),
                 format_cost(row["cost/derived"], run.table.metric),
                 format_cost(row["cost/expected"], run.table.metric), strat.lam, row["time/epoch_s"],
                 f", pruned {len([e for e in events if 'dropped' in e])} groups" if events else "")
    final = run.final_genotype(evaluate=_evaluator(run, arch_ds))
    final.save(out / "genotype.json")
    if writer is not None:
        writer.close()
    _plots(final, out)
    c = final.cost
    log.info("derived genotype %s: %s, %s (budget %s) -> %s", final.hash(), format_cost(c["macs"], "macs"),
             format_cost(c["params"], "params"), budget_text, out / "genotype.json")
    return out


def _evaluator(run: Run, ds):
    """Held-out loss of a fixed child (random search with shared weights ranks by it)."""
    def evaluate(child: Child) -> float:
        run.net.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in itertools.islice(_loader(ds, run.cfg, 10**6, salt=3), 2):
                batch = batch_to(batch, run.cfg.device)
                total += float(run.space.loss(run.net(run.model_input(batch), run.net.plan(child)), batch))
                n += 1
        run.net.train()
        return total / max(1, n)

    return evaluate


def _plots(genotype: Genotype, out: Path) -> None:
    try:
        from atldas.plot import plot_genotype
    except ImportError:
        return
    try:
        plot_genotype(genotype, out=out / "plots" / "genotype.png")
    except Exception as exc:  # noqa: BLE001 - a failed plot must not lose a finished search
        log.warning("could not draw the genotype plots: %s", exc)


__all__ = ["search", "build_run", "load_run", "budget_of"]
