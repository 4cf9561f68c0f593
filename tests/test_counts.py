"""The published figures of the papers, counted exactly; and our counts against FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import mobilenets
from mobilenets.analysis import layer_costs, summarize
from tests.conftest import ALL_MODELS


def _params_without_norm(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if ".bn." not in name)


@pytest.mark.parametrize(
    ("name", "params", "macs"),
    [
        ("mobilenet_v2", 3_504_872, 300_774_272),
        ("mobilenet_v3_large", 5_483_032, 216_589_760),
        ("mobilenet_v3_small", 2_542_856, 56_510_400),
        ("mobilenet_v1", 4_231_976, 568_740_352),
        ("conv_mobilenet_v1", 29_294_088, 4_867_293_184),
    ],
)
def test_published_counts(name: str, params: int, macs: int) -> None:
    summary = summarize(mobilenets.create_model(name), resolution=224)
    assert summary.total_params == params
    assert summary.total_macs == macs


def test_mobilenet_v1_without_batchnorm() -> None:
    assert _params_without_norm(mobilenets.mobilenet_v1()) == 4_210_088


@pytest.mark.parametrize(
    ("width", "resolution", "paper_macs_m", "paper_params_m"),
    [  # v1 paper Tables 6 and 7 (parameters without batch norm)
        (1.0, 224, 569, 4.2),
        (0.75, 224, 325, 2.6),
        (0.5, 224, 149, 1.3),
        (0.25, 224, 41, 0.5),
        (1.0, 192, 418, 4.2),
        (1.0, 160, 290, 4.2),
        (1.0, 128, 186, 4.2),
    ],
)
def test_mobilenet_v1_paper_tables_6_and_7(
    width: float, resolution: int, paper_macs_m: float, paper_params_m: float
) -> None:
    model = mobilenets.mobilenet_v1(width_mult=width)
    macs = summarize(model, resolution=resolution).total_macs
    assert abs(macs / 1e6 - paper_macs_m) < 1  # the paper rounds some rows and truncates others
    assert round(_params_without_norm(model) / 1e6, 1) == paper_params_m


@pytest.mark.parametrize(
    ("width", "resolution", "macs_m", "params_m"),
    [  # TF-slim's published MobileNet v2 table (parameters without batch norm)
        (1.4, 224, 582, 6.06),
        (1.0, 192, 221, 3.47),
        (0.75, 224, 209, 2.61),
        (0.5, 160, 50, 1.95),
        (0.35, 224, 59, 1.66),
    ],
)
def test_mobilenet_v2_published_table(width: float, resolution: int, macs_m: float, params_m: float) -> None:
    model = mobilenets.mobilenet_v2(width_mult=width)
    assert round(summarize(model, resolution=resolution).total_macs / 1e6) == macs_m
    assert round(_params_without_norm(model) / 1e6, 2) == params_m


@pytest.mark.parametrize(
    ("name", "macs_m", "params_m"),
    [("mobilenet_v3_large", 155, 4.0), ("mobilenet_v3_small", 43, 2.0)],  # v3 paper Table 3, width 0.75
)
def test_mobilenet_v3_width_075(name: str, macs_m: int, params_m: float) -> None:
    summary = summarize(mobilenets.create_model(name, width_mult=0.75))
    assert round(summary.total_macs / 1e6) == macs_m
    assert round(summary.total_params / 1e6, 1) == params_m


def test_v1_paper_table_3_single_layer() -> None:
    """One 14×14×512 layer with 3×3 kernels: standard 462M / 2.36M, separable 52.3M / 0.27M."""
    example = torch.zeros(1, 512, 14, 14)
    standard = layer_costs(nn.Conv2d(512, 512, 3, padding=1, bias=False), example)
    separable = layer_costs(
        nn.Sequential(
            nn.Conv2d(512, 512, 3, padding=1, groups=512, bias=False), nn.Conv2d(512, 512, 1, bias=False)
        ),
        example,
    )
    assert round(sum(c.macs for c in standard) / 1e6) == 462
    assert round(sum(c.params for c in standard) / 1e6, 2) == 2.36
    assert round(sum(c.macs for c in separable) / 1e6, 1) == 52.3
    assert round(sum(c.params for c in separable) / 1e6, 2) == 0.27
    assert [c.kind for c in separable] == ["depthwise", "pointwise"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_analytical_macs_match_flop_counter(name: str) -> None:
    model = mobilenets.create_model(name).eval()
    example = torch.zeros(1, 3, 96, 96)
    costs = layer_costs(model, example)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(example)
    assert 2 * sum(c.macs for c in costs) == counter.get_total_flops()
    assert sum(c.params for c in costs) == sum(p.numel() for p in model.parameters())


def test_lite_counts_follow_efficientnet_rules() -> None:
    # EfficientNet-Lite0 = B0 without SE, with ReLU6: timm's efficientnet_lite0 has 4,652,008 parameters.
    assert sum(p.numel() for p in mobilenets.efficientnet_lite0().parameters()) == 4_652_008
    lite2 = mobilenets.efficientnet_lite2()
    repeats = [len(stage) for stage in lite2.blocks]
    assert repeats == [1, 3, 3, 4, 4, 5, 1]  # ceil(1.2 × n), first and last stage fixed
