"""Optimizers, learning-rate schedules and the weight EMA of a training recipe."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .config import TrainConfig

# torch's RMSprop adds eps outside the square root, TF's inside; eps = sqrt(1e-3) makes the two agree where
# the squared-gradient average is small, the regime TF's recipe tuned eps for (as timm's RMSpropTF notes).
RMSPROP_EPS = 1e-3**0.5
RMSPROP_ALPHA = 0.9  # the v2 paper's "decay 0.9"


class TFRMSprop(torch.optim.RMSprop):
    """torch's RMSprop with its squared-gradient average starting at 1, as TensorFlow's does.

    torch starts it at 0: the first steps then divide by about ``|g| × sqrt(1 - alpha)``, a step of
    about 3 × lr whatever the gradient's scale (30× TF's for a gradient of 0.01), and a network
    trained with the paper's RMSProp recipe does worse than chance in its first epoch. TF's average
    starts at 1 and leaves the first steps near ``lr × g``. The state is torch's, so checkpoints
    save and resume it as any optimizer's.
    """

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state[param]
                state["step"] = torch.tensor(0.0)
                state["square_avg"] = torch.ones_like(param, memory_format=torch.preserve_format)
                if group["momentum"] > 0:
                    state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                if group["centered"]:
                    state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two groups: weights with decay, and norm scales/shifts and biases (ndim <= 1) without."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, config: TrainConfig, *, loss_scaling: bool = False
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, RMSProp with the v2 paper's settings, or AdamW.

    SGD and AdamW use torch's fused kernels, RMSProp its multi-tensor (foreach) update: one call for
    all parameters instead of several per parameter, which torch does not pick by itself on CPU.

    ``loss_scaling``: the run scales its fp16 loss with a ``GradScaler``. SGD then takes the multi-tensor
    update too: torch's fused SGD (2.11 to 2.14 at least, CPU and CUDA) leaves its momentum buffers
    uninitialised when the scaler skips the first step for an overflow, which fp16 runs routinely do, and
    the weights blow up a step later. Fused AdamW skips such steps correctly.
    """
    groups = parameter_groups(model, config.weight_decay_used)
    lr = config.peak_lr
    if config.optimizer == "sgd":
        fused = not loss_scaling
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            fused=fused,
            foreach=not fused,
        )
    if config.optimizer == "rmsprop":
        return TFRMSprop(
            groups, lr=lr, alpha=RMSPROP_ALPHA, eps=RMSPROP_EPS, momentum=config.momentum, foreach=True
        )
    return torch.optim.AdamW(groups, lr=lr, fused=True)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The LR multiplier after ``step`` optimizer steps, in closed form.

    Linear warm-up over ``warmup_epochs``, then cosine to zero at the end of training, ×gamma every
    ``lr_step_epochs`` (step), or ×gamma per epoch (exponential, the paper's 0.98). A closed form, not
    a recursive update, so a resumed run with more epochs lands on the new curve.
    """
    warmup_steps = round(config.warmup * steps_per_epoch)
    total_steps = config.epochs * steps_per_epoch
    gamma = config.gamma

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if config.schedule == "cosine":
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        epoch = (step - warmup_steps) // steps_per_epoch
        if config.schedule == "step":
            return float(gamma ** (epoch // config.step_epochs))
        return float(gamma**epoch)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
    ``num_updates`` rule), so short runs are not dominated by the random initial weights.
    """

    @torch.no_grad()
    def update(
        averaged: list[torch.Tensor] | tuple[torch.Tensor, ...],
        current: list[torch.Tensor] | tuple[torch.Tensor, ...],
        num_averaged: torch.Tensor | int,
    ) -> None:
        updates = int(num_averaged)
        step_decay = min(decay, (1 + updates) / (10 + updates))
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - step_decay)
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():
                a.copy_(c)  # BatchNorm's num_batches_tracked

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
