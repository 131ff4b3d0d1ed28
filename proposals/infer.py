"""BMN inference: per-video scores, post-processing in bounded chunks, proposal metrics, proposals.json.

``predict_proposals`` runs a model over every item of a ``BMNInputs`` dataset (in
order), turns each video's item outputs into one ``VideoScores`` as soon as its
last item is through (windows averaged where they overlap), and post-processes
videos in chunks (``postprocess_videos`` with ``n_jobs`` processes), so memory
holds a few videos' maps at a time, not the whole subset's. It can also
accumulate the validation loss of the items with an action.

Under several processes each rank predicts its own share of the videos
(``rank_share``) and ``gather_proposals`` collects every rank's proposals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from evaluation.proposal import average_recall
from proposals.dataset import BMNInputs
from proposals.losses import BMNLoss, bmn_loss
from proposals.postprocess import VideoScores, postprocess_videos
from runstate.runtime import DistributedContext

CHUNK_MAP_CELLS = 2**25  # post-process once the pending videos' BM maps hold this many cells (float64)


@dataclass(frozen=True)
class PostprocessSettings:
    """Post-processing of ``postprocess.postprocess_video`` (Soft-NMS and top-k), and its parallelism."""

    temporal_scale: int  # T: Soft-NMS measures a proposal's width in units of T steps
    alpha: float = 0.4
    low_threshold: float = 0.5
    high_threshold: float = 0.9
    top_k: int = 100
    n_jobs: int = 1


class LossMeter:
    """Running sums of the BMN loss terms, weighted by the number of sequences in each batch."""

    TERMS = ("total", "tem", "pem_regression", "pem_classification")

    def __init__(self):
        self.sums = torch.zeros(len(self.TERMS) + 1, dtype=torch.float64)  # terms, then the count

    def add(self, loss: BMNLoss, count: int) -> None:
        values = torch.stack([getattr(loss, term).detach() for term in self.TERMS]).double().cpu()  # one sync
        self.sums[:-1] += values * count
        self.sums[-1] += count

    def means(self, ctx: DistributedContext) -> dict[str, float]:
        """``{term: mean}`` over all ranks (NaN when nothing was added anywhere)."""
        sums = self.sums.clone()
        if ctx.distributed:
            dist.all_reduce(sums)
        count = float(sums[-1])
        return {term: float(sums[i]) / count if count else float("nan") for i, term in enumerate(self.TERMS)}


def rank_share(items: list, ctx: DistributedContext) -> list:
    """This rank's share of a list (every ``world_size``-th element)."""
    return items[ctx.rank :: ctx.world_size]


@torch.inference_mode()
def iterate_video_scores(
    model: torch.nn.Module,
    dataset: BMNInputs,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    loss_meter: LossMeter | None = None,
    valid_mask: torch.Tensor | None = None,
    loss_generator: torch.Generator | None = None,
) -> Iterator[tuple[str, VideoScores]]:
    """``(video_id, VideoScores)`` for each video of ``dataset``, in order.

    When ``loss_meter`` is given, the loss of the items with an action is added to
    it (``valid_mask`` ``(D, T)`` and ``loss_generator`` as for ``losses.bmn_loss``).
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    pending: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}  # video -> per-item outputs
    try:
        for features, gt_iou, gt_start, gt_end, has_action, item_index in loader:
            confidence_map, start, end = model(features.to(device))  # (B, 2, D, T), (B, T), (B, T)
            if loss_meter is not None and bool(has_action.any()):
                keep = has_action.to(device)
                targets = (gt_iou.to(device)[keep], gt_start.to(device)[keep], gt_end.to(device)[keep])
                loss = bmn_loss(confidence_map[keep], start[keep], end[keep], *targets, valid_mask,
                                loss_generator)
                loss_meter.add(loss, int(keep.sum()))
            outputs = zip(confidence_map.cpu().numpy(), start.cpu().numpy(), end.cpu().numpy())
            for index, (item_map, item_start, item_end) in zip(item_index.tolist(), outputs):
                video_index, _ = dataset.items[index]
                collected = pending.setdefault(video_index, [])
                collected.append((item_start, item_end, item_map))
                if len(collected) == dataset.items_per_video[video_index]:
                    del pending[video_index]
                    # (W, T), (W, T), (W, 2, D, T) over the video's W items
                    starts, ends, maps = (np.stack(part) for part in zip(*collected))
                    video_id = dataset.videos[video_index].video_id
                    yield video_id, dataset.video_scores(video_index, starts, ends, maps)
    finally:
        model.train(was_training)


def postprocess_in_chunks(
    scores: Iterator[tuple[str, VideoScores]], settings: PostprocessSettings
) -> dict[str, np.ndarray]:
    """``{video_id: (K, 3) [start_sec, end_sec, score]}``, post-processing a few videos at a time."""
    proposals: dict[str, np.ndarray] = {}
    chunk: dict[str, VideoScores] = {}
    cells = 0

    def flush() -> None:
        nonlocal chunk, cells
        if chunk:
            proposals.update(postprocess_videos(
                chunk, settings.temporal_scale, settings.alpha, settings.low_threshold,
                settings.high_threshold, settings.top_k, n_jobs=min(settings.n_jobs, len(chunk))))
        chunk, cells = {}, 0

    for video_id, video_scores in scores:
        chunk[video_id] = video_scores
        cells += video_scores.confidence_map.size
        if cells >= CHUNK_MAP_CELLS or len(chunk) >= 32 * settings.n_jobs:
            flush()
    flush()
    return proposals


def predict_proposals(
    model: torch.nn.Module,
    dataset: BMNInputs,
    settings: PostprocessSettings,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    loss_meter: LossMeter | None = None,
    valid_mask: torch.Tensor | None = None,
    loss_generator: torch.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Proposals ``{video_id: (K, 3) seconds + score, best first}`` of every video of ``dataset``."""
    scores = iterate_video_scores(model, dataset, batch_size, device, num_workers, loss_meter, valid_mask,
                                  loss_generator)
    return postprocess_in_chunks(scores, settings)


def gather_proposals(proposals: dict[str, np.ndarray], ctx: DistributedContext) -> dict[str, np.ndarray]:
    """Every rank's proposals, merged, on every rank (sorted by video id)."""
    if ctx.distributed:
        shares: list[dict[str, np.ndarray]] = [{} for _ in range(ctx.world_size)]
        dist.all_gather_object(shares, proposals)
        proposals = {video_id: value for share in shares for video_id, value in share.items()}
    return dict(sorted(proposals.items()))


def proposal_table(proposals: dict[str, np.ndarray]) -> pd.DataFrame:
    """``video_id, start, end, score`` rows (seconds) of ``{video_id: (K, 3)}``."""
    frames = [pd.DataFrame({"video_id": video_id, "start": rows[:, 0], "end": rows[:, 1],
                            "score": rows[:, 2]})
              for video_id, rows in proposals.items() if len(rows)]
    if not frames:
        return pd.DataFrame({"video_id": [], "start": [], "end": [], "score": []})
    return pd.concat(frames, ignore_index=True)


def proposal_metrics(ground_truth: pd.DataFrame, proposals: dict[str, np.ndarray]) -> dict[str, float]:
    """AR@1/5/10/100 and AUC (fractions) of ``proposals`` against ``ground_truth`` (``video_id, start, end``).

    Only the ground truth of the videos in ``proposals`` counts.
    """
    ground_truth = ground_truth[ground_truth["video_id"].isin(list(proposals))]
    table = proposal_table(proposals)
    if ground_truth.empty or table.empty:
        raise ValueError(f"proposal metrics need ground truth and proposals; got {len(ground_truth)} "
                         f"segments and {len(table)} proposals over {len(proposals)} videos")
    return average_recall(ground_truth[["video_id", "start", "end"]], table).to_metrics()
