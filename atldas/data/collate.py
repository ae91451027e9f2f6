"""Batching of sample dicts (the DataLoader ``collate_fn`` of search and retrain)."""

from __future__ import annotations

from typing import Any, Dict, List

import torch


def collate(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack a list of sample dicts key by key: tensors and arrays into one tensor with a leading
    batch dimension, anything else (names, paths) into a list."""
    out: Dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        elif hasattr(vals[0], "shape"):  # numpy arrays and scalars
            out[k] = torch.stack([torch.as_tensor(v) for v in vals])
        else:
            out[k] = vals
    return out
