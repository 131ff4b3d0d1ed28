"""Normalisation travels with the weights: official TAdaConv files give the official features.

Each case writes weights in one layout from a randomised model, extracts features through the
stage, and compares them with an independent computation on the same frames: decoded here,
normalised here with the statistics that go with that layout, through the source model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from testkit import official_checkpoint

from backbone.build import build_model
from backbone.weights import save_checkpoint
from data.video import VideoReader
from features.extract import run_extract
from features.windows import clip_grid
from formats.features import FeatureStore, FeatureStoreMismatch

NUM_FRAMES, INTERVAL, STRIDE, FPS, SHORT_SIDE = 4, 4, 8, 30.0, 32  # pinned by conftest.SETTINGS
OFFICIAL = ([0.45, 0.45, 0.45], [0.225, 0.225, 0.225])
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
RECORDED = ([0.5, 0.4, 0.3], [0.2, 0.3, 0.25])  # what a (hypothetical) run of ours trained with
MODEL = ["model.depth=50", "model.width=8"]  # bottlenecks: the official release's block type


def source_model(heads: dict[str, int]) -> torch.nn.Module:
    """A TAda2D-R50 (width 8) whose tensors are all non-trivial random data, BN statistics included."""
    torch.manual_seed(3)
    model = build_model("tada2d", depth=50, heads=heads, width=8, num_frames=NUM_FRAMES)
    with torch.no_grad():  # scaled so that the features follow the input (not just the biases)
        for key, tensor in model.state_dict().items():
            if key.endswith("running_var"):
                tensor.copy_(1.0 + 0.2 * torch.rand(tensor.shape))
            elif key.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * torch.randn(tensor.shape))
            elif key.endswith("weight") and tensor.dim() == 1:  # BN scales
                tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape))
            elif key.endswith("weight"):  # convolutions, route functions, heads: 0.7 x He initialisation
                tensor.copy_(torch.randn(tensor.shape) * 0.7 * (2.0 / tensor[0].numel()) ** 0.5)
    return model.eval()


def independent_features(model, video_path: str, mean, std) -> np.ndarray:
    """(N, D) features computed here: decode the grid's frames, normalise by hand, forward."""
    reader = VideoReader(video_path, short_side=SHORT_SIDE)
    grid = clip_grid(reader.duration, FPS, NUM_FRAMES, INTERVAL, STRIDE)
    frames = reader.frames_at(grid.clip_frame_times_sec.reshape(-1))  # (N*T, H, W, 3) uint8
    frames = frames.reshape(grid.num_clips, NUM_FRAMES, *frames.shape[1:]).astype(np.float32) / 255.0
    frames = (frames - np.float32(mean)) / np.float32(std)  # (N, T, H, W, 3)
    video = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 4, 1, 2, 3)))  # (N, 3, T, H, W)
    with torch.no_grad():
        return model.forward_features(video).numpy()


def extracted(paths, video_id):
    with FeatureStore(paths.features_h5) as store:
        return store.get(video_id)[0], store.attrs


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["official", "torchvision", "ours"])
def test_features_use_the_statistics_of_the_weights(tmp_path, make_run, tiny_videos, layout):
    video = tiny_videos[tiny_videos["subset"] == "validation"].iloc[0]
    videos_list = tmp_path / "videos.txt"
    videos_list.write_text(video["path"] + "\n")
    common = [f"extract.videos={videos_list}", "extract.dtype=float32", *MODEL]
    if layout == "official":
        model = source_model({"label": 7})
        weights = tmp_path / "TAda2D_K400.pyth"
        torch.save(official_checkpoint(model), weights)
        overrides, expected_stats = ["extract.weights=pretrained", f"model.pretrained={weights}"], OFFICIAL
    elif layout == "torchvision":
        model = source_model({})
        weights = tmp_path / "resnet50.pth"
        torch.save(model.state_dict(), weights)
        overrides, expected_stats = ["extract.weights=pretrained", f"model.pretrained={weights}"], IMAGENET
    else:
        model = source_model({"verb": 3, "noun": 2})
        weights = tmp_path / "work" / "backbone" / "checkpoint.pt"
        section = {"name": "tada2d", "depth": 50, "width": 8, "num_frames": NUM_FRAMES, "interval": INTERVAL,
                   "dropout": 0.5, "route_reduction": 4, "route_kernels": [3, 3],
                   "input_mean": RECORDED[0], "input_std": RECORDED[1]}
        save_checkpoint(weights, model, {"model": section}, {"verb": ["a", "b", "c"], "noun": ["x", "y"]}, epoch=1)
        overrides, expected_stats = ["extract.weights=checkpoint"], RECORDED
    cfg, paths = make_run(tmp_path / "work", *common, *overrides)
    run_extract(cfg, paths)

    features, attrs = extracted(paths, video["video_id"])
    assert (attrs["input_mean"], attrs["input_std"]) == (pytest.approx(expected_stats[0]),
                                                         pytest.approx(expected_stats[1]))
    reference = independent_features(model, video["path"], *expected_stats)
    assert features.shape == reference.shape
    relative = np.abs(features - reference).max() / np.abs(reference).max()
    assert relative <= 1e-4, relative
    assert np.abs(reference - reference.mean(axis=0)).max() > 0.05 * np.abs(reference).max()  # clips differ
    if layout == "official":  # the ImageNet statistics give features far from these: the test can tell
        other = independent_features(model, video["path"], *IMAGENET)
        assert np.abs(other - reference).max() / np.abs(reference).max() > 1e-2

    # A store written with other statistics is refused like any other settings change.
    cfg, paths = make_run(tmp_path / "work", *common, *overrides, "model.input_mean=[0.4, 0.4, 0.4]",
                          "model.input_std=[0.2, 0.2, 0.2]")
    with pytest.raises(FeatureStoreMismatch, match="input_mean: old="):
        run_extract(cfg, paths)
