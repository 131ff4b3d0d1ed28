"""Class probabilities for videos and proposals, from stored features or from decoded clips.

Three pieces, each taking its model and settings as constructor arguments:

* ``HeadProbabilities``: the fine-tuned classifier's heads (``classify_features``) on
  ``(B, D)`` features, softmax per head. The weights are the stage-one weights as they
  are (no training here); the model is in eval mode, so its dropout is off.
* ``FeatureClassifier``: reads a video's stored clip features from a ``FeatureStore``;
  ``video_probabilities`` pools the whole video (HACS, paper appendix C.2),
  ``proposal_probabilities`` pools each proposal (`classify.mode: features`, see
  ``localize.pooling``).
* ``ClipClassifier``: `classify.mode: clips` (the paper's EK100 setting): decodes
  ``num_clips`` clips evenly inside each proposal (``localize.clip_sampling``), runs the
  whole fine-tuned model on them in batches, and averages the softmax probabilities of
  each head over a proposal's clips. Identical clips (proposals sharing boundaries) run
  once, and frames shared by consecutive batches of clips are decoded once.

Probabilities come back as float64 numpy arrays, one per head: ``{head: (P, K_head)}``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from backbone.clips import IMAGENET, Normalization, center_crop, clips_to_tensor
from data.clip_geometry import ClipGeometry
from data.video import VideoReader
from localize.clip_sampling import proposal_clip_centers
from localize.pooling import proposal_feature_means, video_feature_mean


class MissingFeatures(RuntimeError):
    """A video has no (complete) clip features in the feature store."""


def _softmax_per_head(logits: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """{head: (B, K) logits} -> {head: (B, K) float64 probabilities}."""
    return {head: torch.softmax(values.float(), dim=1).double().cpu().numpy()
            for head, values in logits.items()}


class HeadProbabilities:
    """Softmax probabilities of the classifier heads on pooled features.

    Args:
        model: anything with ``classify_features(feature (B, D)) -> {head: (B, K) logits}``
            (``backbone.tada2d.TAda2D`` in eval mode, or a hand-built stand-in in tests).
        device: where the heads run ("cpu", "cuda:0").
    """

    def __init__(self, model, device: str = "cpu"):
        self.model = model
        self.device = torch.device(device)

    def __call__(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """(B, D) features -> {head: (B, K) float64 probabilities}, all B rows in one call."""
        with torch.inference_mode():
            batch = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
            return _softmax_per_head(self.model.classify_features(batch))


class FeatureClassifier:
    """Classifies videos and proposals from stored clip features.

    Args:
        store: a ``formats.features.FeatureStore`` (``get(video_id) -> (features (N, D), times (N,) s)``).
        heads: the ``HeadProbabilities`` applied to pooled features.
    """

    def __init__(self, store, heads: HeadProbabilities):
        self.store = store
        self.heads = heads

    def _features(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        if video_id not in self.store:
            raise MissingFeatures(f"no complete features for this video in {self.store.path}")
        features, times_sec = self.store.get(video_id)
        if features.shape[0] == 0:
            raise MissingFeatures(f"the video has 0 clip features in {self.store.path}")
        if np.any(np.diff(times_sec) < 0):  # the layout stores them in time order; be safe for foreign files
            order = np.argsort(times_sec, kind="stable")
            features, times_sec = features[order], times_sec[order]
        return features, times_sec

    def video_probabilities(self, video_id: str) -> dict[str, np.ndarray]:
        """{head: (K,)} probabilities of the mean of all the video's clip features."""
        features, _ = self._features(video_id)
        probabilities = self.heads(video_feature_mean(features)[None])  # (D,) -> (1, D)
        return {head: values[0] for head, values in probabilities.items()}

    def proposal_probabilities(self, video_id: str, segments_sec: np.ndarray) -> dict[str, np.ndarray]:
        """{head: (P, K)} probabilities of each proposal's mean clip feature (one batched head call)."""
        features, times_sec = self._features(video_id)
        return self.heads(proposal_feature_means(features, times_sec, segments_sec))


class ClipClassifier:
    """Classifies proposals by decoding clips inside them and running the fine-tuned model.

    Args:
        model: ``forward(video (B, 3, T, H, W)) -> ({head: (B, K) logits}, feature)``, in eval mode.
        device: where the model runs.
        num_clips: clips per proposal (paper: 6).
        num_frames: T, frames per clip (the model's).
        interval_frames: target frames between a clip's frames (the model's).
        fps: decode timeline, frames per second (`extract.fps`, the one the features were made on).
        short_side: frames are decoded with this short side (`extract.short_side`).
        crop: "none" (whole frame, as the paper and extraction) or "center" (square crop of ``short_side``).
        batch_size: clips per forward pass; also bounds the frames decoded at once.
        open_video: ``(path, short_side) -> VideoReader``-like object (tests pass a spy).
        normalization: the frame statistics the features were extracted with.
    """

    def __init__(self, model: nn.Module, device: str, num_clips: int, num_frames: int, interval_frames: int,
                 fps: float, short_side: int, crop: str = "none", batch_size: int = 16,
                 open_video=VideoReader, normalization: Normalization = IMAGENET):
        self.normalization = normalization
        if crop not in ("none", "center"):
            raise ValueError(f"ClipClassifier: crop must be 'none' or 'center', got {crop!r}")
        if batch_size < 1 or num_clips < 1:
            raise ValueError(f"ClipClassifier: batch_size ({batch_size}) and num_clips ({num_clips}) "
                             "must be >= 1")
        self.model = model
        self.device = torch.device(device)
        self.num_clips = num_clips
        self.num_frames = num_frames
        self.interval_frames = interval_frames
        self.fps = float(fps)
        self.short_side = short_side
        self.crop = crop
        self.batch_size = batch_size
        self.open_video = open_video

    def clip_frames(self, segments_sec: np.ndarray) -> np.ndarray:
        """(P, 2) proposals -> (P, num_clips, T) target frame indices of every clip."""
        centers = proposal_clip_centers(segments_sec, self.num_clips)  # (P, n) seconds
        return ClipGeometry(self.num_frames, self.interval_frames, self.fps).frame_ids(centers)  # (P, n, T)

    def proposal_probabilities(self, video_path: str, segments_sec: np.ndarray) -> dict[str, np.ndarray]:
        """{head: (P, K)}: per head, the softmax probabilities averaged over each proposal's clips.

        Clips with the same frames (proposals sharing boundaries, which BMN's grid makes common)
        run through the model once. Raises ``data.video.VideoError`` when the video cannot be read.
        """
        segments_sec = np.asarray(segments_sec, dtype=np.float64).reshape(-1, 2)
        num_proposals = segments_sec.shape[0]
        frame_ids = self.clip_frames(segments_sec).reshape(-1, self.num_frames)  # (P, n, T) -> (P*n, T)
        # Distinct clips, sorted by their frames (so by time); clip_of maps each clip to its row.
        distinct, clip_of = np.unique(frame_ids, axis=0, return_inverse=True)
        per_clip = self.clip_probabilities(self.open_video(video_path, self.short_side), distinct)
        # (P*n, K) -> (P, n, K) -> mean over the n clips -> (P, K)
        return {head: values[clip_of.reshape(-1)].reshape(num_proposals, self.num_clips, -1).mean(axis=1)
                for head, values in per_clip.items()}

    def clip_probabilities(self, reader, frame_ids: np.ndarray) -> dict[str, np.ndarray]:
        """{head: (M, K)} softmax probabilities of M clips given by target frames ``frame_ids`` (M, T).

        ``batch_size`` clips per forward pass, in the given order (time order keeps the decoder
        reading mostly forward). A batch decodes only the frames the previous batch did not
        hold, so consecutive overlapping clips share their decodes; memory holds two batches'
        frames whatever the video length.
        """
        per_clip: dict[str, np.ndarray] = {}
        held_ids = np.zeros(0, dtype=np.int64)  # target frames of the previous batch, ascending
        held_frames = None  # (len(held_ids), H, W, 3) uint8
        for batch_start in range(0, len(frame_ids), self.batch_size):
            batch_ids = frame_ids[batch_start:batch_start + self.batch_size]  # (b, T) target frames
            needed = np.unique(batch_ids)  # ascending
            held = np.isin(needed, held_ids)
            fresh = reader.frames_at(needed[~held] / self.fps)  # (F, H, W, 3) uint8
            if held.any():
                kept = held_frames[np.searchsorted(held_ids, needed[held])]
                frames = np.empty((len(needed), *kept.shape[1:]), dtype=np.uint8)  # in `needed` order
                frames[held], frames[~held] = kept, fresh
            else:
                frames = fresh
            held_ids, held_frames = needed, frames
            clips = frames[np.searchsorted(needed, batch_ids)]  # (b, T) positions -> (b, T, H, W, 3)
            if self.crop == "center":
                clips = center_crop(clips, self.short_side)
            with torch.inference_mode():
                video = clips_to_tensor(clips, self.normalization).to(self.device)  # (b, 3, T, H, W)
                logits, _ = self.model(video)
                probabilities = _softmax_per_head(logits)
            for head, values in probabilities.items():
                if head not in per_clip:
                    per_clip[head] = np.zeros((len(frame_ids), values.shape[1]), dtype=np.float64)
                per_clip[head][batch_start:batch_start + len(batch_ids)] = values
        return per_clip
