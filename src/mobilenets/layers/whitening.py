"""Patch whitening: a first convolution fitted to the data, so the layers after it see decorrelated input.

Neighbouring pixels and the three colour channels are strongly correlated; a first layer that has to
learn that costs epochs. A k×k convolution whose filters are the eigenvectors of the training images'
k×k-patch covariance, each divided by the square root of its eigenvalue, outputs channels that are
uncorrelated and of unit variance. Each filter comes with its negative (``2 × C × k²`` filters), so an
activation that drops negative values keeps both signs of every component. The filters are fitted once
from training images (:meth:`PatchWhitening.fit`) and stay frozen; the bias trains. Page (2019, "How to
train your ResNet"), and Jordan (2024, arXiv 2404.00498) for CIFAR-10 at a few epochs, train this way.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .activations import create_activation, is_tracing
from .channels import check_positive_ints

# Added to each eigenvalue before its square root: the patch directions with almost no variance (the
# finest checkerboard patterns) are amplified at most 1/√eps, not without bound. For inputs normalised
# to unit variance per channel, as the trainer's are.
WHITENING_EPS = 5e-4
_FIT_BATCH = 64  # images per step of the covariance sums


class PatchWhitening(nn.Module):
    """Frozen k×k whitening conv (no padding, so each side shrinks by k - 1) → bias → activation.

    Sub-modules: ``conv`` (weight frozen, ``requires_grad=False``; bias trained) and ``act``. Until
    :meth:`fit` runs, the filters are zero and :attr:`fitted` is False; a model whose state dict is
    loaded gets the fitted filters (and the flag) from the file.
    """

    def __init__(
        self, in_channels: int = 3, kernel_size: int = 2, *, activation: str | None = "gelu"
    ) -> None:
        super().__init__()
        check_positive_ints(in_channels=in_channels, kernel_size=kernel_size)
        self.kernel_size = kernel_size
        out_channels = 2 * in_channels * kernel_size * kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=True)
        self.conv.weight.requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()  # type: ignore[union-attr]
        self.act = create_activation(activation)
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    @torch.no_grad()
    def fit(self, images: torch.Tensor, *, eps: float = WHITENING_EPS) -> None:
        """Set the filters from ``images`` (N, C, H, W), prepared as the network will see them."""
        k, channels = self.kernel_size, self.in_channels
        if images.dim() != 4 or images.shape[1] != channels:
            raise UsageError(
                f"PatchWhitening.fit needs images of shape (N, {channels}, H, W), got {tuple(images.shape)}"
            )
        if images.shape[-2] < k or images.shape[-1] < k:
            raise UsageError(f"images of {images.shape[-2]}×{images.shape[-1]} hold no {k}×{k} patch")
        size = channels * k * k
        count = len(images) * (images.shape[-2] - k + 1) * (images.shape[-1] - k + 1)
        if count < size + 1:
            raise UsageError(f"{count} patches cannot fit {size} whitening filters")
        if not torch.isfinite(images).all():
            raise UsageError("PatchWhitening.fit got images with NaN or infinite values")
        # Sums over a few images at a time in float64: 5,000 images of 224 px hold 3 G patch values.
        total = torch.zeros(size, dtype=torch.float64)
        products = torch.zeros(size, size, dtype=torch.float64)
        for start in range(0, len(images), _FIT_BATCH):
            batch = images[start : start + _FIT_BATCH].double()
            # (N, C, H', W', k, k) → one row per patch, ordered (C, k, k) like a conv filter
            patches = batch.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, size)
            total += patches.sum(dim=0)
            products += patches.T @ patches
        mean = total / count
        covariance = (products - count * torch.outer(mean, mean)) / (count - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
        filters = filters.reshape(-1, channels, k, k)
        self.conv.weight.copy_(torch.cat([filters, -filters]).to(self.conv.weight))
        self.fitted = torch.tensor(True, device=self.conv.weight.device)  # (replaces the buffer)

    @torch.jit.unused
    def check_fitted(self) -> None:
        """Raise unless the filters were fitted (or loaded): zero filters would train nothing."""
        if not bool(self.fitted):
            raise UsageError(
                "PatchWhitening is not fitted: its filters are still zero. Call .fit(images) with "
                "training images first (mobilenets train does), or load weights that include it"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # alone, so TorchScript compiles this branch only
            pass
        elif self.training and not is_tracing():
            self.check_fitted()
        return self.act(self.conv(x))
