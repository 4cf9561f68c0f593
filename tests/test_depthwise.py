"""Depthwise convolutions with a tap-by-tap weight gradient on maps smaller than the kernel."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mobilenets.layers import DepthwiseConv2d, fast_depthwise_gradients
from mobilenets.models import create_model

# (height, width, kernel, stride, dilation, padding); padding None means "same" for stride 1.
GEOMETRIES = [
    (2, 2, 3, 1, 1, None),  # the CIFAR network's last blocks
    (1, 1, 3, 1, 1, None),  # progressive resizing's smallest maps
    (4, 4, 5, 1, 1, None),  # v3's 5×5 kernels on a 4×4 map
    (2, 4, 5, 2, 1, None),
    (3, 3, 3, 2, 2, None),  # dilated
    (2, 1, 3, 1, 1, 2),  # more padding than "same"
    (5, 5, 3, 2, 1, None),  # map larger than the kernel: PyTorch's own path
]


@pytest.mark.parametrize(
    "height, width, kernel, stride, dilation, padding, channels_last, bias",
    [(*g, cl, b) for g, cl, b in itertools.product(GEOMETRIES, (True, False), (True, False))],
)
def test_gradients_equal_pytorchs(
    height: int,
    width: int,
    kernel: int,
    stride: int,
    dilation: int,
    padding: int | None,
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
    got = ours(got_input)
    small = height < kernel or width < kernel
    assert ("SmallMapDepthwise" in type(got.grad_fn).__name__) == small
    torch.testing.assert_close(got.double(), output.detach(), rtol=1e-5, atol=1e-5)
    got.backward(upstream.float())
    pairs = [(got_input.grad, expected_input.grad), (ours.weight.grad, reference.weight.grad)]
    if bias:
        pairs.append((ours.bias.grad, reference.bias.grad))
    for actual, expected in pairs:
        torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)
    if small:  # DDP's gradient layout contract (PyTorch's own path is PyTorch's business)
        assert ours.weight.grad.stride() == ours.weight.stride()


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


def test_a_training_step_matches_pytorchs_and_export_sees_torchs_convolution() -> None:
    from mobilenets.deploy.pt2e import capture

    torch.manual_seed(0)
    reference = create_model("mobilenet_v2", num_classes=10, width_mult=0.35, small_input=1)
    ours = create_model("mobilenet_v2", num_classes=10, width_mult=0.35, small_input=1)
    ours.load_state_dict(reference.state_dict())
    fast_depthwise_gradients(ours)
    images = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    for model in (reference, ours):
        torch.manual_seed(1)  # the same dropout
        nn.functional.cross_entropy(model(images), torch.arange(4)).backward()
    for (name, expected), actual in zip(reference.named_parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(actual.grad, expected.grad, rtol=1e-4, atol=1e-5, msg=name)
    graph = capture(ours, 32, train=False)
    kinds = {
        str(kind)
        for node in graph.graph.nodes
        for _, kind in (node.meta.get("nn_module_stack") or {}).values()
    }
    assert not any("DepthwiseConv2d" in kind for kind in kinds) and any("Conv2d" in kind for kind in kinds)
    assert sum(type(m) is DepthwiseConv2d for m in ours.modules()) == 17  # the model itself is left as it was
