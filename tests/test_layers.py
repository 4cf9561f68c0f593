from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.analysis import saved_for_backward_bytes
from mobilenets.errors import UsageError
from mobilenets.layers import (
    Conv2dSame,
    ConvNormAct,
    DepthwiseSeparableConv,
    DropPath,
    InvertedResidual,
    NormConfig,
    ReLU6,
    SqueezeExcite,
    create_activation,
    keep_relu6_outputs,
    make_divisible,
    set_inplace_activations,
    tf_same_pads,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(32, 32), (32 * 0.75, 24), (16 * 0.35, 8), (1280 * 1.4, 1792), (36, 40), (12, 16), (67.2, 64), (4, 8)],
)
def test_make_divisible(value: float, expected: int) -> None:
    assert make_divisible(value) == expected


def test_make_divisible_never_drops_more_than_ten_percent() -> None:
    for value in range(8, 2000):
        rounded = make_divisible(value * 0.35)
        assert rounded % 8 == 0
        assert rounded >= 0.9 * value * 0.35


def test_make_divisible_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="positive"):
        make_divisible(0)
    with pytest.raises(ValueError, match="divisor"):
        make_divisible(10, divisor=0)


@pytest.mark.parametrize(("kernel", "dilation"), [(1, 1), (3, 1), (5, 1), (3, 2), (5, 4)])
def test_conv_norm_act_keeps_size_and_drops_bias(kernel: int, dilation: int) -> None:
    layer = ConvNormAct(8, 16, kernel, dilation=dilation)
    assert layer.conv.bias is None
    assert isinstance(layer.bn, nn.BatchNorm2d)
    assert layer(torch.randn(2, 8, 17, 17)).shape == (2, 16, 17, 17)


def test_conv_norm_act_without_norm_keeps_bias_and_linear_has_no_activation() -> None:
    layer = ConvNormAct(4, 4, 3, norm=NormConfig(kind="none"), activation=None)
    assert layer.conv.bias is not None
    assert isinstance(layer.act, nn.Identity)
    x = torch.randn(1, 4, 8, 8)
    assert torch.allclose(layer(x), layer.conv(x))


def test_conv_norm_act_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        ConvNormAct(0, 4)
    with pytest.raises(ValueError, match="groups"):
        ConvNormAct(6, 4, groups=4)
    with pytest.raises(ValueError, match="stride"):
        ConvNormAct(4, 4, stride=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown activation 'gelu2'"):
        ConvNormAct(4, 4, activation="gelu2")
    with pytest.raises(ValueError, match="unknown padding"):
        ConvNormAct(4, 4, padding="valid")


def test_depthwise_separable_structure() -> None:
    block = DepthwiseSeparableConv(16, 32, stride=2)
    assert block.conv_dw.conv.groups == 16
    assert block.conv_dw.conv.weight.shape == (16, 1, 3, 3)
    assert block.conv_pw.conv.weight.shape == (32, 16, 1, 1)
    assert block(torch.randn(1, 16, 20, 20)).shape == (1, 32, 10, 10)


def test_inverted_residual_linear_bottleneck_and_residual() -> None:
    block = InvertedResidual(24, 24, hidden_channels=144).eval()
    assert block.has_residual
    assert isinstance(block.conv_pwl.act, nn.Identity)  # no activation after the projection
    assert isinstance(block.conv_pw.act, nn.ReLU6)
    assert isinstance(block.conv_dw.act, nn.ReLU6)
    x = torch.randn(2, 24, 14, 14)
    branch = block.conv_pwl(block.conv_dw(block.conv_pw(x)))
    assert torch.allclose(block(x), x + branch, atol=1e-6)
    # The projection output can be negative: it really is linear.
    assert (branch < 0).any()


@pytest.mark.parametrize(("stride", "in_ch", "out_ch"), [(2, 24, 24), (1, 24, 32)])
def test_inverted_residual_without_skip(stride: int, in_ch: int, out_ch: int) -> None:
    block = InvertedResidual(in_ch, out_ch, hidden_channels=96, stride=stride).eval()
    assert not block.has_residual
    x = torch.randn(1, in_ch, 16, 16)
    assert torch.allclose(block(x), block.conv_pwl(block.conv_dw(block.conv_pw(x))))


def test_inverted_residual_without_expansion_has_no_expand_conv() -> None:
    block = InvertedResidual(32, 16, hidden_channels=32)
    assert isinstance(block.conv_pw, nn.Identity)
    assert block.conv_dw.conv.groups == 32


def test_drop_path_draws_what_torchvisions_stochastic_depth_draws() -> None:
    from torchvision.ops import StochasticDepth

    x = torch.randn(64, 8, 3, 3)
    ours, theirs = DropPath(0.3), StochasticDepth(0.3, "row")
    torch.manual_seed(0)
    dropped = ours(x)
    torch.manual_seed(0)
    assert torch.equal(dropped, theirs(x))
    kept = dropped.flatten(1).abs().sum(1) > 0  # whole samples dropped, the rest scaled by 1 / 0.7
    assert 0 < kept.sum() < 64 and torch.allclose(dropped[kept], x[kept] / 0.7)
    assert ours.eval()(x) is x and DropPath(0.0)(x) is x
    with pytest.raises(UsageError, match=r"drop-path rate must be in \[0, 1\), got 1.0"):
        DropPath(1.0)


def test_building_a_model_does_not_import_torchvision() -> None:
    """``import mobilenets`` and a model with stochastic depth stay clear of torchvision's slow import."""
    code = (
        "import sys, mobilenets; m = mobilenets.create_model('mobilenet_v3_large', drop_path_rate=0.2); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'torchvision'))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout


def test_inverted_residual_with_squeeze_excite() -> None:
    block = InvertedResidual(
        40, 40, hidden_channels=120, kernel_size=5, se_channels=32, activation="hardswish"
    )
    assert isinstance(block.se, SqueezeExcite)
    assert block.se.fc1.out_channels == 32
    assert isinstance(block.conv_dw.act, nn.Hardswish)
    assert block(torch.randn(1, 40, 9, 9)).shape == (1, 40, 9, 9)


def test_squeeze_excite_scales_channels_by_a_gate() -> None:
    se = SqueezeExcite(8, 4)
    x = torch.rand(2, 8, 5, 5) + 0.1
    gate = F.hardsigmoid(se.fc2(F.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    assert torch.allclose(se(x), x * gate)


def test_activation_lookup() -> None:
    assert isinstance(create_activation("hardswish"), nn.Hardswish)
    assert isinstance(create_activation(None), nn.Identity)
    with pytest.raises(ValueError, match="expected one of"):
        create_activation("swishy")


def _tf_same_reference(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's documented SAME rule."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("size", [7, 8, 15, 112, 224, 225])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 1), (3, 2), (5, 2), (1, 2)])
def test_tf_same_padding_follows_tensorflow(size: int, kernel: int, stride: int) -> None:
    assert tf_same_pads(size, kernel, stride, 1) == _tf_same_reference(size, kernel, stride)
    conv = Conv2dSame(2, 2, kernel, stride, bias=False)
    out = conv(torch.randn(1, 2, size, size))
    assert out.shape[-1] == math.ceil(size / stride)


def test_tf_same_differs_from_symmetric_on_even_input() -> None:
    x = torch.randn(1, 3, 224, 224)
    tf_layer = ConvNormAct(3, 8, 3, stride=2, padding="tf_same").eval()
    sym_layer = ConvNormAct(3, 8, 3, stride=2, padding="symmetric").eval()
    sym_layer.load_state_dict(tf_layer.state_dict())
    assert isinstance(tf_layer.conv, Conv2dSame)
    # TF pads 0 rows/columns before and 1 after; symmetric padding uses 1 and 1.
    manual = F.conv2d(F.pad(x, (0, 1, 0, 1)), tf_layer.conv.weight, stride=2)
    assert torch.allclose(tf_layer.conv(x), manual, atol=1e-6)
    assert not torch.allclose(tf_layer.conv(x), sym_layer.conv(x), atol=1e-3)


def test_symmetric_padding_keeps_the_size_or_refuses() -> None:
    """A kernel spanning an even number of pixels cannot be centred: refused, not shrinking the map."""
    from mobilenets.layers import create_conv2d

    x = torch.randn(1, 4, 8, 8)
    assert create_conv2d(4, 4, 2, dilation=2)(x).shape[-2:] == (8, 8)  # k=2, d=2 spans 3 pixels
    for kernel_size, dilation in ((2, 1), (4, 1), (4, 3)):
        with pytest.raises(UsageError, match=f"kernel_size {kernel_size} with dilation {dilation} spans"):
            create_conv2d(4, 4, kernel_size, dilation=dilation)
        with pytest.raises(UsageError, match="use padding='tf_same'"):
            ConvNormAct(4, 4, kernel_size, dilation=dilation)
        assert ConvNormAct(4, 4, kernel_size, dilation=dilation, padding="tf_same")(x).shape[-2:] == (8, 8)


def _feature_map_clones(model: nn.Module, images: torch.Tensor) -> int:
    """Clones of 4-D tensors in a forward + backward (the linear layer's backward clones tiny matrices)."""
    from torch.profiler import profile

    with profile(record_shapes=True) as prof:
        model(images).sum().backward()
    return sum(e.name == "aten::clone" and len(e.input_shapes[0]) == 4 for e in prof.events())


def test_out_of_place_activations_train_without_clones() -> None:
    import mobilenets

    model = mobilenets.create_model("mobilenet_v3_small", num_classes=10).train()
    images = torch.randn(2, 3, 64, 64)
    # in place (the default): autograd saves a copy of each hard-swish's input
    assert _feature_map_clones(model, images) > 0
    kinds = (nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU)
    expected = sum(isinstance(m, kinds) and not isinstance(m, ReLU6) for m in model.modules())
    assert set_inplace_activations(model, False) == expected > 20
    assert _feature_map_clones(model, images) == 0
    assert set_inplace_activations(model, True) == expected and _feature_map_clones(model, images) > 0


def test_relu6_trains_in_place_without_copies_and_computes_what_torch_does() -> None:
    import copy

    import mobilenets

    torch.manual_seed(0)
    ours = mobilenets.create_model("mobilenet_v2", num_classes=10, width_mult=0.35, dropout=0.0).train()
    reference = copy.deepcopy(ours)  # torch's ReLU6, out of place: what the trainer ran before
    assert set_inplace_activations(reference, False) == 35
    assert keep_relu6_outputs(ours) == 35
    relu6s = [m for m in ours.modules() if isinstance(m, nn.ReLU6)]
    assert len(relu6s) == 35 and all(isinstance(m, ReLU6) and m.inplace for m in relu6s)
    images = torch.randn(2, 3, 64, 64)
    outputs = [model(images) for model in (ours, reference)]
    for output in outputs:
        output.square().sum().backward()
    assert torch.equal(outputs[0], outputs[1])
    for (name, a), b in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None and torch.equal(a.grad, b.grad), name
    assert _feature_map_clones(ours, images) == 0
    # One activation tensor fewer per ReLU6 than out of place: the output it clamped in place, which
    # the next layer keeps anyway (except after the head's: average pooling keeps only a shape).
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.nbytes)) for m in relu6s]
    saved = saved_for_backward_bytes(ours, images)
    for hook in hooks:
        hook.remove()
    assert saved == saved_for_backward_bytes(reference, images) - sum(sizes[:-1]) > 0


def test_relu6_elsewhere_behaves_like_torchs() -> None:
    x = torch.randn(4, 6, 5, 5) * 5
    with torch.no_grad():  # inference: plain in-place clamp
        y = x.clone()
        assert ReLU6(inplace=True)(y) is y and torch.equal(y, x.clamp(0, 6))
    # In place on a view of a tensor that needs gradients, and out of place
    for inplace in (True, False):
        leaf = x.clone().requires_grad_()
        base = leaf * 1.0
        out = ReLU6(inplace=inplace)(base[:, 1:4])
        out.sum().backward()
        assert leaf.grad is not None
        expected = torch.zeros_like(x)
        expected[:, 1:4] = ((x[:, 1:4] > 0) & (x[:, 1:4] < 6)).float()
        assert torch.equal(leaf.grad, expected), inplace
    # Export (here in training mode, as quantization-aware training exports) sees torch's op
    block = ConvNormAct(3, 8, 3).train()
    assert keep_relu6_outputs(block) == 1 and isinstance(block.act, ReLU6)
    graph = torch.export.export(block, (torch.randn(2, 3, 8, 8),)).graph
    assert any("hardtanh" in str(node.target) for node in graph.nodes)
    assert keep_relu6_outputs(block, enabled=False) == 1 and type(block.act) is nn.ReLU6


def test_quantization_captures_torchs_relu6_from_a_model_set_up_for_training() -> None:
    """torchao's x86 quantizer matches conv-BatchNorm-ReLU6 by torch's module type."""
    from mobilenets.deploy.pt2e import capture

    block = nn.Sequential(ConvNormAct(3, 8, 3))
    keep_relu6_outputs(block)
    graph = capture(block, 32, train=True).graph
    types = {kind for node in graph.nodes for _, kind in node.meta.get("nn_module_stack", {}).values()}
    assert "torch.nn.modules.activation.ReLU6" in types
    assert not [kind for kind in types if kind.startswith("mobilenets.layers.activations")]
    assert isinstance(block[0].act, ReLU6)  # the model itself keeps its training ReLU6
