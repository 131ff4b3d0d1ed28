"""TAda2D / R2D: structure, shapes, the official-style block reference, init equivalence, sizes."""

import copy

import pytest
import torch
import torch.nn.functional as F

from backbone.build import build_model
from backbone.tada2d import BasicBlock, Bottleneck, TAda2D, aggregate_relu_inference, temporal_avg_pool3

DTYPE = torch.float64


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Moves every parameter and BN statistic off its initial value (route and BN2 included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            if name.endswith("running_var"):
                tensor.copy_(noise.abs() + 0.5)
            elif name.endswith("conv_expand.weight"):
                tensor.copy_(0.2 * noise)
            else:
                tensor.add_(0.1 * noise)


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Like ``randomize_`` (route and BN2 included), but scaled so that a 16-block ResNet-50 stays finite.

    Kernels keep their initialisation up to a 10% jitter, BN statistics and affine terms move a little,
    each residual branch's last BN scales by about 0.2 (so activations do not grow block after block,
    and with them the calibration: alpha depends on the activations' scale), the route's last conv
    gets small weights (alpha near 1) and BN2 small random ones.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif name.endswith("conv_expand.weight"):
                tensor.copy_(0.01 * noise)
            elif ".pool_bn." in name and not name.endswith("running_mean"):
                tensor.copy_(0.3 * noise)
            elif name.endswith(".bn3.weight"):
                tensor.copy_(0.2 + 0.02 * noise)
            elif tensor.dim() >= 2:
                tensor.mul_(1 + 0.1 * noise)
            else:
                tensor.add_(0.1 * noise)


# ---- temporal pooling -------------------------------------------------------------------------


def test_temporal_avg_pool3_hand_worked():
    # One clip of 3 frames with values 3, 6, 9: zero padded, always divided by 3.
    frames = torch.tensor([3.0, 6.0, 9.0], dtype=DTYPE).view(3, 1, 1, 1)  # (B*T, C, H, W), B=1
    assert temporal_avg_pool3(frames, num_frames=3).flatten().tolist() == [3.0, 6.0, 5.0]


def test_temporal_avg_pool3_is_official_avg_pool3d_and_keeps_clips_apart():
    torch.manual_seed(0)
    clips = torch.randn(3, 4, 5, 6, 7, dtype=DTYPE)  # (B, C, T, H, W)
    official = F.avg_pool3d(clips, (3, 1, 1), stride=1, padding=(1, 0, 0))  # count_include_pad=True
    folded = clips.transpose(1, 2).reshape(15, 4, 6, 7)  # (B, C, T, H, W) -> (B*T, C, H, W)
    ours = temporal_avg_pool3(folded, num_frames=5).view(3, 5, 4, 6, 7).transpose(1, 2)
    torch.testing.assert_close(ours, official, rtol=1e-14, atol=1e-14)


def test_temporal_avg_pool3_backward_is_official_avg_pool3d_backward():
    torch.manual_seed(0)
    clips = torch.randn(2, 3, 4, 5, 3, dtype=DTYPE, requires_grad=True)  # (B, C, T, H, W)
    upstream = torch.randn(2, 3, 4, 5, 3, dtype=DTYPE)
    official = F.avg_pool3d(clips, (3, 1, 1), stride=1, padding=(1, 0, 0))
    (expected,) = torch.autograd.grad((official * upstream).sum(), clips)
    folded = clips.transpose(1, 2).reshape(8, 3, 5, 3)  # (B, C, T, H, W) -> (B*T, C, H, W)
    ours = temporal_avg_pool3(folded, num_frames=4).view(2, 4, 3, 5, 3).transpose(1, 2)
    (got,) = torch.autograd.grad((ours * upstream).sum(), clips)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)


def test_temporal_avg_pool3_gradcheck_and_double_backward():
    frames = torch.randn(6, 2, 2, 3, dtype=DTYPE, requires_grad=True)  # (B*T, C, H, W), B=2, T=3
    assert torch.autograd.gradcheck(lambda f: temporal_avg_pool3(f, 3), (frames,))
    assert torch.autograd.gradgradcheck(lambda f: temporal_avg_pool3(f, 3) ** 2, (frames,))


def test_temporal_avg_pool3_keeps_channels_last():
    frames = torch.randn(6, 4, 5, 5, dtype=DTYPE).contiguous(memory_format=torch.channels_last)
    pooled = temporal_avg_pool3(frames, num_frames=3)
    assert pooled.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(pooled, temporal_avg_pool3(frames.contiguous(), 3), rtol=0, atol=0)
    with pytest.raises(ValueError, match="whole number"):
        temporal_avg_pool3(frames, num_frames=4)


def test_aggregate_relu_inference_is_bn_plus_pooled_bn_then_relu():
    # Eq. 7 with eval-mode BNs, written plainly, against the one-filter rewrite.
    torch.manual_seed(1)
    bn, pool_bn = torch.nn.BatchNorm2d(3).to(DTYPE).eval(), torch.nn.BatchNorm2d(3).to(DTYPE).eval()
    randomize_(bn, seed=1)
    randomize_(pool_bn, seed=2)
    with torch.no_grad():
        pool_bn.weight[1] = 0.0  # a switched-off channel, and one whose BN1 scale is zero
        bn.weight[2] = 0.0
    out = torch.randn(8, 3, 4, 5, dtype=DTYPE)  # (B*T, C, H, W), B=2, T=4
    expected = torch.relu(bn(out) + pool_bn(temporal_avg_pool3(out, 4)))
    with torch.no_grad():
        got = aggregate_relu_inference(out, 4, bn, pool_bn)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    # Hand-worked: one channel, BN1 = identity, BN2 = 3 * p + 1, frames 1, 2, 3 (one clip):
    # pooled = [1, 2, 5/3], out = relu(y + 3 * pooled + 1) = [5, 9, 9].
    bn1, bn2 = torch.nn.BatchNorm2d(1, eps=0.0).eval(), torch.nn.BatchNorm2d(1, eps=0.0).eval()
    with torch.no_grad():
        bn2.weight.fill_(3.0)
        bn2.bias.fill_(1.0)
        frames = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)
        assert aggregate_relu_inference(frames, 3, bn1, bn2).flatten().tolist() == [5.0, 9.0, 9.0]


# ---- one block against the official formulation in (B, C, T, H, W) ------------------------------


def official_conv(x, conv):
    """An nn.Conv2d applied per frame, written as the official Conv3d with a 1 x k x k kernel."""
    return F.conv3d(x, conv.weight.unsqueeze(2), None, (1, *conv.stride), (0, *conv.padding))


def official_bn(x, bn, training):
    return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias,
                        training, bn.momentum, bn.eps)


def official_route(x, route, training):
    """RouteFuncMLP: a(avgpool(x) + g(globalpool(x))) -> bn -> relu -> b, + 1; Conv3d kernels."""
    frame_pool = x.mean(dim=(3, 4), keepdim=True)  # (B, C, T, 1, 1)
    global_pool = x.mean(dim=(2, 3, 4), keepdim=True)  # (B, C, 1, 1, 1)
    g_weight = route.global_linear.weight[:, :, None, None, None]  # (C, C, 1, 1, 1)
    a_weight = route.conv_reduce.weight[..., None, None]  # (C/r, C, k0, 1, 1)
    b_weight = route.conv_expand.weight[..., None, None]  # (C, C/r, k1, 1, 1)
    hidden = F.conv3d(frame_pool + F.conv3d(global_pool, g_weight, route.global_linear.bias), a_weight,
                      route.conv_reduce.bias, padding=(a_weight.shape[2] // 2, 0, 0))
    hidden = torch.relu(official_bn(hidden, route.bn, training))
    return F.conv3d(hidden, b_weight, padding=(b_weight.shape[2] // 2, 0, 0)) + 1


def official_tadaconv(x, alpha, conv):
    """The official op: one calibrated kernel per frame, as a grouped conv over all B*T frames."""
    batch, in_channels, num_frames, height, width = x.shape
    weight = conv.weight[None, None]  # (1, 1, Cout, Cin, kh, kw), the official layout
    # alpha (B, C, T, 1, 1) -> (B, T, 1, C, 1, 1); kernels (B*T*Cout, Cin, kh, kw)
    kernels = alpha.permute(0, 2, 1, 3, 4).unsqueeze(2) * weight  # (B, T, Cout, Cin, kh, kw)
    kernels = kernels.reshape(-1, in_channels, *weight.shape[-2:])
    frames = x.permute(0, 2, 1, 3, 4).reshape(1, -1, height, width)  # (1, B*T*Cin, H, W)
    out = F.conv2d(frames, kernels, None, conv.stride, conv.padding, groups=batch * num_frames)
    return out.view(batch, num_frames, -1, *out.shape[-2:]).permute(0, 2, 1, 3, 4)


def official_spatial(x, block, conv, bn, training):
    """TAdaConv -> b_bn(y) + b_avgpool_bn(avgpool_t(y)) -> relu, as in TAdaConvBlockAvgPool."""
    y = official_tadaconv(x, official_route(x, block.route, training), conv)
    pooled = F.avg_pool3d(y, (3, 1, 1), stride=1, padding=(1, 0, 0))
    return torch.relu(official_bn(y, bn, training) + official_bn(pooled, block.pool_bn, training))


def official_block(x, block, training):
    if isinstance(block, Bottleneck):
        out = torch.relu(official_bn(official_conv(x, block.conv1), block.bn1, training))
        out = official_spatial(out, block, block.conv2, block.bn2, training)
        out = official_bn(official_conv(out, block.conv3), block.bn3, training)
    else:
        out = official_spatial(x, block, block.conv1, block.bn1, training)
        out = official_bn(official_conv(out, block.conv2), block.bn2, training)
    shortcut = x
    if block.downsample is not None:
        shortcut = official_bn(official_conv(x, block.downsample[0]), block.downsample[1], training)
    return torch.relu(out + shortcut)


@pytest.mark.parametrize("block_class", [Bottleneck, BasicBlock])
@pytest.mark.parametrize("training", [True, False])
def test_tada_block_matches_official_formulation(block_class, training):
    torch.manual_seed(1)
    block = block_class(8, 4, stride=2, adaptive=True, aggregate=True, route_reduction=2,
                        route_kernels=(3, 3)).to(DTYPE).train(training)
    randomize_(block, seed=1)
    x = torch.randn(2, 8, 5, 9, 9, dtype=DTYPE)  # (B, C, T, H, W)
    expected = official_block(x, block, training)
    folded = block(x.transpose(1, 2).reshape(10, 8, 9, 9), num_frames=5)  # (B*T, C, H, W)
    channels = folded.shape[1]
    ours = folded.view(2, 5, channels, 5, 5).transpose(1, 2)  # (B*T, C', 5, 5) -> (B, C', T, 5, 5)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block_class", [Bottleneck, BasicBlock])
def test_tada_block_gradients_match_official_formulation(block_class):
    # Training mode: the gradients with respect to the input and every parameter, through the custom
    # backward of the temporal pooling and of the route's mean, against autograd through the official ops.
    torch.manual_seed(7)
    block = block_class(8, 4, stride=2, adaptive=True, aggregate=True, route_reduction=2,
                        route_kernels=(3, 3)).to(DTYPE).train()
    randomize_(block, seed=7)
    x = torch.randn(2, 8, 5, 9, 9, dtype=DTYPE, requires_grad=True)  # (B, C, T, H, W)
    leaves = [x] + list(block.parameters())
    expected = official_block(x, block, training=True)
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), leaves)
    folded = block(x.transpose(1, 2).reshape(10, 8, 9, 9), num_frames=5)  # (B*T, C, H, W)
    ours = folded.view(2, 5, folded.shape[1], 5, 5).transpose(1, 2)  # (B*T, C', 5, 5) -> (B, C', T, 5, 5)
    ours_grads = torch.autograd.grad((ours * upstream).sum(), leaves)
    names = ["x"] + [name for name, _ in block.named_parameters()]
    for name, got, want in zip(names, ours_grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-11, msg=f"gradient wrt {name}")


@pytest.mark.parametrize("block_class", [Bottleneck, BasicBlock])
def test_fast_inference_block_matches_official_formulation(block_class):
    torch.manual_seed(8)
    block = block_class(8, 4, stride=2, adaptive=True, aggregate=True, route_reduction=2,
                        route_kernels=(3, 3)).to(DTYPE).eval()
    randomize_(block, seed=8)
    x = torch.randn(2, 8, 5, 9, 9, dtype=DTYPE)  # (B, C, T, H, W)
    expected = official_block(x, block, training=False)
    frames = x.transpose(1, 2).reshape(10, 8, 9, 9)  # (B*T, C, H, W)
    frames_before = frames.clone()
    with torch.inference_mode():
        folded = block(frames, num_frames=5)
    ours = folded.view(2, 5, folded.shape[1], 5, 5).transpose(1, 2)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(frames, frames_before)  # only the block's own scratch tensors are overwritten


def plain_path(model: TAda2D, video: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``model(video)`` on the plain path, run by a copy so that ``model`` and its kept foldings stay as they are."""
    plain = copy.deepcopy(model)
    plain.set_fast_inference(False)
    with torch.inference_mode():
        return plain(video)


def test_fast_inference_model_equals_plain_path_in_both_memory_formats():
    torch.manual_seed(9)
    model = TAda2D(50, {"label": 3}, width=8, num_frames=4).to(DTYPE).eval()
    perturb_(model, seed=9)
    video = torch.randn(2, 3, 4, 32, 32, dtype=DTYPE)
    plain_logits, plain_feature = plain_path(model, video)
    with torch.inference_mode():
        fast_logits, fast_feature = model(video)
    torch.testing.assert_close(fast_feature, plain_feature, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast_logits["label"], plain_logits["label"], rtol=1e-12, atol=1e-12)
    # channels-last weights (what extraction uses on CUDA) run the same arithmetic
    model = model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        _, channels_last_feature = model(video)
    torch.testing.assert_close(channels_last_feature, plain_feature, rtol=1e-12, atol=1e-12)
    # the switch is no parameter, buffer or state-dict key
    assert all("fast" not in key for key in model.state_dict())


def test_fast_inference_model_follows_new_weights():
    """The BN foldings the fast path keeps between forwards are recomputed once the weights change."""
    torch.manual_seed(11)
    model = TAda2D(50, {"label": 3}, width=8, num_frames=4).to(DTYPE).eval()
    video = torch.randn(1, 3, 4, 32, 32, dtype=DTYPE)
    with torch.inference_mode():
        model(video)  # fills the caches with the initial weights
    for seed in (11, 12):
        perturb_(model, seed=seed)  # in place through the state dict (detached views, shared versions)
        with torch.inference_mode():
            _, fast_feature = model(video)
        torch.testing.assert_close(fast_feature, plain_path(model, video)[1], rtol=1e-12, atol=1e-12)
    fresh = TAda2D(50, {"label": 3}, width=8, num_frames=4).to(DTYPE).eval()
    perturb_(fresh, seed=13)
    with torch.inference_mode():
        _, expected = fresh(video)
        model.load_state_dict(fresh.state_dict())
        _, loaded = model(video)
    torch.testing.assert_close(loaded, expected, rtol=1e-12, atol=1e-12)


def test_fast_inference_follows_a_fused_optimizer_step_once_the_model_is_in_eval_mode():
    """torch's fused optimizer steps write the weights without bumping their version counters, which
    the kept foldings are keyed by; a change of mode drops the foldings, so the validation after a
    training epoch (``train()``, steps, ``eval()``) runs with the new weights."""
    torch.manual_seed(14)
    model = TAda2D(18, {"label": 3}, width=8, num_frames=4).eval()  # float32: what fused steps take
    perturb_(model, seed=14)
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.inference_mode():
        model(video)  # fills the caches with these weights
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    model.train()
    _, feature = model(video)
    feature.sum().backward()
    versions = [p._version for p in model.parameters()]
    optimizer.step()
    assert [p._version for p in model.parameters()] == versions  # what the version keys cannot see
    model.eval()
    with torch.inference_mode():
        _, fast_feature = model(video)
    plain_feature = plain_path(model, video)[1]
    assert (fast_feature - plain_feature).abs().max() <= 1e-5 * plain_feature.abs().max()  # float32 rounding


def test_fast_inference_is_only_taken_with_autograd_off_and_eval_bns():
    torch.manual_seed(10)
    model = TAda2D(50, {"label": 3}, width=8, num_frames=4).to(DTYPE).eval()
    perturb_(model, seed=10)
    video = torch.randn(1, 3, 4, 32, 32, dtype=DTYPE, requires_grad=True)
    _, feature = model(video)  # eval mode, autograd on: the plain path, which can be differentiated
    (grad,) = torch.autograd.grad(feature.sum(), video)
    assert grad.abs().sum() > 0
    with torch.no_grad():
        _, fast_feature = model(video)
    torch.testing.assert_close(fast_feature, feature.detach(), rtol=1e-12, atol=1e-12)
    model.train()  # batch statistics under no_grad: the plain path, and the running stats move
    before = model.layer1[0].pool_bn.running_mean.clone()
    with torch.no_grad():
        model(video)
    assert not torch.equal(model.layer1[0].pool_bn.running_mean, before)


# ---- the whole model ------------------------------------------------------------------------------


@pytest.mark.parametrize("depth, expansion", [(18, 1), (50, 4)])
def test_shapes_through_the_model(depth, expansion):
    torch.manual_seed(2)
    width, batch, num_frames = 8, 2, 4
    model = TAda2D(depth, {"verb": 5, "noun": 7}, width=width, num_frames=num_frames).eval()
    shapes = {}
    for name in ("conv1", "layer1", "layer2", "layer3", "layer4"):
        module = getattr(model, name)
        last = module if name == "conv1" else module[-1]
        last.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
    video = torch.randn(batch, 3, num_frames, 64, 64)  # (B, 3, T, H, W)
    logits, feature = model(video)
    bt = batch * num_frames  # frames stay folded: (B*T, C, H, W)
    assert shapes == {
        "conv1": (bt, width, 32, 32),  # stem, stride 2, no max pool
        "layer1": (bt, width * expansion, 16, 16),  # res2 strided
        "layer2": (bt, 2 * width * expansion, 8, 8),
        "layer3": (bt, 4 * width * expansion, 4, 4),
        "layer4": (bt, 8 * width * expansion, 2, 2),
    }
    assert feature.shape == (batch, model.feature_dim) == (batch, 8 * width * expansion)
    assert {name: tuple(value.shape) for name, value in logits.items()} == {"verb": (2, 5), "noun": (2, 7)}
    # Eval: dropout is off, so the logits are the heads applied to the feature itself.
    torch.testing.assert_close(logits["noun"], model.heads["noun"](feature))


def test_clips_in_a_batch_do_not_mix_and_feature_is_the_mean_of_the_last_stage():
    torch.manual_seed(3)
    model = TAda2D(18, {"label": 3}, width=8, num_frames=4).to(DTYPE).eval()
    randomize_(model, seed=3)
    last_stage = {}
    model.layer4[-1].register_forward_hook(lambda _m, _i, out: last_stage.__setitem__("out", out))
    videos = torch.randn(3, 3, 4, 32, 32, dtype=DTYPE)
    _, feature = model(videos)
    stage = last_stage["out"]  # (B*T, D, h, w)
    expected = stage.view(3, 4, *stage.shape[1:]).mean(dim=(1, 3, 4))  # mean over T, H, W
    torch.testing.assert_close(feature, expected, rtol=1e-12, atol=1e-12)
    for index in range(3):
        _, alone = model(videos[index:index + 1])
        torch.testing.assert_close(alone[0], feature[index], rtol=1e-12, atol=1e-12)


def test_frame_order_matters_to_tada2d_not_to_r2d():
    torch.manual_seed(4)
    tada = build_model("tada2d", depth=18, heads={"label": 2}, width=8, num_frames=4).to(DTYPE).eval()
    r2d = build_model("tsn", depth=18, heads={"label": 2}, width=8, num_frames=4).to(DTYPE).eval()
    randomize_(tada, seed=4)
    randomize_(r2d, seed=4)
    video = torch.randn(1, 3, 4, 32, 32, dtype=DTYPE)
    reversed_video = video.flip(2)  # frames in reverse order
    torch.testing.assert_close(r2d(video)[1], r2d(reversed_video)[1], rtol=1e-12, atol=1e-12)
    assert (tada(video)[1] - tada(reversed_video)[1]).abs().max() > 1e-4


@pytest.mark.parametrize("depth", [18, 50])
def test_tada2d_at_init_computes_exactly_what_r2d_computes(depth):
    torch.manual_seed(5)
    settings = dict(depth=depth, heads={"label": 6}, width=8, num_frames=4, dropout=0.5)
    r2d = build_model("tsn", **settings).to(DTYPE)
    tada = build_model("tada2d", **settings).to(DTYPE)
    result = tada.load_state_dict(r2d.state_dict(), strict=False)
    assert result.unexpected_keys == []
    # What R2D lacks is exactly the route functions and the aggregation BNs.
    assert result.missing_keys and all(".route." in key or ".pool_bn." in key for key in result.missing_keys)
    video = torch.randn(2, 3, 4, 32, 32, dtype=DTYPE)
    for training in (True, False):  # batch statistics, then running statistics
        r2d.train(training)
        tada.train(training)
        torch.manual_seed(6)
        r2d_logits, r2d_feature = r2d(video)
        torch.manual_seed(6)  # same dropout mask
        tada_logits, tada_feature = tada(video)
        torch.testing.assert_close(tada_feature, r2d_feature, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(tada_logits["label"], r2d_logits["label"], rtol=1e-13, atol=1e-13)


def test_parameter_counts_match_the_paper():
    tada = build_model("tada2d", depth=50, heads={"label": 400})
    r2d = build_model("tsn", depth=50, heads={"label": 400})
    tada_params = sum(p.numel() for p in tada.parameters())
    r2d_params = sum(p.numel() for p in r2d.parameters())
    assert abs(tada_params - 27.5e6) < 0.05e6, f"TAda2D-R50/400 has {tada_params} parameters, paper 27.5M"
    assert abs(r2d_params - 24.3e6) < 0.05e6, f"R2D-R50/400 has {r2d_params} parameters, paper 24.3M"
    extra = tada_params - r2d_params
    assert abs(extra - 3.2e6) < 0.1e6, f"TAdaConv adds {extra} parameters, paper +3.2M"
    assert tada.feature_dim == r2d.feature_dim == 2048


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="depth"):
        TAda2D(26, {"label": 2})
    with pytest.raises(ValueError, match="unknown backbone name 'i3d'"):
        build_model("i3d", depth=18, heads={"label": 2})
    model = TAda2D(18, {"label": 2}, width=8, num_frames=4)
    with pytest.raises(ValueError, match=r"input must be \(B, 3, T=4, H, W\)"):
        model(torch.randn(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="feature must be"):
        model.classify_features(torch.randn(2, 5))


@pytest.mark.parametrize("depth, tada_stages",
                         [(50, (False,) * 4), (18, (True,) * 4), (18, (False, True, False, True))])
def test_fast_inference_folds_every_bn_into_a_conv_and_equals_the_plain_path(monkeypatch, depth, tada_stages):
    """R2D, basic blocks and mixed stages: on the inference path every BN is folded (into its conv, or
    into eq. 7's filter), no BatchNorm module runs, and the features equal the plain path's."""
    torch.manual_seed(14)
    model = TAda2D(depth, {"label": 3}, width=8, num_frames=4, tada_stages=tada_stages).to(DTYPE).eval()
    perturb_(model, seed=14)
    video = torch.randn(2, 3, 4, 32, 32, dtype=DTYPE)
    _, plain_feature = plain_path(model, video)
    calls = []
    real_forward = torch.nn.BatchNorm2d.forward
    monkeypatch.setattr(torch.nn.BatchNorm2d, "forward", lambda bn, x: calls.append(bn) or real_forward(bn, x))
    with torch.inference_mode():
        _, fast_feature = model(video)
    assert calls == []
    torch.testing.assert_close(fast_feature, plain_feature, rtol=1e-12, atol=1e-12)
    model.set_fast_inference(False)  # the switch reaches the stem and the folded convs too
    with torch.inference_mode():
        model(video)
    assert len(calls) == sum(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules())  # each once
    # a forward hook on a conv makes that conv and its BN run as modules, so the hook sees its input
    model.set_fast_inference(True)
    seen = []
    model.conv1.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape))
    with torch.inference_mode():
        _, hooked_feature = model(video)
    assert seen == [(8, 3, 32, 32)]
    torch.testing.assert_close(hooked_feature, plain_feature, rtol=1e-12, atol=1e-12)
