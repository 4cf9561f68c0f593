"""Progressive resizing: the size schedule, the resized batches, and a run that trains small then full."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mobilenets.training import TrainConfig
from mobilenets.training import engine as engine_module
from mobilenets.training.distributed import DistContext
from mobilenets.training.resize import resize_batch, train_size

from .conftest import run_cli
from .test_training import FAST, read_metrics


def test_size_grows_linearly_in_steps_of_four_then_stays_full() -> None:
    schedule = {"epochs": 10, "full": 32, "until": 0.5, "minimum": 16}
    sizes = [train_size(epoch, start=0.5, **schedule) for epoch in range(1, 11)]
    assert sizes == [16, 20, 24, 24, 28, 32, 32, 32, 32, 32]
    assert {train_size(epoch, start=1.0, **schedule) for epoch in range(1, 11)} == {32}
    assert train_size(1, start=0.25, **schedule) == 16  # never below the model's smallest input
    assert train_size(1, epochs=4, full=224, start=0.5, until=1.0, minimum=32) == 112
    # until=1 ramps over every epoch but the last, which trains at full size as every run's last does
    assert [train_size(e, epochs=3, full=32, start=0.5, until=1.0, minimum=8) for e in (1, 2, 3)] == [
        16,
        20,
        32,
    ]
    # A ramp shorter than an epoch (until × epochs < 1) still trains the first epoch at the start scale.
    assert [train_size(e, epochs=3, full=32, start=0.5, until=0.3, minimum=16) for e in (1, 2, 3)] == [
        16,
        32,
        32,
    ]
    assert train_size(1, epochs=1, full=32, start=0.5, until=0.75, minimum=16) == 16


def test_resized_batch_keeps_its_memory_format() -> None:
    images = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    small = resize_batch(images, 16)
    assert small.shape == (2, 3, 16, 16) and small.is_contiguous(memory_format=torch.channels_last)
    assert resize_batch(images, 32) is images
    flat = torch.ones(1, 3, 32, 32)
    assert torch.allclose(resize_batch(flat, 20), torch.ones(1, 3, 20, 20))  # a flat image stays flat


def test_run_trains_small_first_and_evaluates_at_full_size(tmp_path: Path) -> None:
    settings = {"small_input": 1, "resize_start": 0.5, "resize_until": 0.5}  # small_input: 16×16 fits
    config = TrainConfig(**FAST, **settings, epochs=2, workers=0, out=str(tmp_path))
    trainer = engine_module.Trainer(config, DistContext(0, 1, 0, torch.device("cpu")))
    seen: list[tuple[bool, int]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append((module.training, inputs[0].shape[-1]))

    trainer.model.register_forward_pre_hook(record)
    trainer.run()
    training_sizes = [size for training, size in seen if training]
    steps = trainer.steps_per_epoch
    assert training_sizes == [16] * steps + [32] * steps
    assert {size for training, size in seen if not training} == {32}
    assert [row["train_size"] for row in read_metrics(tmp_path)] == [16, 32]


@pytest.mark.parametrize(
    ("field", "value"), [("resize_start", 0.0), ("resize_start", 1.5), ("resize_until", 0.0)]
)
def test_bad_resize_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_cli_progressive_resize_reaches_the_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", "digits", "--width-mult", "0.35", "--small-input", "1", "--epochs", "1"]
    code, _, err = run_cli(
        [*argv, "--progressive-resize", "0.5", "--progressive-resize-until", "1", "--out", str(out)]
    )
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert (config["resize_start"], config["resize_until"]) == (0.5, 1.0)
    assert read_metrics(out)[0]["train_size"] == 16
    # Without small_input the network's smallest input is 32 px, the size it trains at: refused
    code, _, err = run_cli(
        [*argv[:5], "--epochs", "1", "--progressive-resize", "0.5", "--out", str(out) + "2"]
    )
    assert (
        code == 2 and "progressive resizing would change nothing: mobilenet_v2's smallest input is 32" in err
    )


def test_smallest_input_is_the_networks_total_stride() -> None:
    from mobilenets import create_model

    assert create_model("mobilenet_v2").min_input_size == 32
    assert create_model("mobilenet_v2", small_input=1).min_input_size == 16
    assert create_model("mobilenet_v2", small_input=1, output_stride=8, dilate=False).min_input_size == 8
    model = create_model("mobilenet_v2", width_mult=0.25, small_input=1).eval()
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 1000)
    with pytest.raises(ValueError, match=r"needs at least 16×16 \(its total stride\)"):
        model(torch.zeros(1, 3, 12, 16))
