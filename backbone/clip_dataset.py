"""Trimmed training and validation clips from the segment table.

A clip is `num_frames` frames `interval` frames apart on the `fps` timeline, centred at
`center_sec` (seconds). Training clips are drawn afresh every epoch at random positions
inside their segment (temporal jitter), then scaled, cropped and optionally flipped;
validation clips are centred in the segment and resized (and optionally center-cropped)
deterministically.

All randomness derives from `(seed, epoch, item index)`, so an epoch is the same whatever
the number of DataLoader workers or processes, and a resumed run repeats it exactly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from backbone.clips import center_crop
from data.clip_geometry import ClipGeometry
from data.video import VideoReader

MAX_KNOWN_VIDEOS = 1024  # videos whose metadata a worker keeps (frame times: 8 bytes a frame)


@dataclass(frozen=True)
class ClipSampling:
    """How clips are cut and augmented (units in the names)."""

    num_frames: int
    interval_frames: int
    fps: float
    train: bool
    decode_short_side: int  # frames are decoded at this short side
    crop_size: int  # square crop in pixels (0 = whole frame)
    scale_range: tuple[int, int] = (0, 0)  # train: random short side in [min, max] before the crop
    flip: bool = False  # train: random horizontal flip (off when direction is a class, e.g. move left/right)

    @property
    def geometry(self) -> ClipGeometry:
        return ClipGeometry(self.num_frames, self.interval_frames, self.fps)

    @property
    def span_sec(self) -> float:
        """Seconds from the first to the last frame of a clip."""
        return self.geometry.span_sec


def sample_clip_centers(starts: np.ndarray, ends: np.ndarray, span_sec: float, rng: np.random.Generator | None
                        ) -> np.ndarray:
    """Clip centres (seconds) for segments `[starts, ends]`.

    With `rng`, uniform over the positions that keep the clip inside the segment (or, for
    a segment shorter than the clip, positions that keep the segment inside the clip);
    without, the segment midpoints.
    """
    middle = (starts + ends) / 2
    if rng is None:
        return middle
    slack = np.abs((ends - starts) - span_sec) / 2  # how far the centre may move either way
    return middle + rng.uniform(-1.0, 1.0, size=middle.shape) * slack


class SegmentClips(Dataset):
    """`(clip uint8 (T, H, W, 3), labels int64 (num_heads,))` items for one epoch.

    Args:
        segments: rows of the segment table with a `path` column (the video file).
        head_columns: segment-table column per head, e.g. `["verb", "noun"]` or `["label"]`.
        sampling: clip geometry and augmentation.
        clips_per_segment: items per segment per epoch (each at its own random position).
        seed: base seed; call `set_epoch` before each epoch.
    """

    def __init__(self, segments: pd.DataFrame, head_columns: list[str], sampling: ClipSampling,
                 clips_per_segment: int = 1, seed: int = 0):
        self.paths = segments["path"].to_numpy()
        self.starts = segments["start"].to_numpy(np.float64)
        self.ends = segments["end"].to_numpy(np.float64)
        self.labels = np.array(segments[head_columns], dtype=np.int64)  # (S, num_heads), writable copy
        self.sampling = sampling
        self.clips_per_segment = clips_per_segment if sampling.train else 1
        self.seed = seed
        self._readers: OrderedDict[str, VideoReader] = OrderedDict()  # per worker process, at most one open
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's clip centres (deterministic in seed and epoch)."""
        self.epoch = epoch
        segment_index = np.repeat(np.arange(len(self.paths)), self.clips_per_segment)
        rng = np.random.default_rng([self.seed, epoch]) if self.sampling.train else None
        self.segment_index = segment_index
        self.centers = sample_clip_centers(self.starts[segment_index], self.ends[segment_index],
                                           self.sampling.span_sec, rng)

    def __len__(self) -> int:
        return len(self.segment_index)

    def _reader(self, path: str) -> VideoReader:
        """The reader of `path`, the previous video's decoder released (see `VideoReader.release`:
        with shuffled clips, reopening beats keeping idle decoders). What a first open learnt of a
        video (size, frame times) is kept for the last `MAX_KNOWN_VIDEOS` videos."""
        reader = self._readers.pop(path, None)
        if self._readers:
            next(reversed(self._readers.values())).release()  # the video read last
        if reader is None:
            reader = VideoReader(path, short_side=self.sampling.decode_short_side)
        self._readers[path] = reader  # most recently used last
        while len(self._readers) > MAX_KNOWN_VIDEOS:
            self._readers.popitem(last=False)
        return reader

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        segment = self.segment_index[index]
        s = self.sampling
        times = s.geometry.frame_times(self.centers[index])  # (T,) seconds on the fps timeline
        frames = self._reader(self.paths[segment]).frames_at(times)  # (T, H, W, 3) uint8
        if s.train:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            frames = augment(frames, rng, s.scale_range, s.crop_size, s.flip)
        else:
            frames = torch.from_numpy(np.ascontiguousarray(center_crop(frames, s.crop_size)))
        return frames, torch.from_numpy(self.labels[segment])


def augment(frames: np.ndarray, rng: np.random.Generator, scale_range: tuple[int, int], crop_size: int,
            flip: bool) -> torch.Tensor:
    """Random short-side scale, random square crop, optional flip; same for every frame of a clip.

    `(T, H, W, 3)` uint8 -> `(T, crop, crop, 3)` uint8.
    """
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, H, W, 3) -> (T, 3, H, W)
    height, width = x.shape[-2:]
    short_side = int(rng.integers(scale_range[0], scale_range[1] + 1))
    scale = short_side / min(height, width)
    size = (max(crop_size, round(height * scale)), max(crop_size, round(width * scale)))
    if size != (height, width):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    top = int(rng.integers(0, size[0] - crop_size + 1))
    left = int(rng.integers(0, size[1] - crop_size + 1))
    x = x[..., top:top + crop_size, left:left + crop_size]
    if flip and rng.random() < 0.5:
        x = x.flip(-1)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (T, 3, h, w) -> (T, h, w, 3)
