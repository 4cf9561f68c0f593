"""Which parts of a layout learn CIFAR-10 fastest per epoch? Short runs of separable networks, one arm each.

The probe behind ``mobilenets.models.cifar_separable``: a plain loop (the whole training set in memory,
reflect-pad-2 translation and flips drawn per batch, SGD with Nesterov momentum 0.9, a triangular
schedule peaking at 20% of the run, weight decay on conv and linear weights only, label smoothing 0.2,
batch 512) over six small networks of depthwise separable convolutions that differ in one or two
parts each:

- ``airbench-separable``: airbench's CIFAR-10 layout (Jordan 2024, arXiv 2404.00498) with separable
  convs: a 2×2 patch-whitening stem, three stages of two (depthwise → pointwise → norm → GELU) convs,
  each stage max-pooling after its first conv, a max-pooled head scaled by 1/9 without bias;
- ``avg-head``: the same with an average-pooled head and a bias (what ``cifar_separable`` builds);
- ``inner-norm``: norm and GELU between the depthwise and the pointwise conv too, as MobileNet v1;
- ``mobilenet-v1-blocks``: MobileNet v1's blocks (inner norm, strided depthwise conv instead of max
  pooling), a 3×3 conv stem, an average-pooled head; ``v1-blocks-whitened`` and ``v1-blocks-max-head``
  change its stem and its head.

    python benchmarks/cifar10_layouts.py --arm avg-head --epochs 5 --threads 1   # ~10 min on 1 core

One arm per run, printed as JSON (test top-1 every second epoch and at the end, with flip and
flip + ±1 px test-time augmentation, seconds per epoch). Not a ``mobilenets train`` run: its numbers
compare arms with each other, not with the trainer's. ``--init``, ``--schedule``, ``--crop``,
``--bn-momentum`` and ``--precision`` each switch one of this loop's choices to the trainer's (He
fan-out init, cosine after a warm-up, zero-pad-4 crops, momentum 0.1, bf16 autocast), to find what
costs the trainer accuracy:

    python benchmarks/cifar10_layouts.py --arm avg-head --epochs 5 --threads 1 --precision bf16 --init library
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from _shared import CIFAR10
from mobilenets.models.mobilenet import init_weights

ARMS: dict[str, dict[str, object]] = {
    "airbench-separable": {"whiten": True, "pool": "max", "inner_norm": False, "head": "max"},
    "avg-head": {"whiten": True, "pool": "max", "inner_norm": False, "head": "avg"},
    "inner-norm": {"whiten": True, "pool": "max", "inner_norm": True, "head": "max"},
    "mobilenet-v1-blocks": {"whiten": False, "pool": "stride", "inner_norm": True, "head": "avg"},
    "v1-blocks-whitened": {"whiten": True, "pool": "stride", "inner_norm": True, "head": "avg"},
    "v1-blocks-max-head": {"whiten": False, "pool": "stride", "inner_norm": True, "head": "max"},
}
MEAN = torch.tensor([125.3, 123.0, 113.9]).view(1, 3, 1, 1)
STD = torch.tensor([63.0, 62.1, 66.7]).view(1, 3, 1, 1)


def _read(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images as uint8 (N, 3, 32, 32), class folders and files in sorted order."""
    files, labels = [], []
    for index, name in enumerate(sorted(os.listdir(root / split))):
        for file in sorted(os.listdir(root / split / name)):
            files.append(str(root / split / name / file))
            labels.append(index)
    with ProcessPoolExecutor(2) as pool:
        images = np.stack(list(pool.map(_read, files, chunksize=500)))
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 9


def build(arm: dict[str, object], widths: list[int], train_images: torch.Tensor) -> nn.Sequential:
    """The arm's network; a whitening stem is fitted on the first 5,000 training images."""

    def separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)]
        if arm["inner_norm"]:
            layers += [nn.BatchNorm2d(cin), nn.GELU()]
        return nn.Sequential(*layers, nn.Conv2d(cin, cout, 1, bias=False))

    def group(cin: int, cout: int) -> nn.Sequential:  # (built in order: the init draws from one stream)
        if arm["pool"] == "stride":
            first: list[nn.Module] = [separable(cin, cout, stride=2)]
        else:
            first = [separable(cin, cout), nn.MaxPool2d(2)]
        first += [nn.BatchNorm2d(cout), nn.GELU()]
        return nn.Sequential(*first, separable(cout, cout), nn.BatchNorm2d(cout), nn.GELU())

    if arm["whiten"]:
        conv = nn.Conv2d(3, 24, 2, bias=True)
        x = train_images[:5000]
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 3, 2, 2).flatten(1).double()
        patches = patches - patches.mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + 5e-4)[:, None]).reshape(12, 3, 2, 2).float()
        conv.weight.data = torch.cat([filters, -filters])
        conv.weight.requires_grad_(False)
        stem, width = nn.Sequential(conv, nn.GELU()), 24
    else:
        stem, width = (
            nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.GELU()),
            32,
        )
    if arm["head"] == "max":
        head: list[nn.Module] = [
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(widths[2], 10, bias=False),
            Scale(),
        ]
    else:
        head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[2], 10)]
    net = nn.Sequential(
        stem, group(width, widths[0]), group(widths[0], widths[1]), group(widths[1], widths[2]), *head
    )
    return net.to(memory_format=torch.channels_last)


def augment(padded: torch.Tensor, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Crops of the padded images moved by up to the padding in each direction, half of them mirrored."""
    n, span = len(indices), padded.shape[-1] - 32 + 1
    out = torch.empty(n, 3, 32, 32)
    dx = torch.randint(0, span, (n,), generator=generator)
    dy = torch.randint(0, span, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    for i in range(span):
        for j in range(span):
            chosen = ((dx == i) & (dy == j)).nonzero().flatten()
            if len(chosen):
                out[chosen] = padded[indices[chosen], :, j : j + 32, i : i + 32]
    out[flip] = out[flip].flip(3)
    return out


def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, views: int) -> float:
    """Top-1 in percent: 0 plain, 1 with the mirror image, 2 also with ±1 px shifts (and their mirrors)."""
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 1000):
            x = images[start : start + 1000].contiguous(memory_format=torch.channels_last)
            logits = net(x)
            if views >= 1:
                logits = logits + net(x.flip(3))
            if views >= 2:
                padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
                for i, j in ((0, 0), (2, 2)):
                    shifted = padded[:, :, j : j + 32, i : i + 32]
                    logits = logits + 0.5 * (net(shifted) + net(shifted.flip(3)))
            correct += int((logits.argmax(1) == labels[start : start + 1000]).sum())
    net.train()
    return correct / len(images) * 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=sorted(ARMS), default="avg-head")
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--widths", default="64,256,256")
    parser.add_argument("--lr", type=float, default=0.4)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path(CIFAR10))
    # The trainer's choices, one at a time (its run loses ~1.4 points to this loop at 10 epochs):
    parser.add_argument("--init", choices=("torch", "library"), default="torch", help="library: init_weights")
    parser.add_argument("--schedule", choices=("triangular", "cosine"), default="triangular")
    parser.add_argument("--warmup", type=float, default=0.05, help="cosine: warm-up fraction of the run")
    parser.add_argument("--crop", choices=("reflect2", "zero4"), default="reflect2")
    parser.add_argument("--bn-momentum", type=float, default=0.4)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="training autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_images, train_labels = load_split(args.data, "train")
    test_images, test_labels = load_split(args.data, "test")
    x_train = (train_images.float() - MEAN) / STD
    x_test = (test_images.float() - MEAN) / STD
    net = build(ARMS[args.arm], [int(w) for w in args.widths.split(",")], x_train)
    if args.init == "library":
        init_weights(net)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = args.bn_momentum
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}],
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
    )
    steps_per_epoch = len(x_train) // args.batch_size
    total = int(args.epochs * steps_per_epoch)
    pad = 2 if args.crop == "reflect2" else 4
    padded = F.pad(x_train, (pad,) * 4, mode="reflect" if args.crop == "reflect2" else "constant")
    generator = torch.Generator().manual_seed(args.seed)
    started, step, epoch, curve, epoch_seconds = time.time(), 0, 0, [], []
    net.train()
    while step < total:
        order = torch.randperm(len(x_train), generator=generator)
        epoch, epoch_started = epoch + 1, time.time()
        for batch in range(steps_per_epoch):
            if step >= total:
                break
            indices = order[batch * args.batch_size : (batch + 1) * args.batch_size]
            x = augment(padded, indices, generator).contiguous(memory_format=torch.channels_last)
            fraction = step / total
            if args.schedule == "triangular":
                lr = args.lr * (fraction / 0.2 if fraction < 0.2 else (1 - fraction) / 0.8)
            elif fraction < args.warmup:
                lr = args.lr * fraction / args.warmup
            else:
                lr = args.lr * 0.5 * (1 + math.cos(math.pi * (fraction - args.warmup) / (1 - args.warmup)))
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), train_labels[indices], label_smoothing=0.2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        epoch_seconds.append(round(time.time() - epoch_started, 1))
        if epoch % 2 == 0 or step >= total:
            curve.append((epoch, accuracy(net, x_test, test_labels, 0)))
    result = {
        "arm": args.arm,
        "epochs": args.epochs,
        "threads": args.threads,
        "options": {k: getattr(args, k) for k in ("init", "schedule", "crop", "bn_momentum", "precision")},
        "top1": accuracy(net, x_test, test_labels, 0),
        "top1_flip": accuracy(net, x_test, test_labels, 1),
        "top1_flip_shift": accuracy(net, x_test, test_labels, 2),
        "curve": curve,
        "seconds_per_epoch": epoch_seconds,
        "total_seconds": round(time.time() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
