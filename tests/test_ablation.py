"""``mobilenets ablate``: arms that differ in one builder option, trained alike, compared with intervals."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from scipy import stats as scipy_stats
from torch import nn

import mobilenets
from mobilenets.ablation import CLAIMS, difference, get_claim, run_ablation
from mobilenets.ablation.run import count_skips
from mobilenets.ablation.stats import Summary
from mobilenets.errors import UsageError
from mobilenets.layers import ExpansionShortcutStage, InvertedResidual
from mobilenets.layers.inverted_residual import SHORTCUTS

from .conftest import run_cli

# --- the arms are builder options ------------------------------------------------------------------------


@pytest.mark.parametrize("claim", list(CLAIMS))
def test_every_arm_builds_and_differs_from_the_reference_only_where_it_says(claim: str) -> None:
    spec = get_claim(claim)
    reference = mobilenets.create_model(spec.model, width_mult=0.5, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    for arm in spec.arms[1:]:
        model = mobilenets.create_model(spec.model, width_mult=0.5, num_classes=10, **arm.options)
        model(x).sum().backward()  # trains
        if "separable" in arm.options:  # the standard-convolution twin: more weights, same layout
            assert sum(p.numel() for p in model.parameters()) > 3 * sum(
                p.numel() for p in reference.parameters()
            )
        else:  # the same tensors: only the wiring or an activation changes
            assert model.state_dict().keys() == reference.state_dict().keys()
            model.load_state_dict(reference.state_dict())
            with torch.no_grad():
                big = x * 1000  # past ReLU6's cap, so ReLU and ReLU6 differ even at initialisation
                assert not torch.allclose(model.eval()(big), reference.eval()(big), rtol=1e-3, atol=0)


def test_shortcut_options_move_or_remove_the_skips() -> None:
    none = mobilenets.mobilenet_v2(shortcut="none")
    assert not any(block.has_residual for _, block in none.iter_blocks())
    default = mobilenets.mobilenet_v2()
    assert sum(block.has_residual for _, block in default.iter_blocks()) == 10
    relu = mobilenets.mobilenet_v2(projection_activation="relu6")
    assert all(
        isinstance(block.conv_pwl.act, nn.ReLU6)
        for _, block in relu.iter_blocks()
        if hasattr(block, "conv_pwl")
    )
    assert isinstance(default.blocks[1][1].conv_pwl.act, nn.Identity)  # linear by default
    with pytest.raises(ValueError, match="mobilenet_v1 has no inverted residual blocks"):
        mobilenets.mobilenet_v1(shortcut="none")
    with pytest.raises(ValueError, match="unknown shortcut 'resnet'"):
        mobilenets.mobilenet_v2(shortcut="resnet")
    with pytest.raises(ValueError, match="no per-block features"):
        mobilenets.mobilenet_v2(shortcut="expansion", features_only=True)
    # Nor from the classifier: run block by block, its stages' shortcuts were silently left out.
    expansion = mobilenets.mobilenet_v2(width_mult=0.25, shortcut="expansion")
    for timm_call in (
        lambda: expansion.forward_intermediates(torch.randn(1, 3, 64, 64)),
        lambda: expansion.prune_intermediate_layers(2),
    ):
        with pytest.raises(ValueError, match="no per-block features"):
            timm_call()


def test_expansion_shortcuts_join_consecutive_expanded_layers() -> None:
    model = mobilenets.mobilenet_v2(width_mult=0.5, num_classes=10, shortcut="expansion").eval()
    stage = model.blocks[2]  # three blocks: stride 2, then two at stride 1
    assert isinstance(stage, ExpansionShortcutStage) and len(stage) == 3
    blocks: list[InvertedResidual] = list(stage)  # type: ignore[arg-type]
    assert not any(block.has_residual for block in blocks)
    x = torch.randn(1, blocks[0].in_channels, 16, 16)
    with torch.no_grad():
        e0 = blocks[0].conv_pw(x)
        out0 = blocks[0].project(e0)
        e1 = blocks[1].conv_pw(out0)  # block 0 strides: no skip from e0
        out1 = blocks[1].project(e1)
        e2 = blocks[2].conv_pw(out1) + e1  # block 1 at stride 1, same hidden width: the skip
        expected = blocks[2].project(e2)
        torch.testing.assert_close(stage(x), expected)


# --- statistics ------------------------------------------------------------------------------------------


def test_difference_is_welchs_interval() -> None:
    a, b = [91.2, 90.4, 92.0, 91.1], [88.9, 89.3, 88.7]
    diff = difference(a, b)
    expected = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff.mean == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert (diff.low, diff.high) == pytest.approx((expected.low, expected.high))
    assert diff.verdict(higher_is_better=True) == "a better"
    assert diff.verdict(higher_is_better=False) == "b better"
    overlapping = difference([90.0, 91.0, 92.0], [90.5, 91.5, 89.0])
    assert overlapping.verdict(higher_is_better=True) == "no significant difference"
    assert difference([1.0], [2.0]).verdict(higher_is_better=True) == "too few seeds for an interval"
    flat = difference([10.06, 10.06], [11.0, 11.0])  # no spread: Welch's t has no scale, no interval
    assert (flat.low, flat.high) == (None, None) and flat.mean == pytest.approx(-0.94)
    assert flat.verdict(higher_is_better=True) == "no spread in either arm for an interval"
    # int8 drops as 100 * (fp32 - int8): one image of 179 lost on every seed, from different fp32 scores,
    # differs only in the last bits; that rounding is no spread either.
    drops = [100 * (c / 179 - (c - 1) / 179) for c in (120, 150, 160)]
    assert len(set(drops)) > 1
    rounding = difference(drops, [0.0, 0.0, 0.0])
    assert not rounding.spread and rounding.verdict(higher_is_better=False).startswith("no spread")
    with pytest.raises(ValueError, match="must be finite numbers, got nan"):
        difference([90.0, float("nan"), 91.0], [80.0, 81.0, 80.5])
    with pytest.raises(ValueError, match="must be finite"):
        Summary((1.0, float("nan")))


def test_bad_ablation_arguments_are_named_before_any_training(tmp_path: Path) -> None:
    out = str(tmp_path / "ablate")
    code, _, err = run_cli(["ablate", "depthwise", "--out", out])
    assert code == 2 and "invalid choice: 'depthwise'" in err
    code, _, err = run_cli(["ablate", "separable", "--seeds", "0", "--out", out])
    assert code == 2 and "seeds must be an integer from 1 to 20" in err
    code, _, err = run_cli(["ablate", "linear-bottleneck", "--model", "mobilenet_v1", "--out", out])
    assert code == 2 and "mobilenet_v1 has no inverted residual blocks" in err
    # Arms that would be the same network on the model asked for, or a reference without its feature:
    code, _, err = run_cli(["ablate", "separable", "--model", "conv_mobilenet_v1", "--out", out])
    assert code == 2 and "the arms 'separable' and 'standard' build the same network" in err
    code, _, err = run_cli(["ablate", "inverted-residual", "--model", "mobilenet_v3_small", "--out", out])
    assert code == 2 and "shortcut='expansion' on mobilenet_v3_small: no two consecutive blocks" in err
    code, _, err = run_cli(["ablate", "relu6-int8", "--model", "mobilenet_v3_small", "--out", out])
    assert code == 2 and "mobilenet_v3_small has no ReLU6 to compare with ReLU" in err
    assert not (tmp_path / "ablate").exists()
    with pytest.raises(UsageError, match=r"may not set \['progress', 'resume'\]"):
        run_ablation(get_claim("separable"), data="digits", epochs=1, seeds=1, out=out,
                     train_options={"progress": True, "resume": True})  # fmt: skip


def test_an_out_holding_another_ablation_is_refused(tmp_path: Path) -> None:
    """Its report would be replaced, and this claim's arms would sit beside the other's."""
    reported, running = tmp_path / "reported", tmp_path / "running"
    reported.mkdir()
    (reported / "ablation.json").write_text('{"claim": "relu6-int8", "model": "mobilenet_v2"}')
    code, _, err = run_cli(["ablate", "separable", "--out", str(reported)])
    assert code == 2 and "holds the report of another ablation (relu6-int8 on mobilenet_v2)" in err
    (running / "relu" / "seed0").mkdir(parents=True)
    (running / "relu" / "seed0" / "last_state.pt").write_bytes(b"")
    code, _, err = run_cli(["ablate", "separable", "--out", str(running)])
    assert code == 2 and "holds runs of other arms (relu), not 'separable''s" in err
    assert sorted(path.name for path in running.iterdir()) == ["relu"]


def test_ablate_passes_the_whole_recipe_and_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import mobilenets.ablation as ablation
    from mobilenets.ablation.report import markdown

    seen: dict[str, object] = {}

    def stop(claim: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise UsageError("stopped here")

    monkeypatch.setattr(ablation, "run_ablation", stop)
    argv = ["ablate", "separable", "--out", "unused", "--weight-decay", "5e-4", "--label-smoothing", "0.1"]
    # --grad-clip and --precision: the levers a diverged arm's error names (train's message)
    code, _, err = run_cli(
        [*argv, "--warmup-epochs", "2", "--lr", "0.1", "--grad-clip", "1", "--precision", "fp32"]
    )
    assert code == 2 and "stopped here" in err
    options = {"weight_decay": 5e-4, "label_smoothing": 0.1, "warmup_epochs": 2.0, "lr": 0.1}
    assert seen["train_options"] == {**options, "grad_clip": 1.0, "precision": "fp32"}
    recipe = {"model": "m", "data": "d", "epochs": 1, "width_mult": 1.0, "img_size": 32, "batch_size": 8}
    report = {
        "claim": "c", "source": "s", "statement": "s", "model": "m", "seeds": [0], "metric": "top-1 (%)",
        "differences": {}, "expectation": "e", "arms": {}, "recipe": {**recipe, **options, "workers": 2},
    }  # fmt: skip
    assert "Recipe: weight_decay 0.0005, label_smoothing 0.1, warmup_epochs 2.0, lr 0.1." in markdown(report)


def test_an_interrupted_ablation_exits_130_like_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C or SIGTERM stops the arm's training, which saves its state and says so; the ablation
    then stops as `train` does (exit 130, "interrupted"), not with an error about a short run."""
    import mobilenets.ablation.run as running

    calls: list[object] = []

    def interrupted(config: object) -> dict[str, object]:
        calls.append(config)
        return {"interrupted": True}

    monkeypatch.setattr(running, "train", interrupted)
    code, _, err = run_cli(
        ["ablate", "separable", "--seeds", "1", "--epochs", "2", "--out", str(tmp_path / "a")]
    )
    assert (code, err.strip(), len(calls)) == (130, "mobilenets ablate: interrupted", 1)


def test_expansion_shortcuts_are_one_fewer_per_stage() -> None:
    """A stage's first block changes width or stride: its expansion joins nothing (n blocks, n - 2 joins)."""
    counts = {shortcut: count_skips(mobilenets.mobilenet_v2(shortcut=shortcut)) for shortcut in SHORTCUTS}
    assert counts == {"bottleneck": 10, "expansion": 5, "none": 0}


# --- the command -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ablate_separable_on_digits_reports_means_spreads_and_the_difference(tmp_path: Path) -> None:
    out = tmp_path / "separable"
    command = [
        "ablate",
        "separable",
        "--data",
        "digits",
        "--epochs",
        "2",
        "--seeds",
        "2",
        "--json",
        "--out",
        str(out),
    ]
    code, stdout, err = run_cli(command)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["claim"] == "separable" and report["seeds"] == [0, 1] and report["model"] == "mobilenet_v1"
    separable, standard = report["arms"]["separable"], report["arms"]["standard"]
    for arm in (separable, standard):
        assert len(arm["metric_values"]) == 2 and arm["std"] is not None and arm["latency_ms"] > 0
        assert arm["mean"] == pytest.approx(statistics.fmean(arm["metric_values"]))
    # The cost side of the claim, exact: the standard twin needs 8x the mult-adds at width 0.5.
    assert standard["mult_adds"] > 6 * separable["mult_adds"] and standard["params"] > 6 * separable["params"]
    diff = report["differences"]["separable - standard"]
    assert diff["mean"] == pytest.approx(separable["mean"] - standard["mean"])
    assert diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]
    assert diff["verdict"] in ("separable better", "standard better", "no significant difference")
    for name in ("json", "md", "png"):
        assert (out / f"ablation.{name}").is_file()
    assert "| separable |" in (out / "ablation.md").read_text()
    assert (out / "separable" / "seed1" / "last.safetensors").is_file()  # each run is an ordinary run
    # Again: every run has finished, so nothing trains, and each arm keeps its runs' logged time.
    code, stdout, err = run_cli(command)
    assert code == 0, err
    again = json.loads(stdout)
    for name, arm in report["arms"].items():
        assert arm["train_seconds"] > 0
        assert again["arms"][name]["train_seconds"] == pytest.approx(arm["train_seconds"])
        assert again["arms"][name]["metric_values"] == arm["metric_values"]
    # Another recipe in the same folder would report these runs under it: refused before any training.
    for other, saved in ((["--lr", "0.5"], "lr=default (now 0.5)"), (["--epochs", "1"], "epochs=2 (now 1)")):
        code, stdout, err = run_cli([*command, *other])
        assert code == 2 and stdout == "" and "holds a run of another recipe" in err and saved in err
    assert json.loads((out / "separable" / "seed0" / "config.json").read_text())["lr"] is None  # untouched


@pytest.mark.slow
def test_ablate_relu6_int8_quantizes_each_run(tmp_path: Path) -> None:
    code, stdout, err = run_cli(
        ["ablate", "relu6-int8", "--epochs", "1", "--seeds", "1", "--width-mult", "0.25", "--json",
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["metric"] == "int8 drop (points)" and not report["higher_is_better"]
    for arm in report["arms"].values():
        (int8,) = arm["int8_top1"]
        assert arm["metric_values"] == [pytest.approx(arm["top1_mean"] - int8)]
    assert report["arms"]["relu"]["options"] == {"activation": "relu"}
    assert report["arms"]["relu"]["skips"] == report["arms"]["relu6"]["skips"] > 0


def test_report_names_each_arms_shortcuts_where_they_differ() -> None:
    from mobilenets.ablation.report import markdown

    def arm(skips: int) -> dict[str, object]:
        return {"mean": 70.0, "std": 1.0, "params": 1, "mult_adds": 2, "latency_ms": 1.0, "skips": skips}

    report = {
        "claim": "inverted-residual", "source": "v2", "statement": "s", "model": "mobilenet_v2",
        "recipe": {"data": "d", "epochs": 1, "width_mult": 1.0, "img_size": 32, "batch_size": 8},
        "seeds": [0, 1], "metric": "top-1 (%)", "differences": {}, "expectation": "e",
        "arms": {"bottleneck-shortcut": arm(10), "expansion-shortcut": arm(5), "no-shortcut": arm(0)},
    }  # fmt: skip
    text = markdown(report)
    assert (
        "Residual shortcuts per network: bottleneck-shortcut 10, expansion-shortcut 5, no-shortcut 0." in text
    )
    report["arms"] = {"linear": arm(10), "relu6-bottleneck": arm(10)}
    assert "Residual shortcuts" not in markdown(report)  # the same in every arm: nothing to say
