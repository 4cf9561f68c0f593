"""Training on scikit-learn's bundled digits: loss goes down, checkpoints load safely, resume continues."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mobilenets import create_model
from mobilenets.training import TrainConfig, build_dataloaders, load_checkpoint, load_digits_dataset, train

FAST = {"model": "mobilenet_v2", "width_mult": 0.35, "img_size": 32, "batch_size": 64}


def read_metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One 2-epoch digits run shared by the tests that only inspect its outputs."""
    out = tmp_path_factory.mktemp("run")
    result = train(TrainConfig(**FAST, epochs=2, out=str(out)))
    return out, result


def test_digits_dataset_shapes_and_split() -> None:
    train_set, val_set = load_digits_dataset(32, seed=0)
    assert len(train_set) + len(val_set) == 1797
    images, labels = train_set.tensors
    assert images.shape[1:] == (3, 32, 32)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    assert torch.equal(images[:, 0], images[:, 1])
    assert set(labels.tolist()) == set(range(10)) == set(val_set.tensors[1].tolist())
    again, _ = load_digits_dataset(32, seed=0)
    assert torch.equal(again.tensors[1], labels)
    other, _ = load_digits_dataset(32, seed=1)
    assert not torch.equal(other.tensors[1], labels)


def test_training_reduces_loss_and_writes_outputs(two_epoch_run: tuple[Path, dict[str, Any]]) -> None:
    out, result = two_epoch_run
    metrics = read_metrics(out)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert set(metrics[0]) == {"epoch", "train_loss", "val_top1", "lr", "images_per_s"}
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[1]["lr"] < metrics[0]["lr"]
    for name in ("last.safetensors", "best.safetensors", "last_state.pt", "best_state.pt"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert result["epochs_run"] == 2
    assert result["final_top1"] == metrics[-1]["val_top1"]
    assert result["best_top1"] == max(m["val_top1"] for m in metrics)
    assert not list(out.glob("*.tmp"))


def test_checkpoints_load_safely(two_epoch_run: tuple[Path, dict[str, Any]]) -> None:
    out, result = two_epoch_run
    weights = load_file(out / "best.safetensors")
    model = create_model("mobilenet_v2", width_mult=0.35, num_classes=10)
    model.load_state_dict(weights)
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["best_top1"] == result["best_top1"]
    assert {"optimizer", "scheduler", "rng_state"} <= set(state)

    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim > 1]}, {"params": [p for p in params if p.ndim <= 1]}]
    optimizer = torch.optim.SGD(groups, lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2)
    assert load_checkpoint(out, model, optimizer, scheduler) == (2, result["best_top1"])
    with pytest.raises(FileNotFoundError, match=r"nothing\.safetensors"):
        load_checkpoint(out, model, optimizer, scheduler, name="nothing")


def test_resume_continues_from_next_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))
    assert first["epochs_run"] == 1
    with pytest.raises(ValueError, match="--resume"):
        train(TrainConfig(**FAST, epochs=2, out=str(tmp_path)))
    capsys.readouterr()
    second = train(TrainConfig(**FAST, epochs=2, out=str(tmp_path), resume=True))
    printed = capsys.readouterr().out
    assert second["epochs_run"] == 1
    assert "resuming" in printed and "epoch 1/" not in printed and "epoch 2/2" in printed
    metrics = read_metrics(tmp_path)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert metrics[0]["lr"] == pytest.approx(0.05)
    assert metrics[1]["lr"] == pytest.approx(0.025)  # on the 2-epoch cosine, not the finished 1-epoch one
    assert torch.load(tmp_path / "last_state.pt", weights_only=True)["epoch"] == 2
    with pytest.raises(ValueError, match="width_mult"):
        train(TrainConfig(**{**FAST, "width_mult": 0.5}, epochs=3, out=str(tmp_path), resume=True))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "resnet50", "unknown model"),
        ("width_mult", 0.0, "width_mult"),
        ("data", "nope", "unknown dataset"),
        ("epochs", 0, "epochs"),
        ("batch_size", 1, "batch_size"),
        ("img_size", 16, "img_size"),
        ("lr", float("nan"), "lr"),
        ("weight_decay", -1.0, "weight_decay"),
        ("optimizer", "lamb", "optimizer"),
        ("label_smoothing", 1.0, "label_smoothing"),
        ("seed", -1, "seed"),
    ],
)
def test_bad_config_raises(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_unknown_dataset_in_build_dataloaders() -> None:
    with pytest.raises(ValueError, match="expected 'digits'"):
        build_dataloaders("cifar10", 32, 64, 0)


def test_nan_loss_names_epoch_and_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = torch.nn.CrossEntropyLoss.forward

    def nan_loss(self: torch.nn.CrossEntropyLoss, *args: torch.Tensor) -> torch.Tensor:
        return original(self, *args) * float("nan")

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", nan_loss)
    with pytest.raises(RuntimeError, match=r"epoch 1, step 1; try a lower --lr"):
        train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))


def test_cli_unknown_dataset_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilenets",
            "train",
            "--data",
            "nope",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown dataset 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
