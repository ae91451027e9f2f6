"""Regenerate the README's figures that come from a command, and tell when they drift.

    python experiments/readme_figures.py                      # rewrite the README's marked blocks
    python experiments/readme_figures.py --check              # exit 1 with a diff when they differ
    make demo && python experiments/readme_figures.py --demo runs/demo   # after a new demo search

A block of the README between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` is written by
this script, never by hand:

- ``demo``: the default search's derived genotype (``make demo``: ``atldas search --space matting``,
  seed 0), its hash, MACs, share of the 25 G budget, repair swaps and parameters, read from
  ``experiments/results/demo_genotype.json``, the copy of the demo run's ``genotype.json`` that
  ``--demo RUN_DIR`` refreshes;
- ``bench``: ``atldas bench --no-latency`` at 1x6x1024x1024 of the registered baselines and of the
  demo genotype (params and MACs, counted on the meta device: deterministic, a few seconds).

``tests/test_readme_figures.py`` runs the rendering and fails when the README differs from it (code that
changes a count, or a demo genotype file that changed without the README); its slow twin reruns the
demo search and fails when the code no longer derives the stored genotype. The search's float sums,
and so its path, depend on the CPU (oneDNN picks its kernels by the instruction set), so another kind of
CPU derives another genotype from the same code: ``--demo-cpu RUN_DIR`` records a demo run's genotype
for this kind of CPU (:func:`cpu_kind`) in ``experiments/results/demo_genotype_by_cpu.json``, and the
slow test accepts the README's genotype or the one recorded for the CPU it runs on.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

README = ROOT / "README.md"
DEMO = ROOT / "experiments" / "results" / "demo_genotype.json"
#: CPU kind -> the demo genotype it derives ({"hash", "macs", "machine"}), beside the README's (module docstring).
DEMO_BY_CPU = ROOT / "experiments" / "results" / "demo_genotype_by_cpu.json"
#: Registered models of the bench block, with the label the README gives them.
BENCH_MODELS = (("cheapmatting", "cheapmatting (released layout)"), ("cheapmatting_darts_v2", "cheapmatting_darts_v2"),
                ("aematter", "aematter (released layout)"), ("cnn_baseline", "cnn_baseline"))
_BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)


def cpu_kind() -> str:
    """This CPU's kind as far as float results go: vendor and the instruction set torch dispatches to."""
    import torch

    vendor = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{vendor} {torch.backends.cpu.get_cpu_capability()}"


def _recorded() -> Dict[str, Dict]:
    return json.loads(DEMO_BY_CPU.read_text()) if DEMO_BY_CPU.exists() else {}


def demo_hashes() -> Dict[str, str]:
    """The demo genotype hashes accepted here: the README's and the one recorded for this CPU kind."""
    from atldas.genotype import Genotype

    kind, recorded = cpu_kind(), _recorded()
    out = {"README": Genotype.from_json(_demo()).hash()}
    if kind in recorded:
        out[kind] = recorded[kind]["hash"]
    return out


def record_demo_for_cpu(run_dir: Path, machine: str) -> str:
    """Record ``run_dir``'s genotype as the one this kind of CPU derives; returns the CPU kind."""
    from atldas.genotype import Genotype

    g = Genotype.load(Path(run_dir) / "genotype.json")
    kind, recorded = cpu_kind(), _recorded()
    recorded[kind] = {"hash": g.hash(), "macs": (g.cost or {}).get("macs"), "machine": machine}
    DEMO_BY_CPU.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    return kind


def _demo() -> Dict:
    return json.loads(DEMO.read_text())


def render_demo() -> str:
    from atldas.genotype import Genotype

    g = _demo()
    cost = g["cost"]
    target = cost["target"]["value"]
    swaps = cost.get("repair", {}).get("swaps", 0)
    h, w = cost["input"][-2:]
    return (f"Demo genotype (`make demo`, seed 0, two torch threads): **{Genotype.from_json(g).hash()}**, "
            f"{cost['macs'] / 1e9:.3f} G MACs ({cost['macs'] / target:.3f} of the {target / 1e9:g} G budget, "
            f"{'no repair swap' if not swaps else f'{swaps} repair swap(s)'}), {cost['params'] / 1e6:.3f} M params "
            f"at 1x6x{h}x{w} (`experiments/results/demo_genotype.json`).\n")


def render_bench() -> str:
    from atldas.bench import count_cost
    from atldas.models.zoo import resolve_model

    rows = ["| model | params | G MACs |", "| --- | --- | --- |"]
    for name, label in [*BENCH_MODELS, (str(DEMO), "searched (demo genotype)")]:
        c = count_cost(resolve_model(name), size=1024)
        rows.append(f"| {label} | {c['params']:,} | {c['macs'] / 1e9:.3f} |")
    return "\n".join(rows) + "\n"


RENDERERS: Dict[str, Callable[[], str]] = {"demo": render_demo, "bench": render_bench}


def render(text: str) -> str:
    """``text`` (the README) with every marked block regenerated; an unknown block name is an error."""
    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise SystemExit(f"README block {name!r} has no renderer; known: {', '.join(RENDERERS)}")
        return m.group(1) + RENDERERS[name]() + m.group(4)

    out, n = _BLOCK.subn(one, text)
    missing = set(RENDERERS) - {m.group("name") for m in _BLOCK.finditer(text)}
    if missing:
        raise SystemExit(f"README has no block for {', '.join(sorted(missing))}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare only: exit 1 with a diff when the README differs")
    ap.add_argument("--demo", metavar="RUN_DIR", help="take the demo genotype from this search run first")
    ap.add_argument("--demo-cpu", metavar="RUN_DIR", help="record this demo run's genotype for this kind of CPU "
                                                          "(the slow drift test's second accepted answer)")
    ap.add_argument("--machine", default="", help="with --demo-cpu: a few words on the machine")
    args = ap.parse_args(argv)
    if args.check and (args.demo or args.demo_cpu):  # --check writes nothing
        ap.error("--check compares only; --demo and --demo-cpu record a genotype: run them without --check")
    if args.demo:
        cost = json.loads((Path(args.demo) / "genotype.json").read_text()).get("cost") or {}
        if not isinstance(cost.get("target"), dict):
            ap.error(f"--demo {args.demo}: its genotype has no budget; the demo genotype is of the default search "
                     "(make demo), under its 25 G budget")
    if args.demo_cpu:
        print(f"recorded the demo genotype of {record_demo_for_cpu(Path(args.demo_cpu), args.machine)}")
    if args.demo:
        shutil.copyfile(Path(args.demo) / "genotype.json", DEMO)
    text = README.read_text()
    new = render(text)
    if new == text:
        print("README figures are up to date")
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), "README.md",
                                                   "regenerated"))
        return 1
    README.write_text(new)
    print("README figures rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
