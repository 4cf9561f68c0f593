"""The separable CIFAR network: its whitening stem, its max-pooling separable blocks, and its training."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mobilenets.errors import UsageError
from mobilenets.layers import PatchWhitening, PooledSeparableConv, SqueezeExcite
from mobilenets.layers.norm import NormConfig
from mobilenets.models import ArchSpec, BlockSpec, build_mobilenet, create_model
from mobilenets.models.cifar_separable import CIFAR_SEPARABLE, CIFAR_SEPARABLE_DWLAST, CIFAR_SEPARABLE_SE
from mobilenets.training import TrainConfig, load_trained_model, train


def correlated_images(count: int = 64, size: int = 16) -> torch.Tensor:
    """Smooth colour images: neighbouring pixels and the three channels strongly correlated."""
    noise = torch.randn(count, 1, size + 2, size + 2)
    smooth = F.avg_pool2d(noise, 3, stride=1)
    second = 0.8 * smooth + 0.2 * torch.randn_like(smooth)
    return torch.cat([smooth, second, 0.3 * torch.randn_like(smooth) - smooth], dim=1)


def test_fitted_whitening_decorrelates_the_patches() -> None:
    images = correlated_images()
    layer = PatchWhitening(3, 2, activation=None)
    assert not bool(layer.fitted)
    layer.fit(images, eps=1e-9)
    assert bool(layer.fitted) and layer.out_channels == 24
    out = layer.conv(images)  # 12 whitened components, then their negatives
    assert torch.equal(out[:, 12:], -out[:, :12])  # (the bias starts at zero)
    components = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    covariance = torch.cov(components.T)
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=1e-3)
    # the raw patches were far from white: the test would fail without the fit
    raw = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    assert not torch.allclose(torch.cov(raw.T), torch.eye(12, dtype=torch.float64), atol=0.1)


def test_an_unfitted_whitening_stem_refuses_to_train_and_says_why() -> None:
    layer = PatchWhitening()
    layer.train()
    with pytest.raises(UsageError, match="not fitted"):
        layer(torch.randn(2, 3, 8, 8))
    layer.eval()  # inference of whatever was loaded is the caller's business
    assert layer(torch.randn(2, 3, 8, 8)).shape == (2, 24, 7, 7)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.randn(4, 1, 8, 8), r"\(N, 3, H, W\)"),
        (torch.randn(4, 3, 1, 8), "no 2×2 patch"),
        (torch.randn(1, 3, 2, 2), "cannot fit 12"),
        (torch.full((4, 3, 8, 8), float("nan")), "NaN"),
    ],
)
def test_whitening_fit_rejects_unusable_images(images: torch.Tensor, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        PatchWhitening().fit(images)


def test_pooled_separable_conv_pools_after_the_pointwise_conv() -> None:
    block = PooledSeparableConv(8, 16, stride=2)
    assert block.conv_dw.groups == 8 and block.conv_pw.kernel_size == (1, 1)
    assert block(torch.randn(2, 8, 15, 15)).shape == (2, 16, 7, 7)  # floor, as max pooling does
    dense = PooledSeparableConv(8, 16, separable=False)
    assert isinstance(dense.conv_dw, torch.nn.Identity) and dense.conv_pw.kernel_size == (3, 3)
    assert dense(torch.randn(2, 8, 15, 15)).shape == (2, 16, 15, 15)
    with pytest.raises(UsageError, match="stride must be 1 or 2"):
        PooledSeparableConv(8, 16, stride=3)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"dilation": 0}, "dilation"),  # built, then failed at the first forward with torch's message
        ({"dilation": -1}, "dilation"),
        ({"kernel_size": 0}, "kernel_size"),  # was told it "spans an even number of pixels"
        ({"in_channels": 0}, "in_channels"),  # was torch's bare "groups must be a positive integer"
        ({"out_channels": 2.0}, "out_channels"),
    ],
)
def test_pooled_separable_conv_names_a_bad_size_when_built(options: dict, named: str) -> None:
    sizes = {"in_channels": 8, "out_channels": 16}
    sizes.update({key: options.pop(key) for key in list(options) if key in sizes})
    with pytest.raises(UsageError, match=f"^{named} must be a positive integer"):
        PooledSeparableConv(sizes["in_channels"], sizes["out_channels"], **options)


def test_pooled_separable_conv_gates_its_output_channels_with_squeeze_excite() -> None:
    block = PooledSeparableConv(8, 16, stride=2, se_channels=4).eval()
    assert isinstance(block.se, SqueezeExcite) and block.se.fc1.out_channels == 4
    x = torch.randn(2, 8, 15, 15)
    with torch.no_grad():
        ungated = block.act(block.bn(block.pool(block.conv_pw(block.conv_dw(x)))))
        gate = torch.sigmoid(block.se.fc2(F.relu(block.se.fc1(ungated.mean((2, 3), keepdim=True)))))
        torch.testing.assert_close(block(x), ungated * gate)  # on the pooled output, one gate per channel
    assert isinstance(PooledSeparableConv(8, 16).se, torch.nn.Identity)
    twin = PooledSeparableConv(8, 16, separable=False, se_channels=4)  # the dense twin keeps its gate
    assert isinstance(twin.se, SqueezeExcite)
    for bad in (-1, 2.0, True):
        with pytest.raises(UsageError, match="se_channels must be a non-negative integer"):
            PooledSeparableConv(8, 16, se_channels=bad)


def test_depthwise_last_filters_the_pointwise_output() -> None:
    block = PooledSeparableConv(8, 16, stride=2, depthwise_last=True).eval()
    assert block.conv_pw.in_channels == 8 and block.conv_dw.groups == 16 == block.conv_dw.in_channels
    x = torch.randn(2, 8, 15, 15)
    with torch.no_grad():
        expected = block.act(block.bn(block.pool(block.conv_dw(block.conv_pw(x)))))
        torch.testing.assert_close(block(x), expected)
    unnormed = PooledSeparableConv(8, 16, norm=NormConfig("none"), depthwise_last=True)
    assert unnormed.conv_dw.bias is not None and unnormed.conv_pw.bias is None  # the last conv's bias
    dense = PooledSeparableConv(8, 16, separable=False, depthwise_last=True)  # the twin: one dense conv
    assert isinstance(dense.conv_dw, torch.nn.Identity) and not dense.depthwise_last


def test_architecture_table_checks_the_new_options() -> None:
    with pytest.raises(UsageError, match="squeeze-excite is only supported in 'ir' and 'sep' blocks"):
        BlockSpec("ds", 16, se=True)
    BlockSpec("sep", 16, separable=False)  # the twin is allowed
    BlockSpec("sep", 16, se=True, separable=False)  # with its output gate
    with pytest.raises(UsageError, match="'ir' blocks without squeeze-excite"):
        BlockSpec("ir", 16, expand_ratio=6, se=True, separable=False)
    with pytest.raises(UsageError, match="depthwise_last applies to 'sep' blocks only, not 'ir'"):
        BlockSpec("ir", 16, expand_ratio=6, depthwise_last=True)
    with pytest.raises(UsageError, match="depthwise_last must be True or False"):
        BlockSpec("sep", 16, depthwise_last=1)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="whitening stem has stride 1"):
        dataclasses.replace(CIFAR_SEPARABLE, stem_stride=2)
    with pytest.raises(UsageError, match="stem_kernel_size must be a positive odd"):
        dataclasses.replace(CIFAR_SEPARABLE, stem_whitening=False)  # a 2×2 conv stem cannot centre


def test_cifar_separable_builds_its_table_and_its_standard_conv_twin() -> None:
    model = create_model("cifar_separable", num_classes=10)
    assert isinstance(model.stem, PatchWhitening) and model.stem.out_channels == 24
    blocks = [block for stage in model.blocks for block in stage]
    assert [block.conv_pw.out_channels for block in blocks] == [64, 64, 256, 256, 256, 256]
    assert [isinstance(block.pool, torch.nn.MaxPool2d) for block in blocks] == [True, False] * 3
    assert not model.stem.conv.weight.requires_grad  # frozen, and not re-initialised at random
    assert torch.count_nonzero(model.stem.conv.weight) == 0
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    half = create_model("cifar_separable", width_mult=0.5, num_classes=10)
    assert half.stem.out_channels == 24 and half.num_features == 128
    twin = build_mobilenet(CIFAR_SEPARABLE, separable=False, num_classes=10)
    assert all(isinstance(b.conv_dw, torch.nn.Identity) for stage in twin.blocks for b in stage)
    # the deep variant: a third block where the maps are 7×7 and 3×3; the same stem, pools and head
    deep = create_model("cifar_separable_deep", num_classes=10)
    deep_blocks = [block for stage in deep.blocks for block in stage]
    assert [block.conv_pw.out_channels for block in deep_blocks] == [64, 64, 256, 256, 256, 256, 256, 256]
    pools = [True, False, True, False, False, True, False, False]
    assert [isinstance(block.pool, torch.nn.MaxPool2d) for block in deep_blocks] == pools
    extra = 2 * (256 * 9 + 256 * 256 + 2 * 256)  # two more depthwise, pointwise and norm layers
    assert sum(p.numel() for p in deep.parameters()) - sum(p.numel() for p in model.parameters()) == extra
    # the squeeze-excite variant: a gate on the output of the four blocks at 7×7 and 3×3, nothing else
    gated = create_model("cifar_separable_se", num_classes=10)
    gated_blocks = [block for stage in gated.blocks for block in stage]
    assert [isinstance(block.se, SqueezeExcite) for block in gated_blocks] == [False] * 2 + [True] * 4
    assert all(isinstance(block.se.gate, torch.nn.Sigmoid) for block in gated_blocks[2:])
    gates = 4 * (256 * 64 + 64 + 64 * 256 + 256)  # fc1 256→64 and fc2 64→256, with biases
    assert sum(p.numel() for p in gated.parameters()) - sum(p.numel() for p in model.parameters()) == gates
    gated_twin = build_mobilenet(CIFAR_SEPARABLE_SE, separable=False, num_classes=10)  # gates on outputs stay
    twin_gates = [isinstance(b.se, SqueezeExcite) for stage in gated_twin.blocks for b in stage]
    assert twin_gates == [False] * 2 + [True] * 4
    # depthwise last in the two widening blocks: their depthwise conv has the output's width
    wide = create_model("cifar_separable_dwlast", num_classes=10)
    wide_blocks = [block for stage in wide.blocks for block in stage]
    assert [block.conv_dw.groups for block in wide_blocks] == [64, 64, 256, 256, 256, 256]
    assert [block.depthwise_last for block in wide_blocks] == [True, False, True, False, False, False]
    filters = 9 * ((64 - 24) + (256 - 64))  # the depthwise weights of the wider maps
    assert sum(p.numel() for p in wide.parameters()) - sum(p.numel() for p in model.parameters()) == filters
    wide_twin = build_mobilenet(CIFAR_SEPARABLE_DWLAST, separable=False, num_classes=10)
    assert all(isinstance(b.conv_dw, torch.nn.Identity) for stage in wide_twin.blocks for b in stage)
    twin_params = sum(p.numel() for p in twin.parameters())
    assert sum(p.numel() for p in wide_twin.parameters()) == twin_params  # the same dense network


def test_cifar_separable_keeps_pytorchs_default_initialisation() -> None:
    """torch_init: convs and linears keep PyTorch's draws (uniform within 1/sqrt(fan_in)), not He fan-out."""

    def depthwise_weights(model: torch.nn.Module) -> torch.Tensor:
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
        return torch.cat([conv.weight.flatten() for conv in convs])

    torch.manual_seed(0)
    model = create_model("cifar_separable", num_classes=10)
    drawn = depthwise_weights(model)
    assert model.torch_init and drawn.abs().max() <= 1 / 3 and drawn.std() > 0.15  # U(±1/3): fan-in 9
    he = build_mobilenet(dataclasses.replace(CIFAR_SEPARABLE, torch_init=False), num_classes=10)
    assert not he.torch_init and depthwise_weights(he).std() < 0.1  # He fan-out: sqrt(2 / (9 C))
    assert torch.count_nonzero(model.stem.conv.weight) == 0  # frozen stem untouched either way
    bound = 1 / model.head_hidden_size**0.5
    heads = [model.classifier]
    model.reset_classifier(5)  # a fresh head is drawn the same way
    for head in [*heads, model.classifier]:
        assert head.weight.abs().max() <= bound and head.weight.std() > 0.5 * bound / 3**0.5
        assert torch.count_nonzero(head.bias) > 0  # PyTorch draws biases too
    he.reset_classifier(5)
    assert he.classifier.weight.std() < 0.02 and torch.count_nonzero(he.classifier.bias) == 0
    with pytest.raises(UsageError, match="torch_init must be True or False"):
        dataclasses.replace(CIFAR_SEPARABLE, torch_init="yes")


def test_a_plain_table_with_a_whitening_stem_uses_the_datas_width() -> None:
    arch = ArchSpec(
        name="tiny",
        stem_channels=99,  # not used: the whitening stem's width is 2 × in_channels × k²
        stem_whitening=True,
        stem_kernel_size=3,
        stem_stride=1,
        blocks=(BlockSpec("ds", 16, stride=2),),
    )
    model = build_mobilenet(arch, in_channels=1, num_classes=2)
    assert model.stem.out_channels == 18
    assert model.blocks[0][0].conv_dw.conv.in_channels == 18


def test_training_fits_the_stem_on_training_images_and_a_resume_keeps_it(tmp_path: Path) -> None:
    common = {
        "model": "cifar_separable",
        "width_mult": 0.25,
        "img_size": 32,
        "batch_size": 64,
        "lr": 0.1,
        "label_smoothing": 0.2,
        "progress": False,
        "device": "cpu",
    }
    out = tmp_path / "run"
    result = train(TrainConfig(**common, epochs=3, out=str(out)))
    assert result["final_top1"] > 0.5  # digits: 10 classes, chance 0.1
    weights = load_file(out / "last.safetensors")
    assert bool(weights["stem.fitted"]) and torch.count_nonzero(weights["stem.conv.weight"]) == 24 * 3 * 4
    model = load_trained_model(out / "last.safetensors").model
    model.train()
    model(torch.randn(2, 3, 32, 32))  # fitted, so it trains on
    # one more epoch on top: the stem is the checkpoint's, not refitted, and still frozen
    train(TrainConfig(**common, epochs=4, out=str(out), resume=True))
    resumed = load_file(out / "last.safetensors")
    assert torch.equal(resumed["stem.conv.weight"], weights["stem.conv.weight"])


@pytest.mark.parametrize(
    "name", ["cifar_separable", "cifar_separable_deep", "cifar_separable_se", "cifar_separable_dwlast"]
)
def test_cifar_separable_has_the_model_interface_at_its_own_scale(name: str) -> None:
    """What tests/test_models.py checks of the ImageNet-layout networks, at reductions 1 to 8."""
    model = create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_intermediates(x, intermediates_only=True)
        final = model.forward_features(x)
        assert model(x).shape == (2, 7)
    assert [level.reduction for level in model.feature_info] == [1, 2, 4, 8]
    # the unpadded 2×2 stem trims a pixel, then each max pool halves (rounding down): 31, 15, 7, 3
    for level, feature in zip(model.feature_info, features, strict=True):
        assert feature.shape == (2, level.num_chs, 31 // level.reduction, 31 // level.reduction)
    assert final.shape == (2, 256, 3, 3) and model.total_stride == 8
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    dropped = create_model(name, small_input=1)  # the first pool's stride dropped
    assert dropped.feature_info[-1].reduction == 4 and dropped.min_input_size == 5
    with pytest.raises(UsageError, match=r"needs at least 9×9 \(its total stride and stem\)"):
        model(torch.randn(1, 3, 8, 8))
