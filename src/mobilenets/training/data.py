"""Datasets for training: scikit-learn's bundled 8×8 digits, upsampled so MobileNets accept them.

The digits set ships inside scikit-learn, so training works offline and in CI with no download.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

DATASETS = ("digits",)
NUM_CLASSES = 10


def check_dataset_name(data: str) -> None:
    """Raise ``ValueError`` unless ``data`` names a dataset :func:`build_dataloaders` knows."""
    if data not in DATASETS:
        raise ValueError(f"unknown dataset {data!r}; expected {' or '.join(map(repr, DATASETS))}")


def _stratified_split(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and val indices holding ``val_fraction`` of every class, shuffled by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    train_parts: list[torch.Tensor] = []
    val_parts: list[torch.Tensor] = []
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero(as_tuple=True)[0]
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = round(len(members) * val_fraction)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    train_idx, val_idx = torch.cat(train_parts), torch.cat(val_parts)
    # Interleave classes so the datasets are not ordered by label.
    train_idx = train_idx[torch.randperm(len(train_idx), generator=generator)]
    val_idx = val_idx[torch.randperm(len(val_idx), generator=generator)]
    return train_idx, val_idx


def load_digits_dataset(
    img_size: int, val_fraction: float = 0.2, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    """(train, val) digits as normalised (3, img_size, img_size) float tensors with integer labels.

    Pixels 0..16 are scaled to [0, 1], upsampled bilinearly once up front (cheap: 1,797 images),
    repeated to 3 channels and normalised with mean 0.5 / std 0.5. The split keeps ``val_fraction``
    of each class and depends only on ``seed``.
    """
    if not isinstance(img_size, int) or img_size < 8:
        raise ValueError(f"img_size must be an integer >= 8, got {img_size!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    from sklearn.datasets import load_digits  # imported lazily: scikit-learn is slow to import

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
    images = ((images.clamp(0.0, 1.0) - 0.5) / 0.5).repeat(1, 3, 1, 1).contiguous()
    train_idx, val_idx = _stratified_split(labels, val_fraction, seed)
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[val_idx], labels[val_idx]),
    )


def build_dataloaders(
    data: str, img_size: int, batch_size: int, seed: int
) -> tuple[DataLoader[tuple[torch.Tensor, ...]], DataLoader[tuple[torch.Tensor, ...]]]:
    """(train, val) loaders for ``data``; the train loader shuffles with a ``seed``-derived generator.

    The train loader drops the last partial batch so BatchNorm never sees a batch of one.
    """
    check_dataset_name(data)
    train_set, val_set = load_digits_dataset(img_size, seed=seed)
    if batch_size > len(train_set):
        raise ValueError(f"batch_size {batch_size} exceeds the {len(train_set)} training images of {data!r}")
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator
    )
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False)
    return train_loader, val_loader
