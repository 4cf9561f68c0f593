"""The training loop on the built-in digits: it learns, checkpoints safely, and resumes exactly."""

from __future__ import annotations

import copy
import json
import math
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mobilenets.training import TrainConfig, load_trained_model, load_training_state, train
from mobilenets.training import engine as engine_module
from mobilenets.training.optim import RMSPROP_ALPHA, build_ema, build_optimizer, lr_factor
from mobilenets.training.runtime import resolve_precision

FAST: dict[str, Any] = {
    "model": "mobilenet_v2",
    "width_mult": 0.35,
    "img_size": 32,
    "batch_size": 64,
    "lr": 0.05,  # these tests are about the loop, not the recipe: a fixed rate and no warm-up, so the lr
    "warmup_epochs": 0.0,  # falls from epoch 1 on and 2 epochs learn enough to tell
    "progress": False,
    "device": "cpu",  # the CPU path, on every machine; tests/test_cuda.py trains on a GPU
}


def read_metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights_of(a), weights_of(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One uninterrupted 2-epoch digits run; the resume tests must reproduce its weights bit for bit."""
    out = tmp_path_factory.mktemp("run")
    result = train(TrainConfig(**FAST, epochs=2, out=str(out)))
    return out, result


def test_training_learns_and_writes_outputs(two_epoch_run: tuple[Path, dict[str, Any]]) -> None:
    out, result = two_epoch_run
    metrics = read_metrics(out)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert {"train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_s"} <= set(
        metrics[0]
    )
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[1]["val_top1"] > 0.2  # 10 classes: chance is 0.1
    assert metrics[1]["lr"] < metrics[0]["lr"]
    for name in ("last.safetensors", "best.safetensors", "last_state.pt", "best_state.pt", "loss.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert result["epochs_run"] == 2 and not result["interrupted"]
    assert result["final_top1"] == metrics[-1]["val_top1"]
    assert result["best_top1"] == max(m["val_top1"] for m in metrics)
    assert not list(out.glob("*.tmp"))


def test_checkpoint_rebuilds_the_model_without_unpickling(two_epoch_run: tuple[Path, dict[str, Any]]) -> None:
    out, result = two_epoch_run
    trained = load_trained_model(out / "best.safetensors")
    assert trained.card.model == "mobilenet_v2" and trained.card.classes == tuple(str(d) for d in range(10))
    assert trained.card.img_size == 32 and not trained.model.training
    assert trained.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    state = load_training_state(out)  # weights_only=True inside
    assert state["epoch"] == 2 and state["next_epoch"] == 3 and state["next_step"] == 0
    assert state["best_top1"] == result["best_top1"]
    with pytest.raises(FileNotFoundError, match=r"nothing_state\.pt"):
        load_training_state(out, "nothing")


def test_checkpoint_errors_are_clear(tmp_path: Path, two_epoch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = two_epoch_run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_trained_model(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="neither a safetensors nor a PyTorch weights file"):
        load_trained_model(corrupt)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="carries no mobilenets model card"):
        load_trained_model(foreign)
    weights = load_file(out / "best.safetensors")
    from safetensors import safe_open

    with safe_open(str(out / "best.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    weights.pop("classifier.weight")
    truncated = tmp_path / "truncated.safetensors"
    save_file(weights, truncated, metadata=metadata)
    with pytest.raises(ValueError, match=r"missing \['classifier.weight'\]"):
        load_trained_model(truncated)


def test_resume_after_an_epoch_reproduces_the_uninterrupted_run(
    tmp_path: Path, two_epoch_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    reference, _ = two_epoch_run
    first = train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))
    assert first["epochs_run"] == 1
    with pytest.raises(ValueError, match="--resume"):
        train(TrainConfig(**FAST, epochs=2, out=str(tmp_path)))
    capsys.readouterr()
    second = train(TrainConfig(**FAST, epochs=2, out=str(tmp_path), resume=True))
    printed = capsys.readouterr().out
    assert second["epochs_run"] == 1
    assert "resuming" in printed and "epoch 1/" not in printed and "epoch 2/2" in printed
    # The 1-epoch run decayed its cosine to 0; the resumed run continues on the 2-epoch curve instead.
    assert [m["epoch"] for m in read_metrics(tmp_path)] == [1, 2]
    assert read_metrics(tmp_path)[1]["lr"] == pytest.approx(read_metrics(reference)[1]["lr"])
    with pytest.raises(ValueError, match="width_mult"):
        train(TrainConfig(**{**FAST, "width_mult": 0.5}, epochs=3, out=str(tmp_path), resume=True))
    # Finished: nothing trains, nothing is rewritten, and the summary gives the run's last score
    config_text = (tmp_path / "config.json").read_text()
    again = train(
        TrainConfig(**{**FAST, "lr": 0.5, "deterministic": True}, epochs=2, out=str(tmp_path), resume=True)
    )
    assert "has finished its 2 epochs: nothing to train" in capsys.readouterr().out
    assert not torch.are_deterministic_algorithms_enabled()  # a run's kernel settings end with it
    assert again["epochs_run"] == 0 and again["final_top1"] == read_metrics(tmp_path)[1]["val_top1"]
    assert (tmp_path / "config.json").read_text() == config_text and len(read_metrics(tmp_path)) == 2
    with pytest.raises(ValueError, match=r"--epochs 1: it has trained 2 epochs, .* give --epochs 2 or more"):
        train(TrainConfig(**FAST, epochs=1, out=str(tmp_path), resume=True))
    assert (tmp_path / "config.json").read_text() == config_text


def test_stop_mid_epoch_then_resume_is_exact(
    tmp_path: Path, two_epoch_run: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop request (what SIGINT/SIGTERM raise) mid-epoch saves the position; resume ends identically."""
    reference, _ = two_epoch_run
    calls = {"n": 0}

    def stop_at_step_30(flag: bool, context: object) -> bool:
        calls["n"] += 1
        return calls["n"] == 30  # asked at each epoch's start and after each of its 25 steps: epoch 2, step 3

    monkeypatch.setattr(engine_module, "any_process", stop_at_step_30)
    stopped = train(TrainConfig(**FAST, epochs=2, out=str(tmp_path)))
    assert stopped["interrupted"] and stopped["epochs_run"] == 1
    state = load_training_state(tmp_path)
    assert (state["next_epoch"], state["next_step"]) == (2, 3)
    monkeypatch.undo()
    resumed = train(TrainConfig(**FAST, epochs=2, out=str(tmp_path), resume=True))
    assert resumed["epochs_run"] == 1 and not resumed["interrupted"]
    assert_same_weights(reference / "last.safetensors", tmp_path / "last.safetensors")
    ours, theirs = read_metrics(tmp_path), read_metrics(reference)
    assert [m["epoch"] for m in ours] == [1, 2]
    assert ours[1]["train_loss"] == pytest.approx(theirs[1]["train_loss"], rel=1e-12)
    assert ours[1]["val_top1"] == theirs[1]["val_top1"]
    assert ours[1]["lr"] == theirs[1]["lr"]  # the epoch's first step, not the step it resumed at


def test_a_resumed_epoch_counts_every_processs_images_once() -> None:
    """Under torchrun each process keeps its own epoch totals: the checkpoint saves them added up, and
    on resume the main process carries them on while the others count from zero, so the epoch's
    summary (a sum over processes) is what an uninterrupted epoch reports."""
    from types import SimpleNamespace

    from mobilenets.training.distributed import DistContext
    from mobilenets.training.resume import EpochSums, restore_training_state, training_state

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def run(rank: int) -> SimpleNamespace:
        context = DistContext(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
        return SimpleNamespace(
            model=model, ema=None, optimizer=optimizer, scaler=torch.amp.GradScaler("cpu", enabled=False),
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), device=context.device,
            context=context, epoch=2, step_in_epoch=3, best_top1=0.5, partial=EpochSums(), train_images=48,
        )  # fmt: skip

    ranks = [EpochSums(loss=6.0, correct=5, images=12, seconds=2.0), EpochSums(4.0, 7, 12, 2.1)]
    state = training_state(run(0), 1, [{"cpu": torch.get_rng_state()}] * 2, ranks)
    assert state["partial"] == {"loss": 10.0, "correct": 12, "images": 24, "seconds": 2.0}
    main, other = run(0), run(1)
    restore_training_state(main, state)
    restore_training_state(other, state)
    assert EpochSums.summed([main.partial, other.partial]) == EpochSums.summed(ranks)
    assert other.partial.images == 0 and other.partial.seconds == 2.0


def test_a_global_batch_that_leaves_a_process_one_image_is_refused(tmp_path: Path) -> None:
    from mobilenets.training.distributed import DistContext
    from mobilenets.training.engine import Trainer

    two = DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    for batch in (2, 5):  # one image per process (batch norm needs two); not divisible
        with pytest.raises(ValueError, match=f"batch_size {batch} must divide evenly over 2 processes"):
            Trainer(TrainConfig(batch_size=batch, out=str(tmp_path)), two)


def test_resume_trains_with_the_new_lr_and_weight_decay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NaN loss advises a lower --lr and --resume: the resumed epochs must use it, not the saved one."""
    train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))
    lower = {**FAST, "lr": 0.01, "weight_decay": 1e-3}
    train(TrainConfig(**lower, epochs=2, out=str(tmp_path), resume=True))
    fresh = lr_factor(TrainConfig(**lower, epochs=2), 25)  # 25 steps per epoch
    assert read_metrics(tmp_path)[1]["lr"] == pytest.approx(0.01 * fresh(25))
    groups = load_training_state(tmp_path)["optimizer"]["param_groups"]
    assert [group["weight_decay"] for group in groups] == [1e-3, 0.0]
    assert all(group["initial_lr"] == 0.01 for group in groups)
    # config.json holds the new options and keeps what the first epoch ran with.
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["lr"] == 0.01 and config["epochs"] == 2
    (change,) = config["resumed"]
    assert change["epoch"] == 2 and change["step"] == 0
    assert change["changed"]["lr"] == [FAST.get("lr"), 0.01] and change["changed"]["epochs"] == [1, 2]
    assert change["changed"]["weight_decay"][1] == 1e-3 and "resume" not in change["changed"]
    capsys.readouterr()
    with pytest.raises(ValueError, match=r"batch_size=64 \(now 32\)"):
        train(TrainConfig(**{**lower, "batch_size": 32}, epochs=3, out=str(tmp_path), resume=True))


def test_resume_without_a_training_state_starts_only_where_nothing_is_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "new"
    train(TrainConfig(**FAST, epochs=1, out=str(empty), resume=True))
    assert "nothing to resume" in capsys.readouterr().out
    (empty / "last_state.pt").unlink()  # the weights alone, as if copied without their state
    best = (empty / "best.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"holds last\.safetensors but not last_state\.pt.*--pretrained"):
        train(TrainConfig(**FAST, epochs=1, out=str(empty), resume=True))
    assert (empty / "best.safetensors").read_bytes() == best and len(read_metrics(empty)) == 1


def test_lr_schedules_in_closed_form() -> None:
    steps = 10
    cosine = lr_factor(TrainConfig(epochs=4, warmup_epochs=1.0), steps)
    assert cosine(0) == pytest.approx(1 / 11) and cosine(9) == pytest.approx(10 / 11)
    assert (
        cosine(10) == pytest.approx(1.0)
        and cosine(25) == pytest.approx(0.5)
        and cosine(40) == pytest.approx(0)
    )
    exponential = lr_factor(TrainConfig(epochs=4, schedule="exponential", warmup_epochs=0.0), steps)
    assert [exponential(s) for s in (0, 9, 10, 35)] == pytest.approx([1, 1, 0.98, 0.98**3])
    step = lr_factor(TrainConfig(epochs=9, schedule="step", lr_step_epochs=3, warmup_epochs=0), steps)
    assert [step(s) for s in (29, 30, 60)] == pytest.approx([1, 0.1, 0.01])
    # Left out, the step is a third of the run: the default 20 epochs decay at 7 and 14 (a fixed 30 did not)
    default = TrainConfig(schedule="step", warmup_epochs=0)
    assert default.lr_step_epochs == 7 and TrainConfig(epochs=90).lr_step_epochs == 30
    assert [lr_factor(default, steps)(s) for s in (69, 70, 140)] == pytest.approx([1, 0.1, 0.01])
    with pytest.raises(ValueError, match="lr_step_epochs=20 would never step the learning rate in 20 epochs"):
        TrainConfig(schedule="step", lr_step_epochs=20)
    with pytest.raises(ValueError, match=r"lr_step_epochs=9 .* in 10 epochs \(after 1 of warm-up\)"):
        TrainConfig(schedule="step", epochs=10, lr_step_epochs=9)  # its first step would come after the end
    assert TrainConfig(lr_step_epochs=30).lr_step_epochs == 30  # unused by cosine: refused by the CLI only


def test_default_warmup_is_one_epoch_at_most_a_tenth_of_the_run() -> None:
    assert TrainConfig().warmup_epochs == TrainConfig().warmup == 1.0
    assert TrainConfig(epochs=10).warmup_epochs == 1.0
    assert TrainConfig(epochs=2).warmup_epochs == pytest.approx(0.2)
    assert TrainConfig(epochs=1, warmup_epochs=0.0).warmup_epochs == 0.0


def test_optimizers_follow_the_recipes() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    rmsprop = build_optimizer(model, TrainConfig(optimizer="rmsprop", batch_size=96))
    assert isinstance(rmsprop, torch.optim.RMSprop)
    assert rmsprop.defaults["alpha"] == RMSPROP_ALPHA == 0.9 and rmsprop.defaults["momentum"] == 0.9
    assert rmsprop.defaults["lr"] == pytest.approx(0.045)
    # TF's RMSProp (the paper's): the squared-gradient average starts at 1, so a first step is ~lr × g,
    # not torch's ~3 × lr whatever the gradient (measured: 0.031 and 2.87 × lr for g = 1e-3 and 1)
    weight = torch.nn.Parameter(torch.zeros(3))
    first = build_optimizer(torch.nn.ParameterList([weight]), TrainConfig(optimizer="rmsprop", lr=1.0))
    weight.grad = torch.tensor([1e-3, 0.1, 1.0])
    first.step()
    assert (-weight.detach()).tolist() == pytest.approx([1e-3, 0.1, 1.0], rel=0.04)
    assert TrainConfig(optimizer="adamw").weight_decay == 0.05 and TrainConfig().weight_decay == 4e-5
    sgd = build_optimizer(model, TrainConfig(batch_size=256, weight_decay=5e-4))
    assert sgd.defaults["nesterov"] and sgd.defaults["lr"] == pytest.approx(0.1)  # 0.1 per 256 images
    assert TrainConfig().peak_lr == pytest.approx(0.025)  # the default batch of 64
    decays = [(len(g["params"]), g["weight_decay"]) for g in sgd.param_groups]
    assert decays == [(1, 5e-4), (3, 0.0)]  # conv weight / conv bias, BN weight, BN bias


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adamw"])
def test_fp16_loss_scaling_survives_an_overflowing_first_step(optimizer: str) -> None:
    """fp16 runs overflow in their first steps, which the GradScaler skips: the optimizer must not move.

    torch's fused SGD leaves its momentum buffers uninitialised on such a skipped first step (the weights
    then blow up: seen on an H200 at digits' first steps, and on this CPU), so fp16 runs use its multi-
    tensor update. Reference: the same optimizer's plain loop, which never saw the overflowing batch.
    """
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(), torch.nn.LazyLinear(4)
    )
    images, labels = torch.randn(3, 16, 3, 6, 6), torch.randint(0, 4, (3, 16))
    model(images[0])
    reference = copy.deepcopy(model)
    config = TrainConfig(optimizer=optimizer, lr=0.05)
    ours = build_optimizer(model, config, loss_scaling=True)
    plain = build_optimizer(reference, config)
    plain._step_supports_amp_scaling = False  # the single-tensor loop: no fused or multi-tensor kernel
    for group in plain.param_groups:
        group.update(fused=False if "fused" in group else None, foreach=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    plain_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**15)  # the scale ours has after the skip
    for step in range(3):
        runs = [(model, ours, scaler)] + ([(reference, plain, plain_scaler)] if step > 0 else [])
        for network, optim, loss_scaler in runs:
            with torch.autocast("cpu", dtype=torch.float16):
                loss = torch.nn.functional.cross_entropy(network(images[step]).float(), labels[step])
            optim.zero_grad(set_to_none=True)
            loss_scaler.scale(loss * (1e30 if step == 0 else 1.0)).backward()  # step 0 overflows: skipped
            loss_scaler.step(optim)
            loss_scaler.update()
    assert scaler.get_scale() == plain_scaler.get_scale() == 2.0**15  # the overflow was seen
    for got, expected in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)


def test_the_fp16_loop_skips_its_overflowing_first_steps_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU's fp16 loop, run under CPU autocast: the first steps overflow at the scaler's initial scale."""
    monkeypatch.setattr(engine_module, "resolve_precision", lambda precision, device: torch.float16)
    calls = {"n": 0}

    def stop_after_8_steps(flag: bool, context: object) -> bool:
        calls["n"] += 1
        return calls["n"] == 9  # asked at the epoch's start and after each step

    monkeypatch.setattr(engine_module, "any_process", stop_after_8_steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))["interrupted"]
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]  # a skipped step is still a step
    state = load_training_state(tmp_path)
    assert state["next_step"] == 8 and state["scaler"]["scale"] < 2.0**16  # overflows were skipped
    assert all(bool(value.isfinite().all()) for value in weights_of(tmp_path / "last.safetensors").values())


def test_ema_warms_up_then_follows_slowly() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = build_ema(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)  # first update copies
    assert ema.module.weight.item() == 1.0
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update_parameters(model)  # decay min(0.99, 2/11)
    assert ema.module.weight.item() == pytest.approx(1.0 + (1 - 2 / 11))


def test_ema_run_saves_the_average_as_the_model(tmp_path: Path) -> None:
    result = train(TrainConfig(**FAST, epochs=1, ema_decay=0.9, grad_clip=1.0, out=str(tmp_path)))
    state = load_training_state(tmp_path)
    ema_weights, raw = load_file(tmp_path / "last.safetensors"), state["model"]
    assert state["ema_updates"] == 25
    assert not torch.equal(ema_weights["classifier.weight"], raw["classifier.weight"])
    assert math.isfinite(result["final_top1"])


def test_eval_every_scores_only_due_epochs_and_the_last_and_trains_the_same(
    tmp_path: Path, two_epoch_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    reference, reference_result = two_epoch_run
    first = train(TrainConfig(**FAST, epochs=3, eval_every=2, out=str(tmp_path)))
    printed = capsys.readouterr().out
    records = read_metrics(tmp_path)
    scored = [("val_top1" in r, "eval_seconds" in r) for r in records]
    assert scored == [(False, False), (True, True), (True, True)]
    assert "epoch 1/3" in printed and "not scored" in printed.split("epoch 2/3")[0]
    assert all("lr" in r and "train_top1" in r for r in records)
    assert first["final_top1"] == records[2]["val_top1"]
    assert first["best_top1"] == max(records[1]["val_top1"], records[2]["val_top1"])
    # Skipping a score changes nothing else: the weights are those of the run scored every epoch.
    short = tmp_path / "short"
    train(TrainConfig(**FAST, epochs=2, eval_every=2, out=str(short)))
    assert_same_weights(short / "last.safetensors", reference / "last.safetensors")
    assert read_metrics(short)[1]["val_top1"] == reference_result["final_top1"]
    # A resume may score on another rhythm; the last epoch is always scored.
    resumed = train(TrainConfig(**FAST, epochs=5, eval_every=3, out=str(tmp_path), resume=True))
    assert ["val_top1" in r for r in read_metrics(tmp_path)] == [False, True, True, False, True]
    assert resumed["final_top1"] == read_metrics(tmp_path)[4]["val_top1"]


def test_precision_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None and resolve_precision("bf16", cpu) is torch.bfloat16
    # auto: fp32 on every CPU, bf16 instructions or not: bf16 trains MobileNets slower there, AMX included.
    for avx512_bf16, amx in ((False, False), (True, False), (True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_precision("auto", cpu) is None
    with pytest.raises(ValueError, match=r"fp16.*CUDA"):
        resolve_precision("fp16", cpu)


def test_sync_bn_on_cpu_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        train(TrainConfig(**FAST, epochs=1, sync_bn=True, out=str(tmp_path)))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "resnet50", "unknown model"),
        ("width_mult", 0.0, "width_mult"),
        ("data", "nope:x", "nope"),
        ("epochs", 0, "epochs"),
        ("batch_size", 1, "batch_size"),
        ("img_size", 16, "img_size"),
        ("lr", float("nan"), "lr"),
        ("weight_decay", -1.0, "weight_decay"),
        ("optimizer", "lamb", "optimizer"),
        ("schedule", "poly", "schedule"),
        ("warmup_epochs", float(TrainConfig().epochs), "warmup_epochs"),
        ("label_smoothing", 1.0, "label_smoothing"),
        ("ema_decay", 1.0, "ema_decay"),
        ("eval_every", 0, "eval_every must be a positive integer"),
        ("eval_every", 2.0, "eval_every must be a positive integer"),
        ("precision", "int8", "precision"),
        ("augment", "mixup", "augment"),
        ("cutout", 33, "cutout 33 px is larger than the 32 px image"),
        ("cutout", -1, "cutout must be a whole number of pixels"),
        ("crop_padding", 1.5, "padding must be a whole number of pixels"),
        ("padding_mode", "edge", "padding_mode must be one of zeros, reflect"),
        ("seed", -1, "seed"),
        ("small_input", "yes", "small_input"),
        ("small_input", 3, "small_input"),
        ("pretrained", "", "pretrained"),
        ("norm", "layernorm", "norm"),
        ("dropout", 1.0, "dropout"),
        ("drop_path_rate", -0.1, "drop_path_rate"),
        ("img_size", 513, "too large for 'digits'"),
        ("img_size", 4097, "img_size"),
        ("val_split", 1.0, "val_split"),
        ("workers", 257, "workers"),
    ],
)
def test_bad_config_raises(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_model_options_follow_the_models_own_limits() -> None:
    """The builder owns the width limit: EfficientNet-Lite4 (width 1.4 itself) allows less than v2 does."""
    assert TrainConfig(model="mobilenet_v2", width_mult=8.0).width_mult == 8.0
    with pytest.raises(ValueError, match=r"width_mult=8\.0 is absurdly large; expected at most 7\.14"):
        TrainConfig(model="efficientnet_lite4", width_mult=8.0)
    with pytest.raises(ValueError, match="unknown model 'mobilenet_v9'; did you mean"):
        TrainConfig(model="mobilenet_v9")


def test_resolution_defaults_to_the_datas(tmp_path: Path) -> None:
    """None: 32 for digits and CIFAR-10 (their images are tiny), 224 for photo folders; a value wins."""
    for split in ("train", "test"):
        (tmp_path / "cifar" / split / "cat").mkdir(parents=True)
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    assert TrainConfig().img_size == TrainConfig().resolution == 32
    assert TrainConfig(data=f"cifar10:{tmp_path / 'cifar'}").img_size == 32
    assert TrainConfig(data=str(tmp_path / "photos")).img_size == 224
    assert TrainConfig(data=str(tmp_path / "photos"), img_size=160).img_size == 160


def test_width_defaults_to_half_for_digits_from_scratch(tmp_path: Path) -> None:
    """Digits need no more; anything else, and any fine-tuning, gets the full width of ImageNet weights."""
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    assert TrainConfig().width_mult == 0.5
    assert TrainConfig(pretrained="torchvision_mobilenet_v2").width_mult == 1.0
    assert TrainConfig(data=str(tmp_path / "photos")).width_mult == 1.0
    assert TrainConfig(width_mult=0.75).width_mult == 0.75
    assert TrainConfig(width_mult=0.75).model_kwargs(10)["width_mult"] == 0.75


def test_small_input_counts_strides_and_old_run_folders_still_resume(tmp_path: Path) -> None:
    """True / False (older config.json files) mean 2 / 0 dropped strides, in configs and on resume."""
    from mobilenets.training.run_log import check_resume_config

    assert TrainConfig(small_input=True).small_input == 2
    assert TrainConfig(small_input=False).small_input == 0
    assert TrainConfig(small_input=1).model_kwargs(10)["small_input"] == 1
    (tmp_path / "config.json").write_text(json.dumps({"small_input": True}))
    check_resume_config(tmp_path, TrainConfig(small_input=2))
    with pytest.raises(ValueError, match=r"small_input=2 \(now 1\)"):
        check_resume_config(tmp_path, TrainConfig(small_input=1))


def test_resume_knows_the_data_by_its_folder_and_a_run_by_any_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder trained on, however spelled (config.json keeps it as typed, relative to a working
    directory it does not record; the checkpoint's card holds it absolute)."""
    from PIL import Image

    from mobilenets.training.run_log import check_resume_config

    for root in ("x1", "x2"):
        for label, colour in (("a", "red"), ("b", "blue")):
            (tmp_path / root / "ds" / label).mkdir(parents=True)
            for index in range(8):
                Image.new("RGB", (32, 32), colour).save(tmp_path / root / "ds" / label / f"{index}.png")
    monkeypatch.chdir(tmp_path / "x1")
    out = tmp_path / "run"
    recipe = {**FAST, "data": "ds", "batch_size": 4, "val_split": 0.25, "epochs": 1, "out": str(out)}
    train(TrainConfig(**recipe))
    spelled_otherwise = f"{tmp_path}/x1/../x1/ds/"
    check_resume_config(out, TrainConfig(**{**recipe, "data": spelled_otherwise}))
    monkeypatch.chdir(tmp_path / "x2")  # "ds" here is another folder
    with pytest.raises(ValueError, match=r"cannot resume .*trained with data='.*x1/ds' \(now '.*x2/ds'\)"):
        check_resume_config(out, TrainConfig(**recipe))
    # A best checkpoint alone (the last one deleted to save space) is a run a new one would replace
    for path in out.glob("last*"):
        path.unlink()
    with pytest.raises(ValueError, match=r"already holds a run \(best\.safetensors\); pass --resume"):
        train(TrainConfig(**recipe))
    # ... and --resume finds no state to continue: refused too, not a new run over the best weights
    best = (out / "best.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"holds best\.safetensors but not last_state\.pt"):
        train(TrainConfig(**{**recipe, "resume": True}))
    assert (out / "best.safetensors").read_bytes() == best
    # A config.json that is not JSON (edited by hand, cut short) is named, not a JSONDecodeError
    saved = (out / "config.json").read_text()
    (out / "config.json").write_text(saved[:-5])
    with pytest.raises(ValueError, match=r"config\.json': it is not valid JSON \(.*\); restore"):
        check_resume_config(out, TrainConfig(**recipe))
    (out / "config.json").write_text(saved)
    # Checkpoints copied without config.json: refused, not resumed unchecked
    (out / "config.json").unlink()
    with pytest.raises(ValueError, match=r"holds no config\.json, so the options of the run cannot be"):
        check_resume_config(out, TrainConfig(**recipe))


def test_pad_crop_options_are_refused_where_the_images_are_resized_crops(tmp_path: Path) -> None:
    """40 px photos trained at 32 are random-resized-cropped: no pad-and-crop for the options to set."""
    from PIL import Image

    for label, colour in (("a", "red"), ("b", "blue")):
        (tmp_path / "ds" / label).mkdir(parents=True)
        for index in range(8):
            Image.new("RGB", (40, 40), colour).save(tmp_path / "ds" / label / f"{index}.png")
    recipe = {**FAST, "data": str(tmp_path / "ds"), "batch_size": 4, "val_split": 0.25, "epochs": 1}
    for option, flags in (
        ({"crop_padding": 2}, "--crop-padding"),
        ({"crop_padding": 2, "padding_mode": "reflect"}, "--crop-padding and --padding-mode"),
    ):
        with pytest.raises(
            ValueError, match=f"{flags} would change nothing in this run: the training images"
        ):
            train(TrainConfig(**recipe, **option, out=str(tmp_path / "run")))
        assert not (tmp_path / "run" / "last.safetensors").exists()


def test_resume_on_a_train_folder_that_changed_is_refused(tmp_path: Path) -> None:
    """A train/val layout records no split listing: the number of training images is checked instead
    (images added would change the epochs' length and the schedule's steps under the resumed run)."""
    from PIL import Image

    def images(split: str, count: int, start: int = 0) -> None:
        for label, colour in (("a", "red"), ("b", "blue")):
            (tmp_path / "ds" / split / label).mkdir(parents=True, exist_ok=True)
            for index in range(start, start + count):
                Image.new("RGB", (32, 32), colour).save(tmp_path / "ds" / split / label / f"{index}.png")

    images("train", 8)
    images("val", 2)
    out = tmp_path / "run"
    recipe = {**FAST, "data": str(tmp_path / "ds"), "batch_size": 4, "out": str(out)}
    train(TrainConfig(**recipe, epochs=1))
    images("train", 2, start=8)
    with pytest.raises(
        ValueError, match=r"the run trained on 16 images, and its data holds 20 training images now"
    ):
        train(TrainConfig(**recipe, epochs=2, resume=True))


def test_a_fine_tune_resumes_without_naming_its_weights_again(tmp_path: Path) -> None:
    """The default width depends on --pretrained (digits from scratch: 0.5, a fine-tune: 1.0); a resume
    that leaves --pretrained out keeps the run's width, and every other option of the run not given."""
    from .conftest import run_cli

    common = ["train", "--model", "mobilenet_v1", "--resolution", "32", "--batch-size", "128"]
    common += ["--no-progress"]
    code, _, err = run_cli([*common, "--width-mult", "1.0", "--epochs", "1", "--out", str(tmp_path / "base")])
    assert code == 0, err
    tune = [*common, "--out", str(tmp_path / "tune")]
    base = str(tmp_path / "base/last.safetensors")
    recipe = ["--optimizer", "adamw", "--weight-decay", "1e-3", "--label-smoothing", "0.2"]
    recipe += ["--grad-clip", "1"]
    code, _, err = run_cli([*tune, "--epochs", "1", "--pretrained", base, *recipe])
    assert code == 0, err
    code, stdout, err = run_cli([*tune, "--epochs", "1", "--resume"])  # checked, then nothing left to run
    assert code == 0 and json.loads(stdout.splitlines()[-1])["epochs_run"] == 0, err
    assert "has finished its 1 epochs" in stdout
    # Options not given are the run's, not today's defaults: the bare resume continues the run as it was
    bare = ["train", "--out", str(tmp_path / "tune"), "--epochs", "2", "--resume", "--no-progress"]
    code, stdout, err = run_cli([*bare, "--label-smoothing", "0.1"])  # one changed on purpose
    saved = json.loads((tmp_path / "tune" / "config.json").read_text())
    assert code == 0 and json.loads(stdout.splitlines()[-1])["epochs_run"] == 1, err
    built = (saved["model"], saved["width_mult"], saved["img_size"], saved["batch_size"])
    assert built == ("mobilenet_v1", 1.0, 32, 128)
    assert (saved["optimizer"], saved["weight_decay"], saved["grad_clip"]) == ("adamw", 1e-3, 1.0)
    assert saved["label_smoothing"] == 0.1
    assert saved["warmup_epochs"] == 0.2  # a default that follows --epochs follows the new one (was 0.1)


def test_resume_refuses_another_optimizer_or_weight_average(tmp_path: Path) -> None:
    """Their saved state fits only the same kind: loading it used to end in a KeyError."""
    from mobilenets.training.run_log import check_resume_config

    (tmp_path / "config.json").write_text(
        json.dumps({"optimizer": "sgd", "ema_decay": 0.0, "batch_size": 64})
    )
    check_resume_config(tmp_path, TrainConfig(optimizer="sgd", epochs=40))  # other settings may change
    for change, message in (
        ({"optimizer": "adamw"}, r"optimizer='sgd' \(now 'adamw'\)"),
        ({"batch_size": 128}, r"batch_size=64 \(now 128\)"),
        ({"ema_decay": 0.99}, r"ema_decay=0\.0 \(now 0\.99\)"),
    ):
        with pytest.raises(ValueError, match=f"cannot resume .*trained with {message}"):
            check_resume_config(tmp_path, TrainConfig(**change))  # type: ignore[arg-type]


def test_a_run_saved_without_loss_scaling_resumes_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp32 (or bf16: a CPU, another GPU) saves an empty scaler state; fp16 then starts a fresh scale."""
    train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))
    assert load_training_state(tmp_path)["scaler"] == {}
    monkeypatch.setattr(engine_module, "resolve_precision", lambda precision, device: torch.float16)
    calls = {"n": 0}

    def stop_after_2_steps(flag: bool, context: object) -> bool:  # fp16 on a CPU is slow: 2 steps do
        calls["n"] += 1
        return calls["n"] == 3

    monkeypatch.setattr(engine_module, "any_process", stop_after_2_steps)
    assert train(TrainConfig(**FAST, epochs=2, out=str(tmp_path), resume=True))["interrupted"]
    state = load_training_state(tmp_path)
    assert (state["next_epoch"], state["next_step"]) == (2, 2) and state["scaler"]["scale"] > 0


def test_nan_loss_names_epoch_and_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = torch.nn.CrossEntropyLoss.forward

    def nan_loss(self: torch.nn.CrossEntropyLoss, *args: torch.Tensor) -> torch.Tensor:
        return original(self, *args) * float("nan")

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", nan_loss)
    with pytest.raises(RuntimeError, match=r"epoch 1, step 1; try a lower --lr"):
        train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))


def test_cli_bad_data_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilenets",
            "train",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def _cli(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "mobilenets", "train", "--model", "mobilenet_v2", "--width-mult", "0.35",
        "--resolution", "32", "--batch-size", "64", "--epochs", "2", "--lr", "0.05", "--warmup-epochs", "0",
        "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_signal_mid_run_then_resume_matches_the_uninterrupted_run(
    tmp_path: Path, two_epoch_run: tuple[Path, dict[str, Any]], signum: signal.Signals
) -> None:
    """SIGINT (SIGTERM takes the same path) saves the position and exits 130; SIGKILL leaves epoch 1.

    Either way ``--resume`` ends with the same weights as the run that was never stopped.
    """
    reference, _ = two_epoch_run
    process = subprocess.Popen(_cli(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # epoch 1 is checkpointed before its line is printed
        if line.startswith("epoch 1/2"):
            break
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    state = load_training_state(tmp_path)
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
        assert (state["epoch"], state["next_epoch"], state["next_step"]) == (1, 2, 0)
    else:
        assert process.returncode == 130, stderr[-2000:]
        assert f"stopped by {signum.name} at epoch 2" in stdout and "--resume" in stdout
        # Usually a few steps into epoch 2; step 0 if the signal beat the first step.
        assert state["next_epoch"] == 2 and 0 <= state["next_step"] < 25
    assert not list(tmp_path.glob("*.tmp"))
    resumed = subprocess.run(
        _cli(tmp_path, "--resume"), capture_output=True, text=True, timeout=300, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(reference / "last.safetensors", tmp_path / "last.safetensors")


def test_image_folder_with_a_corrupt_file_trains_and_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 12), ("val", 4)):
        for label, name in enumerate(("cats", "dogs")):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = (
                    torch.randint(0, 128, (40, 40, 3), generator=generator, dtype=torch.uint8) + 100 * label
                )
                Image.fromarray(pixels.numpy()).save(folder / f"{index}.png")
    (tmp_path / "data" / "train" / "dogs" / "broken.jpg").write_bytes(b"not a jpeg at all")
    monkeypatch.chdir(tmp_path)  # --data given relative to the working directory
    with pytest.warns(UserWarning, match="broken.jpg"):
        result = train(
            TrainConfig(**{**FAST, "batch_size": 8}, data="data", epochs=1, alternate_flip=True, out="run")
        )
    assert result["skipped_images"] == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["alternate_flip"] is True
    trained = load_trained_model(tmp_path / "run" / "last.safetensors")
    # The card holds the absolute path, so the checkpoint finds its data from any working directory
    assert trained.card.classes == ("cats", "dogs") and trained.card.data == str(
        (tmp_path / "data").resolve()
    )
    for split in ("train", "val"):  # one class left: a zero loss from the first step, refused
        shutil.rmtree(tmp_path / "data" / split / "dogs")
    with pytest.raises(ValueError, match=r"data holds 1 class \(cats\); training a classifier needs .* 2"):
        train(TrainConfig(**{**FAST, "batch_size": 8}, data="data", epochs=1, out="one"))
    assert not (tmp_path / "one").exists()  # made before the data is read, removed with the refusal


def test_trainer_runs_relu6_keeping_outputs_and_fast_depthwise_gradients(tmp_path: Path) -> None:
    from mobilenets.layers import DepthwiseConv2d, ReLU6
    from mobilenets.training.distributed import DistContext

    config = TrainConfig(**FAST, data="digits", epochs=1, workers=0, out=str(tmp_path / "run"))
    trainer = engine_module.Trainer(config, DistContext(0, 1, 0, torch.device("cpu")))
    relu6 = [m for m in trainer.model.modules() if isinstance(m, torch.nn.ReLU6)]
    # in place without a copy of the input for the backward
    assert len(relu6) == 35 and all(isinstance(m, ReLU6) and m.inplace for m in relu6)
    convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [m for m in convs if isinstance(m, DepthwiseConv2d)]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels > 1 for m in depthwise)
    assert all(m.groups == 1 for m in convs if m not in depthwise)


def test_pretrained_start_loads_every_tensor_and_resume_does_not_need_the_file(
    tmp_path: Path, two_epoch_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    from mobilenets.training.distributed import DistContext

    start = tmp_path / "start.safetensors"
    start.write_bytes((two_epoch_run[0] / "last.safetensors").read_bytes())
    config = TrainConfig(**FAST, epochs=1, workers=0, pretrained=str(start), out=str(tmp_path / "run"))
    trainer = engine_module.Trainer(config, DistContext(0, 1, 0, torch.device("cpu")))
    state = trainer.model.state_dict()
    for key, tensor in weights_of(start).items():
        assert torch.equal(state[key], tensor), key
    assert "classifier loaded" in capsys.readouterr().out
    train(config)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["pretrained"] == str(start)
    start.unlink()  # a resumed run takes its weights from its own checkpoint
    train(TrainConfig(**{**config.to_dict(), "epochs": 2, "resume": True}))
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2]


@pytest.mark.parametrize(
    ("pretrained", "message"),
    [("nope.pth", "'nope.pth': no such file"), ("torchvision_mobilenet_v2", "do not fit the body")],
)
def test_cli_pretrained_errors_exit_2(tmp_path: Path, pretrained: str, message: str) -> None:
    result = subprocess.run(
        [*_cli(tmp_path / "run"), "--pretrained", pretrained],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_defaults_train_digits_to_97_percent(tmp_path: Path) -> None:
    """``mobilenets train --data digits`` with every training option at its default: the recipe to
    start from must work (``--out`` only keeps the run out of the working directory)."""
    result = subprocess.run(
        [sys.executable, "-m", "mobilenets", "train", "--data", "digits", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=3600,  # a hang guard on a loaded machine, not a speed requirement
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config == TrainConfig(out=str(tmp_path / "run")).to_dict()  # nothing but the defaults
    assert summary["epochs_run"] == config["epochs"] and summary["final_top1"] >= 0.97, summary


def test_train_zero_init_residual_reaches_the_model_and_its_card(tmp_path: Path) -> None:
    from .conftest import run_cli

    out = tmp_path / "run"
    argv = ["train", "--data", "digits", "--width-mult", "0.35", "--epochs", "1", "--batch-size", "64"]
    code, _, err = run_cli([*argv, "--zero-init-residual", "--no-progress", "--out", str(out)])
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model_options"] == {"zero_init_residual": True}
    trained = load_trained_model(out / "best.safetensors")
    assert trained.card.model == "mobilenet_v2" and trained.model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_a_run_refused_before_it_writes_leaves_no_folder(tmp_path: Path) -> None:
    from .conftest import run_cli

    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", "digits", "--batch-size", "100000", "--out", str(out)])
    assert code == 2 and "exceeds the 1618 training images" in err and not out.exists(), err
    out.mkdir()  # a folder that was there before stays
    code, _, err = run_cli(["train", "--data", "digits", "--batch-size", "100000", "--out", str(out)])
    assert code == 2 and out.is_dir()
