"""Run every CUDA path of atldas once, through the command-line tool, and print what it measured.

    python experiments/gpu_check.py --work /tmp/gpu_check --json gpu_check.json

Meant for a machine with one CUDA GPU: about 7 minutes on an H200 (the searches' first epochs are
mostly cuDNN timing its algorithms), so `--skip` steps to fit a shorter slot. Each command runs in its own process
(``atldas.cli.main`` with the peak of ``torch.cuda.max_memory_allocated`` read after it returns):

- ``search`` on the matting space, short (3 epochs of 25 weight and 25 arch steps, 1 warm-up epoch):
  ``amp=auto`` (bf16), ``amp=off``, the same on the machine's CPU, and a larger batch (32 x 256^2);
  seconds per weight+arch step after the warm-up, peak GPU memory, the derived genotype;
- ``retrain`` of that genotype, 2 epochs of 40 steps, ``amp`` bf16 / fp16 (gradient scaler) / off:
  loss, validation SAD, seconds per step, peak memory;
- ``eval`` of the fp32-retrained weights on the 50 synthetic test images on cuda, cuda ``--amp`` and
  the CPU: the scores and how many 8-bit prediction pixels differ from the CPU's;
- ``predict`` of one 2048^2 image on cuda, whole and in 512-px tiles (how far the tiles move the matte);
- ``bench`` at 1024^2 and 2048^2 (GMAC/s against the dense-conv ceiling measured on the spot);
- ``lut build --device cuda --check 3`` (how additive latency is on the GPU) and a short search
  under a latency budget read from that table.

A failing step is recorded with its error and the script goes on; the exit status is 1 when any
step failed. The figures are printed as one table at the end and written to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]

#: Runs one atldas command in this process and prints its wall time and peak GPU memory last.
WRAPPER = (
    "import sys, json, time\n"
    "from atldas.cli import main\n"
    "t = time.perf_counter()\n"
    "rc = main(sys.argv[1:])\n"
    "wall = time.perf_counter() - t\n"
    "import torch\n"
    "peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else 0.0\n"
    "print('GPUCHECK ' + json.dumps({'rc': rc, 'wall_s': wall, 'peak_mib': peak}), flush=True)\n"
    "sys.exit(rc)\n"
)

SHORT = ["steps_per_epoch=25", "arch_steps_per_epoch=25", "warmup_epochs=1", "heatmap_every=0", "plots=false"]


def sets_(*pairs: str) -> List[str]:
    """``--set k=v`` once per pair (the flag takes one value)."""
    return [x for kv in pairs for x in ("--set", kv)]


def atldas(args: List[str], *, timeout: float = 240) -> Dict[str, Any]:
    """Run ``atldas ARGS`` in a fresh process; its wall time, peak GPU memory and the last log lines."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s", "cmd": " ".join(args)}
    rec: Dict[str, Any] = {"cmd": "atldas " + " ".join(args), "process_s": round(time.perf_counter() - t, 2)}
    for line in p.stdout.splitlines():
        if line.startswith("GPUCHECK "):
            rec.update(json.loads(line[len("GPUCHECK "):]))
    rec["ok"] = p.returncode == 0
    if not rec["ok"]:
        rec["error"] = (p.stderr.strip().splitlines() or ["(no output)"])[-1][:400]
        rec["stderr_tail"] = p.stderr[-3000:]
    rec["log_tail"] = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()][-10:]
    return rec


def history(run_dir: Path) -> List[Dict[str, Any]]:
    path = run_dir / "history.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def search(work: Path, tag: str, device: str, overrides: List[str], *, epochs: int = 3, extra: Optional[List[str]] = None,
           steps: int = 25) -> Dict[str, Any]:
    out = work / tag
    rec = atldas(["search", "--space", "matting", "--device", device, "--epochs", str(epochs), "--out", str(out),
                  "--force", *(extra or []), *sets_(*SHORT, *overrides)])
    rows = history(out)
    after = [r["time/epoch_s"] for r in rows[1:] if "time/epoch_s" in r]  # epochs after the warm-up
    rec.update(device=device, sets=overrides, epochs=len(rows),
               s_per_step=round(sum(after) / (len(after) * steps), 4) if after else None,
               warmup_epoch_s=round(rows[0]["time/epoch_s"], 2) if rows else None,
               loss_weights=rows[-1].get("loss/weights") if rows else None)
    g = out / "genotype.json"
    if g.exists():
        gen = json.loads(g.read_text())
        rec.update(genotype_macs=gen.get("cost", {}).get("macs"))
    return rec


def retrain(work: Path, genotype: Path, amp: str, device: str) -> Dict[str, Any]:
    out = work / f"retrain_{amp}"
    rec = atldas(["retrain", str(genotype), "--device", device, "--epochs", "2", "--out", str(out), "--force",
                  *sets_("steps_per_epoch=40", f"amp={amp}")])
    rows = history(out)
    rec.update(amp=amp, s_per_step=round(sum(r["time/train_s"] for r in rows) / (40 * len(rows)), 4) if rows else None,
               loss=[round(r.get("loss/total", float("nan")), 4) for r in rows],
               val_sad=[round(r.get("val/SAD", float("nan")), 3) for r in rows])
    return rec


def read_u8(path: Path):
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(path), dtype=np.int32)


def compare_folders(a: Path, b: Path) -> Dict[str, Any]:
    """How many pixels of the same-named PNGs differ, and by how many 8-bit levels at most."""
    import numpy as np
    files = sorted(p.name for p in a.glob("*.png"))
    if not files or sorted(p.name for p in b.glob("*.png")) != files:
        return {"ok": False, "error": f"{a} and {b} hold different files"}
    diff = [np.abs(read_u8(a / f) - read_u8(b / f)) for f in files]
    n = sum(d.size for d in diff)
    return {"ok": True, "images": len(files), "max_levels": int(max(d.max() for d in diff)),
            "frac_pixels_differ": float(sum((d > 0).sum() for d in diff) / n),
            "mean_abs_levels": float(sum(d.sum() for d in diff) / n)}


def evaluate(work: Path, model: Path, ckpt: Path, tag: str, device: str, amp: bool) -> Dict[str, Any]:
    pred, js = work / f"pred_{tag}", work / f"eval_{tag}.json"
    shutil.rmtree(pred, ignore_errors=True)
    rec = atldas(["eval", "--model", str(model), "--checkpoint", str(ckpt), "--data", "synthetic", "--device", device,
                  "--save-pred", str(pred), "--json", str(js), *(["--amp"] if amp else [])])
    if js.exists():
        s = json.loads(js.read_text())
        rec.update({k: s[k] for k in ("SAD", "MSE", "Grad", "Conn", "count")})
    return rec


def write_photo(work: Path, size: int) -> Dict[str, Path]:
    """One synthetic test image and its trimap as PNG files."""
    sys.path.insert(0, str(ROOT))
    from atldas.data.io import write_rgb, write_trimap
    from atldas.data.synthetic import SyntheticMatting
    s = SyntheticMatting(size=size, length=1, split="test", seed=7).sample(0)
    img, tri = work / "photo" / "image", work / "photo" / "trimap"
    img.mkdir(parents=True, exist_ok=True)
    tri.mkdir(parents=True, exist_ok=True)
    write_rgb(img / "p.png", s["image"].transpose(1, 2, 0))
    write_trimap(tri / "p.png", s["trimap"][0])
    return {"image": img / "p.png", "trimap": tri / "p.png"}


def bench(work: Path, size: int, models: List[str], device: str) -> Dict[str, Any]:
    js = work / f"bench_{size}.json"
    rec = atldas(["bench", *models, "--size", str(size), "--device", device, "--json", str(js)], timeout=300)
    if js.exists():
        rec["models"] = [{k: r.get(k) for k in ("model", "params", "macs", "latency_ms", "gmacs_per_s",
                                                  "ceiling_gmacs_per_s", "device_name")}
                         for r in json.loads(js.read_text())]
    return rec


def env_info() -> Dict[str, Any]:
    import torch
    info: Dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1), sm=f"{p.major}.{p.minor}",
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    bf16=torch.cuda.is_bf16_supported())
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--work", default="/tmp/gpu_check", help="scratch folder (emptied first)")
    ap.add_argument("--json", help="write the records to this file")
    ap.add_argument("--device", default="cuda", help="the device under test (cpu: a dry run of the script)")
    ap.add_argument("--skip", nargs="*", default=[], help="steps to leave out: search cpu big retrain eval "
                    "predict bench bench2048 lut")
    a = ap.parse_args()
    work, dev = Path(a.work), a.device
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: Dict[str, Any] = {"env": env_info()}
    print(json.dumps(res["env"]), flush=True)

    def step(name: str, fn) -> None:
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as exc:  # a failed step is a finding; the others still run
            res[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        r = res[name]
        print(f"[{time.perf_counter() - t:6.1f} s] {name}: " + json.dumps(
            {k: v for k, v in r.items() if k not in ("stderr_tail", "log_tail")} if isinstance(r, dict) else r),
            flush=True)
        if a.json:  # after every step: a run stopped from outside keeps what it measured
            Path(a.json).write_text(json.dumps(res, indent=1, default=str))
        if isinstance(r, dict) and not r.get("ok", True):
            print("\n".join(r.get("log_tail", [])) + "\n" + r.get("stderr_tail", "")[-1500:], flush=True)

    if "search" not in a.skip:
        step("search_bf16", lambda: search(work, "search_bf16", dev, ["amp=auto"]))
        step("search_fp32", lambda: search(work, "search_fp32", dev, ["amp=off"]))
    if "cpu" not in a.skip:
        step("search_cpu", lambda: search(work, "search_cpu", "cpu", []))
    if "big" not in a.skip:
        step("search_b32_256", lambda: search(work, "search_big", dev, ["amp=auto", "batch_size=32", "crop=256"],
                                              epochs=2))
    run_dir = work / "search_bf16"
    if not (run_dir / "genotype.json").exists():
        run_dir = Path("cheapmatting")  # the search failed: retrain the released network instead
    if "retrain" not in a.skip:
        for amp in ("bf16", "fp16", "off"):
            step(f"retrain_{amp}", lambda amp=amp: retrain(work, run_dir, amp, dev))
    ckpt = work / "retrain_off" / "best.pt"
    if "eval" not in a.skip and ckpt.exists():
        step("eval_cuda", lambda: evaluate(work, run_dir, ckpt, "cuda", dev, False))
        step("eval_cuda_amp", lambda: evaluate(work, run_dir, ckpt, "cuda_amp", dev, True))
        step("eval_cpu", lambda: evaluate(work, run_dir, ckpt, "cpu", "cpu", False))
        step("pred_cuda_vs_cpu", lambda: compare_folders(work / "pred_cuda", work / "pred_cpu"))
        step("pred_cuda_amp_vs_cpu", lambda: compare_folders(work / "pred_cuda_amp", work / "pred_cpu"))
    if "predict" not in a.skip and ckpt.exists():
        photo = write_photo(work, 2048)
        common = ["predict", "--model", str(run_dir), "--checkpoint", str(ckpt), "--image", str(photo["image"]),
                  "--trimap", str(photo["trimap"]), "--device", dev, "--no-cutout"]
        step("predict_2048", lambda: atldas([*common, "--out", str(work / "pw")]))
        step("predict_2048_tile512", lambda: atldas([*common, "--tile", "512", "--out", str(work / "pt")]))
        step("predict_tiles_vs_whole", lambda: compare_folders(work / "pw", work / "pt"))
    if "bench" not in a.skip:
        step("bench_1024", lambda: bench(work, 1024, ["cheapmatting", "aematter_small", "aematter", str(run_dir)], dev))
    if "bench2048" not in a.skip:
        step("bench_2048", lambda: bench(work, 2048, ["cheapmatting", "aematter"], dev))
    if "lut" not in a.skip:
        lut = work / "lut.json"
        step("lut_build", lambda: atldas(["lut", "build", "--space", "matting", "--device", dev, "--size", "1024",
                                          "--check", "3", "--out", str(lut)], timeout=300))
        if lut.exists():
            table = json.loads(lut.read_text())
            ref = table.get("reference", {}).get("whole_ms") or table.get("whole_ms")
            res["lut_build"]["reference_whole_ms"] = ref
            if ref:
                step("search_latency", lambda: search(work, "search_latency", dev, ["amp=auto"], epochs=2, extra=[
                    "--target-latency-ms", f"{0.9 * float(ref):.3f}", "--lut", str(lut)]))
    bad = [k for k, v in res.items() if isinstance(v, dict) and v.get("ok") is False]
    res["failed"] = bad
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    print("failed steps: " + (", ".join(bad) or "none"), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
