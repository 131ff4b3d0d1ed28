"""Fixtures of the extract-stage tests: the tiny synthetic set (generated once per session) and configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.load import load_config
from runstate.paths import RunPaths

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO_ROOT / "configs" / "synthetic-tiny.yaml"
# Small and single-threaded (two CPU cores are shared by the whole suite), with the clip settings pinned
# so that the tests' hand-computed expectations do not follow edits of the config files. The synthetic
# videos themselves (native fps, size, length) are the config's.
SETTINGS = ["extract.weights=random", "runtime.num_threads=1", "runtime.num_workers=0",
            "model.name=tada2d", "model.depth=18", "model.width=4", "model.num_frames=4", "model.interval=4",
            "extract.fps=30", "extract.stride=8", "extract.short_side=32", "extract.crop=none"]


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> Path:
    """The cache dir holding the generated tiny synthetic set (9 videos of 8-10 s, 32x32 px, 30 fps)."""
    from data.dataset import load_dataset

    cache_dir = tmp_path_factory.mktemp("synthetic-cache")
    load_dataset(load_config(TINY_CONFIG, [f"runtime.cache_dir={cache_dir}"]))
    return cache_dir


@pytest.fixture(scope="session")
def tiny_videos(synthetic_cache):
    """The video table of the tiny set (video_id, path, duration, fps, subset)."""
    from data.dataset import load_dataset

    return load_dataset(load_config(TINY_CONFIG, [f"runtime.cache_dir={synthetic_cache}"])).videos


@pytest.fixture
def extract_settings() -> list[str]:
    """The overrides every extract test starts from (see ``SETTINGS``)."""
    return list(SETTINGS)


@pytest.fixture
def make_run(synthetic_cache):
    """``make_run(work_dir, *overrides) -> (cfg, paths)`` for the tiny config, ``SETTINGS`` first."""

    def make(work_dir: Path, *overrides: str):
        cfg = load_config(TINY_CONFIG, [*SETTINGS, f"runtime.work_dir={work_dir}",
                                        f"runtime.cache_dir={synthetic_cache}", *overrides])
        return cfg, RunPaths.from_config(cfg)

    return make
