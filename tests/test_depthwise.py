"""Depthwise convolutions with a tap-by-tap weight gradient on maps smaller than the kernel."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mobilenets.layers import DepthwiseConv2d, fast_depthwise_gradients
from mobilenets.models import create_model

# (height, width, kernel, stride, dilation, padding, the path it takes); padding None is "same".
GEOMETRIES = [
    (2, 2, 3, 1, 1, None, "taps"),  # the CIFAR network's last blocks
    (1, 1, 3, 1, 1, None, "taps"),  # progressive resizing's smallest maps
    (4, 4, 5, 1, 1, None, "taps"),  # v3's 5×5 kernels on a 4×4 map
    (2, 4, 5, 2, 1, None, "taps"),
    (3, 3, 3, 2, 2, None, None),  # dilated at stride 2: PyTorch's own
    (2, 1, 3, 1, 1, 2, "taps"),  # more padding than "same"
    (5, 5, 3, 2, 1, None, None),  # map larger than the kernel: PyTorch's own path
    (8, 8, 3, 1, 2, None, "subgrids"),  # output_stride 8/16: dilated, stride 1
    (7, 9, 3, 1, 2, None, "subgrids"),  # sides not multiples of the dilation: padded, then cut
    (12, 16, 3, 1, 4, None, "subgrids"),
    (6, 6, 3, 1, 2, 0, "subgrids"),  # no padding: a smaller output
    (10, 10, 5, 1, 2, 4, "subgrids"),
    (9, 9, 3, 1, 2, 4, "subgrids"),  # more padding than "same"
    (4, 4, 3, 1, 2, None, "taps"),  # sub-grids (2×2) smaller than the kernel
    (10, 6, 5, 1, 2, None, "taps"),  # sub-grid columns (3) smaller than the kernel
    (8, 8, 3, 1, 2, 1, None),  # padding not a multiple of the dilation: PyTorch's own
]


@pytest.mark.parametrize(
    "height, width, kernel, stride, dilation, padding, path, channels_last, bias",
    [(*g, cl, b) for g, cl, b in itertools.product(GEOMETRIES, (True, False), (True, False))],
)
def test_gradients_equal_pytorchs(
    height: int,
    width: int,
    kernel: int,
    stride: int,
    dilation: int,
    padding: int | None,
    path: str | None,
    channels_last: bool,
    bias: bool,
) -> None:
    torch.manual_seed(0)
    pad = dilation * (kernel // 2) if padding is None else padding
    reference = nn.Conv2d(
        6, 6, kernel, stride=stride, padding=pad, dilation=dilation, groups=6, bias=bias
    ).double()
    ours = nn.Conv2d(6, 6, kernel, stride=stride, padding=pad, dilation=dilation, groups=6, bias=bias)
    ours.load_state_dict(reference.state_dict())
    assert fast_depthwise_gradients(ours) == 1 and type(ours) is DepthwiseConv2d
    image = torch.randn(3, 6, height, width, dtype=torch.double)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    expected_input = image.clone().requires_grad_()
    output = reference(expected_input)
    upstream = torch.randn_like(output)
    output.backward(upstream)
    got_input = image.float().requires_grad_()
    assert ours._training_path(got_input) == path
    got = ours(got_input)
    assert ("SmallMapDepthwise" in type(got.grad_fn).__name__) == (path == "taps")
    torch.testing.assert_close(got.double(), output.detach(), rtol=1e-5, atol=1e-5)
    got.backward(upstream.float())
    pairs = [(got_input.grad, expected_input.grad), (ours.weight.grad, reference.weight.grad)]
    if bias:
        pairs.append((ours.bias.grad, reference.bias.grad))
    for actual, expected in pairs:
        torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)
    if path == "taps":  # DDP's gradient layout contract (PyTorch's autograd keeps it on the others)
        assert ours.weight.grad.stride() == ours.weight.stride()
    if path == "subgrids":  # the output in the input's memory format, as PyTorch's convolution gives it
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert got.is_contiguous(memory_format=layout)


def test_weight_gradient_keeps_a_channels_last_weights_strides() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4).to(memory_format=torch.channels_last)
    fast_depthwise_gradients(conv)
    assert conv.weight.stride() != torch.empty(4, 1, 3, 3).stride()
    conv(torch.randn(2, 4, 2, 2).contiguous(memory_format=torch.channels_last)).sum().backward()
    assert conv.weight.grad.stride() == conv.weight.stride()


def test_only_float32_cpu_training_with_gradients_takes_the_tap_sum() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    fast_depthwise_gradients(conv)
    image = torch.randn(2, 4, 2, 2)
    assert "SmallMapDepthwise" in type(conv(image).grad_fn).__name__
    with torch.no_grad():
        assert conv(image).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "SmallMapDepthwise" not in type(conv(image).grad_fn).__name__
    assert "SmallMapDepthwise" not in type(conv.eval()(image).grad_fn).__name__
    conv.train().weight.requires_grad_(False)
    assert conv(image.requires_grad_()).grad_fn is not None
    assert "SmallMapDepthwise" not in type(conv(image).grad_fn).__name__


def test_only_depthwise_layers_and_inputs_of_their_channels() -> None:
    """Built directly, the class refuses other groupings; a wrong channel count meets PyTorch's own
    error on the fast paths too (they would read the input's channels as the groups)."""
    for channels, groups in ((16, 8), (8, 1)):
        with pytest.raises(ValueError, match="groups == in_channels == out_channels"):
            DepthwiseConv2d(8, channels, 3, groups=groups)
    layer = DepthwiseConv2d(8, 8, 3, padding=1, groups=8).train()
    with pytest.raises(RuntimeError, match="to have 8 channels"):
        layer(torch.randn(2, 1, 2, 2))  # a map smaller than the kernel: the tap sum's case


def test_switch_keeps_parameters_and_names_and_switches_back() -> None:
    model = create_model("mobilenet_v2", num_classes=10, width_mult=0.35, small_input=1)
    before = dict(model.state_dict())
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert fast_depthwise_gradients(model) == len(depthwise) == 17
    assert all(type(m) is DepthwiseConv2d for m in depthwise)
    assert all(type(m) is nn.Conv2d for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(after[k].data_ptr() == before[k].data_ptr() for k in before)  # the same tensors
    assert fast_depthwise_gradients(model) == 0  # already switched
    assert fast_depthwise_gradients(model, enabled=False) == 17
    assert all(type(m) is nn.Conv2d for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    "options, size",
    [({"small_input": 1}, 32), ({"output_stride": 8}, 64)],  # 2×2 maps; dilated blocks on 8×8 maps
)
def test_a_training_step_matches_pytorchs_and_export_sees_torchs_convolution(
    options: dict[str, int], size: int
) -> None:
    from mobilenets.deploy.pt2e import capture

    torch.manual_seed(0)
    reference = create_model("mobilenet_v2", num_classes=10, width_mult=0.35, **options)
    ours = create_model("mobilenet_v2", num_classes=10, width_mult=0.35, **options)
    ours.load_state_dict(reference.state_dict())
    fast_depthwise_gradients(ours)
    images = torch.randn(4, 3, size, size).contiguous(memory_format=torch.channels_last)
    paths: list[str | None] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args: paths.append(m._training_path(args[0])))
        for m in ours.modules()
        if isinstance(m, DepthwiseConv2d)
    ]
    for model in (reference, ours):
        torch.manual_seed(1)  # the same dropout
        nn.functional.cross_entropy(model(images), torch.arange(4)).backward()
    for hook in hooks:
        hook.remove()
    # At 64 px the 7 blocks dilated by 2 take sub-grids, the 3 dilated by 4 (2×2 sub-grids) the taps
    expected_paths = {"taps": 3} if size == 32 else {"subgrids": 7, "taps": 3}
    assert {p: paths.count(p) for p in set(paths) - {None}} == expected_paths
    for (name, expected), actual in zip(reference.named_parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(actual.grad, expected.grad, rtol=1e-4, atol=1e-5, msg=name)
    graph = capture(ours, size, train=False)
    kinds = {
        str(kind)
        for node in graph.graph.nodes
        for _, kind in (node.meta.get("nn_module_stack") or {}).values()
    }
    assert not any("DepthwiseConv2d" in kind for kind in kinds) and any("Conv2d" in kind for kind in kinds)
    assert sum(type(m) is DepthwiseConv2d for m in ours.modules()) == 17  # the model itself is left as it was
