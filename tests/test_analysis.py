from __future__ import annotations

import json

import pytest
import torch

import mobilenets
from mobilenets.analysis import LAYER_KINDS, summarize
from mobilenets.analysis.formatting import to_csv


def test_v2_peak_is_the_expanded_tensor_of_the_second_block() -> None:
    summary = summarize(mobilenets.mobilenet_v2())
    # depthwise conv of block 2: input 96×112×112 + output 96×56×56, fp32
    assert summary.peak_activation_bytes == (96 * 112 * 112 + 96 * 56 * 56) * 4
    assert summary.peak_op == "blocks.1.0.conv_dw"
    half = summarize(mobilenets.mobilenet_v2(), dtype="float16")
    assert half.peak_activation_bytes * 2 == summary.peak_activation_bytes
    # A model already in half precision is analysed as it is (its input follows its weights' dtype).
    halved = summarize(mobilenets.mobilenet_v2().to(torch.bfloat16), dtype="bfloat16")
    assert halved.total_macs == summary.total_macs
    assert halved.peak_activation_bytes == half.peak_activation_bytes


def test_a_backbones_feature_maps_stay_alive_until_it_returns() -> None:
    """forward returns every level: the first (16×112×112) is alive at the peak (block 1.0's depthwise)."""
    backbone = summarize(mobilenets.mobilenet_v2(features_only=True))
    classifier = summarize(mobilenets.mobilenet_v2())
    assert backbone.peak_op == classifier.peak_op == "blocks.1.0.conv_dw"
    assert backbone.peak_activation_bytes == classifier.peak_activation_bytes + 16 * 112 * 112 * 4
    levels = [(16, 112), (24, 56), (32, 28), (96, 14), (320, 7)]
    assert backbone.schedule[-1].live_bytes >= sum(c * side * side * 4 for c, side in levels)


def test_residual_input_stays_alive_until_the_addition() -> None:
    summary = summarize(mobilenets.mobilenet_v2())
    by_name = {op.name: op.live_bytes for op in summary.schedule}
    # blocks.1.1 has a residual: during its expansion, its 24×56×56 input is held for the final add.
    block_input = 24 * 56 * 56 * 4
    expanded = 144 * 56 * 56 * 4
    assert by_name["blocks.1.1.conv_pw"] == block_input + expanded
    # block 2.0 strides and has no residual: only its own input and output are alive.
    assert by_name["blocks.2.0.conv_pw"] == (24 * 56 * 56 + 144 * 56 * 56) * 4
    assert by_name["blocks.1.1.add"] == 3 * block_input


def test_a_skip_added_in_a_modules_own_code_stays_alive_until_the_addition() -> None:
    """``x + f(x)`` outside this library's blocks (torchvision's, a user's) keeps ``x`` alive: the same
    network built by torchvision has the same live bytes at every convolution as ours."""
    from torchvision.models import mobilenet_v2 as torchvision_mobilenet_v2

    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(8, 32, 1), torch.nn.Conv2d(32, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.b(torch.relu(self.a(x)))

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), Residual())
    by_name = {op.name: op.live_bytes for op in summarize(net, resolution=32).schedule}
    x, hidden = 8 * 32 * 32 * 4, 32 * 32 * 32 * 4
    assert by_name["1.b"] == x + hidden + x  # the skip, the relu's output, b's output

    theirs = summarize(torchvision_mobilenet_v2()).schedule
    ours = [op for op in summarize(mobilenets.mobilenet_v2()).schedule if not op.name.endswith(".add")]
    assert [op.name for op in theirs][7] == "features.3.conv.1.0"  # a block with a residual
    assert [op.live_bytes for op in theirs[:-1]] == [op.live_bytes for op in ours[: len(theirs) - 1]]


def test_the_analysis_leaves_the_model_as_it_was_and_says_what_it_does_not_count() -> None:
    """Each submodule's mode comes back (a frozen norm stays frozen); the training-memory probe restores
    batch norm's statistics and the random state; a functional convolution is warned about, and a module
    called twice has its parameters counted once."""
    from mobilenets.analysis import saved_for_backward_bytes

    model = mobilenets.mobilenet_v2(width_mult=0.35).train()
    model.stem.bn.eval()
    summarize(model, resolution=64)
    assert model.training and not model.stem.bn.training and model.blocks.training
    before = {name: b.clone() for name, b in model.named_buffers()}
    torch.manual_seed(0)
    saved_for_backward_bytes(model, torch.randn(2, 3, 64, 64))
    after_probe = torch.rand(1)
    torch.manual_seed(0)
    torch.randn(2, 3, 64, 64)
    assert torch.equal(after_probe, torch.rand(1))  # dropout's draws were forked off
    assert all(torch.equal(b, before[name]) for name, b in model.named_buffers())

    class Reused(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(8, 3, 3, 3))
            self.conv = torch.nn.Conv2d(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(torch.nn.functional.conv2d(x, self.weight)))

    with pytest.warns(UserWarning, match=r"194,400 mult-adds of Reused are in operations other than"):
        summary = summarize(Reused(), resolution=32)
    assert [layer.params for layer in summary.layers] == [72, 0] and summary.total_params == 216 + 72
    assert summarize(torch.nn.Conv2d(3, 8, 3), resolution=32).peak_op == "Conv2d"
    from mobilenets.layers.conv_norm_act import ConvNormAct

    assert [op.name for op in summarize(ConvNormAct(3, 8), resolution=32).schedule] == ["ConvNormAct"]
    with pytest.raises(ValueError, match="meta device"):
        summarize(mobilenets.mobilenet_v2(width_mult=0.35).to("meta"), resolution=32)

    class Attention(torch.nn.Module):  # PyTorch's CPU attention kernel, which FlopCounterMode lacks
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.conv(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (1, 1, 1024, 8)
            return torch.nn.functional.scaled_dot_product_attention(tokens, tokens, tokens)

    with pytest.warns(UserWarning, match=f"{2 * 1024 * 1024 * 8:,} mult-adds of Attention"):
        summarize(Attention(), resolution=32)
    with pytest.raises(ValueError, match="Sequential has no layer the analysis schedules"):
        summarize(torch.nn.Sequential(torch.nn.ReLU()), resolution=32)


def test_expanded_tensor_stays_alive_until_the_next_blocks_addition() -> None:
    """With shortcuts between the expanded layers, block 2.1's expanded 192×28×28 tensor waits for block
    2.2's addition: it is alive during 2.1's projection and 2.2's expansion, and the sum makes a third."""
    summary = summarize(mobilenets.mobilenet_v2(shortcut="expansion"))
    by_name = {op.name: op.live_bytes for op in summary.schedule}
    expanded, bottleneck = 192 * 28 * 28 * 4, 32 * 28 * 28 * 4
    assert by_name["blocks.2.1.conv_pwl"] == 2 * expanded + bottleneck  # 2.1's expansion, its dw output
    assert by_name["blocks.2.2.conv_pw"] == 2 * expanded + bottleneck  # 2.1's expansion and 2.2's
    assert by_name["blocks.2.2.add"] == 3 * expanded
    names = [op.name for op in summary.schedule]
    assert names.index("blocks.2.2.conv_pw") + 1 == names.index("blocks.2.2.add")
    assert "blocks.2.1.add" not in by_name  # block 2.0 strides: no shortcut into 2.1
    assert summary.peak_activation_bytes == summarize(mobilenets.mobilenet_v2()).peak_activation_bytes


def test_tf_same_convs_count_the_padded_copy_they_read() -> None:
    """Conv2dSame pads its input into a new tensor before convolving: that copy is alive in its op."""
    plain = {op.name: op.live_bytes for op in summarize(mobilenets.mobilenet_v2()).schedule}
    same = {op.name: op.live_bytes for op in summarize(mobilenets.mobilenet_v2(padding="tf_same")).schedule}
    # stride 2 on 112×112: TF pads 0 before and 1 after, so the depthwise conv reads 96×113×113
    assert same["blocks.1.0.conv_dw"] == plain["blocks.1.0.conv_dw"] + 96 * 113 * 113 * 4
    assert same["blocks.1.0.conv_pw"] == plain["blocks.1.0.conv_pw"]  # 1×1 convs pad nothing
    assert same["blocks.1.1.conv_dw"] == plain["blocks.1.1.conv_dw"]  # stride 1, 3×3: SAME is symmetric


def test_layer_kinds_and_shares() -> None:
    summary = summarize(mobilenets.mobilenet_v3_large())
    kinds = {layer.kind for layer in summary.layers}
    assert kinds == set(LAYER_KINDS)
    shares = summary.share_by_kind()
    assert sum(s["macs"] for s in shares.values()) == pytest.approx(1.0)
    assert sum(s["params"] for s in shares.values()) == pytest.approx(1.0)
    # Without a classifier (num_classes=0), v3's last Linear is pre_logits.fc, not a classifier.
    headless = summarize(mobilenets.mobilenet_v3_large(num_classes=0), resolution=64)
    assert {layer.name: layer.kind for layer in headless.layers}["pre_logits.fc"] == "linear"
    assert "classifier" not in headless.share_by_kind()
    v1 = summarize(mobilenets.mobilenet_v1()).share_by_kind()
    # v1 paper Table 2: 1×1 convs carry 94.86% of the mult-adds, depthwise 3.06%.
    assert round(v1["pointwise"]["macs"] * 100, 2) == 94.86
    assert round(v1["depthwise"]["macs"] * 100, 2) == 3.06
    # A norm's parameters go to the layer that ran before it, not the one registered before it:
    # dwlast's first block registers conv_dw then conv_pw but runs conv_pw, conv_dw, pool, BatchNorm.
    dwlast = summarize(mobilenets.create_model("cifar_separable_dwlast"), resolution=32)
    params = {layer.name: layer.params for layer in dwlast.layers}
    assert (params["blocks.0.0.conv_pw"], params["blocks.0.0.conv_dw"]) == (24 * 64, 64 * 9 + 2 * 64)
    assert sum(params.values()) == dwlast.total_params


def test_compare_standard_ratios() -> None:
    summary = summarize(mobilenets.mobilenet_v1(), compare_standard=True)
    assert len(summary.comparisons) == 13
    for c in summary.comparisons:
        assert c.measured_ratio == pytest.approx(c.theoretical_ratio, rel=1e-9)
        assert c.standard_macs > 8 * c.separable_macs * 0.9
        # Weights on both sides (norms left out of both): the same ratio as the mult-adds
        assert c.separable_params / c.standard_params == pytest.approx(c.theoretical_ratio, rel=1e-9)
    # Inverted residuals pair the depthwise conv with its projection, never with the expansion before it
    for name in ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0"):
        comparisons = summarize(
            mobilenets.create_model(name), resolution=64, compare_standard=True
        ).comparisons
        assert comparisons and all(c.depthwise_first for c in comparisons), name
    # Blocks run pointwise first pair the other way round, and save 1/C_in + 1/K²
    dwlast = summarize(
        mobilenets.create_model("cifar_separable_dwlast"), resolution=32, compare_standard=True
    )
    first = {c.depthwise: c.depthwise_first for c in dwlast.comparisons}
    assert first == {f"blocks.{i}.0.conv_dw": i not in (0, 2) for i in range(6)}
    widening = dwlast.comparisons[0]  # 24 → 64 channels, stride 1
    assert widening.measured_ratio == pytest.approx(1 / 24 + 1 / 9, rel=1e-9) == widening.theoretical_ratio


def test_json_and_csv_outputs() -> None:
    summary = summarize(mobilenets.mobilenet_v3_small(), resolution=128, compare_standard=True)
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["total_params"] == 2_542_856
    assert data["total_macs"] == sum(layer["macs"] for layer in data["layers"])
    assert data["peak_activation_bytes"] > 0
    assert data["separable_vs_standard"]
    rows = to_csv(summary).strip().splitlines()
    assert rows[0].startswith("name,kind")
    assert rows[-1].startswith("TOTAL") and str(summary.total_macs) in rows[-1]


def test_summary_rejects_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="resolution must be an integer from 32 to 4096 pixels, got 16"):
        summarize(mobilenets.mobilenet_v2(), resolution=16)
    # A network with strides dropped takes smaller inputs, down to its total stride; chunked too.
    assert summarize(mobilenets.mobilenet_v2(small_input=True), resolution=16).input_shape[-1] == 16
    from mobilenets.deploy.memory_efficient import summarize_memory_efficient

    small = mobilenets.mobilenet_v2(width_mult=0.35, small_input=True)
    assert summarize_memory_efficient(small, 4, resolution=16).peak_activation_bytes > 0
    with pytest.raises(ValueError, match="resolution must be an integer from 8 to 4096 pixels, got 4"):
        summarize(mobilenets.mobilenet_v2(small_input=True), resolution=4)
    with pytest.raises(ValueError, match="dtype"):
        summarize(mobilenets.mobilenet_v2(), dtype="float64")
    with pytest.raises(ValueError, match=r"unknown dtype \['float16'\]"):
        summarize(mobilenets.mobilenet_v2(), dtype=["float16"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        summarize("mobilenet_v2")  # type: ignore[arg-type]
    # The memory check counts pixels: a grey input skips it no sooner than an RGB one (105 px: checked)
    from mobilenets.analysis import summary as summary_module

    monkeypatch.setattr(summary_module, "ANALYSIS_BUDGET_BYTES", 2**20)
    grey = mobilenets.mobilenet_v2(width_mult=0.35, in_channels=1)
    with pytest.raises(ValueError, match=r"analysing a 1×1×105×105 input would hold about 0.0 GiB"):
        summarize(grey, resolution=105)
    # memory_efficient's own full-resolution schedules come after the check, not before it (at 4096
    # px, 10 GB and a minute went by before the refusal)
    import mobilenets.deploy.memory_efficient as lean

    monkeypatch.setattr(lean, "probe_image", lambda *_: pytest.fail("probed before the budget check"))
    with pytest.raises(ValueError, match=r"analysing a 1×3×128×128 input"):
        summarize_memory_efficient(mobilenets.mobilenet_v2(width_mult=0.35), 4, resolution=128)


def test_saved_for_backward_bytes_counts_each_saved_storage_once() -> None:
    from mobilenets.analysis import saved_for_backward_bytes

    x = torch.randn(4, 8, requires_grad=True)
    # x * x saves x twice (one storage); relu saves its output; the sum saves nothing but a shape
    assert saved_for_backward_bytes(lambda t: (t * t).sum(), x) == x.nbytes
    assert saved_for_backward_bytes(lambda t: torch.relu(t * 2), x) == x.nbytes
    assert saved_for_backward_bytes(lambda t: torch.relu(t * t), x) == 2 * x.nbytes
    with torch.no_grad():  # gradients are switched on for the measurement
        assert saved_for_backward_bytes(lambda t: t * t, x) == x.nbytes
    assert saved_for_backward_bytes(lambda t: t * t, x.detach()) == 0  # nothing needs gradients
    # A module's weights are saved by autograd too, but they are not activation memory.
    linear = torch.nn.Linear(8, 512, bias=False)
    assert saved_for_backward_bytes(linear, x) == x.nbytes  # not + the 16 KB weight
