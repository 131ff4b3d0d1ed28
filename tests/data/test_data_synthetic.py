import dataclasses

import numpy as np
import pytest

from configs.schema import Config, DatasetConfig, RuntimeConfig, SyntheticConfig
from data.dataset import load_dataset
from data.synthetic import (
    SHAPES,
    Action,
    Renderer,
    dataset_dir,
    generate_dataset,
    plan_videos,
    verb_names,
)
from data.video import VideoReader

TINY = dict(num_train_videos=3, num_val_videos=2, min_duration_sec=6.0, max_duration_sec=8.0, frame_size=40,
            actions_per_video=3, min_action_sec=1.0, max_action_sec=2.0)


def _config(tmp_path, style="ek100", **synthetic):
    syn = SyntheticConfig(style=style, **{**TINY, **synthetic})
    return Config(dataset=DatasetConfig(source="synthetic", style=style, synthetic=syn),
                  runtime=RuntimeConfig(work_dir=str(tmp_path / "work"), cache_dir=str(tmp_path / "cache")))


@pytest.mark.parametrize("style", ["ek100", "hacs"])
def test_generated_set_loads_back_through_real_loaders(tmp_path, style):
    cfg = _config(tmp_path, style)
    ann = load_dataset(cfg)
    plan = plan_videos(cfg.dataset.synthetic)
    assert len(ann.videos) == 5 and (ann.videos.path != "").all()
    assert sorted(ann.videos.video_id) == sorted(v.video_id for v in plan)
    expected = sorted((v.video_id, a.start_sec, a.end_sec, a.verb) for v in plan for a in v.actions)
    key = "verb" if style == "ek100" else "label"
    got = sorted(zip(ann.segments.video_id, ann.segments.start.round(2), ann.segments.end.round(2),
                     ann.segments[key]))
    assert got == expected
    assert ann.classes[key] == verb_names(3)
    if style == "ek100":
        assert ann.classes["noun"] == SHAPES[:4]
        assert (ann.segments.label == ann.segments.verb * 4 + ann.segments.noun).all()
        assert ann.videos.path.str.contains("/P0").all()  # {participant}/{video_id}.mp4
    else:
        assert ann.segments.groupby("video_id").label.nunique().max() == 1  # one class per video
        for subset, count in (("training", 3), ("validation", 2)):  # classes in turn within a subset
            assert set(ann.segments[ann.segments.subset == subset].label) == set(range(count))
    for _, video in ann.videos.iterrows():
        reader = VideoReader(video.path)
        assert reader.duration == pytest.approx(video.duration, abs=0.05)
        assert (reader.height, reader.width) == (40, 40)


def test_cache_reuses_files_and_parameters_change_the_folder(tmp_path):
    cfg = _config(tmp_path).dataset.synthetic
    root = generate_dataset(cfg, tmp_path / "cache")
    video = next((root / "videos").rglob("*.mp4"))
    stamp = video.stat().st_mtime_ns
    assert generate_dataset(cfg, tmp_path / "cache") == root
    assert video.stat().st_mtime_ns == stamp
    assert dataset_dir(dataclasses.replace(cfg, seed=1), tmp_path / "cache") != root


def test_interrupted_generation_is_finished(tmp_path):
    cfg = _config(tmp_path).dataset.synthetic
    root = generate_dataset(cfg, tmp_path / "cache")
    (root / "manifest.json").unlink()  # as if killed before the end
    victim = next((root / "videos").rglob("*.mp4"))
    victim.unlink()
    assert generate_dataset(cfg, tmp_path / "cache") == root
    assert victim.is_file() and (root / "manifest.json").is_file()


def test_pixels_agree_with_annotations(tmp_path):
    """With noise off, a frame differs from the static background exactly inside a segment."""
    cfg = _config(tmp_path, noise_std=0.0, overlap_prob=0.5)
    syn = cfg.dataset.synthetic
    ann = load_dataset(cfg)
    for _, video in ann.videos.iterrows():
        segments = ann.segments[ann.segments.video_id == video.video_id]
        reader = VideoReader(video.path)
        times = np.arange(reader.num_frames) / syn.fps
        frames = reader.frames(np.arange(reader.num_frames)).astype(np.float32)
        margin = 1.5 / syn.fps  # stay a frame away from the boundaries
        inside = np.zeros(len(times), bool)
        near = np.zeros(len(times), bool)
        for _, seg in segments.iterrows():
            inside |= (times >= seg.start + margin) & (times < seg.end - margin)
            near |= (times >= seg.start - margin) & (times < seg.end + margin)
        outside = ~near
        assert outside.any() and inside.any()
        background = frames[outside].mean(axis=0)
        change = np.abs(frames - background).max(axis=-1)  # (N, H, W)
        changed_pixels = (change > 35).sum(axis=(1, 2))  # H.264 error stays below 35
        assert changed_pixels[outside].max() == 0, video.video_id  # nothing outside the segments
        assert changed_pixels[inside].min() >= 4, video.video_id  # a shape inside every segment


def test_reversed_pairs_show_the_same_frames():
    verbs = verb_names(4)
    rng = np.random.default_rng(0)
    renderer = Renderer(40, 0.0, 2, verbs, rng)
    for forward in range(0, 8, 2):
        a = [Action(0.0, 1.0, forward, 1, 20.0, 20.0, 6.0)]
        b = [Action(0.0, 1.0, forward + 1, 1, 20.0, 20.0, 6.0)]
        for p in (0.1, 0.3, 0.5, 0.8):
            assert np.array_equal(renderer.frame(p, a), renderer.frame(1.0 - p, b)), verbs[forward]
        assert not np.array_equal(renderer.frame(0.1, a), renderer.frame(0.1, b))
