"""Weight loading: our checkpoints, torchvision ResNet state dicts, official TAdaConv checkpoints."""

import pytest
import torch
from testkit import official_checkpoint

from backbone.build import build_model
from backbone.weights import (
    FORMAT_VERSION,
    CheckpointError,
    ShapeMismatch,
    detect_format,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)


def tiny(name="tada2d", depth=50, heads=None, seed=0):
    """A tiny model whose every tensor is distinct random data (so a misplaced tensor is caught)."""
    torch.manual_seed(seed)
    model = build_model(name, depth=depth, heads=heads or {"label": 5}, width=8, num_frames=4)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                tensor.fill_(seed + 7)
            else:
                tensor.copy_(torch.rand(tensor.shape) + 0.5)
    return model


def assert_same_tensors(model, source_model, keys):
    ours, theirs = model.state_dict(), source_model.state_dict()
    for key in keys:
        assert torch.equal(ours[key], theirs[key]), key


def is_tada_only(key):
    return ".route." in key or ".pool_bn." in key


# ---- our checkpoint -----------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    source = tiny(seed=1)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    for parameter in source.parameters():  # one step, so that the optimizer has momentum buffers
        parameter.grad = torch.full_like(parameter, 0.01)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    config = {"backbone": {"name": "tada2d", "depth": 50}, "lr": 0.1, "stages": [1, 2], "note": None}
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, source, config, {"label": list("abcde")}, epoch=3, optimizer=optimizer,
                    scheduler=scheduler)
    assert not (tmp_path / "run" / "checkpoint.pt.tmp").exists()

    checkpoint = read_checkpoint(path)
    assert checkpoint["format_version"] == FORMAT_VERSION
    assert checkpoint["config"] == config
    assert checkpoint["classes"] == {"label": ["a", "b", "c", "d", "e"]}
    assert checkpoint["epoch"] == 3
    assert checkpoint["scheduler"]["step_size"] == 2
    restored_optimizer = torch.optim.SGD(tiny(seed=2).parameters(), lr=0.5, momentum=0.9)
    restored_optimizer.load_state_dict(checkpoint["optimizer"])
    assert restored_optimizer.param_groups[0]["lr"] == 0.1

    target = tiny(seed=2)
    report = load_checkpoint(path, target, strict=True)
    assert report.source_format == "checkpoint"
    assert report.missing == report.unexpected == report.mismatched == []
    assert_same_tensors(target, source, source.state_dict())


def test_checkpoint_rejects_non_plain_config_and_bad_files(tmp_path):
    model = tiny()
    with pytest.raises(TypeError, match=r"config\.path: PosixPath"):
        save_checkpoint(tmp_path / "c.pt", model, {"path": tmp_path}, {"label": ["a"]}, epoch=0)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pt")
    old = tmp_path / "old.pt"
    torch.save({"format_version": 0, "model": {}}, old)
    with pytest.raises(CheckpointError, match="format_version 0"):
        load_checkpoint(old, model)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: cannot be read"):
        load_checkpoint(garbage, model)
    with pytest.raises(CheckpointError, match="unrecognised weights"):
        detect_format({"weights": torch.zeros(1)})


# ---- torchvision ResNet ---------------------------------------------------------------------------


def torchvision_state_dict(r2d, drop_layer1_downsample):
    """A torchvision-style ResNet state dict made from our R2D: same names, ``fc`` instead of heads."""
    state = {key: value.clone() for key, value in r2d.state_dict().items() if not key.startswith("heads.")}
    if drop_layer1_downsample:  # torchvision's ResNet-18/34 layer1.0 keeps its shape: no downsample
        state = {key: value for key, value in state.items() if not key.startswith("layer1.0.downsample.")}
    state["fc.weight"] = torch.randn(1000, r2d.feature_dim)
    state["fc.bias"] = torch.randn(1000)
    return state


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_loads_kernels_one_to_one(tmp_path, depth):
    r2d = tiny("tsn", depth=depth, seed=3)
    state = torchvision_state_dict(r2d, drop_layer1_downsample=depth < 50)
    path = tmp_path / "resnet.pth"
    torch.save(state, path)
    target = tiny("tada2d", depth=depth, seed=4)
    before = {key: value.clone() for key, value in target.state_dict().items()}

    report = load_checkpoint(path, target)

    assert report.source_format == "torchvision"
    assert report.unexpected == ["fc.weight", "fc.bias"]
    assert report.mismatched == []
    loaded = [key for key in state if not key.startswith("fc.")]
    assert sorted(report.loaded) == sorted(loaded)
    assert_same_tensors(target, r2d, loaded)
    expected_missing = [
        key for key in target.state_dict()
        if not key.endswith("num_batches_tracked")
        and (is_tada_only(key) or key.startswith("heads.")
             or (depth < 50 and key.startswith("layer1.0.downsample.")))
    ]
    assert report.missing == expected_missing
    for key in expected_missing:  # kept their values
        assert torch.equal(target.state_dict()[key], before[key]), key


# ---- official TAdaConv release ------------------------------------------------------------------

@pytest.mark.parametrize("heads", [{"label": 5}, {"verb": 4, "noun": 6}])
def test_official_checkpoint_lands_every_tensor(tmp_path, heads):
    source = tiny("tada2d", depth=50, heads=heads, seed=5)
    checkpoint = official_checkpoint(source)
    state = checkpoint["model_state"]
    assert state["backbone.conv2.res_1.conv_branch.b.weight"].shape == (1, 1, 8, 8, 3, 3)
    assert state["backbone.conv2.res_1.conv_branch.b_rf.a.weight"].shape == (2, 8, 3, 1, 1)
    state["backbone.conv5.nonlocal.theta.weight"] = torch.zeros(3)  # no counterpart in our model
    path = tmp_path / "tada2d_k400.pyth"
    torch.save(checkpoint, path)
    target = tiny("tada2d", depth=50, heads=heads, seed=6)

    report = load_checkpoint(path, target)

    assert report.source_format == "official"
    assert report.unexpected == ["backbone.conv5.nonlocal.theta.weight"]
    assert report.missing == [] and report.mismatched == []
    assert_same_tensors(target, source, source.state_dict())
    # Reshaped, not scrambled: the TAdaConv weight is the official one without its leading axes.
    official_kernel = state["backbone.conv2.res_1.conv_branch.b.weight"]
    assert torch.equal(target.layer1[0].conv2.weight, official_kernel[0, 0])


def test_official_checkpoint_into_r2d_reports_the_tada_parts():
    source = tiny("tada2d", depth=50, seed=7)
    target = tiny("tsn", depth=50, seed=8)
    report = load_weights(target, official_checkpoint(source))
    assert report.missing == []
    assert report.unexpected and all("b_rf." in key or "b_avgpool_bn." in key for key in report.unexpected)
    assert_same_tensors(target, source, target.state_dict())


# ---- shape mismatch -----------------------------------------------------------------------------


@pytest.mark.parametrize("make_source", ["checkpoint", "official"])
def test_head_of_another_size_is_skipped_and_reported(make_source):
    source = tiny("tada2d", depth=50, heads={"label": 400}, seed=9)
    target = tiny("tada2d", depth=50, heads={"label": 10}, seed=10)
    head_before = target.heads["label"].weight.clone()
    if make_source == "checkpoint":
        loaded = {"model": source.state_dict(), "config": {}, "classes": {}, "epoch": 0, "optimizer": None,
                  "scheduler": None, "format_version": FORMAT_VERSION}
        weight_key, bias_key = "heads.label.weight", "heads.label.bias"
    else:
        loaded = official_checkpoint(source)
        weight_key, bias_key = "head.out.weight", "head.out.bias"

    report = load_weights(target, loaded)

    assert report.mismatched == [
        ShapeMismatch(weight_key, "heads.label.weight", (400, 256), (10, 256)),
        ShapeMismatch(bias_key, "heads.label.bias", (400,), (10,)),
    ]
    assert "model shape [10, 256] (skipped)" in report.summary()
    assert report.missing == ["heads.label.weight", "heads.label.bias"]
    assert torch.equal(target.heads["label"].weight, head_before)
    assert_same_tensors(target, source, [key for key in source.state_dict() if not key.startswith("heads.")])
    with pytest.raises(CheckpointError, match="strict load failed"):
        load_weights(tiny("tada2d", depth=50, heads={"label": 10}), loaded, strict=True)


def test_ddp_module_prefix_is_stripped():
    source = tiny("tsn", depth=18, seed=11)
    state = {"module." + key: value for key, value in source.state_dict().items()}
    target = tiny("tsn", depth=18, seed=12)
    report = load_weights(target, state, strict=True)
    assert report.source_format == "torchvision"
    assert_same_tensors(target, source, source.state_dict())


def test_two_head_official_file_into_one_head_model_leaves_the_head_alone():
    source = tiny("tada2d", depth=50, heads={"verb": 4, "noun": 6}, seed=13)
    target = tiny("tada2d", depth=50, heads={"label": 4}, seed=14)
    report = load_weights(target, official_checkpoint(source))
    assert report.unexpected == ["head.linear1.weight", "head.linear1.bias",
                                 "head.linear2.weight", "head.linear2.bias"]
    assert report.missing == ["heads.label.weight", "heads.label.bias"]


# ---- normalisation travels with the weights -----------------------------------------------------


def test_statistics_follow_the_weights(tmp_path):
    from backbone.build import weights_normalization
    from backbone.clips import IMAGENET_MEAN, TADACONV_MEAN, TADACONV_STD, resolve_normalization

    auto = {"input_mean": [], "input_std": []}
    assert resolve_normalization(auto).mean == IMAGENET_MEAN  # random weights: ImageNet's
    official = resolve_normalization(auto, "official", weights_name="k400.pyth")
    assert (official.mean, official.std) == (TADACONV_MEAN, TADACONV_STD) and "k400.pyth" in official.source
    assert resolve_normalization(auto, "torchvision").mean == IMAGENET_MEAN
    explicit = {"input_mean": [0.1, 0.2, 0.3], "input_std": [1.0, 1.0, 1.0]}
    assert resolve_normalization(explicit, "official").mean == (0.1, 0.2, 0.3)  # the config wins
    # our checkpoint: what it recorded; one from before statistics were recorded: ImageNet's
    path = tmp_path / "ours.pt"
    section = {"input_mean": [0.5, 0.4, 0.3], "input_std": [0.2, 0.2, 0.2]}
    save_checkpoint(path, tiny(), {"model": section}, {"label": list("abcde")}, epoch=1)
    assert weights_normalization(auto, path, "checkpoint").mean == (0.5, 0.4, 0.3)
    save_checkpoint(path, tiny(), {"model": {}}, {"label": list("abcde")}, epoch=1)
    assert weights_normalization(auto, path, "checkpoint").mean == IMAGENET_MEAN
