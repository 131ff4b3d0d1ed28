"""From decoded frames to the model's input tensor, shared by finetune, extract and classify.

Frames arrive from `data.video.VideoReader` as uint8 RGB `(..., T, H, W, 3)`; the model
takes float `(B, 3, T, H, W)` normalised as `(x / 255 - mean) / std` per channel.

The statistics travel with the weights (`resolve_normalization`): the official TAdaConv
release trains and evaluates with mean 0.45 and std 0.225 on every channel (its
`DATA.MEAN` / `DATA.STD`), torchvision's ImageNet weights with ImageNet's statistics, and our
checkpoints record the statistics they were trained with (`model.input_mean` / `input_std`
of the config they hold). A checkpoint made before they were recorded was trained with
ImageNet's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TADACONV_MEAN = (0.45, 0.45, 0.45)  # the official release's DATA.MEAN / DATA.STD
TADACONV_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class Normalization:
    """Per-channel RGB statistics on the 0..1 scale, and where they came from (for the log)."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    source: str = "ImageNet statistics (default)"

    def describe(self) -> str:
        return f"mean {list(self.mean)} std {list(self.std)} ({self.source})"


IMAGENET = Normalization()
TADACONV = Normalization(TADACONV_MEAN, TADACONV_STD, "the official TAdaConv release's statistics")


def resolve_normalization(model_section: dict, weights_format: str = "", recorded: dict | None = None,
                          weights_name: str = "") -> Normalization:
    """The statistics a run normalises frames with.

    Args:
        model_section: the run's ``model`` config section; explicit ``input_mean`` / ``input_std`` win.
        weights_format: of the weights the model starts from: ``"official"``, ``"torchvision"``,
            ``"checkpoint"`` (ours) or ``""`` (random initialisation).
        recorded: for our checkpoints, the ``model`` section they hold.
        weights_name: for the log line.
    """
    if model_section.get("input_mean"):
        return Normalization(tuple(model_section["input_mean"]), tuple(model_section["input_std"]),
                             "model.input_mean / input_std")
    if weights_format == "official":
        return dataclasses.replace(TADACONV, source=f"the official TAdaConv release's statistics ({weights_name})")
    if weights_format == "torchvision":
        return Normalization(source=f"ImageNet statistics of torchvision weights ({weights_name})")
    if weights_format == "checkpoint":
        recorded = recorded or {}
        if recorded.get("input_mean"):
            return Normalization(tuple(recorded["input_mean"]), tuple(recorded["input_std"]),
                                 f"recorded in {weights_name}")
        return Normalization(source=f"ImageNet statistics ({weights_name} predates recorded statistics)")
    return IMAGENET


def clips_to_tensor(clips: np.ndarray | Tensor, normalization: Normalization = IMAGENET) -> Tensor:
    """uint8 clips `(B, T, H, W, 3)` -> normalised float32 `(B, 3, T, H, W)`."""
    clips = torch.as_tensor(clips)
    if clips.dim() != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be (B, T, H, W, 3) uint8, got {tuple(clips.shape)}")
    x = clips.permute(0, 4, 1, 2, 3).float().div_(255.0)  # (B, T, H, W, 3) -> (B, 3, T, H, W)
    mean = torch.tensor(normalization.mean, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(normalization.std, device=x.device).view(1, 3, 1, 1, 1)
    return x.sub_(mean).div_(std)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Square center crop of `(..., H, W, C)` frames (no-op when `size` is 0)."""
    if size <= 0:
        return frames
    height, width = frames.shape[-3:-1]
    if size > min(height, width):
        raise ValueError(f"crop {size} larger than the frames ({height}x{width})")
    top, left = (height - size) // 2, (width - size) // 2
    return frames[..., top:top + size, left:left + size, :]
