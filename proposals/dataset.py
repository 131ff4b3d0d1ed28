"""BMN input sequences read from the feature store: whole rescaled videos (HACS) or sliding windows (EK100).

Two input modes (``bmn.input``), one ``BMNInputs`` dataset:

- ``"rescale"``: one item per video, its clip features rescaled to ``T`` equal
  steps over ``[0, duration]`` (``inputs.rescale_to_fixed_length``: each step is
  the mean of the piecewise-linear interpolant of the clip features over its
  interval); ground truth normalised by the duration.
- ``"windows"``: items are windows of ``T`` consecutive clip features
  (``inputs.sliding_windows``, overlap ``window_overlap``); ground truth in feature
  steps through the clip-step edges (``inputs.clip_step_edges``), then in the
  window's normalised time (``inputs.window_segments``).

Training uses the items with an action (``only_with_actions``): for windows the
windows that fully contain at least one segment (``inputs.training_windows``), for
rescaled videos the videos with at least one segment. Inference uses every item
and turns a video's item outputs back into one ``postprocess.VideoScores`` on its
own timeline (``video_scores``): windows are averaged where they overlap.

Feature loading: ``read_videos`` reads every video once (for its clip times) and
keeps the features in memory when the whole set (float32) fits in
``cache_limit_bytes``; otherwise an item reads only its rows from the store,
which each DataLoader worker opens lazily (``FeatureStore`` re-opens per process).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from formats.features import FeatureStore
from proposals.inputs import (
    clip_step_edges,
    crop_window,
    fuse_window_predictions,
    normalize_segments,
    rescale_to_fixed_length,
    rescaled_video_scores,
    seconds_to_steps,
    sliding_windows,
    training_windows,
    window_segments,
)
from proposals.postprocess import VideoScores
from proposals.targets import bmn_targets

log = logging.getLogger(__name__)

INPUT_MODES = ("rescale", "windows")
CACHE_LIMIT_BYTES = 2 * 2**30  # keep all features in memory (float32) when they fit in this


@dataclass
class VideoInput:
    """One video's timeline and ground truth, and its features when cached.

    Attributes:
        video_id: the video.
        duration_sec: its duration (from the feature store).
        times_sec: ``(N,)`` clip-centre seconds of its ``N`` stored feature steps.
        segments_sec: ``(K, 2)`` ground-truth ``[start, end]`` seconds (K may be 0).
        features: ``None`` (read from the store per item) or, cached, float32
            ``(N, C)`` clip features ("windows") or ``(T, C)`` rescaled ones ("rescale").
    """

    video_id: str
    duration_sec: float
    times_sec: np.ndarray
    segments_sec: np.ndarray
    features: np.ndarray | None = None


def check_input_mode(input_mode: str) -> None:
    if input_mode not in INPUT_MODES:
        raise ValueError(f"BMN input mode must be one of {list(INPUT_MODES)}, got {input_mode!r}")


def read_videos(
    store_path: str | Path,
    video_ids: list[str],
    segments: pd.DataFrame,
    input_mode: str,
    temporal_scale: int,
    cache_limit_bytes: int = CACHE_LIMIT_BYTES,
) -> list[VideoInput]:
    """The ``VideoInput`` of each of ``video_ids`` (in order), reading the store once per video.

    Args:
        store_path: ``features.h5``.
        video_ids: videos to read; each must be complete in the store.
        segments: segment table (``video_id, start, end`` seconds); rows of other videos are ignored.
        input_mode: "rescale" or "windows".
        temporal_scale: T (the rescaled length in "rescale" mode).
        cache_limit_bytes: keep the features in memory when all of them, as float32, fit.
    """
    check_input_mode(input_mode)
    store = FeatureStore(store_path)
    try:
        dim = int(store.attrs["dim"])
        clips = [int(store.video_attrs(video_id)["num_clips"]) for video_id in video_ids]
        steps_kept = len(video_ids) * temporal_scale if input_mode == "rescale" else sum(clips)
        cache = steps_kept * dim * 4 <= cache_limit_bytes
        # one video at a time (detection on new videos) would log a line per video: debug level then
        log.log(logging.INFO if len(video_ids) > 1 else logging.DEBUG,
                "bmn: %d videos, %d clip features (dim %d): features %s", len(video_ids), sum(clips), dim,
                "cached in memory" if cache else "read from the store per item")
        by_video = {video_id: rows[["start", "end"]].to_numpy(np.float64)
                    for video_id, rows in segments.groupby("video_id", sort=False)}
        videos = []
        for video_id in video_ids:
            features, times_sec = store.get(video_id)  # (N, C), (N,)
            duration_sec = float(store.video_attrs(video_id)["duration"])
            if len(times_sec) == 0:
                raise ValueError(f"feature store {store_path}: video {video_id!r} has no clip features")
            if input_mode == "rescale" and cache:
                # (N, C) -> (T, C)
                features = rescale_to_fixed_length(features, times_sec, duration_sec, temporal_scale)
            segments_sec = by_video.get(video_id, np.zeros((0, 2)))
            kept = features if cache else None
            videos.append(VideoInput(video_id, duration_sec, times_sec, segments_sec, kept))
    finally:
        store.close()
    return videos


class BMNInputs(Dataset):
    """BMN input sequences of ``T`` steps with their training targets.

    Args:
        store_path: ``features.h5`` (read per item when the videos carry no cached features).
        videos: from ``read_videos``.
        input_mode: "rescale" (one item per video) or "windows" (one item per window).
        temporal_scale: T.
        max_duration: D of the BM map (``None``: T).
        window_overlap: fraction of T shared by consecutive windows ("windows" mode).
        only_with_actions: keep only the items with an action (training; see the module docstring).

    An item is ``(features (C, T) float32, gt_iou (D, T), gt_start (T,), gt_end (T,),
    has_action bool, item index)``; targets are float32 (``targets.bmn_targets``).
    Items are ordered by video, then window start.
    """

    def __init__(
        self,
        store_path: str | Path,
        videos: list[VideoInput],
        input_mode: str,
        temporal_scale: int,
        max_duration: int | None = None,
        window_overlap: float = 0.5,
        only_with_actions: bool = False,
    ):
        check_input_mode(input_mode)
        self.store = FeatureStore(store_path)  # opened on first read, once per process
        self.videos = videos
        self.input_mode = input_mode
        self.temporal_scale = temporal_scale
        self.max_duration = max_duration
        self.windows: list[list[tuple[int, int]]] = []  # per video: (start_step, end_step) of each window
        self.segments_steps: list[np.ndarray] = []  # per video: (K, 2) ground truth in its feature steps
        self.items: list[tuple[int, int]] = []  # (video index, window index)
        self.has_action: list[bool] = []  # per item
        for video_index, video in enumerate(videos):
            if input_mode == "rescale":
                windows = [(0, temporal_scale)]
                steps = normalize_segments(video.segments_sec, video.duration_sec) * temporal_scale
                with_action = [len(video.segments_sec) > 0]
            else:
                windows = sliding_windows(len(video.times_sec), temporal_scale, window_overlap)
                edges_sec = clip_step_edges(video.times_sec, video.duration_sec)
                steps = seconds_to_steps(video.segments_sec, edges_sec).reshape(-1, 2)
                containing = set(training_windows(windows, steps))
                with_action = [index in containing for index in range(len(windows))]
            self.windows.append(windows)
            self.segments_steps.append(steps)
            for window_index, action in enumerate(with_action):
                if action or not only_with_actions:
                    self.items.append((video_index, window_index))
                    self.has_action.append(action)
        self.items_per_video = np.bincount([video for video, _ in self.items], minlength=len(videos))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        video_index, window_index = self.items[index]
        start_step, _ = self.windows[video_index][window_index]
        sequence = self.sequence(video_index, start_step)  # (T, C)
        # ground truth in the sequence's normalised time [0, 1]
        normalized = window_segments(self.segments_steps[video_index], start_step, self.temporal_scale)
        gt_iou, gt_start, gt_end = bmn_targets(normalized, self.temporal_scale, self.max_duration)
        return (
            torch.from_numpy(np.ascontiguousarray(sequence.T)),  # (T, C) -> (C, T)
            torch.from_numpy(gt_iou.astype(np.float32)),  # (D, T)
            torch.from_numpy(gt_start.astype(np.float32)),  # (T,)
            torch.from_numpy(gt_end.astype(np.float32)),  # (T,)
            self.has_action[index],
            index,
        )

    def sequence(self, video_index: int, start_step: int) -> np.ndarray:
        """The ``(T, C)`` float32 input starting at feature step ``start_step`` (0 when rescaled)."""
        video = self.videos[video_index]
        if self.input_mode == "rescale":
            if video.features is not None:
                return video.features
            features, times_sec = self.store.get(video.video_id)
            return rescale_to_fixed_length(features, times_sec, video.duration_sec, self.temporal_scale)
        if video.features is not None:
            return crop_window(video.features, start_step, self.temporal_scale)
        stop_step = min(start_step + self.temporal_scale, len(video.times_sec))
        rows, _ = self.store.get(video.video_id, start_step, stop_step)  # only the window's rows
        return crop_window(rows, 0, self.temporal_scale)

    def video_scores(
        self, video_index: int, start: np.ndarray, end: np.ndarray, confidence_maps: np.ndarray
    ) -> VideoScores:
        """One video's BMN outputs on its own timeline, from those of all its items.

        Args:
            video_index: index into ``videos``.
            start, end: ``(W, T)`` per item, in item order (W = ``items_per_video[video_index]``).
            confidence_maps: ``(W, 2, D, T)``.
        """
        video = self.videos[video_index]
        if len(start) != self.items_per_video[video_index] or len(start) != len(self.windows[video_index]):
            raise ValueError(f"video {video.video_id!r}: got outputs for {len(start)} items, it has "
                             f"{len(self.windows[video_index])} (a dataset built with only_with_actions "
                             "cannot be used for inference)")
        if self.input_mode == "rescale":
            return rescaled_video_scores(start[0], end[0], confidence_maps[0], video.duration_sec)
        return fuse_window_predictions(self.windows[video_index], start, end, confidence_maps,
                                       video.times_sec, video.duration_sec)
