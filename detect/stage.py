"""The detect stage: a trained run finds actions in anyone's videos, no annotation file needed.

    python pipeline.py --config RUN/config.yaml --stage detect detect.videos=PATHS
    python pipeline.py --stage detect detect.model=model.pt detect.videos=PATHS      # an exported run
    python pipeline.py --config RUN/config.yaml --stage detect detect.subset=testing  # a leaderboard test set

Steps, with the code of the training stages so that the answers are the same:

1. the videos: ``detect.videos`` (files, folders, globs, list files, archives, as ``extract.videos``),
   or the videos of the dataset split ``detect.subset`` (its annotation file may carry no labels);
2. features into ``<output>/features.h5`` (``features.extract.extract_into``: decode-once, chunked,
   resumable per video; the run's extract settings, classifier and frame statistics);
3. per video: BMN inference (``proposals.infer.predict_proposals``, rescale or windows as the run
   was trained, the run's Soft-NMS), the best ``classify.proposals_per_video`` proposals classified
   (``localize.proposal_classifier``, features or clips mode, HACS or EK style), then the
   ``detect.score_threshold`` and ``detect.top_k`` filters; each finished video is journalled
   (``runstate.journal``), so an interrupted run resumes per video;
4. ``detections.json`` (the run's submission format, validated: for a test split, the file to
   upload), ``detections.csv``, ``viewer.html`` (``localize.viewer``), and ``failed.tsv`` for videos
   that could not be read; the stage then raises ``PartialFailure`` (non-zero exit).

Outputs go to ``detect.output`` (default ``<work_dir>/detect``, ``runstate.paths.DetectPaths``).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import torch

from configs.load import config_yaml
from configs.schema import Config
from data.annotations import Annotations, load_ek100_csv, load_hacs_json
from data.dataset import load_dataset
from detect.model import load_detect_model
from features.extract import extract_into, extraction_from_classifier
from features.sources import VideoSource, list_sources, sources_from_table
from formats.detections import write_detections_csv
from formats.failures import FailureList
from formats.features import FeatureStore
from formats.submission import ek100_submission, hacs_submission, write_submission
from localize.proposal_classifier import ProposalClassifier, classification_mode, clip_settings
from localize.stage import PER_VIDEO_ERRORS, external_data
from localize.viewer import write_viewer
from proposals.dataset import BMNInputs, read_videos
from proposals.infer import PostprocessSettings, predict_proposals
from runstate import atomic
from runstate.atomic import OutputError
from runstate.journal import Journal
from runstate.paths import DetectPaths, RunPaths
from runstate.runtime import PartialFailure, barrier, init_distributed, progress, set_threads
from runstate.stamp import fingerprint

log = logging.getLogger(__name__)
NO_SEGMENTS = pd.DataFrame({"video_id": pd.Series(dtype=str), "start": pd.Series(dtype=float),
                            "end": pd.Series(dtype=float)})


def detect_paths(cfg: Config, paths: RunPaths) -> DetectPaths:
    return DetectPaths.of_run(cfg.detect.output, paths)


def detect_sources(cfg: Config) -> tuple[list[VideoSource], Annotations | None]:
    """Step 1: the videos, and the ground truth when the split has some (for the viewer)."""
    if cfg.detect.videos:
        return list_sources(cfg.detect.videos), None
    if not cfg.detect.subset:
        raise ValueError("detect: say which videos: detect.videos=PATHS (files, a folder, a glob, a list file "
                         "or an archive) or detect.subset=SPLIT (e.g. testing)")
    subset = cfg.detect.subset
    dataset = dataclasses.replace(cfg.dataset, subsets=[subset])
    annotations = load_dataset(dataclasses.replace(cfg, dataset=dataset)).subset(subset)
    if annotations.videos.empty:
        raise ValueError(f"detect: the {subset} split lists no videos (dataset.annotations.{subset})")
    return sources_from_table(annotations.videos), annotations if not annotations.segments.empty else None


def best_proposals(rows: np.ndarray, max_count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(K, 3)`` [start, end, score] -> the ``max_count`` best ``(segments (P, 2), scores (P,))``, best first,
    in the order proposals.json and the classify stage give them (stable by score)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    order = np.argsort(-rows[:, 2], kind="stable")[:max_count]
    return rows[order, :2], rows[order, 2]


def keep_best(entries: list[dict], score_threshold: float, top_k: int) -> list[dict]:
    """The entries scoring at least ``score_threshold``, best first, at most ``top_k`` (0: all)."""
    kept = sorted((entry for entry in entries if entry["score"] >= score_threshold), key=lambda e: -e["score"])
    return kept[:top_k] if top_k else kept


def run_detect(cfg: Config, paths: RunPaths) -> None:
    """Detections for ``detect.videos`` / ``detect.subset`` (module docstring)."""
    ctx = init_distributed(cfg.runtime.device)
    try:
        if ctx.is_main:  # one process: the videos of a folder, not a training set
            _run(cfg, paths, ctx)
    finally:
        barrier(ctx)


def _run(cfg: Config, paths: RunPaths, ctx) -> None:
    set_threads(cfg.runtime.num_threads)
    model = load_detect_model(cfg, paths)
    cfg = model.config  # the trained run's settings (extract, bmn, classify, style), this command's detect
    out = detect_paths(cfg, paths)
    sources, ground_truth = detect_sources(cfg)
    style, settings = cfg.dataset.style, cfg.classify
    classes = model.classifier.classes
    log.info("detect: %d videos with the run of %s (%s style) -> %s", len(sources), model.source, style, out.folder)
    atomic.write_text(out.config_yaml, config_yaml(cfg))

    # 2. features (resumable per video, failures listed)
    extraction = extraction_from_classifier(cfg, model.classifier, model.source)
    summary = extract_into(out.features_h5, out.failed, sources, cfg, extraction, ctx, where="detect")
    failures = FailureList(out.failed)
    for failure in summary.failures:
        failures.add(*failure)

    # 3. proposals and classes, per video
    device = ctx.device
    bmn = model.bmn.to(device)
    b = cfg.bmn
    postprocess = PostprocessSettings(b.temporal_scale, b.soft_nms_alpha, b.soft_nms_low, b.soft_nms_high, b.top_k,
                                      1)
    mode = classification_mode(style, settings)
    store = FeatureStore(out.features_h5)
    clip = None
    if mode == "clips":
        clip = clip_settings(out.features_h5, model.classifier.section, cfg.extract.fps, cfg.extract.short_side,
                             cfg.extract.crop)
    classifier = ProposalClassifier(style, mode, settings, model.classifier.model.to(device), classes, device,
                                    store, clip, cfg.extract.batch_size)
    journal_fingerprint = fingerprint("detect", model.classifier.sha256, model.bmn_sha256, style, mode,
                                      cfg.extract, cfg.bmn, cfg.classify, cfg.detect.score_threshold,
                                      cfg.detect.top_k)
    with_features = [source for source in sources if source.video_id in store]
    with Journal(out.journal, journal_fingerprint) as journal:
        todo = [source for source in with_features if source.video_id not in journal]
        if len(todo) < len(with_features):
            log.info("detect: resuming, %d of %d videos already done", len(with_features) - len(todo),
                     len(with_features))
        bar = progress(todo, desc="detect", unit="video")
        for source in bar:
            try:
                entries = _detect_video(source, out, b, postprocess, bmn, classifier, settings, device)
                journal.add(source.video_id, keep_best(entries, cfg.detect.score_threshold,
                                                       cfg.detect.top_k or settings.max_detections_per_video))
            except PER_VIDEO_ERRORS as error:
                if isinstance(error, OutputError):  # a full disk is not the video's fault: stop
                    raise
                reason = f"{type(error).__name__}: {error}"
                log.warning("detect: video %s failed: %s", source.video_id, reason)
                failures.add(source.video_id, source.display_path, reason)
                bar.set_postfix(failed=len(failures), refresh=False)
        results = {source.video_id: journal.entries[source.video_id] for source in sources
                   if source.video_id in journal}
    videos = {source.video_id: (source.path if not source.member else "",
                                store.video_attrs(source.video_id)["duration"])
              for source in sources if source.video_id in store}
    store.close()

    # 4. the outputs
    if style == "hacs":
        submission = hacs_submission(results, *external_data(model.classifier.config))
    else:
        submission = ek100_submission(results, settings.sls_pt, settings.sls_tl, settings.sls_td)
    write_submission(submission, out.detections_json, style, classes)
    write_detections_csv(out.detections_csv, results, style, classes)
    _write_viewer(out, videos, results, style, classes, _viewer_ground_truth(cfg, ground_truth, classes, style))
    num_detections = sum(len(entries) for entries in results.values())
    log.info("detect: %d detections in %d videos -> %s, %s, %s", num_detections, len(results),
             out.detections_json, out.detections_csv, out.viewer_html)
    if len(failures):
        raise PartialFailure(f"detect: {len(failures)} of {len(sources)} videos failed (see {failures.path}); "
                             f"{out.detections_json} holds the other {len(results)}")


def _detect_video(source: VideoSource, out: DetectPaths, b, postprocess: PostprocessSettings, bmn,
                  classifier: ProposalClassifier, settings, device: str) -> list[dict]:
    """One video: BMN proposals on its stored features, classified; its submission entries."""
    [video] = read_videos(out.features_h5, [source.video_id], NO_SEGMENTS, b.input, b.temporal_scale)
    dataset = BMNInputs(out.features_h5, [video], b.input, b.temporal_scale, b.max_duration or None,
                        b.window_overlap)
    rows = predict_proposals(bmn, dataset, postprocess, b.batch_size, torch.device(device))[source.video_id]
    segments, scores = best_proposals(rows, settings.proposals_per_video)
    detections = classifier.detections(source.video_id, segments, scores, source.path if not source.member else "")
    return classifier.entries(detections)


def _label(entry: dict, style: str, classes: dict[str, list[str]]) -> dict:
    if style == "hacs":
        return {"label": entry["label"]}
    verb, noun = classes["verb"][int(entry["verb"])], classes["noun"][int(entry["noun"])]
    return {"label": f"{verb} {noun}", "verb": verb, "noun": noun}


def _viewer_ground_truth(cfg: Config, ground_truth: Annotations | None, classes: dict[str, list[str]],
                         style: str) -> list[dict] | None:
    """Ground-truth records for the viewer: ``detect.annotations`` (or the split's), else None."""
    if cfg.detect.annotations:
        path = cfg.detect.annotations
        if style == "hacs":
            ground_truth = load_hacs_json(path)
        else:
            ground_truth = load_ek100_csv(path, cfg.dataset.verb_classes or None, cfg.dataset.noun_classes or None)
    if ground_truth is None:
        return None
    records = []
    for row in ground_truth.segments.itertuples(index=False):
        if style == "hacs":
            label = ground_truth.classes["label"][int(row.label)]
        else:
            verb, noun = int(row.verb), int(row.noun)
            label = f"{classes['verb'][verb]} {classes['noun'][noun]}" if verb < len(classes["verb"]) and \
                noun < len(classes["noun"]) else f"{verb},{noun}"
        records.append({"video_id": row.video_id, "start_sec": float(row.start), "end_sec": float(row.end),
                        "label": label})
    return records


def _write_viewer(out: DetectPaths, videos: dict, results: dict[str, list[dict]], style: str,
                  classes: dict[str, list[str]], ground_truth: list[dict] | None) -> None:
    detections = [{"video_id": video_id, "start_sec": entry["segment"][0], "end_sec": entry["segment"][1],
                   "score": entry["score"], **_label(entry, style, classes)}
                  for video_id, entries in results.items() for entry in entries]
    if ground_truth is not None:
        ground_truth = [record for record in ground_truth if record["video_id"] in videos]
    write_viewer(out.viewer_html, videos, detections, ground_truth, title=f"Detections ({len(videos)} videos)")
