"""From proposals and class probabilities to scored detections of one video.

The fusion rule (paper appendix C.2, as in BMN's and TAdaConv's HACS/EK100 pipelines): a
detection's score is the product of the proposal's confidence and the class probability,

    HACS:  score(proposal p, class c)         = s_p * P(c | video)
    EK100: score(proposal p, verb v, noun n)  = s_p * P(v | p) * P(n | p)

(verb and noun taken as independent given the proposal). A product keeps the ranking of
proposals within a class and of classes within a proposal, and ranks a detection low when
either the boundaries or the class are doubtful. No other rule is offered: there is no
configuration key for one, and ``fuse_scores`` is the one place to change it.

Candidates per proposal: the ``top_k`` most probable classes (HACS) or the ``top_verbs`` x
``top_nouns`` most probable verb-noun pairs (EK100). Of all candidates of a video the
``max_detections`` best-scored are kept. Ties keep a fixed order: proposals in their given
order, then classes by rank, then (for equal probabilities) by lower class index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def fuse_scores(proposal_scores: np.ndarray, class_probabilities: np.ndarray) -> np.ndarray:
    """Detection score = proposal score x class probability (numpy broadcasting)."""
    return np.asarray(proposal_scores, dtype=np.float64) * np.asarray(class_probabilities, dtype=np.float64)


def top_classes(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable classes of each row.

    Args:
        probabilities: (..., K) class probabilities.
        k: how many to keep (capped at K).

    Returns:
        ``(indices (..., k) int64, probabilities (..., k))``, most probable first, equal
        probabilities by lower class index.
    """
    if k < 1:
        raise ValueError(f"top_classes: k must be >= 1, got {k}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, axis=-1, kind="stable")[..., :k]
    return order.astype(np.int64), np.take_along_axis(probabilities, order, axis=-1)


def best_first(scores: np.ndarray, max_count: int) -> np.ndarray:
    """Indices of the ``max_count`` highest scores, highest first (ties keep their order)."""
    if max_count < 1:
        raise ValueError(f"best_first: max_count must be >= 1, got {max_count}")
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:max_count]


@dataclass
class Detections:
    """Scored detections of one video, best first.

    Attributes:
        segments_sec: (M, 2) float64 ``[start, end]`` seconds.
        scores: (M,) float64.
        classes: head -> (M,) int64 class index (``{"label": ...}`` or ``{"verb": ..., "noun": ...}``).
    """

    segments_sec: np.ndarray
    scores: np.ndarray
    classes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def _check_proposals(segments_sec: np.ndarray, proposal_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    segments_sec = np.asarray(segments_sec, dtype=np.float64).reshape(-1, 2)
    proposal_scores = np.asarray(proposal_scores, dtype=np.float64).reshape(-1)
    if proposal_scores.shape[0] != segments_sec.shape[0]:
        raise ValueError(f"detections: {segments_sec.shape[0]} segments but "
                         f"{proposal_scores.shape[0]} scores")
    return segments_sec, proposal_scores


def hacs_detections(segments_sec: np.ndarray, proposal_scores: np.ndarray, class_probabilities: np.ndarray,
                    top_k: int, max_detections: int) -> Detections:
    """Every proposal x the video's ``top_k`` classes, scored by ``fuse_scores``.

    Args:
        segments_sec: (P, 2) proposals, seconds.
        proposal_scores: (P,) proposal confidences.
        class_probabilities: (K,) video-level class probabilities (one class per video, HACS).
        top_k: classes per proposal (paper: 2).
        max_detections: detections kept for the video.
    """
    segments_sec, proposal_scores = _check_proposals(segments_sec, proposal_scores)
    class_probabilities = np.asarray(class_probabilities, dtype=np.float64)
    if class_probabilities.ndim != 1:
        raise ValueError("hacs_detections: class probabilities must be (K,), "
                         f"got {class_probabilities.shape}")
    classes, probabilities = top_classes(class_probabilities, top_k)  # (k,), (k,)
    scores = fuse_scores(proposal_scores[:, None], probabilities[None, :])  # (P, 1) x (1, k) -> (P, k)
    num_proposals, k = scores.shape
    proposal_of = np.repeat(np.arange(num_proposals), k)  # (P*k,): row-major flattening of (P, k)
    class_of = np.tile(classes, num_proposals)  # (P*k,)
    keep = best_first(scores.reshape(-1), max_detections)  # (P, k) -> (P*k,)
    return Detections(segments_sec[proposal_of[keep]], scores.reshape(-1)[keep], {"label": class_of[keep]})


def ek100_detections(segments_sec: np.ndarray, proposal_scores: np.ndarray, verb_probabilities: np.ndarray,
                     noun_probabilities: np.ndarray, top_verbs: int, top_nouns: int,
                     max_detections: int) -> Detections:
    """Every proposal x its top verbs x its top nouns, scored by ``fuse_scores``.

    Args:
        segments_sec: (P, 2) proposals, seconds.
        proposal_scores: (P,) proposal confidences.
        verb_probabilities: (P, V) per-proposal verb probabilities.
        noun_probabilities: (P, N) per-proposal noun probabilities.
        top_verbs, top_nouns: pairs combined per proposal.
        max_detections: detections kept for the video.
    """
    segments_sec, proposal_scores = _check_proposals(segments_sec, proposal_scores)
    num_proposals = segments_sec.shape[0]
    for name, values in (("verb", verb_probabilities), ("noun", noun_probabilities)):
        if np.ndim(values) != 2 or np.shape(values)[0] != num_proposals:
            raise ValueError(f"ek100_detections: {name} probabilities must be ({num_proposals}, K), "
                             f"got {np.shape(values)}")
    verbs, verb_p = top_classes(verb_probabilities, top_verbs)  # (P, tv)
    nouns, noun_p = top_classes(noun_probabilities, top_nouns)  # (P, tn)
    # (P, tv, 1) * (P, 1, tn) -> (P, tv, tn) pair probabilities, then x the proposal score (P, 1, 1)
    pair_probabilities = verb_p[:, :, None] * noun_p[:, None, :]
    scores = fuse_scores(proposal_scores[:, None, None], pair_probabilities)  # (P, tv, tn)
    tv, tn = verbs.shape[1], nouns.shape[1]
    # Row-major flattening of (P, tv, tn): which proposal, verb and noun each flat index is.
    proposal_of = np.repeat(np.arange(num_proposals), tv * tn)  # (P*tv*tn,)
    verb_of = np.repeat(verbs, tn, axis=1).reshape(-1)  # (P, tv) -> (P, tv*tn) -> (P*tv*tn,)
    noun_of = np.tile(nouns, (1, tv)).reshape(-1)  # (P, tn) -> (P, tv*tn) -> (P*tv*tn,)
    flat_scores = scores.reshape(-1)  # (P, tv, tn) -> (P*tv*tn,)
    keep = best_first(flat_scores, max_detections)
    return Detections(segments_sec[proposal_of[keep]], flat_scores[keep],
                      {"verb": verb_of[keep], "noun": noun_of[keep]})
