"""Fuzzing with hypothesis: block configs, model options, input tensors and CLI arguments.

Invalid values (zero or negative widths and channels, non-integer strides, absurd resolutions, unknown
activation names, ...) must raise ``ValueError`` / ``TypeError`` naming the bad field, or make the CLI
exit with status 2 and a one-line ``mobilenets CMD: error: ...``, quickly and without allocating
gigabytes first. Valid values must build modules whose outputs have the expected shapes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from mobilenets.layers import (
    ACTIVATION_NAMES,
    PADDING_MODES,
    ConvNormAct,
    DepthwiseSeparableConv,
    InvertedResidual,
    NormConfig,
    SqueezeExcite,
    make_divisible,
)
from mobilenets.layers.norm import NORM_KINDS
from mobilenets.models import ArchSpec, BlockSpec, BuildOptions, build_mobilenet, create_model, list_models
from mobilenets.models.config import BLOCK_KINDS
from mobilenets.models.mobilenet import MAX_INPUT_SIZE, MIN_INPUT_SIZE

from .conftest import run_cli as run_cli_in_process

MODELS = list_models()
# No residual blocks, so no stochastic depth to set.
WITHOUT_RESIDUALS = (
    "mobilenet_v1",
    "conv_mobilenet_v1",
    "cifar_separable",
    "cifar_separable_deep",
    "cifar_separable_se",
    "cifar_separable_dwlast",
)
# Each example is milliseconds to a few tenths of a second; no per-example deadline (a loaded CI
# machine would make one flaky), the example counts keep the whole file well under a minute.
# No example database: it would write an untracked .hypothesis/ folder into the checkout.
COMMON: dict[str, Any] = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
FAST = settings(max_examples=40, **COMMON)
MODELS_SETTINGS = settings(max_examples=25, **COMMON)
BUILD_SETTINGS = settings(max_examples=20, **COMMON)  # examples that build and run whole networks
CLI_SETTINGS = settings(max_examples=20, **COMMON)


@contextlib.contextmanager
def memory_cap(headroom_bytes: int = 3 * 1024**3) -> Iterator[None]:
    """Cap this process's address space at its current size + ``headroom_bytes`` (Linux).

    Inside it, code that tries to allocate an absurd tensor fails at once with a ``RuntimeError`` (which
    the tests reject) instead of swapping the machine, so "errors before allocating" is really checked.
    Elsewhere (no ``resource`` module or no ``/proc``) the assertions still run, without the cap.
    """
    try:
        import resource

        with open("/proc/self/statm") as statm:
            vm_bytes = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm_bytes + headroom_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def expect_error(fn: Callable[[], object], *fragments: str) -> BaseException:
    """Run ``fn``: it must raise ValueError or TypeError whose message contains every fragment."""
    with memory_cap(), pytest.raises((ValueError, TypeError)) as info:
        fn()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error message {message!r}"
    return info.value


# ------------------------------------------------------------------------------------ value strategies

NON_NUMBERS = st.one_of(st.none(), st.text(max_size=4), st.lists(st.integers(), max_size=2), st.booleans())
NON_INTS = st.one_of(NON_NUMBERS, st.floats(allow_nan=True, allow_infinity=True))
BAD_POSITIVE_INTS = st.one_of(st.integers(max_value=0), NON_INTS)
BAD_RATES = st.one_of(  # for values that must lie in [0, 1)
    st.floats(max_value=0.0, exclude_max=True),
    st.floats(min_value=1.0),
    st.just(math.nan),
    NON_NUMBERS,
)
BAD_ACTIVATIONS = st.one_of(
    st.text(max_size=12).filter(lambda s: s.lower() not in ACTIVATION_NAMES),
    st.integers(),
    st.lists(st.just("relu"), min_size=1, max_size=1),
)


def odd(n: int) -> bool:
    return n % 2 == 1


# ------------------------------------------------------------------------------------ make_divisible


@FAST
@given(value=st.floats(0.01, 1e5), divisor=st.sampled_from([1, 2, 4, 8, 16]))
def test_make_divisible_rounds_to_a_multiple_within_ten_percent(value: float, divisor: int) -> None:
    rounded = make_divisible(value, divisor)
    assert isinstance(rounded, int) and rounded % divisor == 0
    assert rounded >= divisor and rounded >= 0.9 * value


@FAST
@given(value=st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf), NON_NUMBERS))
def test_make_divisible_rejects_bad_channel_counts(value: object) -> None:
    expect_error(lambda: make_divisible(value), "channel count")  # type: ignore[arg-type]


@FAST
@given(divisor=BAD_POSITIVE_INTS, min_value=st.one_of(st.none(), st.integers(1, 16)))
def test_make_divisible_rejects_bad_divisors(divisor: object, min_value: int | None) -> None:
    expect_error(lambda: make_divisible(10, divisor, min_value), "divisor")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ layers


@st.composite
def conv_configs(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.integers(1, 3))
    padding = draw(st.sampled_from(PADDING_MODES))
    out_channels = groups * draw(st.integers(1, 4))
    norm_kind = draw(st.sampled_from(NORM_KINDS))
    norm_groups = draw(st.sampled_from([d for d in range(1, out_channels + 1) if out_channels % d == 0]))
    return {
        "in_channels": groups * draw(st.integers(1, 4)),
        "out_channels": out_channels,
        # Symmetric padding keeps "same" sizes only for odd kernels; TF SAME takes any.
        "kernel_size": draw(st.integers(1, 5).filter(odd) if padding == "symmetric" else st.integers(1, 5)),
        "stride": draw(st.integers(1, 3)),
        "dilation": draw(st.integers(1, 2)),
        "groups": groups,
        "activation": draw(st.sampled_from([None, *ACTIVATION_NAMES])),
        "norm": NormConfig(kind=norm_kind, groups=norm_groups),
        "padding": padding,
    }


@FAST
@given(config=conv_configs(), height=st.integers(1, 10), width=st.integers(1, 10))
def test_conv_norm_act_valid_configs_keep_same_size_up_to_stride(
    config: dict[str, Any], height: int, width: int
) -> None:
    layer = ConvNormAct(**config).eval()
    out = layer(torch.randn(2, config["in_channels"], height, width))
    stride = config["stride"]
    assert out.shape == (2, config["out_channels"], math.ceil(height / stride), math.ceil(width / stride))
    assert torch.isfinite(out).all()


CONV_BAD_FIELDS = st.one_of(
    st.tuples(st.sampled_from(["in_channels", "out_channels", "stride", "dilation"]), BAD_POSITIVE_INTS),
    st.tuples(
        st.just("kernel_size"), st.one_of(BAD_POSITIVE_INTS, st.integers(1, 20).filter(lambda k: not odd(k)))
    ),
    st.tuples(st.just("groups"), st.one_of(BAD_POSITIVE_INTS, st.integers(3, 10))),  # 3+ divides no 8
    st.tuples(st.just("activation"), BAD_ACTIVATIONS),
    st.tuples(st.just("padding"), st.one_of(st.text(max_size=8), st.none(), st.integers())),
    st.tuples(st.just("norm"), st.one_of(st.text(max_size=8), st.integers(), st.just({"kind": "batchnorm"}))),
)
CONV_MESSAGES = {"activation": "unknown activation", "padding": "unknown padding"}


@FAST
@given(field_value=CONV_BAD_FIELDS)
def test_conv_norm_act_rejects_bad_fields(field_value: tuple[str, object]) -> None:
    field, value = field_value
    if field == "padding" and value in PADDING_MODES:
        value = f"{value}!"
    if field == "groups" and value in (1, 2, 4, 8):
        value = 0
    kwargs: dict[str, Any] = {"in_channels": 8, "out_channels": 8, "kernel_size": 3, field: value}
    expect_error(lambda: ConvNormAct(**kwargs), CONV_MESSAGES.get(field, field))


@st.composite
def inverted_residual_configs(draw: st.DrawFn) -> dict[str, Any]:
    separable = draw(st.booleans())
    padding = draw(st.sampled_from(PADDING_MODES))
    return {
        "in_channels": draw(st.integers(1, 16)),
        "out_channels": draw(st.integers(1, 16)),
        "hidden_channels": draw(st.integers(1, 32)),
        "kernel_size": draw(st.integers(1, 5).filter(odd) if padding == "symmetric" else st.integers(1, 5)),
        "stride": draw(st.integers(1, 2)),
        "dilation": draw(st.integers(1, 2)),
        "activation": draw(st.sampled_from(ACTIVATION_NAMES)),
        "se_channels": draw(st.integers(0, 8)) if separable else 0,
        "se_gate": draw(st.sampled_from(ACTIVATION_NAMES)),
        "padding": padding,
        "drop_path_rate": draw(st.floats(0.0, 0.9)),
        "separable": separable,
    }


@FAST
@given(config=inverted_residual_configs(), size=st.integers(1, 9))
def test_inverted_residual_valid_configs(config: dict[str, Any], size: int) -> None:
    block = InvertedResidual(**config).eval()
    out = block(torch.randn(2, config["in_channels"], size, size))
    side = math.ceil(size / config["stride"])
    assert out.shape == (2, config["out_channels"], side, side)
    assert block.has_residual == (config["stride"] == 1 and config["in_channels"] == config["out_channels"])
    assert isinstance(getattr(block, "se", None), SqueezeExcite) == (config["se_channels"] > 0)


IR_BAD_FIELDS = st.one_of(
    st.tuples(st.sampled_from(["in_channels", "out_channels", "hidden_channels"]), BAD_POSITIVE_INTS),
    st.tuples(st.just("se_channels"), st.one_of(st.integers(max_value=-1), NON_INTS)),
    st.tuples(st.just("drop_path_rate"), BAD_RATES),
    st.tuples(st.just("separable"), st.one_of(st.integers(), st.text(max_size=3), st.none())),
    st.tuples(st.just("stride"), st.one_of(BAD_POSITIVE_INTS)),
    st.tuples(st.just("kernel_size"), st.one_of(BAD_POSITIVE_INTS, st.sampled_from([2, 4, 6]))),
    st.tuples(st.sampled_from(["activation", "se_gate"]), BAD_ACTIVATIONS),
)


@FAST
@given(field_value=IR_BAD_FIELDS)
def test_inverted_residual_rejects_bad_fields(field_value: tuple[str, object]) -> None:
    field, value = field_value
    kwargs: dict[str, Any] = {"in_channels": 8, "out_channels": 8, "hidden_channels": 16, "se_channels": 4}
    kwargs[field] = value
    fragment = "unknown activation" if field in ("activation", "se_gate") else field
    expect_error(lambda: InvertedResidual(**kwargs), fragment)


@FAST
@given(
    in_channels=st.integers(1, 12),
    out_channels=st.integers(1, 12),
    kernel_size=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2),
    size=st.integers(1, 9),
)
def test_depthwise_separable_valid_configs(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, size: int
) -> None:
    block = DepthwiseSeparableConv(in_channels, out_channels, kernel_size=kernel_size, stride=stride).eval()
    out = block(torch.randn(1, in_channels, size, size))
    assert out.shape == (1, out_channels, math.ceil(size / stride), math.ceil(size / stride))


@FAST
@given(
    field_value=st.one_of(
        st.tuples(st.sampled_from(["in_channels", "out_channels", "stride"]), BAD_POSITIVE_INTS),
        st.tuples(st.just("kernel_size"), st.one_of(BAD_POSITIVE_INTS, st.sampled_from([2, 4]))),
    )
)
def test_depthwise_separable_rejects_bad_fields(field_value: tuple[str, object]) -> None:
    field, value = field_value
    kwargs: dict[str, Any] = {"in_channels": 8, "out_channels": 8, field: value}
    expect_error(lambda: DepthwiseSeparableConv(**kwargs), field)


@FAST
@given(channels=st.integers(1, 16), squeeze=st.integers(1, 8), gate=st.sampled_from(ACTIVATION_NAMES))
def test_squeeze_excite_valid_configs_keep_shape(channels: int, squeeze: int, gate: str) -> None:
    x = torch.randn(2, channels, 3, 3)
    assert SqueezeExcite(channels, squeeze, gate=gate)(x).shape == x.shape


@FAST
@given(channels=st.one_of(BAD_POSITIVE_INTS, st.integers(1, 8)), squeeze=BAD_POSITIVE_INTS)
def test_squeeze_excite_rejects_bad_channels(channels: object, squeeze: object) -> None:
    expect_error(lambda: SqueezeExcite(channels, squeeze), "channels")  # type: ignore[arg-type]


NORM_BAD_FIELDS = st.one_of(
    st.tuples(st.just("kind"), st.text(max_size=10).filter(lambda s: s not in NORM_KINDS)),
    st.tuples(
        st.just("eps"),
        st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan), NON_NUMBERS),
    ),
    st.tuples(
        st.just("momentum"),
        st.one_of(
            st.floats(max_value=0.0, exclude_max=True),
            st.floats(min_value=1.0, exclude_min=True),
            st.just(math.nan),
            st.text(max_size=3),
            st.booleans(),
        ),
    ),
    st.tuples(st.just("groups"), BAD_POSITIVE_INTS),
)


@FAST
@given(field_value=NORM_BAD_FIELDS)
def test_norm_config_rejects_bad_fields(field_value: tuple[str, object]) -> None:
    field, value = field_value
    expect_error(lambda: NormConfig(**{field: value}), "norm kind" if field == "kind" else field)


@FAST
@given(groups=st.integers(1, 16), channels=st.integers(1, 64))
def test_group_norm_needs_groups_dividing_channels(groups: int, channels: int) -> None:
    config = NormConfig(kind="groupnorm", groups=groups)
    if channels % groups:  # no silent fallback to one group
        expect_error(lambda: config.create(channels), f"groups={groups}", str(channels))
    else:
        layer = config.create(channels)
        assert isinstance(layer, nn.GroupNorm) and layer.num_groups == groups


# ------------------------------------------------------------------------------------ architecture tables


@st.composite
def block_specs(draw: st.DrawFn) -> BlockSpec:
    kind = draw(st.sampled_from(BLOCK_KINDS))
    se = kind == "ir" and draw(st.booleans())
    separable = True if kind != "ir" or se else draw(st.booleans())
    return BlockSpec(
        kind,  # type: ignore[arg-type]
        draw(st.integers(1, 48)),
        repeats=draw(st.integers(1, 2)),
        stride=draw(st.sampled_from([1, 2])),
        kernel_size=draw(st.sampled_from([1, 3, 5])),
        expand_ratio=draw(st.floats(0.5, 6.0)),
        se=se,
        activation=draw(st.sampled_from(ACTIVATION_NAMES)),
        separable=separable,
    )


@st.composite
def arch_specs(draw: st.DrawFn) -> ArchSpec:
    head_channels = draw(st.one_of(st.none(), st.integers(8, 64)))
    return ArchSpec(
        name="fuzz",
        stem_channels=draw(st.integers(1, 32)),
        blocks=tuple(draw(st.lists(block_specs(), min_size=1, max_size=4))),
        stem_kernel_size=draw(st.sampled_from([1, 3, 5])),
        stem_stride=draw(st.sampled_from([1, 2])),
        head_channels=head_channels,
        head_ratio=draw(st.one_of(st.none(), st.integers(1, 6))),
        pre_logits_features=draw(st.one_of(st.none(), st.integers(8, 64))),
        scale_stem=draw(st.booleans()),
        scale_last=draw(st.booleans()),
        dropout=draw(st.floats(0.0, 0.5)),
    )


@BUILD_SETTINGS
@given(
    arch=arch_specs(),
    width_mult=st.sampled_from([0.25, 0.5, 1.0]),
    num_classes=st.integers(0, 12),
    padding=st.sampled_from(PADDING_MODES),
)
def test_valid_architecture_tables_build_working_models(
    arch: ArchSpec, width_mult: float, num_classes: int, padding: str
) -> None:
    model = build_mobilenet(arch, width_mult=width_mult, num_classes=num_classes, padding=padding).eval()
    # Reduction: stride-2 positions halve the map until it is 1/32 of the input, then dilate instead.
    reduction = arch.stem_stride
    for spec in arch.blocks:
        if spec.stride == 2 and reduction * 2 <= 32:
            reduction *= 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape[-2:] == (32 // reduction, 32 // reduction)
    assert model.feature_info[-1].reduction == reduction
    assert logits.shape == (2, num_classes or model.head_hidden_size)
    assert torch.isfinite(logits).all()


BLOCK_BAD_FIELDS = st.one_of(
    st.tuples(
        st.just("kind"), st.one_of(st.text(max_size=5).filter(lambda s: s not in BLOCK_KINDS), NON_NUMBERS)
    ),
    st.tuples(st.sampled_from(["out_channels", "repeats"]), BAD_POSITIVE_INTS),
    st.tuples(
        st.just("kernel_size"), st.one_of(BAD_POSITIVE_INTS, st.integers(1, 20).filter(lambda k: not odd(k)))
    ),
    st.tuples(
        st.just("stride"),
        st.one_of(
            st.integers().filter(lambda s: s not in (1, 2)),
            st.sampled_from([1.0, 2.0, 1.5, True]),
            NON_NUMBERS,
        ),
    ),
    st.tuples(
        st.just("expand_ratio"),
        st.one_of(
            st.floats(max_value=0.0),
            st.sampled_from([math.nan, math.inf, True]),
            st.text(max_size=3),
            st.none(),
        ),
    ),
    st.tuples(st.sampled_from(["se", "separable"]), st.one_of(st.integers(), st.text(max_size=3), st.none())),
    st.tuples(st.just("activation"), BAD_ACTIVATIONS),
)
BLOCK_MESSAGES = {"kind": "block kind", "activation": "unknown activation", "se": "se must be True or False"}


@FAST
@given(field_value=BLOCK_BAD_FIELDS)
def test_block_spec_rejects_bad_fields(field_value: tuple[str, object]) -> None:
    field, value = field_value
    kwargs: dict[str, Any] = {"kind": "ir", "out_channels": 16, field: value}
    expect_error(lambda: BlockSpec(**kwargs), BLOCK_MESSAGES.get(field, field))


def test_block_spec_rejects_inconsistent_combinations() -> None:
    expect_error(lambda: BlockSpec("ds", 16, se=True), "squeeze-excite")
    expect_error(lambda: BlockSpec("conv", 16, separable=False), "separable=False")
    expect_error(lambda: BlockSpec("ir", 16, se=True, separable=False), "separable=False")


ARCH_BAD_FIELDS = st.one_of(
    st.tuples(st.just("name"), st.one_of(st.just(""), st.integers(), st.none())),
    st.tuples(st.just("stem_channels"), BAD_POSITIVE_INTS),
    st.tuples(st.just("blocks"), st.sampled_from([(), [], "ir", (1,), None, ({"kind": "ir"},)])),
    st.tuples(st.just("stem_kernel_size"), st.one_of(BAD_POSITIVE_INTS, st.sampled_from([2, 4]))),
    st.tuples(st.just("stem_stride"), st.one_of(st.sampled_from([0, 3, -1, 1.0, True, 2.5]), NON_NUMBERS)),
    st.tuples(
        st.sampled_from(["head_channels", "head_ratio", "pre_logits_features"]),
        BAD_POSITIVE_INTS.filter(lambda v: v is not None),
    ),
    st.tuples(
        st.sampled_from(["stem_activation", "head_activation", "pre_logits_activation", "se_gate"]),
        BAD_ACTIVATIONS,
    ),
    st.tuples(st.just("norm"), st.one_of(st.text(max_size=5), st.integers(), st.none())),
    st.tuples(
        st.sampled_from(["scale_stem", "scale_last", "keep_last_wide"]),
        st.one_of(st.integers(), st.text(max_size=3), st.none()),
    ),
    st.tuples(st.just("dropout"), BAD_RATES),
    st.tuples(
        st.just("default_resolution"),
        st.one_of(st.integers(max_value=MIN_INPUT_SIZE - 1), NON_INTS),
    ),
)


@FAST
@given(field_value=ARCH_BAD_FIELDS)
def test_arch_spec_rejects_bad_fields(field_value: tuple[str, object]) -> None:
    field, value = field_value
    kwargs: dict[str, Any] = {"name": "fuzz", "stem_channels": 16, "blocks": (BlockSpec("ir", 16),)}
    kwargs[field] = value
    fragment = "unknown activation" if field.endswith(("activation", "gate")) else field
    expect_error(lambda: ArchSpec(**kwargs), fragment)


# ------------------------------------------------------------------------------------ create_model options


@st.composite
def model_options(draw: st.DrawFn) -> dict[str, Any]:
    options: dict[str, Any] = {
        "width_mult": draw(st.floats(0.1, 0.5)),
        "num_classes": draw(st.integers(0, 20)),
        "in_channels": draw(st.integers(1, 4)),
        "dropout": draw(st.floats(0.0, 0.9)),
        "drop_path_rate": draw(st.floats(0.0, 0.5)),
        "output_stride": draw(st.sampled_from([8, 16, 32])),
        "dilate": draw(st.booleans()),
        "norm": draw(st.sampled_from(NORM_KINDS)),
        "norm_eps": draw(st.one_of(st.none(), st.floats(1e-6, 1e-2))),
        "activation": draw(st.one_of(st.none(), st.sampled_from(ACTIVATION_NAMES))),
        "padding": draw(st.sampled_from(PADDING_MODES)),
        "small_input": draw(st.booleans()),
    }
    return options


@BUILD_SETTINGS
@given(name=st.sampled_from(MODELS), options=model_options(), size=st.integers(MIN_INPUT_SIZE, 40))
def test_every_model_builds_and_runs_with_valid_options(
    name: str, options: dict[str, Any], size: int
) -> None:
    if name in WITHOUT_RESIDUALS and options["drop_path_rate"]:  # nothing to drop: refused, not ignored
        expect_error(lambda: create_model(name, **options), "drop_path_rate")
        options = {**options, "drop_path_rate": 0.0}
    model = create_model(name, **options).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, options["in_channels"], size, size))
    assert logits.shape == (1, options["num_classes"] or model.head_hidden_size)
    assert torch.isfinite(logits).all()
    assert model.feature_info[-1].reduction <= options["output_stride"]


NEAR_INTS = st.sampled_from([2.0, 16.0, True, False, "16", None])
BAD_MODEL_OPTIONS = st.one_of(
    st.tuples(
        st.just("width_mult"),
        st.one_of(
            st.floats(max_value=0.0),
            st.floats(min_value=10.001),
            st.sampled_from([math.nan, math.inf, True, "0.5", None, 1e9]),
        ),
    ),
    st.tuples(
        st.just("num_classes"),
        st.one_of(
            st.integers(max_value=-1),
            st.integers(min_value=100_001),
            NEAR_INTS.filter(lambda v: v is not False),
        ),
    ),
    st.tuples(
        st.just("in_channels"), st.one_of(st.integers(max_value=0), st.integers(min_value=1025), NEAR_INTS)
    ),
    # dropout=None means "the architecture's"; drop_path_rate has no such default.
    st.tuples(st.just("dropout"), BAD_RATES.filter(lambda v: v is not None)),
    st.tuples(st.just("drop_path_rate"), BAD_RATES),
    st.tuples(
        st.just("output_stride"),
        st.one_of(st.integers().filter(lambda s: s not in (8, 16, 32)), NEAR_INTS, st.just(32.0)),
    ),
    st.tuples(
        st.just("norm"), st.one_of(st.text(max_size=8).filter(lambda s: s not in NORM_KINDS), st.integers())
    ),
    st.tuples(
        st.just("norm_eps"),
        st.one_of(st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf, "1e-3", True])),
    ),
    st.tuples(st.just("activation"), BAD_ACTIVATIONS),
    st.tuples(
        st.just("padding"),
        st.one_of(st.text(max_size=8).filter(lambda s: s not in PADDING_MODES), st.none(), st.integers()),
    ),
    st.tuples(
        st.sampled_from(["features_only", "keep_last_wide", "fix_stem", "dilate"]),
        st.one_of(st.integers(), st.text(max_size=3)),
    ),
    st.tuples(  # small_input also takes 0, 1 or 2 (strides to drop)
        st.just("small_input"),
        st.one_of(st.integers().filter(lambda n: not 0 <= n <= 2), st.text(max_size=3), st.floats()),
    ),
    st.tuples(
        st.just("out_indices"),
        st.one_of(
            st.integers(),
            st.text(min_size=1, max_size=3),
            st.just(()),
            st.lists(st.integers(min_value=9), min_size=1, max_size=2).map(tuple),
            st.sampled_from([(True,), (1.0,)]),
        ),
    ),
)
OPTION_MESSAGES = {"activation": "unknown activation", "padding": "unknown padding"}


@MODELS_SETTINGS
@given(name=st.sampled_from(MODELS), option_value=BAD_MODEL_OPTIONS)
def test_every_model_rejects_bad_options_naming_them(name: str, option_value: tuple[str, object]) -> None:
    option, value = option_value
    kwargs: dict[str, Any] = {"width_mult": 0.25, option: value}  # small, in case an error comes late
    if option == "out_indices":
        kwargs["features_only"] = True
    expect_error(lambda: create_model(name, **kwargs), OPTION_MESSAGES.get(option, option))


@pytest.mark.parametrize("name", [n for n in MODELS if "efficientnet" in n])
def test_efficientnet_width_errors_quote_the_callers_value(name: str) -> None:
    expect_error(lambda: create_model(name, width_mult="1"), "width_mult", "'1'")
    expect_error(lambda: create_model(name, width_mult=-1), "got -1")
    expect_error(lambda: create_model(name, width_mult=1e6), "width_mult=1000000.0")


IDENTIFIERS = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)


@FAST
@given(name=st.sampled_from(MODELS), option=IDENTIFIERS)
def test_unknown_options_raise_type_error_naming_them(name: str, option: str) -> None:
    if option in BuildOptions.__optional_keys__ or option == "width_mult":
        option = f"{option}_x"
    error = expect_error(lambda: create_model(name, **{option: 1}), repr(option))
    assert isinstance(error, TypeError)


@FAST
@given(name=st.one_of(st.text(max_size=20), st.none(), st.integers()))
def test_unknown_model_names_fail_clearly(name: object) -> None:
    if name in MODELS:
        name = f"{name}_"
    expect_error(lambda: create_model(name), "model")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ bad input tensors


@functools.cache
def tiny_model(name: str) -> nn.Module:
    return create_model(name, width_mult=0.25, num_classes=3).eval()


BAD_INPUTS = st.one_of(
    st.tuples(
        st.just("ndim"), st.lists(st.integers(1, 3), min_size=0, max_size=5).filter(lambda s: len(s) != 4)
    ),
    st.tuples(st.just("channels"), st.integers(0, 8).filter(lambda c: c != 3)),
    st.tuples(
        st.just("size"), st.tuples(st.integers(1, 40), st.integers(1, 40)).filter(lambda hw: min(hw) < 32)
    ),
    st.tuples(
        st.just("dtype"),
        st.sampled_from([torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool, torch.complex64]),
    ),
    st.tuples(st.just("float_dtype"), st.sampled_from([torch.float64, torch.float16, torch.bfloat16])),
)
INPUT_MESSAGES = {
    "ndim": "4-D",
    "channels": "input channels",
    "size": "at least",  # and the model's min_input_size
    "dtype": "floating-point",
    "float_dtype": "does not match",
}


@FAST
@given(name=st.sampled_from(MODELS), bad=BAD_INPUTS)
def test_bad_input_tensors_raise_clear_value_errors(name: str, bad: tuple[str, Any]) -> None:
    kind, value = bad
    model = tiny_model(name)
    shape: tuple[int, ...] = (1, 3, 32, 32)
    dtype = torch.float32
    message = INPUT_MESSAGES[kind]
    if kind == "ndim":
        shape = tuple(value)
    elif kind == "channels":
        shape = (1, value, 32, 32)
    elif kind == "size":  # drawn below 32, then scaled below the model's own minimum (CIFAR networks: 9)
        least = model.min_input_size
        shape = (1, 3, *(max(1, side * least // 32) for side in value))
        message += f" {least}"
    else:
        dtype = value
    x = torch.zeros(shape, dtype=dtype)
    with torch.no_grad():
        error = expect_error(lambda: model(x), message)
    assert isinstance(error, ValueError)


def test_forward_rejects_non_tensors() -> None:
    expect_error(lambda: tiny_model("mobilenet_v2")([[0.0]]), "torch.Tensor")


# ------------------------------------------------------------------------------------ CLI


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``mobilenets ARGV`` in-process under the memory cap: (status, stdout, stderr)."""
    with memory_cap():
        return run_cli_in_process(argv)


def assert_usage_error(argv: list[str], *fragments: str) -> str:
    """The command fails with status 2 and one ``mobilenets CMD: error: ...`` line naming the problem."""
    code, out, err = run_cli(argv)
    assert code == 2, f"{argv}: status {code}, stderr {err!r}"
    assert "Traceback" not in err and not out
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"mobilenets {argv[0]}: error: "), last
    for fragment in fragments:
        assert fragment in last, f"{fragment!r} not in {last!r}"
    return last


# The models' own rule is MIN_INPUT_SIZE..MAX_INPUT_SIZE: anything outside fails before any allocation.
ABSURD_RESOLUTIONS = st.one_of(
    st.integers(max_value=MIN_INPUT_SIZE - 1), st.integers(min_value=MAX_INPUT_SIZE + 1, max_value=10**15)
)


@CLI_SETTINGS
@given(name=st.sampled_from(MODELS), resolution=ABSURD_RESOLUTIONS)
def test_summary_rejects_absurd_resolutions(name: str, resolution: int) -> None:
    assert_usage_error(
        ["summary", name, "--width-mult", "0.25", "--resolution", str(resolution)], "resolution"
    )


@pytest.mark.parametrize("resolution", [0, -5, 100_000, 10**6, 10**9])
def test_summary_absurd_resolution_examples(resolution: int) -> None:
    """0 used to fall back silently to the default resolution; 100000 tried to allocate 120 GB."""
    assert_usage_error(
        ["summary", "mobilenet_v2", "--resolution", str(resolution)], "resolution", str(resolution)
    )


@BUILD_SETTINGS
@given(
    name=st.sampled_from(MODELS),
    batch_size=st.integers(10**6, 10**12),
    resolution=st.integers(MIN_INPUT_SIZE, 64),
)
def test_summary_rejects_batches_too_large_to_analyse(name: str, batch_size: int, resolution: int) -> None:
    argv = ["summary", name, "--width-mult", "0.25", "--resolution", str(resolution)]
    assert_usage_error([*argv, "--batch-size", str(batch_size)], "GiB", "batch_size")


SUMMARY_BAD_FLAGS = st.one_of(
    st.tuples(
        st.just("--width-mult"),
        st.one_of(
            st.floats(max_value=0.0), st.floats(min_value=10.001), st.sampled_from([math.nan, math.inf])
        ),
    ),
    st.tuples(st.just("--num-classes"), st.one_of(st.integers(max_value=-1), st.integers(min_value=100_001))),
    st.tuples(st.just("--batch-size"), st.integers(max_value=0)),
    st.tuples(
        st.just("--memory-efficient"),
        st.one_of(st.integers(max_value=0), st.text(min_size=1, max_size=6).filter(lambda s: s != "channel")),
    ),
)
SUMMARY_MESSAGES = {
    "--width-mult": "width_mult",
    "--num-classes": "num_classes",
    "--batch-size": "batch_size",
    "--memory-efficient": "--memory-efficient",
}


@CLI_SETTINGS
@given(name=st.sampled_from(MODELS), flag_value=SUMMARY_BAD_FLAGS)
def test_summary_rejects_bad_options(name: str, flag_value: tuple[str, object]) -> None:
    flag, value = flag_value
    text = str(value)
    if flag == "--memory-efficient" and isinstance(value, str):
        with contextlib.suppress(ValueError):
            if int(text) > 0:
                text = "0"
    argv = ["summary", name, "--width-mult=0.25", "--resolution=32", f"{flag}={text}"]
    assert_usage_error(argv, SUMMARY_MESSAGES[flag])


@settings(max_examples=6, **COMMON)
@given(
    name=st.sampled_from(MODELS),
    width=st.sampled_from(["0.25", "0.35"]),
    resolution=st.integers(MIN_INPUT_SIZE, 40),
    num_classes=st.integers(0, 20),
)
def test_summary_valid_options_report_the_requested_input(
    name: str, width: str, resolution: int, num_classes: int
) -> None:
    argv = ["summary", name, "--width-mult", width, "--resolution", str(resolution)]
    code, out, err = run_cli([*argv, "--num-classes", str(num_classes), "--format", "json"])
    assert code == 0, err
    data = json.loads(out)
    assert data["input_shape"] == [1, 3, resolution, resolution]
    assert data["total_params"] > 0 and data["peak_activation_bytes"] > 0
    if num_classes:
        assert data["layers"][-1]["output_shape"] == [1, num_classes]


@CLI_SETTINGS
@given(pattern=st.one_of(st.text(max_size=8), st.sampled_from(["*", "mobilenet_v3*", "*lite?", "[ec]*"])))
def test_list_prints_exactly_the_matching_models_or_fails_clearly(pattern: str) -> None:
    if pattern.startswith("-"):
        pattern = f"x{pattern}"
    expected = sorted(n for n in MODELS if fnmatch.fnmatch(n, pattern))
    code, out, err = run_cli(["list", "--names-only", pattern])
    if expected:
        assert code == 0, err
        assert out.split() == expected
    else:
        assert_usage_error(["list", "--names-only", pattern], "no model matches")


# Each flag with values that are valid for argparse's type but invalid for TrainConfig, and the field
# name the error must quote. None of them may reach training (train() is replaced by a tripwire).
TRAIN_BAD_FLAGS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "--epochs": ("epochs", st.integers(max_value=0)),
    "--batch-size": ("batch_size", st.integers(max_value=1)),
    "--lr": ("lr", st.one_of(st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf]))),
    "--resolution": (
        "img_size",
        st.one_of(st.integers(max_value=MIN_INPUT_SIZE - 1), st.integers(min_value=513, max_value=10**12)),
    ),
    "--width-mult": (
        "width_mult",
        st.one_of(
            st.floats(max_value=0.0), st.floats(min_value=10.001), st.sampled_from([math.nan, math.inf])
        ),
    ),
    "--dropout": (
        "dropout",
        st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0), st.just(math.nan)),
    ),
    "--drop-path": ("drop_path_rate", st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0))),
    "--val-split": ("val_split", st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0))),
    "--workers": ("workers", st.one_of(st.integers(max_value=-1), st.integers(min_value=257))),
    "--seed": ("seed", st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63))),
    "--momentum": ("momentum", st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0))),
    "--weight-decay": ("weight_decay", st.one_of(st.floats(max_value=-1e-9), st.just(math.inf))),
    "--warmup-epochs": ("warmup_epochs", st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=5.0))),
    "--lr-step-epochs": ("lr_step_epochs", st.integers(max_value=0)),
    "--lr-gamma": (
        "lr_gamma",
        st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True)),
    ),
    "--label-smoothing": ("label_smoothing", st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0))),
    "--ema-decay": ("ema_decay", st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0))),
    "--grad-clip": ("grad_clip", st.one_of(st.floats(max_value=-1e-9), st.just(math.inf))),
    "--model": ("model", st.text(max_size=12).filter(lambda s: s not in MODELS and not s.startswith("-"))),
}


@st.composite
def bad_train_flags(draw: st.DrawFn) -> tuple[str, str, str]:
    flag = draw(st.sampled_from(sorted(TRAIN_BAD_FLAGS)))
    field, values = TRAIN_BAD_FLAGS[flag]
    return flag, field, str(draw(values))


@contextlib.contextmanager
def training_tripwire() -> Iterator[None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("an invalid configuration reached training")

    with mock.patch("mobilenets.training.train", side_effect=fail):
        yield


@CLI_SETTINGS
@given(flag_field_value=bad_train_flags())
def test_train_rejects_bad_options_before_training(flag_field_value: tuple[str, str, str]) -> None:
    flag, field, value = flag_field_value
    with tempfile.TemporaryDirectory() as tmp, training_tripwire():
        out = Path(tmp) / "run"
        argv = ["train", "--data", "digits", "--epochs", "5", "--out", str(out), f"{flag}={value}"]
        assert_usage_error(argv, field)
        assert not out.exists()


@FAST
@given(
    flag=st.sampled_from(
        ["--epochs", "--batch-size", "--resolution", "--workers", "--seed", "--lr", "--width-mult"]
    ),
    value=st.text(min_size=1, max_size=8),
)
def test_train_rejects_unparsable_numbers_with_argparse_status_2(flag: str, value: str) -> None:
    parse = int if flag in ("--epochs", "--batch-size", "--resolution", "--workers", "--seed") else float
    with contextlib.suppress(ValueError):
        parse(value)
        value = f"{value}x"  # make it unparsable
    with tempfile.TemporaryDirectory() as tmp, training_tripwire():
        code, _, err = run_cli(["train", "--out", str(Path(tmp) / "run"), f"{flag}={value}"])
    assert code == 2
    assert "Traceback" not in err
    assert f"argument {flag}" in err and "invalid" in err


@pytest.mark.parametrize(
    ("data", "fragment"),
    [("/nonexistent/fuzz/path", "does not exist"), ("cifar10:", "cifar10"), ("", "data spec")],
)
def test_train_rejects_bad_data_specs_before_training(data: str, fragment: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, training_tripwire():
        argv = ["train", "--out", str(Path(tmp) / "run"), f"--data={data}"]
        assert_usage_error(argv, fragment)


@pytest.mark.parametrize("flag", ["--resolution", "--img-size"])
@pytest.mark.parametrize("img_size", [513, 4096, 10**6, 10**9])
def test_train_absurd_img_sizes_fail_before_loading_data(flag: str, img_size: int) -> None:
    """Digits at 100,000 px used to attempt a 72-petabyte upsampling before failing."""
    with tempfile.TemporaryDirectory() as tmp, training_tripwire():
        argv = ["train", "--data", "digits", "--out", str(Path(tmp) / "run"), flag, str(img_size)]
        assert_usage_error(argv, "img_size", str(img_size))
