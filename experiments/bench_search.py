"""What hard pruning and sampling buy: step time and peak memory of each strategy on one supernet.

    python experiments/bench_search.py [--json FILE] [--space matting] [--batch 4] [--crop SPACE'S]
                                       [--steps 6] [--device cpu|cuda] [--strategies atldas darts gdas]
                                       [--contiguous]

Each strategy runs in its own process (so one's memory high-water mark cannot hide another's) on the
same search space, batch and crop, past warm-up (both the weight step and the arch step run), with
the supernet and its inputs in channels_last as ``atldas search`` runs them (``--contiguous``: in the
contiguous format). A *step* is one weight step plus one arch step. Figures:

- ``step_s``: median wall time of a step over ``--steps`` steps (after one untimed step);
- ``peak_mb``: the most tensor memory a step allocates on top of what is live when it starts
  (activations saved for backward, gradients, temporaries; the supernet, optimizer state and batches
  already exist), the maximum over ``--steps`` steps: a sampling strategy draws a different child
  every step, and the peak is the hungriest one. CPU: every allocation and free of torch's CPU
  allocator during ``--steps`` extra, untimed steps, recorded by ``torch.profiler``
  (``profile_memory=True``) and summed in time order, so the figure is exact and does not depend on
  glibc or on other processes; ``step_peak_median_mb`` is the median over those steps. CUDA:
  ``torch.cuda.max_memory_allocated`` after a reset, above the memory allocated at that moment.
- ``rss_peak_mb`` (CPU only): the process view of the same thing, the peak resident memory during
  ``--steps`` extra, untimed steps (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the
  resident memory before them, after ``malloc_trim`` has returned the freed heap (without it the
  soft mixture's many small tensors reuse resident free memory and read about half their size). It
  also counts the allocator's slack and library buffers, so it is noisier.

With ``--prune-epochs K`` the atldas worker also runs K pruning rounds on a policy trained for a few
arch steps first, and reports the figures after pruning (``atldas_pruned``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current resident size


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _step_tensor_peaks_mb(step, *, repeat: int) -> list:
    """Per call of ``step()`` (``repeat`` calls), the peak of live CPU tensor bytes above the bytes
    live when that call started, from the allocator events ``torch.profiler`` records."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(repeat):
            with record_function("bench_step"):
                step()
    events = list(prof.profiler.kineto_results.events())
    steps = sorted((e.start_ns(), e.end_ns()) for e in events if e.name() == "bench_step")
    mem = sorted((e.start_ns(), i, e.nbytes()) for i, e in enumerate(events) if e.name() == "[memory]")
    peaks, live, k = [], 0, 0
    for start, end in steps:
        while k < len(mem) and mem[k][0] < start:  # between steps
            live += mem[k][2]
            k += 1
        base = peak = live
        while k < len(mem) and mem[k][0] <= end:
            live += mem[k][2]
            peak = max(peak, live)
            k += 1
        peaks.append((peak - base) / 2**20)
    return peaks


def worker(args: argparse.Namespace) -> dict:
    import torch

    from torch.utils.data import default_collate

    from atldas.run import Run, make_search_config
    from atldas.tensors import batch_to

    torch.set_num_threads(args.threads)
    sets = [f"batch_size={args.batch}", f"crop={args.crop}", f"channels_last={not args.contiguous}",
            f"steps_per_epoch={args.steps + 1}", f"arch_steps_per_epoch={args.steps + 1}", "epochs=10",
            "warmup_epochs=1", "tensorboard=false", "progress=false", "seed=0"]
    sets += [f"C={args.C}"] if args.C else []
    sets += [f"layers={args.layers}"] if args.layers else []
    cfg = make_search_config(space=args.space, strategy=args.worker, device=args.device, sets=sets)
    run = Run(cfg)
    train, arch = run.task.datasets(cfg.data, seed=0, n_train=args.batch, n_arch=args.batch)
    batch = default_collate([train[i] for i in range(args.batch)])
    abatch = default_collate([arch[i] for i in range(args.batch)])
    batch, abatch = batch_to(batch, args.device), batch_to(abatch, args.device)
    x, ax = run.model_input(batch), run.model_input(abatch)
    strat = run.strategy
    cuda = args.device.startswith("cuda")
    pruned = {}
    if args.prune_epochs and args.worker == "atldas":
        strat.set_epoch(2.0)
        for epoch in range(args.prune_epochs):
            for _ in range(args.steps):
                strat.arch_step(abatch, ax, steps_per_epoch=args.steps)
            events = strat.end_epoch(epoch + 1)
            pruned[epoch] = len([ev for ev in events if "dropped" in ev])  # groups, not the summaries
    strat.set_epoch(2.0)  # past warm-up: exploration < 1 and arch steps on
    strat.weight_step(batch, x)  # untimed: creates the optimizer state
    strat.arch_step(abatch, ax, steps_per_epoch=args.steps)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    times, cpu_times = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        strat.weight_step(batch, x)
        strat.arch_step(abatch, ax, steps_per_epoch=args.steps)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    out = {"step_s": statistics.median(times), "step_cpu_s": statistics.median(cpu_times)}
    if cuda:
        out["peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20 - base, 1)
    else:
        import gc

        def step():
            strat.weight_step(batch, x)
            strat.arch_step(abatch, ax, steps_per_epoch=args.steps)

        # glibc keeps the heap memory of freed small tensors resident and serves the next step's small
        # tensors from it, so the resident size would not grow with them: malloc_trim hands it back
        strat.w_opt.zero_grad(set_to_none=True)
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base = _rss_mb()
        _reset_peak_rss()
        for _ in range(args.steps):
            step()
        out["rss_peak_mb"] = round(_peak_rss_mb() - base, 1)

        # the weight step starts by dropping the gradients of the previous one; dropping them just
        # before the recording keeps their free (of a block allocated earlier, which the profiler
        # cannot see) from hiding in the sum
        strat.w_opt.zero_grad(set_to_none=True)
        peaks = _step_tensor_peaks_mb(step, repeat=args.steps)
        out["peak_mb"] = round(max(peaks), 1)
        out["step_peak_median_mb"] = round(statistics.median(peaks), 1)
    out["params"] = sum(p.numel() for p in run.net.weight_parameters())
    if pruned:
        out["pruning_rounds"] = args.prune_epochs
        out["pruned_groups"] = sum(pruned.values())  # 0: the policy gave no evidence to prune on yet
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--space", default="matting")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=None, help="image side (default: the space's own, 128 for matting)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the strategies in turn this many times and take medians (a loaded machine)")
    p.add_argument("--C", type=int, default=None, help="supernet width (default: the space's proxy)")
    p.add_argument("--layers", type=int, default=None, help="supernet cells (default: the space's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--strategies", nargs="+", default=["atldas", "darts", "gdas"])
    p.add_argument("--prune-epochs", type=int, default=0)
    p.add_argument("--contiguous", action="store_true", help="supernet and inputs in the contiguous format")
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.crop is None:
        from atldas.run import make_search_config

        args.crop = int(make_search_config(space=args.space).data.crop)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    results = {}
    common = ["--space", args.space, "--batch", str(args.batch), "--crop", str(args.crop),
              "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
    for knob in ("C", "layers"):
        if getattr(args, knob) is not None:
            common += [f"--{knob}", str(getattr(args, knob))]
    if args.contiguous:
        common.append("--contiguous")
    jobs = [(s, s, 0) for s in args.strategies]
    if args.prune_epochs and "atldas" in args.strategies:
        jobs.append(("atldas_pruned", "atldas", args.prune_epochs))
    rounds: dict = {}
    for label, strategy, prune in [job for _ in range(args.rounds) for job in jobs]:  # interleaved rounds
        cmd = [sys.executable, __file__, *common, "--worker", strategy, "--prune-epochs", str(prune)]
        # a fixed mmap threshold: large buffers are returned to the OS when freed, so the resident
        # size before the timed steps is the resting size (glibc's dynamic threshold would keep them)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        rounds.setdefault(label, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rounds[label][-1]
        results[label] = {k: (statistics.median(x[k] for x in rounds[label]) if isinstance(v, (int, float)) else v)
                          for k, v in r.items()}
        extra = (f" (median step {r['step_peak_median_mb']:6.1f} MB, peak RSS {r['rss_peak_mb']:6.1f} MB)"
                 if "rss_peak_mb" in r else "")
        if "pruned_groups" in r:
            extra += f"   {r['pruned_groups']} group(s) pruned in {r['pruning_rounds']} round(s)"
        print(f"{label:14s} step {r['step_s']:.3f} s wall, {r['step_cpu_s']:.3f} s CPU   peak {r['peak_mb']:7.1f} MB{extra}   params {r['params']:,}",
              flush=True)
    if "darts" in results and "atldas" in results:
        d, a = results["darts"], results["atldas"]
        line = (f"atldas / darts (medians over {args.rounds} interleaved round(s)): step CPU time "
                f"{a['step_cpu_s'] / d['step_cpu_s']:.3f} (wall {a['step_s'] / d['step_s']:.3f}), "
                f"peak memory {a['peak_mb'] / d['peak_mb']:.3f}")
        if "step_peak_median_mb" in a:
            line += f", median step memory {a['step_peak_median_mb'] / d['step_peak_median_mb']:.3f}"
        if "rss_peak_mb" in a:
            line += f", peak RSS {a['rss_peak_mb'] / d['rss_peak_mb']:.3f}"
        print(line)
    print(f"space {args.space}, C {args.C or 'default'}, layers {args.layers or 'default'}, "
          f"batch {args.batch}, crop {args.crop}, device {args.device}, "
          f"{'contiguous' if args.contiguous else 'channels_last'}, "
          f"{args.threads} threads, median of {args.steps} steps")
    if args.json:
        from atldas.utils.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
