"""The finetune stage: train the TAda2D (or TSN) clip classifier on trimmed action segments.

    python pipeline.py --stage finetune
    torchrun --nproc_per_node=N pipeline.py --stage finetune     # DDP, gloo on CPU, NCCL on CUDA

Writes under `<work_dir>/backbone/`:

* `last.pt`: our checkpoint after every epoch (model, optimizer, scheduler); a rerun
  after an interruption resumes from it;
* `checkpoint.pt`: the best epoch by validation top-1 (action accuracy for verb+noun heads,
  label accuracy for one head): what extract and classify use;
* `metrics.jsonl`: one line per finished epoch (train loss, lr, validation top-1 per head).

Schedule: linear warm-up over `warmup_epochs`, then half-cosine decay to zero, stepped
every iteration. Every random draw (clip positions, augmentation, dropout) derives from
`runtime.seed` and the epoch, so training is deterministic under a fixed seed on CPU and a
resumed run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from functools import partial

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from backbone.build import build_model, weights_normalization
from backbone.clip_dataset import ClipSampling, SegmentClips
from backbone.clips import IMAGENET, Normalization, clips_to_tensor, resolve_normalization
from backbone.weights import load_checkpoint, load_weights, read_checkpoint, save_checkpoint
from configs.schema import Config
from data.annotations import Annotations
from data.dataset import load_dataset
from data.video import VideoError, VideoReader
from runstate import stamp
from runstate.epochs import EpochFiles, Resumed, check_finite
from runstate.paths import RunPaths
from runstate.runtime import (
    DistributedContext,
    barrier,
    broadcast,
    init_distributed,
    progress,
    set_threads,
)

log = logging.getLogger(__name__)


def head_columns(classes: dict[str, list[str]]) -> list[str]:
    """Segment-table column per head: `["verb", "noun"]` (EK-style) or `["label"]` (HACS-style)."""
    return list(classes)


def build_classifier(cfg: Config, heads: dict[str, int]):
    m = cfg.model
    return build_model(m.name, m.depth, heads, width=m.width, num_frames=m.num_frames, dropout=m.dropout,
                       route_reduction=m.route_reduction, route_kernels=tuple(m.route_kernels))


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 1/warmup to 1, then half-cosine from 1 to 0 (per optimizer step)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _segments_with_paths(annotations: Annotations, subset: str) -> pd.DataFrame:
    """The subset's segments with a `path` column; segments of missing or unreadable videos are dropped (logged)."""
    part = annotations.subset(subset)
    paths = part.videos.set_index("video_id")["path"]
    segments = part.segments.assign(path=part.segments["video_id"].map(paths).fillna(""))
    unreadable = set()
    for path in segments["path"].unique():
        if not path:
            continue
        try:
            VideoReader(path)  # opens the container and reads the frame index; cheap next to training
        except VideoError as error:
            log.warning("%s: skipping %s", subset, error)
            unreadable.add(path)
    skipped = (segments["path"] == "") | segments["path"].isin(unreadable)
    if skipped.any():
        log.warning("%s: %d segments skipped, their videos are missing or unreadable (e.g. %s)", subset,
                    int(skipped.sum()), segments.loc[skipped, "video_id"].iloc[0])
    return segments[~skipped].reset_index(drop=True)


def _loader(dataset: SegmentClips, batch_size: int, ctx: DistributedContext, num_workers: int, shuffle: bool,
            seed: int) -> tuple[DataLoader, DistributedSampler | None, torch.Generator]:
    sampler = None
    if ctx.distributed:
        sampler = DistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=shuffle, seed=seed,
                                     drop_last=False)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                        num_workers=num_workers, generator=generator, drop_last=False,
                        persistent_workers=False, pin_memory=False)
    return loader, sampler, generator


def _fingerprint(cfg: Config, annotations: Annotations) -> str:
    segments = annotations.segments
    return stamp.fingerprint("finetune", cfg.model, cfg.finetune, cfg.runtime.seed, cfg.dataset.train_subset,
                             cfg.dataset.val_subset, annotations.classes,
                             segments[["video_id", "start", "end", "label"]].to_numpy().tolist())


def run_finetune(cfg: Config, paths: RunPaths) -> None:
    """Train, validate every epoch, checkpoint every epoch, keep the best; resume if interrupted."""
    set_threads(cfg.runtime.num_threads)
    ctx = init_distributed(cfg.runtime.device)
    annotations = load_dataset(cfg)
    digest = _fingerprint(cfg, annotations)
    stamp_check = stamp.check_complete(paths.backbone_dir, digest)
    if stamp_check:
        log.info("finetune: complete (%s, verified), nothing to do", paths.checkpoint)
        return
    if stamp_check.damaged:
        log.warning("finetune: %s; redoing what is needed", stamp_check.reason)
    if ctx.is_main:
        stamp.clear(paths.backbone_dir)
    ft = cfg.finetune
    heads = annotations.heads
    columns = head_columns(annotations.classes)
    train_segments = _segments_with_paths(annotations, cfg.dataset.train_subset)
    val_segments = _segments_with_paths(annotations, cfg.dataset.val_subset)
    if len(train_segments) == 0:
        raise RuntimeError(f"finetune: no training segments with videos in subset {cfg.dataset.train_subset!r}")

    train_sampling = ClipSampling(cfg.model.num_frames, cfg.model.interval, ft.fps, train=True,
                                  decode_short_side=ft.short_side_range[1], crop_size=ft.crop_size,
                                  scale_range=tuple(ft.short_side_range), flip=ft.flip)
    val_sampling = ClipSampling(cfg.model.num_frames, cfg.model.interval, ft.fps, train=False,
                                decode_short_side=ft.val_short_side or ft.short_side_range[0],
                                crop_size=ft.val_crop_size)
    train_set = SegmentClips(train_segments, columns, train_sampling, ft.clips_per_segment, cfg.runtime.seed)
    val_set = SegmentClips(val_segments, columns, val_sampling, seed=cfg.runtime.seed)
    workers, seed = cfg.runtime.num_workers, cfg.runtime.seed
    train_loader, train_sampler, shuffle_generator = _loader(train_set, ft.batch_size, ctx, workers, True, seed)
    val_loader, _, _ = _loader(val_set, ft.batch_size, ctx, workers, False, seed)

    torch.manual_seed(cfg.runtime.seed)
    model = build_classifier(cfg, heads)
    normalization = resolve_normalization(asdict(cfg.model))
    if cfg.model.pretrained:
        report = load_checkpoint(cfg.model.pretrained, model)
        log.info("initial weights from %s: %s", cfg.model.pretrained, report.summary())
        normalization = weights_normalization(asdict(cfg.model), cfg.model.pretrained, report.source_format)
    log.info("finetune: frames normalised with %s", normalization.describe())
    device = torch.device(ctx.device)
    model.to(device)
    if ctx.distributed:
        model = DistributedDataParallel(model, device_ids=[ctx.local_rank] if device.type == "cuda" else None)
    bare_model = model.module if ctx.distributed else model

    # foreach: each op of the update runs once over all the tensors, the same values bit for bit as
    # torch's per-tensor loop (its CPU default), in 0.6-0.8x its time (bench/optimizer.py; a test).
    # Not fused=True: faster still, but equal only to rounding, and torch 2.13's fused CPU kernels
    # mis-step a gradient whose strides differ from its parameter's.
    if ft.optimizer == "adamw":
        optimizer = torch.optim.AdamW(bare_model.parameters(), lr=ft.lr, weight_decay=ft.weight_decay, foreach=True)
    else:
        optimizer = torch.optim.SGD(bare_model.parameters(), lr=ft.lr, momentum=ft.momentum,
                                    weight_decay=ft.weight_decay, foreach=True)
    steps_per_epoch = len(train_loader)
    warmup_steps, total_steps = ft.warmup_epochs * steps_per_epoch, ft.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup_steps, total_steps))
    use_amp = ft.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    epoch_files = EpochFiles("finetune", paths.backbone_last, paths.checkpoint, paths.backbone_metrics, digest,
                             read_checkpoint)
    resumed = epoch_files.resume() if ctx.is_main else Resumed()
    start_epoch = int(broadcast(resumed.start_epoch, ctx))
    if start_epoch:
        checkpoint = resumed.checkpoint if ctx.is_main else read_checkpoint(paths.backbone_last)
        load_weights(bare_model, checkpoint, strict=True)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        log.info("resuming from %s after epoch %d of %d", paths.backbone_last, start_epoch, ft.epochs)
    history = resumed.history
    best = max((h["val_top1"] for h in history), default=-1.0)

    log.info("finetune %s-R%d width %d: %d training clips/epoch, %d validation clips, %d epochs, %d process(es)",
             cfg.model.name, cfg.model.depth, cfg.model.width, len(train_set), len(val_set), ft.epochs,
             ctx.world_size)
    config_dict = asdict(cfg)  # what the checkpoints record, with the statistics resolved
    config_dict["model"].update(input_mean=list(normalization.mean), input_std=list(normalization.std))
    for epoch in range(start_epoch, ft.epochs):
        torch.manual_seed(cfg.runtime.seed + 1000 * (epoch + 1) + ctx.rank)  # dropout: same on resume
        train_set.set_epoch(epoch)
        shuffle_generator.manual_seed(cfg.runtime.seed + epoch)  # the order depends on the epoch alone
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        started = time.perf_counter()
        train_loss, clips_per_sec = _train_one_epoch(model, train_loader, normalization, optimizer, scheduler,
                                                     scaler, columns, device, use_amp, ctx, epoch, ft.epochs)
        top1 = evaluate(bare_model, val_loader, columns, device, ctx, normalization)
        val_top1 = top1["action"] if "action" in top1 else top1[columns[0]]
        record = {"epoch": epoch + 1, "train_loss": train_loss, "lr": scheduler.get_last_lr()[0],
                  "val": top1, "val_top1": val_top1, "clips_per_sec": clips_per_sec,
                  "seconds": time.perf_counter() - started}
        is_best = val_top1 > best
        best = max(best, val_top1)
        if ctx.is_main:
            saved = dict(model=bare_model, config=config_dict, classes=annotations.classes, epoch=epoch + 1,
                         training_fingerprint=digest, val=top1)
            epoch_files.finish_epoch(record, is_best, save_best=partial(save_checkpoint, **saved),
                                     save_last=partial(save_checkpoint, **saved, optimizer=optimizer,
                                                       scheduler=scheduler), history=history)
        barrier(ctx)
        log.info("epoch %d/%d  loss %.4f  val top-1 %s%s  (%.0f clips/s)", epoch + 1, ft.epochs, train_loss,
                 "  ".join(f"{k} {v:.3f}" for k, v in top1.items()), "  best" if is_best else "", clips_per_sec)
    if ctx.is_main:
        stamp.mark_complete(paths.backbone_dir, digest, [paths.checkpoint, paths.backbone_last])
        log.info("finetune: best validation top-1 %.3f, checkpoint %s", best, paths.checkpoint)
    barrier(ctx)


def _train_one_epoch(model, loader, normalization, optimizer, scheduler, scaler, columns, device, use_amp, ctx,
                     epoch, num_epochs) -> tuple[float, float]:
    model.train()
    total_loss, total_clips, started = 0.0, 0, time.perf_counter()
    bar = progress(loader, desc=f"epoch {epoch + 1}/{num_epochs}", unit="batch", disable=not ctx.is_main,
                   leave=False)
    for step, (clips, labels) in enumerate(bar, start=1):
        video = clips_to_tensor(clips, normalization).to(device, non_blocking=True)  # (B,T,H,W,3) -> (B,3,T,H,W)
        labels = labels.to(device)  # (B, num_heads)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits, _ = model(video)
            loss = sum(F.cross_entropy(logits[name], labels[:, i]) for i, name in enumerate(columns))
        # AMP's scaler skips steps with inf gradients by design; a non-finite loss itself is divergence
        check_finite(loss.item(), "finetune", epoch + 1, step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total_loss += loss.item() * len(labels)
        total_clips += len(labels)
        bar.set_postfix(loss=f"{total_loss / total_clips:.3f}",
                        clips_per_s=f"{total_clips / (time.perf_counter() - started):.1f}")
    counts = torch.tensor([total_loss, total_clips], dtype=torch.float64)
    if ctx.distributed:
        dist.all_reduce(counts)
    return float(counts[0] / max(1.0, counts[1])), float(counts[1]) / (time.perf_counter() - started)


@torch.inference_mode()
def evaluate(model, loader, columns: list[str], device, ctx: DistributedContext,
             normalization: Normalization = IMAGENET) -> dict[str, float]:
    """Top-1 accuracy per head, plus `action` (all heads right) when there are several heads."""
    model.eval()
    correct = torch.zeros(len(columns) + 1, dtype=torch.float64)  # per head, then all heads
    count = torch.zeros(1, dtype=torch.float64)
    for clips, labels in loader:
        logits, _ = model(clips_to_tensor(clips, normalization).to(device))
        hits = torch.stack([logits[name].argmax(1).cpu() == labels[:, i] for i, name in enumerate(columns)], 1)
        correct[:-1] += hits.sum(0)
        correct[-1] += hits.all(1).sum()
        count += len(labels)
    if ctx.distributed:  # the DistributedSampler pads to equal shares: a few clips count twice
        dist.all_reduce(correct)
        dist.all_reduce(count)
    accuracy = (correct / count.clamp(min=1)).tolist()
    result = {name: accuracy[i] for i, name in enumerate(columns)}
    if len(columns) > 1:
        result["action"] = accuracy[-1]
    return result
