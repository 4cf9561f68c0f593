"""Shared fixtures: small inputs keep the registry-wide tests fast on 2 cores."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets.cli import main as run_main
from mobilenets.weights import ModelCard
from mobilenets.weights.files import write_safetensors

ALL_MODELS = mobilenets.list_models()
# The networks laid out as the papers' ImageNet models: five levels, reductions 2 to 32.
IMAGENET_MODELS = [name for name in ALL_MODELS if not name.startswith("cifar_")]
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOBILENETS_SHARED", REPO_ROOT.parent / "shared"))
SMALL_RES = 64
DIGITS = tuple(str(i) for i in range(10))
DIGITS_KWARGS = {"width_mult": 0.35, "num_classes": 10, "padding": "tf_same"}  # TF SAME pads: baked in


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder nobody can create files in: ``/proc`` for root (who writes through permission bits),
    else a folder under ``tmp_path`` without write permission."""
    if os.geteuid() == 0:
        return Path("/proc")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500, exist_ok=True)
    return locked


def pytest_configure(config: pytest.Config) -> None:
    """Hide GPUs from the suite unless ``MOBILENETS_TEST_CUDA=1`` (``make test-cuda``).

    The suite tests the CPU path on every machine, as CI runs it (no GPU there). With a GPU visible the
    trainer would take it by default, and the tests that compare runs bit for bit would meet cuDNN's
    nondeterministic kernels. tests/test_cuda.py tests the GPU path itself. CUDA reads this variable
    when it starts, which nothing does before this hook.
    """
    if os.environ.get("MOBILENETS_TEST_CUDA") != "1":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_norm_stats(model: torch.nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics so eval-mode comparisons test them too."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)


def imagenet_list() -> Path:
    """The labelled list of the shared ImageNet photos; fails in CI, skips elsewhere, when missing."""
    listing = SHARED / "data" / "imagenet-val-1300" / "dataset.txt"
    if not listing.is_file():
        message = f"ImageNet photos not found at {listing} (set MOBILENETS_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return listing


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``mobilenets ARGV`` in this process: (exit status, stdout, stderr).

    argparse's ``SystemExit`` becomes the status; any other exception propagates and fails the test.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


class CodePayload:
    """Unpickling this runs ``open(marker, "w")``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, ModelCard]:
    """A small checkpoint whose card names real images (digits, 32 px) to verify exports on."""
    torch.manual_seed(0)
    model = mobilenets.mobilenet_v2(**DIGITS_KWARGS).eval()
    randomize_norm_stats(model)
    card = ModelCard("mobilenet_v2", DIGITS_KWARGS, DIGITS, (0.5,) * 3, (0.5,) * 3, 32, "digits", 0.1, 0)
    path = tmp_path_factory.mktemp("digits") / "best.safetensors"
    write_safetensors(path, model.state_dict(), card.to_metadata())
    return path, model, card
