"""Shared fixtures: tiny synthetic data, a finished tiny run, the real C-NMC sample when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import TINY_BACKBONE

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path(os.environ.get("CNMC_SAMPLE_DIR", REPO.parent / "shared" / "cnmc-sample"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # an entry point, as the CLI and the dashboard: quiet TensorFlow
os.environ["RELEASE_DIR"] = ""  # pages see no released model unless a test gives one (tests/test_release.py)

TINY = {"backbone": TINY_BACKBONE, "image_size": 32, "weights": "none", "epochs": 1, "batch_size": 8}


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifacts folder for the whole session, so the image cache is shared between tests."""
    root = tmp_path_factory.mktemp("artifacts")
    os.environ["ARTIFACTS_DIR"] = str(root)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "tiny", per_class=16, patients=4, seed=7)


@pytest.fixture(scope="session")
def tiny_config(tiny_data: Path):
    from pipeline.core.config import TrainConfig

    return TrainConfig(data_dir=str(tiny_data), **TINY)


@pytest.fixture(scope="session")
def finished_run(tiny_config, artifacts_root: Path) -> Path:
    """A tiny completed run (Lite0, 32 px, random weights, one epoch), trained once per session."""
    from pipeline.training.train import train

    return train(tiny_config, artifacts_root / "runs").path


@pytest.fixture
def cnmc_sample() -> Path:
    if not (SAMPLE / "training_data").is_dir():
        pytest.skip(f"real C-NMC sample not found at {SAMPLE}")
    return SAMPLE
