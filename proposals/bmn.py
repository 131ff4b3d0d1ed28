"""The Boundary-Matching Network (BMN, Lin et al., ICCV 2019).

Three parts on a sequence of ``T`` feature steps:

- base module: two temporal convolutions (kernel 3, 4 groups) shared by both heads;
- temporal evaluation module (TEM): per-step start and end probabilities;
- proposal evaluation module (PEM): the boundary-matching layer samples every
  proposal ``(duration d, start s)``, a 3D convolution collapses the sample axis,
  2D convolutions over the BM map give two confidence maps, regression (trained
  on the IoU with the ground truth) and classification (IoU > 0.9 or not).

Output maps follow ``proposals.bm_map.BM_MAP_AXES``: ``map[d, s]`` is the
proposal starting at step ``s`` that covers ``d + 1`` steps.

The BM layer and the 3D convolution after it are both linear, and two formulations
compute them (same parameters, same outputs up to rounding):

- ``"reordered"`` (the default): ``proposals.bm_layer.BoundaryMatchingConv`` projects every
  feature step with the 3D kernel first, then contracts with the sparse sampling weights;
  the ``(B, H1, N, D, T)`` sampled map never exists (on CPU at T = 100, batch 8: a train step
  in 0.10-0.15x the time, 0.5 GiB instead of 10 GiB of peak memory; bench/bmn.py);
- ``"materialised"``: the original order, the sampled map from ``BoundaryMatchingLayer``
  then ``nn.Conv3d``; kept as the plainly written reference the tests compare with.
"""

import torch
from torch import nn

from proposals.bm_layer import BoundaryMatchingConv, BoundaryMatchingLayer
from proposals.bm_map import CLASSIFICATION_MAP, REGRESSION_MAP

__all__ = ["BMN", "CLASSIFICATION_MAP", "FORMULATIONS", "REGRESSION_MAP"]

# how the BM layer and the 3D convolution are computed (module docstring)
FORMULATIONS = ("reordered", "materialised")


class BMN(nn.Module):
    """Boundary-Matching Network.

    Args:
        temporal_scale: T, the number of feature steps per input sequence.
        feature_dim: channels of the input features (divisible by 4, the base
            module's conv groups).
        hidden_1d: channels of the 1D (temporal) convolutions; 256 in BMN.
        hidden_2d: channels of the 2D convolutions over the BM map; 128 in BMN.
        hidden_3d: channels of the 3D convolution that collapses the samples; 512 in BMN.
        num_sample: bins sampled per proposal by the BM layer; 32 in BMN.
        num_sample_perbin: interpolated points per bin; 3 in BMN.
        prop_boundary_ratio: context on each side of a proposal, as a fraction of
            its length; 0.5 in BMN.
        max_duration: D, the longest proposal in steps (``None``: T, as in BMN).
        formulation: ``"reordered"`` or ``"materialised"`` (module docstring). Not part of
            the checkpoint's ``model_args``: both have the same ``state_dict``, so a checkpoint
            of one loads into the other.

    ``forward(features (B, feature_dim, T))`` returns
    ``(confidence_map (B, 2, D, T), start (B, T), end (B, T))``, all probabilities
    in (0, 1); channel ``REGRESSION_MAP`` / ``CLASSIFICATION_MAP`` of the map.
    """

    def __init__(
        self,
        temporal_scale: int,
        feature_dim: int,
        hidden_1d: int = 256,
        hidden_2d: int = 128,
        hidden_3d: int = 512,
        num_sample: int = 32,
        num_sample_perbin: int = 3,
        prop_boundary_ratio: float = 0.5,
        max_duration: int | None = None,
        formulation: str = "reordered",
    ):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"BMN: formulation must be one of {FORMULATIONS}, got {formulation!r}")
        groups = 4
        for name, value in (("feature_dim", feature_dim), ("hidden_1d", hidden_1d)):
            if value < groups or value % groups:
                raise ValueError(f"BMN: {name} must be a positive multiple of {groups} (conv groups), got {value}")
        for name, value in (("hidden_2d", hidden_2d), ("hidden_3d", hidden_3d)):
            if value < 1:
                raise ValueError(f"BMN: {name} must be positive, got {value}")
        self.temporal_scale = temporal_scale
        self.feature_dim = feature_dim
        self.formulation = formulation

        self.base = nn.Sequential(
            nn.Conv1d(feature_dim, hidden_1d, kernel_size=3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden_1d, hidden_1d, kernel_size=3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
        )
        self.start_head = _boundary_head(hidden_1d, groups)
        self.end_head = _boundary_head(hidden_1d, groups)

        self.proposal_1d = nn.Sequential(
            nn.Conv1d(hidden_1d, hidden_1d, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        # the sampling: only the module of the chosen formulation is built (each holds its
        # own constant buffers; the materialised one is N*D*T*T floats, 1 GiB at T = D = 200)
        sampling_args = (temporal_scale, num_sample, num_sample_perbin, prop_boundary_ratio, max_duration)
        if formulation == "reordered":
            self.bm_conv = BoundaryMatchingConv(*sampling_args)
        else:
            self.bm_layer = BoundaryMatchingLayer(*sampling_args)
        self.proposal_3d = nn.Sequential(
            # kernel and stride span all the samples: (N, D, T) -> (1, D, T); the reordered
            # formulation uses its weight and bias without calling it
            nn.Conv3d(hidden_1d, hidden_3d, kernel_size=(num_sample, 1, 1), stride=(num_sample, 1, 1)),
            nn.ReLU(inplace=True),
        )
        self.proposal_2d = nn.Sequential(
            nn.Conv2d(hidden_3d, hidden_2d, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_2d, hidden_2d, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_2d, hidden_2d, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_2d, 2, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if features.dim() != 3 or features.shape[1:] != (self.feature_dim, self.temporal_scale):
            raise ValueError(
                f"BMN expects features (B, {self.feature_dim}, {self.temporal_scale}), "
                f"got shape {tuple(features.shape)}"
            )
        base = self.base(features)  # (B, C_in, T) -> (B, H1, T)
        start = self.start_head(base).squeeze(1)  # (B, 1, T) -> (B, T)
        end = self.end_head(base).squeeze(1)  # (B, 1, T) -> (B, T)

        proposal = self.proposal_1d(base)  # (B, H1, T)
        if self.formulation == "reordered":
            conv_3d = self.proposal_3d[0]
            # (B, H1, T) -> (B, H3, D, T), channels-last memory. Not nn.ReLU(inplace=True): the
            # result is a permuted view, and autograd would copy the whole map around an in-place op
            proposal = torch.relu(self.bm_conv(proposal, conv_3d.weight, conv_3d.bias))
        else:
            proposal = self.bm_layer(proposal)  # (B, H1, T) -> (B, H1, N, D, T)
            proposal = self.proposal_3d(proposal).squeeze(2)  # (B, H3, 1, D, T) -> (B, H3, D, T)
        confidence_map = self.proposal_2d(proposal)  # (B, H3, D, T) -> (B, 2, D, T)
        return confidence_map, start, end


def _boundary_head(hidden_1d: int, groups: int) -> nn.Sequential:
    """TEM head: (B, H1, T) -> (B, 1, T) probabilities."""
    return nn.Sequential(
        nn.Conv1d(hidden_1d, hidden_1d, kernel_size=3, padding=1, groups=groups),
        nn.ReLU(inplace=True),
        nn.Conv1d(hidden_1d, 1, kernel_size=1),
        nn.Sigmoid(),
    )
