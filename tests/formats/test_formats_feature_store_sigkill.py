"""A real writer process killed with SIGKILL at random moments: the rerun finishes with identical content."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from formats.features import FeatureStore

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_VIDEOS = 40

# The writer loop of an extraction run, with deterministic "features" per video. It appends a video id
# to the log after finish_video returns, so a video logged twice would mean a complete video was redone.
WRITER_SCRIPT = """
import sys
import numpy as np
from formats.feature_writer import FeatureWriter

path, num_videos, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
attrs = dict(backbone="tada2d", checkpoint_sha256="0" * 64, fps=30.0, num_frames=8, interval=8, stride=16,
             short_side=128, dim=256, config="seed: 1\\n")
with FeatureWriter(path, attrs) as writer:
    done = set(writer.completed_video_ids())
    for index in range(num_videos):
        video_id = f"video_{index:03d}"
        if video_id in done:
            continue
        num_clips = 60 + (index * 37) % 200
        features = np.random.default_rng(index).standard_normal((num_clips, 256))
        times = (16 * np.arange(num_clips) + 28) / 30.0
        writer.begin_video(video_id, num_clips * 16 / 30.0, 29.97, num_clips)
        for start in range(0, num_clips, 32):
            writer.write_chunk(video_id, start, features[start:start + 32], times[start:start + 32])
        writer.finish_video(video_id)
        with open(log_path, "a") as log:
            log.write(video_id + "\\n")
"""


def start_writer(script, out_path, log_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, str(script), str(out_path), str(NUM_VIDEOS), str(log_path)],
                            cwd=REPO_ROOT, env=env)


def run_to_end(script, out_path, log_path):
    process = start_writer(script, out_path, log_path)
    assert process.wait(timeout=60) == 0


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def read_all(path):
    with FeatureStore(path) as store:
        content = {video_id: (*store.get(video_id), store.video_attrs(video_id))
                   for video_id in store.video_ids}
        return content, store.attrs


def assert_same_store(path, reference_path):
    (got, got_attrs), (expected, expected_attrs) = read_all(path), read_all(reference_path)
    assert got_attrs == expected_attrs
    assert sorted(got) == sorted(expected) == [f"video_{index:03d}" for index in range(NUM_VIDEOS)]
    for video_id, (features, times, attrs) in expected.items():
        np.testing.assert_array_equal(got[video_id][0], features, err_msg=video_id)
        np.testing.assert_array_equal(got[video_id][1], times, err_msg=video_id)
        assert got[video_id][2] == attrs


def assert_no_video_redone(log_path):
    logged = log_path.read_text().split()
    assert len(logged) == len(set(logged)), "a complete video was computed again"


@pytest.fixture(scope="module")
def writer_script(tmp_path_factory):
    """The writer script and the file of an uninterrupted run of it."""
    folder = tmp_path_factory.mktemp("sigkill")
    script = folder / "writer.py"
    script.write_text(WRITER_SCRIPT)
    reference = folder / "reference" / "features.h5"
    reference.parent.mkdir()
    started = time.monotonic()
    run_to_end(script, reference, folder / "reference.log")
    full_run_sec = time.monotonic() - started
    started = time.monotonic()  # a run with nothing left to do: the start-up time, nothing written
    run_to_end(script, reference, folder / "reference.log")
    return script, reference, time.monotonic() - started, full_run_sec


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun(tmp_path, writer_script):
    script, reference, startup_sec, full_run_sec = writer_script
    rng = random.Random(20220125)
    for trial in range(3):
        out = tmp_path / f"trial{trial}" / "features.h5"
        out.parent.mkdir()
        log = out.parent / "videos.log"
        for _ in range(2):  # two kills in a row, each at a random moment of a run
            process = start_writer(script, out, log)
            time.sleep(rng.uniform(0.8 * startup_sec, full_run_sec))
            kill(process)
        run_to_end(script, out, log)
        assert_same_store(out, reference)
        assert_no_video_redone(log)


@pytest.mark.slow
@pytest.mark.parametrize("watched_suffix", [".parts", "consolidation temporary"])
def test_sigkill_mid_video_and_mid_consolidation(tmp_path, writer_script, watched_suffix):
    """Kill as soon as a video's temporary part file, or the consolidation's merge file, is seen."""
    script, reference, _, _ = writer_script
    out = tmp_path / "features.h5"
    log = tmp_path / "videos.log"
    process = start_writer(script, out, log)
    watched = out.with_name(out.name + ".parts")
    observed = False
    deadline = time.monotonic() + 30
    while not observed and time.monotonic() < deadline and process.poll() is None:
        if watched_suffix == ".parts":
            observed = watched.exists() and any(watched.glob("*.h5.tmp"))
        else:  # runstate.atomic's temporary file of the main file: .<random>.features.h5.tmp
            observed = any(out.parent.glob(f".*.{out.name}.tmp"))
        time.sleep(0.0005)
    kill(process)
    assert observed, f"the writer finished before {watched_suffix} was seen"
    run_to_end(script, out, log)
    assert_same_store(out, reference)
    assert_no_video_redone(log)
