"""The classify rule for one video: its proposals -> scored detections -> submission entries.

Shared by the classify stage (proposals from ``proposals.json``) and detection on new videos
(``detect``), so both give the same answers (paper appendix C.2):

* HACS style (one head), mode ``"video"``: the video's class probabilities are the softmax of
  the head on the mean of all its clip features; every proposal is paired with the
  ``top_k_classes`` most probable classes.
* EK100 style (verb and noun heads), each proposal on its own: mode ``"features"`` pools the
  clip features whose centres lie in the proposal; mode ``"clips"`` decodes ``num_clips`` clips
  inside it and averages the model's probabilities. Every proposal is paired with its
  ``top_verbs`` x ``top_nouns`` verb-noun pairs.

Scores fuse as ``localize.detections`` documents; the ``max_detections_per_video`` best are kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from backbone.clips import resolve_normalization
from configs.schema import ClassifyConfig
from formats.features import FeatureStore
from formats.submission import ek100_entries, hacs_entries
from localize.classifiers import ClipClassifier, FeatureClassifier, HeadProbabilities
from localize.detections import Detections, ek100_detections, hacs_detections

log = logging.getLogger(__name__)

HEADS = {"hacs": ("label",), "ek100": ("verb", "noun")}  # dataset style -> classifier heads it needs


def classification_mode(style: str, settings: ClassifyConfig) -> str:
    """``"video"`` (HACS style), else ``classify.mode`` (``"features"`` or ``"clips"``)."""
    if style == "hacs" and settings.mode == "clips":
        log.warning("classify: classify.mode 'clips' applies to EK-style data; HACS-style videos are "
                    "classified from their video-level features (paper appendix C.2)")
    return "video" if style == "hacs" else settings.mode


def clip_settings(features_h5: Path, checkpoint_model: dict, extract_fps: float, extract_short_side: int,
                  extract_crop: str) -> dict:
    """What mode ``"clips"`` decodes: the frames extraction saw.

    The clip geometry (``num_frames``, ``interval``, ``fps``), frame size (``short_side``),
    ``crop`` and frame statistics that ``features_h5`` records; without a feature store, the
    checkpoint's clip and statistics and the given extract settings.
    """
    if Path(features_h5).is_file():
        with FeatureStore(features_h5) as store:
            attrs = store.attrs
        source = str(features_h5)
    else:
        attrs = {**checkpoint_model, "fps": extract_fps, "short_side": extract_short_side, "crop": extract_crop}
        source = "the checkpoint and the extract section (no feature store)"
    normalization = resolve_normalization({}, "checkpoint", attrs, source)
    clip = dict(num_frames=int(attrs["num_frames"]), interval=int(attrs["interval"]), fps=float(attrs["fps"]),
                short_side=int(attrs["short_side"]), crop=str(attrs.get("crop", "none")),
                normalization=normalization)
    log.info("classify: clips of %d frames %d apart at %g fps, short side %d, crop %s, %s (from %s)",
             clip["num_frames"], clip["interval"], clip["fps"], clip["short_side"], clip["crop"],
             normalization.describe(), source)
    return clip


class ProposalClassifier:
    """Classifies the proposals of one video at a time (module docstring).

    Args:
        style: "hacs" or "ek100".
        mode: from ``classification_mode``.
        settings: the ``classify`` section.
        model: the fine-tuned classifier (eval mode, on ``device``).
        classes: head name -> class names.
        device: where the model runs.
        store: the feature store (modes "video" and "features").
        clip: ``clip_settings(...)`` (mode "clips"), and ``batch_size`` clips per forward pass.
    """

    def __init__(self, style: str, mode: str, settings: ClassifyConfig, model, classes: dict[str, list[str]],
                 device: str, store: FeatureStore | None = None, clip: dict | None = None, batch_size: int = 16):
        self.style, self.mode, self.settings, self.classes = style, mode, settings, classes
        self.feature_classifier = self.clip_classifier = None
        if mode == "clips":
            self.clip_classifier = ClipClassifier(model, device, settings.num_clips, clip["num_frames"],
                                                  clip["interval"], clip["fps"], clip["short_side"], clip["crop"],
                                                  batch_size, normalization=clip["normalization"])
        else:
            self.feature_classifier = FeatureClassifier(store, HeadProbabilities(model, device))

    def detections(self, video_id: str, segments_sec: np.ndarray, proposal_scores: np.ndarray,
                   video_path: str = "") -> Detections:
        """``(P, 2)`` proposals (seconds) with their ``(P,)`` scores -> the video's detections, best first."""
        settings = self.settings
        if self.mode == "video":
            probabilities = self.feature_classifier.video_probabilities(video_id)["label"]
            return hacs_detections(segments_sec, proposal_scores, probabilities, settings.top_k_classes,
                                   settings.max_detections_per_video)
        if len(segments_sec) == 0:
            probabilities = {head: np.zeros((0, len(self.classes[head]))) for head in self.classes}
        elif self.mode == "clips":
            if not video_path:
                raise FileNotFoundError("video file not found (no path for it in the dataset)")
            probabilities = self.clip_classifier.proposal_probabilities(video_path, segments_sec)
        else:
            probabilities = self.feature_classifier.proposal_probabilities(video_id, segments_sec)
        return ek100_detections(segments_sec, proposal_scores, probabilities["verb"], probabilities["noun"],
                                settings.top_verbs, settings.top_nouns, settings.max_detections_per_video)

    def entries(self, detections: Detections) -> list[dict]:
        """The video's submission entries (HACS or EK100 format), best first."""
        if self.style == "hacs":
            return hacs_entries(detections, self.classes["label"])
        return ek100_entries(detections)


def check_classes(style: str, checkpoint_classes: dict[str, list[str]], dataset_classes: dict[str, list[str]],
                  checkpoint: str) -> None:
    """The checkpoint's heads must be the dataset style's, over the dataset's classes."""
    heads = HEADS[style]
    if tuple(checkpoint_classes) != heads:
        raise ValueError(f"classify: {checkpoint} has heads {list(checkpoint_classes)}, "
                         f"a {style}-style dataset needs {list(heads)}")
    if style == "hacs":
        unknown = sorted(set(checkpoint_classes["label"]) - set(dataset_classes.get("label", [])))
        if unknown:
            raise ValueError(f"classify: class names {unknown[:5]} of {checkpoint} are not in the dataset's "
                             "class list; the submission's labels would not match the ground truth")
    else:
        for head in heads:
            if len(checkpoint_classes[head]) != len(dataset_classes.get(head, [])):
                raise ValueError(f"classify: {checkpoint} has {len(checkpoint_classes[head])} {head} "
                                 f"classes, the dataset {len(dataset_classes.get(head, []))}")
