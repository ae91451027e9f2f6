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
demo search and fails when the code no longer derives the stored genotype.
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
#: Registered models of the bench block, with the label the README gives them.
BENCH_MODELS = (("cheapmatting", "cheapmatting (released layout)"), ("cheapmatting_darts_v2", "cheapmatting_darts_v2"),
                ("aematter", "aematter (released layout)"), ("cnn_baseline", "cnn_baseline"))
_BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)


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
    args = ap.parse_args(argv)
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
