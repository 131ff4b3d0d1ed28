"""Pooling clip features over proposals and videos, and the head probabilities on them."""

import numpy as np
import pytest
import torch

from localize.classifiers import FeatureClassifier, HeadProbabilities, MissingFeatures
from localize.pooling import proposal_clip_ranges, proposal_feature_means, video_feature_mean

TIMES = np.array([0.5, 1.5, 2.5, 3.5])  # clip centres, seconds
FEATURES = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 8.0]], dtype=np.float32)


def reference_means(features, times, segments):
    """Plain loops in float64: centres inside [start, end], else the nearest centre to the midpoint."""
    out = []
    for start, end in segments:
        inside = [i for i, t in enumerate(times) if start <= t <= end]
        if not inside:
            middle = (start + end) / 2
            distances = [abs(t - middle) for t in times]
            inside = [int(np.argmin(distances))]  # first minimum: the earlier clip on a tie
        out.append(np.mean([features[i].astype(np.float64) for i in inside], axis=0))
    return np.array(out)


def test_hand_worked_proposals():
    segments = np.array([
        [1.0, 3.0],    # centres 1.5, 2.5 -> mean of rows 1, 2
        [0.5, 0.5],    # a centre on both ends counts -> row 0
        [1.9, 2.1],    # no centre inside; midpoint 2.0 is as near 1.5 as 2.5 -> the earlier, row 1
        [2.9, 3.2],    # no centre inside; midpoint 3.05 nearest 3.5 -> row 3
        [10.0, 12.0],  # past the end -> the last clip
        [-5.0, -4.0],  # before the start -> the first clip
        [0.0, 9.0],    # everything
        [1.5, 2.5],    # centres on both ends count -> rows 1, 2
    ])
    first, last = proposal_clip_ranges(TIMES, segments)
    assert first.tolist() == [1, 0, 1, 3, 3, 0, 0, 1]
    assert last.tolist() == [3, 1, 2, 4, 4, 1, 4, 3]
    means = proposal_feature_means(FEATURES, TIMES, segments)
    expected = np.array([[4.0, 3.0], [1.0, 0.0], [3.0, 2.0], [7.0, 8.0], [7.0, 8.0], [1.0, 0.0], [4.0, 3.5],
                         [4.0, 3.0]])
    np.testing.assert_allclose(means, expected, rtol=0, atol=1e-6)
    assert means.shape == (8, 2) and means.dtype == np.float32


def test_matches_plain_reference_on_random_input():
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 30, 200))
    features = rng.normal(size=(200, 16)).astype(np.float32)
    starts = rng.uniform(-2, 32, 120)
    segments = np.stack([starts, starts + rng.exponential(2.0, 120)], axis=1)
    segments[:10, 1] = segments[:10, 0] + 1e-4  # very short: the fallback
    np.testing.assert_allclose(proposal_feature_means(features, times, segments),
                               reference_means(features, times, segments), rtol=1e-5, atol=1e-5)


def test_single_clip_video():
    means = proposal_feature_means(FEATURES[:1], TIMES[:1], np.array([[3.0, 4.0], [0.0, 1.0]]))
    np.testing.assert_allclose(means, [[1.0, 0.0], [1.0, 0.0]])


def test_video_mean():
    np.testing.assert_allclose(video_feature_mean(FEATURES), [4.0, 3.5], atol=1e-6)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="increasing order"):
        proposal_feature_means(FEATURES, TIMES[::-1], np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="N = 0"):
        proposal_feature_means(FEATURES[:0], TIMES[:0], np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"times must be \(N,\)"):
        proposal_feature_means(FEATURES, TIMES[:3], np.array([[0.0, 1.0]]))


class LinearHeads(torch.nn.Module):
    """A hand-built stand-in for the classifier: known linear verb and noun heads on D=4 features."""

    def __init__(self, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.verb = torch.nn.Linear(4, 3)
        self.noun = torch.nn.Linear(4, 5)
        with torch.no_grad():
            for layer in (self.verb, self.noun):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))

    def classify_features(self, feature):
        return {"verb": self.verb(feature), "noun": self.noun(feature)}


class DictStore:
    """A FeatureStore stand-in: {video_id: (features, times)}."""

    path = "memory.h5"

    def __init__(self, videos):
        self.videos = videos

    def __contains__(self, video_id):
        return video_id in self.videos

    def get(self, video_id):
        return self.videos[video_id]


def softmax64(logits):
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def test_features_mode_equals_mean_of_per_clip_logits_for_linear_heads():
    """Logits of the mean feature = mean of the per-clip logits (the heads are linear), then softmax."""
    rng = np.random.default_rng(1)
    times = np.arange(20) * 0.5 + 0.25
    features = rng.normal(size=(20, 4)).astype(np.float32)
    heads = LinearHeads()
    classifier = FeatureClassifier(DictStore({"v": (features, times)}), HeadProbabilities(heads))
    segments = np.array([[1.0, 4.0], [0.0, 0.3], [6.1, 9.9]])
    probabilities = classifier.proposal_probabilities("v", segments)

    weights = {name: (getattr(heads, name).weight.detach().double().numpy(),
                      getattr(heads, name).bias.detach().double().numpy()) for name in ("verb", "noun")}
    for head, (weight, bias) in weights.items():
        per_clip_logits = features.astype(np.float64) @ weight.T + bias  # (N, K), float64
        expected = []
        for start, end in segments:
            inside = (times >= start) & (times <= end)
            expected.append(softmax64(per_clip_logits[inside].mean(axis=0)))
        np.testing.assert_allclose(probabilities[head], np.array(expected), rtol=1e-5, atol=1e-6)
        assert probabilities[head].dtype == np.float64


def test_video_probabilities_and_missing_features():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(7, 4)).astype(np.float32)
    heads = LinearHeads(seed=3)
    classifier = FeatureClassifier(DictStore({"v": (features, np.arange(7.0)), "empty": (features[:0],
                                                                                         np.zeros(0))}),
                                   HeadProbabilities(heads))
    probabilities = classifier.video_probabilities("v")
    weight, bias = heads.noun.weight.detach().double().numpy(), heads.noun.bias.detach().double().numpy()
    np.testing.assert_allclose(probabilities["noun"], softmax64(features.astype(np.float64).mean(0) @ weight.T
                                                                + bias), rtol=1e-5)
    assert probabilities["verb"].shape == (3,)
    with pytest.raises(MissingFeatures, match="no complete features"):
        classifier.video_probabilities("absent")
    with pytest.raises(MissingFeatures, match="0 clip features"):
        classifier.proposal_probabilities("empty", np.array([[0.0, 1.0]]))
