"""From decoded frames to the model's input tensor, shared by finetune, extract and classify.

Frames arrive from `data.video.VideoReader` as uint8 RGB `(..., T, H, W, 3)`; the model
takes float `(B, 3, T, H, W)` normalised with the ImageNet mean and std (the statistics
of the torchvision and official TAdaConv weights).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def clips_to_tensor(clips: np.ndarray | Tensor) -> Tensor:
    """uint8 clips `(B, T, H, W, 3)` -> normalised float32 `(B, 3, T, H, W)`."""
    clips = torch.as_tensor(clips)
    if clips.dim() != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be (B, T, H, W, 3) uint8, got {tuple(clips.shape)}")
    x = clips.permute(0, 4, 1, 2, 3).float().div_(255.0)  # (B, T, H, W, 3) -> (B, 3, T, H, W)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1, 1)
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
