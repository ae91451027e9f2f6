"""Test-wide settings and shared fixtures.

One torch thread, so timings do not collapse when another process shares the two cores (OpenMP
threads that wait for a busy core can make a step 30-100x slower).
"""

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 2-epoch ``tiny`` search run directory, shared by the tests that only read it."""
    from atldas.cli import main

    out = tmp_path_factory.mktemp("shared") / "tiny_run"
    assert main(["search", "--space", "tiny", "--epochs", "2", "--no-progress", "--set", "tensorboard=false",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(autouse=True)
def _file_warnings_afresh():
    """Each test sees the warnings of the files it reads (``atldas.data.io.warn_file`` names a file
    once per process)."""
    from atldas.data.io import reset_file_warnings

    reset_file_warnings()
    yield
