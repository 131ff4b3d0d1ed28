"""BMN inputs read from a feature store: windows and rescaled videos, cached or read per item, in workers;
per-video fusion back to seconds; proposals.json writing."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from formats.feature_writer import FeatureWriter
from formats.proposals import write_proposals_json
from proposals.dataset import BMNInputs, read_videos
from proposals.infer import LossMeter, PostprocessSettings, predict_proposals
from proposals.inputs import rescale_to_fixed_length
from proposals.targets import bmn_targets

STEP_SEC = 0.25  # clip spacing of the hand-made store: clip i is centred at (i + 0.5) * 0.25 s
DIM = 4


@pytest.fixture
def store(tmp_path):
    """Two videos: "a" with 40 clips (10 s), one action over clips 10..19 (2.5 s .. 5 s); "b" with 12 clips
    (3 s, shorter than a window), no action. Feature row i of "a" is [i, i, i, i], of "b" [-i, ...]."""
    path = tmp_path / "features.h5"
    attrs = dict(backbone="test", checkpoint_sha256="none", fps=30.0, num_frames=4, interval=4, stride=8,
                 short_side=32, dim=DIM)
    with FeatureWriter(path, attrs, dtype="float32") as writer:
        for video_id, num_clips, sign in (("a", 40, 1.0), ("b", 12, -1.0)):
            times = (np.arange(num_clips) + 0.5) * STEP_SEC
            writer.begin_video(video_id, num_clips * STEP_SEC, 30.0, num_clips)
            rows = np.repeat(np.arange(num_clips, dtype=float)[:, None], DIM, 1)  # (N, C): row i is i
            writer.write_chunk(video_id, 0, sign * rows, times)
            writer.finish_video(video_id)
    segments = pd.DataFrame({"video_id": ["a"], "start": [2.5], "end": [5.0]})
    return path, segments


@pytest.mark.parametrize("cache_limit", [2**30, 0])
def test_windows_items_features_and_targets(store, cache_limit):
    path, segments = store
    videos = read_videos(path, ["a", "b"], segments, "windows", 16, cache_limit_bytes=cache_limit)
    assert (videos[0].features is None) == (cache_limit == 0)
    np.testing.assert_allclose(videos[0].segments_sec, [[2.5, 5.0]])
    assert videos[1].segments_sec.shape == (0, 2)

    everything = BMNInputs(path, videos, "windows", 16, window_overlap=0.5)
    assert everything.windows == [[(0, 16), (8, 24), (16, 32), (24, 40)], [(0, 16)]]
    np.testing.assert_allclose(everything.segments_steps[0], [[10.0, 20.0]])  # 2.5 s / 0.25 s per step
    assert everything.has_action == [False, True, False, False, False]  # only (8, 24) holds 10..20 whole

    features, gt_iou, gt_start, gt_end, has_action, index = everything[1]  # window (8, 24) of "a"
    assert features.shape == (DIM, 16) and has_action and index == 1
    np.testing.assert_array_equal(features[0].numpy(), np.arange(8, 24))  # (C, T): steps 8..23
    # the action covers window steps 2..11: it starts at the left edge of step 2 and ends at the right
    # edge of step 11; the 3-step boundary regions hold the start anchors of steps 1..3, end anchors 10..12
    np.testing.assert_array_equal(np.flatnonzero(gt_start.numpy() == 1.0), [1, 2, 3])
    np.testing.assert_array_equal(np.flatnonzero(gt_end.numpy() == 1.0), [10, 11, 12])
    expected = bmn_targets(np.array([[2 / 16, 12 / 16]]), 16)
    np.testing.assert_allclose(gt_iou.numpy(), expected[0], atol=1e-6)
    assert gt_iou[9, 2] == pytest.approx(1.0)  # cell (d = 9, s = 2) is the action itself

    short = everything[4]  # video "b" is 12 clips: zero-padded to 16
    np.testing.assert_array_equal(short[0][0].numpy(), [-i for i in range(12)] + [0] * 4)
    assert short[1].sum() == 0 and short[2].sum() == 0

    training = BMNInputs(path, videos, "windows", 16, window_overlap=0.5, only_with_actions=True)
    assert training.items == [(0, 1)]
    # DataLoader workers open the store themselves (the uncached case reads per window there)
    (batch_features, *_), = list(DataLoader(training, batch_size=2, num_workers=1))
    np.testing.assert_array_equal(batch_features[0].numpy(), features.numpy())


@pytest.mark.parametrize("cache_limit", [2**30, 0])
def test_rescaled_items(store, cache_limit):
    path, segments = store
    videos = read_videos(path, ["a", "b"], segments, "rescale", 8, cache_limit_bytes=cache_limit)
    dataset = BMNInputs(path, videos, "rescale", 8)
    assert dataset.items == [(0, 0), (1, 0)] and dataset.has_action == [True, False]
    features, gt_iou, gt_start, gt_end, _, _ = dataset[0]
    times = (np.arange(40) + 0.5) * STEP_SEC
    expected = rescale_to_fixed_length(np.repeat(np.arange(40.0)[:, None], DIM, 1), times, 10.0, 8)  # (T, C)
    np.testing.assert_allclose(features.numpy(), expected.T, atol=1e-6)
    # 2.5 s .. 5 s of 10 s at 8 steps: steps 2..3 (edges 2.5 and 5.0 s exactly)
    np.testing.assert_array_equal(np.flatnonzero(gt_start.numpy() == 1.0), [1, 2, 3])
    np.testing.assert_array_equal(np.flatnonzero(gt_end.numpy() == 1.0), [2, 3, 4])
    assert gt_iou[1, 2] == pytest.approx(1.0)
    assert BMNInputs(path, videos, "rescale", 8, only_with_actions=True).items == [(0, 0)]


class FixedBMN(torch.nn.Module):
    """A stand-in for BMN whose outputs are known: the start/end probability of a window position is
    high exactly at the clip of absolute steps 10 and 19 (it reads the feature value, = the step index)."""

    def forward(self, features):  # (B, C, T)
        step = features[:, 0, :]  # (B, T) absolute step index of each position ("a": row i = i)
        start = torch.where(step == 10, 0.9, 0.1)
        end = torch.where(step == 19, 0.9, 0.1)
        batch, steps = step.shape
        confidence_map = torch.full((batch, 2, steps, steps), 0.5)
        return confidence_map, start, end


def test_predicted_windows_are_fused_back_to_seconds(store, tmp_path):
    path, segments = store
    videos = read_videos(path, ["a"], segments, "windows", 16)
    dataset = BMNInputs(path, videos, "windows", 16, window_overlap=0.5)
    settings = PostprocessSettings(temporal_scale=16, top_k=3)
    meter = LossMeter()
    valid = torch.ones(16, 16, dtype=torch.bool).triu().flip(1)  # any (D, T) mask: the loss just has to run
    proposals = predict_proposals(FixedBMN(), dataset, settings, batch_size=3, device=torch.device("cpu"),
                                  loss_meter=meter, valid_mask=valid)
    best = proposals["a"][0]
    np.testing.assert_allclose(best[:2], [2.5, 5.0])  # steps 10..19 -> [10 * 0.25, 20 * 0.25] s
    assert meter.sums[-1] == 1  # one window with an action

    out = tmp_path / "proposals" / "proposals.json"
    write_proposals_json(out, {"a": proposals["a"][::-1]})  # written sorted whatever the input order
    data = json.loads(out.read_text())
    assert data["version"] == "1.0" and data["external_data"] == {}
    scores = [entry["score"] for entry in data["results"]["a"]]
    assert scores == sorted(scores, reverse=True) and data["results"]["a"][0]["segment"] == [2.5, 5.0]
    assert not list(out.parent.glob("*.tmp"))


def test_bad_input_mode_is_named(store):
    path, segments = store
    with pytest.raises(ValueError, match="input mode.*'sliding'"):
        read_videos(path, ["a"], segments, "sliding", 16)
