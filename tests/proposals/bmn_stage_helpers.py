"""Helpers of the bmn stage tests: a synthetic feature store matching an annotation set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from data.annotations import Annotations
from formats.feature_writer import FeatureWriter

FEATURE_DIM = 16
CLIP_STEP_SEC = 8 / 30  # the tiny config's stride: 8 frames at 30 fps


def write_annotation_json(path: Path, action_sec: tuple[float, float], actions_per_video: int,
                          num_train: int = 6, num_val: int = 3, duration_sec: float = 30.0,
                          seed: int = 0) -> Path:
    """A HACS-format annotation file: ``num_train`` training and ``num_val`` validation videos of
    ``duration_sec``, each with ``actions_per_video`` actions of ``action_sec`` seconds (uniform) placed at
    random, possibly overlapping; returns ``path``."""
    rng = np.random.default_rng(seed)
    database = {}
    for index in range(num_train + num_val):
        lengths = rng.uniform(*action_sec, size=actions_per_video)
        starts = rng.uniform(0.0, duration_sec - lengths)
        database[f"v{index:02d}"] = {
            "subset": "training" if index < num_train else "validation",
            "duration": duration_sec,
            "annotations": [{"label": "act", "segment": [round(float(s), 2), round(float(s + n), 2)]}
                            for s, n in sorted(zip(starts, lengths))],
        }
    path.write_text(json.dumps({"database": database}))
    return path


def write_synthetic_features(annotations: Annotations, path: Path, seed: int = 0) -> None:
    """One clip feature every ``CLIP_STEP_SEC`` per video, ``FEATURE_DIM`` dims.

    Noise everywhere; inside ground-truth segment ``k`` of a video (by clip centre), +2 on
    the four dims of group ``k mod 4``, so that every action is a step up and down in
    its own dims, overlapping actions included.
    """
    rng = np.random.default_rng(seed)
    attrs = dict(backbone="synthetic", checkpoint_sha256="none", fps=30.0, num_frames=4, interval=4, stride=8,
                 short_side=32, dim=FEATURE_DIM)
    with FeatureWriter(path, attrs, dtype="float32") as writer:
        for video in annotations.videos.itertuples():
            times = np.arange(0.5 * CLIP_STEP_SEC, video.duration, CLIP_STEP_SEC)  # (N,)
            features = 0.3 * rng.normal(size=(len(times), FEATURE_DIM))
            segments = annotations.segments[annotations.segments["video_id"] == video.video_id]
            for k, (start, end) in enumerate(segments[["start", "end"]].to_numpy()):
                inside = (times >= start) & (times <= end)
                group = 4 * (k % 4)
                features[inside, group:group + 4] += 2.0
            writer.begin_video(video.video_id, video.duration, 30.0, len(times))
            writer.write_chunk(video.video_id, 0, features, times)
            writer.finish_video(video.video_id)


def random_proposal_metrics(ground_truth: pd.DataFrame, durations: dict[str, float], seed: int = 0) -> dict:
    """AR@1/5/10/100 and AUC of 100 uniformly random proposals per video (the baseline to beat)."""
    from evaluation.proposal import average_recall

    rng = np.random.default_rng(seed)
    rows = []
    for video_id, duration in durations.items():
        bounds = np.sort(rng.uniform(0, duration, size=(100, 2)), axis=1)
        rows.append(pd.DataFrame({"video_id": video_id, "start": bounds[:, 0], "end": bounds[:, 1],
                                  "score": rng.uniform(size=100)}))
    return average_recall(ground_truth, pd.concat(rows, ignore_index=True)).to_metrics()


def stage_config(work_dir: Path, annotation_json: Path, *overrides: str):
    """The tiny config reading ``annotation_json`` (HACS format) instead of the synthetic set; one thread."""
    from configs.load import load_config

    repo = Path(__file__).resolve().parents[2]
    return load_config(repo / "configs" / "synthetic-tiny.yaml", [
        f"runtime.work_dir={work_dir}", f"runtime.cache_dir={work_dir / 'cache'}", "runtime.num_threads=1",
        "runtime.device=cpu", "dataset.source=files", "dataset.style=hacs",
        f"dataset.annotations={{training: {annotation_json}, validation: {annotation_json}}}", *overrides])
