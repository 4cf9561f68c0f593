"""The CUDA path: training (autocast, the fp16 loss scaler, SyncBatchNorm, exact resume), evaluation and
inference on a GPU, and files that move between a GPU and a CPU machine.

They need a CUDA GPU: ``make test-cuda`` runs them (the rest of the suite hides GPUs, see conftest.py),
and ``make test`` skips them. CI has no GPU; they run where a GPU is at hand (docs/training.md says when
they last ran). tests/test_devices.py checks ``--device``'s refusals on every machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import mobilenets
from mobilenets.deploy.memory_efficient import memory_efficient
from mobilenets.layers.depthwise import DepthwiseConv2d
from mobilenets.training import TrainConfig, load_trained_model, load_training_state, train
from mobilenets.training import engine as engine_module
from mobilenets.training.runtime import resolve_precision

from .conftest import ALL_MODELS, SMALL_RES, randomize_norm_stats, run_cli

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU, shown to the suite by `make test-cuda`"
)

# The loop's settings of tests/test_training.py, on the GPU.
FAST: dict[str, Any] = {
    "model": "mobilenet_v2",
    "width_mult": 0.35,
    "img_size": 32,
    "batch_size": 64,
    "lr": 0.05,
    "warmup_epochs": 0.0,
    "progress": False,
    "device": "cuda",
}


@pytest.fixture
def exact_fp32() -> Iterator[None]:
    """GPU and CPU compared in full fp32: no TF32 rounding in convolutions or matrix products."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(a), load_file(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_auto_precision_on_a_gpu_is_bf16_where_it_has_bf16() -> None:
    gpu = torch.device("cuda", 0)
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert resolve_precision("auto", gpu) is expected
    assert resolve_precision("fp16", gpu) is torch.float16  # refused on a CPU, allowed here


def test_training_on_the_gpu_learns_and_its_checkpoint_runs_on_a_cpu(
    tmp_path: Path, exact_fp32: None
) -> None:
    result = train(TrainConfig(**FAST, epochs=2, out=str(tmp_path)))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert result["epochs_run"] == 2 and metrics[1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[1]["val_top1"] > 0.2  # 10 classes: chance is 0.1
    assert "cuda_rng_state" in load_training_state(tmp_path)  # weights_only=True, mapped to the CPU
    trained = load_trained_model(tmp_path / "best.safetensors")  # on the CPU
    assert next(trained.model.parameters()).device.type == "cpu"
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        on_cpu = trained.model(x)
        on_gpu = trained.model.to("cuda", memory_format=torch.channels_last)(x.cuda()).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-4, rtol=1e-4)


def test_fp16_from_the_cli_scales_the_loss_and_sync_batchnorm_runs_alone(tmp_path: Path) -> None:
    """fp16 (what ``auto`` picks on GPUs without bf16) overflows in its first steps; the scaler skips them.

    Before build_optimizer's ``loss_scaling``, torch's fused SGD turned those skipped steps into NaN
    weights by step 6 (this test, on an H200).
    """
    argv = ["train", "--data", "digits", "--epochs", "2", "--width-mult", "0.35", "--resolution", "32"]
    argv += ["--lr", "0.05", "--warmup-epochs", "0", "--no-progress", "--out", str(tmp_path)]
    code, out, err = run_cli([*argv, "--precision", "fp16", "--sync-bn", "--device", "cuda:0"])
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["final_top1"] > 0.2
    scaler = load_training_state(tmp_path)["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler  # an enabled GradScaler's state


def test_a_deterministic_gpu_run_stopped_mid_epoch_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before this process's first cuBLAS handle
    settings = {**FAST, "precision": "fp32", "deterministic": True}
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    try:
        train(TrainConfig(**settings, epochs=2, out=str(reference)))
        calls = {"n": 0}

        def stop_at_step_30(flag: bool, context: object) -> bool:
            calls["n"] += 1
            return calls["n"] == 30  # epoch 2, step 3 (see tests/test_training.py)

        monkeypatch.setattr(engine_module, "any_process", stop_at_step_30)
        assert train(TrainConfig(**settings, epochs=2, out=str(resumed)))["interrupted"]
        monkeypatch.undo()
        train(TrainConfig(**settings, epochs=2, out=str(resumed), resume=True))
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = False
    assert same_weights(reference / "last.safetensors", resumed / "last.safetensors")


def test_a_gpu_run_resumes_on_a_cpu(tmp_path: Path) -> None:
    """A run stopped on a GPU machine continues on one without (its CUDA RNG state is then unused)."""
    train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))
    result = train(TrainConfig(**{**FAST, "device": "cpu"}, epochs=2, out=str(tmp_path), resume=True))
    assert result["epochs_run"] == 1 and not result["interrupted"]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
    ]


def test_eval_on_the_gpu_agrees_with_the_cpu(
    digits_checkpoint: tuple[Path, torch.nn.Module, object], exact_fp32: None
) -> None:
    path = str(digits_checkpoint[0])
    reports = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda:0", "bf16")):
        code, out, err = run_cli(
            ["eval", "--weights", path, "--device", device, "--precision", precision, "--json"]
        )
        assert code == 0, err
        reports[device] = json.loads(out)
    assert reports["cuda"]["top1"] == pytest.approx(reports["cpu"]["top1"], abs=0.006)  # one image of 179
    assert reports["cuda:0"]["precision"] == "bf16"
    assert reports["cuda:0"]["top1"] == pytest.approx(reports["cpu"]["top1"], abs=0.03)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_on_the_gpu_equals_the_cpu(name: str, exact_fp32: None) -> None:
    model = mobilenets.create_model(name, width_mult=0.5).eval()
    randomize_norm_stats(model)
    x = torch.randn(2, 3, SMALL_RES, SMALL_RES)
    with torch.no_grad():
        expected = model(x)
        got = model.to("cuda", memory_format=torch.channels_last)(
            x.cuda().contiguous(memory_format=torch.channels_last)
        )
    torch.testing.assert_close(got.cpu(), expected, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(("side", "dilation"), [(2, 1), (3, 2), (9, 2)])
def test_depthwise_training_on_the_gpu_uses_pytorchs_convolution_with_the_cpus_gradients(
    side: int, dilation: int, exact_fp32: None
) -> None:
    """On the CPU small maps and dilations take their own paths; on the GPU PyTorch's, same gradients."""
    layer = DepthwiseConv2d(8, 8, 3, padding=dilation, dilation=dilation, groups=8).train()
    x = torch.randn(2, 8, side, side, requires_grad=True)
    assert layer._training_path(x) in ("taps", "subgrids")
    layer(x).square().sum().backward()
    cpu_grads = x.grad, layer.weight.grad, layer.bias.grad  # type: ignore[union-attr]
    gpu_layer = DepthwiseConv2d(8, 8, 3, padding=dilation, dilation=dilation, groups=8).cuda().train()
    gpu_layer.load_state_dict(layer.state_dict())
    x_gpu = x.detach().cuda().requires_grad_()
    assert gpu_layer._training_path(x_gpu) is None
    gpu_layer(x_gpu).square().sum().backward()
    gpu_grads = x_gpu.grad, gpu_layer.weight.grad, gpu_layer.bias.grad  # type: ignore[union-attr]
    for ours, theirs in zip(gpu_grads, cpu_grads, strict=True):
        torch.testing.assert_close(ours.cpu(), theirs, atol=1e-4, rtol=1e-4)  # type: ignore[union-attr]


@pytest.mark.parametrize(("chunks", "patches"), [(3, 1), ("channel", 1), (2, 2)])
def test_memory_efficient_on_the_gpu_equals_the_plain_forward(
    chunks: int | str, patches: int, exact_fp32: None
) -> None:
    model = mobilenets.mobilenet_v2(width_mult=0.5).eval()
    randomize_norm_stats(model)
    lean = memory_efficient(model, chunks, patches=patches, resolution=SMALL_RES).cuda()
    x = torch.randn(2, 3, SMALL_RES, SMALL_RES, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(lean(x), model.cuda()(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_compiled_training_on_the_gpu_learns(tmp_path: Path) -> None:
    """``--compile`` on the GPU: Inductor's Triton kernels for the training step (a minute to compile)."""
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(os.cpu_count() or 1))
    result = train(TrainConfig(**FAST, epochs=2, compile=True, out=str(tmp_path)))
    assert result["epochs_run"] == 2 and result["final_top1"] > 0.2
