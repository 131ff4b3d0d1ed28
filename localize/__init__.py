"""Proposal classification and detection assembly: the classify stage (paper appendix C.2).

Module map (read in this order):

- ``pooling``: mean clip features per proposal (centres inside it) or per video, as one matrix op.
- ``clip_sampling``: the `clips` mode's clip centres inside a proposal and their frames on the
  extraction timeline.
- ``classifiers``: head probabilities from pooled features (``FeatureClassifier``) or from decoded
  clips through the whole model (``ClipClassifier``).
- ``detections``: the fusion rule (proposal score x class probabilities), top classes / verb-noun
  pairs per proposal, the per-video cap.
- ``proposal_classifier``: one video's proposals -> detections -> submission entries (the classify
  rule, shared with ``detect``).
- ``viewer``: the self-contained ``viewer.html``.
- ``stage``: ``run_classify(cfg, paths)``, the pipeline's classify stage. The submission file itself
  is ``formats.submission``; the per-video journal ``runstate.journal``; ``failed.tsv``
  ``formats.failures``.
"""
