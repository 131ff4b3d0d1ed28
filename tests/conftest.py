"""Session fixtures: the real EK100 files and one cache folder for generated synthetic sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import EK100_DIR


@pytest.fixture(scope="session")
def ek100_dir() -> Path:
    if not (EK100_DIR / "EPIC_100_validation.csv").is_file():
        pytest.skip(f"real EK100 annotation files not found in {EK100_DIR}")
    return EK100_DIR


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> Path:
    """One cache folder for the generated synthetic sets of the whole test session."""
    return tmp_path_factory.mktemp("cache")
