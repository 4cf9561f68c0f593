"""The training loop: config validation, optimiser and schedule, per-epoch evaluation, metrics, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..models import MobileNet, create_model, list_models
from ..models.mobilenet import MIN_INPUT_SIZE
from .checkpoint import checkpoint_paths, load_checkpoint, save_atomic, save_checkpoint
from .data import NUM_CLASSES, build_dataloaders, check_dataset_name

OPTIMIZERS = ("sgd", "adamw")
# Settings a resumed run must share with the checkpoint it continues; the rest (epochs, ...) may change.
_RESUME_MUST_MATCH = ("model", "width_mult", "data", "img_size")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; invalid values raise ``ValueError`` on construction."""

    model: str = "mobilenet_v2"
    width_mult: float = 1.0
    data: str = "digits"
    epochs: int = 5
    batch_size: int = 64
    img_size: int = 32
    lr: float = 0.05
    weight_decay: float = 4e-5
    optimizer: str = "sgd"
    label_smoothing: float = 0.0
    seed: int = 0
    out: str = "runs/train"
    resume: bool = False

    def __post_init__(self) -> None:
        if self.model not in list_models():
            raise ValueError(f"unknown model {self.model!r}; see `mobilenets list` for the available ones")
        if not _is_number(self.width_mult) or self.width_mult <= 0:
            raise ValueError(f"width_mult must be a positive number, got {self.width_mult!r}")
        check_dataset_name(self.data)
        if not _is_int(self.epochs) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not _is_int(self.batch_size) or self.batch_size < 2:
            raise ValueError(
                f"batch_size must be an integer >= 2 (BatchNorm needs 2+), got {self.batch_size!r}"
            )
        if not _is_int(self.img_size) or self.img_size < MIN_INPUT_SIZE:
            raise ValueError(f"img_size must be an integer >= {MIN_INPUT_SIZE}, got {self.img_size!r}")
        if not _is_number(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if not _is_number(self.label_smoothing) or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not str(self.out):
            raise ValueError("out must name a directory")
        if not isinstance(self.resume, bool):
            raise ValueError(f"resume must be True or False, got {self.resume!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (``out`` as a string)."""
        values = dataclasses.asdict(self)
        values["out"] = str(self.out)
        return values


def _build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov, momentum 0.9) or AdamW; norm weights and biases (ndim <= 1) get no weight decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader[tuple[torch.Tensor, ...]], device: torch.device) -> float:
    """Top-1 accuracy (percent) of ``model`` over ``loader``, in eval mode."""
    model.eval()
    correct = total = 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        logits = model(images)
        correct += int((logits.argmax(dim=1) == labels).sum())
        total += labels.numel()
    return 100.0 * correct / max(total, 1)


def _check_resume_config(out: Path, config: TrainConfig) -> None:
    """Refuse to resume from a run whose model or data differ from ``config``."""
    config_path = out / "config.json"
    if not config_path.is_file():
        return
    saved = json.loads(config_path.read_text())
    differing = [key for key in _RESUME_MUST_MATCH if key in saved and saved[key] != getattr(config, key)]
    if differing:
        details = ", ".join(f"{key}={saved[key]!r} (now {getattr(config, key)!r})" for key in differing)
        raise ValueError(f"cannot resume {str(out)!r}: it was trained with {details}")


def _stretch_schedule(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.CosineAnnealingLR, epochs: int
) -> None:
    """Put a resumed run on the cosine curve over ``epochs`` total epochs.

    The scheduler updates the LR recursively from its last value, so only raising ``T_max`` would keep
    a finished schedule's final LR (0) for good; set each group's LR from the closed form instead.
    """
    scheduler.T_max = epochs
    progress = min(scheduler.last_epoch, epochs) / epochs
    for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = (
            scheduler.eta_min + (base_lr - scheduler.eta_min) * (1 + math.cos(math.pi * progress)) / 2
        )


def _write_json(path: Path, value: object) -> None:
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    save_atomic(path, lambda handle: handle.write(text.encode()))


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data`` and checkpoint into ``config.out``.

    Returns ``{"best_top1", "final_top1", "epochs_run"}``; ``epochs_run`` counts the epochs this call
    ran (fewer than ``config.epochs`` when resuming). Epochs are numbered from 1.
    """
    out = Path(config.out)
    weights_path, _ = checkpoint_paths(out, "last")
    resuming = config.resume and weights_path.is_file()
    if weights_path.is_file() and not config.resume:
        raise ValueError(
            f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --out"
        )
    if resuming:
        _check_resume_config(out, config)

    torch.manual_seed(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_loader, val_loader = build_dataloaders(config.data, config.img_size, config.batch_size, config.seed)
    model: MobileNet = create_model(config.model, width_mult=config.width_mult, num_classes=NUM_CLASSES)
    model = model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = _build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)

    start_epoch, best_top1 = 1, -1.0
    if resuming:
        last_epoch, best_top1 = load_checkpoint(out, model, optimizer, scheduler, "last")
        start_epoch = last_epoch + 1
        _stretch_schedule(optimizer, scheduler, config.epochs)
        print(f"resuming {out} after epoch {last_epoch} (best val top-1 {best_top1:.2f}%)")
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")
    _write_json(out / "config.json", config.to_dict())

    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    final_top1 = best_top1
    epochs_run = 0
    for epoch in range(start_epoch, config.epochs + 1):
        # Shuffle order depends only on (seed, epoch), so a resumed run sees the same batches.
        if train_loader.generator is not None:
            train_loader.generator.manual_seed(config.seed * 100_003 + epoch)
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loss_sum, images_seen = 0.0, 0
        started = time.perf_counter()
        for step, (images, labels) in enumerate(train_loader, start=1):
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            loss = criterion(model(images), labels)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise RuntimeError(
                    f"loss became {loss_value} at epoch {epoch}, step {step}; "
                    f"try a lower --lr (now {config.lr:g})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss_value * labels.numel()
            images_seen += labels.numel()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        scheduler.step()

        train_loss = loss_sum / max(images_seen, 1)
        val_top1 = evaluate(model, val_loader, device)
        images_per_s = images_seen / elapsed if elapsed > 0 else float("inf")
        final_top1 = val_top1
        epochs_run += 1
        _append_metrics(
            out / "metrics.jsonl",
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_top1": val_top1,
                "lr": lr,
                "images_per_s": images_per_s,
            },
        )
        improved = val_top1 > best_top1
        best_top1 = max(best_top1, val_top1)
        settings = config.to_dict()
        save_checkpoint(out, model, optimizer, scheduler, epoch, best_top1, settings, "last")
        if improved:
            save_checkpoint(out, model, optimizer, scheduler, epoch, best_top1, settings, "best")
        print(
            f"epoch {epoch}/{config.epochs}  loss {train_loss:.4f}  val top-1 {val_top1:.2f}%  "
            f"{images_per_s:,.0f} images/s{'  *best' if improved else ''}",
            flush=True,
        )
    return {"best_top1": best_top1, "final_top1": final_top1, "epochs_run": epochs_run}
