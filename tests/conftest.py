"""Shared fixtures: where ../shared lives, generated clips and the reference smoke run.

Every shared fixture lives here (pytest finds them without imports); the helpers they call are in
``tests/support``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = PROJECT_ROOT.parent / "shared"
SPLITS_DIR = SHARED_DIR / "data" / "splits"


@pytest.fixture(scope="session")
def splits_dir() -> Path:
    """The real public split lists; tests that need them skip, saying why, where they are absent."""
    if not SPLITS_DIR.is_dir():
        pytest.skip(f"the public split lists are not at {SPLITS_DIR} (../shared beside the project root)")
    return SPLITS_DIR


@pytest.fixture(autouse=True)
def _seed_everything():
    """Fixed seeds for every test, and torch's thread count restored after it.

    Float results on the CPU depend on the number of threads; a test that changes it must not
    leak the change into the tests after it (or into the subprocesses they compare against).
    """
    import torch

    np.random.seed(0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated clips (``tests.support.protocol_fixtures.make_source``), once per test session."""
    from tests.support.protocol_fixtures import make_source

    return make_source(tmp_path_factory.mktemp("protocol-source") / "clips")


@pytest.fixture(scope="session")
def smoke_reference(tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted single-process run of the reduced smoke suite (a ``SmokeRun``), shared by
    the tests that compare against it (determinism, --resume, --nproc 2)."""
    from tests.support.protocol_fixtures import run_smoke

    return run_smoke(tmp_path_factory.mktemp("smoke-reference"))
