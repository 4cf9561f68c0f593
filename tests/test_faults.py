"""Faults injected into training — kills, a full disk, NaNs, damaged or hostile files — lose nothing.

The kill campaign plants SIGKILLs at random forward/backward/step/fsync/rename events and from
outside (see ``mobilenets.testing``); ``benchmarks/fault_injection.py`` runs a bigger one and prints
the table for the README.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from mobilenets.errors import TrainingError
from mobilenets.testing.campaign import (
    PHASES,
    RECIPE,
    Reference,
    check_run_directory,
    compare_with_reference,
    reference_run,
    run_campaign,
)
from mobilenets.testing.faults import Fault
from mobilenets.training import TrainConfig, load_training_state, train
from mobilenets.training import storage as storage_module
from mobilenets.training.checkpoint import checkpoint_paths
from mobilenets.training.stop import StopRequest

from .conftest import CodePayload, run_cli, unwritable_folder

FAST: dict[str, Any] = {"model": "mobilenet_v1", "width_mult": 0.25, "batch_size": 128, "progress": False}


def _faulted(fault: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mobilenets.testing.faults", "--fault", fault, "--"]
    command += ["train", *RECIPE, "--deterministic", "--no-progress", "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference_run(RECIPE, tmp_path_factory.mktemp("faults") / "reference")


# ----------------------------------------------------------------------------- interruption
@pytest.mark.slow
def test_twenty_kills_lose_nothing_and_end_on_the_uninterrupted_weights(
    reference: Reference, tmp_path: Path
) -> None:
    report = run_campaign(reference, tmp_path, kills=20, seed=0, parallel=2)
    assert report.kills >= 20
    for row in report.table():
        assert row["injected"] >= 1, row  # every phase (each takes a turn in both sequences)
        assert row["survived"] == row["injected"] and row["epochs_lost"] == 0, row
    assert [r for r in report.rounds if not r.checkpoints_intact] == []
    assert report.finished and report.problems == []


def test_fault_specs() -> None:
    assert Fault.parse("kill:fsync:3:last_state") == Fault("kill", "fsync", 3, "last_state")
    for bad in ("kill:fsync", "boom:fsync:1", "kill:nowhere:1", "kill:step:0", "enospc:step:1"):
        with pytest.raises(ValueError, match="fault"):
            Fault.parse(bad)
    assert set(PHASES) >= {"forward", "backward", "step", "fsync", "replace", "external"}


# ----------------------------------------------------------------------------- storage
@pytest.mark.slow
def test_disk_full_at_a_checkpoint_write_keeps_the_last_good_one(
    reference: Reference, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    failed = _faulted("enospc:fsync:2:last_state.pt", out)  # the save after epoch 2
    assert failed.returncode == 1, failed.stderr[-2000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert "cannot write checkpoint 'last' after epoch 2" in message
    assert "No space left on device" in message and "is unchanged" in message and "--resume" in message
    assert "Traceback" not in failed.stderr
    assert check_run_directory(out) == "" and load_training_state(out)["epoch"] == 1
    assert not list(out.glob(".*.tmp"))
    # The disk is still full when the resume rewrites metrics.jsonl (dropping epoch 2's line).
    again = _faulted("enospc:fsync:1:metrics.jsonl", out, "--resume")
    assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert "cannot write metrics.jsonl" in again.stderr and "No space left on device" in again.stderr
    resumed = _faulted("kill:fsync:999999", out, "--resume")  # a fault that never fires
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert compare_with_reference(out, reference.out, reference.epochs) == []


@pytest.mark.parametrize("kind", ["under_a_file", "unwritable"])
def test_out_that_cannot_be_written_fails_before_training(tmp_path: Path, kind: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "run" if kind == "under_a_file" else unwritable_folder(tmp_path) / "run"
    code, stdout, stderr = run_cli(["train", *RECIPE, "--no-progress", "--out", str(out)])
    assert code == 2 and "epoch" not in stdout
    assert f"cannot write the run directory {str(out)!r}" in stderr and "writable --out" in stderr
    if kind == "under_a_file":  # says what is in the way, not the OS's "File exists"
        assert f": {str(tmp_path / 'file')!r} is a file, not a folder;" in stderr, stderr


def test_too_little_free_space_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        storage_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 50_000, 50_000)
    )
    with pytest.raises(ValueError, match=r"has 0.1 MB free; this run's checkpoints need about [\d.]+ MB"):
        train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_checkpoint_size_estimate_covers_the_real_files(reference: Reference) -> None:
    import mobilenets

    model = mobilenets.create_model("mobilenet_v1", width_mult=0.25, num_classes=10)
    estimate = storage_module.checkpoint_bytes(model, "sgd", ema=False)
    written = sum(
        path.stat().st_size for name in ("last", "best") for path in checkpoint_paths(reference.out, name)
    )
    assert written <= estimate <= 2 * written


# ----------------------------------------------------------------------------- numbers
def test_nan_loss_mid_run_stops_naming_the_step_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, calls = torch.nn.CrossEntropyLoss.forward, [0]

    def loss_turning_nan(self: torch.nn.CrossEntropyLoss, *args: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        loss = original(self, *args)
        return loss * float("nan") if calls[0] == 16 else loss

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", loss_turning_nan)
    # 12 training steps per epoch (1617 images, batch 128) and one validation batch: call 16 is step 3.
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 3; try a lower --lr") as error:
        train(TrainConfig(**FAST, epochs=2, out=str(tmp_path)))
    assert "last good checkpoint" in str(error.value) and "unchanged" in str(error.value)
    assert "--precision" not in str(error.value)  # the run was fp32 already (autocast only on CUDA)
    assert check_run_directory(tmp_path) == "" and load_training_state(tmp_path)["epoch"] == 1


@pytest.mark.parametrize("stop", [False, True])
def test_weights_turning_non_finite_are_never_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: bool
) -> None:
    """The last step of epoch 1 (its loss still finite) breaks the weights; or step 3 does and a stop
    request (Ctrl-C) comes right after it: neither the epoch's checkpoint nor the stop's is written."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from mobilenets.training import engine as engine_module

    steps, asked, poisoned = [0], [0], 3 if stop else 12

    def poison(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        steps[0] += 1
        if steps[0] == poisoned:
            optimizer.param_groups[0]["params"][0].data.fill_(float("inf"))

    def stop_after_step_3(flag: bool, context: object) -> bool:
        asked[0] += 1
        return asked[0] == 4  # asked at the epoch's start and after each step

    if stop:
        monkeypatch.setattr(engine_module, "any_process", stop_after_step_3)
    handle = register_optimizer_step_post_hook(poison)
    try:
        with pytest.raises(TrainingError, match=r"weights became non-finite during epoch 1 .*No checkpoint"):
            train(TrainConfig(**FAST, epochs=1, out=str(tmp_path)))
    finally:
        handle.remove()
    assert not any(path.exists() for path in checkpoint_paths(tmp_path, "last"))


# ----------------------------------------------------------------------------- hostile files
def _damage(kind: str, path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":  # seeded: 1 in 256 random files starts like a pickle (see pickle_garbage)
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "pickle_garbage":  # a pickle's first byte, then damage
        path.write_bytes(b"\x80" + random.Random(0).randbytes(4095))
    elif kind == "code_payload":
        torch.save({"optimizer": CodePayload(tmp_path / "pwned")}, path)
    elif kind == "foreign":
        torch.save({"epoch": 3, "weights": torch.zeros(2)}, path)


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "code_payload", "foreign"])
def test_damaged_or_hostile_training_state_is_refused_on_resume(
    reference: Reference, tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    _damage(kind, checkpoint_paths(out, "last")[1], tmp_path)
    code, _, stderr = run_cli(["train", *RECIPE, "--epochs", "4", "--resume", "--out", str(out)])
    assert code == 2, stderr
    assert "last_state.pt" in stderr and ("not a readable training state" in stderr or "lacks" in stderr)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "kind", ["truncated", "empty", "garbage", "pickle_garbage", "other_architecture", "other_classes"]
)
def test_damaged_or_mismatched_weights_are_refused_by_eval(
    reference: Reference, tmp_path: Path, kind: str
) -> None:
    import mobilenets

    path = tmp_path / "weights.safetensors"
    shutil.copy(reference.out / "last.safetensors", path)
    argv = ["eval", "--checkpoint", str(path), "--data", "digits"]
    if kind in ("truncated", "empty", "garbage", "pickle_garbage"):
        _damage(kind, path, tmp_path)
        # pickle_garbage: torch.load read a name ending in .safetensors with safetensors (a traceback)
        expected = {
            "truncated": "not a readable",
            "empty": "is empty",
            "garbage": "neither a safetensors",
            "pickle_garbage": "not a readable PyTorch weights file",
        }[kind]
    else:
        other = "mobilenet_v2" if kind == "other_architecture" else "mobilenet_v1"
        model = mobilenets.create_model(other, width_mult=0.25, num_classes=1000)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        argv += ["--model", "mobilenet_v1", "--width-mult", "0.25"]
        expected = (
            "missing from the file" if kind == "other_architecture" else "has 1000 classes, the data 10"
        )
    code, _, stderr = run_cli(argv)
    assert code == 2 and expected in stderr, stderr
    assert "Traceback" not in stderr


# ----------------------------------------------------------------------------- multi-process
@pytest.mark.slow
def test_a_killed_torchrun_worker_stops_the_run_clearly_and_it_resumes(tmp_path: Path) -> None:
    recipe = [
        "train", "--model", "mobilenet_v1", "--width-mult", "0.25", "--data", "digits",
        "--epochs", "2", "--batch-size", "64", "--resolution", "32", "--no-progress", "--device", "cpu",
        "--dropout", "0.5",  # each process draws its own masks: a resume must give each its own stream
    ]  # fmt: skip
    out, reference = tmp_path / "run", tmp_path / "uninterrupted"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*torchrun, *command], capture_output=True, text=True, timeout=600, env=env, check=False
        )

    # 25 steps per epoch (1617 images, global batch 64): rank 1 dies at step 5 of epoch 2.
    failed = launch(
        "mobilenets.testing.faults",
        "--fault",
        "kill:step:30",
        "--rank",
        "1",
        "--",
        *recipe,
        "--out",
        str(out),
    )
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "process 0 of 2 lost contact with the others" in output and "--resume" in output
    assert "Signal 9 (SIGKILL)" in output  # torchrun's summary names the dead worker
    assert check_run_directory(out) == "" and load_training_state(out)["epoch"] == 1
    first, second = (rng["cpu"] for rng in load_training_state(out)["process_rng"])
    assert not torch.equal(first, second)
    resumed = launch("mobilenets", *recipe, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "at epoch 2, step 0" in resumed.stdout
    logged = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2] and load_training_state(out)["epoch"] == 2
    assert launch("mobilenets", *recipe, "--out", str(reference)).returncode == 0
    resumed_weights = load_file(out / "last.safetensors")
    for key, value in load_file(reference / "last.safetensors").items():
        assert torch.equal(resumed_weights[key], value), key
    # Both processes scored half of the validation images each, with rank 0's BatchNorm statistics:
    # the logged score is the saved model's, as one process scores it.
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    code, stdout, stderr = run_cli(
        ["eval", "--checkpoint", str(out / "last.safetensors"), "--json", "--no-confusion"]
    )
    assert code == 0, stderr
    scored = json.loads(stdout)
    assert last["val_images"] == scored["num_images"] > 0
    assert last["val_top1"] == scored["top1"]
    assert last["val_loss"] == pytest.approx(scored["loss"], rel=1e-5)


@pytest.mark.parametrize("worker", [False, True])
def test_a_torchrun_worker_failing_ignores_the_sigterm_that_would_cut_its_report(worker: bool) -> None:
    """torchrun SIGTERMs the survivors of a dead worker; one already failing must still say why."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with StopRequest(ignore_sigterm_after_error=worker):
            pass
        assert signal.getsignal(signal.SIGTERM) == previous  # a clean exit restores the handler
        with pytest.raises(RuntimeError), StopRequest(ignore_sigterm_after_error=worker):
            raise RuntimeError("Connection reset by peer")
        assert signal.getsignal(signal.SIGTERM) == (signal.SIG_IGN if worker else previous)
    finally:
        signal.signal(signal.SIGTERM, previous)
