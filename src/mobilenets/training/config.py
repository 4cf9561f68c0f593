"""One frozen, validated record of everything a training run depends on; the CLI maps onto it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..data.folders import check_val_split, parse_data_spec
from ..data.loader import check_workers
from ..data.splits import check_data_spec, default_resolution
from ..data.transforms import Augmentation, check_flipped
from ..errors import UsageError
from ..layers.norm import NORM_KINDS
from ..models import check_model_options, check_pretrained_options
from ..models.builder import small_input_strides

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "step", "exponential")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NORMS = NORM_KINDS  # the choices of --norm; the layers own the rule
# Settings a resumed run must share with the checkpoint it continues; the rest (epochs, lr, ...) may change.
# The optimizer's and the weight average's saved state fits only the same optimizer and the same average;
# the saved position counts steps of the saved batch size, which no other batch size can continue.
RESUME_MUST_MATCH = (
    "model", "width_mult", "small_input", "norm", "model_options", "data", "img_size", "val_split", "seed",
    "optimizer", "ema_decay", "batch_size",
)  # fmt: skip
# Options with a field of their own; model_options holds the builder's others.
_OWN_FIELDS = ("width_mult", "small_input", "norm", "dropout", "drop_path_rate", "num_classes", "pretrained")

# Peak learning rate per optimizer when --lr is not given, for a global batch of REFERENCE_BATCH; scaled
# linearly with the batch size. SGD: 0.1 per 256 images (Goyal et al. 2017's rule; torchvision trains
# mobilenet_v2 at 0.045 per 256): 0.025 at the default batch of 64. Twice that stalls the first epochs of
# a narrow network (digits at width 0.5 barely learns in its first two); recipes that want more say so
# (the CIFAR-10 recipe's 0.1 at batch 128). RMSProp: the v2 paper's 0.045 (TF-slim trained with batch
# 96); AdamW: 1e-3, not scaled (adaptive steps).
DEFAULT_LR = {"sgd": 0.1, "rmsprop": 0.045, "adamw": 1e-3}
# Weight decay when --weight-decay is not given: the v2 paper's 4e-5 (an L2 term in the gradient), but
# for AdamW, whose decay is decoupled and scaled by its small lr (1e-3 × 4e-5 would shrink nothing),
# 0.05, timm's usual AdamW setting.
DEFAULT_WEIGHT_DECAY = {"sgd": 4e-5, "rmsprop": 4e-5, "adamw": 0.05}
REFERENCE_BATCH = {"sgd": 256, "rmsprop": 96, "adamw": 0}
# Width when --width-mult is not given: 1.0 (the papers', and that of every ImageNet weights file), but
# half for the built-in digits trained from scratch: 10 classes of 8×8 strokes need no more, and half the
# width trains in half the time to the same accuracy.
DIGITS_WIDTH_MULT = 0.5
# Linear warm-up when --warmup-epochs is not given: one epoch, at most a tenth of the run (so one-epoch runs
# still work). Full-rate first steps on freshly initialised BatchNorm statistics make short runs erratic.
DEFAULT_WARMUP_EPOCHS = 1.0
# Options whose default follows --epochs (resolved into config.json): warm-up of one epoch, at most a
# tenth of the run; the step schedule's step, a third of the run (torchvision's ×0.1 every 30 of 90).
DERIVED_FROM_EPOCHS: dict[str, Callable[[int], float | int]] = {
    "warmup_epochs": lambda epochs: min(DEFAULT_WARMUP_EPOCHS, epochs / 10),
    "lr_step_epochs": lambda epochs: max(1, math.ceil(epochs / 3)),
}
# Per-epoch decay of the step and exponential schedules when --lr-gamma is not given (paper: ×0.98).
DEFAULT_GAMMA = {"cosine": 1.0, "step": 0.1, "exponential": 0.98}


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
    ``width_mult=None`` is 1.0, or 0.5 for digits trained from scratch (``DIGITS_WIDTH_MULT``);
    ``img_size=None`` the data's input side (32 for digits and CIFAR-10, 224 for other folders:
    :func:`mobilenets.data.default_resolution`); ``warmup_epochs=None`` one epoch, at most a tenth of
    the run; ``weight_decay=None`` the optimizer's (``DEFAULT_WEIGHT_DECAY``); ``lr_step_epochs=None``
    a third of the epochs (the step schedule then decays twice, like
    torchvision's 30 of 90). They are resolved here, so ``config.json`` and checkpoints hold the values used.

    The defaults are the recipe to start from: ``mobilenets train --data digits`` alone reaches the
    digits goal of ``benchmarks/train_accuracy.py`` (>= 97% val top-1; a slow test holds it there).
    Bigger data wants more epochs, and CIFAR-sized images ``small_input`` (see the cifar10 recipe there).
    """

    model: str = "mobilenet_v2"
    # Other builder options (e.g. the ablation switches: activation, projection_activation, shortcut).
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    width_mult: float | None = None
    small_input: int = 0
    norm: str = "batchnorm"
    dropout: float | None = None
    drop_path_rate: float = 0.0
    pretrained: str | None = None
    data: str = "digits"
    val_split: float = 0.1
    augment: str = "none"
    # Pad-and-crop and cutout (data.transforms.Augmentation): None pads S // 8 (4 px at 32).
    cutout: int = 0
    crop_padding: int | None = None
    padding_mode: str = "zeros"
    alternate_flip: bool = False
    epochs: int = 20
    batch_size: int = 64
    img_size: int | None = None
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float | None = None
    lr_step_epochs: int | None = None
    lr_gamma: float | None = None
    label_smoothing: float = 0.0
    # Progressive resizing (training/resize.py): the first epoch's image scale (1.0: off), and the
    # fraction of the epochs after which training runs at full size.
    resize_start: float = 1.0
    resize_until: float = 0.75
    ema_decay: float = 0.0
    grad_clip: float = 0.0
    # Score the validation set after every Nth epoch and after the last (1: every epoch): on CIFAR-10
    # each pass costs about 5% of a short epoch's time, and best.safetensors only follows scored epochs.
    eval_every: int = 1
    precision: str = "auto"
    # auto, cpu, cuda or cuda:N (mobilenets.devices); under torchrun each process takes GPU LOCAL_RANK.
    device: str = "auto"
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
        # Each option is checked by the layer that owns it: the model's by its builder, the data's by
        # the data layer (the input side by the models' check_resolution); the recipe's here.
        if self.width_mult is None:
            from_scratch_on_digits = self.data == "digits" and self.pretrained is None
            object.__setattr__(self, "width_mult", DIGITS_WIDTH_MULT if from_scratch_on_digits else 1.0)
        _check(isinstance(self.norm, str), f"norm must be one of {', '.join(NORMS)}; got {self.norm!r}")
        _check(
            isinstance(self.model_options, dict) and all(isinstance(key, str) for key in self.model_options),
            f"model_options must be a dict of builder options, got {self.model_options!r}",
        )
        own = sorted(set(self.model_options) & set(_OWN_FIELDS))
        _check(not own, f"model_options {own} have fields of their own in TrainConfig; set those instead")
        check_model_options(self.model, **self._model_options())
        _check(
            self.pretrained is None or (isinstance(self.pretrained, str) and bool(self.pretrained)),
            f"pretrained must be a weights file or packaged name, or None; got {self.pretrained!r}",
        )
        if self.pretrained:
            check_pretrained_options(self.model_options)
        if self.img_size is None:
            object.__setattr__(self, "img_size", default_resolution(self.data))
        check_data_spec(self.data, img_size=self.img_size)
        check_val_split(self.val_split)
        self.augmentation.check_size(self.resolution)
        check_flipped(self.augmentation, flip=parse_data_spec(self.data).kind != "digits")
        _check(
            _is_int(self.epochs) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}"
        )
        _check(
            _is_int(self.batch_size) and self.batch_size >= 2,
            f"batch_size must be an integer >= 2 (BatchNorm needs 2+), got {self.batch_size!r}",
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
        if self.weight_decay is None and self.optimizer in DEFAULT_WEIGHT_DECAY:
            object.__setattr__(self, "weight_decay", DEFAULT_WEIGHT_DECAY[self.optimizer])
        _check(
            _is_number(self.weight_decay) and self.weight_decay_used >= 0,
            f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}",
        )
        _check(
            self.schedule in SCHEDULES,
            f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}",
        )
        if self.warmup_epochs is None:
            object.__setattr__(self, "warmup_epochs", DERIVED_FROM_EPOCHS["warmup_epochs"](self.epochs))
        _check(
            _is_number(self.warmup_epochs) and 0 <= self.warmup < self.epochs,
            f"warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs!r}",
        )
        _check(
            self.lr_step_epochs is None or (_is_int(self.lr_step_epochs) and self.lr_step_epochs >= 1),
            f"lr_step_epochs must be an integer >= 1, got {self.lr_step_epochs!r}",
        )
        _check(  # the steps are counted after the warm-up
            self.schedule != "step"
            or self.lr_step_epochs is None
            or self.warmup + self.lr_step_epochs < self.epochs,
            f"lr_step_epochs={self.lr_step_epochs} would never step the learning rate in {self.epochs} "
            f"epochs (after {self.warmup:g} of warm-up); give fewer, or leave it out (a third of the epochs)",
        )
        if self.lr_step_epochs is None:
            object.__setattr__(self, "lr_step_epochs", DERIVED_FROM_EPOCHS["lr_step_epochs"](self.epochs))
        _check(
            self.lr_gamma is None or (_is_number(self.lr_gamma) and 0 < self.lr_gamma <= 1),
            f"lr_gamma must be in (0, 1], got {self.lr_gamma!r}",
        )
        _check(
            _is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}",
        )
        _check(
            _is_number(self.resize_start) and 0 < self.resize_start <= 1,
            f"resize_start must be in (0, 1] (1 turns progressive resizing off), got {self.resize_start!r}",
        )
        _check(
            _is_number(self.resize_until) and 0 < self.resize_until <= 1,
            f"resize_until must be in (0, 1] (a fraction of the epochs), got {self.resize_until!r}",
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
            _is_int(self.eval_every) and self.eval_every >= 1,
            f"eval_every must be a positive integer (1: every epoch), got {self.eval_every!r}",
        )
        _check(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}",
        )
        _check(
            isinstance(self.device, str) and bool(self.device),
            f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}",
        )
        check_workers(self.workers)
        _check(
            _is_int(self.seed) and 0 <= self.seed < 2**63,
            f"seed must be a non-negative integer below 2**63, got {self.seed!r}",
        )
        _check(bool(str(self.out)), "out must name a directory")
        # Early strides dropped (see build_mobilenet); True / False from older configs mean 2 / 0.
        object.__setattr__(self, "small_input", small_input_strides(self.small_input))
        for flag in (
            "alternate_flip",
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
    def resolution(self) -> int:
        """The input side in pixels: ``img_size``, or the data's default when it was given as None."""
        assert self.img_size is not None  # internal invariant: __post_init__ resolves None
        return self.img_size

    @property
    def augmentation(self) -> Augmentation:
        """The training augmentation these settings ask for (checked as it is built)."""
        return Augmentation(
            self.augment,
            self.cutout,
            self.crop_padding,
            self.padding_mode,
            alternate_flip=self.alternate_flip,
        )

    @property
    def warmup(self) -> float:
        """Epochs of linear warm-up: ``warmup_epochs``, or the default when it was given as None."""
        assert self.warmup_epochs is not None  # internal invariant: __post_init__ resolves None
        return self.warmup_epochs

    @property
    def weight_decay_used(self) -> float:
        """The weight decay: ``weight_decay``, or the optimizer's default when it was given as None."""
        assert self.weight_decay is not None  # internal invariant: __post_init__ resolves None
        return self.weight_decay

    @property
    def step_epochs(self) -> int:
        """Epochs between decays of the step schedule: ``lr_step_epochs``, or a third of the run."""
        assert self.lr_step_epochs is not None  # internal invariant: __post_init__ resolves None
        return self.lr_step_epochs

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

    def _model_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            **self.model_options,
            "width_mult": self.width_mult,
            "small_input": self.small_input,
            "norm": self.norm,
            "drop_path_rate": self.drop_path_rate,
        }
        if self.dropout is not None:
            options["dropout"] = self.dropout
        return options

    def model_kwargs(self, num_classes: int) -> dict[str, Any]:
        """Keyword arguments for ``create_model`` (stored in checkpoints, so eval rebuilds the same model)."""
        return {**self._model_options(), "num_classes": num_classes}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return dataclasses.asdict(self)
