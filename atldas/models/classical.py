"""Classical (non-learned) matting baselines: closed-form matting (Levin et al. 2008) via pymatting.

``closed_form`` is a MODEL like the learned ones (registered in :mod:`atldas.models.zoo`): a
network that has no parameters and runs
:func:`closed_form_alpha` on every image of the 6-channel batch, so ``atldas eval`` and
``atldas predict`` score and run it beside the networks (no ``--checkpoint`` needed)::

    atldas eval --model closed_form --data /data/AIM-500 --json cf.json

Cost: closed-form matting solves a sparse linear system with one unknown per unknown-region pixel
(the matting Laplacian over 3x3 windows, conjugate gradients with an incomplete-Cholesky
preconditioner), on the CPU, one image at a time. Time and memory grow with the number of unknown
pixels and the conditioning of the system, not only with the image size. Measured on a busy 2-core
CPU: 128x128 and 512x512 synthetic images (a few thousand to 20k unknown pixels) take milliseconds; a
1024x1024 one with 85k unknown pixels about 3 s and 1 GB; a 2048x2048 one with 245k unknown pixels
(Composition-1K-sized) about 40 s and 2.3 GB, and pymatting prints "PERFORMANCE WARNING" lines when
its preconditioner needs a diagonal shift. Scoring all 1000 Composition-1K images therefore takes
about 11 hours: score a subset first (``atldas eval --limit N``). ``device`` does not matter: it always
runs on the CPU (the result is moved to the input's device). pymatting compiles its kernels with numba on
first use (cached afterwards).
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import torch
from torch import Tensor, nn

from atldas.data.io import normalize_trimap
from atldas.errors import DataError

log = logging.getLogger("atldas")

__all__ = ["closed_form_alpha", "ClosedFormMatting"]


def closed_form_alpha(image: np.ndarray, trimap: np.ndarray, *, epsilon: float = 1e-7,
                      maxiter: int = 10000) -> np.ndarray:
    """Closed-form matting of one image (``pymatting.estimate_alpha_cf``).

    Args:
        image: ``(H, W, 3)`` RGB, float in [0, 1] (uint8 is divided by 255).
        trimap: ``(H, W)`` uint8 trimap, 0 background / 128 unknown / 255 foreground (near-greys are
            mapped as the readers map them).
        epsilon: regularisation of the matting Laplacian (pymatting's default).
        maxiter: conjugate-gradient iterations at most.

    Returns:
        ``(H, W)`` float32 alpha in [0, 1]: background 0 and foreground 1 exactly, the unknown region
        solved. Without unknown pixels it is the trimap itself; with background but no foreground
        pixels (or the reverse) the solution is 0 (1) everywhere; without any known pixel the problem
        has no anchor and the unknown region is 0.5.

    Raises:
        DataError: wrong shapes or sizes.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"closed_form: image must be (H, W, 3) RGB, got shape {tuple(img.shape)}")
    tri, _ = normalize_trimap(np.asarray(trimap))
    if tri.shape != img.shape[:2]:
        raise DataError(f"closed_form: image is {img.shape[1]}x{img.shape[0]} but its trimap is "
                        f"{tri.shape[1]}x{tri.shape[0]} (width x height)")
    img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    img = np.ascontiguousarray(np.clip(img, 0.0, 1.0))
    known = np.where(tri == 255, 1.0, 0.0)
    unknown = tri == 128
    if not unknown.any():
        return known.astype(np.float32)
    if unknown.all():
        log.warning("closed_form: the trimap has no known pixels; alpha is 0.5 everywhere")
        return np.full(tri.shape, 0.5, np.float32)
    if not (tri == 255).any() or not (tri == 0).any():
        # one kind of known pixel only: the constant matte of that kind has zero matting energy
        return np.where(unknown, np.float32(1.0 if (tri == 255).any() else 0.0), known).astype(np.float32)
    from pymatting import estimate_alpha_cf  # lazy: pymatting compiles with numba on first use

    t = np.where(unknown, 0.5, known)  # pymatting: <= 0.1 background, >= 0.9 foreground, else unknown
    chatter = io.StringIO()  # pymatting prints "PERFORMANCE WARNING" blocks when its preconditioner shifts
    with contextlib.redirect_stdout(chatter):
        alpha = estimate_alpha_cf(img, t, laplacian_kwargs={"epsilon": epsilon}, cg_kwargs={"maxiter": maxiter})
    if chatter.getvalue().strip():
        log.debug("closed_form (pymatting): %s", " ".join(chatter.getvalue().split())[:300])
    alpha = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)
    return np.where(unknown, alpha, known.astype(np.float32)).astype(np.float32)


class ClosedFormMatting(nn.Module):
    """Closed-form matting as a network: ``(B, 6, H, W)`` RGB + one-hot trimap -> ``(B, 1, H, W)``.

    No parameters, nothing to train; ``load_state_dict({})`` is all a checkpoint can give it.

    Args:
        epsilon: regularisation of the matting Laplacian.
        maxiter: conjugate-gradient iterations at most.
    """

    def __init__(self, *, epsilon: float = 1e-7, maxiter: int = 10000) -> None:
        super().__init__()
        self.epsilon, self.maxiter = float(epsilon), int(maxiter)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 6:
            raise DataError(f"closed_form takes (B, 6, H, W) RGB + one-hot trimap, got {tuple(x.shape)}")
        xs = x.detach().float().cpu().numpy()
        out = []
        for b in range(xs.shape[0]):
            image = xs[b, :3].transpose(1, 2, 0)  # (H, W, 3)
            oh = xs[b, 3:]  # (3, H, W) [bg, unknown, fg]
            tri = np.where(oh[2] > 0.5, 255, np.where(oh[1] > 0.5, 128, 0)).astype(np.uint8)
            out.append(closed_form_alpha(image, tri, epsilon=self.epsilon, maxiter=self.maxiter))
        return torch.from_numpy(np.stack(out)[:, None]).to(device=x.device, dtype=x.dtype)  # (B, 1, H, W)
