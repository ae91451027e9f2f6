"""Test-wide settings: one torch thread, so timings do not collapse when another process shares the
two cores (OpenMP threads that wait for a busy core can make a step 30-100x slower)."""

import torch

torch.set_num_threads(1)
