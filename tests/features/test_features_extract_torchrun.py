"""`torchrun --nproc_per_node=2` extraction on CPU (gloo) gives the features of one process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.extract import run_extract
from formats.features import FeatureStore

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ranks_give_the_single_process_features(tmp_path, make_run, synthetic_cache, extract_settings):
    settings = ["dataset.subsets=[validation]", "extract.dtype=float32", "extract.clips_per_chunk=16",
                "extract.batch_size=8"]
    cfg, single = make_run(tmp_path / "single", *settings)
    run_extract(cfg, single)

    work_dir = tmp_path / "ranks"
    # The synthetic set is already in synthetic_cache: the ranks only read it.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO_ROOT / "pipeline.py"), "--config", str(REPO_ROOT / "configs" / "synthetic-tiny.yaml"),
         "--stage", "extract", *extract_settings, f"runtime.work_dir={work_dir}",
         f"runtime.cache_dir={synthetic_cache}", *settings],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1"),
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    features_dir = work_dir / "features"
    logs = [(work_dir / "logs" / name).read_text() for name in ("extract.log", "extract.rank1.log")]
    shares = [int(re.search(rf"shard {rank} of 2: (\d+) videos,", text)[1]) for rank, text in enumerate(logs)]
    assert sorted(shares) == [1, 2]  # each rank extracted its share (the longest video alone)
    assert not [path.name for path in features_dir.iterdir() if ".rank" in path.name]  # merged and removed
    assert (features_dir / ".done.json").exists()
    with FeatureStore(features_dir / "features.h5") as merged, FeatureStore(single.features_h5) as expected:
        assert merged.video_ids == expected.video_ids
        assert len(expected.video_ids) == 3
        for video_id in expected.video_ids:
            for got, want in zip(merged.get(video_id), expected.get(video_id)):
                np.testing.assert_array_equal(got, want, err_msg=video_id)
