"""The drop-in surface for timm and torchvision users: pretrained models by name, the weights registry,
and the peers' own client code (timm's data config and feature API, torchvision's feature extractor,
torch.fx) run unchanged on our models."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pytest
import timm.data
import torch
from PIL import Image
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import mobilenets
from mobilenets.analysis import summarize
from mobilenets.weights import PRETRAINED, get_pretrained
from mobilenets.weights.registry import measured_results

from .conftest import imagenet_list, run_cli


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """One real ImageNet photo (the shared set), as a PIL image."""
    first = imagenet_list().read_text().splitlines()[0].split(",")[0].strip()
    return Image.open(imagenet_list().parent / first).convert("RGB")


# --- create_model(name, pretrained=...) ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRETRAINED))
def test_every_entry_loads_by_name_with_its_build_options_and_preprocessing(name: str) -> None:
    entry = PRETRAINED[name]
    model = mobilenets.create_model(entry.model, pretrained=True)
    assert model.card.model == entry.model and model.card.preprocess == entry.preprocess()
    assert dict(model.card.model_kwargs).items() >= entry.model_kwargs.items()
    assert model.pretrained_cfg["input_size"] == (3, entry.resolution, entry.resolution)
    assert len(model.card.classes) == 1000 and model.card.classes[1] == "goldfish"
    same = mobilenets.create_model(name, pretrained=True)  # MODEL.TAG, as timm spells it
    for (key, a), b in zip(model.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_pretrained_on_builders_and_tags_and_what_differs() -> None:
    direct = mobilenets.efficientnet_lite0(pretrained="tf_in1k")
    by_name = mobilenets.create_model("efficientnet_lite0", pretrained=True)
    assert torch.equal(direct.stem.conv.weight, by_name.stem.conv.weight)
    assert isinstance(direct.stem.conv, mobilenets.layers.padding.Conv2dSame)  # the entry's tf_same padding
    scratch = mobilenets.create_model("efficientnet_lite0.tf_in1k")  # a name with a tag, not pretrained
    assert not torch.equal(scratch.stem.conv.weight, by_name.stem.conv.weight)
    # Another number of classes: the body loads, the classifier starts afresh (as timm does).
    ten = mobilenets.mobilenet_v2(pretrained=True, num_classes=10)
    reference = mobilenets.mobilenet_v2(pretrained=True)
    assert ten.classifier.out_features == 10
    assert torch.equal(ten.blocks[3][0].conv_pw.conv.weight, reference.blocks[3][0].conv_pw.conv.weight)
    # Other input channels: the RGB stem adapted as timm does (grey: summed over the colours).
    grey = mobilenets.mobilenet_v2(pretrained=True, in_channels=1).eval()
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(image), reference.eval()(image.expand(1, 3, 64, 64)))
    four = mobilenets.mobilenet_v2(pretrained=True, in_channels=4)
    torch.testing.assert_close(four.stem.conv.weight[:, 3], reference.stem.conv.weight[:, 0] * 0.75)
    # A backbone: the body alone.
    backbone = mobilenets.mobilenet_v2(pretrained=True, features_only=True, out_indices=(2, 4))
    assert backbone.feature_info.channels() == [32, 320]
    assert torch.equal(backbone.blocks[3][0].conv_pw.conv.weight, reference.blocks[3][0].conv_pw.conv.weight)


def test_pretrained_errors_name_what_exists_and_what_to_do() -> None:
    with pytest.raises(
        ValueError, match=r"no pretrained weights for mobilenet_v3_large; models with .*mobilenet_v2"
    ):
        mobilenets.mobilenet_v3_large(pretrained=True)
    with pytest.raises(
        ValueError, match=r"'efficientnet_lite1\.tf_in1k' are for efficientnet_lite1, not mobilenet_v2"
    ):
        mobilenets.create_model("mobilenet_v2", pretrained="efficientnet_lite1.tf_in1k")
    with pytest.raises(ValueError, match="unknown pretrained weights 'imagenet21k'"):
        mobilenets.create_model("mobilenet_v2", pretrained="imagenet21k")
    with pytest.raises(ValueError, match=r"do not fit this mobilenet_v2 .*they need the default width_mult"):
        mobilenets.mobilenet_v2(pretrained=True, width_mult=0.5)
    with pytest.raises(TypeError, match="pretrained must be True, False or a tag such as 'tv_in1k', got 1"):
        mobilenets.mobilenet_v2(pretrained=1)
    arch = importlib.import_module("mobilenets.models.mobilenet_v2").MOBILENET_V2
    with pytest.raises(ValueError, match="builds mobilenet_v2 from its table"):
        mobilenets.models.build_mobilenet(arch, pretrained=True)


def test_a_changed_file_is_refused_before_loading(tmp_path, monkeypatch) -> None:
    entry = get_pretrained("mobilenet_v2")
    fake = tmp_path / "weights" / "mobilenet_v2-b0353104.pth"
    fake.parent.mkdir()
    fake.write_bytes(entry.path().read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(type(entry), "path", lambda self: fake)
    with pytest.raises(ValueError, match=r"does not match the registry's mobilenet_v2\.tv_in1k"):
        mobilenets.mobilenet_v2(pretrained=True)


# --- the registry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRETRAINED))
def test_registry_facts_match_the_installed_files_and_the_models(name: str) -> None:
    entry = PRETRAINED[name]
    path = entry.path()
    assert path.stat().st_size == entry.file_bytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    measured = measured_results().get(name)
    assert measured is not None, f"{name}: run python benchmarks/pretrained_accuracy.py --record"
    summary = summarize(mobilenets.create_model(name, pretrained=True), resolution=entry.resolution)
    assert measured["params"] == summary.total_params and measured["mult_adds"] == summary.total_macs
    assert measured["num_images"] == 1300 and 0.5 < measured["top1"] <= measured["top5"] <= 1
    assert measured["provenance"], "every measurement names the command, machine and date"
    meta = entry.meta
    assert len(meta["categories"]) == 1000 and meta["published_top1"] > 70 and meta["licence"]
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    assert entry.transforms()(image).shape == (3, entry.resolution, entry.resolution)


def test_the_accuracy_benchmarks_symmetric_row_loads_through_eval(monkeypatch) -> None:
    """benchmarks/pretrained_accuracy.py's symmetric-padding row: options eval accepts, the entry's file
    and preprocessing with only the padding changed (packaged weights refuse --padding themselves)."""
    from mobilenets.cli.common import load_from_args
    from mobilenets.cli.main import build_parser

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    benchmark = importlib.import_module("pretrained_accuracy")
    options = benchmark.symmetric_source("efficientnet_lite0.tf_in1k")
    loaded = load_from_args(build_parser().parse_args(["eval", *options, "--data", "digits"]))
    packaged = mobilenets.create_model("efficientnet_lite0.tf_in1k", pretrained=True)
    assert loaded.card.model_kwargs["padding"] == "symmetric"
    assert loaded.card.preprocess == packaged.card.preprocess
    assert loaded.card.mean == packaged.card.mean and loaded.card.std == packaged.card.std
    stem = loaded.model.stem.conv
    assert not isinstance(stem, mobilenets.layers.padding.Conv2dSame)
    assert torch.equal(stem.weight, packaged.stem.conv.weight)


def test_list_pretrained_shows_every_entry_with_published_and_measured_accuracy() -> None:
    code, out, err = run_cli(["list", "--pretrained"])
    assert code == 0, err
    for name, entry in PRETRAINED.items():
        line = next(line for line in out.splitlines() if name in line)
        assert f"{entry.published_top1:.1f}%" in line
        assert f"{100 * measured_results()[name]['top1']:.2f}%" in line
    code, out, err = run_cli(["list", "--pretrained", "--json", "efficientnet_lite*"])
    assert code == 0, err
    rows = json.loads(out)
    assert [row["name"] for row in rows] == [n for n in PRETRAINED if n.startswith("efficientnet_lite")]
    assert all(row["licence"] == "Apache-2.0" and len(row["sha256"]) == 64 for row in rows)
    code, _, err = run_cli(["list", "--pretrained", "--json", "--names-only"])
    assert code == 2 and "--json and --names-only: choose one" in err
    code, _, err = run_cli(["list", "--pretrained", "resnet*"])
    assert code == 2 and "no pretrained weights match 'resnet*'" in err


@pytest.mark.slow
def test_eval_pretrained_reports_top1_on_the_shared_photos(tmp_path: Path) -> None:
    """The command a user types: the registry's preprocessing (260 px from 292, bicubic), through the CLI,
    on the first 260 shared photos (a list file of absolute paths; nothing copied)."""
    listing = imagenet_list()
    lines = [line.split(",") for line in listing.read_text().splitlines()[:260]]
    subset = tmp_path / "photos.txt"
    subset.write_text("".join(f"{listing.parent / path.strip()}, {label.strip()}\n" for path, label in lines))
    code, out, err = run_cli(
        ["eval", "--model", "efficientnet_lite2", "--pretrained", "--data", str(subset), "--json",
         "--no-confusion", "--batch-size", "32"]
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["num_images"] == 260 and report["top1"] >= 0.75


# --- timm's client code ----------------------------------------------------------------------------------


def test_timm_resolve_data_config_reads_the_weights_preprocessing(photo: Image.Image) -> None:
    model = mobilenets.create_model("mobilenet_v2", pretrained=True)
    config = timm.data.resolve_data_config(model=model)
    assert config["input_size"] == (3, 224, 224) and config["interpolation"] == "bilinear"
    assert config["crop_pct"] == 224 / 256 and config["crop_mode"] == "center"
    assert config["mean"] == (0.485, 0.456, 0.406) and config["std"] == (0.229, 0.224, 0.225)
    lite2 = timm.data.resolve_data_config(model=mobilenets.efficientnet_lite2(pretrained=True))
    assert lite2["input_size"] == (3, 260, 260) and lite2["interpolation"] == "bicubic"
    # timm's own transform from that config prepares the photo as our preset does.
    for network in (model, mobilenets.efficientnet_lite2(pretrained=True)):
        theirs = timm.data.create_transform(**timm.data.resolve_data_config(model=network))(photo)
        ours = network.card.preprocess.transform()(photo)
        assert theirs.shape == ours.shape
        assert (theirs - ours).abs().mean() < 0.02  # PIL vs tensor resize: a few grey levels at most


def test_timm_feature_api_on_a_backbone() -> None:
    model = mobilenets.create_model("mobilenet_v2", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    info = model.feature_info
    assert info.channels() == [24, 32, 96, 320] and info.reduction() == [4, 8, 16, 32]
    assert info.module_name() == ["blocks.1.1", "blocks.2.2", "blocks.4.2", "blocks.6.0"]
    assert info.channels(0) == 16 and info.get_dicts(keys=["num_chs"], idx=[4]) == [{"num_chs": 320}]
    assert info[2]["reduction"] == 8 and len(info) == 5 and info.from_other([0]).channels() == [16]
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        maps = model(x)
    assert [m.shape[1] for m in maps] == info.channels()
    assert [96 // m.shape[-1] for m in maps] == info.reduction()


def test_forward_intermediates_and_pruning_follow_timm() -> None:
    model = mobilenets.mobilenet_v2().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, indices=2)
        assert torch.equal(final, model.forward_features(x))
        assert [t.shape[1] for t in intermediates] == [96, 320]
        only = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert [t.shape[1] for t in only] == [16, 320]
        every = model.forward_intermediates(x, intermediates_only=True)
        early, taken = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert early.shape[1] == 24 and torch.equal(early, taken[0])
    with pytest.raises(ValueError, match="output_fmt 'NHWC' is not supported"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="asks for the last 7 feature levels; the model has 5"):
        model.forward_intermediates(x, indices=7)
    full = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    kept = model.prune_intermediate_layers(indices=[1, 2])
    assert kept == [1, 2] and isinstance(model.get_classifier(), torch.nn.Identity)
    assert len(model.feature_info) == 3 and all(k in full for k in model.state_dict())
    with torch.no_grad():
        pruned = model.forward_intermediates(x, indices=kept, intermediates_only=True)
    assert [t.shape[1] for t in pruned] == [24, 32]
    assert torch.equal(pruned[0], every[1]) and torch.equal(pruned[1], every[2])


def test_classifier_interface() -> None:
    with pytest.raises(ValueError, match="pre_logits layer"):
        mobilenets.mobilenet_v3_small().reset_classifier(7, global_pool="")
    model = mobilenets.mobilenet_v2()
    assert model.get_classifier() is model.classifier and model.default_cfg is model.pretrained_cfg
    # As timm: no pooling only without a Linear classifier (it would meet a 4-D map and fail in forward)
    with pytest.raises(ValueError, match=r"7-class classifier .* needs pooled features"):
        model.reset_classifier(7, global_pool="")
    model.reset_classifier(0, global_pool="")
    assert model.pretrained_cfg["num_classes"] == 0
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1280, 2, 2)
    with pytest.raises(ValueError, match="pass global_pool='avg'"):
        model.reset_classifier(7)  # the pooling it removed stays removed unless asked back
    model.reset_classifier(7, global_pool="avg")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(ValueError, match="global_pool must be 'avg' or ''"):
        model.reset_classifier(7, global_pool="max")


# --- torchvision and torch.fx ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "padding"), [("mobilenet_v2", "symmetric"), ("efficientnet_lite0", "tf_same")]
)
def test_torchvision_feature_extractor_and_fx_trace(name: str, padding: str) -> None:
    model = mobilenets.create_model(name, padding=padding).eval()
    x = torch.randn(2, 3, 97, 101)  # odd sizes: TF SAME padding depends on them
    _, eval_nodes = get_graph_node_names(model)
    assert any(node.startswith("blocks.3.2.") for node in eval_nodes)
    extractor = create_feature_extractor(model, return_nodes={"blocks.3.2": "c4", "conv_head": "head"})
    captured: list[torch.Tensor] = []
    model.get_submodule("blocks.3.2").register_forward_hook(lambda m, i, out: captured.append(out))
    with torch.no_grad():
        features = extractor(x)
        expected_final = model.forward_features(x)
    assert torch.equal(features["head"], expected_final) and torch.equal(features["c4"], captured[0])
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
    with pytest.raises(ValueError, match="expected 3 input channels"):  # checks still run outside tracing
        model(torch.randn(1, 1, 64, 64))


# --- against the original code ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite_entries_give_the_original_ports_logits_on_real_photos(name: str) -> None:
    """The original EfficientNet-Lite port (whose layout the files come in), same file, same photos."""
    from efficientnet_lite_pytorch import EfficientNet

    from mobilenets.data.card import card_eval_set

    ours = mobilenets.create_model(name, pretrained=True).eval()
    entry = get_pretrained(name)
    theirs = EfficientNet.from_pretrained(
        f"efficientnet-lite{name[-1]}", weights_path=str(entry.verified_path())
    ).eval()
    dataset, _ = card_eval_set(ours.card, str(imagenet_list()))
    images = torch.stack([dataset[i][0] for i in range(16)])
    assert images.shape[-1] == entry.resolution
    with torch.no_grad():
        a, b = ours(images), theirs(images)
    assert (a - b).abs().max() < 1e-3, (a - b).abs().max()
    assert torch.equal(a.argmax(1), b.argmax(1))
