"""What a training state holds so that a run continues exactly where it stopped, and putting it back.

The trainer checkpoints through :func:`training_state` and resumes through :func:`restore_training_state`;
both read and write the run by the attributes :class:`Resumable` names, so this file needs no trainer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..errors import UsageError
from .distributed import DistContext, all_reduce_sum


@dataclass
class EpochSums:
    """Running totals of one epoch in this process; summed over processes before they are reported."""

    loss: float = 0.0
    correct: int = 0
    images: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "correct": self.correct, "images": self.images, "seconds": self.seconds}

    def report(self, device: torch.device, context: DistContext) -> dict[str, float]:
        """The epoch's train loss, top-1 and images/s over every process (this one's clock)."""
        totals = torch.tensor([self.loss, self.correct, self.images], dtype=torch.float64)
        loss_sum, correct, images = all_reduce_sum(totals.to(device), context).tolist()
        return {
            "train_loss": loss_sum / max(images, 1),
            "train_top1": correct / max(images, 1),
            "images_per_s": images / self.seconds if self.seconds > 0 else float("nan"),
            "seconds": self.seconds,
        }

    @staticmethod
    def summed(processes: list[EpochSums]) -> EpochSums:
        """Every process's totals added up, with the first's clock (the reported epoch time is rank 0's)."""
        return EpochSums(
            loss=sum(sums.loss for sums in processes),
            correct=sum(sums.correct for sums in processes),
            images=sum(sums.images for sums in processes),
            seconds=processes[0].seconds,
        )


class Resumable(Protocol):
    """The parts of a run a checkpoint saves, and its position: the next epoch, the steps of it done."""

    model: nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    context: DistContext
    epoch: int
    step_in_epoch: int
    best_top1: float
    partial: EpochSums
    train_images: int


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in module.state_dict().items()}


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's random number generators: the CPU's, and the GPU's when training on one."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def training_state(
    run: Resumable,
    completed_epoch: int,
    process_rng: list[dict[str, torch.Tensor]] | None = None,
    process_sums: list[EpochSums] | None = None,
) -> dict[str, Any]:
    """Everything a resume needs after ``completed_epoch`` (and ``run.step_in_epoch`` steps of the next).

    ``process_rng`` holds every process's :func:`rng_states`, by rank (dropout and drop-path draw
    differently in each), and ``process_sums`` their epoch totals so far (saved added up); without
    them, this process's alone are saved.
    """
    if process_rng is None:
        process_rng = [rng_states(run.device)]
    if process_sums is None:
        process_sums = [run.partial]
    state: dict[str, Any] = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": completed_epoch,
        "next_epoch": run.epoch,
        "next_step": run.step_in_epoch,
        "partial": EpochSums.summed(process_sums).as_dict(),  # every process's images of the epoch
        "best_top1": run.best_top1,
        "rng_state": process_rng[0]["cpu"],
        "process_rng": process_rng,
        "world_size": run.context.world_size,
        "train_images": run.train_images,
    }
    if "cuda" in process_rng[0]:
        state["cuda_rng_state"] = process_rng[0]["cuda"]
    # The weights travel in the state file too, so it alone restores the run: a crash between
    # writing it and the weights file cannot pair one epoch's state with another epoch's weights.
    state["model"] = _cpu_state(run.model)
    if run.ema is not None:
        state["ema"] = _cpu_state(run.ema.module)
        state["ema_updates"] = int(run.ema.n_averaged)
    return state


def restore_training_state(run: Resumable, state: dict[str, Any]) -> None:
    """Put ``state`` (from :func:`training_state`) back into ``run``: weights, optimizer, RNG, position.

    Refused: another number of training images than the run had (a train folder with images added or
    removed: the epochs, the order and the schedule's steps would not be the run's; states saved
    before the count was recorded are not checked).
    """
    saved_images = state.get("train_images")
    if saved_images is not None and saved_images != run.train_images:
        raise UsageError(
            f"cannot resume: the run trained on {saved_images:,} images, and its data holds "
            f"{run.train_images:,} training images now; restore the data, or start a new run from its "
            "weights (--pretrained) in another --out"
        )
    world_size = run.context.world_size
    if state.get("world_size", 1) != world_size:
        warnings.warn(
            f"resuming a run saved with {state.get('world_size', 1)} processes on {world_size}; the "
            f"global batch is the same, the RNG streams are not",
            stacklevel=2,
        )
    run.model.load_state_dict(state["model"])
    if run.ema is not None:
        run.ema.module.load_state_dict(state["ema"])
        run.ema.n_averaged.fill_(state["ema_updates"])
    # The optimizer's state (momentum, averages) and the schedule's position come from the checkpoint;
    # its hyperparameters from this run's settings, so a resume with a lower --lr (what a NaN loss
    # advises) or another --weight-decay trains with them. The groups are built alike (same model).
    settings = [{k: v for k, v in group.items() if k != "params"} for group in run.optimizer.param_groups]
    base_lrs = list(run.scheduler.base_lrs)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    for group, setting in zip(run.optimizer.param_groups, settings, strict=True):
        group.update(setting)
    run.scheduler.base_lrs = base_lrs
    # The LR of the next step on this run's curve (it differs from the saved one if epochs changed).
    for group, base_lr, factor in zip(
        run.optimizer.param_groups, run.scheduler.base_lrs, run.scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base_lr * factor(run.scheduler.last_epoch)
    if state["scaler"] or not run.scaler.is_enabled():
        run.scaler.load_state_dict(state["scaler"])
    # else saved without loss scaling (fp32 or bf16, on another device or precision): a fresh scale
    saved_rng = state.get("process_rng") or [{"cpu": state["rng_state"]}]  # older states: rank 0's only
    if len(saved_rng) == world_size:
        rng = saved_rng[run.context.rank]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and run.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], run.device)
    # else another number of processes (warned above): each keeps the stream seeded for its rank
    run.epoch, run.step_in_epoch = int(state["next_epoch"]), int(state["next_step"])
    run.best_top1 = float(state["best_top1"])
    # The saved totals are every process's together: the main process carries them on (the epoch's
    # summary adds up the processes), the others count from zero on the saved clock.
    partial = EpochSums(**state["partial"]) if run.step_in_epoch else EpochSums()
    run.partial = partial if run.context.is_main else EpochSums(seconds=partial.seconds)


def run_has_finished(out: Path, next_epoch: int, next_step: int, epochs: int) -> bool:
    """Whether a run saved at ``next_epoch``/``next_step`` has finished ``epochs``; an end before where it
    stands is refused (its checkpoints hold later epochs than that end)."""
    reached = next_epoch if next_step else next_epoch - 1  # begun (stopped within it) or done
    if epochs < reached:
        where = f"stopped within epoch {next_epoch}" if next_step else f"trained {reached} epochs"
        raise UsageError(
            f"cannot resume {str(out)!r} with --epochs {epochs}: it has {where}, and its checkpoints "
            f"hold them; give --epochs {reached} or more"
        )
    return epochs == reached and not next_step
