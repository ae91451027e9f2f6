"""How good are retrained networks on real photos? Scores against closed form and the trivial matte.

    python experiments/real_photo_quality.py --data DIR --run RUN [--run RUN ...] [--json FILE]

``DIR`` is any test set the readers know (e.g. a generic ``image/``, ``trimap/``, ``alpha/`` folder
of real photos with their trimaps and reference mattes); each ``RUN`` is a retrain run directory,
scored with its ``best.pt``. Beside the runs it scores pymatting's closed form (``closed_form``) and
the trivial prediction (alpha = 0.5 in the unknown region), on the same images with the DIM metrics,
and prints per-image SAD, the means, and on how many images each network is worse than trivial.
No real photos ship with atldas: the README's figure names the photos it was measured on.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict

from atldas.data.datasets import open_dataset
from atldas.errors import AtldasError
from atldas.matting import metrics
from atldas.matting.scoring import evaluate_model, score_dataset, trivial_alpha
from atldas.utils.atomic import write_json


def score_all(data: str, runs: list, threads: int = 1) -> Dict[str, Dict]:
    """{row name: eval result (means and ``per_image``)} for each run, closed form and trivial."""
    import torch

    torch.set_num_threads(threads)
    rows: Dict[str, Dict] = {}
    for run in runs:
        rows[Path(run).name] = evaluate_model(model=run, checkpoint=Path(run) / "best.pt", data=data,
                                              progress=False)
    rows["closed_form"] = evaluate_model(model="closed_form", checkpoint=None, data=data, progress=False)
    per, _ = score_dataset(open_dataset(data, split="test"), trivial_alpha)
    rows["trivial (0.5)"] = metrics.summarise(per)
    return rows


def table(rows: Dict[str, Dict]) -> str:
    """A markdown table: per-image SAD, mean SAD and MSE, images worse than trivial."""
    names = sorted(next(iter(rows.values()))["per_image"])
    trivial = rows["trivial (0.5)"]["per_image"]
    head = ["what", *[f"SAD {Path(n).stem}" for n in names], "mean SAD", "mean MSE x1e3", "worse than trivial"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for row, r in rows.items():
        per = r["per_image"]
        worse = sum(per[n]["SAD"] > trivial[n]["SAD"] for n in names)
        cells = [row, *[f"{per[n]['SAD']:.2f}" for n in names], f"{r['SAD']:.2f}", f"{r['MSE'] * 1e3:.2f}",
                 f"{worse} of {len(names)}" if row != "trivial (0.5)" else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--data", required=True, help="test set folder with real photos, trimaps and mattes")
    p.add_argument("--run", action="append", default=[], help="retrain run directory (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write every score there")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        rows = score_all(args.data, args.run, args.threads)
    except AtldasError as exc:  # a missing run, checkpoint or data folder: one line, as the CLI says it
        print(f"real_photo_quality: error: {exc}", file=sys.stderr)
        return 2
    print(f"DIM metrics on {args.data} (SAD / 1000 as in DIM):")
    print(table(rows))
    if args.json:
        write_json(args.json, {"data": str(args.data), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
