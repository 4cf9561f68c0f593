"""OpenVINO int8 IRs taking their input quantized (uint8 NHWC): the same network as the float-input IR,
run on its int8 stem, fed by a per-channel pixel table, exported by the CLI and timed by the bench.

Not collected with the suite: ``tests/test_runtimes_uint8.py`` runs this file in a pytest process of its
own (why is said there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.bench.load import load_variant
from mobilenets.bench.prepare import prepare
from mobilenets.bench.workfiles import WorkFiles
from mobilenets.cli.export import _message
from mobilenets.deploy.export_report import ExportReport
from mobilenets.deploy.openvino_export import (
    OpenVINOClassifier,
    export_openvino,
    openvino_api,
    read_openvino_card,
)
from mobilenets.deploy.openvino_input import InputQuantization, input_quantization, pixel_table
from mobilenets.weights import ModelCard
from tests.conftest import run_cli

INT8_CALIBRATION = ["--calib", "digits", "--calib-images", "40"]


def _input_shapes(*paths: Path) -> list[str]:
    core = openvino_api().Core()
    return [str(core.read_model(str(path)).inputs[0].get_partial_shape()) for path in paths]


def _stem_kernel(path: Path) -> str:
    """The kernel OpenVINO runs the stem convolution on (its profiler), and what reads the input."""
    core = openvino_api().Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer({0: np.zeros(list(compiled.input(0).get_shape()), np.uint8)})
    ran = {
        node.node_name: node.exec_type for node in request.profiling_info if "EXECUTED" in str(node.status)
    }
    return ran["convolution/aten.convolution.default/Convolution"]


@pytest.fixture(scope="module")
def exported(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, Any]]:
    """The digits checkpoint as int8 IRs by the CLI, once with --uint8-input (its JSON report too), once
    with float input, calibrated alike."""
    checkpoint, _, _ = digits_checkpoint
    folder = tmp_path_factory.mktemp("uint8")
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "openvino", "--int8", *INT8_CALIBRATION]
    code, stdout, err = run_cli([*argv, "--uint8-input", "--out", str(folder / "u.xml"), "--json"])
    assert code == 0, err
    report = json.loads(stdout)
    code, _, err = run_cli([*argv, "--out", str(folder / "f.xml")])
    assert code == 0, err
    return folder / "u.xml", folder / "f.xml", report


def test_uint8_input_ir_is_the_float_input_irs_network_on_its_int8_stem(
    exported: tuple[Path, Path, dict[str, Any]],
) -> None:
    quantized, plain, _ = exported
    core = openvino_api().Core()
    ir = core.read_model(str(quantized))
    (given,) = ir.inputs
    assert (str(given.get_partial_shape()), given.get_element_type().get_type_name()) == ("[1,32,32,3]", "u8")
    readers = {
        target.get_node().get_type_name() for target in ir.get_parameters()[0].output(0).get_target_inputs()
    }
    assert readers == {"Convert"}  # no FakeQuantize of the input left
    quantization = input_quantization(ir)
    assert quantization is not None and quantization.scale > 0 and 0 <= quantization.zero_point < 256
    assert "I8" in _stem_kernel(quantized)  # the dequantization folded into the int8 stem
    # The same network: the float-input IR's own quantize of the images is what the table gives.
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    reference, loaded = OpenVINOClassifier(plain), OpenVINOClassifier(quantized)
    assert loaded.input_quantization == quantization
    torch.testing.assert_close(loaded(x), reference(x), atol=1e-4, rtol=1e-4)
    # An app: RGB pixels through the card's table, straight into OpenVINO.
    pixels = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    table = pixel_table(read_openvino_card(quantized), quantization)
    assert table.shape == (3, 256) and table.dtype == np.uint8 and (np.diff(table.astype(int)) >= 0).all()
    fed = np.stack([table[channel][pixels[..., channel]] for channel in range(3)], axis=-1)
    logits = core.compile_model(ir, "CPU").create_infer_request().infer({0: fed})[0]
    normalised = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    np.testing.assert_allclose(logits, reference(normalised).numpy(), atol=1e-4, rtol=1e-4)


def test_uint8_input_with_a_free_batch_and_the_refusals(
    tmp_path: Path, digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard]
) -> None:
    _, model, card = digits_checkpoint
    calibration = torch.rand(8, 3, 32, 32) * 2 - 1
    free = export_openvino(
        model, tmp_path / "d.xml", resolution=32, card=card, calibration=calibration, dynamic_batch=True,
        uint8_input=True,
    )  # fmt: skip
    assert _input_shapes(free.path) == ["[?,32,32,3]"]
    assert OpenVINOClassifier(free.path)(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    # A GroupNorm network's IR keeps its whole input shape free (OpenVINO crashes on a fixed one): so
    # does its uint8 input, and it computes what the float-input int8 IR does.
    grouped = mobilenets.create_model(
        "mobilenet_v2", width_mult=0.25, num_classes=10, norm="groupnorm"
    ).eval()
    written = [
        export_openvino(grouped, tmp_path / name, resolution=32, calibration=calibration, uint8_input=uint8)
        for name, uint8 in (("g.xml", False), ("gu.xml", True))
    ]
    assert _input_shapes(written[1].path) == ["[?,?,?,3]"]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    plain, quantized = (OpenVINOClassifier(ir.path)(x) for ir in written)
    torch.testing.assert_close(quantized, plain, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"uint8_input \(--uint8-input\): only for an int8 IR"):
        export_openvino(model, tmp_path / "f.xml", resolution=32, uint8_input=True)
    with pytest.raises(ValueError, match=r"input is not quantized.*drop the stem from keep_float"):
        export_openvino(
            model,
            tmp_path / "k.xml",
            resolution=32,
            calibration=calibration,
            keep_float=["stem"],
            uint8_input=True,
        )
    quantization = InputQuantization(0.5, 10)
    x = np.array([[[[-10.0, -5.0], [0.0, 200.0]]]], np.float32)
    assert quantization.quantize(x).ravel().tolist() == [0, 0, 10, 255]  # clipped to uint8, NHWC


def test_export_cli_uint8_input_then_eval(
    exported: tuple[Path, Path, dict[str, Any]], digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard]
) -> None:
    quantized, plain, report = exported
    assert set(report["uint8_input"]) == {"dtype", "layout", "scale", "zero_point"}
    assert report["uint8_input"]["layout"] == "NHWC" and report["int8_top1_agreement"] >= 0.75, report
    fields = {
        **report,
        "path": Path(report["path"]),
        "verified_batch_sizes": tuple(report["verified_batch_sizes"]),
    }
    said = _message(ExportReport(**fields))
    assert "input uint8 NHWC (value = (q - " in said and "calibrated on 40 images: top-1 agrees" in said
    scored = []
    for path in (quantized, plain):
        code, stdout, err = run_cli(["eval", "--openvino", str(path), "--json", "--no-confusion"])
        assert code == 0, err
        scored.append(json.loads(stdout))
    assert scored[0]["num_images"] > 100 and scored[0]["top1"] == scored[1]["top1"]
    checkpoint, _, _ = digits_checkpoint
    out = str(quantized.parent / "x.xml")
    without_int8 = ["export", "--checkpoint", str(checkpoint), "--format", "openvino", "--uint8-input"]
    code, _, err = run_cli([*without_int8, "--out", out])
    assert code == 2 and "--uint8-input: only for --format openvino --int8" in err, err
    onnx = ["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--int8", *INT8_CALIBRATION]
    code, _, err = run_cli([*onnx, "--uint8-input", "--out", out])
    assert code == 2 and "not --format onnx --int8" in err, err


def test_bench_times_both_sides_uint8_input_irs(tmp_path: Path) -> None:
    """Ours as `export --uint8-input` writes it, torchvision's NNCF int8 IR with its input cut the same
    way; each timed on the bench's image quantized as its IR says."""
    files = WorkFiles(tmp_path, "mobilenet_v2", 1, 32)
    variants = ("ours_openvino_uint8", "torchvision_openvino_uint8")
    assert prepare(files, variants) == {}
    for variant in variants:
        side = variant.split("_")[0]
        path = files.openvino(side, int8=True, uint8_input=True)
        assert path.name.endswith(".uint8-input.openvino.xml")
        assert input_quantization(openvino_api().Core().read_model(str(path))) is not None
        logits = load_variant(files, variant, threads=1)()
        assert np.asarray(logits[0]).shape == (1, 1000)  # type: ignore[index]
