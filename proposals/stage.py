"""The bmn stage: train BMN on the clip features, write class-agnostic proposals.

    python pipeline.py --stage bmn
    torchrun --nproc_per_node=N pipeline.py --stage bmn     # DDP, gloo on CPU, NCCL on CUDA

Reads ``<work_dir>/features/features.h5`` and the annotations; writes under
``<work_dir>/proposals/``:

* ``last.pt``: the checkpoint after every epoch (model, optimizer, scheduler); a
  rerun after an interruption resumes from it, exactly;
* ``bmn.pt``: the epoch with the best validation AUC (AR@AN area,
  ``dataset.val_subset``), what the proposals come from;
* ``metrics.jsonl``: one line per finished epoch: learning rate, training and
  validation loss terms, validation AR@1/5/10/100 and AUC, training windows/s;
* ``proposals.json``: the best model's proposals for every video of ``eval.subset``
  that has features (ActivityNet proposal format, seconds, best first).

Training (``bmn`` section): Adam (``lr``, ``weight_decay``), learning rate x 0.1
after ``lr_step`` epochs, ``batch_size`` sequences per step and process. Inputs
per ``bmn.input`` (``proposals.dataset``): "rescale" trains on whole videos
rescaled to ``temporal_scale`` steps, "windows" on the sliding windows that fully
contain an action; inference covers every video (every window, fused).

Every random draw (shuffle order, the regression loss's cell sampling) derives
from ``runtime.seed`` and the epoch, so a resumed run ends with the same weights
as an uninterrupted one (on the same device and process count). ``last.pt``
records a fingerprint of the training inputs and settings; when they have changed,
training starts afresh. Post-processing settings (Soft-NMS, ``top_k``,
``n_jobs``) and ``eval.subset`` are not part of it: changing them re-runs only the
inference. A rerun with nothing changed says so and does nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from functools import partial

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from configs.schema import Config
from data.annotations import Annotations
from data.dataset import load_dataset
from formats.features import FeatureStore
from formats.proposals import write_proposals_json
from proposals.bm_map import bm_valid_mask
from proposals.bmn import BMN
from proposals.dataset import BMNInputs, VideoInput, read_videos
from proposals.infer import (
    LossMeter,
    PostprocessSettings,
    gather_proposals,
    predict_proposals,
    proposal_metrics,
    rank_share,
)
from proposals.train import bmn_model_args, load_bmn, read_bmn_checkpoint, save_bmn_checkpoint, train_one_epoch
from runstate import stamp
from runstate.epochs import EpochFiles, Resumed
from runstate.paths import RunPaths
from runstate.runtime import DistributedContext, barrier, broadcast, init_distributed, set_threads

log = logging.getLogger(__name__)

# bmn keys that only post-processing reads: changing them re-runs inference, not training
POSTPROCESS_KEYS = ("soft_nms_alpha", "soft_nms_low", "soft_nms_high", "top_k", "n_jobs")


@dataclass
class StageInputs:
    """What the stage reads before training: the videos with features and the datasets built on them."""

    feature_dim: int
    max_duration: int | None  # D of the BM map (None: temporal_scale)
    train_set: BMNInputs  # training sequences with an action, all ranks
    val_set: BMNInputs  # every sequence of this rank's share of the validation videos
    eval_videos: list[VideoInput]  # every video of eval.subset with features
    val_ground_truth: pd.DataFrame  # segments of the validation videos with features
    num_train_videos: int
    num_val_videos: int


def run_bmn(cfg: Config, paths: RunPaths) -> None:
    """Train (resuming if interrupted), keep the best epoch by validation AUC, write proposals.json."""
    set_threads(cfg.runtime.num_threads)
    ctx = init_distributed(cfg.runtime.device)
    if not paths.features_h5.is_file():
        raise FileNotFoundError(f"bmn: {paths.features_h5} not found; run the extract stage first")
    annotations = load_dataset(cfg)
    training_digest = training_fingerprint(cfg, annotations, paths)
    postprocess_settings = {key: getattr(cfg.bmn, key) for key in POSTPROCESS_KEYS}
    digest = stamp.fingerprint("bmn", training_digest, postprocess_settings, cfg.eval.subset,
                               _subset_ground_truth(annotations, cfg.eval.subset))
    outputs = [paths.bmn_checkpoint, paths.bmn_last, paths.bmn_metrics, paths.proposals_json]
    stamp_check = stamp.check_complete(paths.proposals_dir, digest)
    if stamp_check:
        log.info("bmn: complete (%s, verified), inputs and settings unchanged, nothing to do",
                 paths.proposals_json)
        return
    if stamp_check.damaged:
        log.warning("bmn: %s; redoing what is needed", stamp_check.reason)
    if ctx.is_main:
        stamp.clear(paths.proposals_dir)

    settings, seed = cfg.bmn, cfg.runtime.seed
    inputs = prepare_inputs(cfg, paths, annotations, ctx)
    postprocess = PostprocessSettings(settings.temporal_scale, settings.soft_nms_alpha, settings.soft_nms_low,
                                      settings.soft_nms_high, settings.top_k, settings.n_jobs)
    model_args = bmn_model_args(settings.temporal_scale, inputs.feature_dim, settings.hidden_1d,
                                settings.hidden_2d, settings.hidden_3d, settings.num_sample,
                                settings.num_sample_perbin, settings.prop_boundary_ratio, inputs.max_duration)
    device = torch.device(ctx.device)
    torch.manual_seed(seed)
    bare_model = BMN(**model_args).to(device)
    # the only buffers, the BM sampling constants, never change: no syncing at every forward
    model = bare_model
    if ctx.distributed:
        device_ids = [ctx.local_rank] if device.type == "cuda" else None
        model = DistributedDataParallel(bare_model, device_ids=device_ids, forward_sync_buffers=False)
    # foreach: the per-tensor loop's values bit for bit, faster (see run_finetune)
    optimizer = torch.optim.Adam(bare_model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                 foreach=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_step, gamma=0.1)
    valid_mask = torch.from_numpy(bm_valid_mask(settings.temporal_scale, inputs.max_duration)).to(device)

    sampler = None
    if ctx.distributed:
        sampler = DistributedSampler(inputs.train_set, ctx.world_size, ctx.rank, shuffle=True, seed=seed)
    shuffle_generator = torch.Generator()
    train_loader = DataLoader(inputs.train_set, batch_size=settings.batch_size, shuffle=sampler is None,
                              sampler=sampler, num_workers=cfg.runtime.num_workers,
                              generator=shuffle_generator)

    epoch_files = EpochFiles("bmn", paths.bmn_last, paths.bmn_checkpoint, paths.bmn_metrics, training_digest,
                             read_bmn_checkpoint)
    resumed = epoch_files.resume() if ctx.is_main else Resumed()
    start_epoch = int(broadcast(resumed.start_epoch, ctx))
    if start_epoch:  # every rank loads the same last.pt
        checkpoint = resumed.checkpoint if ctx.is_main else read_bmn_checkpoint(paths.bmn_last)
        bare_model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
    history = resumed.history
    best_auc = max((record["AUC"] for record in history), default=-1.0)

    log.info("bmn (%s, T=%d, D=%d, features dim %d): %d training sequences from %d videos, %d validation "
             "videos, %d epochs, %d process(es)", settings.input, settings.temporal_scale,
             inputs.max_duration or settings.temporal_scale, inputs.feature_dim, len(inputs.train_set),
             inputs.num_train_videos, inputs.num_val_videos, settings.epochs, ctx.world_size)
    config_dict = asdict(cfg)
    for epoch in range(start_epoch, settings.epochs):
        started = time.perf_counter()
        shuffle_generator.manual_seed(seed + epoch)  # the order depends on the epoch alone
        if sampler is not None:
            sampler.set_epoch(epoch)
        loss_generator = torch.Generator(device).manual_seed(seed + 1000 * (epoch + 1) + ctx.rank)
        lr = optimizer.param_groups[0]["lr"]
        train_loss, windows_per_sec = train_one_epoch(model, train_loader, optimizer, valid_mask,
                                                      loss_generator, device, ctx,
                                                      f"bmn epoch {epoch + 1}/{settings.epochs}", epoch + 1,
                                                      paths.bmn_last)
        scheduler.step()

        val_meter = LossMeter()
        val_generator = torch.Generator(device).manual_seed(seed + 1000 * (epoch + 1) + 999 + ctx.rank)
        proposals = predict_proposals(bare_model, inputs.val_set, postprocess, settings.batch_size, device,
                                      cfg.runtime.num_workers, val_meter, valid_mask, val_generator)
        metrics = proposal_metrics(inputs.val_ground_truth, gather_proposals(proposals, ctx))
        val_loss = val_meter.means(ctx)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss["total"],
                  "val_loss": val_loss["total"], **metrics, "train_loss_terms": train_loss,
                  "val_loss_terms": val_loss,
                  "train_windows_per_sec": windows_per_sec, "world_size": ctx.world_size,
                  "seconds": time.perf_counter() - started}
        is_best = metrics["AUC"] > best_auc
        best_auc = max(best_auc, metrics["AUC"])
        if ctx.is_main:
            saved = dict(model=bare_model, model_args=model_args, config=config_dict, epoch=epoch + 1,
                         training_fingerprint=training_digest, val=metrics)
            epoch_files.finish_epoch(record, is_best, save_best=partial(save_bmn_checkpoint, **saved),
                                     save_last=partial(save_bmn_checkpoint, **saved, optimizer=optimizer,
                                                       scheduler=scheduler), history=history)
        barrier(ctx)
        log.info("bmn epoch %d/%d  loss %.4f  val loss %.4f  AR@100 %.4f  AUC %.4f%s  (%.0f windows/s)",
                 epoch + 1, settings.epochs, train_loss["total"], val_loss["total"], metrics["AR@100"],
                 metrics["AUC"], "  best" if is_best else "", windows_per_sec)

    _write_proposals(cfg, paths, ctx, annotations, inputs, postprocess, training_digest)
    if ctx.is_main:
        stamp.mark_complete(paths.proposals_dir, digest, outputs)
    barrier(ctx)


def prepare_inputs(cfg: Config, paths: RunPaths, annotations: Annotations, ctx: DistributedContext
                   ) -> StageInputs:
    """Reads the training, validation and evaluated videos once and builds their datasets."""
    settings = cfg.bmn
    with FeatureStore(paths.features_h5) as store:
        stored = set(store.video_ids)
        feature_dim = int(store.attrs["dim"])
    train_ids = _videos_with_features(annotations, cfg.dataset.train_subset, stored, "training")
    val_ids = _videos_with_features(annotations, cfg.dataset.val_subset, stored, "validation")
    eval_ids = _videos_with_features(annotations, cfg.eval.subset, stored, "evaluated")
    all_ids = list(dict.fromkeys(train_ids + val_ids + eval_ids))
    videos = dict(zip(all_ids, read_videos(paths.features_h5, all_ids, annotations.segments, settings.input,
                                           settings.temporal_scale)))
    max_duration = settings.max_duration or None
    train_set = dataset_for(cfg, paths, [videos[v] for v in train_ids], only_with_actions=True)
    if len(train_set) == 0:
        raise RuntimeError(f"bmn: no training sequence holds an action (subset {cfg.dataset.train_subset!r}, "
                           f"input {settings.input!r}, temporal_scale {settings.temporal_scale}): with "
                           "windows, no window fully contains a ground-truth segment; raise "
                           "bmn.temporal_scale")
    val_ground_truth = annotations.segments[annotations.segments["video_id"].isin(val_ids)]
    if val_ground_truth.empty:
        raise RuntimeError(f"bmn: the validation subset {cfg.dataset.val_subset!r} has no ground-truth "
                           "segment in a video with features, so AR/AUC cannot pick the best epoch; set "
                           "dataset.val_subset")
    return StageInputs(feature_dim, max_duration, train_set,
                       dataset_for(cfg, paths, rank_share([videos[v] for v in val_ids], ctx)),
                       [videos[v] for v in eval_ids], val_ground_truth, len(train_ids), len(val_ids))


def dataset_for(cfg: Config, paths: RunPaths, videos: list[VideoInput], only_with_actions: bool = False
                ) -> BMNInputs:
    """The ``BMNInputs`` of ``videos`` with the bmn section's input settings."""
    settings = cfg.bmn
    return BMNInputs(paths.features_h5, videos, settings.input, settings.temporal_scale,
                     settings.max_duration or None, settings.window_overlap, only_with_actions)


def _write_proposals(cfg: Config, paths: RunPaths, ctx: DistributedContext, annotations: Annotations,
                     inputs: StageInputs, postprocess: PostprocessSettings, training_digest: str) -> None:
    """Inference with the best checkpoint on the evaluated subset; rank 0 writes proposals.json."""
    checkpoint_path = paths.bmn_checkpoint
    if (not checkpoint_path.is_file()
            or read_bmn_checkpoint(checkpoint_path)["training_fingerprint"] != training_digest):
        raise RuntimeError(f"bmn: {checkpoint_path} is missing or comes from another training although "
                           f"{paths.bmn_last} says training finished; delete last.pt to train again")
    device = torch.device(ctx.device)
    model, checkpoint = load_bmn(checkpoint_path, device)
    started = time.perf_counter()
    eval_set = dataset_for(cfg, paths, rank_share(inputs.eval_videos, ctx))
    proposals = predict_proposals(model, eval_set, postprocess, cfg.bmn.batch_size, device,
                                  cfg.runtime.num_workers)
    proposals = gather_proposals(proposals, ctx)
    seconds = time.perf_counter() - started
    if not ctx.is_main:
        return
    write_proposals_json(paths.proposals_json, proposals)
    log.info("bmn: the model of epoch %d (best validation AUC %.4f): %d proposals for %d %s videos in %.1f s "
             "-> %s", checkpoint["epoch"], checkpoint["val"].get("AUC", float("nan")),
             sum(len(rows) for rows in proposals.values()), len(proposals), cfg.eval.subset, seconds,
             paths.proposals_json)
    ground_truth = annotations.segments[annotations.segments["video_id"].isin(list(proposals))]
    if ground_truth.empty:
        log.info("bmn: the %s subset has no ground truth; no AR/AUC", cfg.eval.subset)
        return
    metrics = proposal_metrics(ground_truth, proposals)
    log.info("bmn: %s proposals: %s", cfg.eval.subset,
             "  ".join(f"{name} {100 * value:.2f}" for name, value in metrics.items()))


def training_fingerprint(cfg: Config, annotations: Annotations, paths: RunPaths) -> str:
    """What the trained weights depend on: features, ground truth, the bmn training settings, the seed."""
    training_settings = {key: value for key, value in asdict(cfg.bmn).items() if key not in POSTPROCESS_KEYS}
    return stamp.fingerprint("bmn-train", training_settings, cfg.runtime.seed,
                             stamp.file_identity(paths.features_h5),
                             cfg.dataset.train_subset,
                             _subset_ground_truth(annotations, cfg.dataset.train_subset),
                             cfg.dataset.val_subset,
                             _subset_ground_truth(annotations, cfg.dataset.val_subset))


def _subset_ground_truth(annotations: Annotations, subset: str) -> list:
    """The subset's video ids and segments (seconds), as plain lists for a fingerprint."""
    videos = sorted(annotations.videos.loc[annotations.videos["subset"] == subset, "video_id"])
    segments = annotations.segments[annotations.segments["subset"] == subset]
    return [videos, segments[["video_id", "start", "end"]].to_numpy().tolist()]


def _videos_with_features(annotations: Annotations, subset: str, stored: set[str], role: str) -> list[str]:
    """The subset's videos that the feature store holds (sorted); warns about the others."""
    subset_videos = pd.unique(annotations.videos.loc[annotations.videos["subset"] == subset, "video_id"])
    if len(subset_videos) == 0:
        raise RuntimeError(f"bmn: the {role} subset {subset!r} has no videos in the loaded annotations "
                           "(is it in dataset.subsets?)")
    present = sorted(video_id for video_id in subset_videos if video_id in stored)
    missing = [video_id for video_id in subset_videos if video_id not in stored]
    if missing:
        log.warning("bmn: %d of %d %s videos (%s subset) have no features, skipped (e.g. %s)", len(missing),
                    len(subset_videos), role, subset, ", ".join(missing[:3]))
    if not present:
        raise RuntimeError(f"bmn: none of the {len(subset_videos)} videos of the {role} subset {subset!r} "
                           "has features in the feature store; run the extract stage for them")
    return present
