"""A short BMN training on tiny synthetic features overfits: proposals recall the ground truth."""

import numpy as np
import pytest
import torch

from proposals.bm_map import bm_valid_mask
from proposals.bmn import BMN
from proposals.inputs import rescaled_video_scores
from proposals.losses import bmn_loss
from proposals.postprocess import postprocess_video
from proposals.targets import bmn_targets

STEPS = 32
FEATURE_DIM = 16
TIOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def make_video(rng):
    """Features (T, C) that step up inside 1-2 actions, and the actions (K, 2) in normalised time."""
    segments = []
    position = int(rng.integers(0, 4))
    while len(segments) < 2:
        length = int(rng.integers(3, 12))
        if position + length > STEPS:
            break
        segments.append((position, position + length))
        position += length + int(rng.integers(2, 8))
        if rng.uniform() < 0.4:
            break
    features = 0.3 * rng.normal(size=(STEPS, FEATURE_DIM))
    for start, end in segments:
        features[start:end] += 1.5
    return features.astype(np.float32), np.array(segments, dtype=np.float64) / STEPS


def average_recall(proposals_per_video, segments_per_video, top_k):
    """Mean over tIoU 0.5:0.05:0.95 of the fraction of segments matched by one of the top-k proposals."""
    hits = np.zeros(len(TIOU_THRESHOLDS))
    total = 0
    for proposals, segments in zip(proposals_per_video, segments_per_video):
        top = proposals[:top_k]
        for gt_start, gt_end in segments:
            inter = np.clip(np.minimum(top[:, 1], gt_end) - np.maximum(top[:, 0], gt_start), 0.0, None)
            iou = inter / ((top[:, 1] - top[:, 0]) + (gt_end - gt_start) - inter)
            hits += (iou.max() if len(iou) else 0.0) >= TIOU_THRESHOLDS - 1e-9
            total += 1
    return float((hits / total).mean())


def predict_proposals(model, features):
    model.eval()
    with torch.no_grad():
        confidence_map, start, end = model(features)  # (V, 2, T, T), (V, T), (V, T)
    model.train()
    return [
        # duration 1 s: proposals come out in normalised time
        postprocess_video(
            rescaled_video_scores(start[i].numpy(), end[i].numpy(), confidence_map[i].numpy(), 1.0), STEPS
        )
        for i in range(len(features))
    ]


@pytest.fixture
def one_thread():
    """The tiny model trains faster on one thread than with threads waiting on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_bmn_overfits_tiny_synthetic_set(one_thread):
    rng = np.random.default_rng(0)
    videos = [make_video(rng) for _ in range(16)]
    features = torch.from_numpy(np.stack([video_features.T for video_features, _ in videos]))  # (V, C, T)
    segments = [video_segments for _, video_segments in videos]
    targets = [bmn_targets(video_segments, STEPS) for video_segments in segments]
    gt_iou, gt_start, gt_end = (
        torch.tensor(np.stack([target[i] for target in targets]), dtype=torch.float32) for i in range(3)
    )
    valid = torch.from_numpy(bm_valid_mask(STEPS))

    torch.manual_seed(0)
    model = BMN(STEPS, FEATURE_DIM, hidden_1d=32, hidden_2d=16, hidden_3d=16, num_sample=8, num_sample_perbin=3)
    before = predict_proposals(model, features)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    first_loss = None
    for _ in range(120):
        batch = torch.randperm(len(videos), generator=generator)[:8]
        confidence_map, start, end = model(features[batch])
        loss = bmn_loss(confidence_map, start, end, gt_iou[batch], gt_start[batch], gt_end[batch], valid, generator)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        first_loss = first_loss if first_loss is not None else loss.total.item()
    after = predict_proposals(model, features)

    assert loss.total.item() < 0.1 * first_loss
    assert average_recall(before, segments, 10) < 0.5  # untrained: ~0.2
    assert average_recall(after, segments, 100) >= 0.95
    assert average_recall(after, segments, 10) >= 0.9
