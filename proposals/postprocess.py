"""From BMN outputs to scored proposals in seconds: candidates, scores, Soft-NMS, top-k.

Per video (``postprocess_video``):

1. candidate boundaries: a step is a start (end) candidate when its probability
   is a strict local peak or above ``relative_threshold`` (0.5) times the video's
   maximum; the first step is always a start candidate, the last always an end one;
2. every valid BM cell ``(d, s)`` whose start step ``s`` and end step ``s + d``
   are both candidates becomes a proposal over steps ``s .. s + d``, scored
   ``start[s] * end[s + d] * classification[d, s] * regression[d, s]``;
3. Gaussian Soft-NMS (``soft_nms``), keeping the ``top_k`` (100) best;
4. step coordinates to seconds through the video's step edges.

``postprocess_videos`` runs videos in parallel processes with joblib.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed

from proposals.bm_map import CLASSIFICATION_MAP, REGRESSION_MAP


@dataclass
class VideoScores:
    """One video's BMN outputs on its ``L`` steps (L = T for a rescaled video).

    Attributes:
        start: ``(L,)`` probability that an action starts at the left edge of each step.
        end: ``(L,)`` probability that an action ends at the right edge of each step.
        confidence_map: ``(2, D, L)`` regression and classification maps, cell
            ``(d, s)`` = the proposal over steps ``s .. s + d`` (``BM_MAP_AXES``).
        valid: ``(D, L)`` bool, the cells that hold a prediction.
        step_edges_sec: ``(L + 1,)`` seconds; step ``i`` covers ``[edges[i], edges[i + 1]]``.
    """

    start: np.ndarray
    end: np.ndarray
    confidence_map: np.ndarray
    valid: np.ndarray
    step_edges_sec: np.ndarray


def candidate_boundaries(probabilities: np.ndarray, relative_threshold: float = 0.5) -> np.ndarray:
    """Bool ``(L,)``: strict local peaks (interior steps) or values above ``relative_threshold * max``."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    candidates = probabilities > relative_threshold * probabilities.max()
    is_peak = (probabilities[1:-1] > probabilities[:-2]) & (probabilities[1:-1] > probabilities[2:])
    candidates[1:-1] |= is_peak
    return candidates


def score_proposals(scores: VideoScores, relative_threshold: float = 0.5) -> np.ndarray:
    """Candidate proposals of one video, ``(K, 3)`` as ``[start_step, end_step, score]``.

    ``end_step`` is exclusive: the proposal over steps ``s .. s + d`` is ``[s, s + d + 1]``
    in continuous step coordinates. Rows are in BM-map order (duration, then start).
    """
    num_durations, num_steps = scores.valid.shape
    expected_map_shape = (2, num_durations, num_steps)
    if (
        scores.start.shape != (num_steps,)
        or scores.end.shape != (num_steps,)
        or scores.confidence_map.shape != expected_map_shape
    ):
        raise ValueError(
            f"score_proposals: start {scores.start.shape}, end {scores.end.shape}, map "
            f"{scores.confidence_map.shape} do not match valid {scores.valid.shape} "
            "(expected (L,), (L,), (2, D, L))"
        )
    start_candidate = candidate_boundaries(scores.start, relative_threshold)  # (L,)
    end_candidate = candidate_boundaries(scores.end, relative_threshold)  # (L,)
    start_candidate[0] = True  # a proposal may start where the sequence starts
    end_candidate[-1] = True  # and end where it ends
    duration_index, start_index = np.nonzero(scores.valid)  # (M,) each, cells in (d, s) order
    last_step = start_index + duration_index  # (M,) always < L for a valid cell
    if (last_step >= num_steps).any():
        raise ValueError("score_proposals: valid cells must end inside the video (s + d <= L - 1)")
    keep = start_candidate[start_index] & end_candidate[last_step]
    duration_index, start_index, last_step = duration_index[keep], start_index[keep], last_step[keep]
    score = (
        scores.start[start_index]
        * scores.end[last_step]
        * scores.confidence_map[CLASSIFICATION_MAP, duration_index, start_index]
        * scores.confidence_map[REGRESSION_MAP, duration_index, start_index]
    )
    return np.stack([start_index, last_step + 1, score], axis=1).astype(np.float64)  # (K, 3)


def soft_nms(
    proposals: np.ndarray,
    alpha: float = 0.4,
    low_threshold: float = 0.5,
    high_threshold: float = 0.9,
    top_k: int = 100,
    length_scale: float = 1.0,
) -> np.ndarray:
    """Gaussian Soft-NMS of BMN, ``(K, 3)`` ``[start, end, score]`` -> ``(min(K, top_k), 3)``.

    Repeatedly selects the remaining proposal with the highest (decayed) score
    (ties: the earliest after a stable sort by initial score); every other
    remaining proposal whose tIoU with it exceeds
    ``low_threshold + (high_threshold - low_threshold) * width``, where ``width`` is
    the selected proposal's length divided by ``length_scale`` (1 = the whole
    sequence, so long proposals tolerate more overlap), has its score multiplied
    by ``exp(-tIoU^2 / alpha)``. Stops after ``top_k`` selections. Returns the
    selected proposals with their decayed scores, best first.

    Args:
        proposals: ``(K, 3)`` in any time unit.
        length_scale: the length, in the proposals' unit, of the temporal scale
            (T for step coordinates, 1 for normalised time).
    """
    proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 3)
    if not alpha > 0 or not length_scale > 0 or top_k < 0:
        raise ValueError(
            f"soft_nms: need alpha > 0, length_scale > 0, top_k >= 0; got {alpha}, {length_scale}, {top_k}"
        )
    order = np.argsort(-proposals[:, 2], kind="stable")
    start, end, score = proposals[order, 0], proposals[order, 1], proposals[order, 2].copy()  # (K,) each
    remaining = np.ones(len(score), dtype=bool)
    selected = []
    for _ in range(min(top_k, len(score))):
        best = int(np.argmax(np.where(remaining, score, -np.inf)))
        selected.append((start[best], end[best], score[best]))
        remaining[best] = False
        width = (end[best] - start[best]) / length_scale
        intersection = np.clip(np.minimum(end, end[best]) - np.maximum(start, start[best]), 0.0, None)  # (K,)
        union = (end - start) + (end[best] - start[best]) - intersection  # (K,)
        iou = np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)
        decayed = remaining & (iou > low_threshold + (high_threshold - low_threshold) * width)
        score[decayed] *= np.exp(-np.square(iou[decayed]) / alpha)
    return np.asarray(selected, dtype=np.float64).reshape(-1, 3)


def postprocess_video(
    scores: VideoScores,
    temporal_scale: int,
    alpha: float = 0.4,
    low_threshold: float = 0.5,
    high_threshold: float = 0.9,
    top_k: int = 100,
    relative_threshold: float = 0.5,
) -> np.ndarray:
    """One video's proposals, ``(K <= top_k, 3)`` as ``[start_sec, end_sec, score]``, best first.

    ``temporal_scale`` is the BMN input length T (the whole video for HACS, a
    window for EK100): Soft-NMS measures a proposal's width in units of T steps.
    """
    candidates = score_proposals(scores, relative_threshold)  # (K, 3) in steps
    kept = soft_nms(candidates, alpha, low_threshold, high_threshold, top_k, length_scale=float(temporal_scale))
    edges = np.asarray(scores.step_edges_sec, dtype=np.float64)
    if len(edges) != len(scores.start) + 1:
        raise ValueError(f"postprocess_video: {len(edges)} step edges for {len(scores.start)} steps (need L + 1)")
    # integer step coordinates -> seconds: the edge with that index
    return np.stack([edges[kept[:, 0].astype(int)], edges[kept[:, 1].astype(int)], kept[:, 2]], axis=1)


def postprocess_videos(
    videos: Mapping[str, VideoScores],
    temporal_scale: int,
    alpha: float = 0.4,
    low_threshold: float = 0.5,
    high_threshold: float = 0.9,
    top_k: int = 100,
    relative_threshold: float = 0.5,
    n_jobs: int = 1,
) -> dict[str, np.ndarray]:
    """``postprocess_video`` for every video, in ``n_jobs`` joblib processes; ``{video_id: (K, 3)}``."""
    video_ids = list(videos)
    results = Parallel(n_jobs=n_jobs)(
        delayed(postprocess_video)(
            videos[video_id], temporal_scale, alpha, low_threshold, high_threshold, top_k, relative_threshold
        )
        for video_id in video_ids
    )
    return dict(zip(video_ids, results))
