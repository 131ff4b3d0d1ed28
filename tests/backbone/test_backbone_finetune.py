import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from testkit import REPO_ROOT, decode_index, index_frames, tiny_config

from backbone import build, finetune
from backbone.clip_dataset import ClipSampling, SegmentClips, augment, sample_clip_centers
from backbone.clips import clips_to_tensor
from data.clip_geometry import ClipGeometry
from data.mp4 import write_mp4
from runstate.paths import RunPaths


def test_lr_schedule_by_hand():
    # 2 warm-up steps then half-cosine over 4 steps
    factors = [finetune.lr_factor(s, 2, 6) for s in range(7)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0) and factors[4] == pytest.approx(0.5) and factors[6] == pytest.approx(0)
    assert factors[3] == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))


def test_clip_times_and_centers():
    # 4 frames, 8 apart, at 30 fps: offsets -12, -4, 4, 12 frames around the centre
    assert np.allclose(ClipGeometry(4, 8, 30.0).frame_times(np.array([1.0])), [[0.6, 1.0 - 4 / 30, 1.0 + 4 / 30, 1.4]])
    assert ClipGeometry(4, 8, 30.0).frame_times(np.array([0.1]))[0, 0] == 0.0  # clamped at the start
    starts, ends = np.array([0.0, 5.0]), np.array([4.0, 5.5])
    assert np.allclose(sample_clip_centers(starts, ends, 1.0, None), [2.0, 5.25])
    centers = sample_clip_centers(np.repeat(starts, 500), np.repeat(ends, 500), 1.0, np.random.default_rng(0))
    long, short = centers[:500], centers[500:]
    assert long.min() >= 0.5 and long.max() <= 3.5 and long.max() - long.min() > 2.5  # clip inside segment
    assert short.min() >= 5.0 and short.max() <= 5.5  # segment inside clip


def test_augment_is_deterministic_and_flips_consistently():
    frames = np.random.default_rng(0).integers(0, 255, size=(4, 40, 60, 3), dtype=np.uint8)
    a = augment(frames, np.random.default_rng(1), (40, 48), 32, flip=False)
    b = augment(frames, np.random.default_rng(1), (40, 48), 32, flip=False)
    assert a.shape == (4, 32, 32, 3) and a.dtype == torch.uint8 and torch.equal(a, b)
    # no scaling (short side 40 = native) and crop = whole height: a plain crop of the input
    c = augment(frames, np.random.default_rng(2), (40, 40), 40, flip=False).numpy()
    offsets = [i for i in range(21) if np.array_equal(frames[:, :, i:i + 40], c)]
    assert len(offsets) == 1
    flipped = [augment(frames, np.random.default_rng(s), (40, 40), 40, flip=True).numpy() for s in range(8)]
    assert any(np.array_equal(f[:, :, ::-1], frames[:, :, offsets[0]:offsets[0] + 40]) or
               not np.array_equal(f, c) for f in flipped)


def test_clips_to_tensor_layout():
    clips = np.zeros((2, 4, 8, 8, 3), np.uint8)
    clips[1, 2, :, :, 0] = 255
    x = clips_to_tensor(clips)
    assert x.shape == (2, 3, 4, 8, 8)
    assert x[1, 0, 2, 0, 0] == pytest.approx((1 - 0.485) / 0.229)
    assert x[1, 0, 1, 0, 0] == pytest.approx(-0.485 / 0.229)


# The first training steps of the tiny test model (width 4) on one thread, from clips as the loader
# gives them; in a child process, since the failure this guards against is heap corruption.
_TINY_TRAINING_STEPS = """
import sys
import numpy as np
import torch
sys.path.insert(0, sys.argv[1])
from backbone.build import build_model
from backbone.clips import clips_to_tensor
torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model(sys.argv[2], 10, {"verb": 5}, width=4, num_frames=4).train()
clips = np.random.default_rng(0).integers(0, 256, (8, 4, 32, 32, 3), dtype=np.uint8)
for _ in range(20):
    logits, _ = model(clips_to_tensor(clips))
    logits["verb"].logsumexp(-1).mean().backward()
print("ok")
"""


@pytest.mark.parametrize("name", ["tsn", "tada2d"])
def test_a_narrow_model_trains_on_one_thread_from_loader_clips(name):
    """oneDNN 3.12 corrupts the heap in the backward of a channels-last 1x1 stride-2 convolution with
    2 to 7 input channels (this AVX2 machine); loader clips reach the model channels-last, so the
    shortcut's conv (``tada2d._Projection``) must not take that kernel."""
    result = subprocess.run([sys.executable, "-c", _TINY_TRAINING_STEPS, str(REPO_ROOT), name], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_validation_clips_decode_the_right_frames(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", index_frames(90, 64, 96), 30)
    segments = pd.DataFrame({"path": [str(path)], "start": [1.0], "end": [2.0], "label": [3]})
    sampling = ClipSampling(num_frames=4, interval_frames=6, fps=30.0, train=False, decode_short_side=64,
                            crop_size=0)
    clip, labels = SegmentClips(segments, ["label"], sampling)[0]
    # centre 1.5 s = frame 45; offsets (-1.5, -0.5, 0.5, 1.5) * 6 frames
    assert decode_index(clip.numpy()).tolist() == [36, 42, 48, 54]
    assert labels.tolist() == [3]


def test_shuffled_clips_keep_one_decoder_open_and_read_the_right_frames(tmp_path):
    """Clips in shuffled order over several videos: each is the frames a fresh reader gives, and only
    the reader of the video read last holds a decoder (the others are released, see VideoReader)."""
    paths = [write_mp4(tmp_path / f"v{i}.mp4", index_frames(60 + 10 * i, 64, 96), 30) for i in range(4)]
    segments = pd.DataFrame({"path": [str(p) for p in paths for _ in range(3)],
                             "start": [0.2, 0.8, 1.4] * 4, "end": [0.6, 1.2, 1.8] * 4, "label": list(range(12))})
    sampling = ClipSampling(num_frames=4, interval_frames=2, fps=30.0, train=False, decode_short_side=64,
                            crop_size=0)
    clips = SegmentClips(segments, ["label"], sampling)
    for index in np.random.default_rng(0).permutation(len(clips)).tolist() * 2:
        clip, labels = clips[index]
        center_frame = round((segments.start[index] + segments.end[index]) / 2 * 30)
        assert decode_index(clip.numpy()).tolist() == [center_frame - 3, center_frame - 1, center_frame + 1,
                                                       center_frame + 3]
        assert labels.tolist() == [index]
        open_decoders = [path for path, reader in clips._readers.items() if reader._reader is not None]
        assert open_decoders == [segments.path[index]]
    assert sorted(clips._readers) == sorted(str(p) for p in paths)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("optimizer_class, hyperparameters", [
    (torch.optim.AdamW, dict(lr=3e-3, weight_decay=0.05)),  # fine-tuning (finetune.optimizer=adamw)
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),  # fine-tuning (sgd)
    (torch.optim.Adam, dict(lr=1e-3, weight_decay=1e-4)),  # BMN (proposals.stage)
])
def test_the_stages_foreach_updates_are_the_per_tensor_loop_bit_for_bit(optimizer_class, hyperparameters):
    """The stages build their optimizers with ``foreach=True``; torch's per-tensor loop (its CPU
    default) is the reference, on the demo model's parameters and the same random gradients."""
    def parameters():
        torch.manual_seed(0)
        return list(build.build_model("tada2d", depth=10, heads={"verb": 6, "noun": 7}, width=16).parameters())

    fast, loop = parameters(), parameters()
    fast_optimizer = optimizer_class(fast, foreach=True, **hyperparameters)
    loop_optimizer = optimizer_class(loop, foreach=False, **hyperparameters)
    for step in range(4):
        generator = torch.Generator().manual_seed(step)
        for fast_param, loop_param in zip(fast, loop):
            fast_param.grad = torch.randn(fast_param.shape, generator=generator)
            loop_param.grad = fast_param.grad.clone()
        fast_optimizer.step()
        loop_optimizer.step()
    assert not torch.equal(fast[0], parameters()[0])  # they moved
    assert all(torch.equal(fast_param, loop_param) for fast_param, loop_param in zip(fast, loop))


@pytest.mark.slow
def test_finetune_is_deterministic_and_resumes_exactly(tmp_path, synthetic_cache, monkeypatch):
    overrides = ("finetune.epochs=2", "finetune.warmup_epochs=1")
    cfg_a = tiny_config(tmp_path / "a", synthetic_cache, *overrides)
    finetune.run_finetune(cfg_a, RunPaths.from_config(cfg_a))
    cfg_b = tiny_config(tmp_path / "b", synthetic_cache, *overrides)
    finetune.run_finetune(cfg_b, RunPaths.from_config(cfg_b))
    a, b = _state(tmp_path / "a/backbone/last.pt"), _state(tmp_path / "b/backbone/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # interrupted after the first epoch, then rerun: identical to the uninterrupted run
    cfg_c = tiny_config(tmp_path / "c", synthetic_cache, *overrides)
    real_train = finetune._train_one_epoch

    def crash_in_second_epoch(*args):
        if args[-2] == 1:
            raise KeyboardInterrupt
        return real_train(*args)

    monkeypatch.setattr(finetune, "_train_one_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        finetune.run_finetune(cfg_c, RunPaths.from_config(cfg_c))
    assert torch.load(tmp_path / "c/backbone/last.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(finetune, "_train_one_epoch", real_train)
    finetune.run_finetune(cfg_c, RunPaths.from_config(cfg_c))
    c = _state(tmp_path / "c/backbone/last.pt")
    assert all(torch.equal(a[k], c[k]) for k in a)
    optimizer_groups = torch.load(tmp_path / "c/backbone/last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert all(group["foreach"] is True for group in optimizer_groups)  # the update run_finetune builds
    lines = (tmp_path / "c/backbone/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert lines == (tmp_path / "a/backbone/metrics.jsonl").read_text().splitlines() or \
        [json.loads(x)["val"] for x in lines] == [json.loads(x)["val"] for x in
                                                  (tmp_path / "a/backbone/metrics.jsonl").read_text().splitlines()]
    # complete: a third call does nothing
    stamp_time = (tmp_path / "c/backbone/last.pt").stat().st_mtime_ns
    finetune.run_finetune(cfg_c, RunPaths.from_config(cfg_c))
    assert (tmp_path / "c/backbone/last.pt").stat().st_mtime_ns == stamp_time
    model, classes, _ = build.load_classifier(tmp_path / "c/backbone/checkpoint.pt")
    assert set(classes) == {"verb", "noun"} and not model.training


@pytest.mark.slow
def test_finetune_under_torchrun_two_processes(tmp_path, synthetic_cache):
    tiny_config(tmp_path / "x", synthetic_cache)  # validates; the set is generated by the run itself
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
         str(REPO_ROOT / "pipeline.py"), "--config", str(REPO_ROOT / "configs/synthetic-tiny.yaml"),
         "--stage", "finetune", f"runtime.work_dir={tmp_path / 'ddp'}", f"runtime.cache_dir={synthetic_cache}"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(x) for x in (tmp_path / "ddp/backbone/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]  # one writer: rank 0
    assert (tmp_path / "ddp/backbone/checkpoint.pt").is_file()
