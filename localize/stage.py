"""The classify stage: proposals + features (or videos) + the fine-tuned classifier -> submission.json.

    python pipeline.py --stage classify

Reads ``<work_dir>/proposals/proposals.json``, the classifier checkpoint (``extract.checkpoint``,
default ``<work_dir>/backbone/checkpoint.pt``: the one the features were made with) and, for
stored-feature classification, ``<work_dir>/features/features.h5``. Classifies the proposals
of the ``dataset.val_subset`` videos (paper appendix C.2):

* HACS style (one head): the video's class probabilities are the softmax of the head on
  the mean of all its clip features; every proposal is paired with the ``top_k_classes``
  most probable classes.
* EK100 style (verb and noun heads), each proposal on its own: ``classify.mode: features``
  pools the clip features whose centres lie in the proposal; ``classify.mode: clips``
  decodes ``num_clips`` clips inside it (with the clip geometry, frame size and crop that
  ``features.h5`` records, so it sees the frames extraction saw) and averages the model's
  probabilities over them. Every proposal is paired with its ``top_verbs`` x ``top_nouns`` verb-noun pairs.

Scores fuse as ``localize.detections`` documents (proposal score x class probabilities); the
``max_detections_per_video`` best are kept per video.

Writes under ``<work_dir>/detections/``: ``submission.json`` (the leaderboard format of the
dataset style, validated by ``formats.submission`` before it is written, written
atomically), ``partial.jsonl`` (the per-video journal a rerun resumes from), ``failed.tsv``
(only when some video failed: video id, path, reason) and the completion stamp. Failed
videos do not stop the others; the stage writes the submission for the rest and then raises
``runstate.runtime.PartialFailure`` (a ``RuntimeError``) with a one-line summary. A rerun
retries them and skips the videos done.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from backbone.build import classifier_from_checkpoint
from configs.schema import Config
from data.dataset import load_dataset
from formats.failures import FailureList
from formats.features import FeatureStore
from formats.proposals import load_proposals
from formats.submission import ek100_submission, hacs_submission, write_submission
from localize.proposal_classifier import ProposalClassifier, check_classes, classification_mode, clip_settings
from runstate import stamp
from runstate.atomic import OutputError
from runstate.journal import Journal
from runstate.paths import RunPaths
from runstate.runtime import PartialFailure, barrier, init_distributed, set_threads
from runstate.runtime import progress as progress_bar
from runstate.stamp import file_sha256

log = logging.getLogger(__name__)

# What one video's failure may raise: decode errors (data.video.VideoError), missing or unreadable
# features (MissingFeatures, FeatureStoreError, h5py's OSError), model errors on odd input (RuntimeError,
# ValueError). They are recorded in failed.tsv and the stage goes on with the next video.
PER_VIDEO_ERRORS = (RuntimeError, OSError, ValueError)


def checkpoint_path(cfg: Config, paths: RunPaths) -> Path:
    """The classifier the features were extracted with: ``extract.checkpoint`` or the finetune stage's."""
    return Path(cfg.extract.checkpoint) if cfg.extract.checkpoint else paths.checkpoint


def proposals_by_video(table: pd.DataFrame, max_per_video: int, source: str
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``video_id, start, end, score`` rows -> {video: (segments (P, 2) s, scores (P,))}.

    Keeps each video's ``max_per_video`` highest-scored proposals, best first.

    Raises ``ValueError`` naming the video when a proposal ends before it starts.
    """
    backwards = table["end"] < table["start"]
    if backwards.any():
        row = table[backwards].iloc[0]
        raise ValueError(f"{source}: video {row['video_id']!r} has a proposal ending before it starts "
                         f"([{row['start']}, {row['end']}])")
    grouped = {}
    for video_id, rows in table.groupby("video_id", sort=False):
        scores = rows["score"].to_numpy(np.float64)
        keep = np.argsort(-scores, kind="stable")[:max_per_video]
        grouped[str(video_id)] = (rows[["start", "end"]].to_numpy(np.float64)[keep], scores[keep])
    return grouped


def _open_features(features_h5: Path, model, checkpoint_sha256: str) -> FeatureStore:
    if not features_h5.is_file():
        raise FileNotFoundError(f"classify: {features_h5} not found; run the extract stage first "
                                "(or use classify.mode=clips for EK-style data)")
    store = FeatureStore(features_h5)
    attrs = store.attrs
    if int(attrs.get("dim", -1)) != int(model.feature_dim):
        raise ValueError(f"classify: features in {features_h5} have dim {attrs.get('dim')}, the classifier's "
                         f"heads take {model.feature_dim}; extract the features with this checkpoint")
    if attrs.get("checkpoint_sha256") not in (None, "", checkpoint_sha256):
        raise ValueError(f"classify: {features_h5} was extracted with weights of sha256 "
                         f"{attrs.get('checkpoint_sha256')}, not with the classifier whose heads would "
                         f"classify them (sha256 {checkpoint_sha256}); re-run the extract stage")
    return store


def external_data(checkpoint_config: dict) -> tuple[bool, str]:
    pretrained = str(checkpoint_config.get("model", {}).get("pretrained") or "")
    if pretrained:
        return True, f"backbone initialised from pre-trained weights ({Path(pretrained).name})"
    return False, "backbone trained from scratch on the training subset"


def _videos_to_classify(subset_videos: list[str], proposals: dict, subset: str, source: Path) -> list[str]:
    """The subset's videos that have proposals, in the dataset's order (the others are logged)."""
    video_ids = [video_id for video_id in subset_videos if video_id in proposals]
    outside = len(set(proposals) - set(video_ids))
    if outside:
        log.info("classify: %d videos of %s are not in the %s subset; skipped", outside, source, subset)
    without = len(subset_videos) - len(video_ids)
    if without:
        log.warning("classify: %d of %d %s videos have no proposals in %s; they get no detections", without,
                    len(subset_videos), subset, source)
    if not video_ids:
        raise ValueError(f"classify: no {subset} video has proposals in {source}")
    return video_ids


def _fingerprints(cfg: Config, paths: RunPaths, mode: str, video_ids: list[str], video_paths: dict,
                  checkpoint_sha256: str) -> tuple[str, str]:
    """(journal fingerprint: what the detections depend on, stage fingerprint: that and the sls_* levels)."""
    inputs = ["classify", cfg.dataset.style, mode, cfg.dataset.val_subset, video_ids,
              stamp.file_identity(paths.proposals_json), checkpoint_sha256]
    inputs.append(stamp.file_identity(paths.features_h5))  # the features, or (clips mode) the clip settings
    if mode == "clips":
        extract = cfg.extract
        inputs += [extract.fps, extract.short_side, extract.crop,
                   [stamp.file_identity(video_paths[v]) if video_paths[v] else None for v in video_ids]]
    settings = {key: value for key, value in vars(cfg.classify).items() if not key.startswith("sls_")}
    journal_fingerprint = stamp.fingerprint(*inputs, settings)
    # The sls_* levels only touch the file's header: changing them rewrites it from the journal.
    return journal_fingerprint, stamp.fingerprint(journal_fingerprint, cfg.classify)


def run_classify(cfg: Config, paths: RunPaths) -> None:
    """Classify the proposals, write ``detections/submission.json``; resume if interrupted."""
    ctx = init_distributed(cfg.runtime.device)
    try:
        if ctx.is_main:  # one process is enough here; under torchrun the other ranks wait
            _run(cfg, paths, ctx.device)
    finally:
        barrier(ctx)


def _run(cfg: Config, paths: RunPaths, device: str) -> None:
    set_threads(cfg.runtime.num_threads)
    style, settings = cfg.dataset.style, cfg.classify
    mode = classification_mode(style, settings)
    if not paths.proposals_json.is_file():
        raise FileNotFoundError(f"classify: {paths.proposals_json} not found; run the bmn stage first")
    checkpoint = checkpoint_path(cfg, paths)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"classify: classifier checkpoint {checkpoint} not found; run the finetune "
                                "stage first (or set extract.checkpoint)")

    annotations = load_dataset(cfg).subset(cfg.dataset.val_subset)
    video_paths = dict(zip(annotations.videos["video_id"], annotations.videos["path"]))
    proposals = proposals_by_video(load_proposals(paths.proposals_json), settings.proposals_per_video,
                                   str(paths.proposals_json))
    video_ids = _videos_to_classify(list(annotations.videos["video_id"]), proposals, cfg.dataset.val_subset,
                                    paths.proposals_json)
    checkpoint_sha256 = file_sha256(checkpoint)
    journal_fingerprint, stage_fingerprint = _fingerprints(cfg, paths, mode, video_ids, video_paths,
                                                           checkpoint_sha256)
    stamp_check = stamp.check_complete(paths.detections_dir, stage_fingerprint)
    if stamp_check:
        log.info("classify: %s is up to date with its inputs (verified); nothing to do", paths.submission_json)
        return
    if stamp_check.damaged:
        log.warning("classify: %s; writing it again", stamp_check.reason)

    stamp.clear(paths.detections_dir)
    loaded = classifier_from_checkpoint(checkpoint, device)
    model, classes, checkpoint_config = loaded.model, loaded.classes, loaded.config
    check_classes(style, classes, annotations.classes, str(checkpoint))
    store = clip = None
    if mode == "clips":
        clip = clip_settings(paths.features_h5, checkpoint_config["model"], cfg.extract.fps,
                             cfg.extract.short_side, cfg.extract.crop)
    else:
        store = _open_features(paths.features_h5, model, checkpoint_sha256)
    classifier = ProposalClassifier(style, mode, settings, model, classes, device, store, clip,
                                    cfg.extract.batch_size)

    failures = FailureList(paths.failed_detections)
    with Journal(paths.detections_journal, journal_fingerprint) as journal:
        todo = [video_id for video_id in video_ids if video_id not in journal]
        if len(todo) < len(video_ids):
            log.info("classify: resuming, %d of %d videos already done", len(video_ids) - len(todo),
                     len(video_ids))
        progress = progress_bar(todo, desc="classify", unit="video")
        for video_id in progress:
            try:
                segments, scores = proposals[video_id]
                detections = classifier.detections(video_id, segments, scores, video_paths.get(video_id, ""))
                journal.add(video_id, classifier.entries(detections))
            except PER_VIDEO_ERRORS as error:
                if isinstance(error, OutputError):  # a full disk is not the video's fault: stop
                    raise
                where = video_paths.get(video_id, "") if mode == "clips" else str(paths.features_h5)
                reason = f"{type(error).__name__}: {error}"
                log.warning("classify: video %s failed: %s", video_id, reason)
                failures.add(video_id, where, reason)
                progress.set_postfix(failed=len(failures), refresh=False)
        results = {video_id: journal.entries[video_id] for video_id in video_ids if video_id in journal}
    if store is not None:
        store.close()

    if style == "hacs":
        submission = hacs_submission(results, *external_data(checkpoint_config))
    else:
        submission = ek100_submission(results, settings.sls_pt, settings.sls_tl, settings.sls_td)
    write_submission(submission, paths.submission_json, style, classes)
    num_detections = sum(len(video_entries) for video_entries in results.values())
    log.info("classify: %d detections of %d videos written to %s", num_detections, len(results),
             paths.submission_json)
    if len(failures):
        raise PartialFailure(f"classify: {len(failures)} of {len(video_ids)} videos failed (see "
                             f"{failures.path}); {paths.submission_json} holds the other {len(results)}")
    stamp.mark_complete(paths.detections_dir, stage_fingerprint, [paths.submission_json])
