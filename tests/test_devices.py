"""``--device``: what each name resolves to, and a clear error for a device the machine does not have.

The CUDA side runs in tests/test_cuda.py, on a machine with a GPU; here CUDA's presence is faked so the
refusals are tested on every machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mobilenets.devices import resolve_device
from mobilenets.training.distributed import init_distributed

from .conftest import run_cli


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_names_resolve_to_one_device(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    fake_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)  # torchrun's LOCAL_RANK
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "gpus", "message"),
    [
        ("gpu", 0, r"'gpu' is not a device; expected auto, cpu, cuda or cuda:N"),
        ("meta", 0, r"only CPU and CUDA are supported"),
        ("cuda", 0, r"asks for CUDA, but no CUDA device is available"),
        ("cuda:0", 0, r"asks for CUDA, but no CUDA device is available"),
        ("cuda:2", 2, r"this machine has 2 GPU\(s\), numbered 0 to 1"),
    ],
)
def test_a_device_the_machine_lacks_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, gpus: int, message: str
) -> None:
    fake_gpus(monkeypatch, gpus)
    with pytest.raises(ValueError, match=message):
        resolve_device(name)


def test_torchrun_processes_take_their_local_rank_not_a_gpu_index(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(
        ValueError, match=r"under torchrun each process uses GPU LOCAL_RANK.*CUDA_VISIBLE_DEVICES"
    ):
        init_distributed("cuda:1")
    fake_gpus(monkeypatch, 1)  # two processes on one GPU: the second has none of its own
    with pytest.raises(ValueError, match=r"--device 'auto': this process is LOCAL_RANK 1.*at most 1 process"):
        init_distributed("auto")


def test_the_cli_names_the_missing_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, digits_checkpoint: tuple[Path, object, object]
) -> None:
    fake_gpus(monkeypatch, 0)
    out = tmp_path / "run"
    for argv in (
        ["train", "--data", "digits", "--epochs", "1", "--out", str(out)],
        ["eval", "--weights", str(digits_checkpoint[0])],
    ):
        code, _, err = run_cli([*argv, "--device", "cuda"])
        assert code == 2, argv
        assert "--device 'cuda' asks for CUDA, but no CUDA device is available" in err, argv
    assert not out.exists()  # refused before any work
