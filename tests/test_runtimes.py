"""The device runtimes: ExecuTorch programs (.pte, XNNPACK) and OpenVINO IR (.xml), fp32 and int8, written
by `mobilenets export`, verified in their runtime, carrying the card, run by `eval`/`predict`; bf16."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import mobilenets
from mobilenets.data.card import calibration_images
from mobilenets.deploy import export_verified, load_deployed, openvino_kernels
from mobilenets.deploy.bf16 import bf16_inference, cpu_has_bf16
from mobilenets.deploy.executorch_export import (
    ExecuTorchClassifier,
    PteFile,
    executorch_api,
    export_executorch,
    planned_arena_bytes,
    quantize_xnnpack,
    read_pte_card,
    read_pte_metadata,
)
from mobilenets.deploy.memory_efficient import memory_efficient
from mobilenets.deploy.openvino_export import (
    OpenVINOClassifier,
    export_openvino,
    openvino_api,
    read_openvino_card,
    supports_bf16,
)
from mobilenets.deploy.openvino_kernels import (
    PRIORITY_ATTRIBUTE,
    TUNE_ROUNDS,
    KernelTiming,
    kernel_preferences,
    prefer_kernels,
)
from mobilenets.deploy.verified_export import PT2E_CALIBRATION_BATCH
from mobilenets.weights import ModelCard
from tests.conftest import DIGITS, randomize_norm_stats, run_cli

RUNTIMES = [("executorch", ".pte", "--pte"), ("openvino", ".xml", "--openvino")]
INT8_CALIBRATION = ["--calib", "digits", "--calib-images", "40"]
FP32_VERIFY = ["--verify-images", "12"]


@pytest.mark.parametrize(("file_format", "suffix", "flag"), RUNTIMES)
@pytest.mark.parametrize("dynamic", [False, True])
def test_fp32_export_reloads_in_its_runtime_matches_and_carries_the_card(
    file_format: str,
    suffix: str,
    flag: str,
    dynamic: bool,
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    checkpoint, model, card = digits_checkpoint
    if file_format == "executorch" and not dynamic:  # written once, for this test and those below
        out, result = request.getfixturevalue("cli_fp32_program")
    else:
        out = tmp_path / f"m{suffix}"
        argv = ["export", "--checkpoint", str(checkpoint), "--format", file_format, "--out", str(out)]
        dynamic_batch = ["--dynamic-batch"] if dynamic else []
        code, stdout, err = run_cli([*argv, *FP32_VERIFY, "--json", *dynamic_batch])
        assert code == 0, err
        result = json.loads(stdout)
    assert result["format"] == file_format and result["max_abs_diff"] <= 1e-4
    assert "12 images of digits" in result["verified_on"]
    # Batch sizes the file itself ran: an ExecuTorch program takes at most 8 (MAX_PTE_BATCH) at once.
    sizes = {"executorch": [1, 3, 8], "openvino": [1, 11]}[file_format] if dynamic else [1]
    assert result["verified_batch_sizes"] == sizes
    written = sorted(p.name for p in out.parent.iterdir())  # atomic: no temporary file or folder left
    assert written == (["m.bin", "m.xml"] if file_format == "openvino" else ["m.pte"])
    assert result["bytes"] == sum((out.parent / name).stat().st_size for name in written)

    module, loaded_card = load_deployed(out)
    assert loaded_card == card and loaded_card.classes == DIGITS
    with torch.inference_mode():
        x = torch.randn(5, 3, 32, 32)  # a fixed-batch file runs bigger batches one image at a time
        assert (module(x) - model(x)).abs().max().item() <= 1e-4
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\); got \[1, 3, 64, 64\]"):
        module(torch.randn(1, 3, 64, 64))  # the TF SAME pads are those of 32 px

    code, stdout, err = run_cli(["eval", flag, str(out), "--json", "--no-confusion", "--batch-size", "50"])
    assert code == 0, err
    report = json.loads(stdout)
    code, stdout, err = run_cli(["eval", "--checkpoint", str(checkpoint), "--json", "--no-confusion"])
    assert code == 0, err
    assert report["top1"] == pytest.approx(json.loads(stdout)["top1"], abs=1e-9)  # same images, same answers
    assert report["precision"] == "fp32" and report["checkpoint"] == str(out)


@pytest.fixture(scope="module")
def cli_fp32_program(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The digits checkpoint exported once by `export --format executorch` (fixed batch), with its JSON
    report: the CLI test above and, as the XNNPACK program, the tests below (a lowering takes 10-30 s)."""
    checkpoint, _, _ = digits_checkpoint
    out = tmp_path_factory.mktemp("fp32") / "m.pte"
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "executorch", "--out", str(out)]
    code, stdout, err = run_cli([*argv, *FP32_VERIFY, "--json"])
    assert code == 0, err
    return out, json.loads(stdout)


@pytest.fixture(scope="module")
def digits_programs(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    cli_fp32_program: tuple[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, PteFile]:
    """The digits model lowered once for the tests below: XNNPACK (by the CLI), portable."""
    _, model, card = digits_checkpoint
    path, report = cli_fp32_program
    delegated = PteFile(path, report["bytes"], report["arena_bytes"], delegated=True, int8=False)
    portable = tmp_path_factory.mktemp("programs") / "p.pte"
    return {
        "delegated": delegated,
        "portable": export_executorch(model, portable, resolution=32, card=card, delegate=False),
    }


def test_executorch_metadata_plan_and_portable_lowering(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], digits_programs: dict[str, PteFile]
) -> None:
    _, model, card = digits_checkpoint
    delegated, portable = digits_programs["delegated"], digits_programs["portable"]
    metadata = read_pte_metadata(portable.path)
    assert metadata["delegate"] == "portable" and metadata["input_shape"] == [1, 3, 32, 32]
    assert read_pte_card(delegated.path) == card and "int8" not in metadata
    # The portable plan holds every intermediate tensor; XNNPACK keeps its own workspace outside it.
    assert planned_arena_bytes(portable.path) == portable.arena_bytes > delegated.arena_bytes
    assert portable.arena_bytes >= 4 * 3 * 32 * 32  # at least the input image's float32 bytes
    with torch.inference_mode():
        x = torch.randn(2, 3, 32, 32)
        assert (ExecuTorchClassifier(portable.path)(x) - model(x)).abs().max().item() <= 1e-4


@pytest.fixture(scope="module")
def cli_int8_program(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The digits checkpoint exported once by `export --format executorch --int8` (an int8 lowering
    takes 20-30 s), with its JSON report: for the CLI test and the kernels test below."""
    checkpoint, _, _ = digits_checkpoint
    out = tmp_path_factory.mktemp("int8") / "m.int8.pte"
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "executorch", "--out", str(out), "--int8"]
    code, stdout, err = run_cli([*argv, *INT8_CALIBRATION, "--dynamic-batch", "--json"])
    assert code == 0, err
    return out, json.loads(stdout)


def test_int8_executorch_runs_xnnpack_kernels_as_simulated(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    digits_programs: dict[str, PteFile],
    cli_int8_program: tuple[Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """XNNPACK's int8 kernels compute what the quantized PyTorch graph simulates, and the file shrinks."""
    _, model, card = digits_checkpoint
    written, report = cli_int8_program
    assert report["bytes"] == written.stat().st_size < 0.5 * digits_programs["delegated"].bytes
    assert read_pte_metadata(written)["int8"] == "xnnpack" and report["dynamic_batch"]
    # The graph the export lowered, quantized again in PyTorch from the same 40 images in one batch
    calibration = calibration_images(card, "digits", 40)  # what export --calib digits takes
    assert len(calibration) == 40 < PT2E_CALIBRATION_BATCH
    int8 = quantize_xnnpack(model, [calibration], resolution=32)
    x = torch.rand(8, 3, 32, 32) * 2 - 1  # a batch of 8 in one call: the dynamic batch's upper bound
    with torch.inference_mode():
        simulated, runtime, float_logits = int8(x), ExecuTorchClassifier(written)(x), model(x)
    # The same integer arithmetic: most logits equal exactly, the rest one rounding step apart.
    assert (simulated == runtime).float().mean() >= 0.9
    assert (simulated - runtime).abs().max() <= 0.02 * simulated.abs().max()
    assert not torch.equal(simulated, float_logits)  # and int8 it is
    # Each ReLU6 reads its convolution directly: quantized once, after the clamp, which XNNPACK fuses.
    relu6 = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
    clamps = [n for n in int8.graph_module.graph.nodes if n.target in relu6]
    assert len(clamps) == 1 + 1 + 2 * 16 + 1  # stem; block 0 (no expansion); 16 blocks; the head conv
    assert all(n.args[0].target == torch.ops.aten.conv2d.default for n in clamps)
    float_head = quantize_xnnpack(model, calibration.split(20), resolution=32, keep_float=["classifier"])
    linears = [n for n in float_head.graph_module.graph.nodes if n.target == torch.ops.aten.linear.default]
    assert len(linears) == 1 and "dequantize" not in str(linears[0].args[1].target)  # a float weight
    with pytest.raises(ValueError, match=r"an iterable of .* batches, not one tensor"):
        quantize_xnnpack(model, calibration, resolution=32)
    with pytest.raises(ValueError, match=r"module 'stem\.bn' has no operation of its own"):
        quantize_xnnpack(model, calibration.split(20), resolution=32, keep_float=["stem.bn"])
    with pytest.raises(ValueError, match="int8 program runs on XNNPACK"):
        export_executorch(int8, tmp_path / "bad.pte", resolution=32, delegate=False)
    with pytest.raises(ValueError, match=r"must end in \.pte, got '.*bad\.onnx'"):
        export_executorch(int8, tmp_path / "bad.onnx", resolution=32)


def test_openvino_int8_keeps_the_named_modules_float(tmp_path: Path) -> None:
    """NNCF's ignored scope matches OpenVINO's operation names, which carry no module path: the named
    modules' operations are found through the program they were converted from."""
    model = mobilenets.create_model("mobilenet_v2", width_mult=0.25, num_classes=10).eval()
    calibration = torch.rand(8, 3, 32, 32) * 2 - 1
    ov = openvino_api()

    def inputs_of(path: Path) -> dict[str, list[str]]:
        """What feeds each convolution and matmul: its first operation's name -> the producers' types."""
        fed = {}
        for op in ov.Core().read_model(str(path)).get_ordered_ops():
            if op.get_type_name() in ("Convolution", "MatMul"):
                producers = [op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())]
                fed[op.get_friendly_name().split("/")[0]] = producers
        return fed

    plain = export_openvino(model, tmp_path / "q.xml", resolution=32, calibration=calibration)
    kept = export_openvino(
        model, tmp_path / "k.xml", resolution=32, calibration=calibration, keep_float=["stem", "classifier"]
    )
    quantized, float_kept = inputs_of(plain.path), inputs_of(kept.path)
    assert "FakeQuantize" in quantized["convolution"] and "Multiply" in quantized["linear"]  # int8 weights
    assert float_kept["convolution"] == ["Parameter", "Constant"]  # the stem reads the image, float weights
    assert float_kept["linear"][1] == "Constant"  # the classifier's float weight
    assert "FakeQuantize" in float_kept["convolution_2"]  # and the rest stays int8
    with pytest.raises(ValueError, match=r"keep_float \(--keep-float\): module 'stem\.bn' has no operation"):
        export_openvino(
            model, tmp_path / "b.xml", resolution=32, calibration=calibration, keep_float=["stem.bn"]
        )


def _input_shapes(*paths: Path) -> list[str]:
    core = openvino_api().Core()
    return [str(core.read_model(path).inputs[0].get_partial_shape()) for path in paths]


def test_openvino_ir_input_shape_is_the_files(tmp_path: Path) -> None:
    """Fixed as the file says, [1,3,R,R], or with a free batch, not left free ([?,3,?,?]) by the
    converter: a free shape makes OpenVINO infer shapes at every inference."""
    model = mobilenets.create_model("mobilenet_v2", width_mult=0.25, num_classes=10).eval()
    export_openvino(model, tmp_path / "fixed.xml", resolution=32)
    export_openvino(model, tmp_path / "free.xml", resolution=32, dynamic_batch=True)
    assert _input_shapes(tmp_path / "fixed.xml", tmp_path / "free.xml") == ["[1,3,32,32]", "[?,3,32,32]"]


def _kernels_run(path: Path, precision: str = "f32") -> dict[str, str]:
    """Each executed convolution's kernel (OpenVINO's profiler) when the IR at ``path`` is compiled."""
    core = openvino_api().Core()
    config = {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": precision}
    request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
    request.infer({0: torch.zeros(1, 3, 32, 32).numpy()})
    return {
        node.node_name: node.exec_type
        for node in request.profiling_info
        if node.node_type in ("Convolution", "GroupConvolution") and str(node.status).endswith("EXECUTED")
    }


def test_openvino_kernel_preference_is_written_into_the_ir_and_obeyed(
    tmp_path: Path, digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard]
) -> None:
    """--kernels jit: every (non-depthwise) convolution of the IR asks for OpenVINO's direct kernels,
    which OpenVINO then runs, with the same outputs and card; the default leaves its own order."""
    _, model, card = digits_checkpoint
    plain = export_openvino(model, tmp_path / "plain.xml", resolution=32, card=card)
    jit = export_openvino(model, tmp_path / "jit.xml", resolution=32, card=card, kernels="jit")
    assert (plain.kernels, jit.kernels, plain.kernel_ratio) == ("default", "jit", None)
    assert kernel_preferences(plain.path) == {}
    preferences = kernel_preferences(jit.path)
    core = openvino_api().Core()
    convolutions = [op for op in core.read_model(str(jit.path)).get_ordered_ops()]
    names = {op.get_friendly_name() for op in convolutions if op.get_type_name() == "Convolution"}
    assert set(preferences) == names and len(names) == 35  # the 1x1s, the stem: not the depthwise ones
    assert set(preferences.values()) == {"cpu:jit_avx512_1x1,cpu:jit_avx512,cpu:jit_avx2_1x1,cpu:jit_avx2"}
    assert prefer_kernels(jit.path) == 35 and kernel_preferences(jit.path) == preferences  # not twice
    assert (tmp_path / "jit.xml").read_text().count(PRIORITY_ATTRIBUTE) == 35
    assert jit.path.stat().st_mode & 0o777 == jit.weights_path.stat().st_mode & 0o777  # not a temp's 0600
    ran = _kernels_run(jit.path)  # OpenVINO's own order would run brgconv kernels on AVX-512 CPUs
    pointwise = [name for name in ran if name in names]
    assert pointwise and all(ran[name].startswith("jit_") for name in pointwise), ran
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    outputs = [OpenVINOClassifier(path)(x) for path in (plain.path, jit.path)]
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)
    assert read_openvino_card(jit.path) == read_openvino_card(plain.path)
    with pytest.raises(ValueError, match="unknown kernels 'fast'; expected one of default, jit, tune"):
        export_openvino(model, tmp_path / "x.xml", resolution=32, kernels="fast")


def test_openvino_kernel_tuning_keeps_the_preference_only_if_it_wins(
    tmp_path: Path, digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard]
) -> None:
    """--kernels tune times both orders in turns and writes the preference only where it won at least
    12 of 15 rounds; the report says which, with the measured ratio."""
    won, lost, split = (KernelTiming((ratio,) * TUNE_ROUNDS) for ratio in (0.95, 1.02, 1.0))
    assert (won.preferred, lost.preferred, split.preferred) == (True, False, False)
    close = KernelTiming((0.9,) * 11 + (1.1,) * 4)
    assert (close.wins, close.preferred, close.ratio) == (11, False, 0.9)
    checkpoint, model, _ = digits_checkpoint
    tuned = export_openvino(model, tmp_path / "t.xml", resolution=32, kernels="tune")
    assert tuned.kernel_ratio is not None and 0.3 < tuned.kernel_ratio < 3
    assert bool(kernel_preferences(tuned.path)) == (tuned.kernels == "jit")
    export = ["export", "--weights", str(checkpoint), "--format", "openvino", "--kernels"]
    code, out, err = run_cli([*export, "tune", "--out", str(tmp_path / "c.xml"), "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["kernels"] in ("default", "jit") and isinstance(report["kernel_ratio"], float)
    code, out, err = run_cli([*export, "jit", "--out", str(tmp_path / "j.xml")])
    assert code == 0 and "direct convolution kernels preferred" in out, err
    code, _, err = run_cli(["export", "mobilenet_v2", "--kernels", "jit", "--out", str(tmp_path / "m.onnx")])
    assert code == 2 and "--kernels: only for --format openvino, not --format onnx" in err


def test_openvino_fixed_batch_export_of_a_groupnorm_network(tmp_path: Path) -> None:
    """OpenVINO's fp32 compiler crashes (a segmentation fault) on GroupNorm networks with a fixed input
    shape, which a free batch reshaped to 1 also gave: they keep the converter's free shape."""
    model = mobilenets.create_model("mobilenet_v2", width_mult=0.25, num_classes=10, norm="groupnorm").eval()
    result = export_verified(model, tmp_path / "gn.xml", format="openvino", resolution=32)
    assert result.max_abs_diff < 1e-4
    assert _input_shapes(tmp_path / "gn.xml") == ["[?,3,?,?]"]
    timed: set[tuple[int, ...]] = set()

    def median_call(request: Any, x: Any) -> float:
        timed.add(tuple(x.shape))
        return 1.0

    with pytest.MonkeyPatch.context() as patch:  # what --kernels tune times the free-shape IR on
        patch.setattr(openvino_kernels, "_median_call", median_call)
        export_openvino(model, tmp_path / "tuned.xml", resolution=32, kernels="tune")
    assert timed == {(1, 3, 32, 32)}
    (tmp_path / "taken.xml").mkdir()
    with pytest.raises(ValueError, match=r"taken\.xml. for the OpenVINO IR: it is a folder"):
        export_openvino(model, tmp_path / "taken.xml", resolution=32)
    assert not (tmp_path / "taken.bin").exists()  # nothing left behind


@pytest.mark.parametrize(("file_format", "suffix", "flag"), RUNTIMES)
def test_int8_export_through_the_cli_then_eval(
    file_format: str,
    suffix: str,
    flag: str,
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    checkpoint, _, _ = digits_checkpoint
    argv = ["export", "--checkpoint", str(checkpoint), "--format", file_format, "--int8"]
    if file_format == "executorch":  # written once for this test and the kernels test above
        out, result = request.getfixturevalue("cli_int8_program")
    else:
        out = tmp_path / f"m.int8{suffix}"
        code, stdout, err = run_cli([*argv, "--out", str(out), *INT8_CALIBRATION, "--json"])
        assert code == 0, err
        result = json.loads(stdout)
    assert result["int8"] == {"executorch": "xnnpack", "openvino": "nncf"}[file_format]
    assert result["calibration_images"] == 40 and "32 images of digits" in result["verified_on"]
    assert result["int8_top1_agreement"] >= 0.75, result
    # The file says how it was made, as ONNX's int8 files do (its report reads it back from the file)
    quantizer = {"executorch": "XNNPACK's quantizer (PT2E)", "openvino": "NNCF"}[file_format]
    assert result["quantization"].startswith(quantizer), result["quantization"]
    assert "calibrated on 40 images" in result["quantization"]
    code, stdout, err = run_cli(["eval", flag, str(out), "--json", "--no-confusion"])
    assert code == 0, err
    report = json.loads(stdout)
    assert report["num_images"] > 100 and report["precision"] == f"int8 ({result['int8']})"  # not "fp32"
    refused = [*argv, "--out", str(tmp_path / f"w{suffix}"), "--calib", "digits", "--weight-dtype", "int8"]
    code, _, err = run_cli(refused)
    assert code == 2 and f"--format {file_format} quantizes with" in err, err


def test_runtime_files_refuse_bad_input_clearly(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    digits_programs: dict[str, PteFile],
    tmp_path: Path,
) -> None:
    checkpoint, model, _ = digits_checkpoint
    for name, message in (
        ("fake.pte", "not an ExecuTorch program"),
        ("fake.xml", "has no weights file beside it: .*fake.bin' does not exist .*copy both"),
        ("fake.bin", None),
        ("fake.xml", r"not an OpenVINO IR this runtime can read \((?!Exception from)"),  # the reason
    ):
        (tmp_path / name).write_bytes(b"not a model \xff")
        if message is not None:
            with pytest.raises(ValueError, match=message):
                load_deployed(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_deployed(tmp_path / "none.pte")
    # Bytes 4-7 that are not UTF-8: ExecuTorch's log of the wrong identifier aborted the process.
    (tmp_path / "gz.pte").write_bytes(b"\x1f\x8b\x08\x00\xd5\xff\xfe\x80" + bytes(64))
    with pytest.raises(ValueError, match="not an ExecuTorch program"):
        load_deployed(tmp_path / "gz.pte")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.onnx' is empty \(0 bytes\)"):
        load_deployed(tmp_path / "empty.onnx")
    ExecuTorchClassifier(digits_programs["delegated"].path)  # threads=1 for one file is not kept for the next
    default = executorch_api().thread_count()
    ExecuTorchClassifier(digits_programs["delegated"].path, threads=1)
    assert executorch_api().thread_count() == 1
    ExecuTorchClassifier(digits_programs["delegated"].path)
    assert executorch_api().thread_count() == default
    with pytest.raises(ValueError, match=r"precision bf16: only OpenVINO files \(\.xml\)"):
        load_deployed(digits_programs["delegated"].path, precision="bf16")
    code, _, err = run_cli(["eval", "--pte", str(tmp_path / "fake.xml"), "--data", "digits"])
    assert code == 2 and "--pte" in err and "expected a .pte file" in err, err
    # Each flag names its runtime: --onnx ran a TorchScript file in PyTorch, --program an ONNX file.
    for flag, name, wanted in (("--onnx", "m.pt", ".onnx"), ("--program", "m.onnx", ".pt or .pt2")):
        code, _, err = run_cli(["eval", flag, str(tmp_path / name), "--data", "digits"])
        assert code == 2 and f"expected a {wanted} file" in err, err
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "openvino", "--out", "m.pte"]
    code, _, err = run_cli(argv)
    assert code == 2 and "must end in .xml" in err, err
    with pytest.raises(ValueError, match="no mobilenets model card"):
        read_openvino_card(export_verified(model, tmp_path / "m.xml", format="openvino", resolution=32).path)
    for module in (
        OpenVINOClassifier(tmp_path / "m.xml"),
        ExecuTorchClassifier(digits_programs["delegated"].path),
    ):
        # fixed-batch files: the shape given is named, not that of its first slice
        with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\); got \[3, 32, 32\]"):
            module(torch.randn(3, 32, 32))
        with pytest.raises(ValueError, match=r"empty batch \(shape \[0, 3, 32, 32\]\); give it at least one"):
            module(torch.randn(0, 3, 32, 32))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        planned_arena_bytes(tmp_path / "none.pte")
    (tmp_path / "d.bin").mkdir()  # where the IR's weights would go: refused before the export runs
    code, _, err = run_cli(
        ["export", "--checkpoint", str(checkpoint), "--format", "openvino", "--out", str(tmp_path / "d.xml")]
    )
    assert code == 2 and "also writes" in err and "d.bin' beside it, which is a folder" in err, err
    assert not list(tmp_path.glob("d.unverified*"))
    # The .bin of another export of the same network (OpenVINO would run it), or one cut short.
    twin = copy.deepcopy(model)
    with torch.no_grad():
        next(twin.parameters()).add_(0.5)
    export_openvino(twin, tmp_path / "twin.xml", resolution=32)
    shutil.copyfile(tmp_path / "twin.bin", tmp_path / "m.bin")
    with pytest.raises(ValueError, match=r"m\.bin' is not the one it was exported with .*together"):
        OpenVINOClassifier(tmp_path / "m.xml")
    (tmp_path / "m.bin").write_bytes((tmp_path / "twin.bin").read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"m\.bin' is shorter than the \.xml needs"):
        load_deployed(tmp_path / "m.xml")


def test_bf16_inference_and_openvino_bf16(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard], tmp_path: Path
) -> None:
    checkpoint, model, card = digits_checkpoint
    if not cpu_has_bf16():
        with pytest.raises(ValueError, match="no native bf16 arithmetic"):
            bf16_inference(model)
        code, _, err = run_cli(["eval", "--checkpoint", str(checkpoint), "--precision", "bf16"])
        assert code == 2 and "bf16" in err, err
        return
    x = torch.randn(16, 3, 32, 32)
    with torch.inference_mode():
        reference, bf16 = model(x), bf16_inference(model)(x)
    assert bf16.dtype == torch.float32 and 0 < (reference - bf16).abs().max() < 0.1 * reference.abs().max()
    code, stdout, err = run_cli(
        ["eval", "--checkpoint", str(checkpoint), "--precision", "bf16", "--json", "--no-confusion"]
    )
    assert code == 0, err
    assert json.loads(stdout)["precision"] == "bf16"
    ir = export_verified(model, tmp_path / "m.xml", format="openvino", card=card).path
    assert supports_bf16()  # OpenVINO sees the same instructions oneDNN does
    with torch.inference_mode():
        ov_bf16 = OpenVINOClassifier(ir, precision="bf16")(x)
    assert 0 < (reference - ov_bf16).abs().max() < 0.1 * reference.abs().max()


def test_chunks_and_tiles_keep_their_saving_in_the_executorch_plan(tmp_path: Path) -> None:
    """memory_efficient's chunks and PatchedStem's tiles survive export: ExecuTorch's planner frees each
    chunk once projected and each tile's tensors once the tile is made.

    At 128 px (at 64 px the tiles' overlap outweighs what they save; 224 px is in deployed_memory.py),
    4 chunks: the planner's arenas are exact (plain 1,572,864 bytes, chunked 2.18× less, tiled 1.65×
    less again). Each chunk more costs lowering time: 8 chunks save more (2.67×, then 1.35×), but this
    test took 82 s with them against 66 s (AVX2 EPYC).
    """
    model = mobilenets.mobilenet_v2(width_mult=0.5).eval()
    randomize_norm_stats(model)
    chunked = memory_efficient(model, 4, resolution=128)
    patched = memory_efficient(model, 4, patches=4, resolution=128)
    plain = export_executorch(model, tmp_path / "plain.pte", resolution=128, delegate=False)
    chunks_only = export_executorch(chunked, tmp_path / "chunked.pte", resolution=128, delegate=False)
    tiles = export_executorch(patched, tmp_path / "patched.pte", resolution=128, delegate=False)
    arenas = (plain.arena_bytes, chunks_only.arena_bytes, tiles.arena_bytes)
    print("planned arena: plain {:,} bytes, 4 chunks {:,}, 4×4 tiles too {:,}".format(*arenas))
    assert chunks_only.arena_bytes * 2 < plain.arena_bytes
    assert tiles.arena_bytes * 1.5 < chunks_only.arena_bytes
    # Delegated, the weight slices are folded into constants so XNNPACK takes every convolution.
    delegated = export_executorch(chunked, tmp_path / "xnnpack.pte", resolution=128)
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        reference = model(x)
        for path in (chunks_only.path, tiles.path, delegated.path):
            assert (ExecuTorchClassifier(path)(x) - reference).abs().max() <= 1e-4 * reference.abs().max()


def test_export_cli_writes_a_chunked_and_tiled_portable_program(
    digits_checkpoint: tuple[Path, torch.nn.Module, ModelCard],
    digits_programs: dict[str, PteFile],
    tmp_path: Path,
) -> None:
    """export --format executorch --portable --memory-efficient K [--patches N]: verified, smaller plan."""
    checkpoint, _, card = digits_checkpoint
    base = ["export", "--checkpoint", str(checkpoint), "--format", "executorch", "--portable", "--json"]
    reports = {}
    for name, extra in (("chunked", ["--memory-efficient", "4"]),
                        ("tiled", ["--memory-efficient", "4", "--patches", "2"])):  # fmt: skip
        code, stdout, err = run_cli(
            [*base, *extra, "--verify-images", "4", "--out", str(tmp_path / f"{name}.pte")]
        )
        assert code == 0, err
        reports[name] = json.loads(stdout)
        assert reports[name]["kernels"] == "portable" and reports[name]["max_abs_diff"] <= 1e-4
    assert reports["chunked"]["arena_bytes"] < digits_programs["portable"].arena_bytes  # the plain model
    code, stdout, err = run_cli(["eval", "--pte", str(tmp_path / "tiled.pte"), "--json", "--no-confusion"])
    assert code == 0, err
    code, plain_out, err = run_cli(["eval", "--checkpoint", str(checkpoint), "--json", "--no-confusion"])
    assert json.loads(stdout)["top1"] == pytest.approx(json.loads(plain_out)["top1"], abs=1e-9)
    assert read_pte_card(tmp_path / "tiled.pte") == card
    with pytest.MonkeyPatch.context() as patch:  # a chunked model gone wrong is caught before export

        def wrong(model: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
            broken = memory_efficient(model, *args, **kwargs)
            for parameter in broken.classifier.parameters():
                parameter.data.zero_()
            return broken

        patch.setattr("mobilenets.deploy.memory_efficient.memory_efficient", wrong)
        code, _, err = run_cli([*base, "--memory-efficient", "4", "--out", str(tmp_path / "wrong.pte")])
        assert code == 1 and "memory-efficient model's logits differ from the plain" in err, err
    assert not (tmp_path / "wrong.pte").exists()
    for argv, message in (
        (["--format", "onnx", "--portable"], "--portable: only for --format executorch in fp32"),
        (
            ["--format", "executorch", "--patches", "2"],
            "--patches and --patch-stride need --memory-efficient",
        ),
        (
            ["--format", "executorch", "--memory-efficient", "0"],
            "--memory-efficient must be a positive integer",
        ),
        (
            ["--format", "executorch", "--memory-efficient", "4", "--patches", "0"],
            "patches must be a positive",
        ),
    ):
        suffix = ".onnx" if "onnx" in argv else ".pte"
        code, _, err = run_cli(
            ["export", "--checkpoint", str(checkpoint), *argv, "--out", str(tmp_path / f"x{suffix}")]
        )
        assert code == 2 and message in err, err
