"""The extract stage: sliding-window clip features of every video -> ``<work_dir>/features/features.h5``.

    python pipeline.py --stage extract [extract.key=value ...]
    torchrun --nproc_per_node=N pipeline.py --stage extract ...  # each rank a share; rank 0 merges
    python pipeline.py --stage extract extract.shard=i/n          # one share per job; then:
    python -m features.merge <work_dir>/features/features.h5

Steps of ``run_extract``:

1. The backbone (``extract.weights``): "checkpoint" = the fine-tuned classifier
   (``extract.checkpoint``, default ``<work_dir>/backbone/checkpoint.pt``), whose own
   ``config["model"]`` gives the architecture and the clip (``num_frames``, ``interval``);
   "pretrained" = ``model.pretrained`` (torchvision / official / ours) on the ``model``
   section; "random" = the ``model`` section initialised from ``runtime.seed``. The store
   attr ``checkpoint_sha256`` is the SHA-256 of the weights file, or for random weights
   of the state dict's tensors.
2. The videos (``features.sources``): the dataset's video table, or ``extract.videos``.
3. Stage skip: a fingerprint of the extract settings, the model section, the weights'
   hash and the video list (ids, files, sizes, mtimes). When the last complete run had
   the same one and ``features.h5`` exists, the stage says so and returns.
4. The share of this process: all videos; under torchrun ``assign_shards(...)[rank]``
   (balanced by duration); with ``extract.shard=i/n`` share i of n.
5. Resume: a ``FeatureWriter`` on the output (``features.h5``, or the rank's shard file);
   videos already complete there (or, for shards, in the merged ``features.h5``) are
   skipped. A store made with other settings is refused, naming what differs, unless
   ``extract.overwrite=true``.
6. The loop (``features.loop.extract_videos``): decoding in ``runtime.num_workers``
   DataLoader workers, batches of ``extract.batch_size`` clips through the model,
   features written as they come.
7. Failures go to ``failed.tsv`` (video_id, path, reason; only the ones still failing);
   the stage then raises ``ExtractionFailed`` (``pipeline.py`` exits non-zero), and a
   rerun retries exactly those videos.
8. Under torchrun every rank marks its shard done, rank 0 waits for all the marks, merges
   (``features.merge``) and removes the shards. A complete run without failures stamps
   the fingerprint (``runstate.stamp``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from backbone.build import LoadedClassifier, build_from_section, classifier_from_checkpoint, weights_normalization
from backbone.clips import Normalization, resolve_normalization
from backbone.tada2d import TAda2D
from backbone.weights import load_checkpoint
from configs.load import config_to_dict
from configs.schema import Config
from data.dataset import load_dataset
from features.decode import ClipSampling
from features.loop import ClipEncoder, ExtractSummary, extract_videos
from features.sources import VideoSource, archive_order, list_sources, source_identity, sources_from_table
from formats.failures import write_failures
from formats.feature_shards import assign_shards, done_marker, merge_extraction, shard_path
from formats.feature_writer import FeatureWriter
from formats.features import FeatureStoreMismatch, check_store, compatible_complete_ids
from runstate.paths import RunPaths
from runstate.runtime import DistributedContext, PartialFailure, barrier, init_distributed, model_threads, set_threads
from runstate.stamp import check_complete, clear, file_sha256, fingerprint, mark_complete

log = logging.getLogger(__name__)


class ExtractionFailed(PartialFailure):
    """Some videos could not be extracted; the message says how many and where they are listed."""


# ------------------------------------------------------------------ the backbone


@dataclass
class ExtractionModel:
    """The network features come from, and what identifies it.

    Attributes:
        model: the backbone (heads unused).
        weights: "checkpoint", "pretrained" or "random".
        weights_sha256: SHA-256 of the weights file, or of the state dict's tensors for random weights.
        section: the model section it was built from (name, depth, width, num_frames, interval, ...), with
            the resolved ``input_mean`` / ``input_std``.
        normalization: the frame statistics that go with the weights (``backbone.clips.resolve_normalization``).
    """

    model: TAda2D
    weights: str
    weights_sha256: str
    section: dict
    normalization: Normalization


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of the state dict's tensors, in key order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{list(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # (numel * itemsize,) bytes
    return digest.hexdigest()


def extraction_from_classifier(cfg: Config, loaded: LoadedClassifier, name: str) -> ExtractionModel:
    """A fine-tuned classifier as the extraction model: its own ``model`` section (architecture, clip)
    and frame statistics, unless ``model.input_mean``/``input_std`` override them. The extract stage
    and ``detect`` (which may hold the classifier from a bundle) both go through here."""
    section = asdict(cfg.model)
    changed = sorted(key for key in loaded.section if section.get(key) != loaded.section[key])
    if changed:
        log.info("extract: using the checkpoint's model settings for %s", ", ".join(changed))
    section.update(loaded.section)
    normalization = loaded.normalization
    if cfg.model.input_mean:
        normalization = resolve_normalization(asdict(cfg.model))
        if normalization.mean != loaded.normalization.mean or normalization.std != loaded.normalization.std:
            log.warning("extract: model.input_mean/input_std override the statistics %s was trained with (%s)",
                        name, loaded.normalization.describe())
    return _extraction(loaded.model, "checkpoint", loaded.sha256, section, normalization)


def _extraction(model: TAda2D, kind: str, weights_sha256: str, section: dict,
                normalization: Normalization) -> ExtractionModel:
    section.update(input_mean=list(normalization.mean), input_std=list(normalization.std))
    log.info("extract: frames normalised with %s", normalization.describe())
    return ExtractionModel(model.eval(), kind, weights_sha256, section, normalization)


def load_extraction_model(cfg: Config, paths: RunPaths | None) -> ExtractionModel:
    """Build the backbone of step 1 (module docstring) on the CPU, in eval mode.

    ``paths`` gives the default checkpoint (``extract.weights=checkpoint`` without ``extract.checkpoint``).
    """
    kind = cfg.extract.weights
    section = asdict(cfg.model)
    if kind == "checkpoint":
        path = Path(cfg.extract.checkpoint) if cfg.extract.checkpoint else paths.checkpoint
        if not path.is_file():
            raise FileNotFoundError(f"extract.weights=checkpoint but there is no checkpoint at {path}: run "
                                    "--stage finetune first, set extract.checkpoint, or use "
                                    "extract.weights=pretrained|random")
        return extraction_from_classifier(cfg, classifier_from_checkpoint(path), path.name)
    if kind == "pretrained":
        if not cfg.model.pretrained:
            raise ValueError("extract.weights=pretrained needs model.pretrained (a torchvision, official "
                             "TAdaConv or our checkpoint file)")
        path = Path(cfg.model.pretrained)
        model = build_from_section(section, {})
        report = load_checkpoint(path, model)
        if not report.loaded:
            raise ValueError(f"model.pretrained {path}: no tensor fits the {section['name']} model: "
                             + "; ".join(report.summary().splitlines()))
        log.info("extract: %s: %s", path, report.summary().splitlines()[0])
        weights_sha256 = file_sha256(path)
        normalization = weights_normalization(asdict(cfg.model), path, report.source_format)
    elif kind == "random":
        torch.manual_seed(cfg.runtime.seed)
        model = build_from_section(section, {})
        weights_sha256 = state_dict_sha256(model)
        normalization = resolve_normalization(asdict(cfg.model))
    else:
        raise ValueError(f"extract.weights must be checkpoint, pretrained or random, got {kind!r}")
    return _extraction(model, kind, weights_sha256, section, normalization)


# ------------------------------------------------------------------ the stage


def video_sources(cfg: Config) -> list[VideoSource]:
    """Step 2: ``extract.videos`` when set, else the dataset's video table (its ``dataset.subsets``)."""
    if cfg.extract.videos:
        return list_sources(cfg.extract.videos)
    return sources_from_table(load_dataset(cfg).videos)


def store_attrs(cfg: Config, extraction: ExtractionModel) -> dict:
    """The root attrs of ``features.h5`` (DESIGN.md "Features")."""
    section = extraction.section
    return dict(backbone=section["name"], checkpoint_sha256=extraction.weights_sha256, fps=cfg.extract.fps,
                num_frames=section["num_frames"], interval=section["interval"], stride=cfg.extract.stride,
                short_side=cfg.extract.short_side, crop=cfg.extract.crop, dim=extraction.model.feature_dim,
                weights=extraction.weights, depth=section["depth"], width=section["width"],
                input_mean=list(extraction.normalization.mean), input_std=list(extraction.normalization.std),
                config=config_to_dict(cfg))


def stage_fingerprint(cfg: Config, extraction: ExtractionModel, sources: list[VideoSource]) -> str:
    """Step 3: what the complete ``features.h5`` depends on."""
    settings = {key: value for key, value in asdict(cfg.extract).items()
                if key not in ("overwrite", "shard", "checkpoint", "videos")}
    return fingerprint("extract", settings, extraction.section, extraction.weights_sha256,
                       [source_identity(source) for source in sources])


def _share(cfg: Config, ctx: DistributedContext, sources: list[VideoSource]
           ) -> tuple[int, int, list[VideoSource]]:
    """Step 4: ``(index, count, this process's sources)``, longest first within a share."""
    if cfg.extract.shard:
        if ctx.distributed:
            raise ValueError("extract.shard=i/n is for separate jobs; under torchrun the ranks split the "
                             "videos by themselves (leave extract.shard empty)")
        index, count = (int(part) for part in cfg.extract.shard.split("/"))
    else:
        index, count = ctx.rank, ctx.world_size
    if count == 1:
        return 0, 1, sources
    by_id = {source.video_id: source for source in sources}
    share = assign_shards(list(by_id), [source.cost for source in sources], count)[index]
    # a compressed tar is read forwards only: its members in stream order, whatever the balancing order
    return index, count, archive_order([by_id[video_id] for video_id in share])


def clip_sampling(cfg: Config, extraction: ExtractionModel) -> ClipSampling:
    """The clip layout and decode size of an extraction: the model's clip (frames, interval), the
    ``extract`` section's timeline, stride, frame size and crop."""
    section = extraction.section
    return ClipSampling(fps=cfg.extract.fps, num_frames=section["num_frames"], interval_frames=section["interval"],
                        stride_frames=cfg.extract.stride, short_side=cfg.extract.short_side, crop=cfg.extract.crop)


def _open_writer(path: Path, attrs: dict, dtype: str, overwrite: bool) -> FeatureWriter:
    """The writer of ``path``: resuming (a damaged main file is moved aside), or afresh with overwrite."""
    if overwrite:
        log.info("extract: extract.overwrite=true: starting %s afresh", path)
        return FeatureWriter(path, attrs, dtype=dtype, overwrite=True)
    try:
        return FeatureWriter(path, attrs, dtype=dtype, recover_damaged=True)
    except FeatureStoreMismatch as error:
        raise FeatureStoreMismatch(f"{error}; or rerun with extract.overwrite=true") from None


def extract_into(output: Path, failed_tsv: Path, sources: list[VideoSource], cfg: Config,
                 extraction: ExtractionModel, ctx: DistributedContext, where: str = "all videos",
                 also_done=None) -> ExtractSummary:
    """Extract ``sources`` into the store ``output`` (resuming: complete videos are skipped) with the
    ``extract`` settings of ``cfg``; failures go to ``failed_tsv``. The extract stage and detection on
    new videos (``detect``) both extract through here.

    ``also_done(attrs) -> set of ids`` names more videos to skip (a shard: those of the merged file).
    """
    sampling = clip_sampling(cfg, extraction)
    attrs = store_attrs(cfg, extraction)
    encoder = ClipEncoder(extraction.model, ctx.device, bf16=cfg.extract.bf16, normalization=extraction.normalization,
                          channels_last=cfg.extract.channels_last)
    # one decoder thread per reader: frame-threaded H.264 decoding after a seek was seen to differ
    # between runs under load, and features must be identical across runs, ranks and resumes
    decoder_threads = 1
    with _open_writer(output, attrs, cfg.extract.dtype, cfg.extract.overwrite) as writer:
        done = set(writer.completed_video_ids())
        if also_done is not None:
            done |= also_done(attrs)
        todo = [source for source in sources if source.video_id not in done]
        log.info("extract: %s: %d videos, %d already complete, %d to do -> %s", where, len(sources),
                 len(sources) - len(todo), len(todo), output)
        summary = extract_videos(todo, sampling, encoder, writer, clips_per_chunk=cfg.extract.clips_per_chunk,
                                 batch_size=cfg.extract.batch_size, num_workers=cfg.runtime.num_workers,
                                 decoder_threads=decoder_threads, show_progress=ctx.is_main,
                                 decoder_nice=cfg.runtime.decoder_nice)
    write_failures(failed_tsv, summary.failures)
    _log_summary(summary, len(sources) - len(todo), len(sources), where)
    return summary


def _done_in_merged_file(features_h5: Path, attrs: dict, dtype: str, overwrite: bool) -> set[str]:
    """Shards skip the videos the merged file already holds (a run killed after an earlier merge)."""
    if overwrite:
        return set()
    try:
        return set(compatible_complete_ids(features_h5, attrs, dtype))
    except FeatureStoreMismatch as error:
        if not overwrite:
            raise FeatureStoreMismatch(f"{error}; or rerun with extract.overwrite=true") from None
        return set()  # the merge replaces it


def _wait_for_markers(markers: list[Path], poll_sec: float = 1.0) -> None:
    """Poll instead of a collective barrier: ranks may finish hours apart (no process-group timeout here)."""
    start = last_report = time.monotonic()
    while missing := [marker for marker in markers if not marker.exists()]:
        if time.monotonic() - last_report > 60:
            log.info("extract: waiting for %d ranks (%.0f s)", len(missing), time.monotonic() - start)
            last_report = time.monotonic()
        time.sleep(poll_sec)


def _log_summary(summary: ExtractSummary, num_skipped: int, total: int, where: str) -> None:
    log.info("extract: %s: %d videos extracted (%d clips in %.1f s, %.1f clips/s), %d already complete, "
             "%d failed, of %d", where, len(summary.videos_done), summary.num_clips, summary.seconds,
             summary.clips_per_sec, num_skipped, len(summary.failures), total)


def run_extract(cfg: Config, paths: RunPaths) -> None:
    """The extract stage (module docstring). Raises ``ExtractionFailed`` when some videos failed."""
    ctx = init_distributed(cfg.runtime.device)
    set_threads(model_threads(cfg.runtime.num_threads, cfg.runtime.num_workers, ctx.device))
    extraction = load_extraction_model(cfg, paths)
    sources = video_sources(cfg)
    digest = stage_fingerprint(cfg, extraction, sources)
    checks = {paths.features_h5: check_store}
    stamp_check = check_complete(paths.features_dir, digest, checks)
    if stamp_check and not cfg.extract.overwrite:
        log.info("extract: %s is complete for these settings, weights and videos (verified); nothing to do",
                 paths.features_h5)
        return
    if stamp_check.damaged:
        log.warning("extract: %s; extracting what is missing", stamp_check.reason)
    if ctx.is_main:
        clear(paths.features_dir)

    index, count, share = _share(cfg, ctx, sources)
    output = shard_path(paths.features_h5, index, count)
    failed_tsv = shard_path(paths.failed_videos, index, count)
    torchrun = ctx.distributed and not cfg.extract.shard
    if torchrun:
        done_marker(output).unlink(missing_ok=True)
        if cfg.extract.overwrite and ctx.is_main:  # afresh: the merge must not keep the old main file's videos
            paths.features_h5.unlink(missing_ok=True)
        barrier(ctx)  # no rank sees another's stale mark from an earlier run
    where = f"shard {index} of {count}" if count > 1 else "all videos"
    also_done = None
    if count > 1:  # shards skip what the merged file already holds
        also_done = partial(_done_in_merged_file, paths.features_h5, dtype=cfg.extract.dtype,
                            overwrite=cfg.extract.overwrite)
    summary = extract_into(output, failed_tsv, share, cfg, extraction, ctx, where, also_done)

    num_failed, total, failed_list = len(summary.failures), len(share), failed_tsv
    if torchrun:
        done_marker(output).touch()
        if not ctx.is_main:
            return  # rank 0 merges and reports
        markers = [done_marker(shard_path(paths.features_h5, rank, count)) for rank in range(count)]
        _wait_for_markers(markers)
        merged = merge_extraction(paths.features_h5, count)  # also removes the shards and their marks
        num_failed, total, failed_list = len(merged.failures), len(sources), paths.failed_videos
    if num_failed:
        raise ExtractionFailed(f"{num_failed} of {total} videos failed, see {failed_list}")
    if count > 1 and not torchrun:
        log.info("extract: shard %d of %d done; once all are, merge them with: python -m features.merge %s",
                 index, count, paths.features_h5)
        return
    mark_complete(paths.features_dir, digest, [paths.features_h5], checks)
    log.info("extract: %s holds the features of all %d videos", paths.features_h5, len(sources))
