from __future__ import annotations

import inspect
import re

import pytest
import torch
from torch import nn

import mobilenets
from mobilenets import create_model, list_models
from mobilenets.analysis import summarize
from mobilenets.errors import UsageError
from mobilenets.models import MAX_INPUT_SIZE, MIN_INPUT_SIZE, check_model_options, check_resolution
from tests.conftest import IMAGENET_MODELS, SMALL_RES


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_forward_shapes_and_interface(name: str) -> None:
    model = create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, SMALL_RES, SMALL_RES)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
    assert logits.shape == (2, 7)
    assert features.shape == (2, model.num_features, SMALL_RES // 32, SMALL_RES // 32)
    assert pre_logits.shape == (2, model.head_hidden_size)
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.head_hidden_size)


def test_a_features_only_model_has_no_classifier_to_reset() -> None:
    backbone = mobilenets.mobilenet_v2(width_mult=0.25, features_only=True)
    with pytest.raises(ValueError, match="features_only model returns feature maps and has no classifier"):
        backbone.reset_classifier(10)  # it set num_classes to 10 and still returned feature maps
    assert backbone.num_classes == backbone.pretrained_cfg["num_classes"] == 0  # unchanged


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_feature_info_matches_real_features(name: str) -> None:
    model = create_model(name).eval()
    x = torch.randn(1, 3, SMALL_RES, SMALL_RES)
    with torch.no_grad():
        features = model.forward_intermediates(x, intermediates_only=True)
    assert [f.reduction for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert len(features) == len(model.feature_info)
    for info, feature in zip(model.feature_info, features, strict=True):
        assert feature.shape == (1, info.num_chs, SMALL_RES // info.reduction, SMALL_RES // info.reduction)


def test_features_only_backbone() -> None:
    backbone = create_model("mobilenet_v2", features_only=True, out_indices=(2, 3, 4)).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 96, 96))
    assert [tuple(f.shape[1:]) for f in features] == [(32, 12, 12), (96, 6, 6), (320, 3, 3)]
    assert not any(isinstance(m, nn.Linear) for m in backbone.modules())
    # Blocks after the deepest level returned are not built: every weight runs and gets a gradient
    short = create_model("mobilenet_v2", features_only=True, out_indices=(1, 2))
    sum(f.sum() for f in short(torch.randn(2, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in short.parameters()) and len(short.feature_info) == 3
    assert [name for name, _ in short.blocks.named_children()] == ["0", "1", "2"]
    report = summarize(short, resolution=64)
    assert sum(p.numel() for p in short.parameters()) == report.total_params
    assert report.total_params == sum(layer.params for layer in report.layers)
    # feature_info describes what forward returns: one map per level, so a level named twice is refused
    for bad, message in (((-1, 4), "name a feature level twice"), ((5,), "must be indices into the 5")):
        with pytest.raises(ValueError, match=message):
            create_model("mobilenet_v2", features_only=True, out_indices=bad)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_dilates_instead_of_striding(output_stride: int) -> None:
    model = create_model("mobilenet_v2", output_stride=output_stride, features_only=True).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    assert features[-1].shape[-1] == 64 // output_stride
    assert [f.reduction for f in model.feature_info][-1] == output_stride
    dilations = [m.dilation[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert max(dilations) == 32 // output_stride


def test_output_stride_without_dilation_only_drops_the_strides() -> None:
    """dilate=False: the CIFAR variants' 4×4 final map, the same weights, no dilated conv anywhere."""
    plain = create_model("mobilenet_v2", num_classes=10, small_input=1).eval()
    model = create_model("mobilenet_v2", num_classes=10, small_input=1, output_stride=8, dilate=False).eval()
    model.load_state_dict(plain.state_dict())
    assert all(m.dilation == (1, 1) for m in model.modules() if isinstance(m, nn.Conv2d))
    assert [f.reduction for f in model.feature_info][-1] == 8
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)
        assert plain.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (2, 2)
    with pytest.raises(UsageError, match="dilate must be True or False"):
        create_model("mobilenet_v2", dilate="no")


@pytest.mark.parametrize("resolution", [32, 57, 100, 224])
def test_any_resolution(resolution: int) -> None:
    model = mobilenets.mobilenet_v3_small(num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, resolution, resolution + 3)).shape == (1, 5)


def test_width_mult_and_keep_last_wide() -> None:
    narrow = mobilenets.mobilenet_v2(width_mult=0.5)
    assert narrow.stem.out_channels == 16
    assert narrow.num_features == 1280  # the paper keeps the last layer wide below width 1
    thin_head = mobilenets.mobilenet_v2(width_mult=0.5, keep_last_wide=False)
    assert thin_head.num_features == 640
    assert mobilenets.mobilenet_v2(width_mult=1.4).num_features == 1792
    with pytest.raises(ValueError, match="no separate last layer"):
        mobilenets.mobilenet_v1(keep_last_wide=True)
    # EfficientNet-Lite's head is 1280 wide at every width: False was accepted and changed nothing.
    assert mobilenets.efficientnet_lite0(width_mult=0.5, keep_last_wide=True).num_features == 1280
    with pytest.raises(ValueError, match="keep_last_wide=False cannot apply"):
        mobilenets.efficientnet_lite0(width_mult=0.5, keep_last_wide=False)


def test_fix_stem_keeps_the_stem_at_its_table_width() -> None:
    """timm's MobileNetV3 below width 0.75 and Keras's at any width keep a 16-channel stem."""
    assert mobilenets.mobilenet_v3_small(width_mult=0.5).stem.out_channels == 8  # torchvision's rule
    fixed = mobilenets.mobilenet_v3_small(width_mult=0.5, fix_stem=True)
    assert fixed.stem.out_channels == 16 and fixed.blocks[0][0].conv_dw.conv.in_channels == 16
    assert mobilenets.mobilenet_v2(width_mult=2.0, fix_stem=True).stem.out_channels == 32
    assert mobilenets.efficientnet_lite0(width_mult=0.5, fix_stem=True).stem.out_channels == 32
    with pytest.raises(ValueError, match="fix_stem=False cannot apply"):
        mobilenets.efficientnet_lite0(fix_stem=False)


def test_efficientnet_lite_keeps_stem_and_head_fixed() -> None:
    lite4 = mobilenets.efficientnet_lite4()
    assert lite4.stem.out_channels == 32
    assert lite4.num_features == 1280
    assert lite4.default_resolution == 300
    assert not any(isinstance(m, mobilenets.SqueezeExcite) for m in lite4.modules())
    assert all(
        isinstance(m, nn.ReLU6) for m in lite4.modules() if isinstance(m, nn.ReLU | nn.Hardswish | nn.ReLU6)
    )


def test_standard_conv_twin_has_no_depthwise_convs() -> None:
    for name in ("conv_mobilenet_v1", "conv_mobilenet_v2"):
        model = create_model(name)
        assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())


def test_overrides_norm_activation_dropout_drop_path() -> None:
    model = mobilenets.mobilenet_v2(norm="groupnorm", activation="hardswish", dropout=0.5, drop_path_rate=0.2)
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d | nn.ReLU6) for m in model.modules())
    assert model.dropout.p == 0.5
    rates = [b.drop_path.p for _, b in model.iter_blocks() if not isinstance(b.drop_path, nn.Identity)]
    assert rates == sorted(rates) and 0 < rates[-1] < 0.2
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_registry_lists_and_filters() -> None:
    assert list_models("mobilenet_v3*") == ["mobilenet_v3_large", "mobilenet_v3_small"]
    assert {"mobilenet_v1", "mobilenet_v2", "efficientnet_lite0", "conv_mobilenet_v1"} <= set(list_models())


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="mobilenet_v2"):
        create_model("mobilenetv2")


def test_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="'widht_mult'"):
        create_model("mobilenet_v2", widht_mult=0.5)
    with pytest.raises(TypeError):
        mobilenets.mobilenet_v2(0.5)  # type: ignore[misc]  # builders are keyword-only


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width_mult": 0}, "width_mult"),
        ({"width_mult": -1.0}, "width_mult"),
        ({"num_classes": -3}, "num_classes"),
        ({"dropout": 1.5}, "dropout"),
        ({"output_stride": 4}, "output_stride"),
        ({"padding": "same"}, "padding"),
        ({"activation": "relu7"}, "activation"),
        ({"norm": "layernorm"}, "norm"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"in_channels": 0}, "in_channels"),
        ({"small_input": 3}, "small_input"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"keep_last_wide": "yes"}, "keep_last_wide"),
        ({"fix_stem": 1}, "fix_stem must be True, False or None"),
        ({"features_only": 1}, "features_only"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model("mobilenet_v2", **kwargs)
    with pytest.raises(ValueError, match=match):  # the same rules, checked without building
        check_model_options("mobilenet_v2", **kwargs)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite4"])
def test_checking_options_applies_each_models_width_limit(name: str) -> None:
    """EfficientNet-Lite scales its own width (Lite4: 1.4×), so it allows a smaller width_mult."""
    limit = 10.0 / {"mobilenet_v2": 1.0, "efficientnet_lite0": 1.0, "efficientnet_lite4": 1.4}[name]
    check_model_options(name, width_mult=limit, num_classes=10)
    for check in (check_model_options, create_model):
        with pytest.raises(ValueError, match=f"expected at most {limit:g}"):
            check(name, width_mult=limit * 1.01)
    with pytest.raises(TypeError, match="'widht_mult'"):
        check_model_options(name, widht_mult=0.5)
    with pytest.raises(ValueError, match="unknown model"):
        check_model_options(f"{name}x")


@pytest.mark.parametrize("value", [31, 4097, 32.0, True, "64", None])
def test_one_resolution_rule_for_every_option(value: object) -> None:
    message = f"--resolution must be an integer from 32 to 4096 pixels, got {value!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_resolution(value, name="--resolution")


def test_resolution_rule_accepts_its_bounds() -> None:
    assert check_resolution(MIN_INPUT_SIZE) == 32 and check_resolution(MAX_INPUT_SIZE) == 4096


@pytest.mark.parametrize(
    ("shape", "match"),
    [((1, 1, 64, 64), "3 input channels"), ((3, 64, 64), "4-D input"), ((1, 3, 16, 16), "at least 32")],
)
def test_bad_input_tensor_names_expected_shape(shape: tuple[int, ...], match: str) -> None:
    model = mobilenets.mobilenet_v2()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


def test_grayscale_model_accepts_one_channel() -> None:
    model = mobilenets.mobilenet_v1(in_channels=1, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_small_input_keeps_32px_images_at_4x4(name: str) -> None:
    """small_input drops the first two stride-2 steps: total reduction 8, not 32, same weights."""
    small = create_model(name, num_classes=10, small_input=True).eval()
    plain = create_model(name, num_classes=10)
    assert [tuple(p.shape) for p in small.parameters()] == [tuple(p.shape) for p in plain.parameters()]
    assert small.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)
    assert [info.reduction for info in small.feature_info][-1] == 8
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert create_model(name, num_classes=10, small_input=2).feature_info[-1].reduction == 8
    stem_only = create_model(name, num_classes=10, small_input=1)
    assert [info.reduction for info in stem_only.feature_info][-1] == 16
    assert stem_only.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (2, 2)
    for bad in ("yes", 3, -1, 1.0):
        with pytest.raises(ValueError, match="small_input"):
            create_model(name, small_input=bad)


def test_build_option_lists_agree() -> None:
    """build_mobilenet, check_build_options and BuildOptions name the same options, with the same defaults."""
    from mobilenets.models import BuildOptions, build_mobilenet
    from mobilenets.models.builder import check_build_options

    built = inspect.signature(build_mobilenet).parameters
    checked = inspect.signature(check_build_options).parameters
    assert set(BuildOptions.__optional_keys__) == set(built) - {"arch", "width_mult"}
    assert set(checked) == set(built) - {"arch", "width_mult", "out_indices", "pretrained"}
    for name, parameter in checked.items():
        assert parameter.default == built[name].default, f"{name}: defaults differ"


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mobilenet_v2", {}),
        ("mobilenet_v3_small", {}),
        ("efficientnet_lite0", {}),
        ("mobilenet_v2", {"norm": "none"}),
        ("mobilenet_v2", {"separable": False}),
    ],
)
def test_zero_init_residual_starts_every_residual_block_as_the_identity(
    name: str, options: dict[str, object]
) -> None:
    from mobilenets.layers.inverted_residual import InvertedResidual

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, zero_init_residual=True, **options).eval()
    default = create_model(name, num_classes=10, **options).eval()
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, InvertedResidual)]
    residual = [(n, m) for n, m in blocks if m.has_residual]
    assert len(residual) >= 3
    with torch.no_grad():
        for block_name, block in residual:
            x = torch.randn(2, block.in_channels, 8, 8)
            assert torch.equal(block(x), x), block_name
            assert not torch.equal(default.get_submodule(block_name)(x), x), block_name
    # Only the residual branches' last scales change: blocks without a shortcut keep theirs.
    plain = [m for _, m in blocks if not m.has_residual]
    last = plain[0].conv_pwl if plain[0].separable else plain[0].conv_full
    if isinstance(last.bn, nn.BatchNorm2d):
        assert torch.equal(last.bn.weight, torch.ones_like(last.bn.weight))
    # The zeroed scales still learn: their gradient is not zero.
    model.train()
    model(torch.randn(2, 3, SMALL_RES, SMALL_RES)).logsumexp(1).sum().backward()
    zeroed = residual[0][1].conv_pwl if residual[0][1].separable else residual[0][1].conv_full
    parameter = zeroed.bn.weight if isinstance(zeroed.bn, nn.BatchNorm2d) else zeroed.conv.weight
    assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_zero_init_residual_is_refused_where_it_cannot_apply() -> None:
    from mobilenets.training import TrainConfig

    with pytest.raises(UsageError, match="zero_init_residual must be True or False"):
        mobilenets.mobilenet_v2(zero_init_residual=1)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"no inverted residual blocks.*zero_init_residual"):
        mobilenets.mobilenet_v1(zero_init_residual=True)
    with pytest.raises(UsageError, match="pretrained weights replace them"):
        mobilenets.mobilenet_v2(pretrained=True, zero_init_residual=True)
    with pytest.raises(UsageError, match="zero_init_residual initialises weights for training from scratch"):
        TrainConfig(pretrained="torchvision_mobilenet_v2", model_options={"zero_init_residual": True})
    # Options that would change nothing are refused, not accepted silently: no bottleneck shortcut to
    # zero, no residual branch to drop.
    for shortcut in ("expansion", "none"):
        with pytest.raises(UsageError, match=f"shortcut='{shortcut}' has none"):
            mobilenets.mobilenet_v2(shortcut=shortcut, zero_init_residual=True)
    with pytest.raises(UsageError, match=r"projection_activation='hardsigmoid' maps zero to 0\.5"):
        mobilenets.mobilenet_v2(projection_activation="hardsigmoid", zero_init_residual=True)
    assert mobilenets.mobilenet_v2(projection_activation="relu6", zero_init_residual=True)
    with pytest.raises(UsageError, match=r"no inverted residual blocks.*drop_path_rate"):
        mobilenets.mobilenet_v1(drop_path_rate=0.2)
    with pytest.raises(UsageError, match="drop_path_rate drops residual branches; shortcut='none'"):
        mobilenets.mobilenet_v2(shortcut="none", drop_path_rate=0.2)
    assert mobilenets.mobilenet_v2(shortcut="expansion", drop_path_rate=0.2).blocks[1][1].drop_path.p > 0
    # v3's table makes every block its own stage: expansion shortcuts would join nothing
    with pytest.raises(UsageError, match="shortcut='expansion' on mobilenet_v3_large: no two consecutive"):
        mobilenets.mobilenet_v3_large(shortcut="expansion")


def test_pretrained_cfg_follows_the_strides_the_model_keeps() -> None:
    """timm's pool_size and min_input_size: a 224-px input ends at 28×28 with two strides dropped."""
    cases = (({}, 7, 32), ({"small_input": 2}, 28, 8), ({"output_stride": 16}, 14, 16))
    for options, pool, smallest in cases:
        cfg = mobilenets.mobilenet_v2(**options).pretrained_cfg
        assert cfg["pool_size"] == (pool, pool) and cfg["min_input_size"] == (3, smallest, smallest), options
    loaded = create_model("mobilenet_v2", pretrained=True, small_input=2)  # the weights' cfg, same rule
    assert loaded.pretrained_cfg["pool_size"] == (28, 28) and loaded.pretrained_cfg["tag"] == "tv_in1k"
    # A size that strides do not divide ends on the next size up (260 / 32 = 8.1: a 9×9 map), as timm says.
    for name, options in (("efficientnet_lite2", {}), ("efficientnet_lite3", {"output_stride": 16})):
        model = create_model(name, width_mult=0.25, **options).eval()
        cfg = model.pretrained_cfg
        with torch.no_grad():
            final = model.forward_features(torch.zeros(1, *cfg["input_size"])).shape[-2:]
        assert cfg["pool_size"] == tuple(final), name
