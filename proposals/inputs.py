"""BMN inputs per dataset: HACS whole-video rescaling, EK100 sliding windows and their fusion.

Pure functions on arrays (no file I/O). Units are in the names: ``*_sec`` are
seconds, ``*_step(s)`` are feature steps (rows of a video's feature array, or of
the rescaled sequence).

Feature step ``i`` of a stored video is the clip centred at ``times[i]`` seconds
and is taken to cover the interval between the midpoints to its neighbours
(``clip_step_edges``); a rescaled HACS step ``t`` covers
``[t, t + 1] * duration / T``. The edges ``(L + 1,)`` of a video's ``L`` steps are
what converts between seconds and (continuous) step coordinates, in both
directions (``seconds_to_steps``, ``steps_to_seconds``): a proposal over steps
``a .. b`` spans ``edges[a]`` to ``edges[b + 1]`` seconds.
"""

import numpy as np

from proposals.bm_map import bm_valid_mask
from proposals.postprocess import VideoScores

# ---------------------------------------------------------------- seconds <-> steps


def uniform_step_edges(duration_sec: float, num_steps: int) -> np.ndarray:
    """Edges ``(num_steps + 1,)`` in seconds of ``num_steps`` equal steps covering ``[0, duration_sec]``."""
    if not duration_sec > 0:
        raise ValueError(f"uniform_step_edges: duration_sec must be > 0, got {duration_sec}")
    return np.linspace(0.0, float(duration_sec), int(num_steps) + 1)


def clip_step_edges(times_sec: np.ndarray, duration_sec: float) -> np.ndarray:
    """Edges ``(N + 1,)`` in seconds of the steps of clips centred at ``times_sec`` ``(N,)``.

    Inner edges are midpoints between consecutive clip centres; the first (last)
    edge lies half a spacing before the first (after the last) centre, clamped to
    ``[0, duration_sec]`` but never past the centre. A single clip covers the whole video.
    """
    times_sec = _check_times(times_sec, "clip_step_edges")
    if len(times_sec) == 1:
        return np.array([min(0.0, times_sec[0]), max(float(duration_sec), times_sec[0])])
    inner = 0.5 * (times_sec[1:] + times_sec[:-1])  # (N - 1,)
    first = min(max(0.0, times_sec[0] - 0.5 * (times_sec[1] - times_sec[0])), times_sec[0])
    last = max(min(float(duration_sec), times_sec[-1] + 0.5 * (times_sec[-1] - times_sec[-2])), times_sec[-1])
    return np.concatenate([[first], inner, [last]])


def seconds_to_steps(seconds: np.ndarray, edges_sec: np.ndarray) -> np.ndarray:
    """Continuous step coordinates of times in seconds: ``edges_sec[i]`` -> ``i``, linear between, clamped."""
    return np.interp(np.asarray(seconds, dtype=np.float64), edges_sec, np.arange(len(edges_sec), dtype=np.float64))


def steps_to_seconds(steps: np.ndarray, edges_sec: np.ndarray) -> np.ndarray:
    """Seconds of continuous step coordinates (inverse of ``seconds_to_steps``), clamped to the edges."""
    return np.interp(np.asarray(steps, dtype=np.float64), np.arange(len(edges_sec), dtype=np.float64), edges_sec)


# ---------------------------------------------------------------- HACS: whole video at T steps


def rescale_to_fixed_length(
    features: np.ndarray, times_sec: np.ndarray, duration_sec: float, num_steps: int = 100
) -> np.ndarray:
    """A video's clip features resampled to ``num_steps`` equal steps, ``(num_steps, D)`` float32.

    The stored features define a piecewise-linear function of time (linear
    between consecutive clip centres ``times_sec``, constant before the first and
    after the last). Output step ``t`` is that function's mean over its interval
    ``[t, t + 1] * duration_sec / num_steps``: when clips are sparser than steps
    this is linear interpolation (exactly the value at the step centre where the
    function is linear over the step), when they are denser it averages all the
    clips in the step instead of picking a few (no aliasing).

    Args:
        features: ``(N, D)`` clip features.
        times_sec: ``(N,)`` strictly increasing clip-centre times.
        duration_sec: video duration.
        num_steps: T.
    """
    features = np.asarray(features)
    times_sec = _check_times(times_sec, "rescale_to_fixed_length")
    if features.ndim != 2 or len(features) != len(times_sec):
        raise ValueError(
            f"rescale_to_fixed_length: features must be (N, D) with N = len(times) = {len(times_sec)}, "
            f"got {features.shape}"
        )
    if num_steps < 1:
        raise ValueError(f"rescale_to_fixed_length: num_steps must be >= 1, got {num_steps}")
    values = features.astype(np.float64)  # (N, D)
    edges = uniform_step_edges(duration_sec, num_steps)  # (T + 1,)
    integral = _integral_of_interpolant(values, times_sec, edges)  # (T + 1, D)
    return (np.diff(integral, axis=0) / np.diff(edges)[:, None]).astype(np.float32)


def normalize_segments(segments_sec: np.ndarray, duration_sec: float) -> np.ndarray:
    """Ground truth ``(K, 2)`` seconds -> fractions of the video ``(K, 2)``, clipped to [0, 1]."""
    if not duration_sec > 0:
        raise ValueError(f"normalize_segments: duration_sec must be > 0, got {duration_sec}")
    segments = np.asarray(segments_sec, dtype=np.float64).reshape(-1, 2)
    return np.clip(segments / float(duration_sec), 0.0, 1.0)


def rescaled_video_scores(
    start: np.ndarray, end: np.ndarray, confidence_map: np.ndarray, duration_sec: float
) -> VideoScores:
    """BMN outputs for a whole video at T steps (HACS) as ``VideoScores`` on uniform edges.

    ``start``/``end`` ``(T,)``, ``confidence_map`` ``(2, D, T)`` of one video.
    """
    temporal_scale = len(start)
    confidence_map = np.asarray(confidence_map, dtype=np.float64)
    return VideoScores(
        start=np.asarray(start, dtype=np.float64),
        end=np.asarray(end, dtype=np.float64),
        confidence_map=confidence_map,
        valid=bm_valid_mask(temporal_scale, confidence_map.shape[1]),
        step_edges_sec=uniform_step_edges(duration_sec, temporal_scale),
    )


# ---------------------------------------------------------------- EK100: sliding windows


def sliding_windows(num_feature_steps: int, window_steps: int, overlap: float = 0.5) -> list[tuple[int, int]]:
    """Windows ``(start_step, end_step)`` (end exclusive, always ``window_steps`` long) covering a video.

    Windows start every ``round(window_steps * (1 - overlap))`` steps (at least 1);
    the last one is moved back to end exactly at the video's end. A video shorter
    than a window gets one window ``(0, window_steps)``, padded past its end.
    """
    if num_feature_steps < 1 or window_steps < 1:
        raise ValueError(
            f"sliding_windows: need num_feature_steps >= 1 and window_steps >= 1, "
            f"got {num_feature_steps} and {window_steps}"
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"sliding_windows: overlap must be in [0, 1), got {overlap}")
    if num_feature_steps <= window_steps:
        return [(0, window_steps)]
    stride = max(1, int(round(window_steps * (1.0 - overlap))))
    starts = list(range(0, num_feature_steps - window_steps + 1, stride))
    if starts[-1] + window_steps < num_feature_steps:
        starts.append(num_feature_steps - window_steps)
    return [(start, start + window_steps) for start in starts]


def training_windows(windows: list[tuple[int, int]], segments_steps: np.ndarray) -> list[int]:
    """Indices of the windows that fully contain at least one segment ``(K, 2)`` in step coordinates."""
    segments = np.asarray(segments_steps, dtype=np.float64).reshape(-1, 2)
    bounds = np.asarray(windows, dtype=np.float64).reshape(-1, 2)  # (W, 2)
    # (W, 1) vs (K,) -> (W, K)
    contains = (segments[:, 0] >= bounds[:, :1]) & (segments[:, 1] <= bounds[:, 1:])
    return np.flatnonzero(contains.any(axis=1)).tolist()


def window_segments(segments_steps: np.ndarray, window_start: int, window_steps: int) -> np.ndarray:
    """Ground truth of one window, ``(K', 2)`` in the window's normalised time [0, 1].

    Keeps the segments (step coordinates) that overlap the window by more than
    zero, clipped to it: an action cut by the window edge keeps its boundary
    inside the window (the clipped edge becomes a start/end target too; overlapping
    windows average such edges away at inference).
    """
    segments = np.asarray(segments_steps, dtype=np.float64).reshape(-1, 2)
    local = (segments - window_start) / float(window_steps)  # (K, 2)
    overlaps = (local[:, 1] > 0.0) & (local[:, 0] < 1.0)
    return np.clip(local[overlaps], 0.0, 1.0)


def crop_window(features: np.ndarray, start_step: int, window_steps: int) -> np.ndarray:
    """``window_steps`` rows of ``features`` ``(N, D)`` from ``start_step``, zero-padded past the end."""
    features = np.asarray(features)
    window = np.zeros((window_steps, features.shape[1]), dtype=features.dtype)
    rows = features[start_step : start_step + window_steps]
    window[: len(rows)] = rows
    return window


def fuse_window_predictions(
    windows: list[tuple[int, int]],
    start: np.ndarray,
    end: np.ndarray,
    confidence_maps: np.ndarray,
    times_sec: np.ndarray,
    duration_sec: float,
) -> VideoScores:
    """Averages the BMN outputs of a video's windows onto its absolute feature steps.

    Window ``w = (a, a + T)``'s position ``j`` is the video's step ``a + j``; its map
    cell ``(d, j)`` (the proposal over steps ``a + j .. a + j + d``) is the video's
    cell ``(d, a + j)`` of a ``(2, D, N)`` map indexed by (duration, absolute start).
    Each absolute position / cell is the mean over the windows that hold it;
    positions and cells in a window's padding (past the video's end) and cells
    that run past a window's end are not counted. ``valid`` marks the cells that
    at least one window held.

    Args:
        windows: ``(start_step, end_step)`` of each window (``sliding_windows``).
        start, end: ``(W, T)`` per-window boundary probabilities.
        confidence_maps: ``(W, 2, D, T)`` per-window BM maps.
        times_sec: ``(N,)`` the video's clip-centre times (defines the step edges).
        duration_sec: the video's duration.
    """
    times_sec = _check_times(times_sec, "fuse_window_predictions")
    num_steps = len(times_sec)
    start, end, confidence_maps = (np.asarray(a, dtype=np.float64) for a in (start, end, confidence_maps))
    num_windows, window_steps = start.shape
    if (
        len(windows) != num_windows
        or end.shape != start.shape
        or confidence_maps.ndim != 4
        or confidence_maps.shape[0] != num_windows
        or confidence_maps.shape[1] != 2
        or confidence_maps.shape[3] != window_steps
    ):
        raise ValueError(
            f"fuse_window_predictions: got {len(windows)} windows, start {start.shape}, end {end.shape}, "
            f"maps {confidence_maps.shape}; expected (W, T), (W, T), (W, 2, D, T)"
        )
    num_durations = confidence_maps.shape[2]
    duration_index = np.arange(num_durations)[:, None]  # (D, 1)

    boundary_sum = np.zeros((2, num_steps))  # start, end
    boundary_count = np.zeros(num_steps)
    map_sum = np.zeros((2, num_durations, num_steps))
    map_count = np.zeros((num_durations, num_steps))
    for index, (window_start, window_end) in enumerate(windows):
        if window_end - window_start != window_steps:
            raise ValueError(
                f"fuse_window_predictions: window {index} {(window_start, window_end)} is not {window_steps} steps"
            )
        inside = min(window_end, num_steps) - window_start  # positions of the window inside the video
        if inside <= 0 or window_start < 0:
            raise ValueError(
                f"fuse_window_predictions: window {index} {(window_start, window_end)} is outside "
                f"the video's {num_steps} steps"
            )
        span = slice(window_start, window_start + inside)
        boundary_sum[0, span] += start[index, :inside]
        boundary_sum[1, span] += end[index, :inside]
        boundary_count[span] += 1
        # cells that end inside the window and inside the video: local start j + d <= inside - 1 (<= T - 1)
        cell_kept = np.arange(inside)[None, :] + duration_index <= inside - 1  # (D, inside)
        map_sum[:, :, span] += confidence_maps[index, :, :, :inside] * cell_kept
        map_count[:, span] += cell_kept
    if (boundary_count == 0).any():
        raise ValueError(
            f"fuse_window_predictions: steps {np.flatnonzero(boundary_count == 0)[:10].tolist()} "
            "are covered by no window"
        )
    return VideoScores(
        start=boundary_sum[0] / boundary_count,
        end=boundary_sum[1] / boundary_count,
        confidence_map=map_sum / np.maximum(map_count, 1.0),
        valid=map_count > 0,
        step_edges_sec=clip_step_edges(times_sec, duration_sec),
    )


# ---------------------------------------------------------------- helpers


def _check_times(times_sec: np.ndarray, where: str) -> np.ndarray:
    times_sec = np.asarray(times_sec, dtype=np.float64)
    if times_sec.ndim != 1 or len(times_sec) == 0:
        raise ValueError(f"{where}: times must be a non-empty (N,) array, got shape {times_sec.shape}")
    if not np.isfinite(times_sec).all() or (np.diff(times_sec) <= 0).any():
        raise ValueError(f"{where}: times must be finite and strictly increasing")
    return times_sec


def _integral_of_interpolant(values: np.ndarray, knots: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Integral from ``knots[0]`` to each of ``points`` ``(P,)`` of the piecewise-linear function
    through ``(knots (N,), values (N, D))``, constant outside the knots; returns ``(P, D)``."""
    if len(knots) == 1:
        return (points - knots[0])[:, None] * values[0]  # (P, 1) * (D,) -> (P, D)
    widths = np.diff(knots)  # (N - 1,)
    # integral from knots[0] to knots[i], trapezoids: (N, D)
    at_knots = np.concatenate(
        [
            np.zeros((1, values.shape[1])),
            np.cumsum(0.5 * widths[:, None] * (values[1:] + values[:-1]), axis=0),
        ]
    )
    segment = np.clip(np.searchsorted(knots, points, side="right") - 1, 0, len(knots) - 2)  # (P,)
    offset = np.clip(points, knots[0], knots[-1]) - knots[segment]  # (P,) inside the knot range
    slope = (values[segment + 1] - values[segment]) / widths[segment][:, None]  # (P, D)
    inside = at_knots[segment] + values[segment] * offset[:, None] + 0.5 * slope * offset[:, None] ** 2  # (P, D)
    before = np.minimum(points - knots[0], 0.0)[:, None] * values[0]  # constant extension on the left
    after = np.maximum(points - knots[-1], 0.0)[:, None] * values[-1]  # and on the right
    return inside + before + after
