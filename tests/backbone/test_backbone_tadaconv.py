"""TAdaConv2d and RouteFunction against plainly written references (float64)."""

import pytest
import torch
import torch.nn.functional as F

from backbone.tadaconv import RouteFunction, TAdaConv2d, _temporal_conv

DTYPE = torch.float64


def reference_tadaconv(x, alpha, weight, bias, cal_dim, stride, padding, dilation, groups):
    """Builds each frame's calibrated kernel W_t = alpha_t * W_b and convolves frame by frame.

    x (B, Cin, T, H, W), alpha (B, C_cal, T, 1, 1), weight (Cout, Cin/groups, kh, kw).
    """
    batch, in_channels, num_frames = x.shape[:3]
    out_channels, in_per_group = weight.shape[:2]
    out_per_group = out_channels // groups
    outputs = []
    for b in range(batch):
        frames = []
        for t in range(num_frames):
            a = alpha[b, :, t, 0, 0]
            kernel = torch.zeros_like(weight)
            for o in range(out_channels):
                for j in range(in_per_group):
                    if cal_dim == "cout":
                        factor = a[o]
                    elif a.numel() == in_channels:  # one factor per input channel
                        factor = a[(o // out_per_group) * in_per_group + j]
                    else:  # official grouped semantics: factor j shared by every group
                        factor = a[j]
                    kernel[o, j] = factor * weight[o, j]
            frame = F.conv2d(x[b:b + 1, :, t], kernel, bias, stride, padding, dilation, groups)
            frames.append(frame[0])
        outputs.append(torch.stack(frames, dim=1))  # (Cout, T, H', W')
    return torch.stack(outputs)  # (B, Cout, T, H', W')


CASES = [
    # kernel, stride, padding, dilation, groups, bias, in, out
    dict(kernel_size=3, stride=1, padding=1, dilation=1, groups=1, bias=False, cin=4, cout=6),
    dict(kernel_size=3, stride=2, padding=0, dilation=1, groups=2, bias=True, cin=4, cout=6),
    dict(kernel_size=(3, 5), stride=(1, 2), padding=(2, 1), dilation=2, groups=1, bias=True, cin=3, cout=5),
    dict(kernel_size=1, stride=1, padding=0, dilation=1, groups=3, bias=False, cin=6, cout=3),
]


# (cal_dim, whether alpha has all Cin channels or, official grouped form, Cin / groups)
CALIBRATIONS = [("cin", True), ("cin", False), ("cout", True)]


@pytest.mark.parametrize("cal_dim, full_cin_alpha", CALIBRATIONS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c['kernel_size']}-s{c['stride']}-g{c['groups']}")
def test_forward_and_backward_match_frame_by_frame_reference(cal_dim, full_cin_alpha, case):
    torch.manual_seed(0)
    conv = TAdaConv2d(
        case["cin"], case["cout"], case["kernel_size"], stride=case["stride"], padding=case["padding"],
        dilation=case["dilation"], groups=case["groups"], bias=case["bias"], cal_dim=cal_dim,
    ).to(DTYPE)
    batch, num_frames = 2, 3
    if cal_dim == "cout":
        alpha_channels = case["cout"]
    else:
        alpha_channels = case["cin"] if full_cin_alpha else case["cin"] // case["groups"]
    x = torch.randn(batch, case["cin"], num_frames, 9, 8, dtype=DTYPE, requires_grad=True)
    alpha = (1 + 0.5 * torch.randn(batch, alpha_channels, num_frames, 1, 1, dtype=DTYPE)).requires_grad_()

    ours = conv(x, alpha)
    reference = reference_tadaconv(
        x, alpha, conv.weight, conv.bias, cal_dim, conv.stride, conv.padding, conv.dilation, conv.groups
    )
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)

    upstream = torch.randn_like(ours)
    leaves = [x, alpha, conv.weight] + ([conv.bias] if conv.bias is not None else [])
    ours_grads = torch.autograd.grad((ours * upstream).sum(), leaves)
    reference_grads = torch.autograd.grad((reference * upstream).sum(), leaves)
    for name, got, expected in zip(["x", "alpha", "weight", "bias"], ours_grads, reference_grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12, msg=f"gradient wrt {name}")


def test_forward_folded_is_forward_on_folded_frames():
    torch.manual_seed(1)
    conv = TAdaConv2d(4, 5, 3, padding=1).to(DTYPE)
    x = torch.randn(2, 4, 3, 6, 6, dtype=DTYPE)  # (B, C, T, H, W)
    alpha = torch.rand(2, 4, 3, 1, 1, dtype=DTYPE)
    folded = conv.forward_folded(
        x.transpose(1, 2).reshape(6, 4, 6, 6),  # (B, C, T, H, W) -> (B*T, C, H, W)
        alpha.transpose(1, 2).reshape(6, 4, 1, 1),
    )
    torch.testing.assert_close(folded.view(2, 3, 5, 6, 6).transpose(1, 2), conv(x, alpha), rtol=0, atol=0)


def test_hand_worked_one_channel_case():
    # One channel, 1x1 kernel of value 2: frame t of the output is 2 * alpha_t * x_t (+ bias 0.5 for cout).
    for cal_dim in ("cin", "cout"):
        conv = TAdaConv2d(1, 1, 1, bias=True, cal_dim=cal_dim).to(DTYPE)
        with torch.no_grad():
            conv.weight.fill_(2.0)
            conv.bias.fill_(0.5)
        x = torch.tensor([1.0, 2.0, -1.0], dtype=DTYPE).view(1, 1, 3, 1, 1)
        alpha = torch.tensor([1.0, 3.0, 0.5], dtype=DTYPE).view(1, 1, 3, 1, 1)
        out = conv(x, alpha).flatten().tolist()
        assert out == [2.5, 12.5, -0.5]


def test_bad_alpha_shapes_raise():
    conv = TAdaConv2d(4, 6, 3, groups=2, cal_dim="cin")
    x = torch.randn(1, 4, 2, 5, 5)
    with pytest.raises(ValueError, match="alpha has 3 channels"):
        conv(x, torch.ones(1, 3, 2, 1, 1))
    with pytest.raises(ValueError, match="alpha must be"):
        conv(x, torch.ones(1, 4, 3, 1, 1))
    with pytest.raises(ValueError, match="cal_dim"):
        TAdaConv2d(4, 6, 3, cal_dim="time")


def reference_route(module, x):
    """Eqs. 4-6 written out frame by frame (eval-mode BN). x (B, C, T, H, W) -> (B, C, T)."""
    batch, channels, num_frames = x.shape[:3]
    w_g, b_g = module.global_linear.weight, module.global_linear.bias
    w_a, b_a = module.conv_reduce.weight, module.conv_reduce.bias  # (C/r, C, k0)
    w_b = module.conv_expand.weight  # (C, C/r, k1)
    bn = module.bn
    out = torch.zeros(batch, channels, num_frames, dtype=x.dtype)
    for b in range(batch):
        v = [x[b, :, t].mean(dim=(1, 2)) for t in range(num_frames)]
        g = w_g @ (sum(v) / num_frames) + b_g
        context = [v_t + g for v_t in v]
        hidden = []
        for t in range(num_frames):
            h = b_a.clone()
            for k in range(w_a.shape[2]):
                source = t + k - w_a.shape[2] // 2
                if 0 <= source < num_frames:
                    h = h + w_a[:, :, k] @ context[source]
            h = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            hidden.append(torch.relu(h))
        for t in range(num_frames):
            a = torch.ones(channels, dtype=x.dtype)
            for k in range(w_b.shape[2]):
                source = t + k - w_b.shape[2] // 2
                if 0 <= source < num_frames:
                    a = a + w_b[:, :, k] @ hidden[source]
            out[b, :, t] = a
    return out


def test_route_function_matches_reference_in_both_layouts():
    torch.manual_seed(2)
    route = RouteFunction(8, reduction=2, kernels=(3, 5)).to(DTYPE).eval()
    with torch.no_grad():
        route.conv_expand.weight.normal_(std=0.3)  # leave the identity init to test the real path
        route.bn.running_mean.normal_()
        route.bn.running_var.uniform_(0.5, 2.0)
        route.bn.weight.normal_()
        route.bn.bias.normal_()
        route.global_linear.bias.normal_()
        route.conv_reduce.bias.normal_()
    x = torch.randn(2, 8, 4, 5, 3, dtype=DTYPE)  # (B, C, T, H, W)
    alpha = route(x)
    assert alpha.shape == (2, 8, 4, 1, 1)
    torch.testing.assert_close(alpha[..., 0, 0], reference_route(route, x), rtol=1e-12, atol=1e-12)
    folded = route.forward_folded(x.transpose(1, 2).reshape(8, 8, 5, 3), num_frames=4)  # (B*T, C, H, W)
    assert folded.shape == (8, 8, 1, 1)
    torch.testing.assert_close(folded.view(2, 4, 8).transpose(1, 2), alpha[..., 0, 0], rtol=0, atol=0)
    # the inference path: BN folded into the reducing conv, the + 1 into the last matmul
    with torch.inference_mode():
        fast = route.forward_folded(x.transpose(1, 2).reshape(8, 8, 5, 3), num_frames=4, inference=True)
    torch.testing.assert_close(fast.view(2, 4, 8).transpose(1, 2), reference_route(route, x),
                               rtol=1e-12, atol=1e-12)


def test_route_inference_path_only_with_autograd_off_and_running_statistics():
    torch.manual_seed(12)
    route = RouteFunction(8, reduction=2).to(DTYPE).eval()
    with torch.no_grad():
        route.conv_expand.weight.normal_(std=0.3)
    frames = torch.randn(6, 8, 3, 3, dtype=DTYPE, requires_grad=True)  # (B*T, C, H, W), T = 3
    alpha = route.forward_folded(frames, 3, inference=True)  # autograd on: the plain, differentiable path
    assert alpha.requires_grad and route.folded._key is None
    route.train()
    with torch.no_grad():  # batch statistics: the plain path, and the running statistics move
        before = route.bn.running_mean.clone()
        route.forward_folded(frames, 3, inference=True)
    assert not torch.equal(route.bn.running_mean, before) and route.folded._key is None


def test_route_inference_path_follows_every_change_of_the_weights():
    """The folded weights are kept between forwards; whatever changes a weight the next forward sees."""
    torch.manual_seed(13)
    route = RouteFunction(8, reduction=2).to(DTYPE).eval()
    frames = torch.randn(6, 8, 3, 3, dtype=DTYPE)  # (B*T, C, H, W), T = 3

    def check():
        with torch.no_grad():
            fast = route.forward_folded(frames, 3, inference=True)
            plain = route.forward_folded(frames, 3)
        torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
        return fast

    first = check()  # alpha == 1 at initialisation
    torch.testing.assert_close(first, torch.ones_like(first), rtol=0, atol=0)
    with torch.no_grad():
        route.conv_expand.weight.normal_(std=0.3)  # in place under no_grad
    assert not torch.equal(check(), first)
    other = RouteFunction(8, reduction=2).to(DTYPE)
    with torch.no_grad():
        other.conv_expand.weight.normal_(std=0.3)
        other.bn.running_var.uniform_(0.5, 2.0)
    route.load_state_dict(other.state_dict())
    check()
    optimizer = torch.optim.SGD(route.parameters(), lr=0.1)
    route.train()
    route(torch.randn(2, 8, 3, 3, 3, dtype=DTYPE)).square().sum().backward()
    optimizer.step()
    route.eval()
    check()
    route.bn.weight = torch.nn.Parameter(torch.full((4,), 3.0, dtype=DTYPE))  # a new parameter
    check()
    # Writes through .data have their own version counter: not seen until the cache is cleared.
    route.bn.running_mean.data.add_(1.0)
    route.folded.clear()
    check()
    # A fused optimizer step leaves the versions alone; the change to eval mode drops the cache.
    fused = torch.optim.AdamW(route.parameters(), lr=0.1, fused=True)
    route.train()
    route(torch.randn(2, 8, 3, 3, 3, dtype=DTYPE)).square().sum().backward()
    fused.step()
    route.eval()
    check()


@pytest.mark.parametrize("training", [True, False])
def test_route_function_starts_at_exactly_one(training):
    torch.manual_seed(3)
    route = RouteFunction(12, reduction=4).train(training)
    alpha = route(torch.randn(3, 12, 5, 4, 4) * 10)
    assert torch.equal(alpha, torch.ones_like(alpha))
    assert route.conv_expand.bias is None  # as the official RouteFuncMLP.b


def test_route_function_rejects_bad_settings():
    with pytest.raises(ValueError, match="channels // reduction"):
        RouteFunction(3, reduction=4)
    with pytest.raises(ValueError, match="odd"):
        RouteFunction(8, kernels=(2, 3))
    with pytest.raises(ValueError, match="frames must be"):
        RouteFunction(8).forward_folded(torch.randn(7, 8, 2, 2), num_frames=4)


# ---- the inference and training fast paths ----------------------------------------------------


def test_scale_in_place_gives_the_same_output_and_overwrites_only_the_frames():
    torch.manual_seed(4)
    for groups, alpha_channels in ((1, 6), (2, 3)):  # full Cin alpha, then the official grouped form
        conv = TAdaConv2d(6, 4, 3, padding=1, groups=groups).to(DTYPE)
        frames = torch.randn(5, 6, 7, 7, dtype=DTYPE)  # (N, Cin, H, W)
        alpha = 1 + 0.5 * torch.randn(5, alpha_channels, 1, 1, dtype=DTYPE)
        expected = conv.forward_folded(frames, alpha)
        full_alpha = alpha.repeat(1, 6 // alpha_channels, 1, 1)  # factor j shared by every group
        expected_scaled = frames * full_alpha
        alpha_before = alpha.clone()
        with torch.no_grad():
            got = conv.forward_folded(frames, alpha, scale_in_place=True)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        torch.testing.assert_close(frames, expected_scaled, rtol=0, atol=0)  # the scratch input holds x * alpha
        assert torch.equal(alpha, alpha_before)


def test_scale_in_place_is_refused_when_autograd_records():
    conv = TAdaConv2d(4, 4, 3, padding=1)
    frames = torch.randn(2, 4, 5, 5, requires_grad=True)
    with pytest.raises(ValueError, match="scale_in_place needs autograd off"):
        conv.forward_folded(frames, torch.ones(2, 4, 1, 1), scale_in_place=True)


@pytest.mark.parametrize("training", [True, False])
def test_route_function_gradients_match_plain_autograd(training):
    # The route's spatial mean has its own backward (a broadcast view); every gradient must equal
    # plain autograd through x.mean(dim=(2, 3)).
    torch.manual_seed(5)
    route = RouteFunction(6, reduction=2, kernels=(3, 3)).to(DTYPE).train(training)
    with torch.no_grad():
        route.conv_expand.weight.normal_(std=0.3)
    frames = torch.randn(8, 6, 5, 4, dtype=DTYPE, requires_grad=True)  # (B*T, C, H, W), T = 4
    upstream = torch.randn(8, 6, 1, 1, dtype=DTYPE)
    leaves = [frames] + list(route.parameters())

    ours = route.forward_folded(frames, num_frames=4)
    ours_grads = torch.autograd.grad((ours * upstream).sum(), leaves)

    plain = route.from_descriptors(frames.mean(dim=(2, 3)).view(2, 4, 6).transpose(1, 2))  # (B, C, T)
    plain = plain.transpose(1, 2).reshape(8, 6, 1, 1)
    plain_grads = torch.autograd.grad((plain * upstream).sum(), leaves)
    torch.testing.assert_close(ours, plain, rtol=0, atol=0)
    for got, expected in zip(ours_grads, plain_grads):
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-14)
    assert ours_grads[0].abs().sum() > 0


def test_route_input_gradient_reaches_a_leaf_as_a_dense_tensor():
    torch.manual_seed(6)
    route = RouteFunction(4, reduction=2)
    with torch.no_grad():
        route.conv_expand.weight.normal_()
    frames = torch.randn(6, 4, 3, 3, requires_grad=True)  # (B*T, C, H, W), T = 3
    route.forward_folded(frames, num_frames=3).sum().backward()
    assert frames.grad.is_contiguous() and frames.grad.stride() == frames.stride()
    # Each frame's gradient is constant over H, W: d mean / d x = 1 / (H*W).
    torch.testing.assert_close(frames.grad, frames.grad[:, :, :1, :1].expand_as(frames.grad))


def test_route_function_gradcheck_and_double_backward():
    torch.manual_seed(7)
    route = RouteFunction(4, reduction=2).to(DTYPE).eval()
    with torch.no_grad():
        route.conv_expand.weight.normal_()
        route.bn.running_var.uniform_(0.5, 2.0)
    frames = torch.randn(6, 4, 3, 2, dtype=DTYPE, requires_grad=True)  # (B*T, C, H, W), T = 3
    assert torch.autograd.gradcheck(lambda f: route.forward_folded(f, 3), (frames,))
    assert torch.autograd.gradgradcheck(lambda f: route.forward_folded(f, 3) ** 2, (frames,))


@pytest.mark.parametrize("cal_dim", ["cin", "cout"])
def test_tadaconv_gradcheck_and_double_backward(cal_dim):
    # The scaling's own backward (one buffer for both gradients), and its differentiable form under
    # create_graph=True.
    torch.manual_seed(8)
    conv = TAdaConv2d(3, 2, 3, padding=1, bias=True, cal_dim=cal_dim).to(DTYPE)
    frames = torch.randn(4, 3, 4, 4, dtype=DTYPE, requires_grad=True)  # (N, Cin, H, W)
    alpha = (1 + 0.3 * torch.randn(4, 3 if cal_dim == "cin" else 2, 1, 1, dtype=DTYPE)).requires_grad_()
    assert torch.autograd.gradcheck(conv.forward_folded, (frames, alpha))
    assert torch.autograd.gradgradcheck(conv.forward_folded, (frames, alpha))
    # Only one input needing a gradient: the other is not computed.
    (grad_alpha,) = torch.autograd.grad(conv.forward_folded(frames.detach(), alpha).sum(), alpha)
    (grad_frames,) = torch.autograd.grad(conv.forward_folded(frames, alpha.detach()).sum(), frames)
    both = torch.autograd.grad(conv.forward_folded(frames, alpha).sum(), (frames, alpha))
    torch.testing.assert_close(grad_frames, both[0], rtol=0, atol=0)
    torch.testing.assert_close(grad_alpha, both[1], rtol=0, atol=0)


@pytest.mark.parametrize("kernel, bias", [(1, True), (3, True), (5, False)])
def test_temporal_conv_as_matmul_is_conv1d(kernel, bias):
    torch.manual_seed(9)
    conv = torch.nn.Conv1d(6, 4, kernel, padding=kernel // 2, bias=bias).to(DTYPE)
    frames = torch.randn(2, 5, 6, dtype=DTYPE, requires_grad=True)  # (B, T, C_in)
    ours = _temporal_conv(frames, conv)  # (B, T, C_out)
    expected = conv(frames.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(ours, expected, rtol=1e-13, atol=1e-13)
    upstream = torch.randn_like(ours)
    leaves = [frames] + list(conv.parameters())
    for got, want in zip(torch.autograd.grad((ours * upstream).sum(), leaves),
                         torch.autograd.grad((expected * upstream).sum(), leaves)):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
