import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from proposals.bm_layer import (
    BM_MAP_AXES,
    BoundaryMatchingConv,
    BoundaryMatchingLayer,
    bm_cell_steps,
    bm_valid_mask,
    boundary_matching_entries,
    boundary_matching_weights,
)


def sample_proposals_by_loops(features, num_sample, num_sample_perbin, ratio, max_duration):
    """Reference: the BM layer's definition, one proposal and one point at a time (float64).

    features (C, T) -> (C, N, D, T).
    """
    channels, steps = features.shape
    out = np.zeros((channels, num_sample, max_duration, steps))
    num_points = num_sample * num_sample_perbin
    for d in range(max_duration):
        for s in range(steps):
            if s + d > steps - 1:
                continue  # runs past the end: left at zero
            length = d + 1
            region_start = s - ratio * length
            region_end = s + d + ratio * length
            for n in range(num_sample):
                total = np.zeros(channels)
                for k in range(num_sample_perbin):
                    i = n * num_sample_perbin + k
                    x = region_start + (region_end - region_start) * i / (num_points - 1)
                    left = math.floor(x)
                    frac = x - left
                    for tap, weight in ((left, 1 - frac), (left + 1, frac)):
                        if 0 <= tap < steps:  # zero outside the sequence
                            total += weight * features[:, tap]
                out[:, n, d, s] = total / num_sample_perbin
    return out


@pytest.mark.parametrize(
    "steps, num_sample, per_bin, ratio, max_duration",
    [(12, 4, 3, 0.5, None), (9, 5, 2, 0.25, 6), (7, 3, 1, 0.0, None), (10, 32, 3, 0.5, None)],
)
def test_bm_layer_matches_explicit_interpolation(steps, num_sample, per_bin, ratio, max_duration):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 3, steps))  # (B, C, T)
    layer = BoundaryMatchingLayer(steps, num_sample, per_bin, ratio, max_duration)
    sampled = layer(torch.from_numpy(features)).numpy()  # weights are float32, features float64
    num_durations = max_duration or steps
    assert sampled.shape == (2, 3, num_sample, num_durations, steps)
    for b in range(2):
        expected = sample_proposals_by_loops(features[b], num_sample, per_bin, ratio, num_durations)
        np.testing.assert_allclose(sampled[b], expected, rtol=1e-6, atol=1e-6)


def test_bm_layer_hand_cases():
    features = torch.tensor([[[10.0, 20.0, 30.0, 40.0]]])  # (1, 1, 4)
    # no context, 2 bins of 1 point: proposal (d=1, s=1) covers steps 1..2 -> samples at 1 and 2
    no_context = BoundaryMatchingLayer(4, num_sample=2, num_sample_perbin=1, prop_boundary_ratio=0.0)
    assert no_context(features)[0, 0, :, 1, 1].tolist() == [20.0, 30.0]
    # half-length context: proposal (d=0, s=0) samples at -0.5 and 0.5;
    # -0.5 = 0.5 * (zero outside) + 0.5 * 10, 0.5 = 0.5 * 10 + 0.5 * 20
    with_context = BoundaryMatchingLayer(4, num_sample=2, num_sample_perbin=1, prop_boundary_ratio=0.5)
    assert with_context(features)[0, 0, :, 0, 0].tolist() == [5.0, 15.0]
    # proposal (d=3, s=1) runs past the end: zero
    assert with_context(features)[0, 0, :, 3, 1].tolist() == [0.0, 0.0]


def test_bm_weights_are_a_non_persistent_buffer_of_bins_summing_to_interpolation():
    layer = BoundaryMatchingLayer(8, num_sample=4, num_sample_perbin=3)
    assert "sample_weights" not in layer.state_dict()
    assert dict(layer.named_buffers())["sample_weights"].shape == (8, 4 * 8 * 8)
    weights = boundary_matching_weights(8, 4, 3, 0.0)  # (T, N, D, T), no context: all points inside
    column_sums = weights.sum(dim=0)  # (N, D, T)
    valid = torch.from_numpy(bm_valid_mask(8))
    torch.testing.assert_close(column_sums[:, valid], torch.ones_like(column_sums[:, valid]))
    assert (column_sums[:, ~valid] == 0).all()


def test_bm_cell_convention():
    assert BM_MAP_AXES == ("duration", "start")
    start_step, end_step = bm_cell_steps(5)
    assert start_step[2, 1] == 1 and end_step[2, 1] == 4  # 3 steps: 1, 2, 3
    valid = bm_valid_mask(5, max_duration=3)
    assert valid.shape == (3, 5)
    assert valid[2].tolist() == [True, True, True, False, False]
    assert valid[0].all()


def test_bm_layer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_duration"):
        BoundaryMatchingLayer(4, max_duration=5)
    with pytest.raises(ValueError, match="at least 2 points"):
        BoundaryMatchingLayer(4, num_sample=1, num_sample_perbin=1)
    with pytest.raises(ValueError, match="T=4"):
        BoundaryMatchingLayer(4, num_sample=2)(torch.zeros(1, 3, 5))


@pytest.mark.parametrize("steps, num_sample, per_bin, ratio, max_duration", [(12, 4, 3, 0.5, None), (9, 5, 2, 0.25, 6)])
def test_bm_entries_are_the_non_zero_weights_once_each(steps, num_sample, per_bin, ratio, max_duration):
    dense = boundary_matching_weights(steps, num_sample, per_bin, ratio, max_duration)  # (T, N, D, T)
    feature_step, bin_index, duration, start, weight = boundary_matching_entries(
        steps, num_sample, per_bin, ratio, max_duration
    )
    assert (weight != 0).all()
    assert torch.equal(torch.stack(torch.nonzero(dense, as_tuple=True)),
                       torch.stack([feature_step, bin_index, duration, start]))  # row-major order, no repeats
    assert torch.equal(dense[feature_step, bin_index, duration, start], weight)


def test_bm_conv_sparse_matrices_are_the_weights_reshaped():
    conv = BoundaryMatchingConv(10, num_sample=4, num_sample_perbin=3, max_duration=7)
    dense = boundary_matching_weights(10, 4, 3, 0.5, 7)  # (T, N, D, T)
    sampling, transposed = conv.sparse_matrices(torch.float64)
    # (T, N, D, T) -> (D, T, T, N) -> (D*T, T*N): row d * T + s, column t * N + n
    expected = dense.permute(2, 3, 0, 1).reshape(7 * 10, 10 * 4).double()
    torch.testing.assert_close(sampling.to_dense(), expected, rtol=0, atol=0)
    torch.testing.assert_close(transposed.to_dense(), expected.t(), rtol=0, atol=0)
    assert not any(name.startswith(("sampling", "transposed")) for name in conv.state_dict())


def conv_over_sampled_map(features, weight, bias, layer):
    """Reference: the BM layer's sampled map, then the 3D convolution over its samples."""
    sampled = layer(features)  # (B, C, N, D, T)
    num_sample = sampled.shape[2]
    return F.conv3d(sampled, weight, bias, stride=(num_sample, 1, 1)).squeeze(2)  # (B, O, D, T)


@pytest.mark.parametrize("steps, num_sample, per_bin, ratio, max_duration",
                         [(12, 4, 3, 0.5, None), (9, 5, 2, 0.25, 6), (7, 3, 1, 0.0, None), (10, 32, 3, 0.5, 10)])
def test_bm_conv_equals_conv3d_over_the_sampled_map(steps, num_sample, per_bin, ratio, max_duration):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, steps, dtype=torch.float64, generator=generator)  # (B, C, T)
    weight = torch.randn(6, 5, num_sample, 1, 1, dtype=torch.float64, generator=generator)  # (O, C, N, 1, 1)
    bias = torch.randn(6, dtype=torch.float64, generator=generator)
    conv = BoundaryMatchingConv(steps, num_sample, per_bin, ratio, max_duration).double()
    layer = BoundaryMatchingLayer(steps, num_sample, per_bin, ratio, max_duration).double()
    fast = conv(features, weight, bias)
    assert fast.shape == (2, 6, max_duration or steps, steps)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, conv_over_sampled_map(features, weight, bias, layer), rtol=1e-12, atol=1e-12)
    # without bias: the invalid cells (past the end of the sequence) are exactly zero
    unbiased = conv(features, weight, None)
    valid = torch.from_numpy(bm_valid_mask(steps, max_duration))
    assert (unbiased[:, :, ~valid] == 0).all()


def test_bm_conv_gradients_twice():
    """The hand-written backward (the transposed sparse product) and its own backward."""
    conv = BoundaryMatchingConv(6, num_sample=3, num_sample_perbin=2, max_duration=4).double()
    features = torch.randn(2, 2, 6, dtype=torch.float64, requires_grad=True)  # (B, C, T)
    weight = torch.randn(2, 2, 3, 1, 1, dtype=torch.float64, requires_grad=True)  # (O, C, N, 1, 1)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (features, weight, bias))
    assert torch.autograd.gradgradcheck(conv, (features, weight, bias))


def test_bm_conv_rejects_bad_shapes():
    conv = BoundaryMatchingConv(6, num_sample=2)
    with pytest.raises(ValueError, match="T=6"):
        conv(torch.zeros(1, 3, 5), torch.zeros(4, 3, 2, 1, 1), None)
    with pytest.raises(ValueError, match=r"N=2"):
        conv(torch.zeros(1, 3, 6), torch.zeros(4, 3, 5, 1, 1), None)
