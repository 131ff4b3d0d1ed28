"""BMN losses: TEM boundary loss and PEM regression / classification losses.

``total = tem + 10 * pem_regression + pem_classification`` (the paper's
``L_TEM + L_PEM`` with ``L_PEM = L_C + 10 * L_R``; weight decay is the optimizer's).
Thresholds are the original code's, all strict: a step is a TEM positive when its
target is > 0.5, a cell a classification positive when its IoU is > 0.9.

All map tensors follow ``bm_map.BM_MAP_AXES``, shape ``(B, D, T)``, and take a
``valid_mask`` ``(D, T)`` (``bm_map.bm_valid_mask``) of the cells whose proposal
ends inside the sequence; ground-truth IoU maps are zeroed outside it.

Counts (positives, high/medium/low cells) are pooled over the whole batch, as in
the original code. Where the original divides by a count that can be zero (no
positive step, no high-IoU cell), the count is clamped to 1 here, which makes the
affected term zero instead of NaN.
"""

from dataclasses import dataclass

import torch

from proposals.bm_map import CLASSIFICATION_MAP, REGRESSION_MAP


@dataclass
class BMNLoss:
    """The loss terms of one batch (scalar tensors; ``total`` carries the gradient)."""

    total: torch.Tensor
    tem: torch.Tensor
    pem_regression: torch.Tensor
    pem_classification: torch.Tensor


def weighted_binary_logistic_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    positive_threshold: float = 0.5,
    mask: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Class-balanced binary log loss of probabilities ``pred`` against soft ``target``.

    Entries with ``target > positive_threshold`` are positives, the other entries
    (inside ``mask`` if given) negatives. With ``M`` entries of which ``P`` are
    positive, positives weigh ``0.5 * M / P`` and negatives ``0.5 * M / (M - P)``, so
    each class contributes half of the loss whatever its frequency:

        loss = -(1 / M) * sum(w_pos * log(p + eps) over positives + w_neg * log(1 - p + eps) over negatives)

    Args:
        pred: probabilities, any shape.
        target: same shape as ``pred``, values in [0, 1].
        positive_threshold: strict threshold on the target for a positive.
        mask: optional bool/0-1 tensor broadcastable to ``pred``; entries outside are ignored.
    """
    if pred.shape != target.shape:
        raise ValueError(f"weighted_binary_logistic_loss: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    entries = torch.ones_like(pred) if mask is None else mask.to(pred.dtype).expand_as(pred)
    positive = (target > positive_threshold).to(pred.dtype) * entries
    negative = entries - positive
    num_entries = entries.sum()
    num_positive = positive.sum()
    weight_positive = 0.5 * num_entries / num_positive.clamp(min=1.0)
    weight_negative = 0.5 * num_entries / (num_entries - num_positive).clamp(min=1.0)
    log_likelihood = weight_positive * positive * torch.log(pred + eps) + weight_negative * negative * torch.log(
        1.0 - pred + eps
    )
    return -log_likelihood.sum() / num_entries.clamp(min=1.0)


def tem_loss(
    pred_start: torch.Tensor, pred_end: torch.Tensor, gt_start: torch.Tensor, gt_end: torch.Tensor
) -> torch.Tensor:
    """TEM loss: weighted logistic loss of start and end probabilities ``(B, T)``, positives > 0.5."""
    return weighted_binary_logistic_loss(pred_start, gt_start, 0.5) + weighted_binary_logistic_loss(
        pred_end, gt_end, 0.5
    )


def pem_regression_weights(
    gt_iou: torch.Tensor,
    valid_mask: torch.Tensor,
    generator: torch.Generator | None = None,
    high_threshold: float = 0.7,
    low_threshold: float = 0.3,
) -> torch.Tensor:
    """0/1 weights ``(B, D, T)`` of the cells the regression loss uses (balanced sampling).

    Cells are split into high (IoU > 0.7), medium (0.3 < IoU <= 0.7) and low
    (0 < IoU <= 0.3, valid cells only; cells with no overlap at all are not
    regressed, as in the original code). All high cells are used; medium and low
    cells are kept at random with probabilities ``min(1, H / M)`` and ``min(1, H / L)``
    so that each group contributes about as many cells as the high one.

    Args:
        gt_iou: ``(B, D, T)`` IoU-map targets.
        valid_mask: ``(D, T)`` valid BM cells.
        generator: random source (a ``torch.Generator`` on the tensors' device), so
            that tests and runs are reproducible; draws medium then low uniforms.
    """
    valid = valid_mask.to(gt_iou.dtype).expand_as(gt_iou)
    gt_iou = gt_iou * valid
    high = (gt_iou > high_threshold).to(gt_iou.dtype)
    medium = ((gt_iou <= high_threshold) & (gt_iou > low_threshold)).to(gt_iou.dtype)
    low = ((gt_iou <= low_threshold) & (gt_iou > 0.0)).to(gt_iou.dtype) * valid
    num_high = high.sum()
    keep_medium_prob = (num_high / medium.sum().clamp(min=1.0)).clamp(max=1.0)
    keep_low_prob = (num_high / low.sum().clamp(min=1.0)).clamp(max=1.0)
    uniform_medium = torch.rand(gt_iou.shape, generator=generator, device=gt_iou.device, dtype=gt_iou.dtype)
    uniform_low = torch.rand(gt_iou.shape, generator=generator, device=gt_iou.device, dtype=gt_iou.dtype)
    return high + medium * (uniform_medium < keep_medium_prob) + low * (uniform_low < keep_low_prob)


def pem_regression_loss(
    pred: torch.Tensor,
    gt_iou: torch.Tensor,
    valid_mask: torch.Tensor,
    generator: torch.Generator | None = None,
    high_threshold: float = 0.7,
    low_threshold: float = 0.3,
) -> torch.Tensor:
    """L2 loss of the regression map ``(B, D, T)``: ``0.5 * mean((pred - IoU)^2)`` over the
    cells chosen by ``pem_regression_weights`` (0 when none is chosen)."""
    weights = pem_regression_weights(gt_iou, valid_mask, generator, high_threshold, low_threshold)
    gt_iou = gt_iou * valid_mask.to(gt_iou.dtype)
    squared_error = weights * (pred - gt_iou) ** 2
    return 0.5 * squared_error.sum() / weights.sum().clamp(min=1.0)


def pem_classification_loss(
    pred: torch.Tensor, gt_iou: torch.Tensor, valid_mask: torch.Tensor, positive_threshold: float = 0.9
) -> torch.Tensor:
    """Weighted logistic loss of the classification map ``(B, D, T)`` on valid cells, positives IoU > 0.9."""
    valid = valid_mask.to(gt_iou.dtype).expand_as(gt_iou)
    return weighted_binary_logistic_loss(pred, gt_iou * valid, positive_threshold, mask=valid)


def bmn_loss(
    confidence_map: torch.Tensor,
    pred_start: torch.Tensor,
    pred_end: torch.Tensor,
    gt_iou: torch.Tensor,
    gt_start: torch.Tensor,
    gt_end: torch.Tensor,
    valid_mask: torch.Tensor,
    generator: torch.Generator | None = None,
    regression_weight: float = 10.0,
) -> BMNLoss:
    """BMN's total loss ``tem + regression_weight * pem_regression + pem_classification``.

    Args:
        confidence_map: ``(B, 2, D, T)`` from ``BMN.forward``.
        pred_start, pred_end: ``(B, T)`` from ``BMN.forward``.
        gt_iou: ``(B, D, T)`` IoU-map targets (``targets.iou_map_target``).
        gt_start, gt_end: ``(B, T)`` boundary targets (``targets.boundary_targets``).
        valid_mask: ``(D, T)`` valid BM cells.
        generator: random source of the regression loss's cell sampling.
    """
    if confidence_map.dim() != 4 or confidence_map.shape[1] != 2:
        raise ValueError(f"bmn_loss: confidence_map must be (B, 2, D, T), got {tuple(confidence_map.shape)}")
    if gt_iou.shape != confidence_map[:, 0].shape:
        raise ValueError(
            f"bmn_loss: gt_iou {tuple(gt_iou.shape)} must match the map {tuple(confidence_map[:, 0].shape)}"
        )
    if valid_mask.shape != gt_iou.shape[1:]:
        raise ValueError(f"bmn_loss: valid_mask {tuple(valid_mask.shape)} must be (D, T) = {tuple(gt_iou.shape[1:])}")
    if pred_start.shape != gt_start.shape or pred_end.shape != gt_end.shape:
        raise ValueError(
            f"bmn_loss: start/end predictions {tuple(pred_start.shape)}/{tuple(pred_end.shape)} "
            f"vs targets {tuple(gt_start.shape)}/{tuple(gt_end.shape)}"
        )
    tem = tem_loss(pred_start, pred_end, gt_start, gt_end)
    regression = pem_regression_loss(confidence_map[:, REGRESSION_MAP], gt_iou, valid_mask, generator)
    classification = pem_classification_loss(confidence_map[:, CLASSIFICATION_MAP], gt_iou, valid_mask)
    total = tem + regression_weight * regression + classification
    return BMNLoss(total=total, tem=tem, pem_regression=regression, pem_classification=classification)
