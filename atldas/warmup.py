"""``python -m atldas.warmup``: compile pymatting's numba kernels once (``make setup`` runs it).

Closed-form matting and the foreground estimation of ``atldas predict``'s cut-outs run pymatting,
which compiles its kernels with numba on first use (about two minutes on a 2-core CPU) and caches
them; running both on a tiny image here makes the first real use take seconds.
"""

from __future__ import annotations

import time

import numpy as np

from atldas.matting.inference import estimate_foreground
from atldas.models.classical import closed_form_alpha


def warm() -> float:
    """Run closed-form matting and foreground estimation on a 16 x 16 image; returns the seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 3))
    trimap = np.zeros((16, 16), np.uint8)
    trimap[4:12, 4:12] = 128
    trimap[6:10, 6:10] = 255
    alpha = closed_form_alpha(image, trimap)
    estimate_foreground(image, alpha)
    return time.perf_counter() - t0


if __name__ == "__main__":
    print(f"pymatting kernels compiled and cached in {warm():.1f} s")
