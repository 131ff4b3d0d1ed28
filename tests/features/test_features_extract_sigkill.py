"""`pipeline.py --stage extract` killed with SIGKILL mid-run, then rerun: the same file as a clean run.

The video list holds one missing file, so every complete run also shows the command's
failure report: exit status 1 and one line naming failed.tsv.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from features.extract import ExtractionFailed, run_extract
from formats.features import FeatureStore

REPO_ROOT = Path(__file__).resolve().parents[2]


def command(settings, work_dir, cache_dir, videos, num_workers):
    return [sys.executable, str(REPO_ROOT / "pipeline.py"), "--config",
            str(REPO_ROOT / "configs" / "synthetic-tiny.yaml"), "--stage", "extract", *settings,
            f"runtime.work_dir={work_dir}", f"runtime.cache_dir={cache_dir}", f"extract.videos={videos}",
            f"runtime.num_workers={num_workers}", "extract.clips_per_chunk=8", "extract.batch_size=4"]


def environment():
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")


def run_to_end(settings, work_dir, cache_dir, videos):
    result = subprocess.run(command(settings, work_dir, cache_dir, videos, 0), cwd=REPO_ROOT,
                            env=environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"stage extract: 1 of 6 videos failed, see {work_dir}/features/failed.tsv")


def complete_videos(features_dir: Path) -> set[str]:
    """What a rerun must not redo: videos of the main file plus finished parts."""
    done = {path.name[:-len(".h5")] for path in (features_dir / "features.h5.parts").glob("*.h5")}
    if (features_dir / "features.h5").exists():
        with FeatureStore(features_dir / "features.h5") as store:
            done |= set(store.video_ids)
    return done


def run_and_kill(settings, work_dir, cache_dir, videos, after_complete: int) -> set[str]:
    """Start a run with a decoding worker, SIGKILL it once `after_complete` more videos are complete."""
    before = len(complete_videos(work_dir / "features"))
    process = subprocess.Popen(command(settings, work_dir, cache_dir, videos, 1), cwd=REPO_ROOT,
                               env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(complete_videos(work_dir / "features")) < before + after_complete:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return complete_videos(work_dir / "features")


def last_already_complete(log_file: Path) -> int:
    counts = re.findall(r"(\d+) already complete, \d+ to do", log_file.read_text())
    return int(counts[-1])


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_clean_result(tmp_path, tiny_videos, synthetic_cache, make_run,
                                                    extract_settings):
    tiny_videos = tiny_videos.head(5)
    videos = tmp_path / "videos.txt"
    videos.write_text("".join(f"{path}\n" for path in [*tiny_videos["path"], tmp_path / "missing.mp4"]))
    cfg, clean_paths = make_run(tmp_path / "clean", f"extract.videos={videos}", "extract.clips_per_chunk=8",
                                "extract.batch_size=4")
    with pytest.raises(ExtractionFailed):
        run_extract(cfg, clean_paths)  # in process: the same computation, without a second start-up

    work_dir = tmp_path / "killed"
    done = run_and_kill(extract_settings, work_dir, synthetic_cache, videos, after_complete=2)
    assert 2 <= len(done) < len(tiny_videos)
    run_to_end(extract_settings, work_dir, synthetic_cache, videos)
    assert last_already_complete(work_dir / "logs" / "extract.log") == len(done)  # none of them redone

    resumed_h5 = work_dir / "features" / "features.h5"
    with FeatureStore(clean_paths.features_h5) as clean, FeatureStore(resumed_h5) as resumed:
        assert resumed.video_ids == clean.video_ids == sorted(tiny_videos["video_id"])
        assert resumed.attrs["checkpoint_sha256"] == clean.attrs["checkpoint_sha256"]
        for video_id in clean.video_ids:
            for got, expected in zip(resumed.get(video_id), clean.get(video_id)):
                np.testing.assert_array_equal(got, expected, err_msg=video_id)
            assert resumed.video_attrs(video_id) == clean.video_attrs(video_id)
    assert not (work_dir / "features" / "features.h5.parts").exists()
    assert (work_dir / "features" / "failed.tsv").read_text().splitlines()[1].startswith("missing\t")
