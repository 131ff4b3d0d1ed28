"""Session fixtures: the real EK100 files and one cache folder for generated synthetic sets."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as pipeline.py: before torch loads OpenMP

import pytest
from testkit import EK100_DIR


@pytest.fixture(scope="session")
def ek100_dir() -> Path:
    if not (EK100_DIR / "EPIC_100_validation.csv").is_file():
        pytest.skip(f"real EK100 annotation files not found in {EK100_DIR}")
    return EK100_DIR


@pytest.fixture
def spill_dir(tmp_path, monkeypatch):
    """The folder temporary copies of video streams go to during the test (``tempfile.gettempdir()``)."""
    import tempfile

    folder = tmp_path / "spill"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def decord_opens(monkeypatch):
    """The URIs decord.VideoReader is constructed with during the test."""
    import decord

    opens = []
    real_reader = decord.VideoReader

    def counting_reader(uri, *args, **kwargs):
        opens.append(uri)
        return real_reader(uri, *args, **kwargs)

    monkeypatch.setattr(decord, "VideoReader", counting_reader)
    return opens


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> Path:
    """One cache folder for the generated synthetic sets of the whole test session."""
    return tmp_path_factory.mktemp("cache")


TINY_RUN_OVERRIDES = ("finetune.epochs=2", "bmn.epochs=2", "runtime.num_workers=0")


@pytest.fixture(scope="session")
def trained_tiny_run(tmp_path_factory, synthetic_cache) -> Path:
    """A whole run of the tiny synthetic config (``--stage all``, in a subprocess) that nobody disturbs:
    what disturbed runs must end up equal to, and the trained run detection tests start from."""
    import os
    import subprocess
    import sys

    from testkit import REPO_ROOT

    work_dir = tmp_path_factory.mktemp("trained") / "work"
    command = [sys.executable, str(REPO_ROOT / "pipeline.py"), "--config",
               str(REPO_ROOT / "configs/synthetic-tiny.yaml"), "--stage", "all", f"runtime.work_dir={work_dir}",
               f"runtime.cache_dir={synthetic_cache}", *TINY_RUN_OVERRIDES]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir
