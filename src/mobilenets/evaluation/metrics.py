"""Classification metrics accumulated batch by batch: top-1/top-k, per-class accuracy, confusion, loss.

Everything is kept as raw counts (no running averages), so partial results from several processes
add up exactly: pack them with :meth:`ClassificationMetrics.state_tensor`, ``all_reduce`` (SUM) the
tensor, and load the sum back with :meth:`ClassificationMetrics.load_state_tensor`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import UsageError

DEFAULT_TOPK = 5


def _nan_to_none(value: float | None) -> float | None:
    """None for NaN and infinity, which JSON cannot hold (a model whose logits overflow gives them)."""
    return None if value is None or not math.isfinite(value) else value


class ClassificationMetrics:
    """Accumulates predictions of a ``num_classes``-way classifier; see :meth:`update`.

    ``topk`` is the k of the top-k accuracy, capped at ``num_classes`` (top-5 of a 3-class problem is
    top-3, i.e. always 1.0). Accuracies are fractions in [0, 1]; they are NaN while no image was seen.
    The counts live on the device of the last batch fed, so updating never forces a copy to the CPU.
    """

    def __init__(self, num_classes: int, *, topk: int = DEFAULT_TOPK) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UsageError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise UsageError(f"topk must be an integer >= 1, got {topk!r}")
        self.num_classes = num_classes
        self.topk = min(topk, num_classes)
        self.reset()

    def reset(self, device: torch.device | str | None = None) -> None:
        """Forget every batch seen so far."""
        self._confusion = torch.zeros(
            self.num_classes, self.num_classes, dtype=torch.int64, device=device or "cpu"
        )
        self._topk_correct = torch.zeros((), dtype=torch.int64, device=self._confusion.device)
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self._confusion.device)
        self._loss_count = torch.zeros((), dtype=torch.int64, device=self._confusion.device)

    def _to(self, device: torch.device) -> None:
        if self._confusion.device != device:
            self._confusion = self._confusion.to(device)
            self._topk_correct = self._topk_correct.to(device)
            self._loss_sum = self._loss_sum.to(device)
            self._loss_count = self._loss_count.to(device)

    def update(
        self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor | float | None = None
    ) -> None:
        """Add one batch: ``logits`` (B, num_classes), integer ``labels`` (B,) in [0, num_classes).

        ``loss`` is optional: the batch's mean loss (a scalar) or per-image losses (B,). Only images fed
        with a loss count towards :attr:`mean_loss`.
        """
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != self.num_classes:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise UsageError(f"logits must be a (batch, {self.num_classes}) tensor, got {shape}")
        if not isinstance(labels, torch.Tensor) or labels.shape != (logits.shape[0],):
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise UsageError(f"labels must be a ({logits.shape[0]},) tensor to match the logits, got {shape}")
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise UsageError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        batch = labels.numel()
        if batch == 0:
            return
        labels = labels.to(device=logits.device, dtype=torch.int64)
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise UsageError(
                f"label {bad} is out of range for {self.num_classes} classes (0..{self.num_classes - 1})"
            )
        self._to(logits.device)
        # topk's first column doubles as the top-1 prediction, so top-k >= top-1 even with ties.
        ranked = logits.detach().topk(self.topk, dim=1).indices
        predicted = ranked[:, 0]
        cells = torch.bincount(labels * self.num_classes + predicted, minlength=self.num_classes**2)
        self._confusion += cells.view(self.num_classes, self.num_classes)
        self._topk_correct += (ranked == labels.unsqueeze(1)).any(dim=1).sum()
        if loss is not None:
            self._add_loss(loss, batch)

    def _add_loss(self, loss: torch.Tensor | float, batch: int) -> None:
        device = self._loss_sum.device
        value = torch.as_tensor(loss).detach().to(device=device, dtype=torch.float64)
        if value.ndim == 0:
            self._loss_sum += value * batch
        elif value.shape == (batch,):
            self._loss_sum += value.sum()
        else:
            raise UsageError(
                f"loss must be a scalar (batch mean) or have shape ({batch},), got {tuple(value.shape)}"
            )
        self._loss_count += batch

    def merge(self, other: ClassificationMetrics) -> None:
        """Add the counts of ``other`` (same number of classes and k) to these."""
        if not isinstance(other, ClassificationMetrics):
            raise TypeError(f"can only merge ClassificationMetrics, got {type(other).__name__}")
        if (other.num_classes, other.topk) != (self.num_classes, self.topk):
            raise UsageError(
                f"cannot merge metrics of {other.num_classes} classes/top-{other.topk} into "
                f"{self.num_classes} classes/top-{self.topk}"
            )
        self.load_state_tensor(self.state_tensor() + other.state_tensor(self._confusion.device))

    # --- raw counts, for summing across processes ------------------------------------------------

    @property
    def state_size(self) -> int:
        """Length of :meth:`state_tensor`: the confusion cells, then top-k hits, loss sum, loss count."""
        return self.num_classes**2 + 3

    def state_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """All counts packed in one 1-D float64 tensor, ready for ``dist.all_reduce`` (SUM).

        Float64 holds the integer counts exactly up to 2**53, far beyond any dataset.
        """
        packed = torch.cat(
            [
                self._confusion.flatten().double(),
                self._topk_correct.double().view(1),
                self._loss_sum.view(1),
                self._loss_count.double().view(1),
            ]
        )
        return packed if device is None else packed.to(device)

    def load_state_tensor(self, state: torch.Tensor) -> None:
        """Replace all counts with ``state`` (from :meth:`state_tensor`, typically summed over ranks)."""
        if not isinstance(state, torch.Tensor) or state.shape != (self.state_size,):
            shape = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
            raise UsageError(
                f"state must be a ({self.state_size},) tensor for {self.num_classes} classes, got {shape}"
            )
        state = state.detach().double()
        cells = self.num_classes**2
        counts = state[:cells].round().to(torch.int64)
        if bool((counts < 0).any()):
            raise UsageError("state holds negative confusion counts; expected counts >= 0")
        self._confusion = counts.view(self.num_classes, self.num_classes)
        self._topk_correct = state[cells].round().to(torch.int64)
        self._loss_sum = state[cells + 1].clone()
        self._loss_count = state[cells + 2].round().to(torch.int64)

    # --- results -----------------------------------------------------------------------------------

    @property
    def confusion(self) -> torch.Tensor:
        """(num_classes, num_classes) int64 counts on the CPU; rows = true class, columns = predicted."""
        return self._confusion.cpu()

    @property
    def num_images(self) -> int:
        return int(self._confusion.sum())

    @property
    def top1(self) -> float:
        """Fraction of images whose highest logit is the true class (NaN before any image)."""
        total = self.num_images
        return float(self._confusion.trace()) / total if total else math.nan

    @property
    def top5(self) -> float:
        """Fraction of images whose true class is among the ``topk`` (<= 5) highest logits."""
        total = self.num_images
        return float(self._topk_correct) / total if total else math.nan

    @property
    def per_class_accuracy(self) -> torch.Tensor:
        """(num_classes,) float64 recall of each true class; NaN for classes with no images."""
        confusion = self.confusion.double()
        return confusion.diagonal() / confusion.sum(dim=1)  # 0/0 -> NaN for absent classes

    @property
    def mean_loss(self) -> float | None:
        """Mean loss per image over the batches fed with a loss; None if none was."""
        count = int(self._loss_count)
        return float(self._loss_sum) / count if count else None

    def to_dict(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready results; NaN becomes None. ``classes`` names the rows (default "0", "1", ...)."""
        names = [str(i) for i in range(self.num_classes)] if classes is None else [str(c) for c in classes]
        if len(names) != self.num_classes:
            raise UsageError(f"expected {self.num_classes} class names, got {len(names)}")
        if len(set(names)) != len(names):
            duplicates = sorted({name for name in names if names.count(name) > 1})
            raise UsageError(f"class names must be unique, got duplicates {duplicates}")
        confusion = self.confusion
        return {
            "top1": _nan_to_none(self.top1),
            "top5": _nan_to_none(self.top5),
            "topk": self.topk,
            "num_images": self.num_images,
            "loss": _nan_to_none(self.mean_loss),
            "classes": names,
            "per_class": {
                name: _nan_to_none(float(acc))
                for name, acc in zip(names, self.per_class_accuracy.tolist(), strict=True)
            },
            "per_class_images": dict(zip(names, confusion.sum(dim=1).tolist(), strict=True)),
            "confusion": confusion.tolist(),
        }

    def __repr__(self) -> str:
        return (
            f"ClassificationMetrics(num_classes={self.num_classes}, num_images={self.num_images}, "
            f"top1={self.top1:.4f}, top{self.topk}={self.top5:.4f})"
        )
