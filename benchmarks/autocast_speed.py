"""Does bf16 autocast train a network faster than fp32 on this CPU? Training steps, each precision alone.

``precision='auto'`` trains in fp32 on CPUs because bf16 autocast made MobileNets slower on every CPU
measured (``benchmarks/train_throughput.py``): oneDNN's bf16 backward of wide depthwise convolutions
outweighs the faster 1×1 convolutions. A network with narrow depthwise convolutions and wide 1×1 ones
(``cifar_separable``) may gain instead, which decides its recipe's ``--precision``. Each row times
``Trainer._step`` (the step ``mobilenets train`` runs: channels_last, SGD, the recipe's loss) on a fixed
random batch, one process per network and precision (nothing shared), rows taking turns for
``--rounds`` rounds; median images/s over every timed step, and bf16 against fp32 of the same network.

    python benchmarks/autocast_speed.py --markdown   # ~3 min on 2 cores

One thread and batch 256 by default: one process of ``torchrun --nproc-per-node 2`` at global batch
512, as the CIFAR-10 recipes train on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

from _report import add_markdown_argument, provenance, table, write_fragments
from _shared import in_own_process
from mobilenets.training.config import TrainConfig
from mobilenets.training.distributed import DistContext
from mobilenets.training.engine import Trainer

# (row, model, builder options): the CIFAR-10 recipes' networks at 32×32.
NETWORKS = {
    "cifar_separable": ("cifar_separable", {"width_mult": 1.0}),
    "cifar_separable ×1.5": ("cifar_separable", {"width_mult": 1.5}),
    "mobilenet_v2 --small-input 1": ("mobilenet_v2", {"width_mult": 1.0, "small_input": 1}),
}
PRECISIONS = ("fp32", "bf16")
STEPS = 4  # timed steps per process, after two warm-up steps


def child(network: str, precision: str, batch_size: int, threads: int) -> list[float]:
    """One process: a Trainer for ``network`` at ``precision`` (digits, 10 classes, 32 px), its step timed."""
    torch.set_num_threads(threads)
    model, options = NETWORKS[network]
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            model=model,
            data="digits",
            img_size=32,
            batch_size=batch_size,
            precision=precision,
            workers=0,
            progress=False,
            out=out,
            **options,
        )
        trainer = Trainer(config, DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
        trainer.train_module.train()
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(batch_size, 3, 32, 32, generator=generator)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (batch_size,), generator=generator)
        speeds = []
        for step in range(2 + STEPS):
            started = time.perf_counter()
            trainer._step(images, labels)
            if step >= 2:
                speeds.append(batch_size / (time.perf_counter() - started))
    return speeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="processes per row, taking turns")
    parser.add_argument("--child", nargs=2, metavar=("NETWORK", "PRECISION"), help=argparse.SUPPRESS)
    add_markdown_argument(parser, "training.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.batch_size, args.threads)))
        return 0
    started = time.perf_counter()
    speeds: dict[tuple[str, str], list[float]] = {(n, p): [] for n in NETWORKS for p in PRECISIONS}
    for _ in range(args.rounds):
        for network, precision in speeds:
            speeds[network, precision] += in_own_process(__file__, network, precision)
    medians = {key: statistics.median(values) for key, values in speeds.items()}
    rows = [
        [
            f"`{network}`",
            f"{medians[network, 'fp32']:.0f}",
            f"{medians[network, 'bf16']:.0f}",
            f"**{medians[network, 'bf16'] / medians[network, 'fp32']:.2f}×**",
        ]
        for network in NETWORKS
    ]
    text = table(["network (32×32, training step)", "fp32 images/s", "bf16 images/s", "bf16 / fp32"], rows)
    print(json.dumps({f"{n} {p}": v for (n, p), v in speeds.items()}), flush=True)
    print("\n" + text, flush=True)
    setting = f"{args.threads} thread(s), batch {args.batch_size}, median of {args.rounds * STEPS} steps"
    write_fragments(
        args.markdown,
        {"autocast-speed": f"{provenance(time.perf_counter() - started)}\n\n{text}\n\n({setting}.)"},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
