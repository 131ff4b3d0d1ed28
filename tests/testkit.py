"""Helpers shared by the tests (import as `from testkit import ...`; conftest.py holds the fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
EK100_DIR = SHARED_DIR / "data" / "ek100"


def index_frames(num_frames: int, height: int = 64, width: int = 96) -> list[np.ndarray]:
    """Frames whose index is written in binary as 8 black/white vertical bars (survives H.264)."""
    frames = []
    bar = width // 8
    for i in range(num_frames):
        frame = np.zeros((height, width, 3), np.uint8)
        for bit in range(8):
            if (i >> bit) & 1:
                frame[:, bit * bar:(bit + 1) * bar] = 255
        frames.append(frame)
    return frames


def decode_index(frames: np.ndarray) -> np.ndarray:
    """Inverse of `index_frames` for decoded frames (N, H, W, 3) of any size."""
    height, width = frames.shape[1:3]
    bar = width / 8
    bits = [(frames[:, height // 2, int((b + 0.5) * bar), 0] > 127).astype(np.int64) << b for b in range(8)]
    return np.sum(bits, axis=0)


def tiny_config(work_dir: Path, cache_dir: Path, *overrides: str):
    """The end-to-end test config (configs/synthetic-tiny.yaml) writing under `work_dir`."""
    from configs.load import load_config

    return load_config(REPO_ROOT / "configs" / "synthetic-tiny.yaml",
                       [f"runtime.work_dir={work_dir}", f"runtime.cache_dir={cache_dir}", *overrides])


# ---- the official TAdaConv release's checkpoint layout, written out independently of backbone.weights

BRANCH_TO_OFFICIAL = {  # written out independently of backbone.weights
    "conv1": "a", "bn1": "a_bn", "conv2": "b", "bn2": "b_bn", "conv3": "c", "bn3": "c_bn",
    "route.global_linear": "b_rf.g", "route.conv_reduce": "b_rf.a", "route.bn": "b_rf.bn",
    "route.conv_expand": "b_rf.b", "pool_bn": "b_avgpool_bn",
}


def official_key_and_shape(key, tensor, head_names):
    """Our key -> (official key, official tensor layout)."""
    parts = key.split(".")
    if parts[0] in ("conv1", "bn1"):
        official = "backbone.conv1." + ("a." if parts[0] == "conv1" else "a_bn.") + parts[1]
    elif parts[0] == "heads":
        module = "out" if len(head_names) == 1 else f"linear{head_names.index(parts[1]) + 1}"
        return f"head.{module}.{parts[2]}", tensor
    else:
        stage, block = int(parts[0][len("layer"):]) + 1, int(parts[1]) + 1
        prefix = f"backbone.conv{stage}.res_{block}."
        if parts[2] == "downsample":
            official = prefix + ("short_cut." if parts[3] == "0" else "short_cut_bn.") + parts[4]
        else:
            module = ".".join(parts[2:-1])
            official = prefix + "conv_branch." + BRANCH_TO_OFFICIAL[module] + "." + parts[-1]
    name = parts[-1]
    if official.endswith(".b.weight") and "b_rf" not in official:  # TAdaConv: [1, 1, Cout, Cin, kh, kw]
        tensor = tensor[None, None]
    elif tensor.dim() == 4:  # Conv3d with a 1 x k x k kernel
        tensor = tensor.unsqueeze(2)
    elif "b_rf.g" in official and name == "weight":  # 1x1x1 Conv3d
        tensor = tensor[:, :, None, None, None]
    elif tensor.dim() == 3:  # temporal Conv3d, [C_out, C_in, k, 1, 1]
        tensor = tensor[..., None, None]
    return official, tensor


def official_checkpoint(model):
    """Our model's weights in the layout the official release's checkpoint.py saves: ``model_state``
    with ``backbone.``/``head.`` keys and 3D/TAdaConv kernel shapes, ``cfg`` as YAML text, ``epoch``,
    ``optimizer_state``."""
    head_names = list(model.heads)
    state = dict(official_key_and_shape(key, value.clone(), head_names)
                 for key, value in model.state_dict().items())
    return {"epoch": 30, "model_state": state, "optimizer_state": {}, "cfg": "MODEL:\n  NAME: TAda2D\n"}
