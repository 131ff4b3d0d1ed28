import pytest
import torch

from proposals.bmn import BMN, FORMULATIONS


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_bmn_output_shapes_and_ranges(formulation):
    torch.manual_seed(0)
    model = BMN(temporal_scale=10, feature_dim=8, hidden_1d=8, hidden_2d=4, hidden_3d=6, num_sample=4,
                formulation=formulation)
    confidence_map, start, end = model(torch.randn(3, 8, 10))
    assert confidence_map.shape == (3, 2, 10, 10)
    assert start.shape == (3, 10) and end.shape == (3, 10)
    for output in (confidence_map, start, end):
        assert ((output > 0) & (output < 1)).all()


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_bmn_with_max_duration_and_gradients(formulation):
    model = BMN(temporal_scale=10, feature_dim=8, hidden_1d=8, hidden_2d=4, hidden_3d=6, num_sample=4, max_duration=4,
                formulation=formulation)
    features = torch.randn(2, 8, 10, requires_grad=True)
    confidence_map, start, end = model(features)
    assert confidence_map.shape == (2, 2, 4, 10)
    (confidence_map.sum() + start.sum() + end.sum()).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_bmn_sees_only_its_own_sequence(formulation):
    """Batch items are independent (the BM products must not mix them)."""
    torch.manual_seed(1)
    model = BMN(temporal_scale=6, feature_dim=4, hidden_1d=4, hidden_2d=4, hidden_3d=4, num_sample=2,
                formulation=formulation).eval()
    features = torch.randn(2, 4, 6)
    together = model(features)
    alone = model(features[1:])
    for batched, single in zip(together, alone):
        torch.testing.assert_close(batched[1:], single)


def test_bmn_rejects_bad_input():
    with pytest.raises(ValueError, match="feature_dim"):
        BMN(temporal_scale=6, feature_dim=6)
    with pytest.raises(ValueError, match="formulation"):
        BMN(temporal_scale=6, feature_dim=4, formulation="dense")
    model = BMN(temporal_scale=6, feature_dim=4, hidden_1d=4, hidden_2d=4, hidden_3d=4, num_sample=2)
    with pytest.raises(ValueError, match=r"\(B, 4, 6\)"):
        model(torch.randn(1, 4, 7))
