"""Where the CPU time of a retrain step goes: the retrain loop against a plain training loop.

    python experiments/bench_retrain.py [--genotype experiments/results/demo_genotype.json] [--steps 20] [--threads 1]

Process CPU seconds per step (and wall seconds beside them), one thread by default:

- ``plain``: the same network, batch and optimizer as the default retrain (batch 8, crop 96,
  channels_last, AdamW, gradient clipping) on one pre-made batch, with an L1 loss;
- ``plain + matting loss``: the same with the retrain's loss (unknown-region L1, Laplacian pyramid,
  composition);
- ``data``: drawing one batch of the synthetic training set (8 samples at 96 px);
- ``retrain``: ``atldas.retrain`` itself, per training step: two runs of one epoch with ``--steps``
  and ``2 x --steps`` steps (validation on one image), differenced, so setup, validation and
  checkpoints cancel.

The overhead ratio is ``retrain / plain``, taken within each of ``--rounds`` interleaved rounds (this
machine's speed drifts by 20 % between minutes; a ratio within a round does not). Run it on a quiet
machine; other jobs inflate wall time more than CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from atldas.data.synthetic import SyntheticMatting  # noqa: E402
from atldas.genotype import Genotype  # noqa: E402
from atldas.matting.losses import MattingLoss  # noqa: E402
from atldas.models.zoo import resolve_model  # noqa: E402
from atldas.retrain import RetrainConfig, retrain  # noqa: E402
from atldas.tensors import matting_input  # noqa: E402
from atldas.utils.memory_format import channels_last  # noqa: E402


def _clock():
    return time.process_time(), time.perf_counter()


def _since(t):
    c, w = _clock()
    return c - t[0], w - t[1]


def batch_of(n: int = 8, crop: int = 96, seed: int = 0):
    ds = SyntheticMatting(size=crop, length=n, seed=seed, split="train")
    samples = [ds[i] for i in range(n)]
    return {k: torch.stack([s[k] for s in samples]) for k, v in samples[0].items() if torch.is_tensor(v)}


def plain(genotype: Path, steps: int, matting_loss: bool):
    """(CPU s, wall s) per step of the plain loop."""
    torch.manual_seed(0)
    mm = resolve_model(str(genotype))
    net = channels_last(mm.build())
    net.train()
    for m in net.modules():
        if isinstance(getattr(m, "clamp", None), bool):
            m.clamp = False
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    batch = batch_of()
    x = channels_last(matting_input(batch))
    loss_fn = MattingLoss()

    def step():
        pred = mm.forward(net, x)
        loss = loss_fn(pred, batch)["loss"] if matting_loss else (pred - batch["alpha"]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()

    for _ in range(3):
        step()
    t = _clock()
    for _ in range(steps):
        step()
    c, w = _since(t)
    return c / steps, w / steps


def data(steps: int):
    ds = SyntheticMatting(size=96, length=8 * (steps + 1), seed=0, split="train")
    ds[0]
    t = _clock()
    for i in range(8, 8 * (steps + 1)):
        ds[i]
    c, w = _since(t)
    return c / steps, w / steps


def retrain_per_step(genotype: Path, steps: int, threads: int):
    def one(n: int):
        with tempfile.TemporaryDirectory() as d:
            cfg = RetrainConfig(model=str(genotype), epochs=1, steps_per_epoch=n, val_count=1, val_size=64,
                                threads=threads, out=str(Path(d) / "r"), tensorboard=False, progress=False)
            t = _clock()
            retrain(cfg)
            return _since(t)

    one(2)  # warm-up
    c1, w1 = one(steps)
    c2, w2 = one(2 * steps)
    return (c2 - c1) / steps, (w2 - w1) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--genotype", default=str(ROOT / "experiments" / "results" / "demo_genotype.json"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = Genotype.load(args.genotype)
    gp = Path(args.genotype)
    measures = {"plain": lambda: plain(gp, args.steps, False),
                "plain + matting loss": lambda: plain(gp, args.steps, True),
                "data (one batch)": lambda: data(args.steps),
                "retrain": lambda: retrain_per_step(gp, args.steps, args.threads)}
    rows = {name: [] for name in measures}
    for _ in range(args.rounds):  # interleaved: a slow spell of the machine hits every variant
        for name, f in measures.items():
            rows[name].append(f())
    print(f"genotype {g.hash()}, batch 8, crop 96, {args.threads} thread(s), {args.rounds} interleaved rounds; "
          "CPU s / wall s per step (medians); ratio: the median over rounds of CPU / plain's CPU in that round")
    for name, vals in rows.items():
        c, w = statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals)
        ratio = statistics.median(v[0] / p[0] for v, p in zip(vals, rows["plain"]))
        print(f"  {name:22s} {c:7.3f} CPU-s {w:7.3f} s   {ratio:5.2f} x plain (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
