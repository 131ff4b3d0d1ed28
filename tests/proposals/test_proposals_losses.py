import math

import pytest
import torch

from proposals.bm_layer import bm_valid_mask
from proposals.losses import (
    bmn_loss,
    pem_classification_loss,
    pem_regression_loss,
    pem_regression_weights,
    tem_loss,
    weighted_binary_logistic_loss,
)

EPS = 1e-6


def original_bi_loss(pred, target, threshold):
    """Reference: the BMN code's formula with ratio = entries / positives, written out per entry."""
    pred, target = pred.flatten().tolist(), target.flatten().tolist()
    positive = [t > threshold for t in target]
    ratio = len(pred) / sum(positive)
    coef_neg, coef_pos = 0.5 * ratio / (ratio - 1), 0.5 * ratio
    total = 0.0
    for p, is_pos in zip(pred, positive):
        total += coef_pos * math.log(p + EPS) if is_pos else coef_neg * math.log(1 - p + EPS)
    return -total / len(pred)


def test_weighted_logistic_hand_cases():
    pred = torch.tensor([0.8, 0.4, 0.1, 0.3], dtype=torch.float64)
    # 2 positives of 4: both weights 1
    loss = weighted_binary_logistic_loss(pred, torch.tensor([1.0, 0.6, 0.0, 0.2], dtype=torch.float64))
    expected = -(math.log(0.8) + math.log(0.4) + math.log(0.9) + math.log(0.7)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # 1 positive of 4: positive weight 2, negative weight 2/3
    loss = weighted_binary_logistic_loss(pred, torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    expected = -(2 * math.log(0.8) + 2 / 3 * (math.log(0.6) + math.log(0.9) + math.log(0.7))) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # threshold is strict: a target of exactly 0.5 is negative
    loss = weighted_binary_logistic_loss(pred, torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=torch.float64))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_weighted_logistic_matches_original_formula_and_mask():
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 7, generator=generator, dtype=torch.float64)
    target = torch.rand(3, 7, generator=generator, dtype=torch.float64)
    loss = weighted_binary_logistic_loss(pred, target, 0.5)
    assert loss.item() == pytest.approx(original_bi_loss(pred, target, 0.5), rel=1e-12)
    mask = torch.rand(3, 7, generator=generator) > 0.3
    masked = weighted_binary_logistic_loss(pred, target, 0.5, mask=mask)
    assert masked.item() == pytest.approx(original_bi_loss(pred[mask], target[mask], 0.5), rel=1e-12)


def test_weighted_logistic_without_positives_is_finite():
    pred = torch.tensor([0.2, 0.4])
    loss = weighted_binary_logistic_loss(pred, torch.zeros(2))
    assert loss.item() == pytest.approx(-0.5 * (math.log(0.8) + math.log(0.6)) / 2, abs=1e-5)


def test_tem_loss_is_start_plus_end():
    pred_start, pred_end = torch.tensor([[0.9, 0.2, 0.1]]), torch.tensor([[0.1, 0.3, 0.7]])
    gt_start, gt_end = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    expected = original_bi_loss(pred_start, gt_start, 0.5) + original_bi_loss(pred_end, gt_end, 0.5)
    assert tem_loss(pred_start, pred_end, gt_start, gt_end).item() == pytest.approx(expected, rel=1e-5)


def test_pem_regression_hand_case_all_cells_kept():
    # valid cells of a 3x3 map: d=0 all, d=1 s<=1, d=2 s=0
    valid = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    gt = torch.tensor([[[0.9, 0.8, 0.5], [0.4, 0.2, 0.95], [0.0, 0.0, 0.0]]])  # (1, 3, 3)
    # high: 0.9, 0.8 (H=2); medium: 0.5, 0.4 (M=2 -> prob 1); low: 0.2 (L=1 -> prob 1);
    # the 0.95 is in an invalid cell (zeroed, so not regressed); IoU-0 cells are not regressed
    weights = pem_regression_weights(gt, valid, torch.Generator().manual_seed(0))
    expected_weights = torch.tensor([[[1.0, 1, 1], [1, 1, 0], [0, 0, 0]]])
    torch.testing.assert_close(weights, expected_weights)
    pred = torch.full((1, 3, 3), 0.5)
    loss = pem_regression_loss(pred, gt, valid, torch.Generator().manual_seed(0))
    squared = [0.4**2, 0.3**2, 0.0, 0.1**2, 0.3**2]
    assert loss.item() == pytest.approx(0.5 * sum(squared) / 5, rel=1e-6)


def test_pem_regression_sampling_balances_groups_and_is_reproducible():
    steps = 60
    valid = torch.ones(steps, steps, dtype=torch.bool)
    gt = torch.zeros(1, steps, steps)
    gt[0, 0, :30] = 0.9  # 30 high cells
    gt[0, 1:11, :] = 0.5  # 600 medium cells
    gt[0, 11:51, :] = 0.1  # 2400 low cells
    weights = pem_regression_weights(gt, valid, torch.Generator().manual_seed(3))
    again = pem_regression_weights(gt, valid, torch.Generator().manual_seed(3))
    torch.testing.assert_close(weights, again)
    assert set(weights.unique().tolist()) <= {0.0, 1.0}
    assert weights[0, 0, :30].sum() == 30  # every high cell
    assert weights[0, 0, 30:].sum() == 0 and weights[0, 51:].sum() == 0  # IoU 0: never
    # medium kept with probability 30/600, low with 30/2400: counts near 30 (binomial sd ~5.3 and ~5.4)
    assert 10 <= weights[0, 1:11].sum() <= 50
    assert 10 <= weights[0, 11:51].sum() <= 50


def test_pem_regression_without_high_cells_is_zero():
    valid = torch.ones(2, 2, dtype=torch.bool)
    gt = torch.tensor([[[0.5, 0.2], [0.1, 0.0]]])
    pred = torch.rand(1, 2, 2, requires_grad=True)
    loss = pem_regression_loss(pred, gt, valid)
    assert loss.item() == 0.0
    loss.backward()


def test_pem_classification_hand_case():
    valid = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    gt = torch.tensor([[[0.95, 0.5], [0.2, 0.99]]])  # the 0.99 is invalid: ignored
    pred = torch.tensor([[[0.7, 0.4], [0.1, 0.9]]])
    # 3 entries, 1 positive: weights 1.5 and 0.75
    expected = -(1.5 * math.log(0.7) + 0.75 * (math.log(0.6) + math.log(0.9))) / 3
    assert pem_classification_loss(pred, gt, valid).item() == pytest.approx(expected, abs=1e-5)


def test_bmn_loss_combines_terms():
    generator = torch.Generator().manual_seed(0)
    steps = 5
    valid = torch.from_numpy(bm_valid_mask(steps))
    confidence_map = torch.rand(2, 2, steps, steps, generator=generator)
    pred_start, pred_end = (
        torch.rand(2, steps, generator=generator),
        torch.rand(2, steps, generator=generator),
    )
    gt_iou = torch.rand(2, steps, steps, generator=generator)
    gt_start, gt_end = torch.rand(2, steps, generator=generator), torch.rand(2, steps, generator=generator)
    loss = bmn_loss(
        confidence_map,
        pred_start,
        pred_end,
        gt_iou,
        gt_start,
        gt_end,
        valid,
        torch.Generator().manual_seed(5),
    )
    regression = pem_regression_loss(confidence_map[:, 0], gt_iou, valid, torch.Generator().manual_seed(5))
    classification = pem_classification_loss(confidence_map[:, 1], gt_iou, valid)
    tem = tem_loss(pred_start, pred_end, gt_start, gt_end)
    torch.testing.assert_close(loss.tem, tem)
    torch.testing.assert_close(loss.pem_regression, regression)
    torch.testing.assert_close(loss.pem_classification, classification)
    torch.testing.assert_close(loss.total, tem + 10 * regression + classification)
    with pytest.raises(ValueError, match="valid_mask"):
        bmn_loss(confidence_map, pred_start, pred_end, gt_iou, gt_start, gt_end, valid[:4])
