"""Detections from proposals and class probabilities: hand-worked scores and a brute-force reference."""

import itertools

import numpy as np
import pytest

from localize.detections import best_first, ek100_detections, fuse_scores, hacs_detections, top_classes


def test_fusion_is_the_product():
    np.testing.assert_allclose(fuse_scores(np.array([0.5, 0.2]), np.array([0.4, 0.9])), [0.2, 0.18])


def test_top_classes_order_and_ties():
    indices, values = top_classes(np.array([[0.2, 0.5, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]]), 3)
    assert indices.tolist() == [[1, 0, 2], [0, 1, 2]]  # equal probabilities: lower index first
    np.testing.assert_allclose(values, [[0.5, 0.2, 0.2], [0.25, 0.25, 0.25]])
    assert top_classes(np.array([0.3, 0.7]), 5)[0].tolist() == [1, 0]  # k capped at K
    with pytest.raises(ValueError):
        top_classes(np.array([0.3, 0.7]), 0)


def test_hacs_hand_worked():
    segments = np.array([[1.0, 4.0], [2.0, 9.0]])
    proposal_scores = np.array([0.9, 0.5])
    class_probabilities = np.array([0.1, 0.6, 0.3])
    # top 2 classes: 1 (0.6), 2 (0.3); scores: p0: 0.54, 0.27; p1: 0.30, 0.15
    detections = hacs_detections(segments, proposal_scores, class_probabilities, top_k=2, max_detections=3)
    np.testing.assert_allclose(detections.scores, [0.54, 0.30, 0.27])
    assert detections.classes["label"].tolist() == [1, 1, 2]
    np.testing.assert_allclose(detections.segments_sec, [[1.0, 4.0], [2.0, 9.0], [1.0, 4.0]])
    assert len(detections) == 3


def test_ek100_hand_worked():
    segments = np.array([[0.0, 2.0], [3.0, 5.0]])
    proposal_scores = np.array([0.8, 0.4])
    verbs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    nouns = np.array([[0.5, 0.4, 0.1], [0.9, 0.05, 0.05]])
    detections = ek100_detections(segments, proposal_scores, verbs, nouns, top_verbs=2, top_nouns=2,
                                  max_detections=5)
    # p0: verbs 0 (.7), 1 (.2); nouns 0 (.5), 1 (.4): .8*.7*.5=.28, .8*.7*.4=.224, .8*.2*.5=.08, .8*.2*.4=.064
    # p1: verbs 2 (.6), 1 (.3); nouns 0 (.9), 1 (.05): .4*.6*.9=.216, .4*.6*.05=.012, .4*.3*.9=.108, .006
    np.testing.assert_allclose(detections.scores, [0.28, 0.224, 0.216, 0.108, 0.08])
    assert detections.classes["verb"].tolist() == [0, 0, 2, 1, 1]
    assert detections.classes["noun"].tolist() == [0, 1, 0, 0, 0]
    np.testing.assert_allclose(detections.segments_sec[:, 0], [0.0, 0.0, 3.0, 3.0, 0.0])


def brute_force_ek100(segments, proposal_scores, verbs, nouns, top_verbs, top_nouns, max_detections):
    rows = []
    for p in range(len(segments)):
        best_verbs = sorted(range(verbs.shape[1]), key=lambda v: (-verbs[p, v], v))[:top_verbs]
        best_nouns = sorted(range(nouns.shape[1]), key=lambda n: (-nouns[p, n], n))[:top_nouns]
        for v, n in itertools.product(best_verbs, best_nouns):
            rows.append((float(proposal_scores[p]) * float(verbs[p, v]) * float(nouns[p, n]), p, v, n))
    rows.sort(key=lambda row: -row[0])  # stable: ties keep proposal, verb rank, noun rank order
    return rows[:max_detections]


def test_ek100_matches_brute_force():
    rng = np.random.default_rng(0)
    num_proposals = 30
    starts = rng.uniform(0, 100, num_proposals)
    segments = np.stack([starts, starts + rng.uniform(0.5, 5, num_proposals)], axis=1)
    proposal_scores = rng.uniform(0, 1, num_proposals)
    verbs = rng.dirichlet(np.ones(12), num_proposals)
    nouns = rng.dirichlet(np.ones(20), num_proposals)
    detections = ek100_detections(segments, proposal_scores, verbs, nouns, 3, 4, max_detections=50)
    expected = brute_force_ek100(segments, proposal_scores, verbs, nouns, 3, 4, 50)
    np.testing.assert_allclose(detections.scores, [row[0] for row in expected], rtol=1e-12)
    assert detections.classes["verb"].tolist() == [row[2] for row in expected]
    assert detections.classes["noun"].tolist() == [row[3] for row in expected]
    np.testing.assert_array_equal(detections.segments_sec, segments[[row[1] for row in expected]])


def test_hacs_matches_brute_force_and_caps():
    rng = np.random.default_rng(1)
    starts = rng.uniform(0, 100, 40)
    segments = np.stack([starts, starts + 3], axis=1)
    proposal_scores = rng.uniform(0, 1, 40)
    probabilities = rng.dirichlet(np.ones(8))
    best = sorted(range(8), key=lambda c: (-probabilities[c], c))[:3]
    rows = sorted(((proposal_scores[p] * probabilities[c], p, c) for p in range(40) for c in best),
                  key=lambda row: -row[0])[:25]
    detections = hacs_detections(segments, proposal_scores, probabilities, top_k=3, max_detections=25)
    np.testing.assert_allclose(detections.scores, [row[0] for row in rows], rtol=1e-12)
    assert detections.classes["label"].tolist() == [row[2] for row in rows]
    assert len(detections) == 25


def test_no_proposals_and_bad_shapes():
    empty = ek100_detections(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 3)), np.zeros((0, 4)), 2, 2, 10)
    assert len(empty) == 0 and empty.classes["verb"].shape == (0,)
    with pytest.raises(ValueError, match="noun probabilities"):
        ek100_detections(np.zeros((2, 2)), np.zeros(2), np.ones((2, 3)), np.ones((3, 4)), 2, 2, 10)
    with pytest.raises(ValueError, match="2 segments but 3 scores"):
        hacs_detections(np.zeros((2, 2)), np.zeros(3), np.ones(3), 2, 10)
    assert best_first(np.array([0.1, 0.5, 0.5, 0.2]), 3).tolist() == [1, 2, 3]
