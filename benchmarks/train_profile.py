"""Where a training step's time goes, by kind of operator: the CIFAR-10 recipe's network on this CPU.

A real :class:`~mobilenets.training.engine.Trainer` built with the ``cifar10`` recipe's model options
(``mobilenet_v2`` width 1.0, ``small_input=1``, batch 128 at 32×32, channels_last, in-place ReLU6
keeping its output, ``mobilenets train``'s allocator setting) runs ``_step`` on a synthetic batch in
one process with ``--threads`` threads. After warm-up steps, ``torch.profiler`` records ``--steps``
steps and each aten operator's self CPU time is summed into kinds (convolution, batch norm, activation,
each forward and backward; the optimizer; the rest). This says what a faster step has to speed up:
a kind's share is the most that making it free could save.

    python benchmarks/train_profile.py --markdown     # ~1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.bench.allocator import reuse_freed_memory
from mobilenets.training import TrainConfig
from mobilenets.training.distributed import DistContext
from mobilenets.training.engine import Trainer

# Self time of these aten operators (and autograd nodes) makes up each kind; the rest is "other".
KINDS: dict[str, tuple[str, ...]] = {
    "convolution, forward": ("aten::mkldnn_convolution", "aten::convolution_overrideable"),
    "convolution, backward": ("aten::convolution_backward",),
    "batch norm, forward": ("aten::native_batch_norm", "aten::_native_batch_norm_legit"),
    "batch norm, backward": ("aten::native_batch_norm_backward",),
    # The trainer's ReLU6 (mobilenets.layers.ReLU6) is an autograd function around an in-place clamp.
    "activation, forward": ("aten::clamp_", "aten::hardtanh_", "aten::hardtanh", "_ClampKeepingOutput"),
    "activation, backward": ("aten::hardtanh_backward", "_ClampKeepingOutputBackward"),
    "optimizer": ("aten::_fused_sgd_", "Optimizer.step#SGD.step", "Optimizer.zero_grad#SGD.zero_grad"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--small-input", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="profiled steps, after 3 warm-up steps")
    add_markdown_argument(parser, "training.md")
    args = parser.parse_args()
    if args.steps < 1 or args.threads < 1:
        parser.error("--steps and --threads must be at least 1")
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(
            model=args.model,
            width_mult=args.width_mult,
            small_input=args.small_input,
            data="digits",  # only builds the Trainer (10 classes, 32 px); the batch is synthetic
            img_size=32,
            batch_size=args.batch_size,
            workers=0,
            progress=False,
            out=folder,
        )
        trainer = Trainer(config, DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
        trainer.train_module.train()
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(args.batch_size, 3, 32, 32, generator=generator)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (args.batch_size,), generator=generator)
        for _ in range(3):
            trainer._step(images, labels)
        timed = time.perf_counter()
        for _ in range(args.steps):
            trainer._step(images, labels)
        step_ms = 1000 * (time.perf_counter() - timed) / args.steps
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(args.steps):
                trainer._step(images, labels)
    self_ms = {event.key: event.self_cpu_time_total / 1000 / args.steps for event in profiler.key_averages()}
    total = sum(self_ms.values())
    shares = {kind: sum(self_ms.get(name, 0.0) for name in names) for kind, names in KINDS.items()}
    shares["other"] = total - sum(shares.values())
    cells = [[kind, f"{ms:.1f}", f"{ms / total:.0%}"] for kind, ms in shares.items()]
    memory_bound = sum(shares[kind] for kind in shares if kind.startswith(("batch norm", "activation")))
    convolutions = shares["convolution, forward"] + shares["convolution, backward"]
    summary = (
        f"`{args.model}` width {args.width_mult}, `small_input={args.small_input}`, batch "
        f"{args.batch_size} at 32×32, {args.threads} threads: a step takes {step_ms:.0f} ms unprofiled "
        f"({1000 * args.batch_size / step_ms:.0f} images/s); profiled self time {total:.0f} ms per step. "
        "Batch norm and activations, passes over the activation tensors that compute almost nothing, "
        f"take {memory_bound / total:.0%} of it; convolutions {convolutions / total:.0%}."
    )
    body = table(["kind", "ms per step", "share"], cells, "lrr")
    text = f"{provenance(time.perf_counter() - started)}\n\n{body}\n\n{summary}"
    print(text)
    write_fragments(args.markdown, {"train-profile": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
