"""Models work with channels_last, torch.jit.trace, torch.export and torch.compile; `mobilenets export`
writes TorchScript and torch.export files that reload, match PyTorch and carry the model card."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets.deploy import (
    export_program,
    export_torchscript,
    load_deployed,
    read_torch_card,
    read_torch_metadata,
)
from mobilenets.layers.padding import Conv2dSame
from mobilenets.weights import ModelCard
from tests.conftest import DIGITS, imagenet_list, randomize_norm_stats, run_cli


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0"])
def test_channels_last_matches(name: str) -> None:
    model = mobilenets.create_model(name, padding="tf_same" if "lite" in name else "symmetric").eval()
    randomize_norm_stats(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        actual = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(expected, actual, atol=1e-4)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v3_large"])
def test_jit_trace(name: str) -> None:
    model = mobilenets.create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        assert torch.allclose(traced(x), model(x), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "options"),
    [(name, {}) for name in mobilenets.list_models()]
    + [("mobilenet_v2", {"drop_path_rate": 0.1, "output_stride": 8, "norm": "groupnorm"})]
    + [("efficientnet_lite0", {"padding": "tf_same"})],  # padding computed from the input's size
)
def test_jit_script(name: str, options: dict[str, object]) -> None:
    """torch.jit.script (deprecated in torch 2.14, still what torchvision's users reach for) compiles
    the classification networks: the Python-side records (card, pretrained_cfg) are left out of it."""
    model = mobilenets.create_model(name, width_mult=0.25, **options).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecation
        scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 64, 63)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))


@pytest.mark.parametrize("padding", ["symmetric", "tf_same"])
def test_torch_export(padding: str) -> None:
    model = mobilenets.mobilenet_v2(width_mult=0.5, padding=padding).eval()
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-5)


@pytest.mark.slow
def test_torch_compile() -> None:
    model = mobilenets.mobilenet_v3_small().eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-4)


# --- `mobilenets export --format torchscript|exported-program` ------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    ("file_format", "suffix", "dynamic"),
    [("torchscript", ".pt", False), ("exported-program", ".pt2", True), ("exported-program", ".pt2", False)],
)
def test_export_torch_formats_reload_match_and_carry_the_card(
    file_format: str,
    suffix: str,
    dynamic: bool,
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    tmp_path: Path,
) -> None:
    checkpoint, model, card = digits_checkpoint
    out = tmp_path / f"m{suffix}"
    argv = ["export", "--checkpoint", str(checkpoint), "--format", file_format, "--out", str(out), "--json"]
    argv += ["--verify-images", "8", *(["--dynamic-batch"] if dynamic else [])]
    code, stdout, err = run_cli(argv)
    assert code == 0, err
    result = json.loads(stdout)  # exactly one JSON object
    assert result["format"] == file_format and result["max_abs_diff"] <= 1e-4
    assert "8 images of digits" in result["verified_on"]  # the checkpoint's real images, like ONNX
    fixed_batch = file_format == "exported-program" and not dynamic  # TorchScript takes any batch
    assert result["verified_batch_sizes"] == ([1] if fixed_batch else [1, 7])
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # written atomically: no temp file left

    extra = {"mobilenets.json": ""}
    if file_format == "torchscript":
        module = torch.jit.load(str(out), _extra_files=extra)
    else:
        module = torch.export.load(str(out), extra_files=extra).module()
    metadata = json.loads(extra["mobilenets.json"])
    assert metadata == read_torch_metadata(out)
    assert metadata["input_layout"] == "NCHW" and metadata["resolution"] == 32
    assert metadata["dynamic_batch"] is not fixed_batch and metadata["classes"] == list(DIGITS)
    assert metadata["preprocess"]["mean"] == [0.5] * 3 and metadata["preprocess"]["crop_size"] == 32
    assert metadata["preprocess"]["exact_size_as_is"] is True  # trained here: a 32-px image is not resized
    assert ModelCard.from_metadata(metadata["card"], str(out)) == card == read_torch_card(out)

    with torch.inference_mode():
        for batch in (1, 5):
            x = torch.randn(batch, 3, 32, 32)
            if fixed_batch and batch != 1:
                with pytest.raises(AssertionError, match=r"x\.size\(\)\[0\] == 1"):
                    module(x)
            else:
                assert (module(x) - model(x)).abs().max().item() <= 1e-4
        # The TF SAME pads are those of 32 px: another size is refused, never silently wrong.
        with pytest.raises((torch.jit.Error, AssertionError), match=r"\(N, 3, 32, 32\)|size\(\)\[2\] == 32"):
            module(torch.randn(1, 3, 64, 64))
        # Given as weights, the program is named as what it is: not torch's warning and unsafe advice.
        code, _, err = run_cli(["eval", "--weights", str(out), "--data", "digits"])
        program = "TorchScript" if file_format == "torchscript" else "torch.export"
        assert code == 2 and f"is a {program} program" in err and "weights_only" not in err, err
        assert len(err.strip().splitlines()) == 1
        # Loaded as the CLI and load_deployed load it, the same mistake is named in our words.
        deployed, _ = load_deployed(out)
        with pytest.raises(
            ValueError, match=r"takes a float32 NCHW batch of shape \(N, 3, 32, 32\); got \[1, 3, 64, 64\]"
        ):
            deployed(torch.randn(1, 3, 64, 64))
        x = torch.randn(3, 3, 32, 32)  # float64 is converted, as the ONNX, ExecuTorch and OpenVINO files do
        torch.testing.assert_close(deployed(x.double()), deployed(x))
    with pytest.raises(ValueError, match=r"threads must be a whole number >= 1 .* got 0"):
        load_deployed(out, threads=0)


def test_a_dynamic_program_runs_batches_over_its_cap_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """A --dynamic-batch program's batch dimension is capped (MAX_BATCH): a bigger batch (an eval with
    --batch-size 5000) runs in pieces instead of failing the program's guard."""
    from mobilenets.deploy import captured

    sizes: list[int] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sizes.append(len(x))
            return x.flatten(1)[:, :2]

    monkeypatch.setattr(captured, "MAX_BATCH", 4)
    x = torch.randn(10, 3, 8, 8)
    assert torch.equal(captured.ExportedClassifier(Probe(), resolution=8)(x), x.flatten(1)[:, :2])
    assert sizes == [4, 4, 2]


def test_export_at_another_resolution_keeps_the_crop_fraction(tmp_path: Path) -> None:
    """A card with an explicit resize (ImageNet's 256 for a 224 crop) scales it with the resolution:
    at 288 the resize was refused (256 < 288), at 64 the crop took a quarter of the image."""
    from mobilenets.deploy import export_verified, read_card
    from mobilenets.weights.presets import get_preset

    model = mobilenets.create_model("mobilenet_v2", width_mult=0.25).eval()
    card = ModelCard.for_weights("mobilenet_v2", {"width_mult": 0.25}, get_preset("imagenet"), "test", 1000)
    assert (card.img_size, card.resize_size) == (224, 256)
    assert card.at_resolution(224) is card
    assert card.at_resolution(288).preprocess.resize_size == 329
    export_verified(model, tmp_path / "m.onnx", format="onnx", resolution=64, card=card)
    written = read_card(tmp_path / "m.onnx")
    assert (written.img_size, written.resize_size) == (64, 73)  # 64 / 73 = 224 / 256, rounded
    ours = dataclasses.replace(card, resize_size=None)  # trained here: the resize follows img_size
    assert ours.at_resolution(64).preprocess.resize_size == round(64 / 0.875)


def test_export_verifies_on_photos_whose_labels_the_model_lacks(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path: Path
) -> None:
    """Verification (and calibration) images are compared with PyTorch, never with their labels, so a
    list of ImageNet photos (labels up to 999) serves a 10-class model."""
    checkpoint, _, _ = digits_checkpoint
    argv = [
        "export",
        "--checkpoint",
        str(checkpoint),
        "--format",
        "torchscript",
        "--out",
        str(tmp_path / "m.pt"),
    ]
    code, stdout, err = run_cli(
        [*argv, "--verify-data", str(imagenet_list()), "--verify-images", "3", "--json"]
    )
    assert code == 0, err
    assert json.loads(stdout)["verified_on"].startswith("3 images of ")


def test_export_torch_formats_without_a_card(tmp_path: Path) -> None:
    model = mobilenets.mobilenet_v3_small(width_mult=0.35).eval()
    for path in (
        export_torchscript(model, tmp_path / "m.pt", resolution=64),
        export_program(model, tmp_path / "m.pt2", resolution=64, dynamic_batch=True),
    ):
        assert read_torch_metadata(path)["input_shape"][1:] == [3, 64, 64]
        with pytest.raises(ValueError, match="no mobilenets model card"):
            read_torch_card(path)
    with pytest.raises(ValueError, match=r"not a TorchScript or torch\.export file"):
        read_torch_metadata(Path(__file__))


def test_export_torch_formats_refuse_onnx_options_and_bad_arguments(tmp_path: Path) -> None:
    torchscript_int8 = (
        "only for --format onnx, exported-program, executorch or openvino (int8), not --format torchscript"
    )
    program_onnx = "only for --format onnx (ONNX Runtime's quantizer); --format exported-program quantizes"
    refusals = {
        "torchscript": (
            (["--int8", "--calib", "data"], f"--int8, --calib: {torchscript_int8}"),
            (["--int8"], f"--int8: {torchscript_int8}"),
            (["--keep-float", "stem"], f"--keep-float: {torchscript_int8}"),
            (
                ["--weight-dtype", "int8"],
                "--weight-dtype: only for --format onnx (int8), not --format torchscript",
            ),
            (["--calib-images", "10"], f"--calib-images: {torchscript_int8}"),
            (["--qat-epochs", "1"], "--qat-epochs: only for --format exported-program --int8 (torchao PT2E)"),
        ),
        "exported-program": (
            (["--int8"], "--int8 needs --calib DATA"),
            (["--int8", "--calib", "d", "--weight-dtype", "int8"], f"--weight-dtype: {program_onnx}"),
            (["--int8", "--calib", "d", "--calib-method", "minmax"], f"--calib-method: {program_onnx}"),
            (["--keep-float", "stem"], "--keep-float: only with --int8"),
            (["--calib", "digits"], "--calib: only with --int8; images to verify on go to --verify-data"),
            (["--qat-epochs", "2", "--qat-lr", "0.1"], "--qat-epochs, --qat-lr: only with --int8"),
            (["--int8", "--calib", "d", "--qat-epochs", "0"], "--qat-epochs must be >= 1, got 0"),
            (["--int8", "--calib", "d", "--qat-lr", "-1"], "--qat-lr must be a positive number"),
            (["--int8", "--calib", " "], "--calib is empty; give a dataset name"),
            (["--verify-data", ""], "--verify-data is empty"),  # it fell back to the card's data unseen
            # No fp32 file to bound: the int8 program is reported by its agreement, the bound was ignored.
            (["--int8", "--calib", "d", "--tolerance", "0"], "writes no fp32 file"),
        ),
    }
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "folder.pt2").mkdir()
    (tmp_path / "file").write_text("not a folder")
    for file_format, suffix in (("torchscript", ".pt"), ("exported-program", ".pt2")):
        base = ["export", "mobilenet_v2", "--width-mult", "0.35", "--resolution", "96"]
        base += ["--format", file_format]
        out = tmp_path / f"m{suffix}"
        for extra, message in (
            *refusals[file_format],
            (["--tolerance", "nan"], "--tolerance must be a finite number"),
            (["--out", str(tmp_path / "m.onnx")], f"must end in {suffix} for --format {file_format}"),
            (["--out", str(tmp_path / f"folder{suffix}")], "is a folder; give a file name ending in"),
            (["--out", str(tmp_path / "file" / f"m{suffix}")], "is a file, not a folder"),
            (["--model", "mobilenet_v1", "--source", "timm"], "--model, --source: only with --weights FILE"),
        ):
            code, _, err = run_cli([*base, "--out", str(out), *extra])
            assert code == 2 and message in err, err
        assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "folder.pt", "folder.pt2"]
    # A model name honours --width-mult (and --padding) in the model and its card.
    code, stdout, err = run_cli([*base, "--out", str(out), "--verify-images", "2", "--json"])
    assert code == 0 and json.loads(stdout)["verified_batch_sizes"] == [1], err
    assert read_torch_card(out).model_kwargs == {"width_mult": 0.35}
    assert read_torch_metadata(out)["input_shape"] == [1, 3, 96, 96]


@pytest.mark.slow
def test_export_int8_program_through_pt2e(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    tmp_path: Path,
) -> None:
    from mobilenets.deploy import load_exported

    checkpoint, model, _ = digits_checkpoint
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "exported-program", "--dynamic-batch"]
    fp32, int8 = tmp_path / "fp32.pt2", tmp_path / "int8.pt2"
    code, _, err = run_cli([*argv, "--out", str(fp32), "--verify-images", "2"])
    assert code == 0, err
    # int8 files verified on one batch size (the fp32 ones on two, above): each new size compiles again.
    # One int8 export, with a quantization-aware fine-tune: it calibrates as the plain --int8 does, then
    # fine-tunes before converting (the plain one is test_pt2e's, on real photos; each capture costs ~20 s).
    int8_argv = ["--int8", "--calib", "digits", "--calib-images", "40", "--verify-images", "1", "--json"]
    qat_argv = ["--qat-epochs", "1", "--keep-float", "classifier"]
    code, stdout, err = run_cli([*argv, "--out", str(int8), *int8_argv, *qat_argv])
    assert code == 0, err
    result = json.loads(stdout)
    assert result["int8"] == "pt2e" and result["calibration_images"] == 40
    assert result["qat_epochs"] == 1 and result["qat_lr"] == 1e-5
    assert result["quantization"] == (
        "torchao's x86 quantizer (PT2E), fine-tuned 1 epoch at lr 1e-05 with int8 fake quantization on "
        "40 images, float modules: classifier"
    )
    assert result["verified_batch_sizes"] == [1] and 0.0 <= result["int8_top1_agreement"] <= 1.0
    # int8 weights only: the float weights convert_pt2e replaced are not in the file (measured: 0.63 of
    # the fp32 file with the float classifier, 0.57 without; both would be above 1 with them)
    assert result["bytes"] < 0.7 * fp32.stat().st_size, (result["bytes"], fp32.stat().st_size)
    loaded, metadata = load_exported(int8)
    assert metadata["int8"] == "pt2e" and read_torch_card(int8).model == "mobilenet_v2"
    weights = [n for n in loaded.graph.nodes if "dequantize_per_channel" in str(n.target)]
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    # torchao's x86 quantizer leaves a conv float behind an explicit pad: TF SAME at stride 2 (5 here);
    # --keep-float leaves the classifier float
    behind_pads = [m for m in layers if isinstance(m, Conv2dSame) and m.stride != (1, 1)]
    assert len(behind_pads) == 5 and len(weights) == len(layers) - len(behind_pads) - 1
    with torch.no_grad():
        assert loaded(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    # `eval --program` scores exported files like the checkpoint (the int8 one compiled to int8 kernels)
    # (at batch 1, the size the export verified: one more compile, not one per batch size met)
    reports = {}
    for name, path in (("checkpoint", checkpoint), ("fp32", fp32), ("int8", int8)):
        source = ["--checkpoint", str(path)] if name == "checkpoint" else ["--program", str(path)]
        source += ["--batch-size", "1"] if name == "int8" else []
        code, stdout, err = run_cli(["eval", *source, "--json", "--no-confusion"])
        assert code == 0, err
        reports[name] = json.loads(stdout)
    # Exported at another size than the weights' 32 px: the card and the checks follow the file's size
    resized = tmp_path / "48.pt2"
    code, _, err = run_cli([*argv, "--out", str(resized), "--resolution", "48", "--verify-data", "digits"])
    assert code == 0 and read_torch_card(resized).img_size == 48, err
    code, stdout, err = run_cli(["eval", "--program", str(resized), "--json", "--no-confusion"])
    assert code == 0 and json.loads(stdout)["num_images"] == reports["checkpoint"]["num_images"], err
    images = reports["checkpoint"]["num_images"]
    assert images > 100 and all(r["num_images"] == images for r in reports.values())
    assert abs(reports["fp32"]["top1"] - reports["checkpoint"]["top1"]) <= 1 / images
    assert reports["int8"]["model"] == "mobilenet_v2" and 0.0 <= reports["int8"]["top1"] <= 1.0


def test_export_torch_formats_fail_above_the_tolerance(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    tmp_path: Path,
) -> None:
    checkpoint, _, _ = digits_checkpoint
    out = tmp_path / "m.pt"
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]
    code, _, err = run_cli([*argv, "--verify-images", "4"])
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"], err
    good = out.read_bytes()
    code, _, err = run_cli([*argv, "--tolerance", "1e-12", "--verify-images", "4"])
    assert code == 1 and "torch.jit.load output differs from PyTorch" in err and "not trustworthy" in err, err
    # The file that failed stays beside, for inspection; the one already at --out is left as it was
    assert f"{tmp_path / 'm.unverified.pt'} is not trustworthy" in err and f"({out} is as it was.)" in err
    assert out.read_bytes() == good and (tmp_path / "m.unverified.pt").is_file()
    code, _, err = run_cli([*argv, "--verify-images", "4"])
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"], err  # its leftover too


def test_calibration_never_takes_the_held_out_images_and_spreads_over_a_folder(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path: Path
) -> None:
    from PIL import Image

    from mobilenets.data import card_eval_set, first_images
    from mobilenets.data.card import calibration_images
    from mobilenets.errors import UsageError

    _, _, card = digits_checkpoint
    own = calibration_images(card, "digits", 300)  # the data it trained on: its training part
    held_out = first_images(card_eval_set(card, "digits")[0], 179)
    assert len(own) == 300 and len(held_out) == 179
    assert not (own.flatten(1)[:, None] == held_out.flatten(1)[None]).all(-1).any()
    # A folder comes class by class: 4 images of 40 are taken one per class, not the first class's
    for label, shade in enumerate((0, 80, 160, 240)):
        (tmp_path / f"c{label}").mkdir()
        for index in range(10):
            Image.new("RGB", (32, 32), (shade, shade, shade)).save(tmp_path / f"c{label}" / f"{index}.png")
    spread = calibration_images(card, str(tmp_path), 4)
    assert len(spread) == 4 and len({round(float(image.mean()), 3) for image in spread}) == 4
    # Fewer images than asked are said, not only counted in --json; none readable is a UsageError, not
    # torch.cat's traceback.
    with pytest.warns(UserWarning, match=rf"calibrating on 40 images, not 300: {tmp_path} has 40 images"):
        assert len(calibration_images(card, str(tmp_path), 300)) == 40
    listing = tmp_path / "calib.txt"
    (tmp_path / "broken.png").write_bytes(b"not a png")
    listing.write_text(f"{tmp_path / 'broken.png'}, 0\n{tmp_path / 'c1' / '0.png'}, 1\n")
    with (
        pytest.warns(UserWarning, match="skipping unreadable image"),
        pytest.raises(UsageError, match="none of the 1 images asked for could be read"),
    ):
        calibration_images(card, str(listing), 1)
    with pytest.warns(UserWarning) as caught:
        assert len(calibration_images(card, str(listing), 2)) == 1
    said = [str(warning.message) for warning in caught]
    assert said[-1] == "calibrating on 1 images, not 2: some could not be read", said


def test_a_refused_int8_export_leaves_no_file(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A --keep-float module with no operation at all (a dropout) is refused before anything is written;
    one whose nodes ONNX Runtime's quantizer cannot find is known only once the fp32 file exists, and
    that refusal leaves nothing behind either."""
    from mobilenets.deploy import quantize
    from mobilenets.errors import UsageError

    checkpoint, _, _ = digits_checkpoint
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--int8"]
    argv += ["--calib", "digits", "--calib-images", "8", "--keep-float"]
    code, _, err = run_cli([*argv, "dropout"])
    assert code == 2 and "module 'dropout' has no operation of its own" in err, err
    assert list(tmp_path.iterdir()) == []

    def no_nodes(model_proto: object, modules: object) -> list[str]:
        raise UsageError("no layer of the model is in module 'stem'")

    monkeypatch.setattr(quantize, "nodes_in_modules", no_nodes)
    code, _, err = run_cli([*argv, "stem"])
    assert code == 2 and "no layer of the model is in module 'stem'" in err, err
    assert list(tmp_path.iterdir()) == []


# --- ONNX int8 with a fixed batch; the library behind `export`; exported files for inference ----------


def test_export_int8_onnx_with_a_fixed_batch(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path: Path
) -> None:
    """Without --dynamic-batch the file takes batches of 1, and calibration must feed it those."""
    import onnx

    checkpoint, _, _ = digits_checkpoint
    out = tmp_path / "m.int8.onnx"
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--int8", "--calib", "digits"]
    code, stdout, err = run_cli([*argv, "--calib-images", "25", "--verify-images", "8", "--json"])
    assert code == 0, err
    result = json.loads(stdout)
    assert result["int8"] == "onnxruntime" and result["calibration_images"] == 25
    assert result["dynamic_batch"] is False and result["verified_batch_sizes"] == [1]
    assert result["fp32_max_abs_diff"] <= 1e-4 and 0.0 <= result["int8_top1_agreement"] <= 1.0
    assert result["int8_onnx"] == str(out) and result["fp32_onnx"] == str(out.with_suffix(".fp32.onnx"))
    assert "25 images" in result["quantization"]
    for path in (out, out.with_suffix(".fp32.onnx")):
        assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["torchvision_mobilenet_v2", "efficientnet_lite0"])
def test_packaged_weights_export_to_int8_onnx_with_a_fixed_batch(weights: str, tmp_path: Path) -> None:
    """The README's int8 example: converted packaged weights, calibrated on ImageNet photos, batch 1."""
    from mobilenets.weights import get_pretrained

    from .conftest import imagenet_list

    listing, entry = imagenet_list(), get_pretrained(weights)
    converted = tmp_path / "w.safetensors"
    code, _, err = run_cli(["convert", str(entry.path()), "--model", entry.model, "--out", str(converted)])
    assert code == 0, err
    out = tmp_path / "m.int8.onnx"
    argv = ["export", "--weights", str(converted), "--int8", "--calib", str(listing), "--out", str(out)]
    code, stdout, err = run_cli([*argv, "--calib-images", "20", "--json"])
    assert code == 0, err
    result = json.loads(stdout)
    print(f"{weights}: int8 top-1 agreement {result['int8_top1_agreement']:.3f} on {result['verified_on']}")
    assert result["dynamic_batch"] is False and result["verified_batch_sizes"] == [1]
    assert result["calibration_images"] == 20 and result["fp32_max_abs_diff"] <= 1e-4
    assert result["int8_top1_agreement"] >= 0.75, result


def test_export_verified_from_python_and_load_deployed(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path: Path
) -> None:
    from mobilenets.deploy import ExportReport, export_verified, load_deployed
    from mobilenets.errors import ExternalError

    _, model, card = digits_checkpoint
    images = torch.rand(6, 3, 32, 32)
    onnx_report = export_verified(model, tmp_path / "m.onnx", card=card, verify_images=images)
    assert isinstance(onnx_report, ExportReport) and onnx_report.path == tmp_path / "m.onnx"
    assert onnx_report.verified_batch_sizes == (1,) and onnx_report.verified_on == "6 given images"
    assert onnx_report.max_abs_diff is not None and onnx_report.max_abs_diff <= 1e-4
    assert onnx_report.int8 is None and "int8_top1_agreement" not in onnx_report.to_dict()
    assert onnx_report.to_dict()["fp32_max_abs_diff"] == onnx_report.max_abs_diff
    with pytest.raises(AttributeError):
        onnx_report.bytes = 0  # type: ignore[misc]
    program = export_verified(
        model, tmp_path / "m.pt2", format="exported-program", resolution=48, card=card, verify_images=None
    )
    assert program.verified_on == "random inputs (no images given)" and program.verified_batch_sizes == (1,)
    json.dumps(program.to_dict())  # JSON-ready
    for path, size in ((tmp_path / "m.onnx", 32), (tmp_path / "m.pt2", 48)):
        module, loaded_card = load_deployed(path)
        assert loaded_card.img_size == size and loaded_card.classes == card.classes
        x = torch.rand(3, 3, size, size)  # a file with a fixed batch of 1 runs batches in pieces
        with torch.inference_mode():
            assert (module(x) - model(x)).abs().max().item() <= 1e-4
    with pytest.raises(ExternalError, match=r"ONNX Runtime output differs .* not trustworthy"):
        export_verified(model, tmp_path / "strict.onnx", card=card, verify_images=images, tolerance=1e-12)


def test_export_verified_checks_values_before_writing(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path: Path
) -> None:
    from mobilenets.deploy import export_verified, load_deployed

    _, model, card = digits_checkpoint
    images = torch.rand(4, 3, 32, 32)
    out = tmp_path / "m.onnx"
    cases: list[tuple[dict[str, object], str]] = [
        ({"format": "tflite"}, "format 'tflite' is not an export format"),
        ({"out": tmp_path / "m.pt"}, r"out '.*m\.pt' must end in \.onnx for format onnx"),
        ({"tolerance": float("nan")}, "tolerance must be a finite number >= 0, got nan"),
        ({"int8": True}, "int8 needs calibration images"),
        ({"calibration": images}, "calibration: only with int8=True"),
        ({"int8": True, "calibration": images, "calib_method": "mse"}, "unknown calibration method 'mse'"),
        ({"int8": True, "calibration": images, "weight_dtype": "int4"}, "unknown weight dtype 'int4'"),
        ({"int8": True, "calibration": images, "qat_epochs": 1}, "qat_epochs: only for format 'exported"),
        ({"out": tmp_path / "m.pt", "format": "torchscript", "int8": True}, "has no int8 export"),
        (
            {"out": tmp_path / "m.pt2", "format": "exported-program", "int8": True, "calibration": images}
            | {"weight_dtype": "int8"},
            "weight_dtype: only for format 'onnx'",
        ),
        ({"qat_epochs": 0}, "qat_epochs must be >= 1, got 0"),
        ({"qat_lr": -1.0}, "qat_lr must be a positive number, got -1.0"),
        ({"verify_images": torch.rand(4, 3, 64, 64)}, r"verify_images must be a non-empty \(N, 3, 32, 32\)"),
        ({"int8": True, "calibration": images.to(torch.uint8)}, "calibration must hold float images"),
        ({"card": None}, "give resolution"),
        ({"resolution": 8}, "resolution must be an integer from 32"),
        ({"int8": True, "calibration": images, "keep_float": ["stemm"]}, "no module 'stemm'"),
    ]
    for overrides, message in cases:
        kwargs: dict[str, object] = {"out": out, "card": card, **overrides}
        with pytest.raises(ValueError, match=message):
            export_verified(model, **kwargs)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_deployed(tmp_path / "none.onnx")
    for name, message in (("fake.onnx", "not a readable ONNX file"), ("fake.pt2", "not a TorchScript")):
        (tmp_path / name).write_bytes(b"not a model \xff")
        with pytest.raises(ValueError, match=message):
            load_deployed(tmp_path / name)


def test_predict_with_exported_files(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path: Path
) -> None:
    from PIL import Image

    checkpoint, _, _ = digits_checkpoint
    images = []
    for index in range(3):
        pixels = torch.randint(0, 256, (40, 40, 3), generator=torch.Generator().manual_seed(index))
        images.append(tmp_path / f"{index}.png")
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(images[-1])
    for name, file_format in (("m.onnx", "onnx"), ("m.pt2", "exported-program")):
        argv = ["export", "--checkpoint", str(checkpoint), "--format", file_format]
        code, _, err = run_cli([*argv, "--out", str(tmp_path / name), "--verify-images", "4"])
        assert code == 0, err
    predictions = {}
    for flag, path in (
        ("--checkpoint", checkpoint),
        ("--onnx", tmp_path / "m.onnx"),
        ("--program", tmp_path / "m.pt2"),
    ):
        code, stdout, err = run_cli(["predict", flag, str(path), "--top", "3", "--json", *map(str, images)])
        assert code == 0, err
        predictions[flag] = json.loads(stdout)["predictions"]
    for flag in ("--onnx", "--program"):
        for ours, theirs in zip(predictions["--checkpoint"], predictions[flag], strict=True):
            assert [e["class"] for e in ours["top"]] == [e["class"] for e in theirs["top"]]
            for a, b in zip(ours["top"], theirs["top"], strict=True):
                assert abs(a["probability"] - b["probability"]) <= 1e-4
    code, _, err = run_cli(
        ["predict", "--onnx", str(tmp_path / "m.onnx"), "--weights", str(checkpoint), "x.png"]
    )
    assert code == 2 and "not allowed with argument" in err, err
    # Options for weights files would change nothing on an exported file: refused, not ignored
    onnx = ["--onnx", str(tmp_path / "m.onnx")]
    for command in (["predict", *onnx, str(images[0])], ["eval", *onnx, "--data", "digits"]):
        code, _, err = run_cli([*command, "--model", "mobilenet_v1", "--preset", "imagenet"])
        assert code == 2 and "--model, --preset: only for weights files, not with --onnx" in err, err


def test_export_and_eval_refuse_to_overwrite_what_they_read(tmp_path: Path) -> None:
    """An --out (or --confusion) naming the weights being read would destroy them: refused."""
    from .conftest import run_cli

    weights = tmp_path / "their.pt"
    torch.save(mobilenets.mobilenet_v2(width_mult=0.35).state_dict(), weights)
    before = weights.read_bytes()
    argv = ["export", "--weights", str(weights), "--model", "mobilenet_v2", "--width-mult", "0.35"]
    code, _, err = run_cli([*argv, "--format", "torchscript", "--out", str(weights)])
    assert code == 2 and "would overwrite" in err and "its own input" in err, err
    code, _, err = run_cli(
        ["eval", "--weights", str(weights), "--model", "mobilenet_v2", "--confusion", str(weights)]
    )
    assert code == 2 and "must end in .png" in err, err
    assert weights.read_bytes() == before
    for argv in (["eval", "--weights", ""], ["export", "mobilenet_v2", "--out", ""]):
        code, _, err = run_cli(argv)
        assert code == 2 and "an empty path; expected a file or folder name" in err, err
