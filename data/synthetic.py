"""The synthetic dataset: real H.264 videos whose actions need temporal order to classify.

Real videos cannot be downloaded here, so the project renders its own (DESIGN.md "The
synthetic dataset"). An action is a shape (the noun: square, disk, triangle, ring,
cross) whose appearance changes over the action's span (the verb). Verbs come in
time-reversed pairs:

    grow / shrink, fade in / fade out, red->green / green->red, move right / move left

Both members of a pair show the same *set* of frames, in opposite order, so a model
that averages frames (TSN) cannot tell them apart, while TAda2D, whose route function
reads frame descriptors in order, can. The shape is visible exactly inside its segment
(`[start_sec, end_sec)` on the frame timeline): a fade never goes fully transparent and
a shrink never reaches zero size. Backgrounds carry a gradient, static distractor shapes
and per-frame noise, so boundaries must be found rather than read off a blank frame.

Two styles:

* `ek100`: several short, sometimes overlapping actions per video, verb + noun heads;
  annotations written as EPIC-Kitchens-100 CSV files (plus class and video-info files).
* `hacs`: one verb class per video, longer instances; annotations written as a
  HACS/ActivityNet JSON file.

Everything is seeded and parametric; `generate_dataset` caches the files under a folder
named by a hash of the parameters, and a finished set is marked by its `manifest.json`
(written last), so an interrupted generation is redone and a finished one reused.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from configs.schema import SyntheticConfig
from data.mp4 import write_mp4

GENERATOR_VERSION = 6  # bump when the rendering changes, so caches are rebuilt

VERB_PAIRS = [("grow", "shrink"), ("fade-in", "fade-out"), ("red-to-green", "green-to-red"),
              ("move-right", "move-left")]
SHAPES = ["square", "disk", "triangle", "ring", "cross"]

RED = np.array([230.0, 40.0, 40.0])
GREEN = np.array([40.0, 220.0, 60.0])
BLUE = np.array([60.0, 90.0, 235.0])
HACS_PATTERN = "v_{video_id}.mp4"
EK100_PATTERN = "{participant}/{video_id}.mp4"


def verb_names(num_verb_pairs: int) -> list[str]:
    """Verb classes; verbs 2k and 2k+1 are time-reversed versions of each other."""
    return [name for pair in VERB_PAIRS[:num_verb_pairs] for name in pair]


@dataclass
class Action:
    """One rendered action: times in seconds, position and size in pixels."""

    start_sec: float
    end_sec: float
    verb: int
    noun: int
    center_x: float
    center_y: float
    radius: float


@dataclass
class SyntheticVideo:
    video_id: str
    subset: str
    duration_sec: float
    actions: list[Action]


# --------------------------------------------------------------------------------------
# Rendering


def shape_mask(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, radius: float) -> np.ndarray:
    """Boolean (H, W) mask of a shape of half-size `radius` pixels centred at (cx, cy)."""
    dx, dy = xs - cx, ys - cy
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "disk":
        return dx * dx + dy * dy <= radius * radius
    if shape == "triangle":  # apex up
        return (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= radius * radius) & (d2 >= (0.55 * radius) ** 2)
    if shape == "cross":
        arm = max(radius / 3, 1.0)
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def action_state(verb_name: str, progress: float, radius: float) -> tuple[float, np.ndarray, float, float]:
    """Appearance of an action at `progress` in [0, 1): (radius, colour, opacity, x offset in radii).

    The reversed verb of a pair yields the state of `1 - progress`, so both show the same frames.
    """
    scale, colour, opacity, offset = 1.0, BLUE, 1.0, 0.0
    if verb_name in ("grow", "shrink"):
        p = progress if verb_name == "grow" else 1.0 - progress
        scale = 0.35 + 0.65 * p
    elif verb_name in ("fade-in", "fade-out"):
        p = progress if verb_name == "fade-in" else 1.0 - progress
        opacity = 0.5 + 0.5 * p
    elif verb_name in ("red-to-green", "green-to-red"):
        p = progress if verb_name == "red-to-green" else 1.0 - progress
        colour = (1 - p) * RED + p * GREEN
    elif verb_name in ("move-right", "move-left"):
        p = progress if verb_name == "move-right" else 1.0 - progress
        offset = -0.6 + 1.2 * p
    else:
        raise ValueError(f"unknown verb {verb_name!r}")
    return radius * scale, colour, opacity, offset


class Renderer:
    """Draws the frames of one video: static background, then the active actions."""

    def __init__(self, size: int, noise_std: float, num_distractors: int, verbs: list[str],
                 rng: np.random.Generator, background_rng: np.random.Generator | None = None):
        self.size, self.noise_std, self.verbs = size, noise_std, verbs
        self.ys, self.xs = np.mgrid[0:size, 0:size].astype(np.float32)
        # muted backgrounds and distractors, saturated actions: an action always stands out
        bg = background_rng or rng
        tint = bg.uniform(40, 100, size=3)
        ramp = (self.xs / size)[..., None] * bg.uniform(-40, 40, size=3)
        self.background = np.clip(tint + ramp, 0, 255).astype(np.float32)  # (H, W, 3)
        for _ in range(num_distractors):  # static: never part of an action
            mask = shape_mask(SHAPES[bg.integers(len(SHAPES))], self.xs, self.ys,
                              bg.uniform(0.1, 0.9) * size, bg.uniform(0.1, 0.9) * size, size * 0.07)
            self.background[mask] = bg.uniform(90, 140) + bg.uniform(-15, 15, size=3)
        self.rng = rng

    def frame(self, time_sec: float, actions: list[Action]) -> np.ndarray:
        image = self.background.copy()
        for action in actions:
            if not action.start_sec <= time_sec < action.end_sec:
                continue
            progress = (time_sec - action.start_sec) / (action.end_sec - action.start_sec)
            radius, colour, opacity, offset = action_state(self.verbs[action.verb], progress, action.radius)
            mask = shape_mask(SHAPES[action.noun], self.xs, self.ys,
                              action.center_x + offset * action.radius, action.center_y, radius)
            image[mask] = (1 - opacity) * image[mask] + opacity * colour
        if self.noise_std > 0:
            image += self.rng.normal(0, self.noise_std, size=image.shape).astype(np.float32)
        return np.clip(image, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Layout of actions in time and space


def plan_videos(cfg: SyntheticConfig) -> list[SyntheticVideo]:
    """Draw every video's duration and actions from `cfg.seed` (no rendering)."""
    rng = np.random.default_rng(cfg.seed)
    videos = []
    subsets = ["training"] * cfg.num_train_videos + ["validation"] * cfg.num_val_videos
    for index, subset in enumerate(subsets):
        duration = float(rng.uniform(cfg.min_duration_sec, cfg.max_duration_sec))
        if cfg.style == "ek100":
            video_id = f"P{index % 3 + 1:02d}_{index:03d}"
            actions = _plan_ek100_actions(cfg, duration, rng)
        else:
            video_id = f"syn{index:04d}"
            # classes in turn within each subset, so that every class has ground truth in both
            position = index if subset == "training" else index - cfg.num_train_videos
            actions = _plan_hacs_actions(cfg, duration, position % (2 * cfg.num_verb_pairs), rng)
        videos.append(SyntheticVideo(video_id, subset, duration, actions))
    return videos


def _random_action(cfg: SyntheticConfig, start: float, end: float, verb: int, rng) -> Action:
    size = cfg.frame_size
    radius = size * rng.uniform(0.17, 0.24)
    margin = 1.7 * radius  # room for the move verbs' offset of 0.6 radius
    return Action(round(start, 2), round(end, 2), verb, int(rng.integers(cfg.num_shapes)),
                  float(rng.uniform(margin, size - margin)), float(rng.uniform(radius + 1, size - radius - 1)),
                  float(radius))


def _plan_ek100_actions(cfg: SyntheticConfig, duration: float, rng) -> list[Action]:
    num_verbs = 2 * cfg.num_verb_pairs
    actions: list[Action] = []
    cursor = float(rng.uniform(0.2, 1.0))
    while len(actions) < cfg.actions_per_video:
        length = float(rng.uniform(cfg.min_action_sec, cfg.max_action_sec))
        if actions and rng.random() < cfg.overlap_prob:  # start inside the previous action
            start = actions[-1].start_sec + rng.uniform(0.3, 0.7) * (actions[-1].end_sec - actions[-1].start_sec)
        else:
            start = cursor + float(rng.uniform(0.3, 1.5))
        if start + length > duration - 0.2:
            break
        actions.append(_random_action(cfg, start, start + length, int(rng.integers(num_verbs)), rng))
        cursor = max(cursor, start + length)
    return actions


def _plan_hacs_actions(cfg: SyntheticConfig, duration: float, verb: int, rng) -> list[Action]:
    count = int(rng.integers(1, 4))
    slot = duration / count
    actions = []
    for i in range(count):
        length = float(rng.uniform(cfg.min_action_sec, min(cfg.max_action_sec, slot - 0.4)))
        start = i * slot + float(rng.uniform(0.2, slot - length - 0.2))
        actions.append(_random_action(cfg, start, start + length, verb, rng))
    return actions


# --------------------------------------------------------------------------------------
# Writing the dataset


def dataset_dir(cfg: SyntheticConfig, cache_dir: str | Path) -> Path:
    """`<cache_dir>/synthetic-<style>-<hash of the parameters>`."""
    params = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(cfg)}, sort_keys=True)
    digest = hashlib.sha256(params.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"synthetic-{cfg.style}-{digest}"


def generate_dataset(cfg: SyntheticConfig, cache_dir: str | Path, log=print) -> Path:
    """Render (or reuse) the synthetic set; returns its folder.

    The folder holds `videos/`, the annotation files of the style and `manifest.json`
    (written last: its presence means the set is complete). Videos already written by an
    interrupted run are kept (each MP4 is written under a temporary name and renamed).
    """
    root = dataset_dir(cfg, cache_dir)
    manifest = root / "manifest.json"
    if manifest.is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:  # several processes (torchrun ranks) wait for one writer
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not manifest.is_file():
            _write_dataset(cfg, root, log)
    return root


def _write_dataset(cfg: SyntheticConfig, root: Path, log) -> None:
    manifest = root / "manifest.json"
    videos = plan_videos(cfg)
    verbs = verb_names(cfg.num_verb_pairs)
    log(f"generating the synthetic {cfg.style} set: {len(videos)} videos -> {root}")
    for video in videos:
        path = root / "videos" / video_relative_path(cfg.style, video.video_id)
        if path.is_file():
            continue
        video_key = int(hashlib.md5(video.video_id.encode()).hexdigest()[:8], 16)
        rng = np.random.default_rng([cfg.seed, video_key])
        background_rng = None
        if cfg.num_backgrounds > 0:  # a shared pool: the scene says nothing about the class
            background_rng = np.random.default_rng([cfg.seed, 7, video_key % cfg.num_backgrounds])
        renderer = Renderer(cfg.frame_size, cfg.noise_std, cfg.num_distractors, verbs, rng, background_rng)
        num_frames = int(round(video.duration_sec * cfg.fps))
        frames = (renderer.frame(i / cfg.fps, video.actions) for i in range(num_frames))
        write_mp4(path, frames, cfg.fps, keyframe_interval=max(1, int(round(cfg.fps))))  # 1 s GOPs
    if cfg.style == "ek100":
        _write_ek100_annotations(root, cfg, videos, verbs)
    else:
        _write_hacs_annotations(root, cfg, videos, verbs)
    manifest.write_text(json.dumps({"version": GENERATOR_VERSION, "params": dataclasses.asdict(cfg),
                                    "num_videos": len(videos)}, indent=1))


def video_relative_path(style: str, video_id: str) -> str:
    pattern = EK100_PATTERN if style == "ek100" else HACS_PATTERN
    return pattern.format(video_id=video_id, participant=video_id.split("_")[0])


def _timestamp(seconds: float) -> str:
    """Seconds -> EK100's `HH:MM:SS.ff`."""
    hundredths = int(round(seconds * 100))
    hours, rest = divmod(hundredths, 360000)
    minutes, rest = divmod(rest, 6000)
    return f"{hours:02d}:{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"


def _write_ek100_annotations(root: Path, cfg: SyntheticConfig, videos: list[SyntheticVideo],
                             verbs: list[str]) -> None:
    shapes = SHAPES[:cfg.num_shapes]
    for subset, file_name in (("training", "EPIC_100_train.csv"), ("validation", "EPIC_100_validation.csv")):
        rows = []
        for video in (v for v in videos if v.subset == subset):
            for i, a in enumerate(video.actions):
                rows.append({
                    "narration_id": f"{video.video_id}_{i}", "participant_id": video.video_id.split("_")[0],
                    "video_id": video.video_id, "narration_timestamp": _timestamp(a.start_sec),
                    "start_timestamp": _timestamp(a.start_sec), "stop_timestamp": _timestamp(a.end_sec),
                    "start_frame": int(round(a.start_sec * cfg.fps)) + 1,
                    "stop_frame": int(round(a.end_sec * cfg.fps)) + 1,
                    "narration": f"{verbs[a.verb]} {shapes[a.noun]}", "verb": verbs[a.verb], "verb_class": a.verb,
                    "noun": shapes[a.noun], "noun_class": a.noun, "all_nouns": str([shapes[a.noun]]),
                    "all_noun_classes": str([a.noun]),
                })
        pd.DataFrame(rows).to_csv(root / file_name, index=False)
    pd.DataFrame({"id": range(len(verbs)), "key": verbs, "instances": [str([v]) for v in verbs],
                  "category": "change"}).to_csv(root / "EPIC_100_verb_classes.csv", index=False)
    pd.DataFrame({"id": range(len(shapes)), "key": shapes, "instances": [str([s]) for s in shapes],
                  "category": "shape"}).to_csv(root / "EPIC_100_noun_classes.csv", index=False)
    pd.DataFrame({"video_id": [v.video_id for v in videos], "duration": [v.duration_sec for v in videos],
                  "fps": cfg.fps, "resolution": f"{cfg.frame_size}x{cfg.frame_size}"}
                 ).to_csv(root / "EPIC_100_video_info.csv", index=False)


def _write_hacs_annotations(root: Path, cfg: SyntheticConfig, videos: list[SyntheticVideo],
                            verbs: list[str]) -> None:
    database = {}
    for video in videos:
        database[video.video_id] = {
            "subset": video.subset,
            "duration": f"{video.duration_sec:.2f}",  # HACS writes durations as strings
            "url": "",
            "annotations": [{"label": verbs[a.verb], "segment": [a.start_sec, a.end_sec]} for a in video.actions],
        }
    (root / "hacs_segments.json").write_text(json.dumps({"version": "synthetic", "database": database}))
    (root / "classes.txt").write_text("\n".join(verbs) + "\n")  # keeps pair order (else names are sorted)


def synthetic_dataset_files(cfg: SyntheticConfig, root: Path) -> dict:
    """The `dataset` config values that point at a generated set (see `data.dataset`)."""
    if cfg.style == "ek100":
        return {
            "annotations": {"training": str(root / "EPIC_100_train.csv"),
                            "validation": str(root / "EPIC_100_validation.csv")},
            "verb_classes": str(root / "EPIC_100_verb_classes.csv"),
            "noun_classes": str(root / "EPIC_100_noun_classes.csv"),
            "video_info": str(root / "EPIC_100_video_info.csv"),
            "video_dir": str(root / "videos"),
            "video_pattern": EK100_PATTERN,
        }
    json_path = str(root / "hacs_segments.json")
    return {"annotations": {"training": json_path, "validation": json_path},
            "class_names": str(root / "classes.txt"),
            "video_dir": str(root / "videos"), "video_pattern": HACS_PATTERN}
