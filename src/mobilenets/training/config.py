"""One frozen, validated record of everything a training run depends on; the CLI maps onto it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..data.splits import AUGMENTATIONS, check_data_spec
from ..errors import UsageError
from ..models import list_models
from ..models.builder import MAX_WIDTH_MULT, small_input_strides
from ..models.mobilenet import MAX_INPUT_SIZE, MIN_INPUT_SIZE

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "step", "exponential")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NORMS = ("batchnorm", "groupnorm", "none")
# Settings a resumed run must share with the checkpoint it continues; the rest (epochs, ...) may change.
RESUME_MUST_MATCH = ("model", "width_mult", "small_input", "norm", "data", "img_size", "val_split", "seed")

# Peak learning rate per optimizer when --lr is not given, for a global batch of REFERENCE_BATCH; scaled
# linearly with the batch size. SGD: the usual 0.1 at 128 for CIFAR/ImageNet-style recipes; RMSProp: the
# v2 paper's 0.045 (TF-slim trained with batch 96); AdamW: 1e-3, not scaled (adaptive steps).
DEFAULT_LR = {"sgd": 0.1, "rmsprop": 0.045, "adamw": 1e-3}
REFERENCE_BATCH = {"sgd": 128, "rmsprop": 96, "adamw": 0}
# Per-epoch decay of the step and exponential schedules when --lr-gamma is not given (paper: ×0.98).
DEFAULT_GAMMA = {"cosine": 1.0, "step": 0.1, "exponential": 0.98}
# The 1,797 digits are upsampled once and held in memory (float32 while resizing): 1.9 GB at 512 px.
MAX_DIGITS_IMG_SIZE = 512
# More loader processes than this is a typo, not a setting (each one is a full Python process).
MAX_WORKERS = 256


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; invalid values raise ``ValueError`` on construction.

    ``batch_size`` is the global batch: under ``torchrun`` it is split evenly over the processes, so a
    recipe means the same thing on any number of them. ``lr=None`` picks the optimizer's default
    (``DEFAULT_LR`` scaled by ``batch_size``); ``lr_gamma=None`` the schedule's (``DEFAULT_GAMMA``).
    """

    model: str = "mobilenet_v2"
    width_mult: float = 1.0
    small_input: int = 0
    norm: str = "batchnorm"
    dropout: float | None = None
    drop_path_rate: float = 0.0
    pretrained: str | None = None
    data: str = "digits"
    val_split: float = 0.1
    augment: str = "none"
    epochs: int = 5
    batch_size: int = 64
    img_size: int = 32
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 4e-5
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    lr_step_epochs: int = 30
    lr_gamma: float | None = None
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    grad_clip: float = 0.0
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    progress: bool = True
    out: str = "runs/train"
    resume: bool = False

    def __post_init__(self) -> None:
        _check(
            self.model in list_models(),
            f"unknown model {self.model!r}; see `mobilenets list` for the available ones",
        )
        _check(
            _is_number(self.width_mult) and self.width_mult > 0,
            f"width_mult must be a positive number, got {self.width_mult!r}",
        )
        _check(
            self.width_mult <= MAX_WIDTH_MULT,
            f"width_mult={self.width_mult!r} is absurdly large; expected at most {MAX_WIDTH_MULT:g}",
        )
        _check(self.norm in NORMS, f"norm must be one of {', '.join(NORMS)}; got {self.norm!r}")
        _check(
            self.dropout is None or (_is_number(self.dropout) and 0 <= self.dropout < 1),
            f"dropout must be in [0, 1) or None, got {self.dropout!r}",
        )
        _check(
            _is_number(self.drop_path_rate) and 0 <= self.drop_path_rate < 1,
            f"drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}",
        )
        _check(
            self.pretrained is None or (isinstance(self.pretrained, str) and bool(self.pretrained)),
            f"pretrained must be a weights file or packaged name, or None; got {self.pretrained!r}",
        )
        check_data_spec(self.data)
        _check(
            _is_number(self.val_split) and 0 < self.val_split < 1,
            f"val_split must be in (0, 1), got {self.val_split!r}",
        )
        _check(
            self.augment in AUGMENTATIONS,
            f"augment must be one of {', '.join(AUGMENTATIONS)}; got {self.augment!r}",
        )
        _check(
            _is_int(self.epochs) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}"
        )
        _check(
            _is_int(self.batch_size) and self.batch_size >= 2,
            f"batch_size must be an integer >= 2 (BatchNorm needs 2+), got {self.batch_size!r}",
        )
        _check(
            _is_int(self.img_size) and self.img_size >= MIN_INPUT_SIZE,
            f"img_size must be an integer >= {MIN_INPUT_SIZE}, got {self.img_size!r}",
        )
        _check(
            self.img_size <= MAX_INPUT_SIZE,
            f"img_size={self.img_size} is absurdly large; expected at most {MAX_INPUT_SIZE}",
        )
        _check(
            self.data != "digits" or self.img_size <= MAX_DIGITS_IMG_SIZE,
            f"img_size={self.img_size} is too large for 'digits' (8×8 images, all held in memory once "
            f"upsampled); expected at most {MAX_DIGITS_IMG_SIZE}",
        )
        _check(
            self.optimizer in OPTIMIZERS,
            f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}",
        )
        _check(
            self.lr is None or (_is_number(self.lr) and self.lr > 0),
            f"lr must be a positive finite number, got {self.lr!r}",
        )
        _check(
            _is_number(self.momentum) and 0 <= self.momentum < 1,
            f"momentum must be in [0, 1), got {self.momentum!r}",
        )
        _check(
            _is_number(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}",
        )
        _check(
            self.schedule in SCHEDULES,
            f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}",
        )
        _check(
            _is_number(self.warmup_epochs) and 0 <= self.warmup_epochs < self.epochs,
            f"warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs!r}",
        )
        _check(
            _is_int(self.lr_step_epochs) and self.lr_step_epochs >= 1,
            f"lr_step_epochs must be an integer >= 1, got {self.lr_step_epochs!r}",
        )
        _check(
            self.lr_gamma is None or (_is_number(self.lr_gamma) and 0 < self.lr_gamma <= 1),
            f"lr_gamma must be in (0, 1], got {self.lr_gamma!r}",
        )
        _check(
            _is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}",
        )
        _check(
            _is_number(self.ema_decay) and 0 <= self.ema_decay < 1,
            f"ema_decay must be in [0, 1) (0 turns EMA off), got {self.ema_decay!r}",
        )
        _check(
            _is_number(self.grad_clip) and self.grad_clip >= 0,
            f"grad_clip must be a finite number >= 0 (0 turns it off), got {self.grad_clip!r}",
        )
        _check(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}",
        )
        _check(
            _is_int(self.workers) and 0 <= self.workers <= MAX_WORKERS,
            f"workers must be an integer from 0 to {MAX_WORKERS}, got {self.workers!r}",
        )
        _check(
            _is_int(self.seed) and 0 <= self.seed < 2**63,
            f"seed must be a non-negative integer below 2**63, got {self.seed!r}",
        )
        _check(bool(str(self.out)), "out must name a directory")
        # Early strides dropped (see build_mobilenet); True / False from older configs mean 2 / 0.
        object.__setattr__(self, "small_input", small_input_strides(self.small_input))
        for flag in (
            "channels_last",
            "compile",
            "sync_bn",
            "deterministic",
            "progress",
            "resume",
        ):
            value = getattr(self, flag)
            _check(isinstance(value, bool), f"{flag} must be True or False, got {value!r}")

    @property
    def peak_lr(self) -> float:
        """The learning rate after warm-up: ``lr`` if given, else the optimizer's batch-scaled default."""
        if self.lr is not None:
            return self.lr
        reference = REFERENCE_BATCH[self.optimizer]
        scale = self.batch_size / reference if reference else 1.0
        return DEFAULT_LR[self.optimizer] * scale

    @property
    def gamma(self) -> float:
        """Decay factor of the step / exponential schedule."""
        return DEFAULT_GAMMA[self.schedule] if self.lr_gamma is None else self.lr_gamma

    def model_kwargs(self, num_classes: int) -> dict[str, Any]:
        """Keyword arguments for ``create_model`` (stored in checkpoints, so eval rebuilds the same model)."""
        kwargs: dict[str, Any] = {
            "width_mult": self.width_mult,
            "num_classes": num_classes,
            "small_input": self.small_input,
            "norm": self.norm,
            "drop_path_rate": self.drop_path_rate,
        }
        if self.dropout is not None:
            kwargs["dropout"] = self.dropout
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return dataclasses.asdict(self)
